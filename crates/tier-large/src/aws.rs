//! The large tier's AWS services: RDS (the Aurora cluster and its instances), Application
//! Auto Scaling (the dashboard's task count, the database's readers) and X-Ray (the trace
//! destination), from the same client registry as every other service.

use tier_xs::aws::AwsClients;
use tier_xs::sdk_client;

/// The large tier's clients of an [`AwsClients`].
pub trait LargeAws {
    /// RDS's client (`crate::rds`: its Query API on the SDK's runtime, not a generated SDK).
    fn rds(&self) -> crate::rds::Rds;
    fn autoscaling(&self) -> aws_sdk_applicationautoscaling::Client;
    fn xray(&self) -> aws_sdk_xray::Client;
}

impl LargeAws for AwsClients {
    fn rds(&self) -> crate::rds::Rds {
        self.client(crate::rds::Rds::new)
    }
    fn autoscaling(&self) -> aws_sdk_applicationautoscaling::Client {
        sdk_client!(self, aws_sdk_applicationautoscaling)
    }
    fn xray(&self) -> aws_sdk_xray::Client {
        sdk_client!(self, aws_sdk_xray)
    }
}
