//! Vector memory: per-tenant collections of documents (text, metadata, and the embedding of
//! the text with the model and dimensions that made it), searched by k nearest neighbours
//! (cosine) with metadata filters.
//!
//! [`VectorStore`] is the storage trait, with a PostgreSQL/pgvector backend ([`pgvector`]:
//! Aurora on AWS, or any Postgres) and an embedded one ([`embedded`]: SQLite as the store of
//! record, an exact scan in memory). One conformance suite ([`conformance`]) runs on both.
//! [`Memory`] puts an [`Embedder`] in front: texts in, vectors stored, queries embedded.

/// Vector memory's metrics (the server's registry, [`tier_xs::metrics`]).
pub mod names {
    /// Milliseconds a vector memory search took (the store's part, embedding excluded).
    pub const MEMORY_SEARCH_LATENCY: &str = "MemorySearchLatency";
    /// Rows a vector memory search returned.
    pub const MEMORY_SEARCH_ROWS: &str = "MemorySearchRows";
    /// Milliseconds an embedding request took, by `Provider`.
    pub const EMBEDDING_LATENCY: &str = "EmbeddingLatency";
    /// Embedding requests that failed, by `Provider`.
    pub const EMBEDDING_ERRORS: &str = "EmbeddingErrors";
    /// Milliseconds a database transaction waited for its pooled connection (and its BEGIN).
    pub const POOL_WAIT: &str = "PoolWait";
}

pub mod embedded;
pub mod pgvector;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tier_xs::runtime::{RuntimeError, Tenant};

use crate::embed::Embedder;
use tier_xs::metrics;

/// Largest text of a document, in bytes (the embedding covers its first 256 tokens with the
/// local model; the whole text is kept).
pub const MAX_TEXT: usize = 32 * 1024;
/// Largest metadata object, serialized.
pub const MAX_METADATA: usize = 8 * 1024;
/// Most results of one search.
pub const MAX_K: usize = 100;
/// Most keys of one filter.
pub const MAX_FILTER_KEYS: usize = 16;
/// Most documents one call puts.
pub const MAX_BATCH: usize = crate::embed::MAX_BATCH;

/// A stored document, as `memory_get` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Document {
    pub id: String,
    pub collection: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    /// The embedding model of its vector.
    pub model: String,
    pub dimensions: usize,
    /// Incremented by every put of this id.
    pub version: i64,
    pub updated_at: String,
}

/// A document with its vector, to store.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub model: String,
    pub vector: Vec<f32>,
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Hit {
    pub id: String,
    /// Cosine similarity to the query, -1 to 1 (higher is closer).
    pub score: f32,
    pub text: String,
    pub metadata: Map<String, Value>,
}

/// A collection of a tenant.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Collection {
    pub name: String,
    pub documents: u64,
    /// The embedding models of its vectors (more than one while a model change re-embeds).
    pub models: Vec<String>,
}

/// A document whose vector another model made, to embed again.
#[derive(Clone, Debug, PartialEq)]
pub struct Stale {
    pub tenant: Tenant,
    pub collection: String,
    pub id: String,
    pub text: String,
    pub version: i64,
}

/// Metadata every result must have: each key equal to its value (strings, numbers, booleans).
pub type Filter = Map<String, Value>;

/// A search: the `k` documents of `collection` nearest to `vector` (made by `model`) that
/// match `filter`.
#[derive(Clone, Debug)]
pub struct Query<'a> {
    pub collection: &'a str,
    pub model: &'a str,
    pub vector: &'a [f32],
    pub k: usize,
    pub filter: &'a Filter,
}

#[async_trait]
pub trait VectorStore: Send + Sync {
    /// Stores (or replaces) documents of one collection.
    async fn put(
        &self,
        tenant: &Tenant,
        collection: &str,
        docs: &[Stored],
    ) -> Result<(), RuntimeError>;
    async fn get(
        &self,
        tenant: &Tenant,
        collection: &str,
        id: &str,
    ) -> Result<Option<Document>, RuntimeError>;
    async fn delete(
        &self,
        tenant: &Tenant,
        collection: &str,
        id: &str,
    ) -> Result<bool, RuntimeError>;
    /// The nearest documents first; exactly `k` when the collection has that many matches.
    async fn search(&self, tenant: &Tenant, query: &Query<'_>) -> Result<Vec<Hit>, RuntimeError>;
    async fn collections(&self, tenant: &Tenant) -> Result<Vec<Collection>, RuntimeError>;
    /// Up to `limit` documents (of any tenant) whose vectors another model than `model` made.
    async fn stale(&self, model: &str, limit: usize) -> Result<Vec<Stale>, RuntimeError>;
    /// Replaces the vector of a document, only if it is still at `version`.
    async fn revector(
        &self,
        stale: &Stale,
        model: &str,
        vector: &[f32],
    ) -> Result<bool, RuntimeError>;
}

/// A collection name: 1-64 characters of `[a-z0-9_.-]`, starting with a letter or digit.
pub fn check_collection(name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::invalid(
            "collection",
            format!(
                "{name:?}: use 1-64 characters of a-z, 0-9, _ . - (starting with a letter or digit)"
            ),
        ))
    }
}

/// A document id: 1-256 bytes, no control characters.
pub fn check_id(id: &str) -> Result<(), RuntimeError> {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(RuntimeError::invalid(
            "id",
            "use 1-256 bytes without control characters",
        ));
    }
    Ok(())
}

fn check_document(doc: &Stored) -> Result<(), RuntimeError> {
    check_id(&doc.id)?;
    if doc.text.trim().is_empty() {
        return Err(RuntimeError::invalid("text", "a document needs some text"));
    }
    if doc.text.len() > MAX_TEXT {
        return Err(RuntimeError::TooLarge {
            size: doc.text.len(),
            max: MAX_TEXT,
        });
    }
    let meta = serde_json::to_string(&doc.metadata)
        .unwrap_or_default()
        .len();
    if meta > MAX_METADATA {
        return Err(RuntimeError::invalid(
            "metadata",
            format!("{meta} bytes; the limit is {MAX_METADATA}"),
        ));
    }
    check_vector(&doc.vector)
}

fn check_vector(v: &[f32]) -> Result<(), RuntimeError> {
    if v.is_empty() || v.len() > 16_000 || v.iter().any(|x| !x.is_finite()) {
        return Err(RuntimeError::invalid(
            "vector",
            "1-16000 finite values are needed",
        ));
    }
    Ok(())
}

/// Checks what every backend refuses alike, before it touches storage.
pub fn check_put(collection: &str, docs: &[Stored]) -> Result<(), RuntimeError> {
    check_collection(collection)?;
    if docs.is_empty() || docs.len() > MAX_BATCH {
        return Err(RuntimeError::invalid(
            "documents",
            format!("1-{MAX_BATCH} per call"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for d in docs {
        check_document(d)?;
        if !seen.insert(d.id.as_str()) {
            return Err(RuntimeError::invalid(
                "documents",
                format!("id {:?} appears twice", d.id),
            ));
        }
    }
    Ok(())
}

pub fn check_query(q: &Query<'_>) -> Result<(), RuntimeError> {
    check_collection(q.collection)?;
    check_vector(q.vector)?;
    if q.k == 0 || q.k > MAX_K {
        return Err(RuntimeError::invalid("k", format!("use 1-{MAX_K}")));
    }
    check_filter(q.filter)
}

/// A filter's keys: at most [`MAX_FILTER_KEYS`], each with a string, number or boolean.
pub fn check_filter(filter: &Filter) -> Result<(), RuntimeError> {
    if filter.len() > MAX_FILTER_KEYS {
        return Err(RuntimeError::invalid(
            "filter",
            format!("at most {MAX_FILTER_KEYS} keys"),
        ));
    }
    if let Some((k, _)) = filter
        .iter()
        .find(|(_, v)| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
    {
        return Err(RuntimeError::invalid(
            "filter",
            format!("{k:?}: compare with a string, number or boolean"),
        ));
    }
    Ok(())
}

/// Whether `metadata` matches `filter` (numbers compare by value: 1 equals 1.0).
pub fn matches(metadata: &Map<String, Value>, filter: &Filter) -> bool {
    filter
        .iter()
        .all(|(k, want)| match (metadata.get(k), want) {
            (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Some(have), want) => have == want,
            (None, _) => false,
        })
}

/// The ids of the `k` nearest of `docs` to `q` among those matching `filter`, exactly.
pub fn oracle(docs: &[Stored], q: &[f32], k: usize, filter: &Filter) -> Vec<String> {
    let mut scored: Vec<(f32, &str)> = docs
        .iter()
        .filter(|d| matches(&d.metadata, filter))
        .map(|d| (crate::embed::minilm::dot(q, &d.vector), d.id.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(k)
        .map(|(_, id)| id.to_string())
        .collect()
}

/// How many of `want` are in `got`, as a fraction (recall@k).
pub fn recall(got: &[String], want: &[String]) -> f64 {
    if want.is_empty() {
        return 1.0;
    }
    got.iter().filter(|g| want.contains(g)).count() as f64 / want.len() as f64
}

/// A stored metadata object from its JSON text.
fn metadata_of(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A document as both stores select it: text, metadata (JSON), model, dimensions, version,
/// updated_at.
type DocumentRow = (String, String, String, i64, i64, String);

fn document(id: &str, collection: &str, row: DocumentRow) -> Document {
    let (text, metadata, model, dimensions, version, updated_at) = row;
    Document {
        id: id.to_string(),
        collection: collection.to_string(),
        text,
        metadata: metadata_of(&metadata),
        model,
        dimensions: dimensions.max(0) as usize,
        version,
        updated_at,
    }
}

/// A stale document as both stores select it: tenant, collection, id, text, version.
type StaleRow = (String, String, String, String, i64);

fn stale_of(row: StaleRow) -> Result<Stale, RuntimeError> {
    let (tenant, collection, id, text, version) = row;
    Ok(Stale {
        tenant: Tenant::new(&tenant)?,
        collection,
        id,
        text,
        version,
    })
}

/// Collections from `(collection, model, documents)` rows ordered by collection: one entry
/// per collection, its models listed.
pub fn group_collections(rows: impl IntoIterator<Item = (String, String, i64)>) -> Vec<Collection> {
    let mut out: Vec<Collection> = Vec::new();
    for (name, model, n) in rows {
        let n = n.max(0) as u64;
        match out.last_mut() {
            Some(c) if c.name == name => {
                c.documents += n;
                c.models.push(model);
            }
            _ => out.push(Collection {
                name,
                documents: n,
                models: vec![model],
            }),
        }
    }
    out
}

/// What a caller puts: a document's text and metadata, without its vector.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDocument {
    /// The document's id in its collection; putting an id again replaces it.
    pub id: String,
    /// The text, embedded for search and kept as is (up to 32 KiB).
    pub text: String,
    /// Anything to filter on or keep with it (a JSON object, up to 8 KiB).
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// How much memory one tenant may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Documents in all its collections.
    pub documents: u64,
    pub collections: usize,
}

impl Default for Quota {
    /// 100,000 documents (about 150 MB of 384-dimension vectors with their HNSW graph) in
    /// at most 100 collections.
    fn default() -> Self {
        Quota {
            documents: 100_000,
            collections: 100,
        }
    }
}

/// Embedding calls one tenant may have running at once: embedding is the CPU-heavy part of
/// memory (a local model), and one tenant's bulk puts must leave the others room.
pub const TENANT_EMBEDDINGS: usize = 1;

/// Vector memory with its embedder: what the tools and agents use.
#[derive(Clone)]
pub struct Memory {
    pub store: Arc<dyn VectorStore>,
    /// None: no embedding model is configured; reads and deletes still work.
    pub embedder: Option<Arc<dyn Embedder>>,
    pub quota: Quota,
    embedding:
        Arc<std::sync::Mutex<std::collections::HashMap<Tenant, Arc<tokio::sync::Semaphore>>>>,
}

/// Why a memory call failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("embedding failed: {0}")]
    Embed(#[from] crate::embed::EmbedError),
    #[error(
        "no embedding model is configured: set AGENTBUS_EMBEDDINGS (local:DIR, openai:MODEL or bedrock:MODEL_ID; see the README)"
    )]
    NoEmbedder,
}

impl Memory {
    /// Memory on `store`, embedding with `embedder`, under the default [`Quota`].
    pub fn new(store: Arc<dyn VectorStore>, embedder: Option<Arc<dyn Embedder>>) -> Self {
        Memory {
            store,
            embedder,
            quota: Quota::default(),
            embedding: Arc::default(),
        }
    }

    /// The same memory under another quota.
    pub fn with_quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// Embeds `texts` for `tenant`, at most [`TENANT_EMBEDDINGS`] calls of a tenant at once.
    async fn embed_for(
        &self,
        tenant: &Tenant,
        embedder: &Arc<dyn Embedder>,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, MemoryError> {
        let gate = self
            .embedding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(TENANT_EMBEDDINGS)))
            .clone();
        let _turn = gate
            .acquire_owned()
            .await
            .map_err(|e| RuntimeError::invalid("embeddings", e.to_string()))?;
        let started = std::time::Instant::now();
        let made = embedder.embed(texts).await;
        let values = [
            (
                names::EMBEDDING_LATENCY,
                metrics::Unit::Milliseconds,
                metrics::ms(started.elapsed()),
            ),
            (names::EMBEDDING_ERRORS, metrics::Unit::Count, 1.0),
        ];
        let recorded = if made.is_err() {
            &values[..]
        } else {
            &values[..1]
        };
        metrics::observe(
            Some(("Provider", embedder.provider())),
            Some(tenant),
            recorded,
        );
        Ok(made?)
    }

    /// Refuses a put that would take the tenant past its quota (checked before the put: a
    /// few puts at once may pass it by at most their own size).
    async fn check_quota(
        &self,
        tenant: &Tenant,
        collection: &str,
        adding: usize,
    ) -> Result<(), MemoryError> {
        let held = self.store.collections(tenant).await?;
        let is_new = !held.iter().any(|c| c.name == collection);
        if is_new && held.len() >= self.quota.collections {
            return Err(RuntimeError::invalid(
                "collection",
                format!(
                    "{collection} would be collection {} of your tenant; the quota is {} (delete one first)",
                    held.len() + 1,
                    self.quota.collections
                ),
            )
            .into());
        }
        let documents: u64 = held.iter().map(|c| c.documents).sum();
        if documents + adding as u64 > self.quota.documents {
            return Err(RuntimeError::invalid(
                "documents",
                format!(
                    "your tenant holds {documents} documents; {adding} more would pass its quota of {}",
                    self.quota.documents
                ),
            )
            .into());
        }
        Ok(())
    }

    /// The configured embedding model's name (empty: none).
    pub fn model(&self) -> &str {
        self.embedder.as_ref().map_or("", |e| e.model())
    }

    fn embedder(&self) -> Result<&Arc<dyn Embedder>, MemoryError> {
        self.embedder.as_ref().ok_or(MemoryError::NoEmbedder)
    }

    /// Embeds and stores documents.
    pub async fn put(
        &self,
        tenant: &Tenant,
        collection: &str,
        docs: Vec<NewDocument>,
    ) -> Result<usize, MemoryError> {
        check_collection(collection)?;
        if docs.is_empty() || docs.len() > MAX_BATCH {
            return Err(
                RuntimeError::invalid("documents", format!("1-{MAX_BATCH} per call")).into(),
            );
        }
        for d in &docs {
            check_id(&d.id)?;
            if d.text.len() > MAX_TEXT {
                return Err(RuntimeError::TooLarge {
                    size: d.text.len(),
                    max: MAX_TEXT,
                }
                .into());
            }
        }
        self.check_quota(tenant, collection, docs.len()).await?;
        let embedder = self.embedder()?;
        let texts: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
        let vectors = self.embed_for(tenant, embedder, &texts).await?;
        let stored: Vec<Stored> = docs
            .into_iter()
            .zip(vectors)
            .map(|(d, vector)| Stored {
                id: d.id,
                text: d.text,
                metadata: d.metadata,
                model: embedder.model().to_string(),
                vector,
            })
            .collect();
        self.store.put(tenant, collection, &stored).await?;
        Ok(stored.len())
    }

    /// The `k` documents nearest to `text`. Documents whose vectors another model made are
    /// not among them until the background re-embedding reaches them ([`Memory::reembed`]).
    pub async fn search(
        &self,
        tenant: &Tenant,
        collection: &str,
        text: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>, MemoryError> {
        check_collection(collection)?;
        check_filter(filter)?;
        if text.trim().is_empty() || text.len() > MAX_TEXT {
            return Err(
                RuntimeError::invalid("query", format!("1-{MAX_TEXT} bytes of text")).into(),
            );
        }
        let embedder = self.embedder()?;
        let vector = self
            .embed_for(tenant, embedder, &[text.to_string()])
            .await?
            .pop()
            .ok_or_else(|| RuntimeError::invalid("query", "the model made no vector"))?;
        let query = Query {
            collection,
            model: embedder.model(),
            vector: &vector,
            k,
            filter,
        };
        let started = std::time::Instant::now();
        let hits = self.store.search(tenant, &query).await?;
        metrics::observe(
            None,
            Some(tenant),
            &[
                (
                    names::MEMORY_SEARCH_LATENCY,
                    metrics::Unit::Milliseconds,
                    metrics::ms(started.elapsed()),
                ),
                (
                    names::MEMORY_SEARCH_ROWS,
                    metrics::Unit::Count,
                    hits.len() as f64,
                ),
            ],
        );
        Ok(hits)
    }

    /// Embeds again, with the current model, up to `limit` documents another model embedded;
    /// how many it did.
    pub async fn reembed(&self, limit: usize) -> Result<usize, MemoryError> {
        let embedder = self.embedder()?;
        let stale = self.store.stale(embedder.model(), limit).await?;
        let mut done = 0;
        for batch in stale.chunks(MAX_BATCH) {
            let texts: Vec<String> = batch.iter().map(|s| s.text.clone()).collect();
            let vectors = embedder.embed(&texts).await?;
            for (s, v) in batch.iter().zip(vectors) {
                if self.store.revector(s, embedder.model(), &v).await? {
                    done += 1;
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_compare_numbers_by_value_and_need_every_key() {
        let meta = json!({"kind": "note", "n": 1, "ok": true})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let f = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(matches(&meta, &f(json!({"n": 1.0, "kind": "note"}))));
        assert!(!matches(&meta, &f(json!({"kind": "note", "missing": 1}))));
        assert!(!matches(&meta, &f(json!({"ok": "true"}))));
    }

    #[test]
    fn collection_names_are_checked() {
        assert!(check_collection("notes-2026.v1").is_ok());
        for bad in ["", "Notes", "-x", "a/b", &"x".repeat(65)] {
            assert!(check_collection(bad).is_err(), "{bad}");
        }
    }
}
