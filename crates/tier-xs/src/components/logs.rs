//! CloudWatch Logs: log groups with a retention, and the resource policy that lets
//! EventBridge deliver into a log group.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::cost::base::base_cost;
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::{
    Desired, EngineError, Observed, Outputs, Resource, error_code, own_tags, tags_value,
};
use crate::workspace::Tier;

use super::{normalize_json, tag_changes};

/// Where a log group's volume comes from, for pricing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// The dashboard server's own logs.
    Server,
    /// Every event published on the bus (the event rule's target).
    Events,
}

pub struct LogGroup {
    pub id: &'static str,
    pub source: LogSource,
    pub tier: Tier,
    pub name: String,
    pub retention_days: i32,
    pub tags: Vec<(String, String)>,
    /// ARN prefix `arn:aws:logs:{region}:{account}:log-group:`.
    pub arn_prefix: String,
}

impl LogGroup {
    fn arn(&self) -> String {
        format!("{}{}", self.arn_prefix, self.name)
    }
    fn err(&self, op: &str, e: impl std::error::Error) -> EngineError {
        EngineError::aws(&self.name, op, e)
    }
}

#[async_trait]
impl Resource for LogGroup {
    fn id(&self) -> &'static str {
        self.id
    }
    fn kind(&self) -> &'static str {
        "log group"
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn tier(&self) -> Tier {
        self.tier
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set("retention_days", self.retention_days)
            .set("tags", tags_value(&self.tags))
    }

    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let (p, u) = base_cost(ctx)?;
        let ingest_gb = match self.source {
            LogSource::Server => u.server_log_gb,
            LogSource::Events => u.events * u.event_kb / (1024.0 * 1024.0),
        };
        // In the steady state a log group holds `retention` days of its ingestion.
        let stored_gb = ingest_gb * f64::from(self.retention_days) / 30.0;
        Ok(vec![
            CostLine::new(self.id, "log ingestion", ingest_gb, "GB", p.logs_ingest_gb),
            CostLine::new(
                self.id,
                &format!("log storage ({} days kept)", self.retention_days),
                stored_gb,
                "GB-mo",
                p.logs_storage_gb_month,
            ),
        ])
    }

    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = aws
            .logs()
            .describe_log_groups()
            .log_group_name_prefix(&self.name)
            .send()
            .await
            .map_err(|e| self.err("DescribeLogGroups", e))?;
        let Some(g) = out
            .log_groups()
            .iter()
            .find(|g| g.log_group_name.as_deref() == Some(self.name.as_str()))
        else {
            return Ok(None);
        };
        let tags = aws
            .logs()
            .list_tags_for_resource()
            .resource_arn(self.arn())
            .send()
            .await
            .map_err(|e| self.err("ListTagsForResource", e))?;
        Ok(Some(
            Observed::default()
                .field(
                    "retention_days",
                    g.retention_in_days.map(Value::from).unwrap_or(Value::Null),
                )
                .field("tags", own_tags(tags.tags.unwrap_or_default()))
                .output("arn", self.arn())
                .output("name", self.name.clone()),
        ))
    }

    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<Observed, EngineError> {
        let mut req = aws.logs().create_log_group().log_group_name(&self.name);
        for (k, v) in &self.tags {
            req = req.tags(k, v);
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(self.err("CreateLogGroup", e)),
        }
        let current = Observed::default();
        self.update(aws, outputs, &current, &["retention_days".into()])
            .await
    }

    async fn update(
        &self,
        aws: &AwsClients,
        outputs: &Outputs,
        current: &Observed,
        changed: &[String],
    ) -> Result<Observed, EngineError> {
        for f in changed {
            match f.as_str() {
                "retention_days" => {
                    aws.logs()
                        .put_retention_policy()
                        .log_group_name(&self.name)
                        .retention_in_days(self.retention_days)
                        .send()
                        .await
                        .map_err(|e| self.err("PutRetentionPolicy", e))?;
                }
                "tags" => {
                    let want = self.desired(outputs);
                    let (set, remove) = tag_changes(current.fields.get("tags"), want.get("tags"));
                    if !remove.is_empty() {
                        aws.logs()
                            .untag_resource()
                            .resource_arn(self.arn())
                            .set_tag_keys(Some(remove))
                            .send()
                            .await
                            .map_err(|e| self.err("UntagResource", e))?;
                    }
                    if !set.is_empty() {
                        aws.logs()
                            .tag_resource()
                            .resource_arn(self.arn())
                            .set_tags(Some(set.into_iter().collect()))
                            .send()
                            .await
                            .map_err(|e| self.err("TagResource", e))?;
                    }
                }
                _ => {}
            }
        }
        Ok(Observed::default()
            .output("arn", self.arn())
            .output("name", self.name.clone()))
    }

    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        match aws
            .logs()
            .delete_log_group()
            .log_group_name(&self.name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(self.err("DeleteLogGroup", e)),
        }
    }
}

/// A CloudWatch Logs resource policy letting EventBridge write into the workspace's
/// event log group (and nothing else).
pub struct LogsResourcePolicy {
    pub id: &'static str,
    pub tier: Tier,
    pub name: String,
    /// Log group the policy opens, e.g. `arn:aws:logs:...:log-group:/aws/events/agentbus-dev`.
    pub log_group_arn: String,
    /// Only this rule may deliver.
    pub rule_arn: String,
}

impl LogsResourcePolicy {
    fn document(&self) -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "EventBridgeToLogs",
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "delivery.logs.amazonaws.com"]},
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": format!("{}:*", self.log_group_arn),
                "Condition": {"ArnEquals": {"aws:SourceArn": self.rule_arn}}
            }]
        })
    }
}

#[async_trait]
impl Resource for LogsResourcePolicy {
    fn id(&self) -> &'static str {
        self.id
    }
    fn kind(&self) -> &'static str {
        "logs resource policy"
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn tier(&self) -> Tier {
        self.tier
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new().set("policy", self.document())
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = aws
            .logs()
            .describe_resource_policies()
            .send()
            .await
            .map_err(|e| EngineError::aws(&self.name, "DescribeResourcePolicies", e))?;
        Ok(out
            .resource_policies()
            .iter()
            .find(|p| p.policy_name.as_deref() == Some(self.name.as_str()))
            .map(|p| {
                Observed::default().field(
                    "policy",
                    normalize_json(p.policy_document.as_deref().unwrap_or("{}")),
                )
            }))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<Observed, EngineError> {
        aws.logs()
            .put_resource_policy()
            .policy_name(&self.name)
            .policy_document(self.document().to_string())
            .send()
            .await
            .map_err(|e| EngineError::aws(&self.name, "PutResourcePolicy", e))?;
        Ok(Observed::default())
    }
    async fn update(
        &self,
        aws: &AwsClients,
        outputs: &Outputs,
        _current: &Observed,
        _changed: &[String],
    ) -> Result<Observed, EngineError> {
        self.create(aws, outputs).await
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        match aws
            .logs()
            .delete_resource_policy()
            .policy_name(&self.name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(EngineError::aws(&self.name, "DeleteResourcePolicy", e)),
        }
    }
}
