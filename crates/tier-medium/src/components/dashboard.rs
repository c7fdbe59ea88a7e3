//! A CloudWatch dashboard as a resource: graphs of the metrics the workspace's alarms watch
//! (the same [`Metric`] values, so every widget names a metric and dimensions that exist),
//! and Logs Insights queries over the agents' logs.

use async_trait::async_trait;
use aws_sdk_cloudwatch::operation::delete_dashboards::DeleteDashboardsError;
use aws_sdk_cloudwatch::operation::get_dashboard::GetDashboardError;
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::components::normalize_json;
use tier_xs::cost::{CostContext, CostError, CostLine};
use tier_xs::engine::permissions::Permissions;
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, found, gone, is_unknown, unknown,
};
use tier_xs::workspace::Workspace;

use super::alarm::Metric;
use crate::aws::MediumAws;
use tier_xs::ladder::Chart;

/// One graph of the dashboard.
#[derive(Clone, Debug)]
pub struct Graph {
    pub title: String,
    pub metrics: Vec<Metric>,
    /// Seconds per point.
    pub period: i32,
}

/// A Logs Insights table over log groups.
pub type LogQuery = tier_xs::ladder::LogChart;

#[derive(Clone)]
pub struct Dashboard {
    pub meta: Meta,
    pub region: String,
    pub graphs: Vec<Graph>,
    /// Charts the layers above asked for (`DashboardSpec::charts`), after the graphs.
    pub charts: Vec<Chart>,
    pub queries: Vec<LogQuery>,
}

/// Widgets are 12 units wide (two a row) and 6 high.
const WIDTH: usize = 12;
const HEIGHT: usize = 6;

impl Dashboard {
    /// The dashboard body as CloudWatch wants it; unknown while a dimension's resource does
    /// not exist yet.
    pub fn body(&self, outputs: &Outputs) -> Value {
        // Every metric widget as (title, period, its lines), the tier's graphs first and the
        // charts of the layers above after them; then laid out two a row.
        let row = |namespace: &str, name: &str, dims: Vec<(String, Value)>, stat: &str| {
            let mut row = vec![json!(namespace), json!(name)];
            for (n, v) in dims {
                row.push(json!(n));
                row.push(v);
            }
            row.push(json!({"stat": stat}));
            Value::Array(row)
        };
        let mut charts: Vec<(&str, i32, Vec<Value>)> = Vec::new();
        for g in &self.graphs {
            let mut lines = Vec::new();
            for m in &g.metrics {
                let dims: Vec<(String, Value)> = m
                    .dimension_values(outputs)
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v))
                    .collect();
                if dims.iter().any(|(_, v)| is_unknown(v)) {
                    return unknown("dashboard body");
                }
                lines.push(row(&m.namespace, m.name, dims, m.statistic.as_str()));
            }
            charts.push((&g.title, g.period, lines));
        }
        for c in &self.charts {
            let lines = c
                .metrics
                .iter()
                .map(|m| {
                    let dims = m
                        .dimensions
                        .iter()
                        .map(|(n, v)| (n.clone(), json!(v)))
                        .collect();
                    row(&m.namespace, &m.name, dims, &m.statistic)
                })
                .collect();
            charts.push((&c.title, c.period, lines));
        }
        let mut widgets = Vec::new();
        for (i, (title, period, metrics)) in charts.iter().enumerate() {
            widgets.push(json!({
                "type": "metric",
                "x": (i % 2) * WIDTH, "y": (i / 2) * HEIGHT, "width": WIDTH, "height": HEIGHT,
                "properties": {
                    "title": title,
                    "region": self.region,
                    "view": "timeSeries",
                    "period": period,
                    "metrics": metrics,
                }
            }));
        }
        let top = charts.len().div_ceil(2) * HEIGHT;
        for (i, q) in self.queries.iter().enumerate() {
            let sources: Vec<String> = q
                .log_groups
                .iter()
                .map(|g| format!("SOURCE '{g}'"))
                .collect();
            widgets.push(json!({
                "type": "log",
                "x": 0, "y": top + i * HEIGHT, "width": 2 * WIDTH, "height": HEIGHT,
                "properties": {
                    "title": q.title,
                    "region": self.region,
                    "view": "table",
                    "query": format!("{} | {}", sources.join(" | "), q.query),
                }
            }));
        }
        json!({ "widgets": widgets })
    }

    /// Every metric the dashboard draws (for checks against what is deployed).
    pub fn metrics(&self) -> impl Iterator<Item = &Metric> {
        self.graphs.iter().flat_map(|g| g.metrics.iter())
    }
}

#[async_trait]
impl Resource for Dashboard {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "cloudwatch dashboard"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        // Dashboards are global: no region in their ARN.
        let dashboard = format!(
            "arn:{}:cloudwatch::{}:dashboard/{}",
            ws.partition, ws.account, self.meta.name
        );
        Permissions::new()
            .read(&["cloudwatch:GetDashboard"], &[&dashboard])
            .write(
                &["cloudwatch:PutDashboard", "cloudwatch:DeleteDashboards"],
                &[dashboard],
            )
    }
    fn depends_on(&self) -> Vec<&'static str> {
        let mut d: Vec<&'static str> = self.metrics().flat_map(Metric::depends_on).collect();
        d.sort();
        d.dedup();
        d
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        Desired::new().set("body", self.body(outputs))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let Some(out) = found(
            aws.cloudwatch()
                .get_dashboard()
                .dashboard_name(&m.name)
                .send()
                .await,
            GetDashboardError::is_dashboard_not_found_error,
            m,
            "GetDashboard",
        )?
        else {
            return Ok(None);
        };
        Ok(Some(
            Observed::default()
                .field("body", normalize_json(out.dashboard_body().unwrap_or("{}")))
                .output("arn", out.dashboard_arn().unwrap_or_default())
                .output("name", m.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let body = self.body(outputs);
        if is_unknown(&body) {
            return Err(EngineError::MissingOutput {
                resource: self.meta.name.clone(),
                output: "a dimension of its metrics".into(),
            });
        }
        aws.cloudwatch()
            .put_dashboard()
            .dashboard_name(&self.meta.name)
            .dashboard_body(body.to_string())
            .send()
            .await
            .map_err(|e| self.meta.fail("PutDashboard", e))?;
        Ok(())
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        self.create(aws, c.outputs).await
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        // Gone already: a retried call whose first answer was lost.
        gone(
            aws.cloudwatch()
                .delete_dashboards()
                .dashboard_names(&self.meta.name)
                .send()
                .await,
            DeleteDashboardsError::is_dashboard_not_found_error,
            &self.meta,
            "DeleteDashboards",
        )
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let p = crate::cost::PRICES.region(ctx.region)?;
        Ok(vec![CostLine::new(
            self.meta.id,
            "custom dashboard (an account's first three are free)",
            1.0,
            "dashboard-month",
            p.dashboard_month,
        )])
    }
}
