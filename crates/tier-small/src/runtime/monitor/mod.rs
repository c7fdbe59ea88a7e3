//! Event monitoring: every event on the workspace's bus is recorded once, can be queried and
//! counted, and is delivered to the webhooks whose rules match it.
//!
//! How events arrive:
//! - on AWS, a rule on the bus sends every event (any source) into an SQS queue; the server
//!   receives them ([`dynamo::SqsFeed`]), records each in the events table with a
//!   conditional write keyed by its event id, and deletes the message only after that. SQS
//!   delivers at least once; the conditional write makes the record exactly once. A message
//!   that keeps failing ends up in the dead-letter queue;
//! - embedded, the monitor follows the extra-small event log in SQLite
//!   ([`sqlite::LogFeed`]) with a checkpoint, and records with `INSERT OR IGNORE`.
//!
//! Both call [`Monitor::ingest`]: match the tenant's rules, record the event, and (if its
//! deliveries have not been done yet) queue them for the [`dispatch::Dispatcher`], which
//! delivers in the background and marks the event dispatched when all are made. A stop
//! before that leaves an undispatched record, which [`Monitor::resume`] delivers at the next
//! start: recording never waits for a webhook.

/// The monitor's metrics (the server's registry, [`tier_xs::metrics`]).
pub mod metric_names {
    /// Events the monitoring feed recorded.
    pub const EVENTS_RECORDED: &str = "EventsRecorded";
    /// Webhook deliveries that failed every attempt.
    pub const WEBHOOK_FAILURES: &str = "WebhookFailures";
}

pub mod dispatch;
pub mod dynamo;
pub mod sqlite;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tier_xs::runtime::{EVENT_SOURCE, RuntimeError, Tenant, check_name, now_millis, page_limit};

use super::pattern::Pattern;
use super::timeline::{bound, ts_of};
use crate::monitoring::events::{PRIORITIES, RETENTION_DAYS};
use dispatch::Dispatcher;
use webhook::Webhooks;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;
/// Rules and subscriptions a tenant may have (each event is matched against every rule).
pub const MAX_RULES: usize = 100;
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// Events read at most to answer one counts request.
pub const MAX_COUNTED: usize = 50_000;
/// The tenant of events whose producer named none (or an invalid one).
pub const DEFAULT_TENANT: &str = "default";

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MonitoredEvent {
    pub event_id: String,
    pub tenant: String,
    pub source: String,
    pub detail_type: String,
    /// `info`, `warning`, `error` or `critical`: the detail's `priority`, else `info`.
    pub priority: String,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    pub detail: Value,
}

impl MonitoredEvent {
    /// The sort key of every index: time, then id.
    pub fn ts_id(&self) -> String {
        format!("{}#{}", self.time, self.event_id)
    }

    /// Epoch seconds after which the record is removed.
    pub fn expires_at(&self) -> u64 {
        time::OffsetDateTime::parse(&self.time, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp().max(0) as u64)
            .unwrap_or_else(|_| now_millis() / 1000)
            + RETENTION_DAYS * 86_400
    }

    /// The document rules match against: EventBridge's field names, plus tenant and priority.
    pub fn document(&self) -> Value {
        json!({
            "id": self.event_id,
            "source": self.source,
            "detail-type": self.detail_type,
            "time": self.time,
            "tenant": self.tenant,
            "priority": self.priority,
            "detail": self.detail,
        })
    }

    /// An event as EventBridge delivers it (the SQS message body). agentbus's own events
    /// carry `{tenant, event_id, time_ms, data}` in their detail; other producers' events
    /// keep their detail, their EventBridge id, and the detail's `tenant` if it is valid.
    pub fn from_bus(v: &Value) -> Result<Self, RuntimeError> {
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
        let source = field("source");
        let detail_type = field("detail-type");
        if source.is_empty() || detail_type.is_empty() {
            return Err(RuntimeError::invalid(
                "event",
                "not an EventBridge event (no source or detail-type)",
            ));
        }
        let detail = v.get("detail").cloned().unwrap_or(Value::Null);
        let own = source == EVENT_SOURCE
            && detail.get("event_id").and_then(Value::as_str).is_some()
            && detail.get("data").is_some();
        let tenant = detail
            .get("tenant")
            .and_then(Value::as_str)
            .and_then(|t| Tenant::new(t).ok())
            .map(|t| t.as_str().to_string())
            .unwrap_or_else(|| DEFAULT_TENANT.to_string());
        let (event_id, data, millis) = if own {
            (
                detail["event_id"].as_str().unwrap_or_default().to_string(),
                detail["data"].clone(),
                detail.get("time_ms").and_then(Value::as_u64),
            )
        } else {
            (field("id").to_string(), detail, None)
        };
        if event_id.is_empty() || event_id.len() > 128 {
            return Err(RuntimeError::invalid("event", "no usable event id"));
        }
        let time = match millis {
            Some(ms) => ts_of(ms),
            None => bound("time", field("time")).unwrap_or_else(|_| ts_of(now_millis())),
        };
        Ok(MonitoredEvent {
            priority: priority_of(&data),
            event_id,
            tenant,
            source: source.to_string(),
            detail_type: detail_type.to_string(),
            time,
            detail: data,
        })
    }
}

/// The detail's `priority` if it is one of [`PRIORITIES`] (any case), else `info`.
pub fn priority_of(detail: &Value) -> String {
    detail
        .get("priority")
        .and_then(Value::as_str)
        .map(str::to_lowercase)
        .filter(|p| PRIORITIES.contains(&p.as_str()))
        .unwrap_or_else(|| "info".to_string())
}

/// What to list: at most one of each filter; newest first.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct EventQuery {
    /// Only events from this source (e.g. `agentbus`).
    #[serde(default)]
    pub source: Option<String>,
    /// Only events of this detail type.
    #[serde(default)]
    pub detail_type: Option<String>,
    /// Only events of this priority (info, warning, error, critical).
    #[serde(default)]
    pub priority: Option<String>,
    /// From this time on (RFC 3339, inclusive).
    #[serde(default)]
    pub from: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    #[serde(default)]
    pub to: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Events per page, 1-200 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct EventPage {
    pub events: Vec<MonitoredEvent>,
    pub next_cursor: Option<String>,
}

/// A checked query: time bounds as sort-key strings, the cursor decoded.
#[derive(Clone, Debug)]
pub struct CheckedQuery {
    pub source: Option<String>,
    pub detail_type: Option<String>,
    pub priority: Option<String>,
    /// Inclusive lower bound of `ts_id`.
    pub from: String,
    /// Exclusive upper bound of `ts_id` (the cursor's, when one is given).
    pub to: String,
    pub limit: u32,
}

const EARLIEST: &str = "0000";
const LATEST: &str = "9999";

fn check_filter(what: &'static str, v: &Option<String>) -> Result<Option<String>, RuntimeError> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => {
            check_name(what, s, 256, |c| c != '#')?;
            Ok(Some(s.to_string()))
        }
    }
}

impl EventQuery {
    pub fn check(&self) -> Result<CheckedQuery, RuntimeError> {
        let priority = match self.priority.as_deref() {
            None | Some("") => None,
            Some(p) if PRIORITIES.contains(&p) => Some(p.to_string()),
            Some(p) => {
                return Err(RuntimeError::invalid(
                    "priority",
                    format!("{p:?}: use one of {}", PRIORITIES.join(", ")),
                ));
            }
        };
        let from = match &self.from {
            Some(f) => bound("from", f)?,
            None => EARLIEST.into(),
        };
        let mut to = match &self.to {
            Some(t) => bound("to", t)?,
            None => LATEST.into(),
        };
        if let Some(c) = &self.cursor {
            let after = tier_xs::runtime::kv::decode_cursor(c)?;
            if !after.contains('#') {
                return Err(RuntimeError::invalid(
                    "cursor",
                    "not a cursor this store returned",
                ));
            }
            // Newest first: the next page is everything older than the last one shown.
            if after < to {
                to = after;
            }
        }
        Ok(CheckedQuery {
            source: check_filter("source", &self.source)?,
            detail_type: check_filter("detail_type", &self.detail_type)?,
            priority,
            from,
            to,
            limit: page_limit(self.limit, DEFAULT_LIMIT, MAX_LIMIT)?,
        })
    }
}

impl CheckedQuery {
    pub fn accepts(&self, e: &MonitoredEvent) -> bool {
        let ts = e.ts_id();
        self.source.as_ref().is_none_or(|s| *s == e.source)
            && self
                .detail_type
                .as_ref()
                .is_none_or(|s| *s == e.detail_type)
            && self.priority.as_ref().is_none_or(|s| *s == e.priority)
            && ts >= self.from
            && ts < self.to
    }
}

/// A page of `limit` from a newest-first list that may hold one more.
pub fn page(mut events: Vec<MonitoredEvent>, limit: u32) -> EventPage {
    let next_cursor = tier_xs::runtime::cut_page(&mut events, limit, MonitoredEvent::ts_id);
    EventPage {
        events,
        next_cursor,
    }
}

/// What counting needs of an event.
#[derive(Clone, Debug)]
pub struct CountRow {
    pub time: String,
    pub source: String,
    pub detail_type: String,
    pub priority: String,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    #[default]
    Hour,
    Day,
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct CountQuery {
    /// `hour` (default; up to 7 days) or `day` (up to 90 days).
    #[serde(default)]
    pub granularity: Granularity,
    /// Start (RFC 3339); default: 24 hours (hour) or 30 days (day) before `to`.
    #[serde(default)]
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); default: now.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CountBucket {
    /// Start of the hour or day (RFC 3339 UTC).
    pub start: String,
    pub total: u64,
    pub by_source: BTreeMap<String, u64>,
    pub by_type: BTreeMap<String, u64>,
    pub by_priority: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Counts {
    pub granularity: Granularity,
    pub from: String,
    pub to: String,
    /// Hours or days with at least one event, oldest first.
    pub buckets: Vec<CountBucket>,
    pub total: u64,
    /// False when the range held more than 50,000 events and only those were counted.
    pub complete: bool,
}

/// The counting range as sort-key bounds, and the bucket width in characters of the time.
pub fn count_range(q: &CountQuery) -> Result<(String, String, usize), RuntimeError> {
    let (span, max, width) = match q.granularity {
        Granularity::Hour => (24 * 3_600_000_u64, 7 * 86_400_000_u64, 13),
        Granularity::Day => (30 * 86_400_000_u64, 90 * 86_400_000_u64, 10),
    };
    let millis = |what, t: &str| -> Result<u64, RuntimeError> {
        let p = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| RuntimeError::invalid(what, format!("{t:?} is not an RFC 3339 time")))?;
        Ok((p.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
    };
    let to = match &q.to {
        Some(t) => millis("to", t)?,
        None => now_millis(),
    };
    let from = match &q.from {
        Some(f) => millis("from", f)?,
        None => to.saturating_sub(span),
    };
    if from >= to {
        return Err(RuntimeError::invalid("from", "must be before to"));
    }
    if to - from > max {
        return Err(RuntimeError::invalid(
            "from",
            format!(
                "the range is longer than {} days; use granularity \"day\" or a shorter range",
                max / 86_400_000
            ),
        ));
    }
    Ok((ts_of(from), ts_of(to), width))
}

/// Buckets rows by the first `width` characters of their time (`2026-11-26T16` or `2026-11-26`).
pub fn count(
    q: &CountQuery,
    from: String,
    to: String,
    width: usize,
    rows: &[CountRow],
    complete: bool,
) -> Counts {
    let mut buckets: BTreeMap<String, CountBucket> = BTreeMap::new();
    for r in rows {
        let key = r.time.get(..width).unwrap_or(&r.time).to_string();
        let b = buckets.entry(key.clone()).or_insert_with(|| CountBucket {
            start: if width == 13 {
                format!("{key}:00:00Z")
            } else {
                format!("{key}T00:00:00Z")
            },
            ..Default::default()
        });
        b.total += 1;
        *b.by_source.entry(r.source.clone()).or_default() += 1;
        *b.by_type.entry(r.detail_type.clone()).or_default() += 1;
        *b.by_priority.entry(r.priority.clone()).or_default() += 1;
    }
    Counts {
        granularity: q.granularity,
        from,
        to,
        total: rows.len() as u64,
        buckets: buckets.into_values().collect(),
        complete,
    }
}

/// A named pattern of a tenant; subscriptions deliver what it matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rule {
    /// 1-64 of `[A-Za-z0-9_.-]`; unique in the tenant.
    pub name: String,
    /// An EventBridge-style pattern (see the `rules_put` tool).
    pub pattern: Value,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// RFC 3339, set by the store.
    #[serde(default)]
    pub updated_at: String,
}

fn yes() -> bool {
    true
}

pub fn check_rule_name(name: &str) -> Result<(), RuntimeError> {
    check_name("rule name", name, 64, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
    })
}

impl Rule {
    pub fn check(&self) -> Result<Pattern, RuntimeError> {
        check_rule_name(&self.name)?;
        if self.description.len() > 512 {
            return Err(RuntimeError::invalid("description", "at most 512 bytes"));
        }
        Pattern::parse(&self.pattern).map_err(|e| RuntimeError::invalid("pattern", e.to_string()))
    }
}

/// How deliveries to one subscription went so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeliveryStats {
    pub delivered: u64,
    pub failed: u64,
    /// Failed deliveries since the last one that succeeded.
    pub consecutive_failures: u64,
    pub last_attempt_at: Option<String>,
    /// `200`, or what went wrong after the last try (`503 after 5 attempts`).
    pub last_outcome: Option<String>,
    pub last_failure_at: Option<String>,
    pub last_failed_event: Option<String>,
    pub last_error: Option<String>,
    /// The last [`RECENT_DELIVERIES`] deliveries, newest first.
    #[serde(default)]
    pub recent: Vec<Delivery>,
}

/// How many deliveries a subscription keeps the outcome of ([`DeliveryStats::recent`]).
pub const RECENT_DELIVERIES: usize = 10;

/// One delivery of an event to a subscription: after its last attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Delivery {
    /// When it ended (RFC 3339).
    pub at: String,
    pub event_id: String,
    pub ok: bool,
    /// `204 after 2 attempts`, `503 after 5 attempts`, …
    pub outcome: String,
}

impl Delivery {
    pub fn of(o: &Outcome) -> Self {
        Delivery {
            at: o.at.clone(),
            event_id: o.event_id.clone(),
            ok: o.ok,
            outcome: o.summary.clone(),
        }
    }
}

/// A webhook for a rule. The signing secret is shown once, when it is created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Subscription {
    pub subscription_id: String,
    pub rule: String,
    pub url: String,
    pub enabled: bool,
    pub created_at: String,
    #[serde(default)]
    pub stats: DeliveryStats,
}

/// A subscription as stored: with its signing secret, which never leaves the server.
#[derive(Clone, Debug)]
pub struct StoredSubscription {
    pub subscription: Subscription,
    pub secret: String,
}

/// The outcome of delivering one event to one subscription (after its retries).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub event_id: String,
    pub at: String,
    pub ok: bool,
    pub summary: String,
    pub error: Option<String>,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Records the event unless its id is already recorded (`dispatched`: it has no
    /// deliveries to make). True when its deliveries are still to be done: new and not
    /// `dispatched`, or recorded before but never dispatched.
    async fn record(&self, e: &MonitoredEvent, dispatched: bool) -> Result<bool, RuntimeError>;
    async fn mark_dispatched(&self, e: &MonitoredEvent) -> Result<(), RuntimeError>;
    /// Events recorded with deliveries still to make (the outbox), oldest first, at most
    /// `max`.
    async fn undispatched(&self, max: usize) -> Result<Vec<MonitoredEvent>, RuntimeError>;
    async fn get(
        &self,
        tenant: &Tenant,
        event_id: &str,
    ) -> Result<Option<MonitoredEvent>, RuntimeError>;
    /// Newest first, at most `limit + 1` events (one more tells there is a next page).
    async fn query(
        &self,
        tenant: &Tenant,
        q: &CheckedQuery,
    ) -> Result<Vec<MonitoredEvent>, RuntimeError>;
    /// Events with `from <= ts_id < to`, at most `max`; true when there were more.
    async fn count_rows(
        &self,
        tenant: &Tenant,
        from: &str,
        to: &str,
        max: usize,
    ) -> Result<(Vec<CountRow>, bool), RuntimeError>;

    async fn put_rule(&self, tenant: &Tenant, rule: &Rule) -> Result<(), RuntimeError>;
    async fn rules(&self, tenant: &Tenant) -> Result<Vec<Rule>, RuntimeError>;
    async fn delete_rule(&self, tenant: &Tenant, name: &str) -> Result<bool, RuntimeError>;

    async fn put_subscription(
        &self,
        tenant: &Tenant,
        s: &StoredSubscription,
    ) -> Result<(), RuntimeError>;
    async fn subscriptions(&self, tenant: &Tenant)
    -> Result<Vec<StoredSubscription>, RuntimeError>;
    async fn delete_subscription(&self, tenant: &Tenant, id: &str) -> Result<bool, RuntimeError>;
    async fn record_outcome(
        &self,
        tenant: &Tenant,
        id: &str,
        o: &Outcome,
    ) -> Result<(), RuntimeError>;
    /// Turns a subscription on or off and keeps its counts; `note` becomes its last error,
    /// and turning it on starts its failures in a row afresh. `None` when the tenant has no
    /// such subscription.
    async fn set_enabled(
        &self,
        tenant: &Tenant,
        id: &str,
        enabled: bool,
        note: Option<&str>,
    ) -> Result<Option<Subscription>, RuntimeError>;
}

/// What turning a subscription on or off changes of it.
pub fn apply_enabled(s: &mut Subscription, enabled: bool, note: Option<&str>) {
    if enabled && !s.enabled {
        s.stats.consecutive_failures = 0;
    }
    s.enabled = enabled;
    if let Some(n) = note {
        s.stats.last_error = Some(n.to_string());
    }
}

/// What `events_health` answers.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct MonitorHealth {
    /// `failing` (a webhook's last delivery failed), `active` (events in the last 24 h) or `idle`.
    pub status: String,
    pub events_24h: u64,
    pub by_priority: BTreeMap<String, u64>,
    pub latest_event_at: Option<String>,
    pub subscriptions: u64,
    /// Subscriptions whose last delivery failed.
    pub failing_subscriptions: Vec<String>,
}

/// A new subscription's id and signing secret.
fn random_hex(bytes: usize) -> Result<String, RuntimeError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| RuntimeError::Backend {
        op: "random",
        message: e.to_string(),
    })?;
    Ok(hex::encode(b))
}

/// What `subscriptions_create` returns: the one time the secret is shown.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Created {
    pub subscription: Subscription,
    /// HMAC-SHA256 key of the `X-Agentbus-Signature` header. Shown only now.
    pub signing_secret: String,
}

/// The event monitor: a store, the webhook deliveries, and the logic both feeds share.
#[derive(Clone)]
pub struct Monitor {
    pub store: Arc<dyn EventStore>,
    pub webhooks: Webhooks,
    dispatcher: Dispatcher,
    patterns: Arc<Mutex<HashMap<String, Arc<Pattern>>>>,
}

/// Undispatched events taken up at a start, at most.
const MAX_RESUMED: usize = 1000;

impl Monitor {
    pub fn new(store: Arc<dyn EventStore>, webhooks: Webhooks) -> Self {
        Monitor {
            dispatcher: Dispatcher::new(store.clone(), webhooks.clone()),
            store,
            webhooks,
            patterns: Arc::default(),
        }
    }

    /// Waits until every delivery queued so far was made (or given up).
    pub async fn settled(&self) {
        self.dispatcher.settled().await
    }

    /// Delivers the events a stop cut off: recorded, never dispatched (the outbox).
    pub async fn resume(&self) -> Result<usize, RuntimeError> {
        let pending = self.store.undispatched(MAX_RESUMED).await?;
        let n = pending.len();
        for e in pending {
            let Ok(tenant) = Tenant::new(&e.tenant) else {
                continue;
            };
            let targets = self.targets(&tenant, &e).await?;
            if targets.is_empty() {
                self.store.mark_dispatched(&e).await?;
            } else {
                self.dispatcher.dispatch(e, targets);
            }
        }
        if n > 0 {
            tracing::info!("event monitor: {n} undispatched event(s) taken up again");
        }
        Ok(n)
    }

    /// The enabled subscriptions of enabled rules that match `e`.
    async fn targets(
        &self,
        tenant: &Tenant,
        e: &MonitoredEvent,
    ) -> Result<Vec<StoredSubscription>, RuntimeError> {
        let (rules, subs) =
            tokio::try_join!(self.store.rules(tenant), self.store.subscriptions(tenant))?;
        let doc = e.document();
        let matched: Vec<String> = self
            .compiled(tenant, &rules)
            .into_iter()
            .filter(|(_, p)| p.matches(&doc))
            .map(|(name, _)| name)
            .collect();
        Ok(subs
            .into_iter()
            .filter(|s| s.subscription.enabled && matched.contains(&s.subscription.rule))
            .collect())
    }

    /// The tenant's enabled rules, compiled once per version of each rule.
    fn compiled(&self, tenant: &Tenant, rules: &[Rule]) -> Vec<(String, Arc<Pattern>)> {
        let Ok(mut cache) = self.patterns.lock() else {
            return Vec::new();
        };
        if cache.len() > 10_000 {
            cache.clear();
        }
        rules
            .iter()
            .filter(|r| r.enabled)
            .filter_map(|r| {
                let key = format!("{tenant}\u{0}{}\u{0}{}", r.name, r.updated_at);
                if let Some(p) = cache.get(&key) {
                    return Some((r.name.clone(), p.clone()));
                }
                // A stored pattern was checked when it was saved; one that no longer parses
                // (a newer server's operator, say) matches nothing.
                let p = Arc::new(Pattern::parse(&r.pattern).ok()?);
                cache.insert(key, p.clone());
                Some((r.name.clone(), p))
            })
            .collect()
    }

    /// Records one event from the bus and queues its deliveries to matching subscriptions
    /// (made in the background: see [`dispatch`]).
    pub async fn ingest(&self, e: &MonitoredEvent) -> Result<(), RuntimeError> {
        let tenant = Tenant::new(&e.tenant)?;
        let targets = self.targets(&tenant, e).await?;
        // Most events go to no webhook: one write records them as done.
        if !self.store.record(e, targets.is_empty()).await? {
            return Ok(());
        }
        tier_xs::metrics::count(metric_names::EVENTS_RECORDED, None, Some(&tenant), 1);
        if targets.is_empty() {
            // Recorded before, never dispatched, and nothing matches it now.
            return self.store.mark_dispatched(e).await;
        }
        self.dispatcher.dispatch(e.clone(), targets);
        Ok(())
    }

    pub async fn query(&self, tenant: &Tenant, q: &EventQuery) -> Result<EventPage, RuntimeError> {
        let q = q.check()?;
        let events = self.store.query(tenant, &q).await?;
        Ok(page(events, q.limit))
    }

    pub async fn get(
        &self,
        tenant: &Tenant,
        event_id: &str,
    ) -> Result<Option<MonitoredEvent>, RuntimeError> {
        check_name("event_id", event_id, 128, |c| c != '#')?;
        self.store.get(tenant, event_id).await
    }

    pub async fn counts(&self, tenant: &Tenant, q: &CountQuery) -> Result<Counts, RuntimeError> {
        let (from, to, width) = count_range(q)?;
        let (rows, more) = self
            .store
            .count_rows(tenant, &from, &to, MAX_COUNTED)
            .await?;
        Ok(count(q, from, to, width, &rows, !more))
    }

    pub async fn put_rule(&self, tenant: &Tenant, rule: &Rule) -> Result<Rule, RuntimeError> {
        rule.check()?;
        let existing = self.store.rules(tenant).await?;
        if existing.len() >= MAX_RULES && !existing.iter().any(|r| r.name == rule.name) {
            return Err(RuntimeError::invalid(
                "rule",
                format!("a tenant has at most {MAX_RULES} rules; delete one first"),
            ));
        }
        let mut r = rule.clone();
        r.updated_at = ts_of(now_millis());
        self.store.put_rule(tenant, &r).await?;
        Ok(r)
    }

    /// Deletes a rule that no subscription uses.
    pub async fn delete_rule(&self, tenant: &Tenant, name: &str) -> Result<bool, RuntimeError> {
        check_rule_name(name)?;
        let users: Vec<String> = self
            .store
            .subscriptions(tenant)
            .await?
            .into_iter()
            .filter(|s| s.subscription.rule == name)
            .map(|s| s.subscription.subscription_id)
            .collect();
        if !users.is_empty() {
            return Err(RuntimeError::invalid(
                "rule",
                format!(
                    "{name:?} is used by subscription(s) {}: delete them first",
                    users.join(", ")
                ),
            ));
        }
        self.store.delete_rule(tenant, name).await
    }

    pub async fn subscribe(
        &self,
        tenant: &Tenant,
        rule: &str,
        url: &str,
    ) -> Result<Created, RuntimeError> {
        check_rule_name(rule)?;
        self.webhooks.check_url(url)?;
        let (rules, subs) =
            tokio::try_join!(self.store.rules(tenant), self.store.subscriptions(tenant))?;
        if !rules.iter().any(|r| r.name == rule) {
            return Err(RuntimeError::invalid(
                "rule",
                format!("no rule {rule:?} in this tenant: create it with rules_put first"),
            ));
        }
        if subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(RuntimeError::invalid(
                "subscription",
                format!("a tenant has at most {MAX_SUBSCRIPTIONS} subscriptions"),
            ));
        }
        let s = StoredSubscription {
            subscription: Subscription {
                subscription_id: format!("sub-{}", random_hex(8)?),
                rule: rule.to_string(),
                url: url.to_string(),
                enabled: true,
                created_at: ts_of(now_millis()),
                stats: DeliveryStats::default(),
            },
            secret: format!("whsec_{}", random_hex(24)?),
        };
        self.store.put_subscription(tenant, &s).await?;
        Ok(Created {
            subscription: s.subscription,
            signing_secret: s.secret,
        })
    }

    /// The last 24 hours at a glance: whether events arrive, their priorities, the newest
    /// one, and the webhooks that are failing.
    pub async fn health(&self, tenant: &Tenant) -> Result<MonitorHealth, RuntimeError> {
        let q = CountQuery::default();
        let newest = EventQuery {
            limit: Some(1),
            ..Default::default()
        };
        let (counts, latest, subs) = tokio::try_join!(
            self.counts(tenant, &q),
            self.query(tenant, &newest),
            self.subscriptions(tenant)
        )?;
        let mut by_priority: BTreeMap<String, u64> =
            PRIORITIES.iter().map(|p| (p.to_string(), 0)).collect();
        for b in &counts.buckets {
            for (k, v) in &b.by_priority {
                *by_priority.entry(k.clone()).or_default() += v;
            }
        }
        let failing: Vec<String> = subs
            .iter()
            .filter(|s| s.stats.consecutive_failures > 0)
            .map(|s| s.subscription_id.clone())
            .collect();
        Ok(MonitorHealth {
            status: if !failing.is_empty() {
                "failing"
            } else if counts.total > 0 {
                "active"
            } else {
                "idle"
            }
            .into(),
            events_24h: counts.total,
            by_priority,
            latest_event_at: latest.events.first().map(|e| e.time.clone()),
            subscriptions: subs.len() as u64,
            failing_subscriptions: failing,
        })
    }

    pub async fn subscriptions(&self, tenant: &Tenant) -> Result<Vec<Subscription>, RuntimeError> {
        let mut v: Vec<Subscription> = self
            .store
            .subscriptions(tenant)
            .await?
            .into_iter()
            .map(|s| s.subscription)
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(v)
    }

    pub async fn unsubscribe(&self, tenant: &Tenant, id: &str) -> Result<bool, RuntimeError> {
        check_name("subscription_id", id, 64, |c| {
            c.is_ascii_alphanumeric() || c == '-'
        })?;
        self.store.delete_subscription(tenant, id).await
    }

    /// Turns a subscription's deliveries on or off; `None` when the tenant has no such
    /// subscription. Turning it on starts its count of failures in a row afresh.
    pub async fn set_enabled(
        &self,
        tenant: &Tenant,
        id: &str,
        enabled: bool,
    ) -> Result<Option<Subscription>, RuntimeError> {
        check_name("subscription_id", id, 64, |c| {
            c.is_ascii_alphanumeric() || c == '-'
        })?;
        self.store.set_enabled(tenant, id, enabled, None).await
    }
}

/// Applies an outcome to the stats (the embedded store; DynamoDB does it in one update).
pub fn apply_outcome(s: &mut DeliveryStats, o: &Outcome) {
    s.recent.insert(0, Delivery::of(o));
    s.recent.truncate(RECENT_DELIVERIES);
    s.last_attempt_at = Some(o.at.clone());
    s.last_outcome = Some(o.summary.clone());
    if o.ok {
        s.delivered += 1;
        s.consecutive_failures = 0;
    } else {
        s.failed += 1;
        s.consecutive_failures += 1;
        s.last_failure_at = Some(o.at.clone());
        s.last_failed_event = Some(o.event_id.clone());
        s.last_error = o.error.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_events_become_records() {
        let own = json!({
            "id": "eb-1", "source": "agentbus", "detail-type": "build",
            "time": "2026-11-26T10:00:00Z",
            "detail": {"tenant": "acme", "event_id": "abc", "time_ms": 1_764_151_200_123u64,
                        "data": {"priority": "ERROR", "x": 1}}
        });
        let e = MonitoredEvent::from_bus(&own).unwrap();
        assert_eq!(
            (e.event_id.as_str(), e.tenant.as_str(), e.priority.as_str()),
            ("abc", "acme", "error")
        );
        assert_eq!(e.time, "2025-11-26T10:00:00.123Z");
        assert_eq!(e.detail, json!({"priority": "ERROR", "x": 1}));

        let foreign = json!({
            "id": "eb-2", "source": "ci.github", "detail-type": "push",
            "time": "2026-11-26T10:00:01Z", "detail": {"ref": "main", "tenant": "Not Valid"}
        });
        let e = MonitoredEvent::from_bus(&foreign).unwrap();
        assert_eq!(
            (e.event_id.as_str(), e.tenant.as_str(), e.priority.as_str()),
            ("eb-2", DEFAULT_TENANT, "info")
        );
        assert_eq!(e.time, "2026-11-26T10:00:01.000Z");
        assert!(MonitoredEvent::from_bus(&json!({"detail": {}})).is_err());
    }

    #[test]
    fn queries_are_checked() {
        let q = EventQuery {
            priority: Some("urgent".into()),
            ..Default::default()
        };
        assert!(q.check().unwrap_err().to_string().contains("info, warning"));
        let q = EventQuery {
            from: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(q.check().is_err());
        let q = EventQuery {
            cursor: Some("zz".into()),
            ..Default::default()
        };
        assert!(q.check().is_err());
        let q = EventQuery {
            limit: Some(0),
            ..Default::default()
        };
        assert!(q.check().is_err());
    }

    #[test]
    fn counts_bucket_by_hour_and_day() {
        let row = |t: &str, s: &str, p: &str| CountRow {
            time: t.into(),
            source: s.into(),
            detail_type: "x".into(),
            priority: p.into(),
        };
        let rows = [
            row("2026-11-26T10:05:00.000Z", "a", "info"),
            row("2026-11-26T10:55:00.000Z", "b", "error"),
            row("2026-11-26T11:00:00.000Z", "a", "info"),
        ];
        let q = CountQuery::default();
        let c = count(&q, "f".into(), "t".into(), 13, &rows, true);
        assert_eq!(c.buckets.len(), 2);
        assert_eq!(c.buckets[0].start, "2026-11-26T10:00:00Z");
        assert_eq!(c.buckets[0].total, 2);
        assert_eq!(c.buckets[0].by_source["b"], 1);
        assert_eq!(c.buckets[0].by_priority["error"], 1);
        let c = count(&q, "f".into(), "t".into(), 10, &rows, true);
        assert_eq!(c.buckets.len(), 1);
        assert_eq!(c.buckets[0].start, "2026-11-26T00:00:00Z");
        assert_eq!(c.total, 3);
        let long = CountQuery {
            granularity: Granularity::Hour,
            from: Some("2026-11-01T00:00:00Z".into()),
            to: Some("2026-11-26T00:00:00Z".into()),
        };
        assert!(
            count_range(&long)
                .unwrap_err()
                .to_string()
                .contains("7 days")
        );
    }
}
