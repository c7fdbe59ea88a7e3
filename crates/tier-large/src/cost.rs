//! The large tier's prices (Aurora Serverless v2: ACU-hours, storage, I/O) and usage fields
//! (the database's average capacity above its minimum, its size, its I/O).

use serde::{Deserialize, Serialize};
use tier_xs::cost::{PriceSheet, UsagePart};

/// Unit prices of Aurora Serverless v2 (Aurora Standard) in one region.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct LargePrices {
    pub aurora_acu_hour: f64,
    pub aurora_storage_gb_month: f64,
    pub aurora_io_million: f64,
    /// One CloudWatch custom metric a month (the server's EMF metrics).
    pub cloudwatch_metric_month: f64,
}

/// The price sheet of this crate's `prices/aws.json`.
pub static PRICES: PriceSheet<LargePrices> = PriceSheet::new(include_str!("../prices/aws.json"));

/// The large tier's usage fields, per month. A user's profile may leave them out (zero).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct LargeUsage {
    /// ACUs the writer runs at on average above its minimum (load; the reader follows at
    /// its minimum).
    pub db_acu_above_min: f64,
    /// GB the cluster stores (documents, vectors, their index).
    pub db_storage_gb: f64,
    /// Millions of storage I/O requests.
    pub db_io_million: f64,
    /// The server's metrics with data in the month (each tool called is three: latency,
    /// calls, errors; plus the workspace's totals, memory search, embeddings, pool waits).
    pub server_metrics: f64,
    /// GB of EMF documents the server sends (a few per minute while it is used).
    pub server_metrics_gb: f64,
    /// GB of spans the server sends to CloudWatch when Transaction Search keeps them (about
    /// 0.6 KB each as kept; two for a tool call: its request and the call).
    pub traces_gb: f64,
}

impl UsagePart for LargeUsage {
    fn builtin(profile: &str) -> Option<Self> {
        match profile {
            "idle" => Some(LargeUsage {
                db_acu_above_min: 0.0,
                db_storage_gb: 1.0,
                db_io_million: 0.1,
                server_metrics: 3.0,
                server_metrics_gb: 0.01,
                traces_gb: 0.01,
            }),
            "light" => Some(LargeUsage {
                db_acu_above_min: 0.25,
                db_storage_gb: 2.0,
                db_io_million: 2.0,
                server_metrics: 20.0,
                server_metrics_gb: 0.1,
                traces_gb: 0.2,
            }),
            "team" => Some(LargeUsage {
                db_acu_above_min: 2.0,
                db_storage_gb: 20.0,
                db_io_million: 50.0,
                server_metrics: 45.0,
                server_metrics_gb: 0.5,
                traces_gb: 2.0,
            }),
            _ => None,
        }
    }
}

impl LargeUsage {
    /// The profile's large-tier amounts in one sentence, for the cost report.
    pub fn describe(&self) -> String {
        format!(
            "large tier: the database's writer {} ACU above its minimum on average, {} GB stored, {} million I/O requests; {} server metrics from {} GB of EMF documents; {} GB of spans when Transaction Search is on",
            self.db_acu_above_min,
            self.db_storage_gb,
            self.db_io_million,
            self.server_metrics,
            self.server_metrics_gb,
            self.traces_gb
        )
    }

    /// The server's EMF documents in a month, for its metrics log group.
    pub fn server_metrics(
        ctx: &tier_xs::cost::CostContext<'_>,
    ) -> Result<tier_xs::components::logs::EmfVolume, tier_xs::cost::CostError> {
        let u = ctx.usage.part::<LargeUsage>()?;
        let p = PRICES.region(ctx.region)?;
        Ok(tier_xs::components::logs::EmfVolume {
            gb: u.server_metrics_gb,
            metrics: u.server_metrics,
            metric_month: p.cloudwatch_metric_month,
        })
    }
}
