//! Vector memory on embedded storage: SQLite is the store of record (the workspace's
//! database in its data directory); searches scan every vector of the collection exactly, in
//! memory, off the async workers. Recall is 1.0, which makes this backend the oracle of the
//! pgvector recall tests.
//!
//! A collection's vectors of one model are loaded on its first search and kept in step with
//! every put and delete made through this store (one server owns a data directory).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::{Row, SqlitePool};
use tier_xs::runtime::{RuntimeError, Tenant};

use super::{
    Collection, Document, DocumentRow, Hit, Query, Stale, StaleRow, Stored, VectorStore,
    check_collection, check_id, check_put, check_query, document, group_collections, matches,
    metadata_of, stale_of,
};
use crate::embed::minilm::dot;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS memory_documents (
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    model TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    vector BLOB NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, collection, id)
);
CREATE INDEX IF NOT EXISTS memory_documents_model ON memory_documents (model);
";

/// The vectors of one (tenant, collection, model), row-major.
#[derive(Default)]
struct Slab {
    dims: usize,
    ids: Vec<String>,
    rows: HashMap<String, usize>,
    vectors: Vec<f32>,
    metadata: Vec<Map<String, Value>>,
}

impl Slab {
    fn upsert(&mut self, id: &str, vector: &[f32], metadata: &Map<String, Value>) {
        if self.dims == 0 {
            self.dims = vector.len();
        }
        match self.rows.get(id) {
            Some(&row) => {
                self.vectors[row * self.dims..(row + 1) * self.dims].copy_from_slice(vector);
                self.metadata[row] = metadata.clone();
            }
            None => {
                self.rows.insert(id.to_string(), self.ids.len());
                self.ids.push(id.to_string());
                self.vectors.extend_from_slice(vector);
                self.metadata.push(metadata.clone());
            }
        }
    }

    fn remove(&mut self, id: &str) {
        let Some(row) = self.rows.remove(id) else {
            return;
        };
        let last = self.ids.len() - 1;
        if row != last {
            let d = self.dims;
            self.vectors.copy_within(last * d..(last + 1) * d, row * d);
            self.ids.swap(row, last);
            self.metadata.swap(row, last);
            self.rows.insert(self.ids[row].clone(), row);
        }
        self.ids.pop();
        self.metadata.pop();
        self.vectors.truncate(last * self.dims);
    }

    /// The rows of the `k` best scores, best first.
    fn nearest(&self, query: &[f32], k: usize, filter: &Map<String, Value>) -> Vec<(f32, usize)> {
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        if self.dims != query.len() {
            return best;
        }
        for (row, v) in self.vectors.chunks_exact(self.dims).enumerate() {
            let score = dot(query, v);
            if best.len() == k && score <= best[k - 1].0 {
                continue;
            }
            if !filter.is_empty() && !matches(&self.metadata[row], filter) {
                continue;
            }
            let at = best.partition_point(|(s, _)| *s >= score);
            best.insert(at, (score, row));
            best.truncate(k);
        }
        best
    }
}

type SlabKey = (String, String, String);

pub struct EmbeddedMemory {
    pool: SqlitePool,
    slabs: Mutex<HashMap<SlabKey, Arc<RwLock<Slab>>>>,
    /// Held by every write and by a slab's load, so that no write falls between a load's
    /// read and its slab's publication.
    writes: tokio::sync::Mutex<()>,
}

/// The time of a write: RFC 3339 UTC to the millisecond, as the timeline's and Postgres's.
fn now() -> String {
    tier_small::runtime::timeline::ts_of(tier_xs::runtime::now_millis())
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl EmbeddedMemory {
    pub async fn open(pool: SqlitePool) -> Result<Self, RuntimeError> {
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| RuntimeError::backend("create memory schema", e))?;
        Ok(EmbeddedMemory {
            pool,
            slabs: Mutex::default(),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn loaded(&self, key: &SlabKey) -> Option<Arc<RwLock<Slab>>> {
        self.slabs.lock().ok()?.get(key).cloned()
    }

    /// Every loaded slab of a collection, whatever its model.
    fn loaded_of(&self, tenant: &Tenant, collection: &str) -> Vec<(String, Arc<RwLock<Slab>>)> {
        self.slabs
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|((t, c, _), _)| t == tenant.as_str() && c == collection)
                    .map(|((_, _, m), slab)| (m.clone(), slab.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn slab(&self, key: SlabKey) -> Result<Arc<RwLock<Slab>>, RuntimeError> {
        if let Some(s) = self.loaded(&key) {
            return Ok(s);
        }
        let _writes = self.writes.lock().await;
        if let Some(s) = self.loaded(&key) {
            return Ok(s);
        }
        let rows = sqlx::query(
            "SELECT id, metadata, vector FROM memory_documents WHERE tenant = ? AND collection = ? AND model = ?",
        )
        .bind(&key.0)
        .bind(&key.1)
        .bind(&key.2)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("memory load", e))?;
        let mut slab = Slab::default();
        for r in rows {
            let vector = from_blob(&r.get::<Vec<u8>, _>("vector"));
            slab.upsert(
                &r.get::<String, _>("id"),
                &vector,
                &metadata_of(&r.get::<String, _>("metadata")),
            );
        }
        let mut slabs = self
            .slabs
            .lock()
            .map_err(|_| RuntimeError::invalid("memory", "a search panicked"))?;
        let slab = Arc::new(RwLock::new(slab));
        slabs.insert(key, slab.clone());
        Ok(slab)
    }

    fn apply(&self, tenant: &Tenant, collection: &str, doc: &Stored) {
        for (model, slab) in self.loaded_of(tenant, collection) {
            if let Ok(mut s) = slab.write() {
                if model == doc.model {
                    s.upsert(&doc.id, &doc.vector, &doc.metadata);
                } else {
                    s.remove(&doc.id);
                }
            }
        }
    }
}

#[async_trait]
impl VectorStore for EmbeddedMemory {
    async fn put(
        &self,
        tenant: &Tenant,
        collection: &str,
        docs: &[Stored],
    ) -> Result<(), RuntimeError> {
        check_put(collection, docs)?;
        let _writes = self.writes.lock().await;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| RuntimeError::backend("memory put", e))?;
        let at = now();
        for d in docs {
            sqlx::query(
                "INSERT INTO memory_documents (tenant, collection, id, text, metadata, model, dimensions, vector, version, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?)
                 ON CONFLICT (tenant, collection, id) DO UPDATE SET text = excluded.text,
                   metadata = excluded.metadata, model = excluded.model, dimensions = excluded.dimensions,
                   vector = excluded.vector, version = memory_documents.version + 1, updated_at = excluded.updated_at",
            )
            .bind(tenant.as_str())
            .bind(collection)
            .bind(&d.id)
            .bind(&d.text)
            .bind(Value::Object(d.metadata.clone()).to_string())
            .bind(&d.model)
            .bind(d.vector.len() as i64)
            .bind(to_blob(&d.vector))
            .bind(&at)
            .execute(&mut *tx)
            .await
            .map_err(|e| RuntimeError::backend("memory put", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| RuntimeError::backend("memory put", e))?;
        for d in docs {
            self.apply(tenant, collection, d);
        }
        Ok(())
    }

    async fn get(
        &self,
        tenant: &Tenant,
        collection: &str,
        id: &str,
    ) -> Result<Option<Document>, RuntimeError> {
        check_collection(collection)?;
        check_id(id)?;
        let row: Option<DocumentRow> = sqlx::query_as(
            "SELECT text, metadata, model, dimensions, version, updated_at FROM memory_documents
             WHERE tenant = ? AND collection = ? AND id = ?",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("memory get", e))?;
        Ok(row.map(|r| document(id, collection, r)))
    }

    async fn delete(
        &self,
        tenant: &Tenant,
        collection: &str,
        id: &str,
    ) -> Result<bool, RuntimeError> {
        check_collection(collection)?;
        check_id(id)?;
        let _writes = self.writes.lock().await;
        let done = sqlx::query(
            "DELETE FROM memory_documents WHERE tenant = ? AND collection = ? AND id = ?",
        )
        .bind(tenant.as_str())
        .bind(collection)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("memory delete", e))?;
        for (_, slab) in self.loaded_of(tenant, collection) {
            if let Ok(mut s) = slab.write() {
                s.remove(id);
            }
        }
        Ok(done.rows_affected() > 0)
    }

    async fn search(&self, tenant: &Tenant, q: &Query<'_>) -> Result<Vec<Hit>, RuntimeError> {
        check_query(q)?;
        let slab = self
            .slab((
                tenant.as_str().to_string(),
                q.collection.to_string(),
                q.model.to_string(),
            ))
            .await?;
        let (vector, k, filter) = (q.vector.to_vec(), q.k, q.filter.clone());
        let found = tokio::task::spawn_blocking(move || {
            let s = slab.read().map_err(|_| ())?;
            Ok::<_, ()>(
                s.nearest(&vector, k, &filter)
                    .into_iter()
                    .map(|(score, row)| (s.ids[row].clone(), score))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map_err(|e| RuntimeError::backend("memory search", e))?
        .map_err(|()| RuntimeError::invalid("memory", "a search panicked"))?;
        let mut hits = Vec::with_capacity(found.len());
        for (id, score) in found {
            // Text and metadata from the store of record; a row deleted meanwhile is skipped.
            if let Some(d) = self.get(tenant, q.collection, &id).await? {
                hits.push(Hit {
                    id,
                    score,
                    text: d.text,
                    metadata: d.metadata,
                });
            }
        }
        Ok(hits)
    }

    async fn collections(&self, tenant: &Tenant) -> Result<Vec<Collection>, RuntimeError> {
        let rows = sqlx::query(
            "SELECT collection, model, count(*) AS n FROM memory_documents WHERE tenant = ?
             GROUP BY collection, model ORDER BY collection, model",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("memory collections", e))?;
        Ok(group_collections(
            rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))),
        ))
    }

    async fn stale(&self, model: &str, limit: usize) -> Result<Vec<Stale>, RuntimeError> {
        let rows: Vec<StaleRow> = sqlx::query_as(
            "SELECT tenant, collection, id, text, version FROM memory_documents WHERE model <> ? LIMIT ?",
        )
        .bind(model)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("memory stale", e))?;
        rows.into_iter().map(stale_of).collect()
    }

    async fn revector(
        &self,
        stale: &Stale,
        model: &str,
        vector: &[f32],
    ) -> Result<bool, RuntimeError> {
        let _writes = self.writes.lock().await;
        let done = sqlx::query(
            "UPDATE memory_documents SET model = ?, dimensions = ?, vector = ?
             WHERE tenant = ? AND collection = ? AND id = ? AND version = ?",
        )
        .bind(model)
        .bind(vector.len() as i64)
        .bind(to_blob(vector))
        .bind(stale.tenant.as_str())
        .bind(&stale.collection)
        .bind(&stale.id)
        .bind(stale.version)
        .execute(&self.pool)
        .await
        .map_err(|e| RuntimeError::backend("memory revector", e))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(d) = self
            .get(&stale.tenant, &stale.collection, &stale.id)
            .await?
        {
            self.apply(
                &stale.tenant,
                &stale.collection,
                &Stored {
                    id: d.id,
                    text: d.text,
                    metadata: d.metadata,
                    model: model.to_string(),
                    vector: vector.to_vec(),
                },
            );
        }
        Ok(true)
    }
}
