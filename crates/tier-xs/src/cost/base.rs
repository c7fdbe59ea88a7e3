//! The base prices and usage: the services of the foundation and the extra-small tier
//! (Fargate, public addresses, DynamoDB, EventBridge, Secrets Manager, CloudWatch Logs, ECR,
//! Budgets), which every tier's resources are built from. The extra-small layer registers them.

use serde::{Deserialize, Serialize};

use super::{CostContext, CostError, PriceSheet, UsagePart};

/// Unit prices of the base services in one region. Field names say the unit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct BasePrices {
    pub fargate_vcpu_hour: f64,
    pub fargate_gb_hour: f64,
    pub fargate_spot_vcpu_hour: f64,
    pub fargate_spot_gb_hour: f64,
    pub public_ipv4_hour: f64,
    pub dynamodb_write_million: f64,
    pub dynamodb_read_million: f64,
    pub dynamodb_storage_gb_month: f64,
    pub dynamodb_pitr_gb_month: f64,
    pub eventbridge_custom_events_million: f64,
    pub eventbridge_archive_gb: f64,
    pub eventbridge_archive_storage_gb_month: f64,
    pub secret_month: f64,
    pub secret_api_10k: f64,
    pub logs_ingest_gb: f64,
    pub logs_storage_gb_month: f64,
    pub transfer_out_gb: f64,
    pub transfer_out_free_gb: f64,
    pub ecr_storage_gb_month: f64,
    pub budget_day: f64,
    pub budgets_free: u32,
}

/// The price sheet of `prices/aws.json`.
pub static PRICES: PriceSheet<BasePrices> = PriceSheet::new(include_str!("../../prices/aws.json"));

/// The base usage fields, per month.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct BaseUsage {
    /// API and MCP requests to the dashboard server.
    pub requests: f64,
    pub kv_reads: f64,
    pub kv_writes: f64,
    /// Size of the KV table.
    pub kv_storage_gb: f64,
    /// Events published on the bus (also stored in the event tables from the small tier on).
    pub events: f64,
    /// Secrets Manager API calls (the server reads its secret at start and on token changes).
    pub secret_api_calls: f64,
    /// Server log volume ingested into CloudWatch Logs.
    pub server_log_gb: f64,
    /// Average size of an event, for the event log.
    pub event_kb: f64,
    /// Data sent to the internet by the workspace.
    pub transfer_out_gb: f64,
}

impl UsagePart for BaseUsage {
    /// - `idle`: deployed and checked now and then (a few hundred requests a day at most);
    /// - `light`: one developer's agents working most days;
    /// - `team`: a small team's agents working every day.
    fn builtin(profile: &str) -> Option<Self> {
        // requests, KV reads, KV writes, KV GB, events, secret calls, server log GB, GB out
        let a: [f64; 8] = match profile {
            "idle" => [1e3, 1e4, 2e3, 0.01, 1e3, 1e3, 0.05, 0.1],
            "light" => [1e5, 5e5, 1e5, 0.5, 1e5, 5e3, 0.5, 2.0],
            "team" => [2e6, 1e7, 2e6, 5.0, 2e6, 5e4, 5.0, 20.0],
            _ => return None,
        };
        Some(BaseUsage {
            requests: a[0],
            kv_reads: a[1],
            kv_writes: a[2],
            kv_storage_gb: a[3],
            events: a[4],
            secret_api_calls: a[5],
            server_log_gb: a[6],
            event_kb: 1.0,
            transfer_out_gb: a[7],
        })
    }
}

impl BaseUsage {
    /// The profile in one sentence, for the cost report's assumptions.
    pub fn describe(&self, name: &str) -> String {
        format!(
            "usage profile {name:?}: {} requests, {} KV reads, {} KV writes, {} GB KV data, {} events, {} GB server logs, {} GB out per month",
            self.requests,
            self.kv_reads,
            self.kv_writes,
            self.kv_storage_gb,
            self.events,
            self.server_log_gb,
            self.transfer_out_gb
        )
    }
}

/// The base prices of the context's region and the base usage fields.
pub fn base_cost(ctx: &CostContext<'_>) -> Result<(&'static BasePrices, BaseUsage), CostError> {
    Ok((PRICES.region(ctx.region)?, ctx.usage.part()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::UsageBook;

    #[test]
    fn the_price_sheet_covers_three_regions() {
        for r in ["us-east-1", "us-west-2", "eu-west-1"] {
            let p = PRICES.region(r).unwrap();
            let s = PRICES.source(r).unwrap();
            assert!(!s.as_of.is_empty() && !s.source.is_empty());
            // Spot has its own price, below on-demand.
            assert!(p.fargate_spot_vcpu_hour < p.fargate_vcpu_hour);
        }
        assert!(matches!(
            PRICES.region("mars-1"),
            Err(CostError::UnknownRegion(..))
        ));
    }

    #[test]
    fn profiles_load_by_name_or_file() {
        let book = UsageBook::default().with::<BaseUsage>();
        assert_eq!(book.load("idle").unwrap().name, "idle");
        assert!(matches!(
            book.load("busy"),
            Err(CostError::UnknownProfile(_))
        ));
        let dir = std::env::temp_dir().join(format!("agentbus-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut mine = book.builtin("light").unwrap();
        mine.name = "mine".into();
        mine.amounts.insert("events".into(), 42.0);
        let path = dir.join("mine.json");
        std::fs::write(&path, serde_json::to_string(&mine).unwrap()).unwrap();
        assert_eq!(book.load(path.to_str().unwrap()).unwrap(), mine);
        assert_eq!(mine.part::<BaseUsage>().unwrap().events, 42.0);
        std::fs::write(&path, r#"{"name":"x"}"#).unwrap();
        assert!(matches!(
            book.load(path.to_str().unwrap()),
            Err(CostError::BadProfile { .. })
        ));
        mine.amounts.insert("kv_reads".into(), -1.0);
        std::fs::write(&path, serde_json::to_string(&mine).unwrap()).unwrap();
        assert!(matches!(
            book.load(path.to_str().unwrap()),
            Err(CostError::BadProfile { .. })
        ));
        // A field no layer knows is refused, not ignored.
        mine.amounts.insert("kv_reads".into(), 1.0);
        mine.amounts.insert("kv_raeds".into(), 1.0);
        std::fs::write(&path, serde_json::to_string(&mine).unwrap()).unwrap();
        let e = book.load(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("unknown field `kv_raeds`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
