//! The deploy engine: typed desired state, observation of the cloud by name, a field-by-field
//! diff, and a parallel apply over the dependency graph. There is no state file: the cloud is
//! the state, found by deterministic names.
//!
//! A resource type implements [`Resource`]: it knows its physical name, the fields it wants,
//! how to observe them, and how to create, update and delete itself. The engine does the rest.

pub mod apply;
pub mod batch;
pub mod lock;
pub mod permissions;
pub mod plan;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::Serialize;
use serde_json::Value;

use crate::aws::AwsClients;
use crate::workspace::{Tier, Workspace};

pub use apply::{ApplyOptions, ApplyReport, Outcome, Progress};
pub use permissions::Permissions;
pub use plan::{Action, Change, FieldChange, Plan};

/// Outputs of resources (ARNs, ids), keyed `"{resource-id}.{output}"`.
pub type Outputs = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{resource}: {op} failed: {message}")]
    Aws {
        resource: String,
        op: String,
        message: String,
    },
    #[error("{resource}: not ready after {waited:?}: {detail}")]
    Timeout {
        resource: String,
        waited: Duration,
        detail: String,
    },
    #[error("{resource}: needs output {output} of a resource that does not exist yet")]
    MissingOutput { resource: String, output: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cancelled")]
    Cancelled,
}

impl EngineError {
    pub fn aws(resource: &str, op: &str, err: impl std::error::Error) -> Self {
        EngineError::Aws {
            resource: resource.to_string(),
            op: op.to_string(),
            message: error_text(&err),
        }
    }
}

pub use crate::aws::error_text;

/// The marker for a value that is only known once a dependency has been applied.
pub fn unknown(what: &str) -> Value {
    serde_json::json!({ "$unknown": what })
}

pub fn is_unknown(v: &Value) -> bool {
    v.get("$unknown").is_some()
}

/// One desired field: its value and whether changing it forces a replacement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Field {
    pub value: Value,
    pub forces_replace: bool,
}

/// The desired state of one resource, as named fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Desired {
    pub fields: BTreeMap<String, Field>,
}

impl Desired {
    pub fn new() -> Self {
        Self::default()
    }

    /// A field that can be changed in place.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(
            key.to_string(),
            Field {
                value: value.into(),
                forces_replace: false,
            },
        );
        self
    }

    /// A field whose change replaces the resource.
    pub fn set_replace(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(
            key.to_string(),
            Field {
                value: value.into(),
                forces_replace: true,
            },
        );
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key).map(|f| &f.value)
    }
}

/// What exists in the cloud for one resource: its fields (same keys as [`Desired`]) and outputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Observed {
    pub fields: BTreeMap<String, Value>,
    pub outputs: BTreeMap<String, String>,
}

impl Observed {
    /// An output by name (`arn`, `id`, `url` ...), empty when there is none.
    pub fn out(&self, key: &str) -> &str {
        self.outputs
            .get(key)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_string(), value.into());
        self
    }

    pub fn output(mut self, key: &str, value: impl Into<String>) -> Self {
        self.outputs.insert(key.to_string(), value.into());
        self
    }
}

/// Sorted tags as a JSON object, the form every resource uses for its `tags` field.
pub fn tags_value(tags: &[(String, String)]) -> Value {
    let m: BTreeMap<&str, &str> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// Only the `agentbus:*` tags of an observed tag set: other tags (a user's cost centre) are left alone.
pub fn own_tags<I, K, V>(tags: I) -> Value
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let m: BTreeMap<String, String> = tags
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .filter(|(k, _)| k.starts_with("agentbus:"))
        .collect();
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// Who a resource is: its logical id (unique across tiers), the tier that introduces it, its
/// physical name and its tags. The engine reads a resource's identity from here and owns the
/// `tags` field of every plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub id: &'static str,
    pub tier: Tier,
    pub name: String,
    pub tags: Vec<(String, String)>,
}

impl Meta {
    pub fn new(
        id: &'static str,
        tier: Tier,
        name: impl Into<String>,
        tags: Vec<(String, String)>,
    ) -> Self {
        Meta {
            id,
            tier,
            name: name.into(),
            tags,
        }
    }

    /// A failed call of this resource.
    pub fn fail(&self, op: &str, err: impl std::error::Error) -> EngineError {
        EngineError::aws(&self.name, op, err)
    }
}

/// How one service reads and changes a resource's tags. Each service has one (a unit struct
/// next to its resource kinds); the engine calls it, so no resource syncs tags itself.
#[async_trait]
pub trait TagApi: Send + Sync {
    /// Every tag of the resource as observed (the engine keeps only its own).
    async fn read(
        &self,
        aws: &AwsClients,
        meta: &Meta,
        observed: &Observed,
    ) -> Result<Vec<(String, String)>, EngineError>;
    /// Sets these tags (others stay as they are).
    async fn tag(
        &self,
        aws: &AwsClients,
        meta: &Meta,
        observed: &Observed,
        tags: &[(String, String)],
    ) -> Result<(), EngineError>;
    /// Removes these tag keys.
    async fn untag(
        &self,
        aws: &AwsClients,
        meta: &Meta,
        observed: &Observed,
        keys: &[String],
    ) -> Result<(), EngineError>;
}

/// An in-place change the engine asks of a resource: the outputs known now, what was
/// observed, and the fields that differ.
#[derive(Clone, Copy, Debug)]
pub struct Edit<'a> {
    pub outputs: &'a Outputs,
    pub current: &'a Observed,
    pub fields: &'a [String],
}

impl<'a> Edit<'a> {
    pub fn new(outputs: &'a Outputs, current: &'a Observed, fields: &'a [String]) -> Self {
        Edit {
            outputs,
            current,
            fields,
        }
    }
}

/// A service's [`TagApi`] from its three requests: each part names the arguments, the
/// operation (for errors) and the request; the engine's side sends it. `read` also says how
/// its output becomes pairs.
///
/// ```text
/// tag_api! {
///     /// EventBridge's tags, by the resource's `arn` output.
///     pub struct EventsTags;
///     read(aws, meta, o): "ListTagsForResource" => aws.events().list_tags_for_resource()…,
///         |out| out.tags().iter().map(|t| pair(t.key(), t.value())).collect();
///     tag(aws, meta, o, tags): "TagResource" => aws.events().tag_resource()…;
///     untag(aws, meta, o, keys): "UntagResource" => aws.events().untag_resource()…;
/// }
/// ```
#[macro_export]
macro_rules! tag_api {
    // A client whose calls are futures (the Query clients: `crate::ec2`, `crate::iam`, …):
    // `read(aws, meta, o): "ListRoleTags" => future aws.iam().list_role_tags(&meta.name), |t| t;`
    (
        $(#[$doc:meta])*
        pub struct $name:ident;
        read($ra:ident, $rm:ident, $ro:ident): $rop:literal => future $read:expr, |$out:ident| $pairs:expr;
        tag($ta:ident, $tm:ident, $to:ident, $tags:ident): $top:literal => future $tag:expr;
        untag($ua:ident, $um:ident, $uo:ident, $keys:ident): $uop:literal => future $untag:expr;
    ) => {
        $(#[$doc])*
        pub struct $name;

        #[async_trait::async_trait]
        impl $crate::engine::TagApi for $name {
            async fn read(
                &self,
                $ra: &$crate::aws::AwsClients,
                $rm: &$crate::engine::Meta,
                $ro: &$crate::engine::Observed,
            ) -> Result<Vec<(String, String)>, $crate::engine::EngineError> {
                let $out = $read.await.map_err(|e| $rm.fail($rop, e))?;
                Ok($pairs)
            }
            async fn tag(
                &self,
                $ta: &$crate::aws::AwsClients,
                $tm: &$crate::engine::Meta,
                $to: &$crate::engine::Observed,
                $tags: &[(String, String)],
            ) -> Result<(), $crate::engine::EngineError> {
                $tag.await.map_err(|e| $tm.fail($top, e))?;
                Ok(())
            }
            async fn untag(
                &self,
                $ua: &$crate::aws::AwsClients,
                $um: &$crate::engine::Meta,
                $uo: &$crate::engine::Observed,
                $keys: &[String],
            ) -> Result<(), $crate::engine::EngineError> {
                $untag.await.map_err(|e| $um.fail($uop, e))?;
                Ok(())
            }
        }
    };
    // A generated SDK's fluent builders: each is sent.
    (
        $(#[$doc:meta])*
        pub struct $name:ident;
        read($ra:ident, $rm:ident, $ro:ident): $rop:literal => $read:expr, |$out:ident| $pairs:expr;
        tag($ta:ident, $tm:ident, $to:ident, $tags:ident): $top:literal => $tag:expr;
        untag($ua:ident, $um:ident, $uo:ident, $keys:ident): $uop:literal => $untag:expr;
    ) => {
        $crate::tag_api! {
            $(#[$doc])*
            pub struct $name;
            read($ra, $rm, $ro): $rop => future $read.send(), |$out| $pairs;
            tag($ta, $tm, $to, $tags): $top => future $tag.send();
            untag($ua, $um, $uo, $keys): $uop => future $untag.send();
        }
    };
}

/// A tag's key or value as an SDK gives it: a string, or an optional one.
pub trait TagText {
    fn text(self) -> String;
}

impl TagText for &str {
    fn text(self) -> String {
        self.to_string()
    }
}

impl TagText for Option<&str> {
    fn text(self) -> String {
        self.unwrap_or_default().to_string()
    }
}

/// A tag as a pair of strings.
pub fn pair(key: impl TagText, value: impl TagText) -> (String, String) {
    (key.text(), value.text())
}

/// A deployable resource type. Its identity comes from [`Meta`]; the engine adds the `tags`
/// field, syncs tags through [`Resource::tags`], treats "not found" as absence (see
/// [`found`] and [`gone`]) and observes the resource again after every create and update.
#[async_trait]
pub trait Resource: Send + Sync {
    /// Id, tier, name and tags.
    fn meta(&self) -> &Meta;
    /// Resource type as shown in plans (`dynamodb table`, `ecs service`, ...).
    fn kind(&self) -> &'static str;
    /// Logical id, unique across all tiers (`kv-table`, `dashboard-service`, ...).
    fn id(&self) -> &'static str {
        self.meta().id
    }
    /// Physical name.
    fn name(&self) -> String {
        self.meta().name.clone()
    }
    /// The tier that introduces this resource.
    fn tier(&self) -> Tier {
        self.meta().tier
    }
    /// How the resource's tags are read and changed; `None`: it has no tags.
    fn tags(&self) -> Option<&dyn TagApi> {
        None
    }
    /// Logical ids whose outputs this resource needs; they are applied first.
    fn depends_on(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Whether the settings call for this resource at all (an HTTPS listener, for one, only
    /// with a certificate). An unwanted resource that exists is removed like one above the
    /// target tier.
    fn wanted(&self) -> bool {
        true
    }
    /// Tables, buckets and databases: never deleted without an explicit flag.
    fn data_bearing(&self) -> bool {
        false
    }
    /// Whether AWS refuses to delete this resource while another one uses it (a security
    /// group attached to network interfaces, a target group a listener forwards to): then it
    /// cannot be replaced under its users, and the plan says so instead of trying.
    fn delete_refused_while_used(&self) -> bool {
        false
    }
    /// Why this resource must not be deleted even with the data flag (prod deletion protection).
    fn protected(&self) -> Option<String> {
        None
    }
    /// A setting of the whole account that a deploy may turn on but never off (CloudWatch
    /// Transaction Search): once no plan wants it, plans leave it as it is and do not show it.
    fn account_setting(&self) -> bool {
        false
    }
    /// What the plan says when the target tier includes this resource, the deploy does not
    /// want it ([`Resource::wanted`]) and it does not exist: what is missing without it.
    fn note_when_absent(&self) -> Option<String> {
        None
    }
    /// Whether an in-place update keeps this resource's outputs (a new task definition
    /// revision, for one, does not).
    fn outputs_stable_on_update(&self) -> bool {
        true
    }
    /// The fields this resource should have (tags aside: the engine adds them), given the
    /// outputs known so far. A missing dependency output is [`unknown`].
    fn desired(&self, outputs: &Outputs) -> Desired;
    /// The IAM actions (and their resources) a deployer needs to plan this resource and to
    /// change it in workspace `ws`: exactly the calls its own methods and its tag API make.
    fn permissions(&self, ws: &Workspace) -> Permissions;
    /// Looks the resource up by name. `None` when it does not exist. It may report its
    /// `tags` field when the lookup returns them; otherwise the engine reads them.
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError>;
    /// The reads that need what the lookup found (a table's TTL and backups, a role's
    /// policies): the fields and outputs they add. The engine runs them at the same time as
    /// its tag read, so a resource is observed in two round trips however many reads it
    /// takes; independent reads in here run at once too. Most resources need none.
    async fn observe_more(
        &self,
        _aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        Ok(Observed::default())
    }
    /// Creates the resource (with its tags) and waits until it is usable; an interrupted
    /// apply may have left it half made. The engine observes it afterwards.
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError>;
    /// Changes `c.fields` in place (never `tags`: the engine syncs them).
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError>;
    /// Deletes the resource and waits until it is gone.
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError>;
    /// What this resource costs a month for the given prices and usage; free resources
    /// return no lines.
    fn monthly_cost(
        &self,
        _ctx: &crate::cost::CostContext<'_>,
    ) -> Result<Vec<crate::cost::CostLine>, crate::cost::CostError> {
        Ok(Vec::new())
    }
    /// Where people reach this resource, given what was observed of it (a load balancer's
    /// URL); most resources have no address.
    fn address(&self, _observed: &Observed) -> Option<String> {
        None
    }
    /// A note the plan shows next to this resource (e.g. "no ingress: add --allow-cidr").
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// A note the plan shows when these fields are set, by a create or an update (e.g. what
    /// AWS takes a while to make true after such a change).
    fn change_notes(&self, _fields: &[String]) -> Vec<String> {
        Vec::new()
    }
}

/// What the engine wants of a resource: its own fields and, when it has tags, its tags.
pub fn desired_of(r: &dyn Resource, outputs: &Outputs) -> Desired {
    let d = r.desired(outputs);
    match r.tags() {
        Some(_) => d.set("tags", tags_value(&r.meta().tags)),
        None => d,
    }
}

/// What exists of a resource, with its own tags (read through its tag API when the lookup
/// did not report them): the lookup, then its further reads and the tag read at once.
pub async fn observe(r: &dyn Resource, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
    let Some(mut o) = r.observe(aws).await? else {
        return Ok(None);
    };
    let reported = o.fields.remove("tags");
    let tags = async {
        match (r.tags(), reported) {
            (None, reported) | (Some(_), reported @ Some(_)) => Ok(reported),
            (Some(api), None) => Ok(Some(own_tags(api.read(aws, r.meta(), &o).await?))),
        }
    };
    let (more, tags) = futures::try_join!(r.observe_more(aws, &o), tags)?;
    o.fields.extend(more.fields);
    o.outputs.extend(more.outputs);
    if let Some(t) = tags {
        o.fields.insert("tags".into(), t);
    }
    Ok(Some(o))
}

/// Observes a resource right after it was created or changed. AWS is eventually
/// consistent: a lookup right after a create may not find it yet, so it is retried for a
/// while before the create counts as lost.
pub async fn observe_settled(r: &dyn Resource, aws: &AwsClients) -> Result<Observed, EngineError> {
    let mut wait = Duration::from_millis(200);
    for _ in 0..8 {
        if let Some(o) = observe(r, aws).await? {
            return Ok(o);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    Err(EngineError::Invalid(format!(
        "{}: not found right after it was created",
        r.name()
    )))
}

/// Creates a resource and observes it.
pub async fn create(
    r: &dyn Resource,
    aws: &AwsClients,
    outputs: &Outputs,
) -> Result<Observed, EngineError> {
    r.create(aws, outputs).await?;
    observe_settled(r, aws).await
}

/// Changes `changed` fields of a resource (its tags through its tag API, the rest through
/// the resource) and observes it again.
pub async fn update(
    r: &dyn Resource,
    aws: &AwsClients,
    outputs: &Outputs,
    current: &Observed,
    changed: &[String],
) -> Result<Observed, EngineError> {
    let own: Vec<String> = changed.iter().filter(|c| *c != "tags").cloned().collect();
    if !own.is_empty() {
        r.update(aws, &Edit::new(outputs, current, &own)).await?;
    }
    if let (true, Some(api)) = (changed.iter().any(|c| c == "tags"), r.tags()) {
        let (set, remove) = tag_changes(
            current.fields.get("tags"),
            Some(&tags_value(&r.meta().tags)),
        );
        if !remove.is_empty() {
            api.untag(aws, r.meta(), current, &remove).await?;
        }
        if !set.is_empty() {
            api.tag(aws, r.meta(), current, &set).await?;
        }
    }
    observe_settled(r, aws).await
}

/// Tags to set and tag keys to remove to get from `current` to `desired` (both JSON objects
/// of strings). Only our own `agentbus:*` keys are ever removed.
pub fn tag_changes(
    current: Option<&Value>,
    desired: Option<&Value>,
) -> (Vec<(String, String)>, Vec<String>) {
    let empty = serde_json::Map::new();
    let cur = current.and_then(|v| v.as_object()).unwrap_or(&empty);
    let want = desired.and_then(|v| v.as_object()).unwrap_or(&empty);
    let set = want
        .iter()
        .filter(|(k, v)| cur.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let remove = cur
        .keys()
        .filter(|k| !want.contains_key(*k) && k.starts_with("agentbus:"))
        .cloned()
        .collect();
    (set, remove)
}

/// The output of a call that looks something up: `None` when `missing` says the error means
/// "does not exist" (the SDK's typed accessor, or [`unmodeled`] codes).
pub fn found<T, E, R>(
    result: Result<T, SdkError<E, R>>,
    missing: impl Fn(&E) -> bool,
    meta: &Meta,
    op: &str,
) -> Result<Option<T>, EngineError>
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.as_service_error().is_some_and(&missing) => Ok(None),
        Err(e) => Err(meta.fail(op, e)),
    }
}

/// The end of a delete: success, also when `missing` says the thing is already gone.
pub fn gone<T, E, R>(
    result: Result<T, SdkError<E, R>>,
    missing: impl Fn(&E) -> bool,
    meta: &Meta,
    op: &str,
) -> Result<(), EngineError>
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    found(result, missing, meta, op).map(|_| ())
}

/// A create that tolerates "already exists" (an interrupted apply left it behind): `exists`
/// is the SDK's typed accessor, or [`unmodeled`] codes. The same rule as [`gone`], read the
/// other way.
pub use gone as made;

/// The one table of error codes the SDKs do not model, by what they mean, as the services
/// document them (EC2 models no errors; S3 leaves its configuration lookups out).
pub mod codes {
    /// ECS DescribeTaskDefinition; EventBridge DeleteEventBus on an emulator.
    pub const NOT_FOUND: &[&str] = &["ResourceNotFoundException"];
    /// EC2: the security group does not exist.
    pub const GROUP_NOT_FOUND: &[&str] = &["InvalidGroup.NotFound"];
    /// EC2: a security group of that name exists in the VPC.
    pub const GROUP_EXISTS: &[&str] = &["InvalidGroup.Duplicate"];
    /// EC2: the security group already has that rule.
    pub const RULE_EXISTS: &[&str] = &["InvalidPermission.Duplicate"];
    /// EC2: something (a network interface) still uses the security group.
    pub const IN_USE: &[&str] = &["DependencyViolation"];
    /// Elastic Load Balancing DeleteTargetGroup.
    pub const TARGET_GROUP_NOT_FOUND: &[&str] = &["TargetGroupNotFound"];
    /// SQS: the SDK maps only `AWS.SimpleQueueService.NonExistentQueue` (the query-compatible
    /// error header); an endpoint that answers without that header says this.
    pub const QUEUE_NOT_FOUND: &[&str] = &["QueueDoesNotExist"];
    /// S3 DeleteBucket.
    pub const NO_SUCH_BUCKET: &[&str] = &["NoSuchBucket"];
    /// S3 GetBucketTagging on a bucket without tags.
    pub const NO_TAGS: &[&str] = &["NoSuchTagSet"];
    /// S3 GetBucketEncryption without a configuration.
    pub const NO_ENCRYPTION: &[&str] = &["ServerSideEncryptionConfigurationNotFoundError"];
    /// S3 GetPublicAccessBlock without a configuration.
    pub const NO_PUBLIC_ACCESS_BLOCK: &[&str] = &["NoSuchPublicAccessBlockConfiguration"];
    /// S3 GetBucketLifecycleConfiguration without rules.
    pub const NO_LIFECYCLE: &[&str] = &["NoSuchLifecycleConfiguration"];
    /// S3 GetBucketPolicy without a policy.
    pub const NO_POLICY: &[&str] = &["NoSuchBucketPolicy"];
}

/// A predicate for codes of [`codes`] (what an SDK does not model).
pub fn unmodeled<E: ProvideErrorMetadata>(codes: &'static [&'static str]) -> impl Fn(&E) -> bool {
    move |e: &E| e.code().is_some_and(|c| codes.contains(&c))
}

/// Looks up `"{id}.{key}"`, or the unknown marker.
pub fn output_or_unknown(outputs: &Outputs, id: &str, key: &str) -> Value {
    let k = format!("{id}.{key}");
    outputs
        .get(&k)
        .map(|v| Value::String(v.clone()))
        .unwrap_or_else(|| unknown(&k))
}

/// Looks up `"{id}.{key}"` at apply time, when it must be known.
pub fn require_output(
    outputs: &Outputs,
    resource: &str,
    id: &str,
    key: &str,
) -> Result<String, EngineError> {
    let k = format!("{id}.{key}");
    outputs
        .get(&k)
        .cloned()
        .ok_or_else(|| EngineError::MissingOutput {
            resource: resource.to_string(),
            output: k,
        })
}

/// Calls `call` again while `transient` says AWS is still settling (its documented eventual
/// consistency: point-in-time recovery right after a table became ACTIVE, a role right after it
/// was created, a name right after its resource was deleted), backing off from half a second
/// to five, for at most `limit`; then returns what the last call returned.
pub async fn settle<T, E, F, Fut>(
    limit: Duration,
    transient: impl Fn(&E) -> bool,
    mut call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let start = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(500);
    loop {
        match call().await {
            Err(e) if transient(&e) && start.elapsed() + wait < limit => {
                tracing::debug!("AWS is still settling; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// How long a create waits for AWS to settle before its error counts.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(180);

/// The first pause of [`wait_until`]: it doubles from here up to the pause asked for, so a
/// change that settles in a second is seen then, and a long one is not polled more often
/// than asked.
const FIRST_PAUSE: Duration = Duration::from_secs(1);

/// Polls `check` until it returns `Some`, or fails after `limit`: first after a second, then
/// after twice as long each time, up to `every`.
pub async fn wait_until<T, F, Fut>(
    resource: &str,
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Result<T, String>, EngineError>>,
{
    let start = tokio::time::Instant::now();
    let mut pause = FIRST_PAUSE.min(every);
    loop {
        match check().await? {
            Ok(v) => return Ok(v),
            Err(detail) => {
                if start.elapsed() >= limit {
                    return Err(EngineError::Timeout {
                        resource: resource.to_string(),
                        waited: limit,
                        detail,
                    });
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(every);
    }
}

#[cfg(test)]
mod tests;
