//! EventBridge: the workspace's own event bus, and a rule on it whose target delivers
//! (into a log group), so no rule dangles and no global bus is touched.

use async_trait::async_trait;
use aws_sdk_eventbridge::operation::create_event_bus::CreateEventBusError;
use aws_sdk_eventbridge::operation::delete_event_bus::DeleteEventBusError;
use aws_sdk_eventbridge::operation::delete_rule::DeleteRuleError;
use aws_sdk_eventbridge::operation::describe_event_bus::DescribeEventBusError;
use aws_sdk_eventbridge::operation::describe_rule::DescribeRuleError;
use aws_sdk_eventbridge::types::{RuleState, Tag, Target};
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::cost::base::base_cost;
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::pair;
use crate::engine::permissions::Permissions;
use crate::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, codes, found, gone,
    made, output_or_unknown, require_output, unmodeled,
};
use crate::tag_api;
use crate::workspace::Workspace;

use super::normalize_json;

fn tag(k: &str, v: &str, id: &str) -> Result<Tag, EngineError> {
    Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| EngineError::Invalid(format!("{id}: {e}")))
}

tag_api! {
    /// EventBridge's tags, by the resource's `arn` output.
    pub struct EventsTags;
    read(aws, meta, o): "ListTagsForResource" => aws.events().list_tags_for_resource().resource_arn(o.out("arn")),
        |out| out.tags().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "TagResource" => aws.events().tag_resource().resource_arn(o.out("arn"))
        .set_tags(Some(tags.iter().map(|(k, v)| tag(k, v, &meta.name)).collect::<Result<_, _>>()?));
    untag(aws, meta, o, keys): "UntagResource" => aws.events().untag_resource().resource_arn(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

pub struct EventBus {
    pub meta: Meta,
}

#[async_trait]
impl Resource for EventBus {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "eventbridge bus"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let bus = ws.arn("events", &format!("event-bus/{}", self.meta.name));
        Permissions::new()
            .read(
                &["events:DescribeEventBus", "events:ListTagsForResource"],
                &[&bus],
            )
            .write(
                &[
                    "events:CreateEventBus",
                    "events:DeleteEventBus",
                    "events:TagResource",
                    "events:UntagResource",
                ],
                &[bus],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&EventsTags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let out = found(
            aws.events().describe_event_bus().name(&m.name).send().await,
            DescribeEventBusError::is_resource_not_found_exception,
            m,
            "DescribeEventBus",
        )?;
        Ok(out.map(|o| {
            Observed::default()
                .output("arn", o.arn.unwrap_or_default())
                .output("name", m.name.clone())
        }))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut req = aws.events().create_event_bus().name(&m.name);
        for (k, v) in &m.tags {
            req = req.tags(tag(k, v, &m.name)?);
        }
        made(
            req.send().await,
            CreateEventBusError::is_resource_already_exists_exception,
            m,
            "CreateEventBus",
        )
    }
    async fn update(&self, _aws: &AwsClients, _c: &Edit<'_>) -> Result<(), EngineError> {
        // A bus has nothing to change but its tags, which the engine syncs.
        Ok(())
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let (p, u) = base_cost(ctx)?;
        Ok(vec![CostLine::new(
            self.meta.id,
            "custom events published",
            u.events / 1e6,
            "M events",
            p.eventbridge_custom_events_million,
        )])
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.events()
                .delete_event_bus()
                .name(&self.meta.name)
                .send()
                .await,
            unmodeled::<DeleteEventBusError>(codes::NOT_FOUND),
            &self.meta,
            "DeleteEventBus",
        )
    }
}

/// A rule on the workspace bus with one target.
pub struct EventRule {
    pub meta: Meta,
    pub bus_id: &'static str,
    pub bus_name: String,
    pub description: String,
    pub pattern: Value,
    /// Logical id of the target resource; its `arn` output is the target.
    pub target_id: &'static str,
}

/// The id of the rule's one target.
const TARGET_ID: &str = "deliver";

#[async_trait]
impl Resource for EventRule {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "eventbridge rule"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let rule = ws.arn(
            "events",
            &format!("rule/{}/{}", self.bus_name, self.meta.name),
        );
        Permissions::new()
            .read(
                &[
                    "events:DescribeRule",
                    "events:ListTargetsByRule",
                    "events:ListTagsForResource",
                ],
                &[&rule],
            )
            .write(
                &[
                    "events:PutRule",
                    "events:PutTargets",
                    "events:RemoveTargets",
                    "events:DeleteRule",
                    "events:TagResource",
                    "events:UntagResource",
                ],
                &[rule],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&EventsTags)
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
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let Some(out) = found(
            aws.events()
                .describe_rule()
                .name(&m.name)
                .event_bus_name(&self.bus_name)
                .send()
                .await,
            DescribeRuleError::is_resource_not_found_exception,
            m,
            "DescribeRule",
        )?
        else {
            return Ok(None);
        };
        let arn = out.arn.clone().unwrap_or_default();
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
                .output("arn", arn)
                .output("name", self.meta.name.clone()),
        ))
    }
    async fn observe_more(
        &self,
        aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        let targets = aws
            .events()
            .list_targets_by_rule()
            .rule(&self.meta.name)
            .event_bus_name(&self.bus_name)
            .send()
            .await
            .map_err(|e| self.meta.fail("ListTargetsByRule", e))?;
        let mut t: Vec<Value> = targets
            .targets()
            .iter()
            .map(|t| json!({"id": t.id, "arn": t.arn}))
            .collect();
        t.sort_by_key(|v| v.to_string());
        Ok(Observed::default().field("targets", Value::Array(t)))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let mut req = aws
            .events()
            .put_rule()
            .name(&self.meta.name)
            .event_bus_name(&self.bus_name)
            .description(&self.description)
            .event_pattern(self.pattern.to_string())
            .state(RuleState::Enabled);
        for (k, v) in &self.meta.tags {
            req = req.tags(tag(k, v, &self.meta.name)?);
        }
        req.send().await.map_err(|e| self.meta.fail("PutRule", e))?;
        self.put_target(aws, outputs).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let (outputs, current, changed) = (c.outputs, c.current, c.fields);
        if changed
            .iter()
            .any(|c| matches!(c.as_str(), "pattern" | "description" | "state"))
        {
            aws.events()
                .put_rule()
                .name(&self.meta.name)
                .event_bus_name(&self.bus_name)
                .description(&self.description)
                .event_pattern(self.pattern.to_string())
                .state(RuleState::Enabled)
                .send()
                .await
                .map_err(|e| self.meta.fail("PutRule", e))?;
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
                    .rule(&self.meta.name)
                    .event_bus_name(&self.bus_name)
                    .set_ids(Some(stale))
                    .send()
                    .await
                    .map_err(|e| self.meta.fail("RemoveTargets", e))?;
            }
            self.put_target(aws, outputs).await?;
        }
        Ok(())
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
                .rule(&self.meta.name)
                .event_bus_name(&self.bus_name)
                .set_ids(Some(ids))
                .send()
                .await
                .map_err(|e| self.meta.fail("RemoveTargets", e))?;
        }
        gone(
            aws.events()
                .delete_rule()
                .name(&self.meta.name)
                .event_bus_name(&self.bus_name)
                .send()
                .await,
            DeleteRuleError::is_resource_not_found_exception,
            &self.meta,
            "DeleteRule",
        )
    }
}

impl EventRule {
    async fn put_target(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let target_arn = require_output(outputs, &self.meta.name, self.target_id, "arn")?;
        let target = Target::builder()
            .id(TARGET_ID)
            .arn(target_arn)
            .build()
            .map_err(|e| EngineError::Invalid(format!("{}: {e}", self.meta.name)))?;
        let out = aws
            .events()
            .put_targets()
            .rule(&self.meta.name)
            .event_bus_name(&self.bus_name)
            .targets(target)
            .send()
            .await
            .map_err(|e| self.meta.fail("PutTargets", e))?;
        if out.failed_entry_count > 0 {
            return Err(EngineError::Invalid(format!(
                "{}: PutTargets rejected the target: {:?}",
                self.meta.name,
                out.failed_entries()
                    .iter()
                    .map(|f| f.error_message.clone().unwrap_or_default())
                    .collect::<Vec<_>>()
            )));
        }
        Ok(())
    }
}
