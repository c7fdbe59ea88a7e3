//! The timeline: an append-only record of what the agents did, in the sweeper's format
//! (`ts`, `agent`, `task_id`, `action`, `summary`, `artifacts`, `refs`, `metrics`).
//!
//! On AWS every record is one JSON object in the timeline bucket under
//! `tenants/{tenant}/timeline/{ts}_{agent}_{id}.json`, where `ts` is RFC 3339 UTC with
//! milliseconds: keys sort by time, so a time range is a key range (`2026-11` is a prefix
//! scan of a month) and the agent filter needs no reads. Embedded, the records are rows of a
//! SQLite table with the same key.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};
use tier_xs::runtime::kv::{decode_cursor, encode_cursor};
use tier_xs::runtime::{RuntimeError, Tenant, check_name, now_millis, page_limit};

use super::artifacts::check_key;

pub const MAX_SUMMARY_BYTES: usize = 4096;
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
pub const MAX_ARTIFACTS: usize = 50;
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;
/// Records read from S3 at once for one query page.
const GET_CONCURRENCY: usize = 8;

/// What an agent appends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NewRecord {
    /// Who acted: 1-64 of lowercase letters, digits and '-' (e.g. `conductor`).
    pub agent: String,
    /// The task the record belongs to: 1-128 of letters, digits, '-', '_', '.'.
    pub task_id: String,
    /// What was done, one word: 1-64 of letters, digits, '-', '_', '.' (e.g. `plan`).
    pub action: String,
    /// What happened, in prose: 1-4096 bytes of text.
    pub summary: String,
    /// Artifact keys the action produced or used.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Links by kind, e.g. `{"prs": ["..."], "docs": ["..."]}`.
    #[serde(default)]
    pub refs: BTreeMap<String, Vec<String>>,
    /// Numbers worth keeping, e.g. `{"cost_delta_monthly": 1.5}`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// A stored record: the appended fields, its time and its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TimelineRecord {
    pub id: String,
    /// RFC 3339 UTC with milliseconds, set by the store when appending.
    pub ts: String,
    #[serde(flatten)]
    pub record: NewRecord,
}

#[derive(Clone, Debug, Default)]
pub struct TimelineQuery {
    /// From this time on (RFC 3339, inclusive).
    pub from: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    pub to: Option<String>,
    pub agent: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TimelinePage {
    pub records: Vec<TimelineRecord>,
    pub next_cursor: Option<String>,
}

fn check_word(what: &'static str, s: &str, max: usize) -> Result<(), RuntimeError> {
    check_name(what, s, max, |c| {
        c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
    })
}

fn validate(r: &NewRecord) -> Result<(), RuntimeError> {
    // The agent is part of the key: lowercase, no separators.
    check_name("agent", &r.agent, 64, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })?;
    check_word("task_id", &r.task_id, 128)?;
    check_word("action", &r.action, 64)?;
    if r.summary.trim().is_empty() || r.summary.len() > MAX_SUMMARY_BYTES {
        return Err(RuntimeError::invalid(
            "summary",
            format!("use 1-{MAX_SUMMARY_BYTES} bytes of text"),
        ));
    }
    if let Some(c) = r
        .summary
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        return Err(RuntimeError::invalid(
            "summary",
            format!("contains the control character {c:?}"),
        ));
    }
    if r.artifacts.len() > MAX_ARTIFACTS {
        return Err(RuntimeError::invalid(
            "artifacts",
            format!("at most {MAX_ARTIFACTS}"),
        ));
    }
    for a in &r.artifacts {
        check_key(a)?;
    }
    for (k, links) in &r.refs {
        check_word("refs key", k, 32)?;
        for l in links {
            check_name("ref", l, 2048, |_| true)?;
        }
    }
    for (k, v) in &r.metrics {
        check_word("metrics key", k, 64)?;
        if !v.is_finite() {
            return Err(RuntimeError::invalid(
                "metrics",
                format!("{k} is not a finite number"),
            ));
        }
    }
    let size = serde_json::to_vec(r).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_RECORD_BYTES {
        return Err(RuntimeError::TooLarge {
            size,
            max: MAX_RECORD_BYTES,
        });
    }
    Ok(())
}

/// RFC 3339 UTC with exactly three fractional digits (fixed width: sorts as text).
pub fn ts_of(millis: u64) -> String {
    let secs = (millis / 1000) as i64;
    let ms = millis % 1000;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]"
            ))
            .ok()
        })
        .map(|s| format!("{s}.{ms:03}Z"))
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
}

/// Normalises a caller's time bound to the key's form.
pub(crate) fn bound(what: &'static str, t: &str) -> Result<String, RuntimeError> {
    let parsed = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|_| RuntimeError::invalid(what, format!("{t:?} is not an RFC 3339 time")))?;
    let ms = parsed.unix_timestamp_nanos() / 1_000_000;
    if ms < 0 {
        return Err(RuntimeError::invalid(what, "before 1970"));
    }
    Ok(ts_of(ms as u64))
}

fn check_limit(limit: Option<u32>) -> Result<u32, RuntimeError> {
    page_limit(limit, DEFAULT_LIMIT, MAX_LIMIT)
}

fn new_id() -> Result<String, RuntimeError> {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).map_err(|e| RuntimeError::Backend {
        op: "random id",
        message: e.to_string(),
    })?;
    Ok(hex::encode(b))
}

/// The sortable key of a record, relative to the tenant's timeline.
fn record_key(ts: &str, agent: &str, id: &str) -> String {
    format!("{ts}_{agent}_{id}.json")
}

/// (ts, agent) of a record key.
fn parse_key(key: &str) -> Option<(&str, &str)> {
    let stem = key.strip_suffix(".json")?;
    let (ts, rest) = stem.split_once('_')?;
    let (agent, _id) = rest.rsplit_once('_')?;
    Some((ts, agent))
}

/// Validated query bounds: (from, to, agent, after-key, limit).
struct Range {
    from: Option<String>,
    to: Option<String>,
    agent: Option<String>,
    after: Option<String>,
    limit: u32,
}

impl Range {
    fn new(q: &TimelineQuery) -> Result<Range, RuntimeError> {
        if let Some(a) = &q.agent {
            check_name("agent", a, 64, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
            })?;
        }
        Ok(Range {
            from: q.from.as_deref().map(|t| bound("from", t)).transpose()?,
            to: q.to.as_deref().map(|t| bound("to", t)).transpose()?,
            agent: q.agent.clone(),
            after: q.cursor.as_deref().map(decode_cursor).transpose()?,
            limit: check_limit(q.limit)?,
        })
    }

    /// Whether a key is past the range (listing can stop).
    fn past(&self, key: &str) -> bool {
        self.to.as_deref().is_some_and(|to| key >= to)
    }

    fn matches(&self, key: &str) -> bool {
        match parse_key(key) {
            Some((ts, agent)) => {
                self.from.as_deref().is_none_or(|f| ts >= f)
                    && self.to.as_deref().is_none_or(|t| ts < t)
                    && self.agent.as_deref().is_none_or(|a| a == agent)
            }
            None => false,
        }
    }

    /// Where listing starts: after the cursor, or at the start of the range.
    fn start_after(&self) -> Option<String> {
        match (&self.after, &self.from) {
            (Some(a), _) => Some(a.clone()),
            // Every key of `from` sorts after `from` itself ("..Z" < "..Z_").
            (None, Some(f)) => Some(f.clone()),
            (None, None) => None,
        }
    }
}

#[async_trait]
pub trait TimelineStore: Send + Sync {
    /// Appends a record; the store sets its time and id.
    async fn append(&self, tenant: &Tenant, r: &NewRecord) -> Result<TimelineRecord, RuntimeError>;
    /// Records in time order, filtered by time range and agent, a page at a time.
    async fn query(&self, tenant: &Tenant, q: &TimelineQuery)
    -> Result<TimelinePage, RuntimeError>;
    /// The names of the records (`{ts}_{agent}_{id}`) from the time `from` on (as [`ts_of`]
    /// writes it) that start with `prefix`, after the name `after`, in time order, without
    /// reading the records: at most `limit`, and whether more follow.
    async fn names(
        &self,
        tenant: &Tenant,
        from: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, bool), RuntimeError>;
    /// The record of a name [`TimelineStore::names`] gives; `None` when there is none.
    async fn get(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Option<TimelineRecord>, RuntimeError>;
}

/// The key of a record's name, if it is a record's name.
fn key_of_name(name: &str) -> Option<String> {
    let key = format!("{name}.json");
    (!name.contains('/') && parse_key(&key).is_some()).then_some(key)
}

/// Where a listing of names starts: after `after`, else at `from` (every key of a time sorts
/// after the time itself).
fn names_start(from: &str, after: Option<&str>) -> String {
    match after {
        Some(a) => format!("{a}.json").max(from.to_string()),
        None => from.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// S3

pub struct S3Timeline {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Timeline {
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str) -> Self {
        S3Timeline {
            s3,
            bucket: bucket.to_string(),
        }
    }

    fn root(tenant: &Tenant) -> String {
        format!("tenants/{tenant}/timeline/")
    }

    /// The record under the object key `key`; `None` when there is none.
    async fn read(&self, key: String) -> Result<Option<TimelineRecord>, RuntimeError> {
        let out = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(RuntimeError::backend("S3 GetObject", e)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| RuntimeError::backend("S3 GetObject body", e))?
            .into_bytes();
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| RuntimeError::backend("decode timeline record", e))
    }
}

#[async_trait]
impl TimelineStore for S3Timeline {
    async fn append(&self, tenant: &Tenant, r: &NewRecord) -> Result<TimelineRecord, RuntimeError> {
        validate(r)?;
        let rec = TimelineRecord {
            id: new_id()?,
            ts: ts_of(now_millis()),
            record: r.clone(),
        };
        let body = serde_json::to_vec(&rec).map_err(|e| RuntimeError::backend("encode", e))?;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(format!(
                "{}{}",
                Self::root(tenant),
                record_key(&rec.ts, &r.agent, &rec.id)
            ))
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map_err(|e| RuntimeError::backend("S3 PutObject", e))?;
        Ok(rec)
    }

    async fn query(
        &self,
        tenant: &Tenant,
        q: &TimelineQuery,
    ) -> Result<TimelinePage, RuntimeError> {
        let range = Range::new(q)?;
        let root = Self::root(tenant);
        let mut keys: Vec<String> = Vec::new();
        let mut start_after = range.start_after().map(|k| format!("{root}{k}"));
        let mut more = false;
        // List (cheap: keys only) until a page of matches, the end of the range, or the end.
        'listing: loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&root)
                .set_start_after(start_after.clone())
                .max_keys(1000)
                .send()
                .await
                .map_err(|e| RuntimeError::backend("S3 ListObjectsV2", e))?;
            for o in out.contents() {
                let Some(key) = o.key().and_then(|k| k.strip_prefix(&root)) else {
                    continue;
                };
                if range.past(key) {
                    break 'listing;
                }
                if range.matches(key) {
                    if keys.len() == range.limit as usize {
                        more = true;
                        break 'listing;
                    }
                    keys.push(key.to_string());
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            start_after = out
                .contents()
                .last()
                .and_then(|o| o.key())
                .map(str::to_string);
        }
        // One GET per record, a few at a time, in key order.
        let records: Vec<TimelineRecord> = futures::stream::iter(keys.clone())
            .map(|k| {
                let key = format!("{root}{k}");
                async move {
                    self.read(key).await?.ok_or_else(|| RuntimeError::Backend {
                        op: "S3 GetObject",
                        message: format!("{k}: gone while listed"),
                    })
                }
            })
            .buffered(GET_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(TimelinePage {
            next_cursor: if more {
                keys.last().map(|k| encode_cursor(k))
            } else {
                None
            },
            records,
        })
    }

    async fn names(
        &self,
        tenant: &Tenant,
        from: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, bool), RuntimeError> {
        let root = Self::root(tenant);
        let mut start_after = Some(format!("{root}{}", names_start(from, after)));
        let mut names = Vec::new();
        loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{root}{prefix}"))
                .set_start_after(start_after.take())
                .max_keys(1000)
                .send()
                .await
                .map_err(|e| RuntimeError::backend("S3 ListObjectsV2", e))?;
            for key in out.contents().iter().filter_map(|o| o.key()) {
                let Some(name) = key
                    .strip_prefix(&root)
                    .and_then(|k| k.strip_suffix(".json"))
                else {
                    continue;
                };
                if key_of_name(name).is_none() {
                    continue;
                }
                if names.len() == limit as usize {
                    return Ok((names, true));
                }
                names.push(name.to_string());
            }
            if out.is_truncated() != Some(true) {
                return Ok((names, false));
            }
            start_after = out
                .contents()
                .last()
                .and_then(|o| o.key())
                .map(str::to_string);
        }
    }

    async fn get(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Option<TimelineRecord>, RuntimeError> {
        let Some(key) = key_of_name(name) else {
            return Ok(None);
        };
        self.read(format!("{}{key}", Self::root(tenant))).await
    }
}

// ---------------------------------------------------------------------------------------
// Embedded

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS timeline (
    tenant TEXT NOT NULL,
    key    TEXT NOT NULL,
    agent  TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
"#;

pub struct EmbeddedTimeline {
    pool: SqlitePool,
}

impl EmbeddedTimeline {
    pub async fn open(pool: SqlitePool) -> Result<Self, RuntimeError> {
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| RuntimeError::backend("create schema", e))?;
        Ok(EmbeddedTimeline { pool })
    }
}

#[async_trait]
impl TimelineStore for EmbeddedTimeline {
    async fn append(&self, tenant: &Tenant, r: &NewRecord) -> Result<TimelineRecord, RuntimeError> {
        validate(r)?;
        let rec = TimelineRecord {
            id: new_id()?,
            ts: ts_of(now_millis()),
            record: r.clone(),
        };
        let body = serde_json::to_string(&rec).map_err(|e| RuntimeError::backend("encode", e))?;
        sqlx::query("INSERT INTO timeline (tenant, key, agent, record) VALUES (?, ?, ?, ?)")
            .bind(tenant.as_str())
            .bind(record_key(&rec.ts, &r.agent, &rec.id))
            .bind(&r.agent)
            .bind(body)
            .execute(&self.pool)
            .await
            .map_err(|e| RuntimeError::backend("timeline append", e))?;
        Ok(rec)
    }

    async fn query(
        &self,
        tenant: &Tenant,
        q: &TimelineQuery,
    ) -> Result<TimelinePage, RuntimeError> {
        let range = Range::new(q)?;
        let rows = sqlx::query(
            "SELECT key, record FROM timeline
             WHERE tenant = ? AND key > ? AND (? IS NULL OR key < ?) AND (? IS NULL OR agent = ?)
             ORDER BY key LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(range.start_after().unwrap_or_default())
        .bind(range.to.as_deref())
        .bind(range.to.as_deref())
        .bind(range.agent.as_deref())
        .bind(range.agent.as_deref())
        .bind(i64::from(range.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("timeline query", e))?;
        let mut records = Vec::new();
        let mut last_key = None;
        let mut more = false;
        for row in rows {
            let key: String = row.get("key");
            if !range.matches(&key) {
                continue;
            }
            if records.len() == range.limit as usize {
                more = true;
                break;
            }
            let body: String = row.get("record");
            records.push(
                serde_json::from_str(&body)
                    .map_err(|e| RuntimeError::backend("decode timeline record", e))?,
            );
            last_key = Some(key);
        }
        Ok(TimelinePage {
            next_cursor: if more {
                last_key.map(|k| encode_cursor(&k))
            } else {
                None
            },
            records,
        })
    }

    async fn names(
        &self,
        tenant: &Tenant,
        from: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, bool), RuntimeError> {
        let rows = sqlx::query(
            "SELECT key FROM timeline WHERE tenant = ? AND key > ? AND instr(key, ?) = 1
             ORDER BY key LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(names_start(from, after))
        .bind(prefix)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("timeline names", e))?;
        let mut names: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                let key: String = r.get("key");
                key.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        let more = names.len() > limit as usize;
        names.truncate(limit as usize);
        Ok((names, more))
    }

    async fn get(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Option<TimelineRecord>, RuntimeError> {
        let Some(key) = key_of_name(name) else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT record FROM timeline WHERE tenant = ? AND key = ?")
            .bind(tenant.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| RuntimeError::backend("timeline read", e))?;
        row.map(|r| {
            serde_json::from_str(&r.get::<String, _>("record"))
                .map_err(|e| RuntimeError::backend("decode timeline record", e))
        })
        .transpose()
    }
}
