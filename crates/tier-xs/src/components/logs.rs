//! CloudWatch Logs: log groups with a retention, and the resource policy that lets
//! EventBridge deliver into a log group.

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupError;
use aws_sdk_cloudwatchlogs::operation::delete_log_group::DeleteLogGroupError;
use aws_sdk_cloudwatchlogs::operation::delete_resource_policy::DeleteResourcePolicyError;
use aws_sdk_cloudwatchlogs::operation::put_resource_policy::PutResourcePolicyError;
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::cost::base::base_cost;
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::permissions::{Permissions, any};
use crate::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, gone, made,
};
use crate::tag_api;
use crate::workspace::Workspace;

use super::normalize_json;

/// Where a log group's volume comes from, for pricing.
#[derive(Clone, Copy, Debug)]
pub enum LogSource {
    /// The dashboard server's own logs.
    Server,
    /// Every event published on the bus (the event rule's target).
    Events,
    /// Ingested GB a month, from the usage fields of the tier that owns the group.
    Ingest(fn(&CostContext<'_>) -> Result<f64, CostError>),
    /// Embedded Metric Format documents: their volume, and the custom metrics CloudWatch
    /// extracts from them (priced per metric a month).
    Emf(fn(&CostContext<'_>) -> Result<EmfVolume, CostError>),
}

/// What a month of EMF documents amounts to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmfVolume {
    pub gb: f64,
    /// Distinct metrics (name and dimension values) with data in the month.
    pub metrics: f64,
    /// The price of one custom metric a month.
    pub metric_month: f64,
}

tag_api! {
    /// CloudWatch Logs' tags, by the log group's `arn` output.
    pub struct LogsTags;
    read(aws, meta, o): "ListTagsForResource" => aws.logs().list_tags_for_resource().resource_arn(o.out("arn")),
        |out| out.tags.unwrap_or_default().into_iter().collect();
    tag(aws, meta, o, tags): "TagResource" => aws.logs().tag_resource().resource_arn(o.out("arn"))
        .set_tags(Some(tags.iter().cloned().collect()));
    untag(aws, meta, o, keys): "UntagResource" => aws.logs().untag_resource().resource_arn(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

pub struct LogGroup {
    pub meta: Meta,
    pub source: LogSource,
    pub retention_days: i32,
    /// ARN prefix `arn:aws:logs:{region}:{account}:log-group:`.
    pub arn_prefix: String,
    /// Whether its logs are kept like data: a downgrade or destroy leaves the group
    /// unless told to destroy data.
    pub holds_data: bool,
}

impl LogGroup {
    fn arn(&self) -> String {
        format!("{}{}", self.arn_prefix, self.meta.name)
    }
}

#[async_trait]
impl Resource for LogGroup {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "log group"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        // The tagging actions take the group's ARN as its tag APIs name it, every other action
        // the ARN with a trailing `:*` (CloudWatch Logs User Guide, "Overview of managing
        // access permissions": resource types and ARNs).
        let group = ws.arn("logs", &format!("log-group:{}", self.meta.name));
        let group_any = format!("{group}:*");
        Permissions::new()
            // DescribeLogGroups lists by prefix: no resource-level permission.
            .read(&["logs:DescribeLogGroups"], &any())
            .read(&["logs:ListTagsForResource"], &[&group])
            .write(
                &[
                    "logs:CreateLogGroup",
                    "logs:PutRetentionPolicy",
                    "logs:DeleteLogGroup",
                ],
                &[group_any],
            )
            .write(&["logs:TagResource", "logs:UntagResource"], &[group])
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&LogsTags)
    }
    fn data_bearing(&self) -> bool {
        self.holds_data
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new().set("retention_days", self.retention_days)
    }

    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let (p, u) = base_cost(ctx)?;
        let mut metrics = None;
        let ingest_gb = match self.source {
            LogSource::Server => u.server_log_gb,
            LogSource::Events => u.events * u.event_kb / (1024.0 * 1024.0),
            LogSource::Ingest(gb) => gb(ctx)?,
            LogSource::Emf(volume) => {
                let v = volume(ctx)?;
                metrics = Some(CostLine::new(
                    self.meta.id,
                    "custom metrics extracted from EMF",
                    v.metrics,
                    "metric-month",
                    v.metric_month,
                ));
                v.gb
            }
        };
        // In the steady state a log group holds `retention` days of its ingestion.
        let stored_gb = ingest_gb * f64::from(self.retention_days) / 30.0;
        Ok([
            CostLine::new(
                self.meta.id,
                "log ingestion",
                ingest_gb,
                "GB",
                p.logs_ingest_gb,
            ),
            CostLine::new(
                self.meta.id,
                &format!("log storage ({} days kept)", self.retention_days),
                stored_gb,
                "GB-month",
                p.logs_storage_gb_month,
            ),
        ]
        .into_iter()
        .chain(metrics)
        .collect())
    }

    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let out = aws
            .logs()
            .describe_log_groups()
            .log_group_name_prefix(&m.name)
            .send()
            .await
            .map_err(|e| m.fail("DescribeLogGroups", e))?;
        let Some(g) = out
            .log_groups()
            .iter()
            .find(|g| g.log_group_name.as_deref() == Some(m.name.as_str()))
        else {
            return Ok(None);
        };
        Ok(Some(
            Observed::default()
                .field(
                    "retention_days",
                    g.retention_in_days.map(Value::from).unwrap_or(Value::Null),
                )
                .output("arn", self.arn())
                .output("name", m.name.clone()),
        ))
    }

    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut req = aws.logs().create_log_group().log_group_name(&m.name);
        for (k, v) in &m.tags {
            req = req.tags(k, v);
        }
        made(
            req.send().await,
            CreateLogGroupError::is_resource_already_exists_exception,
            m,
            "CreateLogGroup",
        )?;
        let current = Observed::default();
        let fields = ["retention_days".to_string()];
        self.update(aws, &Edit::new(outputs, &current, &fields))
            .await
    }

    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let changed = c.fields;
        if changed.iter().any(|c| c == "retention_days") {
            aws.logs()
                .put_retention_policy()
                .log_group_name(&self.meta.name)
                .retention_in_days(self.retention_days)
                .send()
                .await
                .map_err(|e| self.meta.fail("PutRetentionPolicy", e))?;
        }
        Ok(())
    }

    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.logs()
                .delete_log_group()
                .log_group_name(&self.meta.name)
                .send()
                .await,
            DeleteLogGroupError::is_resource_not_found_exception,
            &self.meta,
            "DeleteLogGroup",
        )
    }
}

/// A CloudWatch Logs resource policy letting EventBridge write into the workspace's
/// event log group (and nothing else).
pub struct LogsResourcePolicy {
    pub meta: Meta,
    /// Log group the policy opens, e.g. `arn:aws:logs:...:log-group:/aws/events/agentbus-dev`.
    pub log_group_arn: String,
    /// Only this rule may deliver.
    pub rule_arn: String,
}

impl LogsResourcePolicy {
    /// As the EventBridge User Guide's CloudWatch Logs permissions show it: the stream is
    /// created without a source ARN in the request context, so only `PutLogEvents` can be
    /// limited to the rule (a condition on `CreateLogStream` would refuse every delivery).
    pub fn document(&self) -> Value {
        let principal = json!({"Service": ["events.amazonaws.com", "delivery.logs.amazonaws.com"]});
        let streams = format!("{}:*", self.log_group_arn);
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "EventBridgeCreatesStreams",
                "Effect": "Allow",
                "Principal": principal,
                "Action": ["logs:CreateLogStream"],
                "Resource": streams
            }, {
                "Sid": "EventBridgeToLogs",
                "Effect": "Allow",
                "Principal": principal,
                "Action": ["logs:PutLogEvents"],
                "Resource": streams,
                "Condition": {"ArnEquals": {"aws:SourceArn": self.rule_arn}}
            }]
        })
    }
}

#[async_trait]
impl Resource for LogsResourcePolicy {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "logs resource policy"
    }
    fn permissions(&self, _ws: &Workspace) -> Permissions {
        // Account-level resource policies have no ARN of their own.
        Permissions::new()
            .read(&["logs:DescribeResourcePolicies"], &any())
            .write(
                &["logs:PutResourcePolicy", "logs:DeleteResourcePolicy"],
                &any(),
            )
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
            .map_err(|e| self.meta.fail("DescribeResourcePolicies", e))?;
        Ok(out
            .resource_policies()
            .iter()
            .find(|p| p.policy_name.as_deref() == Some(self.meta.name.as_str()))
            .map(|p| {
                Observed::default().field(
                    "policy",
                    normalize_json(p.policy_document.as_deref().unwrap_or("{}")),
                )
            }))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        match aws
            .logs()
            .put_resource_policy()
            .policy_name(&self.meta.name)
            .policy_document(self.document().to_string())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // An account holds at most 10 of these per region (PutResourcePolicy API
            // reference), whatever made them: say which limit, and how to see the others.
            Err(e)
                if e.as_service_error()
                    .is_some_and(PutResourcePolicyError::is_limit_exceeded_exception) =>
            {
                Err(EngineError::Invalid(format!(
                    "{}: this account already has 10 CloudWatch Logs resource policies in {}, the most AWS allows (each agentbus workspace uses one): `aws logs describe-resource-policies` lists them; delete one no longer needed, or use another region",
                    self.meta.name, aws.region
                )))
            }
            Err(e) => Err(self.meta.fail("PutResourcePolicy", e)),
        }
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let outputs = c.outputs;
        self.create(aws, outputs).await
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.logs()
                .delete_resource_policy()
                .policy_name(&self.meta.name)
                .send()
                .await,
            DeleteResourcePolicyError::is_resource_not_found_exception,
            &self.meta,
            "DeleteResourcePolicy",
        )
    }
}
