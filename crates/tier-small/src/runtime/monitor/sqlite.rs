//! The embedded event monitor: SQLite tables beside the extra-small ones, and a feed that
//! follows the extra-small event log (every event the embedded server publishes) with a
//! checkpoint, so each event is recorded once even across restarts.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{Row, SqlitePool};
use tier_xs::runtime::{EVENT_SOURCE, RuntimeError, Tenant};
use tokio_util::sync::CancellationToken;

use super::{
    CheckedQuery, CountRow, EventStore, Monitor, MonitoredEvent, Outcome, Rule, StoredSubscription,
    Subscription, apply_enabled, apply_outcome, priority_of,
};
use crate::monitoring::events::RETENTION_DAYS;
use crate::runtime::timeline::ts_of;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS monitor_events (
    event_id    TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    source      TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    priority    TEXT NOT NULL,
    ts_id       TEXT NOT NULL,
    time        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    dispatched  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS monitor_events_by_time ON monitor_events (tenant, ts_id);
CREATE INDEX IF NOT EXISTS monitor_events_undispatched ON monitor_events (ts_id)
    WHERE dispatched = 0;
CREATE TABLE IF NOT EXISTS monitor_rules (
    tenant TEXT NOT NULL,
    name   TEXT NOT NULL,
    rule   TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS monitor_subscriptions (
    tenant          TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    subscription    TEXT NOT NULL,
    secret          TEXT NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS monitor_feed (
    name    TEXT PRIMARY KEY,
    checked INTEGER NOT NULL
);
"#;

pub struct SqliteEventStore {
    pool: SqlitePool,
}

impl SqliteEventStore {
    /// Reads a subscription, changes it and writes it back, one writer at a time (inside a
    /// transaction); `None` when the tenant has no such subscription.
    async fn change_subscription(
        &self,
        tenant: &Tenant,
        id: &str,
        change: impl FnOnce(&mut Subscription),
    ) -> Result<Option<Subscription>, RuntimeError> {
        let mut tx = self.pool.begin().await.map_err(db("begin"))?;
        let row = sqlx::query(
            "SELECT subscription FROM monitor_subscriptions WHERE tenant = ? AND subscription_id = ?",
        )
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("select subscription"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut s = serde_json::from_str::<Subscription>(&row.get::<String, _>("subscription"))
            .map_err(|e| RuntimeError::backend("decode subscription", e))?;
        change(&mut s);
        let doc = serde_json::to_string(&s).map_err(|e| RuntimeError::backend("encode", e))?;
        sqlx::query(
            "UPDATE monitor_subscriptions SET subscription = ? WHERE tenant = ? AND subscription_id = ?",
        )
        .bind(doc)
        .bind(tenant.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db("update subscription"))?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(Some(s))
    }

    pub async fn open(pool: SqlitePool) -> Result<Self, RuntimeError> {
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| RuntimeError::backend("create schema", e))?;
        Ok(SqliteEventStore { pool })
    }
}

fn event_of(r: &sqlx::sqlite::SqliteRow) -> MonitoredEvent {
    MonitoredEvent {
        event_id: r.get("event_id"),
        tenant: r.get("tenant"),
        source: r.get("source"),
        detail_type: r.get("detail_type"),
        priority: r.get("priority"),
        time: r.get("time"),
        detail: serde_json::from_str(&r.get::<String, _>("detail")).unwrap_or(Value::Null),
    }
}

fn db(op: &'static str) -> impl Fn(sqlx::Error) -> RuntimeError {
    move |e| RuntimeError::backend(op, e)
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn record(&self, e: &MonitoredEvent, dispatched: bool) -> Result<bool, RuntimeError> {
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO monitor_events
             (event_id, tenant, source, detail_type, priority, ts_id, time, detail, dispatched)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.event_id)
        .bind(&e.tenant)
        .bind(&e.source)
        .bind(&e.detail_type)
        .bind(&e.priority)
        .bind(e.ts_id())
        .bind(&e.time)
        .bind(e.detail.to_string())
        .bind(dispatched)
        .execute(&self.pool)
        .await
        .map_err(db("insert event"))?
        .rows_affected()
            == 1;
        if inserted {
            return Ok(!dispatched);
        }
        let done: bool =
            sqlx::query_scalar("SELECT dispatched FROM monitor_events WHERE event_id = ?")
                .bind(&e.event_id)
                .fetch_one(&self.pool)
                .await
                .map_err(db("select event"))?;
        Ok(!done)
    }

    async fn mark_dispatched(&self, e: &MonitoredEvent) -> Result<(), RuntimeError> {
        sqlx::query("UPDATE monitor_events SET dispatched = 1 WHERE event_id = ?")
            .bind(&e.event_id)
            .execute(&self.pool)
            .await
            .map_err(db("update event"))?;
        Ok(())
    }

    async fn undispatched(&self, max: usize) -> Result<Vec<MonitoredEvent>, RuntimeError> {
        let rows = sqlx::query(
            "SELECT event_id, tenant, source, detail_type, priority, time, detail
             FROM monitor_events WHERE dispatched = 0 ORDER BY ts_id LIMIT ?",
        )
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("select undispatched events"))?;
        Ok(rows.iter().map(event_of).collect())
    }

    async fn get(
        &self,
        tenant: &Tenant,
        event_id: &str,
    ) -> Result<Option<MonitoredEvent>, RuntimeError> {
        let row = sqlx::query("SELECT * FROM monitor_events WHERE event_id = ? AND tenant = ?")
            .bind(event_id)
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("select event"))?;
        Ok(row.as_ref().map(event_of))
    }

    async fn query(
        &self,
        tenant: &Tenant,
        q: &CheckedQuery,
    ) -> Result<Vec<MonitoredEvent>, RuntimeError> {
        let rows = sqlx::query(
            "SELECT * FROM monitor_events
             WHERE tenant = ? AND ts_id >= ? AND ts_id < ?
               AND (? IS NULL OR source = ?)
               AND (? IS NULL OR detail_type = ?)
               AND (? IS NULL OR priority = ?)
             ORDER BY ts_id DESC LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(&q.from)
        .bind(&q.to)
        .bind(&q.source)
        .bind(&q.source)
        .bind(&q.detail_type)
        .bind(&q.detail_type)
        .bind(&q.priority)
        .bind(&q.priority)
        .bind(i64::from(q.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db("select events"))?;
        Ok(rows.iter().map(event_of).collect())
    }

    async fn count_rows(
        &self,
        tenant: &Tenant,
        from: &str,
        to: &str,
        max: usize,
    ) -> Result<(Vec<CountRow>, bool), RuntimeError> {
        let rows = sqlx::query(
            "SELECT time, source, detail_type, priority FROM monitor_events
             WHERE tenant = ? AND ts_id >= ? AND ts_id < ? ORDER BY ts_id LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(from)
        .bind(to)
        .bind(max as i64 + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db("count events"))?;
        let more = rows.len() > max;
        Ok((
            rows.iter()
                .take(max)
                .map(|r| CountRow {
                    time: r.get("time"),
                    source: r.get("source"),
                    detail_type: r.get("detail_type"),
                    priority: r.get("priority"),
                })
                .collect(),
            more,
        ))
    }

    async fn put_rule(&self, tenant: &Tenant, rule: &Rule) -> Result<(), RuntimeError> {
        let doc = serde_json::to_string(rule).map_err(|e| RuntimeError::backend("encode", e))?;
        sqlx::query("INSERT OR REPLACE INTO monitor_rules (tenant, name, rule) VALUES (?, ?, ?)")
            .bind(tenant.as_str())
            .bind(&rule.name)
            .bind(doc)
            .execute(&self.pool)
            .await
            .map_err(db("put rule"))?;
        Ok(())
    }

    async fn rules(&self, tenant: &Tenant) -> Result<Vec<Rule>, RuntimeError> {
        let rows = sqlx::query("SELECT rule FROM monitor_rules WHERE tenant = ? ORDER BY name")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db("select rules"))?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(&r.get::<String, _>("rule")).ok())
            .collect())
    }

    async fn delete_rule(&self, tenant: &Tenant, name: &str) -> Result<bool, RuntimeError> {
        let r = sqlx::query("DELETE FROM monitor_rules WHERE tenant = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db("delete rule"))?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_subscription(
        &self,
        tenant: &Tenant,
        s: &StoredSubscription,
    ) -> Result<(), RuntimeError> {
        let doc = serde_json::to_string(&s.subscription)
            .map_err(|e| RuntimeError::backend("encode", e))?;
        sqlx::query(
            "INSERT OR REPLACE INTO monitor_subscriptions (tenant, subscription_id, subscription, secret)
             VALUES (?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(&s.subscription.subscription_id)
        .bind(doc)
        .bind(&s.secret)
        .execute(&self.pool)
        .await
        .map_err(db("put subscription"))?;
        Ok(())
    }

    async fn subscriptions(
        &self,
        tenant: &Tenant,
    ) -> Result<Vec<StoredSubscription>, RuntimeError> {
        let rows = sqlx::query(
            "SELECT subscription, secret FROM monitor_subscriptions WHERE tenant = ?
             ORDER BY subscription_id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db("select subscriptions"))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let s: Subscription =
                    serde_json::from_str(&r.get::<String, _>("subscription")).ok()?;
                Some(StoredSubscription {
                    subscription: s,
                    secret: r.get("secret"),
                })
            })
            .collect())
    }

    async fn delete_subscription(&self, tenant: &Tenant, id: &str) -> Result<bool, RuntimeError> {
        let r = sqlx::query(
            "DELETE FROM monitor_subscriptions WHERE tenant = ? AND subscription_id = ?",
        )
        .bind(tenant.as_str())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("delete subscription"))?;
        Ok(r.rows_affected() > 0)
    }

    async fn record_outcome(
        &self,
        tenant: &Tenant,
        id: &str,
        o: &Outcome,
    ) -> Result<(), RuntimeError> {
        // Deleted meanwhile: nothing to record.
        self.change_subscription(tenant, id, |s| apply_outcome(&mut s.stats, o))
            .await
            .map(|_| ())
    }

    async fn set_enabled(
        &self,
        tenant: &Tenant,
        id: &str,
        enabled: bool,
        note: Option<&str>,
    ) -> Result<Option<Subscription>, RuntimeError> {
        self.change_subscription(tenant, id, |s| apply_enabled(s, enabled, note))
            .await
    }
}

/// Follows the extra-small `events` table (what the embedded server publishes) and feeds
/// each new row to the monitor. The checkpoint (last row id handled) is stored, so a restart
/// resumes where it stopped; recording is idempotent, so a crash between the two repeats
/// nothing.
pub struct LogFeed {
    pool: SqlitePool,
    monitor: Monitor,
    every: Duration,
}

const FEED: &str = "events";
const BATCH: i64 = 100;

impl LogFeed {
    pub fn new(pool: SqlitePool, monitor: Monitor) -> Self {
        LogFeed {
            pool,
            monitor,
            every: Duration::from_millis(250),
        }
    }

    /// Handles every row not handled yet; returns how many.
    pub async fn catch_up(&self) -> Result<usize, RuntimeError> {
        let mut handled = 0;
        loop {
            let checked: i64 =
                sqlx::query_scalar("SELECT checked FROM monitor_feed WHERE name = ?")
                    .bind(FEED)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db("select checkpoint"))?
                    .unwrap_or(0);
            let rows = sqlx::query(
                "SELECT rowid, id, tenant, detail_type, detail, time_ms FROM events
                 WHERE rowid > ? ORDER BY rowid LIMIT ?",
            )
            .bind(checked)
            .bind(BATCH)
            .fetch_all(&self.pool)
            .await
            .map_err(db("select events"))?;
            let Some(last) = rows.last().map(|r| r.get::<i64, _>("rowid")) else {
                return Ok(handled);
            };
            for r in &rows {
                let detail: Value =
                    serde_json::from_str(&r.get::<String, _>("detail")).unwrap_or(Value::Null);
                let e = MonitoredEvent {
                    event_id: r.get("id"),
                    tenant: r.get("tenant"),
                    source: EVENT_SOURCE.to_string(),
                    detail_type: r.get("detail_type"),
                    priority: priority_of(&detail),
                    time: ts_of(r.get::<i64, _>("time_ms").max(0) as u64),
                    detail,
                };
                self.monitor.ingest(&e).await?;
            }
            sqlx::query(
                "INSERT INTO monitor_feed (name, checked) VALUES (?, ?)
                 ON CONFLICT (name) DO UPDATE SET checked = excluded.checked",
            )
            .bind(FEED)
            .bind(last)
            .execute(&self.pool)
            .await
            .map_err(db("store checkpoint"))?;
            handled += rows.len();
        }
    }

    /// Removes recorded events older than the retention (DynamoDB's TTL does this on AWS).
    pub async fn prune(&self) -> Result<u64, RuntimeError> {
        let before =
            ts_of(tier_xs::runtime::now_millis().saturating_sub(RETENTION_DAYS * 86_400_000));
        Ok(sqlx::query("DELETE FROM monitor_events WHERE time < ?")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db("prune events"))?
            .rows_affected())
    }

    /// Runs until `stop` fires: first the deliveries a stop cut off, then the log.
    pub async fn run(self, stop: CancellationToken) {
        if let Err(e) = self.monitor.resume().await {
            tracing::warn!("event monitor: taking up undispatched events: {e}");
        }
        let mut pruned: Option<std::time::Instant> = None;
        loop {
            if let Err(e) = self.catch_up().await {
                tracing::warn!("event monitor: {e}");
            }
            if pruned.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
                pruned = Some(std::time::Instant::now());
                if let Err(e) = self.prune().await {
                    tracing::warn!("event monitor: {e}");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }
}
