//! AWS client setup: one `SdkConfig` from the standard chain (profile, region, `AWS_ENDPOINT_URL`),
//! one client per service, and a call counter on every client so plans and applies can report
//! how many API calls (and how many writes) they made.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error(
        "no AWS credentials found ({0}).\n  Provide them the standard way: `aws configure` or `aws sso login` with --profile/AWS_PROFILE, \
         or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or an instance/task role.\n  \
         For an AWS-compatible endpoint set AWS_ENDPOINT_URL as well."
    )]
    NoCredentials(String),
    #[error(
        "no AWS region set: pass --region, set AWS_REGION, or configure a region for the profile"
    )]
    NoRegion,
    #[error("could not identify the caller with STS GetCallerIdentity: {0}")]
    Identity(String),
}

/// Options a user can set on the command line; everything else comes from the standard chain.
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
}

/// Counts API calls per `Service.Operation`. Shared by every client of one [`AwsClients`].
#[derive(Clone, Debug, Default)]
pub struct ApiStats {
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl ApiStats {
    fn record(&self, service: &str, op: &str) {
        if let Ok(mut m) = self.calls.lock() {
            *m.entry(format!("{service}.{op}")).or_default() += 1;
        }
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.calls.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn reset(&self) {
        if let Ok(mut m) = self.calls.lock() {
            m.clear();
        }
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Calls that change something: every operation that is not a read by its name.
    pub fn writes(&self) -> BTreeMap<String, u64> {
        self.snapshot()
            .into_iter()
            .filter(|(k, _)| !is_read_operation(k.rsplit('.').next().unwrap_or(k)))
            .collect()
    }
}

/// Read-only operations by AWS naming convention.
pub fn is_read_operation(op: &str) -> bool {
    [
        "Describe", "Get", "List", "Query", "Scan", "BatchGet", "Head", "Lookup", "Filter",
    ]
    .iter()
    .any(|p| op.starts_with(p))
}

#[derive(Debug)]
struct CallCounter(ApiStats);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "agentbus-call-counter"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(md) = cfg.load::<Metadata>() {
            self.0.record(md.service(), md.name());
        }
        Ok(())
    }
}

/// Who is calling: from STS GetCallerIdentity.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Caller {
    pub account: String,
    pub arn: String,
}

/// One client per service, all from the same configuration and all counted.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub region: String,
    pub endpoint: Option<String>,
    pub stats: ApiStats,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub iam: aws_sdk_iam::Client,
    pub sts: aws_sdk_sts::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub budgets: aws_sdk_budgets::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub s3: aws_sdk_s3::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl AwsClients {
    /// Loads configuration from the standard chain and checks that credentials exist.
    pub async fn load(opts: &AwsOptions) -> Result<Self, AwsSetupError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        let cfg = loader.load().await;
        if cfg.region().is_none() {
            return Err(AwsSetupError::NoRegion);
        }
        match cfg.credentials_provider() {
            None => {
                return Err(AwsSetupError::NoCredentials(
                    "no credentials provider".into(),
                ));
            }
            Some(p) => {
                if let Err(e) = p.provide_credentials().await {
                    return Err(AwsSetupError::NoCredentials(e.to_string()));
                }
            }
        }
        Ok(Self::from_sdk_config(&cfg))
    }

    pub fn from_sdk_config(cfg: &SdkConfig) -> Self {
        let stats = ApiStats::default();
        let counter = || CallCounter(stats.clone());
        macro_rules! client {
            ($krate:ident) => {
                $krate::Client::from_conf(
                    $krate::config::Builder::from(cfg)
                        .interceptor(counter())
                        .build(),
                )
            };
        }
        AwsClients {
            region: cfg
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "us-east-1".into()),
            endpoint: cfg.endpoint_url().map(str::to_string),
            dynamodb: client!(aws_sdk_dynamodb),
            ec2: client!(aws_sdk_ec2),
            ecs: client!(aws_sdk_ecs),
            iam: client!(aws_sdk_iam),
            sts: client!(aws_sdk_sts),
            secrets: client!(aws_sdk_secretsmanager),
            events: client!(aws_sdk_eventbridge),
            logs: client!(aws_sdk_cloudwatchlogs),
            budgets: client!(aws_sdk_budgets),
            ecr: client!(aws_sdk_ecr),
            elb: client!(aws_sdk_elasticloadbalancingv2),
            sqs: client!(aws_sdk_sqs),
            // Against a custom endpoint (an emulator, a compatible store) buckets are in the
            // path: `bucket.127.0.0.1` is not a host name.
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(cfg)
                    .force_path_style(cfg.endpoint_url().is_some())
                    .interceptor(counter())
                    .build(),
            ),
            stats,
        }
    }

    pub async fn caller(&self) -> Result<Caller, AwsSetupError> {
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsSetupError::Identity(crate::engine::error_text(&e)))?;
        Ok(Caller {
            account: out.account.unwrap_or_default(),
            arn: out.arn.unwrap_or_default(),
        })
    }

    /// True when talking to something other than AWS itself (an emulator or a compatible service).
    pub fn is_custom_endpoint(&self) -> bool {
        self.endpoint.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_operations_by_name() {
        assert!(is_read_operation("DescribeTable"));
        assert!(is_read_operation("ListTagsOfResource"));
        assert!(!is_read_operation("PutItem"));
        assert!(!is_read_operation("CreateTable"));
        let s = ApiStats::default();
        s.record("DynamoDB", "DescribeTable");
        s.record("DynamoDB", "PutItem");
        s.record("DynamoDB", "PutItem");
        assert_eq!(s.total(), 3);
        assert_eq!(s.writes().get("DynamoDB.PutItem"), Some(&2));
        assert_eq!(s.writes().len(), 1);
    }
}
