//! Event publishing: every event carries the one source constant and its tenant; every
//! publish checks that the backing bus accepted it. The embedded backend keeps a local log
//! the dashboard shows; on AWS, recent events come from the bus rule's log group.

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{Row, SqlitePool};

use super::{EVENT_SOURCE, RuntimeError, Tenant, check_name, now_millis};

/// EventBridge accepts 256 KB per entry; the detail gets most of it.
pub const MAX_DETAIL_BYTES: usize = 200 * 1024;
pub const MAX_DETAIL_TYPE: usize = 128;
pub const MAX_RECENT: u32 = 500;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub source: String,
    pub detail_type: String,
    pub detail: Value,
    pub time_ms: u64,
}

pub fn check_event(detail_type: &str, detail: &Value) -> Result<(), RuntimeError> {
    check_name("detail_type", detail_type, MAX_DETAIL_TYPE, |_| true)?;
    if !detail.is_object() {
        return Err(RuntimeError::invalid("detail", "must be a JSON object"));
    }
    let size = detail.to_string().len();
    if size > MAX_DETAIL_BYTES {
        return Err(RuntimeError::TooLarge {
            size,
            max: MAX_DETAIL_BYTES,
        });
    }
    Ok(())
}

fn check_recent(limit: u32) -> Result<u32, RuntimeError> {
    if limit == 0 || limit > MAX_RECENT {
        return Err(RuntimeError::invalid(
            "limit",
            format!("use 1-{MAX_RECENT}"),
        ));
    }
    Ok(limit)
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b[..8].copy_from_slice(&now_millis().to_le_bytes());
    }
    hex::encode(b)
}

#[async_trait]
pub trait EventBus: Send + Sync {
    async fn publish(
        &self,
        tenant: &Tenant,
        detail_type: &str,
        detail: &Value,
    ) -> Result<Event, RuntimeError>;
    /// The tenant's newest events, newest first.
    async fn recent(&self, tenant: &Tenant, limit: u32) -> Result<Vec<Event>, RuntimeError>;
}

/// What goes on the bus: the tenant, the event's id and its time (milliseconds; the bus's
/// own `time` has whole seconds) travel inside the detail.
fn envelope(tenant: &Tenant, id: &str, time_ms: u64, detail: &Value) -> Value {
    json!({ "tenant": tenant.as_str(), "event_id": id, "time_ms": time_ms, "data": detail })
}

// ---------------------------------------------------------------------------------------------

pub struct AwsEvents {
    events: aws_sdk_eventbridge::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    bus: String,
    log_group: String,
}

impl AwsEvents {
    pub fn new(
        events: aws_sdk_eventbridge::Client,
        logs: aws_sdk_cloudwatchlogs::Client,
        bus: impl Into<String>,
        log_group: impl Into<String>,
    ) -> Self {
        AwsEvents {
            events,
            logs,
            bus: bus.into(),
            log_group: log_group.into(),
        }
    }
}

#[async_trait]
impl EventBus for AwsEvents {
    async fn publish(
        &self,
        tenant: &Tenant,
        detail_type: &str,
        detail: &Value,
    ) -> Result<Event, RuntimeError> {
        check_event(detail_type, detail)?;
        let id = new_id();
        let time_ms = now_millis();
        let out = self
            .events
            .put_events()
            .entries(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(EVENT_SOURCE)
                    .detail_type(detail_type)
                    .detail(envelope(tenant, &id, time_ms, detail).to_string())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| RuntimeError::backend("PutEvents", e))?;
        if out.failed_entry_count > 0 {
            let why = out
                .entries()
                .iter()
                .filter_map(|e| e.error_message.clone().or(e.error_code.clone()))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(RuntimeError::Rejected("the event", why));
        }
        Ok(Event {
            id,
            source: EVENT_SOURCE.into(),
            detail_type: detail_type.into(),
            detail: detail.clone(),
            time_ms,
        })
    }

    async fn recent(&self, tenant: &Tenant, limit: u32) -> Result<Vec<Event>, RuntimeError> {
        let limit = check_recent(limit)? as usize;
        // FilterLogEvents reads forward in time. To get the newest events of a busy day
        // without reading the whole day, read the last 5 minutes, then the hour, the 6 hours
        // and the day before them, and stop once there are enough. Bounded: at most 5 pages
        // per window. The tenant is filtered by CloudWatch Logs (a JSON pattern on the
        // envelope; tenant names are letters, digits and dashes) and checked again here.
        let now = now_millis();
        let pattern = format!("{{ $.detail.tenant = \"{}\" }}", tenant.as_str());
        let mut found: Vec<Event> = Vec::new();
        let mut end = now;
        for window_ms in [5 * 60_000, 3_600_000, 6 * 3_600_000, 24 * 3_600_000u64] {
            let start = now.saturating_sub(window_ms);
            let mut token = None;
            for _ in 0..5 {
                let out = self
                    .logs
                    .filter_log_events()
                    .log_group_name(&self.log_group)
                    .start_time(start as i64)
                    .end_time(end as i64)
                    .filter_pattern(&pattern)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| RuntimeError::backend("FilterLogEvents", e))?;
                found.extend(out.events().iter().filter_map(|e| tenant_event(tenant, e)));
                token = out.next_token;
                if token.is_none() {
                    break;
                }
            }
            if found.len() >= limit {
                break;
            }
            end = start;
        }
        // An event stamped exactly at a window's edge is in both windows.
        let mut seen = std::collections::HashSet::new();
        found.retain(|e| seen.insert(e.id.clone()));
        found.sort_by_key(|e| std::cmp::Reverse(e.time_ms));
        found.truncate(limit);
        Ok(found)
    }
}

/// One of `tenant`'s events from its log line (the rule delivers every agentbus event of the
/// workspace into the log group).
fn tenant_event(
    tenant: &Tenant,
    e: &aws_sdk_cloudwatchlogs::types::FilteredLogEvent,
) -> Option<Event> {
    let v = serde_json::from_str::<Value>(e.message()?).ok()?;
    let d = &v["detail"];
    if d["tenant"] != tenant.as_str() || v["source"] != EVENT_SOURCE {
        return None;
    }
    Some(Event {
        id: d["event_id"].as_str().unwrap_or_default().to_string(),
        source: EVENT_SOURCE.into(),
        detail_type: v["detail-type"].as_str().unwrap_or_default().to_string(),
        detail: d["data"].clone(),
        time_ms: e.timestamp.unwrap_or(0).max(0) as u64,
    })
}

// ---------------------------------------------------------------------------------------------

pub struct SqliteEvents {
    pool: SqlitePool,
}

impl SqliteEvents {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteEvents { pool }
    }
}

#[async_trait]
impl EventBus for SqliteEvents {
    async fn publish(
        &self,
        tenant: &Tenant,
        detail_type: &str,
        detail: &Value,
    ) -> Result<Event, RuntimeError> {
        check_event(detail_type, detail)?;
        let ev = Event {
            id: new_id(),
            source: EVENT_SOURCE.into(),
            detail_type: detail_type.into(),
            detail: detail.clone(),
            time_ms: now_millis(),
        };
        sqlx::query(
            "INSERT INTO events (id, tenant, detail_type, detail, time_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&ev.id)
        .bind(tenant.as_str())
        .bind(&ev.detail_type)
        .bind(ev.detail.to_string())
        .bind(ev.time_ms as i64)
        .execute(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("insert event", e))?;
        Ok(ev)
    }

    async fn recent(&self, tenant: &Tenant, limit: u32) -> Result<Vec<Event>, RuntimeError> {
        let limit = check_recent(limit)?;
        let rows = sqlx::query(
            "SELECT id, detail_type, detail, time_ms FROM events WHERE tenant = ?
             ORDER BY time_ms DESC, rowid DESC LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("select events", e))?;
        Ok(rows
            .iter()
            .map(|r| Event {
                id: r.get("id"),
                source: EVENT_SOURCE.into(),
                detail_type: r.get("detail_type"),
                detail: serde_json::from_str(&r.get::<String, _>("detail")).unwrap_or(Value::Null),
                time_ms: r.get::<i64, _>("time_ms") as u64,
            })
            .collect())
    }
}
