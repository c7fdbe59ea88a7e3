//! What a tier costs. Unit prices come from the table in `prices/aws.json` (per region, with
//! the date and source of the values); usage comes from a profile (`idle`, `light`, `team`, or
//! a JSON file of the user's). Each resource prices itself from its own spec through
//! `Resource::monthly_cost` (in the engine), so an estimate cannot drift from what is deployed;
//! the ladder adds the lines up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::workspace::Tier;

pub mod base;

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
    /// A layer whose resources have no prices yet (the layer says why).
    #[error("{0}")]
    NotPriced(String),
}

/// Hours in a month, as AWS's pricing pages count them.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// Where a region's prices come from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct PriceSource {
    pub as_of: String,
    pub source: String,
}

#[derive(Debug, Deserialize)]
struct PriceFile<T> {
    #[allow(dead_code)]
    currency: String,
    #[allow(dead_code)]
    notes: String,
    regions: BTreeMap<String, RegionEntry<T>>,
}

#[derive(Debug, Deserialize)]
struct RegionEntry<T> {
    #[serde(flatten)]
    source: PriceSource,
    #[serde(flatten)]
    prices: T,
}

/// One layer's unit prices: a JSON file compiled into the binary (per region, with the date
/// and source of the values), parsed into the layer's own typed struct `T` on first use.
/// Each tier crate has one (`tier_small::cost::PRICES`); the ladder checks that every layer
/// prices the region before anything is priced.
pub struct PriceSheet<T> {
    json: &'static str,
    parsed: OnceLock<Result<PriceFile<T>, String>>,
}

impl<T: DeserializeOwned> PriceSheet<T> {
    pub const fn new(json: &'static str) -> Self {
        PriceSheet {
            json,
            parsed: OnceLock::new(),
        }
    }

    fn file(&self) -> Result<&PriceFile<T>, CostError> {
        self.parsed
            .get_or_init(|| serde_json::from_str(self.json).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| CostError::BadTable(e.clone()))
    }

    /// The unit prices of a region.
    pub fn region(&self, region: &str) -> Result<&T, CostError> {
        self.entry(region).map(|e| &e.prices)
    }

    /// Where the region's prices come from.
    pub fn source(&self, region: &str) -> Result<&PriceSource, CostError> {
        self.entry(region).map(|e| &e.source)
    }

    /// The regions the sheet prices.
    pub fn regions(&self) -> Result<Vec<String>, CostError> {
        Ok(self.file()?.regions.keys().cloned().collect())
    }

    fn entry(&self, region: &str) -> Result<&RegionEntry<T>, CostError> {
        let file = self.file()?;
        file.regions.get(region).ok_or_else(|| {
            CostError::UnknownRegion(
                region.to_string(),
                file.regions.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })
    }
}

/// Monthly usage a workspace sees: a profile's name and its amounts by field, every layer's
/// own fields together. A layer reads its part as a typed struct with [`Usage::part`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Usage {
    pub name: String,
    #[serde(flatten)]
    pub amounts: BTreeMap<String, f64>,
}

impl Usage {
    /// A layer's fields of this usage, as its typed struct.
    pub fn part<T: UsagePart>(&self) -> Result<T, CostError> {
        let map: serde_json::Map<String, Value> = self
            .amounts
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect();
        serde_json::from_value(Value::Object(map)).map_err(|e| CostError::BadProfile {
            path: self.name.clone(),
            message: e.to_string(),
        })
    }
}

/// One layer's usage fields (all per month) and its amounts in the built-in profiles.
pub trait UsagePart: Serialize + DeserializeOwned + 'static {
    /// The amounts in a built-in profile: `idle`, `light` or `team`.
    fn builtin(profile: &str) -> Option<Self>;
}

/// The usage fields of every layer of a ladder: loads built-in profiles and users' files.
#[derive(Clone, Default)]
pub struct UsageBook {
    parts: Vec<UsageEntry>,
}

#[derive(Clone)]
struct UsageEntry {
    builtin: fn(&str) -> Option<Value>,
    check: fn(&Value) -> Result<(), String>,
}

impl UsageBook {
    /// The built-in profile names.
    pub const BUILTIN: [&'static str; 3] = ["idle", "light", "team"];

    /// Adds a layer's usage fields.
    pub fn with<T: UsagePart>(mut self) -> Self {
        self.parts.push(UsageEntry {
            builtin: |name| T::builtin(name).and_then(|p| serde_json::to_value(p).ok()),
            check: |v| {
                serde_json::from_value::<T>(v.clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        });
        self
    }

    /// The field names every part knows.
    fn fields(&self) -> BTreeSet<String> {
        self.parts
            .iter()
            .filter_map(|p| (p.builtin)("idle"))
            .filter_map(|v| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()))
            .flatten()
            .collect()
    }

    /// A built-in profile.
    pub fn builtin(&self, name: &str) -> Option<Usage> {
        let mut amounts = BTreeMap::new();
        for p in &self.parts {
            let v = (p.builtin)(name)?;
            for (k, a) in v.as_object()? {
                amounts.insert(k.clone(), a.as_f64()?);
            }
        }
        Some(Usage {
            name: name.to_string(),
            amounts,
        })
    }

    /// A built-in name, or the path of a JSON file with a `name` and the amounts of every
    /// part (a part's struct says which of its fields may be left out). Every amount must be
    /// a non-negative number; a field no layer knows is refused.
    pub fn load(&self, name_or_path: &str) -> Result<Usage, CostError> {
        if let Some(u) = self.builtin(name_or_path) {
            return Ok(u);
        }
        let path = std::path::Path::new(name_or_path);
        if !path.exists() {
            return Err(CostError::UnknownProfile(name_or_path.to_string()));
        }
        let bad = |message: String| CostError::BadProfile {
            path: name_or_path.to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut doc: serde_json::Map<String, Value> =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let name = match doc.remove("name") {
            Some(Value::String(n)) => n,
            _ => return Err(bad("missing field `name` (a string)".into())),
        };
        let known = self.fields();
        let mut amounts = BTreeMap::new();
        for (k, v) in &doc {
            if !known.contains(k) {
                return Err(bad(format!(
                    "unknown field `{k}`: the fields are name, {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            match v.as_f64() {
                Some(a) if a.is_finite() && a >= 0.0 => {
                    amounts.insert(k.clone(), a);
                }
                _ => {
                    return Err(bad(format!(
                        "`{k}`: every amount must be a non-negative number"
                    )));
                }
            }
        }
        let all = Value::Object(doc);
        for p in &self.parts {
            (p.check)(&all).map_err(bad)?;
        }
        Ok(Usage { name, amounts })
    }
}

/// What prices a resource needs: the region, the usage, hours in a month. Each layer reads
/// its unit prices from its own [`PriceSheet`] and its usage fields with [`Usage::part`].
pub struct CostContext<'a> {
    pub region: &'a str,
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

/// What a ladder knows beyond the resources to price a tier: the seed's target for it, where
/// each layer's prices come from, and the layers' assumptions.
pub struct PricingNotes {
    pub target: (f64, f64),
    pub sources: Vec<PriceSource>,
    pub assumptions: Vec<String>,
}

impl CostReport {
    /// The report of priced lines; prices as of the oldest source.
    pub fn new(
        tier: Tier,
        region: &str,
        usage: &Usage,
        lines: Vec<CostLine>,
        notes: PricingNotes,
    ) -> Self {
        let total = lines.iter().map(|l| l.monthly).sum();
        let (lo, hi) = notes.target;
        CostReport {
            tier,
            region: region.to_string(),
            usage: usage.clone(),
            lines,
            total,
            target_low: lo,
            target_high: hi,
            prices_as_of: notes
                .sources
                .iter()
                .map(|s| s.as_of.clone())
                .min()
                .unwrap_or_default(),
            prices_source: notes
                .sources
                .iter()
                .map(|s| s.source.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            assumptions: notes.assumptions,
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

    /// The report for a person, as of today.
    pub fn render(&self) -> String {
        self.render_on(time::OffsetDateTime::now_utc().date())
    }

    /// The report for a person on `today` (the prices' age is said when they are old).
    pub fn render_on(&self, today: time::Date) -> String {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let age = time::Date::parse(&self.prices_as_of, &format)
            .ok()
            .map(|d| (today - d).whole_days());
        let stale = match age {
            Some(days) if days > STALE_AFTER_DAYS => format!(
                " ({} months ago: AWS changes prices now and then; check the sources below)",
                days / 30
            ),
            _ => String::new(),
        };
        let mut out = format!(
            "Monthly cost of the {} tier in {} (usage: {}), prices as of {}{stale}\n\n",
            self.tier, self.region, self.usage.name, self.prices_as_of
        );
        out.push_str(&format!(
            "{:<28} {:<44} {:>20} {:>14} {:>9}\n",
            "resource", "item", "quantity", "unit price", "monthly"
        ));
        for l in &self.lines {
            let (quantity, price) = quantity_and_price(l);
            out.push_str(&format!(
                "{:<28} {:<44} {:>20} {:>14} {:>9}\n",
                l.resource,
                l.item,
                quantity,
                price,
                money(l.monthly)
            ));
        }
        let verdict = if self.total > self.target_high {
            "ABOVE"
        } else if self.total < self.target_low {
            "below"
        } else {
            "within"
        };
        out.push_str(&format!(
            "\ntotal: ${:.2}/month; the {} tier is designed to cost {} ({verdict} it)\n",
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

/// Prices older than this many days are said to be old.
const STALE_AFTER_DAYS: i64 = 180;

/// A line's quantity in whole units and its unit price per billing block: a unit of
/// `M WRU` reads `100,000 WRU` at `$0.625/M`, `10k calls` reads `5,000 calls` at `$0.05/10k`.
fn quantity_and_price(l: &CostLine) -> (String, String) {
    let blocks = [("M ", 1e6, "M"), ("10k ", 1e4, "10k"), ("k ", 1e3, "k")];
    for (prefix, scale, per) in blocks {
        if let Some(unit) = l.unit.strip_prefix(prefix) {
            return (
                format!("{} {unit}", grouped(l.quantity * scale)),
                format!("${}/{per}", trim(l.unit_price)),
            );
        }
    }
    (
        format!("{} {}", trim(l.quantity), l.unit),
        format!("${}", trim(l.unit_price)),
    )
}

/// A count with thousands separators (`100,000`); fractions keep four significant digits.
fn grouped(v: f64) -> String {
    if v.fract().abs() > 1e-9 || v.abs() >= 1e15 {
        return trim(v);
    }
    let digits = format!("{}", v.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// A number without trailing zeros, to four significant digits below 1 and at most three
/// decimals above (`0.0954`, `182.5`, `0.005`).
fn trim(v: f64) -> String {
    let decimals = if v != 0.0 && v.abs() < 1.0 {
        (3 - v.abs().log10().floor() as i32).clamp(0, 9) as usize
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    s.to_string()
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
    fn a_line_is_quantity_times_unit_price() {
        let l = CostLine::new("x", "thing", 730.0, "h", 0.005);
        assert!((l.monthly - 3.65).abs() < 1e-9);
        assert_eq!(trim(0.0050), "0.005");
        assert_eq!(trim(730.0), "730");
        assert_eq!(trim(0.095367), "0.09537");
        assert_eq!(trim(0.013341), "0.01334");
        assert_eq!(trim(182.5), "182.5");
        assert_eq!(grouped(100_000.0), "100,000");
        let (q, p) = quantity_and_price(&CostLine::new("s", "API calls", 0.5, "10k calls", 0.05));
        assert_eq!((q.as_str(), p.as_str()), ("5,000 calls", "$0.05/10k"));
    }

    #[test]
    fn old_prices_are_said_to_be_old() {
        let report = CostReport::new(
            crate::workspace::Tier::ExtraSmall,
            "us-east-1",
            &Usage {
                name: "light".into(),
                amounts: BTreeMap::new(),
            },
            Vec::new(),
            PricingNotes {
                target: (0.0, 10.0),
                sources: vec![PriceSource {
                    as_of: "2025-12-01".into(),
                    source: "aws.amazon.com".into(),
                }],
                assumptions: Vec::new(),
            },
        );
        let fresh = report.render_on(time::macros::date!(2026 - 02 - 01));
        assert!(!fresh.contains("months ago"), "{fresh}");
        let old = report.render_on(time::macros::date!(2026 - 12 - 01));
        assert!(
            old.contains("prices as of 2025-12-01 (12 months ago"),
            "{old}"
        );
    }
}
