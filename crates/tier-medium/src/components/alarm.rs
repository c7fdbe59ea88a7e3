//! A CloudWatch metric alarm as a resource: one metric (namespace, name, dimensions, statistic),
//! a threshold, and the topic it notifies when it goes into alarm and back. Its description
//! says what to do.
//!
//! The metrics are described by [`Metric`], which the workspace's CloudWatch dashboard uses
//! too: a widget shows exactly what an alarm watches.

use async_trait::async_trait;
use aws_sdk_cloudwatch::operation::delete_alarms::DeleteAlarmsError;
use std::sync::Arc;

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricAlarm, Statistic, Tag};
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostContext, CostError, CostLine};
use tier_xs::engine::batch::Batch;
use tier_xs::engine::permissions::{Permissions, any};
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, error_text, gone,
    is_unknown, output_or_unknown, pair, require_output, unknown,
};
use tier_xs::tag_api;
use tier_xs::workspace::Workspace;

use crate::aws::MediumAws;

tag_api! {
    /// CloudWatch's tags, by the alarm's `arn` output.
    pub struct CloudWatchTags;
    read(aws, meta, o): "ListTagsForResource" => aws.cloudwatch().list_tags_for_resource().resource_arn(o.out("arn")),
        |out| out.tags().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "TagResource" => aws.cloudwatch().tag_resource().resource_arn(o.out("arn"))
        .set_tags(Some(tags.iter().map(|(k, v)| cw_tag(k, v)).collect()));
    untag(aws, meta, o, keys): "UntagResource" => aws.cloudwatch().untag_resource().resource_arn(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

/// The alarms of one command's lookups made together (a plan looks up all twenty at once):
/// DescribeAlarms answers up to 100 names a call, and CloudWatch allows only a few of its
/// calls a second per account.
#[derive(Clone, Default)]
struct AlarmLookups(Arc<Batch<Vec<MetricAlarm>>>);

/// The alarm named `name`, if it exists, among those of its batch.
async fn describe_alarms(aws: &AwsClients, name: &str) -> Result<Arc<Vec<MetricAlarm>>, String> {
    let batch = aws.client(|_| AlarmLookups::default());
    let cloudwatch = aws.cloudwatch();
    batch
        .0
        .get(name, move |mut names| async move {
            names.sort();
            names.dedup();
            let mut found = Vec::new();
            for chunk in names.chunks(100) {
                let mut next = None;
                loop {
                    let out = cloudwatch
                        .describe_alarms()
                        .set_alarm_names(Some(chunk.to_vec()))
                        .max_records(100)
                        .set_next_token(next)
                        .send()
                        .await
                        .map_err(|e| error_text(&e))?;
                    found.extend(out.metric_alarms().iter().cloned());
                    next = out.next_token().map(str::to_string);
                    if next.is_none() {
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await
}

fn cw_tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// A dimension's value: known from the workspace's names, or read from another resource's
/// output (a load balancer's ARN becomes `app/{name}/{id}`).
#[derive(Clone, Debug)]
pub enum DimValue {
    Text(String),
    Output {
        id: &'static str,
        key: &'static str,
        /// Turns the output into the dimension's value.
        shape: fn(&str) -> String,
    },
}

/// One CloudWatch metric, as an alarm watches it and a dashboard widget draws it.
#[derive(Clone, Debug)]
pub struct Metric {
    pub namespace: String,
    pub name: &'static str,
    pub dimensions: Vec<(&'static str, DimValue)>,
    pub statistic: Statistic,
}

impl Metric {
    pub fn new(namespace: impl Into<String>, name: &'static str, statistic: Statistic) -> Self {
        Metric {
            namespace: namespace.into(),
            name,
            dimensions: Vec::new(),
            statistic,
        }
    }

    pub fn dim(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, DimValue::Text(value.into())));
        self
    }

    pub fn dim_from(
        mut self,
        name: &'static str,
        id: &'static str,
        key: &'static str,
        shape: fn(&str) -> String,
    ) -> Self {
        self.dimensions
            .push((name, DimValue::Output { id, key, shape }));
        self
    }

    /// The resources whose outputs the dimensions name.
    pub fn depends_on(&self) -> Vec<&'static str> {
        self.dimensions
            .iter()
            .filter_map(|(_, v)| match v {
                DimValue::Output { id, .. } => Some(*id),
                DimValue::Text(_) => None,
            })
            .collect()
    }

    /// The dimensions as (name, value), values unknown until their resource exists.
    pub fn dimension_values(&self, outputs: &Outputs) -> Vec<(&'static str, Value)> {
        self.dimensions
            .iter()
            .map(|(n, v)| {
                let value = match v {
                    DimValue::Text(t) => Value::String(t.clone()),
                    DimValue::Output { id, key, shape } => {
                        match output_or_unknown(outputs, id, key) {
                            Value::String(s) if !s.is_empty() => Value::String(shape(&s)),
                            _ => unknown(&format!("{id}.{key}")),
                        }
                    }
                };
                (*n, value)
            })
            .collect()
    }
}

/// `app/{name}/{id}` of a load balancer ARN: its `LoadBalancer` dimension.
pub fn load_balancer_dimension(arn: &str) -> String {
    arn.split_once(":loadbalancer/")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default()
}

/// `targetgroup/{name}/{id}` of a target group ARN: its `TargetGroup` dimension.
pub fn target_group_dimension(arn: &str) -> String {
    arn.rsplit_once(':')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default()
}

pub struct Alarm {
    pub meta: Meta,
    pub metric: Metric,
    /// What the alarm means and what to do about it.
    pub description: String,
    pub period_seconds: i32,
    pub evaluation_periods: i32,
    pub threshold: f64,
    pub comparison: ComparisonOperator,
    /// `notBreaching`, `breaching`, `ignore` or `missing`: what no data means.
    pub treat_missing_data: &'static str,
    /// The topic it notifies (its `arn` output).
    pub topic_id: &'static str,
}

impl Alarm {
    fn dimensions(&self, outputs: &Outputs) -> Result<Vec<Dimension>, EngineError> {
        self.metric
            .dimension_values(outputs)
            .into_iter()
            .map(|(n, v)| match v {
                Value::String(s) => Ok(Dimension::builder().name(n).value(s).build()),
                _ => Err(EngineError::MissingOutput {
                    resource: self.meta.name.clone(),
                    output: format!("dimension {n}"),
                }),
            })
            .collect()
    }

    async fn put(
        &self,
        aws: &AwsClients,
        outputs: &Outputs,
        tags: bool,
    ) -> Result<(), EngineError> {
        let m = &self.meta;
        let topic = require_output(outputs, &m.name, self.topic_id, "arn")?;
        let mut req = aws
            .cloudwatch()
            .put_metric_alarm()
            .alarm_name(&m.name)
            .alarm_description(&self.description)
            .actions_enabled(true)
            .alarm_actions(&topic)
            .ok_actions(&topic)
            .namespace(&self.metric.namespace)
            .metric_name(self.metric.name)
            .statistic(self.metric.statistic.clone())
            .set_dimensions(Some(self.dimensions(outputs)?))
            .period(self.period_seconds)
            .evaluation_periods(self.evaluation_periods)
            .datapoints_to_alarm(self.evaluation_periods)
            .threshold(self.threshold)
            .comparison_operator(self.comparison.clone())
            .treat_missing_data(self.treat_missing_data);
        if tags {
            req = req.set_tags(Some(m.tags.iter().map(|(k, v)| cw_tag(k, v)).collect()));
        }
        req.send().await.map_err(|e| m.fail("PutMetricAlarm", e))?;
        Ok(())
    }
}

fn dims_value(dims: Vec<(&'static str, Value)>) -> Value {
    let mut dims = dims;
    dims.sort_by(|a, b| a.0.cmp(b.0));
    Value::Array(dims.into_iter().map(|(n, v)| json!([n, v])).collect())
}

#[async_trait]
impl Resource for Alarm {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "cloudwatch alarm"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let alarm = ws.arn("cloudwatch", &format!("alarm:{}", self.meta.name));
        Permissions::new()
            // DescribeAlarms takes no resource.
            .read(&["cloudwatch:DescribeAlarms"], &any())
            .read(&["cloudwatch:ListTagsForResource"], &[&alarm])
            .write(
                &[
                    "cloudwatch:PutMetricAlarm",
                    "cloudwatch:DeleteAlarms",
                    "cloudwatch:TagResource",
                    "cloudwatch:UntagResource",
                ],
                &[alarm],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&CloudWatchTags)
    }
    fn depends_on(&self) -> Vec<&'static str> {
        let mut d = self.metric.depends_on();
        d.push(self.topic_id);
        d
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        let topic = output_or_unknown(outputs, self.topic_id, "arn");
        let dims = self.metric.dimension_values(outputs);
        let dims = if dims.iter().any(|(_, v)| is_unknown(v)) {
            unknown("dimensions")
        } else {
            dims_value(dims)
        };
        Desired::new()
            .set("description", self.description.clone())
            .set(
                "metric",
                json!({
                    "namespace": self.metric.namespace,
                    "name": self.metric.name,
                    "statistic": self.metric.statistic.as_str(),
                    "dimensions": dims,
                }),
            )
            .set(
                "condition",
                json!({
                    "comparison": self.comparison.as_str(),
                    "threshold": self.threshold,
                    "period_seconds": self.period_seconds,
                    "evaluation_periods": self.evaluation_periods,
                    "treat_missing_data": self.treat_missing_data,
                }),
            )
            .set("actions", json!({"alarm": [topic.clone()], "ok": [topic]}))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let found = describe_alarms(aws, &m.name)
            .await
            .map_err(|message| EngineError::Aws {
                resource: m.name.clone(),
                op: "DescribeAlarms".into(),
                message,
            })?;
        let Some(a) = found
            .iter()
            .find(|a| a.alarm_name() == Some(m.name.as_str()))
        else {
            return Ok(None);
        };
        let dims = dims_value(
            a.dimensions()
                .iter()
                .filter_map(|d| {
                    let name = self
                        .metric
                        .dimensions
                        .iter()
                        .map(|(n, _)| *n)
                        .find(|n| Some(*n) == d.name())
                        .unwrap_or("?");
                    d.value().map(|v| (name, Value::String(v.to_string())))
                })
                .collect(),
        );
        Ok(Some(
            Observed::default()
                .field("description", a.alarm_description().unwrap_or_default())
                .field(
                    "metric",
                    json!({
                        "namespace": a.namespace().unwrap_or_default(),
                        "name": a.metric_name().unwrap_or_default(),
                        "statistic": a.statistic().map(|s| s.as_str()).unwrap_or_default(),
                        "dimensions": dims,
                    }),
                )
                .field(
                    "condition",
                    json!({
                        "comparison": a.comparison_operator().map(|c| c.as_str()).unwrap_or_default(),
                        "threshold": a.threshold().unwrap_or_default(),
                        "period_seconds": a.period().unwrap_or_default(),
                        "evaluation_periods": a.evaluation_periods().unwrap_or_default(),
                        "treat_missing_data": a.treat_missing_data().unwrap_or("missing"),
                    }),
                )
                .field(
                    "actions",
                    json!({"alarm": a.alarm_actions(), "ok": a.ok_actions()}),
                )
                .output("arn", a.alarm_arn().unwrap_or_default())
                .output("name", m.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        self.put(aws, outputs, true).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        // PutMetricAlarm replaces the whole alarm (its tags only on create).
        self.put(aws, c.outputs, false).await
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        // The API reference lists ResourceNotFound for a name that does not exist: gone
        // already (a retried call whose first answer was lost) is done.
        gone(
            aws.cloudwatch()
                .delete_alarms()
                .alarm_names(&self.meta.name)
                .send()
                .await,
            DeleteAlarmsError::is_resource_not_found,
            &self.meta,
            "DeleteAlarms",
        )
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let p = crate::cost::PRICES.region(ctx.region)?;
        Ok(vec![CostLine::new(
            self.meta.id,
            "standard-resolution alarm",
            1.0,
            "alarm-month",
            p.alarm_month,
        )])
    }
}
