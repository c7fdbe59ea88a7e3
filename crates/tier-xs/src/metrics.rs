//! The server's own metrics: each tool's latency, calls and errors, and what the layers above
//! record through the same registry (their names are theirs).
//!
//! Recording is a map update under a mutex, in the process. Every minute the open window
//! closes: its summaries are kept for an hour (the dashboard's `/api/metrics`, each tenant
//! seeing its own calls only) and, when the deploy asked for it, the window goes to CloudWatch
//! as Embedded Metric Format documents ([`emf_documents`]), one per dimension value, through
//! PutLogEvents with the EMF header ([`EmfSink`]): ECS's log driver sends stdout without it,
//! and CloudWatch extracts metrics only from documents that carry it (or from Lambda).
//!
//! A latency series keeps its exact count, sum, least and most, and a uniform sample of at
//! most [`SAMPLES`] values (reservoir sampling), the most an EMF value array may hold: its
//! percentiles are the sample's, the count (`…Calls`) is exact.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::runtime::Tenant;

/// The CloudWatch namespace of the server's metrics.
pub const NAMESPACE: &str = "agentbus";
/// The dimension every metric carries: the workspace (`agentbus-{env}`).
pub const WORKSPACE_DIMENSION: &str = "Workspace";
/// The most values an EMF metric's array may hold (the specification's limit).
pub const SAMPLES: usize = 100;
/// Closed windows kept for the dashboard: an hour of minutes.
const KEPT: usize = 60;
/// How often a window closes unless the server is told otherwise
/// ([`crate::config::ENV_METRICS_INTERVAL`]).
pub const INTERVAL: Duration = Duration::from_secs(60);

/// The window length this process uses: [`INTERVAL`], or the seconds its environment names.
pub fn interval() -> Duration {
    static SET: OnceLock<Duration> = OnceLock::new();
    *SET.get_or_init(|| {
        std::env::var(crate::config::ENV_METRICS_INTERVAL)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(INTERVAL, Duration::from_secs)
    })
}

/// The metrics of every server, by name (the CloudWatch metric names); the layers above name
/// their own next to the code that records them.
pub mod names {
    /// Milliseconds a `tools/call` took, by `Tool` (and the workspace's total).
    pub const TOOL_LATENCY: &str = "ToolLatency";
    /// Calls of a tool, by `Tool`.
    pub const TOOL_CALLS: &str = "ToolCalls";
    /// Calls that ended in an error (a tool error or a protocol error), by `Tool`.
    pub const TOOL_ERRORS: &str = "ToolErrors";
}

/// What a series measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// Durations: a sample is kept for percentiles.
    Milliseconds,
    /// Occurrences: only the sum is kept.
    Count,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "Milliseconds",
            Unit::Count => "Count",
        }
    }
}

/// A series' own dimension besides the workspace (`("Tool", "kv_get")`).
type Dimension = (&'static str, String);
/// A series as CloudWatch sees it: its name and its own dimension (tenants merged).
type Merged = BTreeMap<(&'static str, Option<Dimension>), Series>;

/// A series: a metric name, at most one dimension of its own besides the workspace, and the
/// tenant it was recorded for (kept in the process only, never sent to CloudWatch).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    name: &'static str,
    dimension: Option<Dimension>,
    tenant: Option<String>,
}

#[derive(Clone, Debug)]
struct Series {
    unit: Unit,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    samples: Vec<f64>,
}

impl Series {
    fn new(unit: Unit) -> Self {
        Series {
            unit,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, value: f64, random: &mut Xorshift) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if self.unit == Unit::Milliseconds {
            // Reservoir sampling (Vitter's algorithm R): every value has the same chance.
            if self.samples.len() < SAMPLES {
                self.samples.push(value);
            } else {
                let j = random.below(self.count) as usize;
                if j < SAMPLES {
                    self.samples[j] = value;
                }
            }
        }
    }

    /// Merges another tenant's series of the same metric (for CloudWatch, which sees none).
    fn merge(&mut self, other: &Series) {
        let before = self.count;
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        // Each side's sample stands for its count: keep values in proportion.
        let mut merged = Vec::with_capacity(SAMPLES);
        for (from, weight) in [(&self.samples, before), (&other.samples, other.count)] {
            let share = if self.count == 0 {
                0
            } else {
                ((weight as f64 / self.count as f64) * SAMPLES as f64).round() as usize
            };
            merged.extend(from.iter().take(share.max(1).min(from.len())).copied());
        }
        merged.truncate(SAMPLES);
        self.samples = merged;
    }

    fn value(&self) -> Value {
        match self.unit {
            Unit::Count => json!(self.sum),
            Unit::Milliseconds => json!(self.samples),
        }
    }

    fn summary(&self) -> Stats {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| -> Option<f64> {
            if sorted.is_empty() {
                return None;
            }
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            Some(round(sorted[i]))
        };
        let latency = self.unit == Unit::Milliseconds;
        Stats {
            unit: self.unit,
            count: if latency { self.count } else { self.sum as u64 },
            mean: (latency && self.count > 0).then(|| round(self.sum / self.count as f64)),
            p50: if latency { at(0.5) } else { None },
            p99: if latency { at(0.99) } else { None },
            max: (latency && self.count > 0).then(|| round(self.max)),
        }
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A series' numbers for a person: latencies in milliseconds (from the sample), counts exact.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub unit: Unit,
    /// Calls (latency) or occurrences (count).
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// One series of one window, as `/api/metrics` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesOut {
    pub name: &'static str,
    /// The series' own dimension (`{"Tool": "kv_get"}`), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<BTreeMap<&'static str, String>>,
    #[serde(flatten)]
    pub stats: Stats,
}

/// A window of the metrics: its start (Unix milliseconds) and its series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowOut {
    pub start: u64,
    /// Whether the window is still open (the current minute).
    pub open: bool,
    pub series: Vec<SeriesOut>,
}

/// A metric and the name of its own dimension: what the code that records it fixes.
type Family = (&'static str, Option<&'static str>);

/// The series of one window by family, then dimension value (empty: none), then tenant
/// (empty: none). Looked up by `&str` at each level, a value that adds to an existing series
/// allocates nothing.
#[derive(Debug)]
struct Window {
    start: u64,
    series: HashMap<Family, HashMap<String, HashMap<String, Series>>>,
}

impl Window {
    fn new(start: u64) -> Self {
        Window {
            start,
            series: HashMap::new(),
        }
    }

    fn series_mut(
        &mut self,
        name: &'static str,
        dimension: Option<(&'static str, &str)>,
        tenant: &str,
        unit: Unit,
    ) -> &mut Series {
        let by_value = self
            .series
            .entry((name, dimension.map(|d| d.0)))
            .or_default();
        let value = dimension.map_or("", |d| d.1);
        if !by_value.contains_key(value) {
            by_value.insert(value.to_string(), HashMap::new());
        }
        let by_tenant = by_value.get_mut(value).expect("inserted above");
        if !by_tenant.contains_key(tenant) {
            by_tenant.insert(tenant.to_string(), Series::new(unit));
        }
        by_tenant.get_mut(tenant).expect("inserted above")
    }

    /// Every series with its key, in key order.
    fn keyed(&self) -> Vec<(Key, &Series)> {
        let mut out: Vec<(Key, &Series)> = Vec::new();
        for ((name, dimension), by_value) in &self.series {
            for (value, by_tenant) in by_value {
                for (tenant, series) in by_tenant {
                    let key = Key {
                        name,
                        dimension: dimension.map(|n| (n, value.clone())),
                        tenant: (!tenant.is_empty()).then(|| tenant.clone()),
                    };
                    out.push((key, series));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn out(&self, tenant: &Tenant, open: bool) -> WindowOut {
        WindowOut {
            start: self.start,
            open,
            series: self
                .keyed()
                .into_iter()
                .filter(|(k, _)| k.tenant.as_deref() == Some(tenant.as_str()))
                .map(|(k, s)| SeriesOut {
                    name: k.name,
                    dimension: k.dimension.map(|(n, v)| BTreeMap::from([(n, v)])),
                    stats: s.summary(),
                })
                .collect(),
        }
    }
}

/// A small fast generator for reservoir sampling (no cryptographic use).
#[derive(Debug)]
struct Xorshift(u64);

impl Xorshift {
    fn seeded() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Xorshift(u64::from_le_bytes(seed) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n.max(1)
    }
}

#[derive(Debug)]
struct Open {
    window: Window,
    random: Xorshift,
}

/// The registry: the open window and the closed ones of the last hour.
#[derive(Debug)]
pub struct Metrics {
    open: Mutex<Open>,
    closed: Mutex<VecDeque<Window>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            open: Mutex::new(Open {
                window: Window::new(now_ms()),
                random: Xorshift::seeded(),
            }),
            closed: Mutex::new(VecDeque::new()),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The process's registry, which every tier's code records into.
pub fn global() -> &'static Arc<Metrics> {
    static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
    GLOBAL.get_or_init(|| Arc::new(Metrics::default()))
}

/// Records the values of one occurrence (a call's latency, its count, its error) into the
/// process's registry, under one lock.
pub fn observe(
    dimension: Option<(&'static str, &str)>,
    tenant: Option<&Tenant>,
    values: &[(&'static str, Unit, f64)],
) {
    global().record_all(dimension, tenant, values);
}

/// Milliseconds of a duration, as latencies are recorded.
pub fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

/// Records a duration into the process's registry.
pub fn latency(
    name: &'static str,
    dimension: Option<(&'static str, &str)>,
    tenant: Option<&Tenant>,
    elapsed: Duration,
) {
    global().record(name, Unit::Milliseconds, dimension, tenant, ms(elapsed));
}

/// Counts occurrences into the process's registry.
pub fn count(
    name: &'static str,
    dimension: Option<(&'static str, &str)>,
    tenant: Option<&Tenant>,
    n: u64,
) {
    global().record(name, Unit::Count, dimension, tenant, n as f64);
}

impl Metrics {
    /// Adds one value to a series of the open window.
    pub fn record(
        &self,
        name: &'static str,
        unit: Unit,
        dimension: Option<(&'static str, &str)>,
        tenant: Option<&Tenant>,
        value: f64,
    ) {
        self.record_all(dimension, tenant, &[(name, unit, value)]);
    }

    /// Adds values to series of the open window that share a dimension and a tenant.
    pub fn record_all(
        &self,
        dimension: Option<(&'static str, &str)>,
        tenant: Option<&Tenant>,
        values: &[(&'static str, Unit, f64)],
    ) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        let Open { window, random } = &mut *open;
        let tenant = tenant.map_or("", Tenant::as_str);
        for &(name, unit, value) in values {
            window
                .series_mut(name, dimension, tenant, unit)
                .add(value, random);
        }
    }

    /// Closes the open window: it is kept for the dashboard and returned (for CloudWatch).
    fn close(&self, now: u64) -> Option<ClosedWindow> {
        let (window, merged) = {
            let mut open = self.open.lock().ok()?;
            let window = std::mem::replace(&mut open.window, Window::new(now));
            let merged = merge_tenants(&window);
            (window, merged)
        };
        let start = window.start;
        if let Ok(mut closed) = self.closed.lock() {
            closed.push_back(window);
            while closed.len() > KEPT {
                closed.pop_front();
            }
        }
        Some(ClosedWindow {
            start,
            series: merged,
        })
    }

    /// The tenant's windows of the last hour, oldest first, the open one last.
    pub fn recent(&self, tenant: &Tenant) -> Vec<WindowOut> {
        let mut out: Vec<WindowOut> = match self.closed.lock() {
            Ok(closed) => closed.iter().map(|w| w.out(tenant, false)).collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(open) = self.open.lock() {
            out.push(open.window.out(tenant, true));
        }
        out
    }

    /// Closes a window every `interval` until `stop`, sending each to `sink` if there is one
    /// (a failed send is logged; metrics never hold up the server).
    pub async fn run(
        self: Arc<Self>,
        sink: Option<Arc<EmfSink>>,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.cancelled() => true,
            };
            if let Some(closed) = self.close(now_ms())
                && let Some(sink) = &sink
                && !closed.series.is_empty()
            {
                let docs = emf_documents(&sink.workspace, &closed);
                if let Err(e) = sink.put(closed.start, docs).await {
                    tracing::warn!("sending the server's metrics to CloudWatch Logs: {e}");
                }
            }
            if last {
                return;
            }
        }
    }
}

/// A closed window with the tenants merged: what CloudWatch gets.
#[derive(Debug)]
pub struct ClosedWindow {
    pub start: u64,
    series: Merged,
}

fn merge_tenants(window: &Window) -> Merged {
    let mut merged = Merged::new();
    for (k, s) in window.keyed() {
        match merged.entry((k.name, k.dimension)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(s.clone());
            }
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().merge(s),
        }
    }
    merged
}

/// The Embedded Metric Format documents of a closed window: one per dimension value (a
/// tool's series together), each declaring its metrics under the workspace alone and, when
/// it has one, under the workspace and its own dimension, so CloudWatch keeps the total and
/// the breakdown. A latency's value is its sample, a count's its sum.
pub fn emf_documents(workspace: &str, window: &ClosedWindow) -> Vec<String> {
    type Group<'a> = Vec<(&'static str, &'a Series)>;
    let mut groups: BTreeMap<Option<&Dimension>, Group<'_>> = BTreeMap::new();
    for ((name, dimension), series) in &window.series {
        groups
            .entry(dimension.as_ref())
            .or_default()
            .push((name, series));
    }
    groups
        .into_iter()
        .map(|(dimension, series)| {
            let mut doc = Map::new();
            let mut dimension_sets = vec![json!([WORKSPACE_DIMENSION])];
            doc.insert(WORKSPACE_DIMENSION.into(), json!(workspace));
            if let Some((n, v)) = dimension {
                dimension_sets.insert(0, json!([WORKSPACE_DIMENSION, n]));
                doc.insert((*n).into(), json!(v));
            }
            let metrics: Vec<Value> = series
                .iter()
                .map(|(name, s)| json!({"Name": name, "Unit": s.unit.as_str()}))
                .collect();
            for (name, s) in &series {
                doc.insert((*name).into(), s.value());
            }
            doc.insert(
                "_aws".into(),
                json!({
                    "Timestamp": window.start,
                    "CloudWatchMetrics": [{
                        "Namespace": NAMESPACE,
                        "Dimensions": dimension_sets,
                        "Metrics": metrics,
                    }],
                }),
            );
            Value::Object(doc).to_string()
        })
        .collect()
}

/// Where a deployed server sends its metrics: a log stream of its own in the workspace's
/// metrics log group, written with PutLogEvents and the EMF header.
pub struct EmfSink {
    logs: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    workspace: String,
    created: AtomicBool,
}

/// The header that makes CloudWatch Logs read a log event as an EMF document.
pub const EMF_HEADER: (&str, &str) = ("x-amzn-logs-format", "json/emf");

impl EmfSink {
    /// A sink writing to `group`, in a stream named after this process (one writer per
    /// stream, as CloudWatch Logs wants).
    pub fn new(logs: aws_sdk_cloudwatchlogs::Client, group: &str, workspace: &str) -> Self {
        EmfSink {
            logs,
            group: group.to_string(),
            stream: format!("server/{}", crate::server::trace::TraceId::random()),
            workspace: workspace.to_string(),
            created: AtomicBool::new(false),
        }
    }

    /// Makes the stream once; again after CloudWatch Logs said it is gone (its group was
    /// deleted and made again, say).
    async fn ensure_stream(&self) -> Result<(), String> {
        if self.created.load(Ordering::Acquire) {
            return Ok(());
        }
        match self
            .logs
            .create_log_stream()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) => {}
            Err(e) => {
                return Err(format!(
                    "creating log stream {} in {}: {}",
                    self.stream,
                    self.group,
                    crate::aws::error_text(&e)
                ));
            }
        }
        self.created.store(true, Ordering::Release);
        Ok(())
    }

    async fn put(&self, timestamp: u64, docs: Vec<String>) -> Result<(), String> {
        use aws_sdk_cloudwatchlogs::types::InputLogEvent;
        self.ensure_stream().await?;
        let events: Vec<InputLogEvent> = docs
            .into_iter()
            .filter_map(|message| {
                InputLogEvent::builder()
                    .timestamp(timestamp as i64)
                    .message(message)
                    .build()
                    .ok()
            })
            .collect();
        self.logs
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events))
            .customize()
            .mutate_request(|r| {
                r.headers_mut().insert(EMF_HEADER.0, EMF_HEADER.1);
            })
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception())
                {
                    self.created.store(false, Ordering::Release);
                }
                crate::aws::error_text(&e)
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(t: &str) -> Tenant {
        Tenant::new(t).expect("tenant")
    }

    #[test]
    fn a_latency_series_keeps_its_exact_count_and_at_most_a_hundred_samples() {
        let m = Metrics::default();
        let a = tenant("a");
        for i in 0..1000 {
            m.record(
                names::TOOL_LATENCY,
                Unit::Milliseconds,
                Some(("Tool", "kv_get")),
                Some(&a),
                i as f64,
            );
        }
        let recent = m.recent(&a);
        let s = &recent.last().expect("open window").series[0];
        assert_eq!(s.stats.count, 1000);
        assert_eq!(s.stats.mean, Some(499.5));
        assert_eq!(s.stats.max, Some(999.0));
        let closed = m.close(now_ms()).expect("closed");
        let series = closed.series.values().next().expect("one series");
        assert_eq!(series.samples.len(), SAMPLES);
        // A uniform sample of 0..1000: its median is near 500, never at an end.
        let p50 = series.summary().p50.expect("p50");
        assert!((250.0..750.0).contains(&p50), "p50 {p50}");
    }

    #[test]
    fn a_tenant_sees_only_its_own_series() {
        let m = Metrics::default();
        let (a, b) = (tenant("a"), tenant("b"));
        m.record(names::TOOL_CALLS, Unit::Count, None, Some(&a), 1.0);
        m.record("Other", Unit::Count, None, Some(&b), 3.0);
        m.record("Untenanted", Unit::Milliseconds, None, None, 2.0);
        let seen = m.recent(&a);
        let names: Vec<&str> = seen
            .iter()
            .flat_map(|w| w.series.iter().map(|s| s.name))
            .collect();
        assert_eq!(names, [names::TOOL_CALLS]);
    }

    #[test]
    fn the_emf_documents_declare_the_total_and_the_breakdown_and_merge_tenants() {
        let m = Metrics::default();
        let (a, b) = (tenant("a"), tenant("b"));
        for (t, ms) in [(&a, 2.0), (&b, 4.0)] {
            m.record(
                names::TOOL_LATENCY,
                Unit::Milliseconds,
                Some(("Tool", "kv_get")),
                Some(t),
                ms,
            );
            m.record(
                names::TOOL_CALLS,
                Unit::Count,
                Some(("Tool", "kv_get")),
                Some(t),
                1.0,
            );
        }
        m.record("PoolWait", Unit::Milliseconds, None, None, 0.5);
        let closed = m.close(1_700_000_000_000).expect("closed");
        let docs: Vec<Value> = emf_documents("agentbus-dev", &closed)
            .iter()
            .map(|d| serde_json::from_str(d).expect("json"))
            .collect();
        assert_eq!(docs.len(), 2);
        let tool = docs
            .iter()
            .find(|d| d.get("Tool").is_some())
            .expect("tool document");
        assert_eq!(
            tool["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Workspace", "Tool"], ["Workspace"]])
        );
        assert_eq!(
            tool["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "agentbus"
        );
        assert_eq!(tool["Workspace"], "agentbus-dev");
        assert_eq!(tool["ToolCalls"], json!(2.0));
        let mut samples: Vec<f64> =
            serde_json::from_value(tool["ToolLatency"].clone()).expect("array");
        samples.sort_by(f64::total_cmp);
        assert_eq!(samples, [2.0, 4.0]);
        let pool = docs
            .iter()
            .find(|d| d.get("Tool").is_none())
            .expect("pool document");
        assert_eq!(
            pool["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Workspace"]])
        );
        assert_eq!(pool["PoolWait"], json!([0.5]));
        // The closed window stays for the dashboard; a new one is open.
        assert_eq!(m.recent(&a).len(), 2);
    }

    #[test]
    fn merged_samples_stay_within_the_limit_and_in_proportion() {
        let mut r = Xorshift::seeded();
        let mut big = Series::new(Unit::Milliseconds);
        for _ in 0..900 {
            big.add(1.0, &mut r);
        }
        let mut small = Series::new(Unit::Milliseconds);
        for _ in 0..100 {
            small.add(9.0, &mut r);
        }
        big.merge(&small);
        assert_eq!(big.count, 1000);
        assert!(big.samples.len() <= SAMPLES);
        let nines = big.samples.iter().filter(|v| **v == 9.0).count();
        assert_eq!(nines, 10);
    }
}
