//! EventBridge: the workspace's own event bus, and a rule on it whose target delivers
//! (into a log group), so no rule dangles and no global bus is touched.

use async_trait::async_trait;
use aws_sdk_eventbridge::types::{RuleState, Tag, Target};
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::cost::base::base_cost;
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::{
    Desired, EngineError, Observed, Outputs, Resource, error_code, output_or_unknown, own_tags,
    require_output, tags_value,
};
use crate::workspace::Tier;

use super::{normalize_json, tag_changes};

fn tag(k: &str, v: &str, id: &str) -> Result<Tag, EngineError> {
    Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| EngineError::Invalid(format!("{id}: {e}")))
}

async fn observe_tags(aws: &AwsClients, arn: &str, name: &str) -> Result<Value, EngineError> {
    let out = aws
        .events()
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| EngineError::aws(name, "ListTagsForResource", e))?;
    Ok(own_tags(
        out.tags().iter().map(|t| (t.key.clone(), t.value.clone())),
    ))
}

async fn apply_tags(
    aws: &AwsClients,
    arn: &str,
    name: &str,
    current: Option<&Value>,
    want: Option<&Value>,
) -> Result<(), EngineError> {
    let (set, remove) = tag_changes(current, want);
    if !remove.is_empty() {
        aws.events()
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(|e| EngineError::aws(name, "UntagResource", e))?;
    }
    if !set.is_empty() {
        let mut req = aws.events().tag_resource().resource_arn(arn);
        for (k, v) in set {
            req = req.tags(tag(&k, &v, name)?);
        }
        req.send()
            .await
            .map_err(|e| EngineError::aws(name, "TagResource", e))?;
    }
    Ok(())
}

pub struct EventBus {
    pub id: &'static str,
    pub tier: Tier,
    pub name: String,
    pub tags: Vec<(String, String)>,
}

#[async_trait]
impl Resource for EventBus {
    fn id(&self) -> &'static str {
        self.id
    }
    fn kind(&self) -> &'static str {
        "eventbridge bus"
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn tier(&self) -> Tier {
        self.tier
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new().set("tags", tags_value(&self.tags))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = match aws
            .events()
            .describe_event_bus()
            .name(&self.name)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(EngineError::aws(&self.name, "DescribeEventBus", e)),
        };
        let arn = out.arn.unwrap_or_default();
        let tags = observe_tags(aws, &arn, &self.name).await?;
        Ok(Some(
            Observed::default()
                .field("tags", tags)
                .output("arn", arn)
                .output("name", self.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<Observed, EngineError> {
        let mut req = aws.events().create_event_bus().name(&self.name);
        for (k, v) in &self.tags {
            req = req.tags(tag(k, v, &self.name)?);
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(EngineError::aws(&self.name, "CreateEventBus", e)),
        }
        self.observe(aws)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("{}: created but not found", self.name)))
    }
    async fn update(
        &self,
        aws: &AwsClients,
        outputs: &Outputs,
        current: &Observed,
        _changed: &[String],
    ) -> Result<Observed, EngineError> {
        let arn = current.outputs.get("arn").cloned().unwrap_or_default();
        apply_tags(
            aws,
            &arn,
            &self.name,
            current.fields.get("tags"),
            self.desired(outputs).get("tags"),
        )
        .await?;
        Ok(current.clone())
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let (p, u) = base_cost(ctx)?;
        Ok(vec![CostLine::new(
            self.id,
            "custom events published",
            u.events / 1e6,
            "M events",
            p.eventbridge_custom_events_million,
        )])
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        match aws
            .events()
            .delete_event_bus()
            .name(&self.name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(EngineError::aws(&self.name, "DeleteEventBus", e)),
        }
    }
}

/// A rule on the workspace bus with one target.
pub struct EventRule {
    pub id: &'static str,
    pub tier: Tier,
    pub name: String,
    pub bus_id: &'static str,
    pub bus_name: String,
    pub description: String,
    pub pattern: Value,
    /// Logical id of the target resource; its `arn` output is the target.
    pub target_id: &'static str,
    pub tags: Vec<(String, String)>,
}

/// The id of the rule's one target.
const TARGET_ID: &str = "deliver";

#[async_trait]
impl Resource for EventRule {
    fn id(&self) -> &'static str {
        self.id
    }
    fn kind(&self) -> &'static str {
        "eventbridge rule"
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn tier(&self) -> Tier {
        self.tier
    }
    fn depends_on(&self) -> Vec<&'static str> {
        vec![self.bus_id, self.target_id]
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        Desired::new()
            .set_replace("bus", self.bus_name.clone())
            .set("pattern", self.pattern.clone())
            .set("description", self.description.clone())
            .set("state", "ENABLED")
            .set(
                "targets",
                json!([{ "id": TARGET_ID, "arn": output_or_unknown(outputs, self.target_id, "arn") }]),
            )
            .set("tags", tags_value(&self.tags))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = match aws
            .events()
            .describe_rule()
            .name(&self.name)
            .event_bus_name(&self.bus_name)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(EngineError::aws(&self.name, "DescribeRule", e)),
        };
        let arn = out.arn.clone().unwrap_or_default();
        let targets = aws
            .events()
            .list_targets_by_rule()
            .rule(&self.name)
            .event_bus_name(&self.bus_name)
            .send()
            .await
            .map_err(|e| EngineError::aws(&self.name, "ListTargetsByRule", e))?;
        let mut t: Vec<Value> = targets
            .targets()
            .iter()
            .map(|t| json!({"id": t.id, "arn": t.arn}))
            .collect();
        t.sort_by_key(|v| v.to_string());
        let tags = observe_tags(aws, &arn, &self.name).await?;
        Ok(Some(
            Observed::default()
                .field(
                    "bus",
                    out.event_bus_name.unwrap_or_else(|| self.bus_name.clone()),
                )
                .field(
                    "pattern",
                    normalize_json(out.event_pattern.as_deref().unwrap_or("null")),
                )
                .field("description", out.description.unwrap_or_default())
                .field(
                    "state",
                    out.state
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
                .field("targets", Value::Array(t))
                .field("tags", tags)
                .output("arn", arn)
                .output("name", self.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<Observed, EngineError> {
        let mut req = aws
            .events()
            .put_rule()
            .name(&self.name)
            .event_bus_name(&self.bus_name)
            .description(&self.description)
            .event_pattern(self.pattern.to_string())
            .state(RuleState::Enabled);
        for (k, v) in &self.tags {
            req = req.tags(tag(k, v, &self.name)?);
        }
        req.send()
            .await
            .map_err(|e| EngineError::aws(&self.name, "PutRule", e))?;
        self.put_target(aws, outputs).await?;
        self.observe(aws)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("{}: created but not found", self.name)))
    }
    async fn update(
        &self,
        aws: &AwsClients,
        outputs: &Outputs,
        current: &Observed,
        changed: &[String],
    ) -> Result<Observed, EngineError> {
        let arn = current.outputs.get("arn").cloned().unwrap_or_default();
        if changed
            .iter()
            .any(|c| matches!(c.as_str(), "pattern" | "description" | "state"))
        {
            aws.events()
                .put_rule()
                .name(&self.name)
                .event_bus_name(&self.bus_name)
                .description(&self.description)
                .event_pattern(self.pattern.to_string())
                .state(RuleState::Enabled)
                .send()
                .await
                .map_err(|e| EngineError::aws(&self.name, "PutRule", e))?;
        }
        if changed.iter().any(|c| c == "targets") {
            // Remove targets that are not ours, then put ours.
            let stale: Vec<String> = current
                .fields
                .get("targets")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.get("id").and_then(|i| i.as_str()))
                        .filter(|i| *i != TARGET_ID)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if !stale.is_empty() {
                aws.events()
                    .remove_targets()
                    .rule(&self.name)
                    .event_bus_name(&self.bus_name)
                    .set_ids(Some(stale))
                    .send()
                    .await
                    .map_err(|e| EngineError::aws(&self.name, "RemoveTargets", e))?;
            }
            self.put_target(aws, outputs).await?;
        }
        if changed.iter().any(|c| c == "tags") {
            apply_tags(
                aws,
                &arn,
                &self.name,
                current.fields.get("tags"),
                self.desired(outputs).get("tags"),
            )
            .await?;
        }
        Ok(current.clone())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        let ids: Vec<String> = current
            .fields
            .get("targets")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("id").and_then(|i| i.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            aws.events()
                .remove_targets()
                .rule(&self.name)
                .event_bus_name(&self.bus_name)
                .set_ids(Some(ids))
                .send()
                .await
                .map_err(|e| EngineError::aws(&self.name, "RemoveTargets", e))?;
        }
        match aws
            .events()
            .delete_rule()
            .name(&self.name)
            .event_bus_name(&self.bus_name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(EngineError::aws(&self.name, "DeleteRule", e)),
        }
    }
}

impl EventRule {
    async fn put_target(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let target_arn = require_output(outputs, &self.name, self.target_id, "arn")?;
        let target = Target::builder()
            .id(TARGET_ID)
            .arn(target_arn)
            .build()
            .map_err(|e| EngineError::Invalid(format!("{}: {e}", self.name)))?;
        let out = aws
            .events()
            .put_targets()
            .rule(&self.name)
            .event_bus_name(&self.bus_name)
            .targets(target)
            .send()
            .await
            .map_err(|e| EngineError::aws(&self.name, "PutTargets", e))?;
        if out.failed_entry_count > 0 {
            return Err(EngineError::Invalid(format!(
                "{}: PutTargets rejected the target: {:?}",
                self.name,
                out.failed_entries()
                    .iter()
                    .map(|f| f.error_message.clone().unwrap_or_default())
                    .collect::<Vec<_>>()
            )));
        }
        Ok(())
    }
}
