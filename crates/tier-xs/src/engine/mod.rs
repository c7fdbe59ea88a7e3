//! The deploy engine: typed desired state, observation of the cloud by name, a field-by-field
//! diff, and a parallel apply over the dependency graph. There is no state file: the cloud is
//! the state, found by deterministic names.
//!
//! A resource type implements [`Resource`]: it knows its physical name, the fields it wants,
//! how to observe them, and how to create, update and delete itself. The engine does the rest.

pub mod apply;
pub mod lock;
pub mod plan;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::aws::AwsClients;
use crate::workspace::Tier;

pub use apply::{ApplyOptions, ApplyReport, Outcome, Progress};
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

pub use crate::aws::{error_code, error_text};

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

/// A deployable resource type.
#[async_trait]
pub trait Resource: Send + Sync {
    /// Logical id, unique across all tiers (`kv-table`, `dashboard-service`, ...).
    fn id(&self) -> &'static str;
    /// Resource type as shown in plans (`dynamodb table`, `ecs service`, ...).
    fn kind(&self) -> &'static str;
    /// Physical name.
    fn name(&self) -> String;
    /// The tier that introduces this resource.
    fn tier(&self) -> Tier;
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
    /// Why this resource must not be deleted even with the data flag (prod deletion protection).
    fn protected(&self) -> Option<String> {
        None
    }
    /// Whether an in-place update keeps this resource's outputs (a new task definition
    /// revision, for one, does not).
    fn outputs_stable_on_update(&self) -> bool {
        true
    }
    /// The fields this resource should have, given the outputs known so far. A missing
    /// dependency output is [`unknown`].
    fn desired(&self, outputs: &Outputs) -> Desired;
    /// Looks the resource up by name. `None` when it does not exist.
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError>;
    /// Creates the resource and waits until it is usable; returns its outputs.
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<Observed, EngineError>;
    /// Changes the given fields in place.
    async fn update(
        &self,
        aws: &AwsClients,
        outputs: &Outputs,
        current: &Observed,
        changed: &[String],
    ) -> Result<Observed, EngineError>;
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
}

/// Observes a resource that was just created; it must be there.
pub async fn observe_created(
    resource: &dyn Resource,
    aws: &AwsClients,
) -> Result<Observed, EngineError> {
    resource.observe(aws).await?.ok_or_else(|| {
        EngineError::Invalid(format!(
            "{}: not found right after creation",
            resource.name()
        ))
    })
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

/// Polls `check` every `every` until it returns `Some`, or fails after `limit`.
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
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests;
