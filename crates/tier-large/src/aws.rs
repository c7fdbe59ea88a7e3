//! The large tier's AWS service: RDS (the Aurora cluster and its instances), from the same
//! client registry as every other service.

use tier_xs::aws::AwsClients;
use tier_xs::sdk_client;

/// The large tier's clients of an [`AwsClients`].
pub trait LargeAws {
    fn rds(&self) -> aws_sdk_rds::Client;
}

impl LargeAws for AwsClients {
    fn rds(&self) -> aws_sdk_rds::Client {
        sdk_client!(self, aws_sdk_rds)
    }
}
