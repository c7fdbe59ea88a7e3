//! The medium tier's prices: Step Functions state transitions, CloudWatch alarms and
//! dashboards (its resources are priced with them when they are deployed).

use serde::{Deserialize, Serialize};
use tier_xs::cost::PriceSheet;

/// Unit prices of the medium tier's services in one region. Field names say the unit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct MediumPrices {
    pub sfn_transitions_1k: f64,
    pub alarm_month: f64,
    pub dashboard_month: f64,
}

/// The price sheet of this crate's `prices/aws.json`.
pub static PRICES: PriceSheet<MediumPrices> = PriceSheet::new(include_str!("../prices/aws.json"));
