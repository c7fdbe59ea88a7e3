//! The small tier's AWS services: S3 (artifacts, timeline), Elastic Load Balancing and SQS
//! (the monitor's queue), from the same client registry as every other service.

use tier_xs::aws::AwsClients;
use tier_xs::sdk_client;

/// The small tier's clients of an [`AwsClients`].
pub trait SmallAws {
    fn s3(&self) -> aws_sdk_s3::Client;
    fn elb(&self) -> aws_sdk_elasticloadbalancingv2::Client;
    fn sqs(&self) -> aws_sdk_sqs::Client;
}

impl SmallAws for AwsClients {
    fn s3(&self) -> aws_sdk_s3::Client {
        // Against a custom endpoint (an emulator, a compatible store) buckets are in the
        // path: `bucket.127.0.0.1` is not a host name.
        sdk_client!(self, aws_sdk_s3, |b, parts| b
            .force_path_style(parts.custom_endpoint))
    }
    fn elb(&self) -> aws_sdk_elasticloadbalancingv2::Client {
        sdk_client!(self, aws_sdk_elasticloadbalancingv2)
    }
    fn sqs(&self) -> aws_sdk_sqs::Client {
        sdk_client!(self, aws_sdk_sqs)
    }
}
