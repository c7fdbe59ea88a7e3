//! Key-value store: get, set with TTL, compare-and-set by version, delete, list by prefix
//! with a cursor. Expired entries read as absent on every backend, whether or not the
//! backing store has swept them yet.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, Select};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::embedded::Direct;

use super::{RuntimeError, Tenant, check_name, now_secs};

/// DynamoDB items are at most 400 KB; the value gets what the key and attributes leave.
pub const MAX_VALUE_BYTES: usize = 350 * 1024;
pub const MAX_KEY_BYTES: usize = 512;
/// Applied when a caller gives no TTL.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;
/// The longest TTL accepted (one year).
pub const MAX_TTL_SECS: u64 = 365 * 24 * 3600;
pub const MAX_LIST_LIMIT: u32 = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KvEntry {
    pub key: String,
    pub value: String,
    /// Starts at 1 and grows with every write; the token for compare-and-set.
    pub version: u64,
    pub updated_at: u64,
    /// Epoch seconds after which the entry reads as absent.
    pub expires_at: Option<u64>,
}

/// One entry of a listing: its size in place of its value, so that a page costs no memory
/// for the values (a thousand 350 KiB values would be 350 MiB).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KvListed {
    pub key: String,
    /// The value's length in bytes (UTF-8).
    pub bytes: u64,
    pub version: u64,
    pub updated_at: u64,
    pub expires_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KvPage {
    pub entries: Vec<KvListed>,
    /// Pass back to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// How long an entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// [`DEFAULT_TTL_SECS`].
    Default,
    Seconds(u64),
    /// The entry lives until it is deleted.
    Never,
}

impl Ttl {
    /// When an entry written at `now` expires; `None` for never.
    fn expires_at(self, now: u64) -> Result<Option<u64>, RuntimeError> {
        let secs = match self {
            Ttl::Never => return Ok(None),
            Ttl::Default => DEFAULT_TTL_SECS,
            Ttl::Seconds(0) => {
                return Err(RuntimeError::invalid("ttl", "must be at least 1 second"));
            }
            Ttl::Seconds(s) if s > MAX_TTL_SECS => {
                return Err(RuntimeError::invalid(
                    "ttl",
                    format!("at most {MAX_TTL_SECS} seconds (a year)"),
                ));
            }
            Ttl::Seconds(s) => s,
        };
        Ok(Some(now + secs))
    }
}

/// What a compare-and-set expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist (or be expired).
    Absent,
    /// The entry must be at this version.
    Version(u64),
}

pub fn check_key(key: &str) -> Result<(), RuntimeError> {
    check_name("key", key, MAX_KEY_BYTES, |_| true)
}

pub fn check_value(value: &str) -> Result<(), RuntimeError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(RuntimeError::TooLarge {
            size: value.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<(), RuntimeError> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_name("prefix", prefix, MAX_KEY_BYTES, |_| true)
}

fn check_limit(limit: u32) -> Result<u32, RuntimeError> {
    super::page_limit(Some(limit), limit, MAX_LIST_LIMIT)
}

/// Cursors are opaque to callers: the hex of the last key returned.
pub fn encode_cursor(key: &str) -> String {
    hex::encode(key.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Result<String, RuntimeError> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| RuntimeError::invalid("cursor", "not a cursor this store returned"))
}

#[async_trait]
pub trait KvStore: Send + Sync {
    async fn get(&self, tenant: &Tenant, key: &str) -> Result<Option<KvEntry>, RuntimeError>;
    /// Writes an entry; with `expect`, only if the entry is as expected (otherwise
    /// [`RuntimeError::VersionConflict`]).
    async fn write(
        &self,
        tenant: &Tenant,
        key: &str,
        value: &str,
        ttl: Ttl,
        expect: Option<Expect>,
    ) -> Result<KvEntry, RuntimeError>;
    async fn set(
        &self,
        tenant: &Tenant,
        key: &str,
        value: &str,
        ttl: Ttl,
    ) -> Result<KvEntry, RuntimeError> {
        self.write(tenant, key, value, ttl, None).await
    }
    /// Writes only if the entry is as expected; otherwise [`RuntimeError::VersionConflict`].
    async fn compare_and_set(
        &self,
        tenant: &Tenant,
        key: &str,
        value: &str,
        expect: Expect,
        ttl: Ttl,
    ) -> Result<KvEntry, RuntimeError> {
        self.write(tenant, key, value, ttl, Some(expect)).await
    }
    /// True when a live entry was deleted.
    async fn delete(&self, tenant: &Tenant, key: &str) -> Result<bool, RuntimeError>;
    async fn list(
        &self,
        tenant: &Tenant,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KvPage, RuntimeError>;
    /// Live entries of a tenant. A backend whose count reads every entry (DynamoDB bills a
    /// count by the bytes it reads) may answer with a count up to [`COUNT_MAX_AGE`] old.
    async fn count(&self, tenant: &Tenant) -> Result<u64, RuntimeError>;
}

fn conflict(key: &str, expect: Expect, found: Option<u64>) -> RuntimeError {
    RuntimeError::VersionConflict {
        key: key.to_string(),
        expected: match expect {
            Expect::Absent => "no entry".into(),
            Expect::Version(v) => format!("version {v}"),
        },
        found: match found {
            None => "no entry".into(),
            Some(v) => format!("version {v}"),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// DynamoDB: pk = "kv#{tenant}", sk = key; `expires_at` is the table's TTL attribute; `bytes`
// the value's length, so listings read it without the value.

/// The attribute holding a value's length in bytes.
const BYTES: &str = "bytes";

/// How old a tenant's KV count may be on DynamoDB. A count reads the tenant's whole partition
/// and is billed by its size (1,000 values of 350 KiB: about 44,000 read units), and every
/// dashboard asks for it every 10 s: counted at most once a minute per tenant, however many
/// dashboards and tokens ask.
pub const COUNT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

pub struct DynamoKv {
    client: aws_sdk_dynamodb::Client,
    table: String,
    count_max_age: std::time::Duration,
    /// Each tenant's last count and when it was made.
    counted: std::sync::Mutex<HashMap<String, (std::time::Instant, u64)>>,
    /// One count at a time per tenant: a caller that waited finds the count it waited for,
    /// and one tenant's long count never holds up another's.
    counting: std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl DynamoKv {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoKv {
            client,
            table: table.into(),
            count_max_age: COUNT_MAX_AGE,
            counted: std::sync::Mutex::new(HashMap::new()),
            counting: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The same store, its counts at most `age` old (zero: every count reads the partition).
    pub fn with_count_max_age(mut self, age: std::time::Duration) -> Self {
        self.count_max_age = age;
        self
    }

    fn recent_count(&self, tenant: &Tenant) -> Option<u64> {
        let counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        counted
            .get(tenant.as_str())
            .filter(|(at, _)| at.elapsed() < self.count_max_age)
            .map(|(_, n)| *n)
    }

    /// Counts the tenant's live entries by reading its partition.
    async fn count_now(&self, tenant: &Tenant) -> Result<u64, RuntimeError> {
        let now = now_secs();
        let mut total = 0u64;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .filter_expression("attribute_not_exists(expires_at) OR expires_at > :now")
                .expression_attribute_values(":pk", Self::pk(tenant))
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| RuntimeError::backend("Query", e))?;
            total += out.count.max(0) as u64;
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(total);
            }
        }
    }

    fn pk(tenant: &Tenant) -> AttributeValue {
        AttributeValue::S(format!("kv#{tenant}"))
    }

    fn key(tenant: &Tenant, key: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_string(), Self::pk(tenant)),
            ("sk".to_string(), AttributeValue::S(key.to_string())),
        ])
    }

    fn entry(item: &HashMap<String, AttributeValue>) -> Option<KvEntry> {
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let n = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some(KvEntry {
            key: s("sk")?,
            value: s("value").unwrap_or_default(),
            version: n("version").unwrap_or(0),
            updated_at: n("updated_at").unwrap_or(0),
            expires_at: n("expires_at"),
        })
    }

    /// A listed item (projected without its value); `bytes` is `None` for an item written
    /// before sizes were stored.
    fn listed(item: &HashMap<String, AttributeValue>) -> Option<(KvListed, bool)> {
        let n = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let key = item.get("sk").and_then(|v| v.as_s().ok()).cloned()?;
        let bytes = n(BYTES);
        Some((
            KvListed {
                key,
                bytes: bytes.unwrap_or(0),
                version: n("version").unwrap_or(0),
                updated_at: n("updated_at").unwrap_or(0),
                expires_at: n("expires_at"),
            },
            bytes.is_none(),
        ))
    }

    fn live(e: &KvEntry, now: u64) -> bool {
        e.expires_at.is_none_or(|x| x > now)
    }
}

#[async_trait]
impl KvStore for DynamoKv {
    async fn get(&self, tenant: &Tenant, key: &str) -> Result<Option<KvEntry>, RuntimeError> {
        check_key(key)?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| RuntimeError::backend("GetItem", e))?;
        let now = now_secs();
        Ok(out
            .item
            .as_ref()
            .and_then(Self::entry)
            .filter(|e| Self::live(e, now)))
    }

    async fn write(
        &self,
        tenant: &Tenant,
        key: &str,
        value: &str,
        ttl: Ttl,
        expect: Option<Expect>,
    ) -> Result<KvEntry, RuntimeError> {
        check_key(key)?;
        check_value(value)?;
        let now = now_secs();
        let exp = ttl.expires_at(now)?;
        let n = |v: u64| AttributeValue::N(v.to_string());
        // An entry that never expires has no TTL attribute: DynamoDB's TTL skips such items.
        let update = match exp {
            Some(_) => {
                "SET #v = :v, #b = :b, #ver = if_not_exists(#ver, :zero) + :one, updated_at = :now, expires_at = :exp"
            }
            None => {
                "SET #v = :v, #b = :b, #ver = if_not_exists(#ver, :zero) + :one, updated_at = :now REMOVE expires_at"
            }
        };
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant, key)))
            .update_expression(update)
            .expression_attribute_names("#v", "value")
            .expression_attribute_names("#ver", "version")
            .expression_attribute_names("#b", BYTES)
            .expression_attribute_values(":v", AttributeValue::S(value.to_string()))
            .expression_attribute_values(":b", n(value.len() as u64))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew);
        if let Some(e) = exp {
            req = req.expression_attribute_values(":exp", n(e));
        }
        match expect {
            None => {}
            Some(Expect::Absent) => {
                req = req.condition_expression("attribute_not_exists(pk) OR expires_at <= :now");
            }
            Some(Expect::Version(v)) => {
                req = req
                    .condition_expression(
                        "#ver = :expected AND (attribute_not_exists(expires_at) OR expires_at > :now)",
                    )
                    .expression_attribute_values(":expected", n(v));
            }
        }
        match req.send().await {
            Ok(out) => out
                .attributes
                .as_ref()
                .and_then(Self::entry)
                .ok_or_else(|| RuntimeError::Backend {
                    op: "UpdateItem",
                    message: "no attributes returned".into(),
                }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception) =>
            {
                let found = self.get(tenant, key).await?.map(|e| e.version);
                Err(conflict(key, expect.unwrap_or(Expect::Absent), found))
            }
            Err(e) => Err(RuntimeError::backend("UpdateItem", e)),
        }
    }

    async fn delete(&self, tenant: &Tenant, key: &str) -> Result<bool, RuntimeError> {
        check_key(key)?;
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant, key)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| RuntimeError::backend("DeleteItem", e))?;
        let now = now_secs();
        Ok(out
            .attributes
            .as_ref()
            .and_then(Self::entry)
            .is_some_and(|e| Self::live(&e, now)))
    }

    async fn list(
        &self,
        tenant: &Tenant,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KvPage, RuntimeError> {
        check_prefix(prefix)?;
        let limit = check_limit(limit)?;
        let now = now_secs();
        let mut start = match cursor {
            Some(c) => {
                let last = decode_cursor(c)?;
                if !last.starts_with(prefix) {
                    return Err(RuntimeError::invalid("cursor", "belongs to another prefix"));
                }
                Some(Self::key(tenant, &last))
            }
            None => None,
        };
        let mut entries = Vec::new();
        // Expired entries are filtered out after DynamoDB's limit applies: keep reading until
        // the page is full or the range ends.
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", Self::pk(tenant))
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .filter_expression("attribute_not_exists(expires_at) OR expires_at > :now")
                // Sizes, not values: a page of large values costs no memory.
                .projection_expression("pk, sk, #b, #ver, updated_at, expires_at")
                .expression_attribute_names("#b", BYTES)
                .expression_attribute_names("#ver", "version")
                .set_exclusive_start_key(start.take())
                .limit((limit as usize - entries.len()) as i32);
            req = if prefix.is_empty() {
                req.key_condition_expression("pk = :pk")
            } else {
                req.key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_string()))
            };
            let out = req
                .send()
                .await
                .map_err(|e| RuntimeError::backend("Query", e))?;
            for (mut listed, unsized_) in out.items().iter().filter_map(Self::listed) {
                if unsized_ {
                    // Written before sizes were stored: read that one value for its size.
                    listed.bytes = self
                        .get(tenant, &listed.key)
                        .await?
                        .map_or(0, |e| e.value.len() as u64);
                }
                entries.push(listed);
            }
            match out.last_evaluated_key {
                Some(k) if entries.len() < limit as usize => start = Some(k),
                Some(_) => {
                    let next = entries.last().map(|e| encode_cursor(&e.key));
                    return Ok(KvPage {
                        entries,
                        next_cursor: next,
                    });
                }
                None => {
                    return Ok(KvPage {
                        entries,
                        next_cursor: None,
                    });
                }
            }
        }
    }

    async fn count(&self, tenant: &Tenant) -> Result<u64, RuntimeError> {
        if let Some(n) = self.recent_count(tenant) {
            return Ok(n);
        }
        let turn = self
            .counting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.as_str().to_string())
            .or_default()
            .clone();
        let _one = turn.lock().await;
        if let Some(n) = self.recent_count(tenant) {
            return Ok(n);
        }
        let n = self.count_now(tenant).await?;
        self.counted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.as_str().to_string(), (std::time::Instant::now(), n));
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite: one row per (tenant, key), through statements run on the calling thread
// ([`Direct`]: the hot path of the embedded server).

pub struct SqliteKv {
    db: Direct,
}

impl SqliteKv {
    pub fn new(db: Direct) -> Self {
        SqliteKv { db }
    }

    fn entry(row: &rusqlite::Row) -> rusqlite::Result<KvEntry> {
        Ok(KvEntry {
            key: row.get("key")?,
            value: row.get("value")?,
            version: row.get::<_, i64>("version")? as u64,
            updated_at: row.get::<_, i64>("updated_at")? as u64,
            expires_at: row.get::<_, Option<i64>>("expires_at")?.map(|v| v as u64),
        })
    }

    fn listed(row: &rusqlite::Row) -> rusqlite::Result<KvListed> {
        Ok(KvListed {
            key: row.get("key")?,
            bytes: row.get::<_, i64>("bytes")? as u64,
            version: row.get::<_, i64>("version")? as u64,
            updated_at: row.get::<_, i64>("updated_at")? as u64,
            expires_at: row.get::<_, Option<i64>>("expires_at")?.map(|v| v as u64),
        })
    }
}

#[async_trait]
impl KvStore for SqliteKv {
    async fn get(&self, tenant: &Tenant, key: &str) -> Result<Option<KvEntry>, RuntimeError> {
        check_key(key)?;
        let (tenant, key) = (tenant.as_str().to_owned(), key.to_owned());
        let now = now_secs() as i64;
        self.db
            .read("select", move |c| {
                c.prepare_cached(
                    "SELECT key, value, version, updated_at, expires_at FROM kv
                     WHERE tenant = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                )?
                .query_row(params![tenant, key, now], Self::entry)
                .optional()
            })
            .await
    }

    /// One statement per write, so SQLite takes the write lock up front (a read-then-write
    /// transaction can fail with SQLITE_BUSY under concurrent writers instead of waiting).
    async fn write(
        &self,
        tenant: &Tenant,
        key: &str,
        value: &str,
        ttl: Ttl,
        expect: Option<Expect>,
    ) -> Result<KvEntry, RuntimeError> {
        check_key(key)?;
        check_value(value)?;
        let now = now_secs();
        let exp = ttl.expires_at(now)?;
        let sql = match expect {
            None => {
                "INSERT INTO kv (tenant, key, value, version, updated_at, expires_at) VALUES (?1, ?2, ?3, 1, ?4, ?5)
                 ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, version = kv.version + 1,
                   updated_at = excluded.updated_at, expires_at = excluded.expires_at
                 RETURNING version"
            }
            // Only when absent or expired.
            Some(Expect::Absent) => {
                "INSERT INTO kv (tenant, key, value, version, updated_at, expires_at) VALUES (?1, ?2, ?3, 1, ?4, ?5)
                 ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, version = kv.version + 1,
                   updated_at = excluded.updated_at, expires_at = excluded.expires_at
                 WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?4
                 RETURNING version"
            }
            // Only a live entry at exactly that version.
            Some(Expect::Version(_)) => {
                "UPDATE kv SET value = ?3, version = version + 1, updated_at = ?4, expires_at = ?5
                 WHERE tenant = ?1 AND key = ?2 AND version = ?6 AND (expires_at IS NULL OR expires_at > ?4)
                 RETURNING version"
            }
        };
        let expected = match expect {
            Some(Expect::Version(v)) => v as i64,
            _ => 0,
        };
        let args = (
            tenant.as_str().to_owned(),
            key.to_owned(),
            value.to_owned(),
            now as i64,
            exp.map(|e| e as i64),
            expected,
        );
        let version = self
            .db
            .write("upsert", move |c| {
                let mut stmt = c.prepare_cached(sql)?;
                let (t, k, v, now, exp, expected) = &args;
                // Only the compare-and-set names the expected version (?6).
                let mut rows = if stmt.parameter_count() == 6 {
                    stmt.query(params![t, k, v, now, exp, expected])?
                } else {
                    stmt.query(params![t, k, v, now, exp])?
                };
                match rows.next()? {
                    Some(r) => Ok(Some(r.get::<_, i64>(0)? as u64)),
                    None => Ok(None),
                }
            })
            .await?;
        match version {
            Some(version) => Ok(KvEntry {
                key: key.to_string(),
                value: value.to_string(),
                version,
                updated_at: now,
                expires_at: exp,
            }),
            None => {
                let found = self.get(tenant, key).await?.map(|e| e.version);
                Err(conflict(key, expect.unwrap_or(Expect::Absent), found))
            }
        }
    }

    async fn delete(&self, tenant: &Tenant, key: &str) -> Result<bool, RuntimeError> {
        check_key(key)?;
        let now = now_secs() as i64;
        let (tenant, key) = (tenant.as_str().to_owned(), key.to_owned());
        let gone: Option<Option<i64>> = self
            .db
            .write("delete", move |c| {
                c.prepare_cached(
                    "DELETE FROM kv WHERE tenant = ?1 AND key = ?2 RETURNING expires_at",
                )?
                .query_row(params![tenant, key], |r| r.get::<_, Option<i64>>(0))
                .optional()
            })
            .await?;
        // Deleted and not already expired.
        Ok(gone.is_some_and(|exp| exp.is_none_or(|x| x > now)))
    }

    async fn list(
        &self,
        tenant: &Tenant,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KvPage, RuntimeError> {
        check_prefix(prefix)?;
        let limit = check_limit(limit)?;
        let after = match cursor {
            Some(c) => {
                let last = decode_cursor(c)?;
                if !last.starts_with(prefix) {
                    return Err(RuntimeError::invalid("cursor", "belongs to another prefix"));
                }
                last
            }
            None => String::new(),
        };
        let (tenant, prefix) = (tenant.as_str().to_owned(), prefix.to_owned());
        let now = now_secs() as i64;
        // Keys are compared as bytes (BINARY collation); the prefix range is [prefix, prefix+0xFF...).
        let mut entries = self
            .db
            .read("select", move |c| {
                c.prepare_cached(
                    "SELECT key, length(CAST(value AS BLOB)) AS bytes, version, updated_at, expires_at FROM kv
                     WHERE tenant = ?1 AND substr(key, 1, length(?2)) = ?2 AND key > ?3
                       AND (expires_at IS NULL OR expires_at > ?4)
                     ORDER BY key LIMIT ?5",
                )?
                .query_map(
                    params![tenant, prefix, after, now, i64::from(limit) + 1],
                    Self::listed,
                )?
                .collect::<rusqlite::Result<Vec<KvListed>>>()
            })
            .await?;
        let next_cursor = super::cut_page(&mut entries, limit, |e| e.key.clone());
        Ok(KvPage {
            entries,
            next_cursor,
        })
    }

    async fn count(&self, tenant: &Tenant) -> Result<u64, RuntimeError> {
        let tenant = tenant.as_str().to_owned();
        let now = now_secs() as i64;
        let n = self
            .db
            .read("count", move |c| {
                c.prepare_cached(
                    "SELECT COUNT(*) FROM kv WHERE tenant = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                )?
                .query_row(params![tenant, now], |r| r.get::<_, i64>(0))
            })
            .await?;
        Ok(n as u64)
    }
}
