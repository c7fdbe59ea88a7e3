//! What a tier costs. Unit prices come from the table in `prices/aws.json` (per region, with
//! the date and source of the values); usage comes from a profile (`idle`, `light`, `team`, or
//! a JSON file of the user's). Each resource prices itself from its own spec through
//! [`crate::engine::Resource::monthly_cost`], so an estimate cannot drift from what is deployed.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::workspace::Tier;

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("no prices for region {0}: the price table has {1}")]
    UnknownRegion(String, String),
    #[error("the built-in price table is invalid: {0}")]
    BadTable(String),
    #[error("unknown usage profile {0:?}: use idle, light, team, or a path to a JSON file")]
    UnknownProfile(String),
    #[error("usage profile file {path}: {message}")]
    BadProfile { path: String, message: String },
}

/// Unit prices of one region. Field names say the unit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct RegionPrices {
    pub as_of: String,
    pub source: String,
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
    pub alarm_month: f64,
    pub dashboard_month: f64,
    pub s3_standard_gb_month: f64,
    pub s3_standard_ia_gb_month: f64,
    pub s3_glacier_ir_gb_month: f64,
    pub s3_put_1k: f64,
    pub s3_get_1k: f64,
    pub alb_hour: f64,
    pub alb_lcu_hour: f64,
    pub sfn_transitions_1k: f64,
    pub sqs_requests_million: f64,
    pub aurora_acu_hour: f64,
    pub aurora_storage_gb_month: f64,
    pub aurora_io_million: f64,
    pub transfer_out_gb: f64,
    pub transfer_out_free_gb: f64,
    pub ecr_storage_gb_month: f64,
    pub budget_day: f64,
    pub budgets_free: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PriceTable {
    pub currency: String,
    pub hours_per_month: f64,
    pub notes: String,
    pub regions: BTreeMap<String, RegionPrices>,
}

static TABLE: OnceLock<Result<PriceTable, String>> = OnceLock::new();

impl PriceTable {
    /// The table shipped in the binary.
    pub fn builtin() -> Result<&'static PriceTable, CostError> {
        TABLE
            .get_or_init(|| {
                serde_json::from_str(include_str!("../prices/aws.json")).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| CostError::BadTable(e.clone()))
    }

    pub fn region(&self, region: &str) -> Result<&RegionPrices, CostError> {
        self.regions.get(region).ok_or_else(|| {
            CostError::UnknownRegion(
                region.to_string(),
                self.regions.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })
    }
}

/// Monthly usage a workspace sees. Every field is per month.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub name: String,
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
    /// Artifacts and timeline data kept in S3 (small tier on).
    #[serde(default)]
    pub artifacts_gb: f64,
    #[serde(default)]
    pub s3_puts: f64,
    #[serde(default)]
    pub s3_gets: f64,
    /// Timeline records the agents append (one small S3 object each; small tier on).
    #[serde(default)]
    pub timeline_records: f64,
    /// Workflow runs (medium tier on).
    #[serde(default)]
    pub workflow_runs: f64,
}

impl Usage {
    pub const BUILTIN: [&'static str; 3] = ["idle", "light", "team"];

    /// The built-in profiles:
    /// - `idle`: deployed and checked now and then (a few hundred requests a day at most);
    /// - `light`: one developer's agents working most days;
    /// - `team`: a small team's agents working every day.
    pub fn builtin(name: &str) -> Option<Usage> {
        let u = |requests: f64,
                 kv_reads,
                 kv_writes,
                 kv_storage_gb,
                 events,
                 secret_api_calls,
                 server_log_gb,
                 transfer_out_gb| Usage {
            name: name.to_string(),
            requests,
            kv_reads,
            kv_writes,
            kv_storage_gb,
            events,
            secret_api_calls,
            server_log_gb,
            event_kb: 1.0,
            transfer_out_gb,
            artifacts_gb: 0.0,
            s3_puts: 0.0,
            s3_gets: 0.0,
            timeline_records: 0.0,
            workflow_runs: 0.0,
        };
        match name {
            "idle" => Some(Usage {
                timeline_records: 100.0,
                ..u(
                    1_000.0, 10_000.0, 2_000.0, 0.01, 1_000.0, 1_000.0, 0.05, 0.1,
                )
            }),
            "light" => Some(Usage {
                artifacts_gb: 1.0,
                s3_puts: 10_000.0,
                s3_gets: 50_000.0,
                timeline_records: 10_000.0,
                workflow_runs: 100.0,
                ..u(
                    100_000.0, 500_000.0, 100_000.0, 0.5, 100_000.0, 5_000.0, 0.5, 2.0,
                )
            }),
            "team" => Some(Usage {
                artifacts_gb: 20.0,
                s3_puts: 200_000.0,
                s3_gets: 1_000_000.0,
                timeline_records: 200_000.0,
                workflow_runs: 2_000.0,
                ..u(
                    2_000_000.0,
                    10_000_000.0,
                    2_000_000.0,
                    5.0,
                    2_000_000.0,
                    50_000.0,
                    5.0,
                    20.0,
                )
            }),
            _ => None,
        }
    }

    /// A built-in name, or the path of a JSON file with every field of [`Usage`].
    pub fn load(name_or_path: &str) -> Result<Usage, CostError> {
        if let Some(u) = Usage::builtin(name_or_path) {
            return Ok(u);
        }
        let path = std::path::Path::new(name_or_path);
        if !path.exists() {
            return Err(CostError::UnknownProfile(name_or_path.to_string()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| CostError::BadProfile {
            path: name_or_path.to_string(),
            message: e.to_string(),
        })?;
        let u: Usage = serde_json::from_str(&text).map_err(|e| CostError::BadProfile {
            path: name_or_path.to_string(),
            message: e.to_string(),
        })?;
        let fields = [
            u.requests,
            u.kv_reads,
            u.kv_writes,
            u.kv_storage_gb,
            u.events,
            u.secret_api_calls,
            u.server_log_gb,
            u.event_kb,
            u.transfer_out_gb,
            u.artifacts_gb,
            u.s3_puts,
            u.s3_gets,
            u.workflow_runs,
        ];
        if fields.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(CostError::BadProfile {
                path: name_or_path.to_string(),
                message: "every amount must be a non-negative number".into(),
            });
        }
        Ok(u)
    }
}

/// What prices a resource needs: the region's unit prices, the usage, hours in a month.
pub struct CostContext<'a> {
    pub prices: &'a RegionPrices,
    pub usage: &'a Usage,
    pub hours: f64,
}

/// One priced line: quantity × unit price.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CostLine {
    /// Logical id of the resource it belongs to.
    pub resource: String,
    pub item: String,
    pub quantity: f64,
    pub unit: String,
    pub unit_price: f64,
    pub monthly: f64,
}

impl CostLine {
    pub fn new(resource: &str, item: &str, quantity: f64, unit: &str, unit_price: f64) -> Self {
        CostLine {
            resource: resource.to_string(),
            item: item.to_string(),
            quantity,
            unit: unit.to_string(),
            unit_price,
            monthly: quantity * unit_price,
        }
    }
}

/// The seed's monthly target for a tier, low and high (USD).
pub fn seed_target(tier: Tier) -> (f64, f64) {
    match tier {
        Tier::ExtraSmall => (0.0, 10.0),
        Tier::Small => (15.0, 20.0),
        Tier::Medium => (50.0, 80.0),
        Tier::Large => (200.0, 400.0),
    }
}

/// A tier's monthly cost, line by line.
#[derive(Clone, Debug, Serialize)]
pub struct CostReport {
    pub tier: Tier,
    pub region: String,
    pub usage: Usage,
    pub lines: Vec<CostLine>,
    pub total: f64,
    pub target_low: f64,
    pub target_high: f64,
    pub prices_as_of: String,
    pub prices_source: String,
    pub assumptions: Vec<String>,
}

impl CostReport {
    pub fn new(
        tier: Tier,
        region: &str,
        usage: &Usage,
        prices: &RegionPrices,
        lines: Vec<CostLine>,
        mut assumptions: Vec<String>,
    ) -> Self {
        let total = lines.iter().map(|l| l.monthly).sum();
        let (lo, hi) = seed_target(tier);
        assumptions.insert(
            0,
            format!(
                "usage profile {:?}: {} requests, {} KV reads, {} KV writes, {} GB KV data, {} events, {} GB server logs, {} GB out per month",
                usage.name, usage.requests, usage.kv_reads, usage.kv_writes, usage.kv_storage_gb, usage.events, usage.server_log_gb, usage.transfer_out_gb
            ),
        );
        CostReport {
            tier,
            region: region.to_string(),
            usage: usage.clone(),
            lines,
            total,
            target_low: lo,
            target_high: hi,
            prices_as_of: prices.as_of.clone(),
            prices_source: prices.source.clone(),
            assumptions,
        }
    }

    /// Monthly cost per resource id.
    pub fn by_resource(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for l in &self.lines {
            *m.entry(l.resource.clone()).or_insert(0.0) += l.monthly;
        }
        m
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "Monthly cost of the {} tier in {} (usage: {}), prices as of {}\n\n",
            self.tier, self.region, self.usage.name, self.prices_as_of
        );
        out.push_str(&format!(
            "{:<28} {:<44} {:>14} {:>12} {:>9}\n",
            "resource", "item", "quantity", "unit price", "monthly"
        ));
        for l in &self.lines {
            out.push_str(&format!(
                "{:<28} {:<44} {:>14} {:>12} {:>9}\n",
                l.resource,
                l.item,
                format!("{} {}", trim(l.quantity), l.unit),
                format!("${}", trim(l.unit_price)),
                money(l.monthly)
            ));
        }
        let verdict = if self.total <= self.target_high {
            "within"
        } else {
            "ABOVE"
        };
        out.push_str(&format!(
            "\ntotal: ${:.2}/month; the seed's target for {}: {} ({verdict} it)\n",
            self.total,
            self.tier,
            if self.target_low > 0.0 {
                format!("${:.0}-{:.0}", self.target_low, self.target_high)
            } else {
                format!("under ${:.0}", self.target_high)
            }
        ));
        out.push_str("\nassumptions:\n");
        for a in &self.assumptions {
            out.push_str(&format!("  - {a}\n"));
        }
        out.push_str(&format!("  - prices: {}\n", self.prices_source));
        out
    }
}

/// Dollars with cents, or with four decimals below a cent so small lines do not read as zero.
fn money(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

/// A number without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Prices a set of resources (a tier's) for a region and a usage profile.
pub fn report(
    tier: Tier,
    region: &str,
    usage: &Usage,
    resources: &[std::sync::Arc<dyn crate::engine::Resource>],
) -> Result<CostReport, CostError> {
    let table = PriceTable::builtin()?;
    let prices = table.region(region)?;
    let ctx = CostContext {
        prices,
        usage,
        hours: table.hours_per_month,
    };
    let lines: Vec<CostLine> = resources
        .iter()
        .filter(|r| r.tier() <= tier)
        .flat_map(|r| r.monthly_cost(&ctx))
        .collect();
    let priced: std::collections::BTreeSet<&str> =
        lines.iter().map(|l| l.resource.as_str()).collect();
    let free: Vec<String> = resources
        .iter()
        .filter(|r| r.tier() <= tier && !priced.contains(r.id()))
        .map(|r| r.kind().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let assumptions = vec![
        format!(
            "{} hours a month; services run all month",
            table.hours_per_month
        ),
        format!("no charge: {}", free.join(", ")),
        "the AWS Budget is one of the account's two free budgets".to_string(),
        "the deploy table (lock, apply history) sees a few hundred requests a month: under $0.01"
            .to_string(),
        format!(
            "the first {} GB a month of data transfer out is free (shared by the account)",
            prices.transfer_out_free_gb
        ),
        "Fargate Spot is priced at the region's published Spot rate, which moves with demand"
            .to_string(),
    ];
    Ok(CostReport::new(
        tier,
        region,
        usage,
        prices,
        lines,
        assumptions,
    ))
}

/// Monthly cost before and after a plan.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CostDelta {
    pub before: f64,
    pub after: f64,
    pub usage: String,
    pub region: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_covers_three_regions() {
        let t = PriceTable::builtin().unwrap();
        for r in ["us-east-1", "us-west-2", "eu-west-1"] {
            let p = t.region(r).unwrap();
            assert!(!p.as_of.is_empty() && !p.source.is_empty());
            // Spot has its own price, below on-demand.
            assert!(p.fargate_spot_vcpu_hour < p.fargate_vcpu_hour);
        }
        assert!(matches!(
            t.region("mars-1"),
            Err(CostError::UnknownRegion(..))
        ));
        assert_eq!(t.hours_per_month, 730.0);
    }

    #[test]
    fn profiles_load_by_name_or_file() {
        assert_eq!(Usage::load("idle").unwrap().name, "idle");
        assert!(matches!(
            Usage::load("busy"),
            Err(CostError::UnknownProfile(_))
        ));
        let dir = std::env::temp_dir().join(format!("agentbus-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut mine = Usage::builtin("light").unwrap();
        mine.name = "mine".into();
        mine.events = 42.0;
        let path = dir.join("mine.json");
        std::fs::write(&path, serde_json::to_string(&mine).unwrap()).unwrap();
        assert_eq!(Usage::load(path.to_str().unwrap()).unwrap(), mine);
        std::fs::write(&path, r#"{"name":"x"}"#).unwrap();
        assert!(matches!(
            Usage::load(path.to_str().unwrap()),
            Err(CostError::BadProfile { .. })
        ));
        mine.kv_reads = -1.0;
        std::fs::write(&path, serde_json::to_string(&mine).unwrap()).unwrap();
        assert!(matches!(
            Usage::load(path.to_str().unwrap()),
            Err(CostError::BadProfile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_line_is_quantity_times_unit_price() {
        let l = CostLine::new("x", "thing", 730.0, "h", 0.005);
        assert!((l.monthly - 3.65).abs() < 1e-9);
        assert_eq!(trim(0.0050), "0.005");
        assert_eq!(trim(730.0), "730");
    }
}
