//! AWS client setup: one `SdkConfig` from the standard chain (profile, region, `AWS_ENDPOINT_URL`),
//! a registry of SDK clients (one per service, built on first use), and a call counter on every
//! client so plans and applies can report how many API calls (and how many writes) they made.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
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
    #[error(
        "the AWS profile {name:?} (from {from}) is not in ~/.aws/config or ~/.aws/credentials{known}"
    )]
    UnknownProfile {
        name: String,
        from: &'static str,
        known: String,
    },
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

/// The interceptor that counts a client's calls into the run's [`ApiStats`].
#[derive(Clone, Debug)]
pub struct CallCounter(ApiStats);

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

/// The AWS clients of a run: one configuration from the standard chain, and a registry of
/// SDK clients keyed by service, each built once on first use with the call counter attached.
/// A tier crate brings its own services with [`sdk_client!`] (see `tier_small::aws`); this
/// crate knows only the services of the foundation and the extra-small tier.
#[derive(Clone)]
pub struct AwsClients {
    pub region: String,
    pub endpoint: Option<String>,
    pub stats: ApiStats,
    config: SdkConfig,
    clients: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl std::fmt::Debug for AwsClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClients")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// What a client registry hands a builder: the shared configuration and the interceptor that
/// counts the client's calls.
pub struct ClientParts<'a> {
    pub config: &'a SdkConfig,
    /// The interceptor every client carries (attach it with the builder's `interceptor`).
    pub counter: CallCounter,
    /// True against an endpoint other than AWS itself (an emulator, a compatible store).
    pub custom_endpoint: bool,
}

/// The client of one SDK crate from an [`AwsClients`], built once with the call counter
/// attached: `sdk_client!(aws, aws_sdk_s3)`, or with a builder adjustment:
/// `sdk_client!(aws, aws_sdk_s3, |b, parts| b.force_path_style(parts.custom_endpoint))`.
#[macro_export]
macro_rules! sdk_client {
    ($aws:expr, $krate:ident) => {
        $crate::sdk_client!($aws, $krate, |b, _parts| b)
    };
    ($aws:expr, $krate:ident, |$b:ident, $parts:ident| $adjust:expr) => {
        $aws.client(|$parts: $crate::aws::ClientParts<'_>| {
            let $b = $krate::config::Builder::from($parts.config);
            let $b = $adjust;
            $krate::Client::from_conf($b.interceptor($parts.counter).build())
        })
    };
}

/// A profile named by `--profile` or `AWS_PROFILE` must exist: otherwise the SDK goes on
/// without it and the user reads about a missing region or credentials instead.
async fn check_profile(opts: &AwsOptions) -> Result<(), AwsSetupError> {
    let (name, source) = match (&opts.profile, std::env::var("AWS_PROFILE")) {
        (Some(p), _) => (p.clone(), "--profile"),
        (None, Ok(p)) if !p.is_empty() => (p, "AWS_PROFILE"),
        _ => return Ok(()),
    };
    let set = aws_config::profile::load(
        &aws_types::os_shim_internal::Fs::real(),
        &aws_types::os_shim_internal::Env::real(),
        &Default::default(),
        None,
    )
    .await;
    // Unreadable or absent files: the SDK's own error says more than a guess here.
    let Ok(set) = set else {
        return Ok(());
    };
    if set.get_profile(&name).is_some() || (name == "default" && set.is_empty()) {
        return Ok(());
    }
    let mut names: Vec<&str> = set.profiles().collect();
    names.sort_unstable();
    Err(AwsSetupError::UnknownProfile {
        name,
        from: source,
        known: if names.is_empty() {
            String::new()
        } else {
            format!(" (profiles there: {})", names.join(", "))
        },
    })
}

/// Attempts of one AWS call (the first and its retries).
pub const MAX_ATTEMPTS: u32 = 5;
/// How long a connection may take to open, and one attempt to finish: a hung connection fails
/// one attempt, which is retried, instead of hanging a deploy. (SQS long polls wait 20 s.)
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How every AWS call retries and times out: the standard mode's backoff with jitter, for
/// five attempts instead of three (a throttled or briefly unavailable API no longer fails a
/// resource after the third), and timeouts. (The SDK's adaptive mode, which rate-limits the
/// client after throttling, is marked experimental, and held a long poll back in the tests.)
/// `AWS_RETRY_MODE` or `AWS_MAX_ATTEMPTS` in the environment keep their say (`env_retries`).
pub fn with_call_policy(
    loader: aws_config::ConfigLoader,
    env_retries: bool,
) -> aws_config::ConfigLoader {
    let loader = loader.timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build(),
    );
    if env_retries {
        return loader;
    }
    loader.retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
}

impl AwsClients {
    /// Loads configuration from the standard chain and checks that credentials exist.
    pub async fn load(opts: &AwsOptions) -> Result<Self, AwsSetupError> {
        check_profile(opts).await?;
        let env_retries = ["AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS"]
            .iter()
            .any(|k| std::env::var_os(k).is_some());
        let mut loader =
            with_call_policy(aws_config::defaults(BehaviorVersion::latest()), env_retries);
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
        AwsClients {
            region: cfg
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "us-east-1".into()),
            endpoint: cfg.endpoint_url().map(str::to_string),
            stats: ApiStats::default(),
            config: cfg.clone(),
            clients: Arc::default(),
        }
    }

    /// The shared SDK configuration (for a client in another region, say).
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// The registry's client of type `C`, built by `build` on first use. Use [`sdk_client!`],
    /// which attaches the call counter.
    pub fn client<C, F>(&self, build: F) -> C
    where
        C: Clone + Send + Sync + 'static,
        F: FnOnce(ClientParts<'_>) -> C,
    {
        let key = TypeId::of::<C>();
        let mut map = match self.clients.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(c) = map.get(&key).and_then(|c| c.downcast_ref::<C>()) {
            return c.clone();
        }
        let client = build(ClientParts {
            config: &self.config,
            counter: CallCounter(self.stats.clone()),
            custom_endpoint: self.endpoint.is_some(),
        });
        map.insert(key, Box::new(client.clone()));
        client
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        sdk_client!(self, aws_sdk_dynamodb)
    }
    /// EC2's client (`crate::ec2`: its Query API on the SDK's runtime, not a generated SDK).
    pub fn ec2(&self) -> crate::ec2::Ec2 {
        self.client(crate::ec2::Ec2::new)
    }
    pub fn ecs(&self) -> aws_sdk_ecs::Client {
        sdk_client!(self, aws_sdk_ecs)
    }
    /// IAM's client (`crate::iam`: its Query API on the SDK's runtime, not a generated SDK).
    pub fn iam(&self) -> crate::iam::Iam {
        self.client(crate::iam::Iam::new)
    }
    pub fn sts(&self) -> aws_sdk_sts::Client {
        sdk_client!(self, aws_sdk_sts)
    }
    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        sdk_client!(self, aws_sdk_secretsmanager)
    }
    pub fn events(&self) -> aws_sdk_eventbridge::Client {
        sdk_client!(self, aws_sdk_eventbridge)
    }
    pub fn logs(&self) -> aws_sdk_cloudwatchlogs::Client {
        sdk_client!(self, aws_sdk_cloudwatchlogs)
    }
    pub fn budgets(&self) -> aws_sdk_budgets::Client {
        sdk_client!(self, aws_sdk_budgets)
    }
    pub fn ecr(&self) -> aws_sdk_ecr::Client {
        sdk_client!(self, aws_sdk_ecr)
    }
    pub fn route53(&self) -> aws_sdk_route53::Client {
        sdk_client!(self, aws_sdk_route53)
    }

    pub async fn caller(&self) -> Result<Caller, AwsSetupError> {
        let out = self
            .sts()
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsSetupError::Identity(error_text(&e)))?;
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

/// The whole error chain on one line (SDK errors hide the useful part in their sources).
pub fn error_text(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_retries_five_times_and_no_attempt_hangs() {
        let creds = aws_credential_types::Credentials::new("a", "b", None, None, "test");
        let base = || {
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(creds.clone())
        };
        let cfg = with_call_policy(base(), false).load().await;
        let retry = cfg.retry_config().expect("a retry policy");
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
        assert_eq!(retry.max_attempts(), MAX_ATTEMPTS);
        let timeouts = cfg.timeout_config().expect("timeouts");
        assert_eq!(timeouts.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        // Retries named in the environment are the environment's (the SDK reads them).
        let cfg = with_call_policy(base(), true).load().await;
        assert_ne!(
            cfg.retry_config().map(|r| r.max_attempts()),
            Some(MAX_ATTEMPTS)
        );
        assert!(
            cfg.timeout_config()
                .is_some_and(|t| t.connect_timeout().is_some())
        );
    }

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
