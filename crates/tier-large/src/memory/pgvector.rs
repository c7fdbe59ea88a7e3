//! Vector memory on PostgreSQL with pgvector (Aurora PostgreSQL on AWS, or any Postgres with
//! the extension): one table of documents, HNSW indexes (cosine) per common vector size, and
//! a count per (tenant, collection, model) kept in the same transactions as the documents.
//!
//! A search picks its plan by the collection's size: below [`PgMemory::exact_below`]
//! documents it scans the tenant's rows exactly (a btree range, recall 1.0); above, it walks
//! the HNSW index with `hnsw.iterative_scan = relaxed_order`, so a tenant filter still
//! yields `k` rows (a plain HNSW scan stops after `ef_search` candidates, most of them other
//! tenants'), and re-orders them exactly.
//!
//! The scan settings are the connections' own (startup options), so a search is one query
//! on the pool: no transaction around a `SET LOCAL`. The collection's size that picks the plan
//! is read at most every [`COUNT_FOR`] per collection: either plan returns the right rows, the
//! size only decides which is faster.
//!
//! Vectors of any size are stored in one `vector` column; the indexes are expression
//! indexes on `embedding::vector(N)` for the sizes in [`INDEXED_DIMENSIONS`], partial on
//! `dimensions = N` (pgvector's documented way to index mixed sizes). Other sizes are
//! searched exactly.

use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};
use tier_xs::runtime::{RuntimeError, Tenant};

use super::{
    Collection, Document, DocumentRow, Hit, Query, Stale, StaleRow, Stored, VectorStore,
    check_collection, check_id, check_put, check_query, document, group_collections, metadata_of,
    stale_of,
};

/// Vector sizes with an HNSW index: MiniLM (384), Titan V2 (256, 512, 1024), OpenAI's
/// text-embedding-3-small (1536).
pub const INDEXED_DIMENSIONS: [usize; 5] = [256, 384, 512, 1024, 1536];

/// The schema's versions, applied in order, each once, under an advisory lock.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_memory.sql")),
    (2, include_str!("../../migrations/0002_memory_hnsw.sql")),
];

/// The advisory lock key of migrations (any constant both old and new servers share).
const MIGRATION_LOCK: i64 = 0x6167_656e_7462_7573; // "agentbus"

/// Reads the connection options again: the password in them is rotated (RDS rotates a managed
/// master password every 7 days by default), and a new connection made with the old one is
/// refused.
pub type Reconnect =
    Arc<dyn Fn() -> BoxFuture<'static, Result<PgConnectOptions, RuntimeError>> + Send + Sync>;

pub struct PgMemory {
    pool: PgPool,
    /// How to read the password again when the database refuses it.
    reconnect: Option<Reconnect>,
    /// A connection was refused its password since the last look.
    refused: AtomicBool,
    /// Collections smaller than this are scanned exactly.
    pub exact_below: u64,
    /// `hnsw.ef_search` of index scans (the connections' own, see [`PgMemory::connect_tuned`]).
    ef_search: u32,
    /// Collection sizes lately read, with when.
    counts: Mutex<HashMap<CollectionKey, (u64, Instant)>>,
}

/// A collection of one model's vectors: (tenant, collection, model).
type CollectionKey = (String, String, String);

/// The default `hnsw.ef_search`: recall@10 0.98 on 100,000 MiniLM vectors
/// (`docs/benchmarks/vector-search.md`).
pub const DEFAULT_EF_SEARCH: u32 = 100;
/// How long a collection's size is taken as read before a search reads it again.
pub const COUNT_FOR: Duration = Duration::from_secs(5);
/// Sizes remembered at most (then forgotten all at once).
const COUNTS_KEPT: usize = 10_000;

/// `options` with the index scan settings every connection starts with: iterative scans
/// (a tenant's filter still yields `k` rows) and `ef_search`. pgvector's settings are
/// accepted at connection start before the extension is loaded, as placeholders it adopts.
fn tuned(options: PgConnectOptions, ef_search: u32) -> PgConnectOptions {
    options.options([
        ("hnsw.iterative_scan", "relaxed_order".to_string()),
        ("hnsw.ef_search", ef_search.clamp(1, 1000).to_string()),
    ])
}

/// PostgreSQL's "invalid_password" and "invalid_authorization_specification" (SQLSTATE class
/// 28): what a new connection gets with a rotated password.
fn refused_password(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c == "28P01" || c == "28000"))
}

fn pg(op: &'static str) -> impl FnOnce(sqlx::Error) -> RuntimeError {
    move |e| RuntimeError::backend(op, e)
}

/// The search of `dims`-sized vectors: `$1` tenant, `$2` collection, `$3` model, `$4` the
/// query vector, `$5` the metadata filter (JSON), `$6` k.
///
/// The distance expression decides the plan: cast to the indexed size (`indexed`) it matches
/// the HNSW index; uncast, only the btree on (tenant, collection, model) applies. The
/// iterative scan may return rows slightly out of order: the outer query orders them.
pub fn search_sql(dims: usize, indexed: bool) -> String {
    let distance = if indexed {
        format!("embedding::vector({dims}) <=> $4::vector({dims})")
    } else {
        "embedding <=> $4::vector".to_string()
    };
    format!(
        "WITH nearest AS MATERIALIZED (
           SELECT id, text, metadata, {distance} AS distance FROM memory_documents
           WHERE tenant = $1 AND collection = $2 AND model = $3 AND dimensions = {dims}
             AND metadata @> $5::jsonb
           ORDER BY distance LIMIT $6)
         SELECT id, text, metadata::text AS metadata, 1 - distance AS score FROM nearest ORDER BY distance"
    )
}

/// pgvector's text form of a vector.
pub fn literal(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 10 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

/// `updated_at` as RFC 3339 UTC, in SQL.
const UPDATED_AT: &str =
    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

impl PgMemory {
    /// Connects to `url` (`postgres://…`) and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, RuntimeError> {
        let options: sqlx::postgres::PgConnectOptions = url
            .parse()
            .map_err(|e| RuntimeError::invalid("database URL", format!("{e}")))?;
        Self::connect_with(options).await
    }

    /// Connects with `options` (a host, a user and a password read from a secret, say) and
    /// brings the schema up to date.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, RuntimeError> {
        Self::connect_tuned(options, DEFAULT_EF_SEARCH).await
    }

    /// [`PgMemory::connect_with`], index scans with `hnsw.ef_search = ef_search`.
    pub async fn connect_tuned(
        options: PgConnectOptions,
        ef_search: u32,
    ) -> Result<Self, RuntimeError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            // A writer switch (failover) closes connections: check before handing one out.
            .test_before_acquire(true)
            .connect_with(tuned(options, ef_search))
            .await
            .map_err(pg("connect to PostgreSQL"))?;
        migrate(&pool).await?;
        Ok(PgMemory {
            pool,
            reconnect: None,
            refused: AtomicBool::new(false),
            exact_below: 10_000,
            ef_search,
            counts: Mutex::new(HashMap::new()),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `hnsw.ef_search` of this store's index scans.
    pub fn ef_search(&self) -> u32 {
        self.ef_search
    }

    /// New connections use `options` (a password read again), with this store's scan
    /// settings.
    pub fn set_connect_options(&self, options: PgConnectOptions) {
        self.pool
            .set_connect_options(tuned(options, self.ef_search));
    }

    /// Reads the password again with `reconnect` when the database refuses it, and tries the
    /// operation once more.
    pub fn with_reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = Some(reconnect);
        self
    }

    /// A database error as the store's, noting a refused password.
    fn pg(&self, op: &'static str) -> impl FnOnce(sqlx::Error) -> RuntimeError + '_ {
        move |e| {
            if refused_password(&e) {
                self.refused.store(true, Ordering::SeqCst);
            }
            RuntimeError::backend(op, e)
        }
    }

    /// A transaction; the time taken to get its connection from the pool (and to begin) is
    /// recorded as the pool's wait.
    async fn begin(
        &self,
        op: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, RuntimeError> {
        let started = std::time::Instant::now();
        let tx = self.pool.begin().await.map_err(self.pg(op));
        tier_xs::metrics::latency(super::names::POOL_WAIT, None, None, started.elapsed());
        tx
    }

    /// Runs `op`; when it failed because a new connection's password was refused (a rotation
    /// the periodic re-read has not caught yet), reads the password again, gives the pool the
    /// new one and runs `op` once more.
    async fn again<T, F, Fut>(&self, op: F) -> Result<T, RuntimeError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        let first = op().await;
        if first.is_ok() || !self.refused.swap(false, Ordering::SeqCst) {
            return first;
        }
        let Some(reconnect) = &self.reconnect else {
            return first;
        };
        match reconnect().await {
            Ok(options) => {
                tracing::info!("the database refused its password: read it again");
                self.set_connect_options(options);
                op().await
            }
            Err(e) => {
                tracing::warn!(
                    "the database refused its password, and reading it again failed: {e}"
                );
                first
            }
        }
    }

    /// The collection's size, as read within [`COUNT_FOR`].
    async fn recent_count(
        &self,
        tenant: &Tenant,
        collection: &str,
        model: &str,
    ) -> Result<u64, RuntimeError> {
        let key = (
            tenant.as_str().to_string(),
            collection.to_string(),
            model.to_string(),
        );
        if let Ok(counts) = self.counts.lock()
            && let Some((n, at)) = counts.get(&key)
            && at.elapsed() < COUNT_FOR
        {
            return Ok(*n);
        }
        let n = self.count(tenant, collection, model).await?;
        if let Ok(mut counts) = self.counts.lock() {
            if counts.len() >= COUNTS_KEPT {
                counts.clear();
            }
            counts.insert(key, (n, Instant::now()));
        }
        Ok(n)
    }

    async fn count(
        &self,
        tenant: &Tenant,
        collection: &str,
        model: &str,
    ) -> Result<u64, RuntimeError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT documents FROM memory_collections WHERE tenant = $1 AND collection = $2 AND model = $3",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(model)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg("memory count"))?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

/// Applies the migrations this build knows and the database lacks, once, whichever server
/// gets there first (the others wait on the lock and find them applied).
pub async fn migrate(pool: &PgPool) -> Result<(), RuntimeError> {
    let mut conn = pool.acquire().await.map_err(pg("migrate"))?;
    let mut tx = conn.begin().await.map_err(pg("migrate"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(pg("migration lock"))?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS agentbus_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(pg("migrate"))?;
    let applied: Vec<i32> = sqlx::query_scalar("SELECT version FROM agentbus_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(pg("migrate"))?;
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tracing::info!(version, "applying memory schema migration");
        sqlx::raw_sql(*sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| RuntimeError::backend("migration", e))?;
        sqlx::query("INSERT INTO agentbus_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(pg("migrate"))?;
    }
    if let Some(newest) = applied.iter().max()
        && *newest > MIGRATIONS.len() as i32
    {
        tracing::warn!(
            newest,
            "the database's schema is newer than this build's ({}): an older server is running",
            MIGRATIONS.len()
        );
    }
    tx.commit().await.map_err(pg("migrate"))
}

/// The store's operations, each tried once (see [`PgMemory::again`]).
impl PgMemory {
    async fn put_once(
        &self,
        tenant: &Tenant,
        collection: &str,
        docs: &[Stored],
    ) -> Result<(), RuntimeError> {
        check_put(collection, docs)?;
        let mut tx = self.begin("memory put").await?;
        for d in docs {
            // The previous model of this id, locked, to move its count.
            let previous: Option<String> = sqlx::query_scalar(
                "SELECT model FROM memory_documents WHERE tenant = $1 AND collection = $2 AND id = $3 FOR UPDATE",
            )
            .bind(tenant.as_str())
            .bind(collection)
            .bind(&d.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.pg("memory put"))?;
            sqlx::query(
                "INSERT INTO memory_documents (tenant, collection, id, text, metadata, model, dimensions, embedding)
                 VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::vector)
                 ON CONFLICT (tenant, collection, id) DO UPDATE SET text = excluded.text,
                   metadata = excluded.metadata, model = excluded.model, dimensions = excluded.dimensions,
                   embedding = excluded.embedding, version = memory_documents.version + 1, updated_at = now()",
            )
            .bind(tenant.as_str())
            .bind(collection)
            .bind(&d.id)
            .bind(&d.text)
            .bind(Value::Object(d.metadata.clone()).to_string())
            .bind(&d.model)
            .bind(d.vector.len() as i32)
            .bind(literal(&d.vector))
            .execute(&mut *tx)
            .await
            .map_err(self.pg("memory put"))?;
            if previous.as_deref() != Some(d.model.as_str()) {
                recount(&mut tx, tenant, collection, &d.model, 1).await?;
                if let Some(old) = previous {
                    recount(&mut tx, tenant, collection, &old, -1).await?;
                }
            }
        }
        tx.commit().await.map_err(self.pg("memory put"))
    }

    async fn get_once(
        &self,
        tenant: &Tenant,
        collection: &str,
        id: &str,
    ) -> Result<Option<Document>, RuntimeError> {
        check_collection(collection)?;
        check_id(id)?;
        // Only constants are formatted in; the values are bound.
        let row: Option<DocumentRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT text, metadata::text, model, dimensions::int8, version, {UPDATED_AT}
             FROM memory_documents WHERE tenant = $1 AND collection = $2 AND id = $3"
        )))
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.pg("memory get"))?;
        Ok(row.map(|r| document(id, collection, r)))
    }

    async fn delete_once(
        &self,
        tenant: &Tenant,
        collection: &str,
        id: &str,
    ) -> Result<bool, RuntimeError> {
        check_collection(collection)?;
        check_id(id)?;
        let mut tx = self.begin("memory delete").await?;
        let model: Option<String> = sqlx::query_scalar(
            "DELETE FROM memory_documents WHERE tenant = $1 AND collection = $2 AND id = $3 RETURNING model",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.pg("memory delete"))?;
        if let Some(m) = &model {
            recount(&mut tx, tenant, collection, m, -1).await?;
        }
        tx.commit().await.map_err(self.pg("memory delete"))?;
        Ok(model.is_some())
    }

    async fn search_once(&self, tenant: &Tenant, q: &Query<'_>) -> Result<Vec<Hit>, RuntimeError> {
        check_query(q)?;
        let dims = q.vector.len();
        let indexed = INDEXED_DIMENSIONS.contains(&dims)
            && self.recent_count(tenant, q.collection, q.model).await? >= self.exact_below;
        let sql = search_sql(dims, indexed);
        // Only the vector size (a number) and constants are formatted in. The exact scan is
        // never prepared, so never run by a cached generic plan (a generic one walked the
        // HNSW graph for a tenant a plain scan serves in 3 ms, at 60 ms a query); the index
        // scan, chosen for big collections only, is prepared: its plan is the same whatever
        // the tenant, and planning it (five partial indexes to weigh) was half of a search.
        // One query on the pool: the scan settings are the connection's.
        let started = Instant::now();
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(self.pg("memory search"))?;
        tier_xs::metrics::latency(super::names::POOL_WAIT, None, None, started.elapsed());
        let rows = sqlx::query(AssertSqlSafe(sql))
            .persistent(indexed)
            .bind(tenant.as_str())
            .bind(q.collection)
            .bind(q.model)
            .bind(literal(q.vector))
            .bind(Value::Object(q.filter.clone()).to_string())
            .bind(q.k as i64)
            .fetch_all(&mut *conn)
            .await
            .map_err(self.pg("memory search"))?;
        Ok(rows
            .into_iter()
            .map(|r| Hit {
                id: r.get("id"),
                score: r.get::<f64, _>("score") as f32,
                text: r.get("text"),
                metadata: metadata_of(r.get::<&str, _>("metadata")),
            })
            .collect())
    }

    async fn collections_once(&self, tenant: &Tenant) -> Result<Vec<Collection>, RuntimeError> {
        let rows = sqlx::query(
            "SELECT collection, model, documents FROM memory_collections
             WHERE tenant = $1 AND documents > 0 ORDER BY collection, model",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(self.pg("memory collections"))?;
        Ok(group_collections(
            rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))),
        ))
    }

    async fn stale_once(&self, model: &str, limit: usize) -> Result<Vec<Stale>, RuntimeError> {
        let rows: Vec<StaleRow> = sqlx::query_as(
            "SELECT tenant, collection, id, text, version FROM memory_documents WHERE model <> $1 LIMIT $2",
        )
        .bind(model)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(self.pg("memory stale"))?;
        rows.into_iter().map(stale_of).collect()
    }

    async fn revector_once(
        &self,
        stale: &Stale,
        model: &str,
        vector: &[f32],
    ) -> Result<bool, RuntimeError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.pg("memory revector"))?;
        let old: Option<String> = sqlx::query_scalar(
            "SELECT model FROM memory_documents
             WHERE tenant = $1 AND collection = $2 AND id = $3 AND version = $4 FOR UPDATE",
        )
        .bind(stale.tenant.as_str())
        .bind(&stale.collection)
        .bind(&stale.id)
        .bind(stale.version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.pg("memory revector"))?;
        let Some(old) = old else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE memory_documents SET model = $4, dimensions = $5, embedding = $6::vector
             WHERE tenant = $1 AND collection = $2 AND id = $3",
        )
        .bind(stale.tenant.as_str())
        .bind(&stale.collection)
        .bind(&stale.id)
        .bind(model)
        .bind(vector.len() as i32)
        .bind(literal(vector))
        .execute(&mut *tx)
        .await
        .map_err(self.pg("memory revector"))?;
        if old != model {
            recount(&mut tx, &stale.tenant, &stale.collection, model, 1).await?;
            recount(&mut tx, &stale.tenant, &stale.collection, &old, -1).await?;
        }
        tx.commit().await.map_err(self.pg("memory revector"))?;
        Ok(true)
    }
}

#[async_trait]
impl VectorStore for PgMemory {
    async fn put(
        &self,
        tenant: &Tenant,
        collection: &str,
        docs: &[Stored],
    ) -> Result<(), RuntimeError> {
        self.again(|| self.put_once(tenant, collection, docs)).await
    }
    async fn get(
        &self,
        tenant: &Tenant,
        collection: &str,
        id: &str,
    ) -> Result<Option<Document>, RuntimeError> {
        self.again(|| self.get_once(tenant, collection, id)).await
    }
    async fn delete(
        &self,
        tenant: &Tenant,
        collection: &str,
        id: &str,
    ) -> Result<bool, RuntimeError> {
        self.again(|| self.delete_once(tenant, collection, id))
            .await
    }
    async fn search(&self, tenant: &Tenant, q: &Query<'_>) -> Result<Vec<Hit>, RuntimeError> {
        self.again(|| self.search_once(tenant, q)).await
    }
    async fn collections(&self, tenant: &Tenant) -> Result<Vec<Collection>, RuntimeError> {
        self.again(|| self.collections_once(tenant)).await
    }
    async fn stale(&self, model: &str, limit: usize) -> Result<Vec<Stale>, RuntimeError> {
        self.again(|| self.stale_once(model, limit)).await
    }
    async fn revector(
        &self,
        stale: &Stale,
        model: &str,
        vector: &[f32],
    ) -> Result<bool, RuntimeError> {
        self.again(|| self.revector_once(stale, model, vector))
            .await
    }
}

async fn recount(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: &Tenant,
    collection: &str,
    model: &str,
    by: i64,
) -> Result<(), RuntimeError> {
    sqlx::query(
        "INSERT INTO memory_collections (tenant, collection, model, documents) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant, collection, model) DO UPDATE SET documents = memory_collections.documents + excluded.documents",
    )
    .bind(tenant.as_str())
    .bind(collection)
    .bind(model)
    .bind(by)
    .execute(&mut **tx)
    .await
    .map_err(pg("memory count"))?;
    Ok(())
}
