//! A CloudWatch Logs metric filter as a resource: log lines matching a pattern become a
//! count in a custom metric (the agents' errors), which an alarm can watch.

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::operation::delete_metric_filter::DeleteMetricFilterError;
use aws_sdk_cloudwatchlogs::types::MetricTransformation;
use serde_json::json;
use tier_xs::aws::AwsClients;
use tier_xs::engine::permissions::Permissions;
use tier_xs::engine::{Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, gone};
use tier_xs::workspace::Workspace;

pub struct MetricFilter {
    /// Its name is the filter's name (unique within its log group).
    pub meta: Meta,
    pub log_group_id: &'static str,
    pub log_group: String,
    /// CloudWatch Logs filter pattern syntax.
    pub pattern: String,
    pub namespace: String,
    pub metric: &'static str,
}

impl MetricFilter {
    fn transformation(&self) -> Result<MetricTransformation, EngineError> {
        MetricTransformation::builder()
            .metric_namespace(&self.namespace)
            .metric_name(self.metric)
            .metric_value("1")
            .default_value(0.0)
            .build()
            .map_err(|e| EngineError::Invalid(e.to_string()))
    }
}

#[async_trait]
impl Resource for MetricFilter {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "log metric filter"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        // Metric filters take the log group's ARN with its trailing `:*`.
        let group = ws.arn("logs", &format!("log-group:{}:*", self.log_group));
        Permissions::new()
            .read(&["logs:DescribeMetricFilters"], &[&group])
            .write(
                &["logs:PutMetricFilter", "logs:DeleteMetricFilter"],
                &[group],
            )
    }
    fn depends_on(&self) -> Vec<&'static str> {
        vec![self.log_group_id]
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new().set("pattern", self.pattern.clone()).set(
            "metric",
            json!({"namespace": self.namespace, "name": self.metric, "value": "1", "default": 0.0}),
        )
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let out = aws
            .logs()
            .describe_metric_filters()
            .log_group_name(&self.log_group)
            .filter_name_prefix(&m.name)
            .send()
            .await;
        // The log group itself may not exist yet.
        let out = match out {
            Ok(o) => o,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(m.fail("DescribeMetricFilters", e)),
        };
        let Some(f) = out
            .metric_filters()
            .iter()
            .find(|f| f.filter_name() == Some(m.name.as_str()))
        else {
            return Ok(None);
        };
        let t = f.metric_transformations().first();
        Ok(Some(
            Observed::default()
                .field("pattern", f.filter_pattern().unwrap_or_default())
                .field(
                    "metric",
                    json!({
                        "namespace": t.map(|t| t.metric_namespace()).unwrap_or_default(),
                        "name": t.map(|t| t.metric_name()).unwrap_or_default(),
                        "value": t.map(|t| t.metric_value()).unwrap_or_default(),
                        "default": t.and_then(|t| t.default_value()),
                    }),
                )
                .output("name", m.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        aws.logs()
            .put_metric_filter()
            .log_group_name(&self.log_group)
            .filter_name(&self.meta.name)
            .filter_pattern(&self.pattern)
            .metric_transformations(self.transformation()?)
            .send()
            .await
            .map_err(|e| self.meta.fail("PutMetricFilter", e))?;
        Ok(())
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        // PutMetricFilter replaces the filter of that name.
        self.create(aws, c.outputs).await
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.logs()
                .delete_metric_filter()
                .log_group_name(&self.log_group)
                .filter_name(&self.meta.name)
                .send()
                .await,
            DeleteMetricFilterError::is_resource_not_found_exception,
            &self.meta,
            "DeleteMetricFilter",
        )
    }
}
