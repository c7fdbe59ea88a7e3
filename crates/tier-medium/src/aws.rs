//! The medium tier's AWS services: Step Functions (the workflow), CloudWatch (alarms and the
//! dashboard) and SNS (where alarms go), from the same client registry as every other service.

use tier_xs::aws::AwsClients;
use tier_xs::sdk_client;

/// The medium tier's clients of an [`AwsClients`].
pub trait MediumAws {
    fn sfn(&self) -> aws_sdk_sfn::Client;
    fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client;
    fn sns(&self) -> aws_sdk_sns::Client;
}

impl MediumAws for AwsClients {
    fn sfn(&self) -> aws_sdk_sfn::Client {
        sdk_client!(self, aws_sdk_sfn)
    }
    fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        sdk_client!(self, aws_sdk_cloudwatch)
    }
    fn sns(&self) -> aws_sdk_sns::Client {
        sdk_client!(self, aws_sdk_sns)
    }
}
