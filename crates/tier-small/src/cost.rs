//! The small tier's unit prices and usage fields, and the pricing of its events table.

use serde::{Deserialize, Serialize};
use tier_xs::cost::base::{BasePrices, BaseUsage};
use tier_xs::cost::{CostContext, CostError, CostLine, PriceSheet, UsagePart};

/// Unit prices of the small tier's services in one region. Field names say the unit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SmallPrices {
    pub s3_standard_gb_month: f64,
    pub s3_standard_ia_gb_month: f64,
    pub s3_glacier_ir_gb_month: f64,
    pub s3_put_1k: f64,
    pub s3_get_1k: f64,
    pub alb_hour: f64,
    pub alb_lcu_hour: f64,
    pub sqs_requests_million: f64,
}

/// The price sheet of this crate's `prices/aws.json`.
pub static PRICES: PriceSheet<SmallPrices> = PriceSheet::new(include_str!("../prices/aws.json"));

/// The small tier's usage fields, per month. A user's profile may leave them out (zero).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SmallUsage {
    /// Artifacts kept in S3.
    pub artifacts_gb: f64,
    pub s3_puts: f64,
    pub s3_gets: f64,
    /// Timeline records the agents append (one small S3 object each).
    pub timeline_records: f64,
}

impl UsagePart for SmallUsage {
    fn builtin(profile: &str) -> Option<Self> {
        match profile {
            "idle" => Some(SmallUsage {
                timeline_records: 100.0,
                ..SmallUsage::default()
            }),
            "light" => Some(SmallUsage {
                artifacts_gb: 1.0,
                s3_puts: 10_000.0,
                s3_gets: 50_000.0,
                timeline_records: 10_000.0,
            }),
            "team" => Some(SmallUsage {
                artifacts_gb: 20.0,
                s3_puts: 200_000.0,
                s3_gets: 1_000_000.0,
                timeline_records: 200_000.0,
            }),
            _ => None,
        }
    }
}

impl SmallUsage {
    /// The profile's small-tier amounts in one sentence, for the cost report.
    pub fn describe(&self) -> String {
        format!(
            "small tier: {} GB of artifacts, {} S3 PUTs, {} S3 GETs, {} timeline records per month",
            self.artifacts_gb, self.s3_puts, self.s3_gets, self.timeline_records
        )
    }
}

/// The small prices of the context's region, its usage fields, and the extra-small ones
/// (requests, events, transfer) that the small tier's resources scale with.
pub struct SmallCost {
    pub prices: &'static SmallPrices,
    pub xs_prices: &'static BasePrices,
    pub usage: SmallUsage,
    pub xs_usage: BaseUsage,
}

pub fn small_cost(ctx: &CostContext<'_>) -> Result<SmallCost, CostError> {
    Ok(SmallCost {
        prices: PRICES.region(ctx.region)?,
        xs_prices: tier_xs::cost::base::PRICES.region(ctx.region)?,
        usage: ctx.usage.part()?,
        xs_usage: ctx.usage.part()?,
    })
}

/// The size of one event's entry in an index: its keys and the five short fields the indexes
/// copy ([`crate::monitoring::events::INDEXED`]), plus the 100 bytes DynamoDB counts per item.
const INDEX_ENTRY_KB: f64 = 0.3;

/// The events table: an event's write costs a unit per started KB, plus one per index (an
/// index entry is under 1 KB); events are kept 90 days, so about three months of them are
/// stored, with their index entries.
pub fn events_table_cost(
    id: &'static str,
    p: &BasePrices,
    ctx: &CostContext<'_>,
) -> Result<Vec<CostLine>, CostError> {
    let u: BaseUsage = ctx.usage.part()?;
    let indexes = crate::monitoring::events::INDEXES.len() as u32;
    let entry_kb = u.event_kb + f64::from(indexes) * INDEX_ENTRY_KB.min(u.event_kb);
    let gb = u.events * 3.0 * entry_kb / 1_048_576.0;
    Ok(vec![
        CostLine::new(
            id,
            &format!("event writes (table + {indexes} indexes)"),
            u.events * (u.event_kb.ceil().max(1.0) + f64::from(indexes)) / 1e6,
            "M WRU",
            p.dynamodb_write_million,
        ),
        CostLine::new(
            id,
            "storage (90 days of events, with indexes)",
            gb,
            "GB-month",
            p.dynamodb_storage_gb_month,
        ),
        CostLine::new(
            id,
            "point-in-time recovery",
            gb,
            "GB-month",
            p.dynamodb_pitr_gb_month,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_price_sheet_covers_the_regions_of_the_extra_small_one() {
        assert_eq!(
            PRICES.regions().unwrap(),
            tier_xs::cost::base::PRICES.regions().unwrap()
        );
        for r in PRICES.regions().unwrap() {
            let p = PRICES.region(&r).unwrap();
            assert!(p.s3_glacier_ir_gb_month < p.s3_standard_ia_gb_month);
            assert!(p.s3_standard_ia_gb_month < p.s3_standard_gb_month);
        }
    }
}
