//! Artifacts: files the agents and workflows keep (plans, reports, diffs), per tenant, by
//! key. On AWS in the artifacts bucket under `tenants/{tenant}/{key}`; embedded, the bytes
//! are files on disk named by their SHA-256 and the index is a SQLite table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{Row, SqlitePool};
use tier_xs::runtime::kv::{decode_cursor, encode_cursor};
use tier_xs::runtime::{RuntimeError, Tenant, check_name, now_secs, page_limit};

/// Largest artifact sent through the API or a tool (base64 in JSON costs a third more);
/// larger ones go through a presigned URL on AWS.
pub const MAX_INLINE_BYTES: usize = 10 * 1024 * 1024;
pub const MAX_KEY_BYTES: usize = 512;
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1000;
/// How long a presigned URL works.
pub const PRESIGN_TTL: Duration = Duration::from_secs(15 * 60);
/// The largest artifact a presigned URL uploads (1 GiB).
pub const MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;

/// Which way a presigned URL moves an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    Download,
    /// Exactly `size` bytes: the size is part of the signature, so the URL takes no other.
    Upload {
        size: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ArtifactMeta {
    pub key: String,
    pub size: u64,
    pub content_type: String,
    /// Epoch seconds of the last write.
    pub updated_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ArtifactPage {
    pub artifacts: Vec<ArtifactMeta>,
    /// Pass back to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// A URL that reads or writes one artifact directly, for objects too large for a tool call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Presigned {
    pub url: String,
    pub method: String,
    /// Headers the request must send as they are (they are signed).
    pub headers: std::collections::BTreeMap<String, String>,
    pub expires_in_secs: u64,
}

/// Keys look like paths: `plans/2026-11-26/plan.json`. No leading `/`, no empty, `.` or
/// `..` segments, no control characters.
pub fn check_key(key: &str) -> Result<(), RuntimeError> {
    check_name("key", key, MAX_KEY_BYTES, |c| c != '\\')?;
    if key.starts_with('/') || key.ends_with('/') {
        return Err(RuntimeError::invalid(
            "key",
            "must not start or end with '/'",
        ));
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(RuntimeError::invalid(
            "key",
            "has an empty, '.' or '..' segment",
        ));
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<(), RuntimeError> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_name("prefix", prefix, MAX_KEY_BYTES, |c| c != '\\')?;
    if prefix.starts_with('/') || prefix.split('/').any(|s| s == "..") {
        return Err(RuntimeError::invalid(
            "prefix",
            "must not start with '/' or contain '..'",
        ));
    }
    Ok(())
}

fn check_content_type(ct: &str) -> Result<(), RuntimeError> {
    let ok = !ct.is_empty()
        && ct.len() <= 255
        && ct.contains('/')
        && ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::invalid(
            "content_type",
            format!("{ct:?} is not a media type such as text/plain"),
        ))
    }
}

fn check_size(len: usize) -> Result<(), RuntimeError> {
    if len > MAX_INLINE_BYTES {
        return Err(RuntimeError::TooLarge {
            size: len,
            max: MAX_INLINE_BYTES,
        });
    }
    Ok(())
}

fn check_limit(limit: Option<u32>) -> Result<u32, RuntimeError> {
    page_limit(limit, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
}

#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Writes (or overwrites) an artifact.
    async fn put(
        &self,
        tenant: &Tenant,
        key: &str,
        data: &[u8],
        content_type: &str,
    ) -> Result<ArtifactMeta, RuntimeError>;
    async fn get(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<(ArtifactMeta, Vec<u8>)>, RuntimeError>;
    /// Artifacts whose key starts with `prefix`, in key order, a page at a time.
    async fn list(
        &self,
        tenant: &Tenant,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ArtifactPage, RuntimeError>;
    /// Whether there was something to delete.
    async fn delete(&self, tenant: &Tenant, key: &str) -> Result<bool, RuntimeError>;
    /// The bytes of every artifact the tenant keeps (their current versions), for its quota.
    async fn stored_bytes(&self, tenant: &Tenant) -> Result<u64, RuntimeError>;
    /// What tells one write of the artifact from another (its content's hash, type and time
    /// of writing), read without its bytes; `None` when there is no such artifact.
    async fn fingerprint(&self, tenant: &Tenant, key: &str)
    -> Result<Option<String>, RuntimeError>;
    /// A URL to upload (`PUT`) or download (`GET`) one artifact directly, for large ones.
    /// `None` where the backend has no such URLs (embedded).
    async fn presign(
        &self,
        tenant: &Tenant,
        key: &str,
        transfer: Transfer,
    ) -> Result<Option<Presigned>, RuntimeError>;
}

// ---------------------------------------------------------------------------------------
// S3

/// Artifacts in an S3 bucket, under `tenants/{tenant}/`.
pub struct S3Artifacts {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Artifacts {
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str) -> Self {
        S3Artifacts {
            s3,
            bucket: bucket.to_string(),
        }
    }

    fn root(tenant: &Tenant) -> String {
        format!("tenants/{tenant}/")
    }

    fn object_key(tenant: &Tenant, key: &str) -> String {
        format!("{}{key}", Self::root(tenant))
    }
}

fn is_not_found<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
    R: HttpStatus,
{
    matches!(
        e.as_service_error().and_then(|s| s.code()),
        Some("NoSuchKey") | Some("NotFound")
    ) || e.raw_response().is_some_and(|r| r.status_code() == 404)
}

/// The HTTP status of a raw SDK response (HEAD answers carry no error body, only a 404).
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

#[async_trait]
impl ArtifactStore for S3Artifacts {
    async fn put(
        &self,
        tenant: &Tenant,
        key: &str,
        data: &[u8],
        content_type: &str,
    ) -> Result<ArtifactMeta, RuntimeError> {
        check_key(key)?;
        check_content_type(content_type)?;
        check_size(data.len())?;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(Self::object_key(tenant, key))
            .content_type(content_type)
            .body(data.to_vec().into())
            .send()
            .await
            .map_err(|e| RuntimeError::backend("S3 PutObject", e))?;
        Ok(ArtifactMeta {
            key: key.to_string(),
            size: data.len() as u64,
            content_type: content_type.to_string(),
            updated_at: now_secs(),
        })
    }

    async fn get(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<(ArtifactMeta, Vec<u8>)>, RuntimeError> {
        check_key(key)?;
        let out = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(Self::object_key(tenant, key))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(RuntimeError::backend("S3 GetObject", e)),
        };
        // An object uploaded through a presigned URL may be far larger than a tool returns:
        // never read more of it than that.
        let too_big = |size: u64| RuntimeError::Invalid {
            what: "artifact",
            why: format!(
                "{key} is {size} bytes, more than the {MAX_INLINE_BYTES} a tool returns inline: download it with artifacts_url"
            ),
        };
        let declared = out.content_length().unwrap_or(0).max(0) as u64;
        if declared > MAX_INLINE_BYTES as u64 {
            return Err(too_big(declared));
        }
        let meta = ArtifactMeta {
            key: key.to_string(),
            size: declared,
            content_type: out
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_string(),
            updated_at: out
                .last_modified()
                .map(|t| t.secs().max(0) as u64)
                .unwrap_or(0),
        };
        let mut body = out.body;
        let mut data = Vec::with_capacity(declared as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| RuntimeError::backend("S3 GetObject body", e))?
        {
            if data.len() + chunk.len() > MAX_INLINE_BYTES {
                return Err(too_big((data.len() + chunk.len()) as u64));
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Some((meta, data)))
    }

    async fn list(
        &self,
        tenant: &Tenant,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ArtifactPage, RuntimeError> {
        check_prefix(prefix)?;
        let limit = check_limit(limit)?;
        let root = Self::root(tenant);
        // The cursor is the last key returned; S3 continues after it.
        let start_after = cursor.map(decode_cursor).transpose()?;
        let out = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{root}{prefix}"))
            .set_start_after(start_after.map(|k| format!("{root}{k}")))
            .max_keys(limit as i32)
            .send()
            .await
            .map_err(|e| RuntimeError::backend("S3 ListObjectsV2", e))?;
        let artifacts: Vec<ArtifactMeta> = out
            .contents()
            .iter()
            .filter_map(|o| {
                // Keys are returned relative to the tenant: the stored prefix is ours.
                let key = o.key()?.strip_prefix(&root)?.to_string();
                Some(ArtifactMeta {
                    key,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    // ListObjectsV2 does not carry the type; `get` does.
                    content_type: String::new(),
                    updated_at: o
                        .last_modified()
                        .map(|t| t.secs().max(0) as u64)
                        .unwrap_or(0),
                })
            })
            .collect();
        let next_cursor = if out.is_truncated() == Some(true) {
            artifacts.last().map(|a| encode_cursor(&a.key))
        } else {
            None
        };
        Ok(ArtifactPage {
            artifacts,
            next_cursor,
        })
    }

    async fn stored_bytes(&self, tenant: &Tenant) -> Result<u64, RuntimeError> {
        // A listing of the tenant's objects, 1,000 a call ($0.005 per 1,000 calls): asked at
        // most once a minute per tenant by the quota.
        let mut total = 0u64;
        let mut token = None;
        loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(Self::root(tenant))
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| RuntimeError::backend("S3 ListObjectsV2", e))?;
            total += out
                .contents()
                .iter()
                .map(|o| o.size().unwrap_or(0).max(0) as u64)
                .sum::<u64>();
            token = out.next_continuation_token;
            if token.is_none() {
                return Ok(total);
            }
        }
    }

    async fn delete(&self, tenant: &Tenant, key: &str) -> Result<bool, RuntimeError> {
        check_key(key)?;
        let object = Self::object_key(tenant, key);
        match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(RuntimeError::backend("S3 HeadObject", e)),
        }
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
            .map_err(|e| RuntimeError::backend("S3 DeleteObject", e))?;
        Ok(true)
    }

    async fn fingerprint(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<String>, RuntimeError> {
        check_key(key)?;
        match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(Self::object_key(tenant, key))
            .send()
            .await
        {
            Ok(o) => Ok(Some(format!(
                "{} {} {}",
                o.e_tag().unwrap_or_default(),
                o.content_type().unwrap_or_default(),
                o.last_modified().map(|t| t.secs()).unwrap_or_default()
            ))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(RuntimeError::backend("S3 HeadObject", e)),
        }
    }

    async fn presign(
        &self,
        tenant: &Tenant,
        key: &str,
        transfer: Transfer,
    ) -> Result<Option<Presigned>, RuntimeError> {
        check_key(key)?;
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(PRESIGN_TTL)
            .map_err(|e| RuntimeError::backend("presign", e))?;
        let object = Self::object_key(tenant, key);
        let req = match transfer {
            Transfer::Upload { size } => {
                if size > MAX_UPLOAD_BYTES {
                    return Err(RuntimeError::TooLarge {
                        size: usize::try_from(size).unwrap_or(usize::MAX),
                        max: MAX_UPLOAD_BYTES as usize,
                    });
                }
                // Content-Length is signed: S3 refuses a body of any other size.
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(object)
                    .content_length(size as i64)
                    .presigned(cfg)
                    .await
                    .map_err(|e| RuntimeError::backend("presign", e))?
            }
            Transfer::Download => self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(object)
                .presigned(cfg)
                .await
                .map_err(|e| RuntimeError::backend("presign", e))?,
        };
        Ok(Some(Presigned {
            url: req.uri().to_string(),
            method: req.method().to_string(),
            headers: req
                .headers()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            expires_in_secs: PRESIGN_TTL.as_secs(),
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Embedded

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS artifacts (
    tenant       TEXT NOT NULL,
    key          TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
"#;

/// Artifacts on disk: the bytes in `{data_dir}/artifacts/tenants/{tenant}/{sha256}` (one copy
/// per content within a tenant, never shared with another), the index in SQLite.
///
/// A put writes its bytes to a temporary file of its own and renames it into place, so a
/// reader never sees half an artifact and two identical puts never collide. Whether a content
/// file is still referred to is decided under `index`, together with the index change that
/// makes it so: a delete cannot remove a file a put in flight is about to refer to. A read
/// that finds its file gone (the key was replaced meanwhile) reads the index again.
pub struct EmbeddedArtifacts {
    pool: SqlitePool,
    dir: PathBuf,
    index: tokio::sync::Mutex<()>,
}

/// Temporary file names: unique within the process (the pid keeps processes apart).
static TEMP_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl EmbeddedArtifacts {
    pub async fn open(pool: SqlitePool, data_dir: &Path) -> Result<Self, RuntimeError> {
        let dir = data_dir.join("artifacts");
        std::fs::create_dir_all(dir.join("tenants")).map_err(|e| RuntimeError::Backend {
            op: "create artifacts directory",
            message: format!("{}: {e}", dir.display()),
        })?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| RuntimeError::backend("create schema", e))?;
        let store = EmbeddedArtifacts {
            pool,
            dir,
            index: tokio::sync::Mutex::new(()),
        };
        store.move_shared_files().await?;
        Ok(store)
    }

    fn blob(&self, tenant: &str, sha: &str) -> PathBuf {
        self.dir.join("tenants").join(tenant).join(sha)
    }

    /// Data directories of earlier versions kept one file per content for every tenant
    /// (`artifacts/{sha256}`): each tenant gets its own copy, then the shared files go.
    async fn move_shared_files(&self) -> Result<(), RuntimeError> {
        let io = |e: std::io::Error| RuntimeError::backend("move artifact files", e);
        let shared = |name: &str| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        let mut legacy = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if shared(&name) && entry.file_type().map_err(io)?.is_file() {
                legacy.push(name);
            }
        }
        if legacy.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT DISTINCT tenant, sha256 FROM artifacts")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| RuntimeError::backend("artifacts read", e))?;
        for (tenant, sha) in rows {
            let (from, to) = (self.dir.join(&sha), self.blob(&tenant, &sha));
            if legacy.contains(&sha) && !to.exists() {
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::copy(&from, &to).map_err(io)?;
            }
        }
        for name in legacy {
            std::fs::remove_file(self.dir.join(name)).map_err(io)?;
        }
        Ok(())
    }

    /// Removes a tenant's content file nobody of the tenant refers to any more (under `index`).
    async fn collect(&self, tenant: &str, sha: &str) -> Result<(), RuntimeError> {
        let used: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM artifacts WHERE tenant = ? AND sha256 = ?")
                .bind(tenant)
                .bind(sha)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| RuntimeError::backend("artifacts count", e))?;
        if used == 0 {
            match tokio::fs::remove_file(self.blob(tenant, sha)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RuntimeError::backend("remove artifact file", e)),
            }
        }
        Ok(())
    }
}

fn meta(row: &sqlx::sqlite::SqliteRow) -> ArtifactMeta {
    ArtifactMeta {
        key: row.get("key"),
        size: row.get::<i64, _>("size").max(0) as u64,
        content_type: row.get("content_type"),
        updated_at: row.get::<i64, _>("updated_at").max(0) as u64,
    }
}

#[async_trait]
impl ArtifactStore for EmbeddedArtifacts {
    async fn put(
        &self,
        tenant: &Tenant,
        key: &str,
        data: &[u8],
        content_type: &str,
    ) -> Result<ArtifactMeta, RuntimeError> {
        check_key(key)?;
        check_content_type(content_type)?;
        check_size(data.len())?;
        let sha = hex::encode(Sha256::digest(data));
        let path = self.blob(tenant.as_str(), &sha);
        let write = |e: std::io::Error| RuntimeError::backend("write artifact file", e);
        // The bytes first, outside the lock: a big put does not hold up anyone else's.
        let tmp = path.with_file_name(format!(
            ".{sha}.{}.{}.tmp",
            std::process::id(),
            TEMP_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        if let Some(parent) = tmp.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(write)?;
        }
        tokio::fs::write(&tmp, data).await.map_err(write)?;
        let now = now_secs();
        let _index = self.index.lock().await;
        // Same content, same name: replacing an existing file changes nothing a reader sees.
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(write(e));
        }
        let previous: Option<String> =
            sqlx::query_scalar("SELECT sha256 FROM artifacts WHERE tenant = ? AND key = ?")
                .bind(tenant.as_str())
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| RuntimeError::backend("artifacts read", e))?;
        sqlx::query(
            "INSERT INTO artifacts (tenant, key, size, content_type, sha256, updated_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant, key) DO UPDATE SET size = excluded.size,
               content_type = excluded.content_type, sha256 = excluded.sha256,
               updated_at = excluded.updated_at",
        )
        .bind(tenant.as_str())
        .bind(key)
        .bind(data.len() as i64)
        .bind(content_type)
        .bind(&sha)
        .bind(now as i64)
        .execute(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("artifacts write", e))?;
        if let Some(old) = previous.filter(|o| *o != sha) {
            self.collect(tenant.as_str(), &old).await?;
        }
        Ok(ArtifactMeta {
            key: key.to_string(),
            size: data.len() as u64,
            content_type: content_type.to_string(),
            updated_at: now,
        })
    }

    async fn get(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<(ArtifactMeta, Vec<u8>)>, RuntimeError> {
        check_key(key)?;
        // A file that went between reading the index and opening it belonged to a version
        // the key no longer has: the index then names the current one (or none).
        for _ in 0..3 {
            let Some(row) = sqlx::query(
                "SELECT key, size, content_type, sha256, updated_at FROM artifacts
                 WHERE tenant = ? AND key = ?",
            )
            .bind(tenant.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| RuntimeError::backend("artifacts read", e))?
            else {
                return Ok(None);
            };
            let sha: String = row.get("sha256");
            match tokio::fs::read(self.blob(tenant.as_str(), &sha)).await {
                Ok(data) => return Ok(Some((meta(&row), data))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RuntimeError::backend("read artifact file", e)),
            }
        }
        Err(RuntimeError::Backend {
            op: "read artifact file",
            message: format!("{key}: its content kept changing while it was read; try again"),
        })
    }

    async fn list(
        &self,
        tenant: &Tenant,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ArtifactPage, RuntimeError> {
        check_prefix(prefix)?;
        let limit = check_limit(limit)?;
        let after = cursor.map(decode_cursor).transpose()?.unwrap_or_default();
        // Prefix match by range: keys >= prefix and < prefix + U+10FFFF.
        let end = format!("{prefix}\u{10FFFF}");
        let rows = sqlx::query(
            "SELECT key, size, content_type, updated_at FROM artifacts
             WHERE tenant = ? AND key >= ? AND key < ? AND key > ?
             ORDER BY key LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(prefix)
        .bind(&end)
        .bind(&after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("artifacts list", e))?;
        let mut artifacts: Vec<ArtifactMeta> = rows.iter().map(meta).collect();
        let next_cursor = tier_xs::runtime::cut_page(&mut artifacts, limit, |a| a.key.clone());
        Ok(ArtifactPage {
            artifacts,
            next_cursor,
        })
    }

    async fn stored_bytes(&self, tenant: &Tenant) -> Result<u64, RuntimeError> {
        let total: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(size), 0) FROM artifacts WHERE tenant = ?")
                .bind(tenant.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| RuntimeError::backend("artifacts size", e))?;
        Ok(total.max(0) as u64)
    }

    async fn delete(&self, tenant: &Tenant, key: &str) -> Result<bool, RuntimeError> {
        check_key(key)?;
        let _index = self.index.lock().await;
        let sha: Option<String> = sqlx::query_scalar(
            "DELETE FROM artifacts WHERE tenant = ? AND key = ? RETURNING sha256",
        )
        .bind(tenant.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("artifacts delete", e))?;
        match sha {
            Some(s) => {
                self.collect(tenant.as_str(), &s).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn fingerprint(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<String>, RuntimeError> {
        check_key(key)?;
        let row = sqlx::query(
            "SELECT sha256, content_type, updated_at FROM artifacts WHERE tenant = ? AND key = ?",
        )
        .bind(tenant.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("artifacts read", e))?;
        Ok(row.map(|r| {
            format!(
                "{} {} {}",
                r.get::<String, _>("sha256"),
                r.get::<String, _>("content_type"),
                r.get::<i64, _>("updated_at")
            )
        }))
    }

    async fn presign(
        &self,
        _tenant: &Tenant,
        key: &str,
        _transfer: Transfer,
    ) -> Result<Option<Presigned>, RuntimeError> {
        check_key(key)?;
        Ok(None)
    }
}
