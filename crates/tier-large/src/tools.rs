//! The large tier's MCP tools: vector memory. Everything is scoped to the caller's tenant
//! (from the token, never from arguments).

use std::sync::Arc;

use axum::extract::{Query, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tier_xs::server::mcp::{
    Access, Route, ToolExtension, explain, tool_annotations, tool_spec, typed_route,
};
use tier_xs::server::{AppState, api_error, caller};

use crate::memory::{Collection, Document, Hit, Memory, MemoryError, NewDocument};

/// Results of a search unless `k` says otherwise.
pub const DEFAULT_K: usize = 5;

#[derive(Clone)]
pub struct MemoryTools {
    memory: Memory,
}

impl MemoryTools {
    pub fn new(memory: Memory) -> Self {
        MemoryTools { memory }
    }
}

fn say(e: MemoryError) -> String {
    match e {
        MemoryError::Runtime(e) => explain(e),
        MemoryError::Embed(e) => {
            tracing::error!("embedding failed: {e}");
            format!("embedding failed ({e}); try again, and check the server log if it persists")
        }
        other => other.to_string(),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutArgs {
    /// The collection (1-64 characters of a-z, 0-9, _ . -); created by its first document.
    pub collection: String,
    /// 1-64 documents; an id already in the collection is replaced.
    pub documents: Vec<NewDocument>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PutOut {
    pub stored: usize,
    /// The embedding model of their vectors.
    pub model: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// The collection to search (see memory_collections).
    pub collection: String,
    /// What to look for, in words: documents are ranked by closeness of meaning.
    pub query: String,
    /// How many results, 1-100 (default 5).
    #[serde(default)]
    pub k: Option<usize>,
    /// Only documents whose metadata has each of these keys with exactly this value (strings,
    /// numbers, booleans).
    #[serde(default)]
    pub filter: Map<String, Value>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SearchOut {
    /// Closest first; `score` is the cosine similarity (1 is identical).
    pub hits: Vec<Hit>,
    pub model: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocArgs {
    /// The document's collection.
    pub collection: String,
    /// The document's id, as memory_put stored it.
    pub id: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct GetOut {
    pub found: bool,
    pub document: Option<Document>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeletedOut {
    pub deleted: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CollectionsOut {
    pub collections: Vec<Collection>,
    /// The model new documents and queries are embedded with (none: not configured).
    pub model: Option<String>,
}

/// `/api/memory/search`'s query string: the dashboard's search box.
#[derive(Debug, Deserialize)]
struct SearchQuery {
    collection: String,
    query: String,
    #[serde(default)]
    k: Option<usize>,
}

fn api_say(e: MemoryError) -> axum::response::Response {
    match e {
        MemoryError::Runtime(e) => api_error(&e),
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": say(other)})),
        )
            .into_response(),
    }
}

impl ToolExtension for MemoryTools {
    fn api(&self) -> axum::Router<Arc<AppState>> {
        let (m, c) = (self.memory.clone(), self.memory.clone());
        axum::Router::new()
            .route(
                "/api/memory/search",
                get(move |Query(q): Query<SearchQuery>, req: Request| {
                    let m = m.clone();
                    async move {
                        let Some(id) = caller(req.extensions()) else {
                            return StatusCode::UNAUTHORIZED.into_response();
                        };
                        let k = q.k.unwrap_or(DEFAULT_K);
                        match m
                            .search(&id.tenant, &q.collection, &q.query, k, &Map::new())
                            .await
                        {
                            Ok(hits) => {
                                axum::Json(serde_json::json!({ "hits": hits })).into_response()
                            }
                            Err(e) => api_say(e),
                        }
                    }
                }),
            )
            .route(
                "/api/memory/collections",
                get(move |req: Request| {
                    let c = c.clone();
                    async move {
                        let Some(id) = caller(req.extensions()) else {
                            return StatusCode::UNAUTHORIZED.into_response();
                        };
                        match c.store.collections(&id.tenant).await {
                            Ok(collections) => {
                                axum::Json(serde_json::json!({ "collections": collections }))
                                    .into_response()
                            }
                            Err(e) => api_error(&e),
                        }
                    }
                }),
            )
    }

    fn panels(&self) -> &'static str {
        include_str!("panels.html")
    }

    fn instructions(&self) -> &'static str {
        "The large tier adds vector memory: memory_put stores documents (text and metadata) in a \
         collection of your tenant, embedded for search; memory_search finds the documents closest \
         in meaning to a query (k results, optionally filtered by metadata); memory_get, \
         memory_delete and memory_collections read and tidy it."
    }

    fn routes(&self) -> Vec<Route> {
        let m = self.memory.clone();
        let put = {
            let m = m.clone();
            typed_route(
                tool_spec(
                    "memory_put",
                    "Store documents in a memory collection of your tenant: each text is embedded for memory_search and kept with its metadata; an existing id is replaced.",
                    tool_annotations(false, false, true),
                ),
                Access::Record,
                move |id, a: PutArgs| {
                    let m = m.clone();
                    async move {
                        // A workflow step that only reads may still put its run's own
                        // document (collection `runs`, id = the run's id).
                        if let Some(d) = a
                            .documents
                            .iter()
                            .find(|d| !id.may_write(&format!("{}/{}/", a.collection, d.id)))
                        {
                            return Err(format!(
                                "this agent's lane only reads: it may put its run's own document, not {}/{}",
                                a.collection, d.id
                            ));
                        }
                        let stored = m
                            .put(&id.tenant, &a.collection, a.documents)
                            .await
                            .map_err(say)?;
                        Ok(PutOut {
                            stored,
                            model: m.model().to_string(),
                        })
                    }
                },
            )
        };
        let search = {
            let m = m.clone();
            typed_route(
                tool_spec(
                    "memory_search",
                    "Find the documents of a memory collection closest in meaning to a query, best first, optionally only those whose metadata matches a filter.",
                    tool_annotations(true, false, true),
                ),
                Access::Read,
                move |id, a: SearchArgs| {
                    let m = m.clone();
                    async move {
                        let hits = m
                            .search(
                                &id.tenant,
                                &a.collection,
                                &a.query,
                                a.k.unwrap_or(DEFAULT_K),
                                &a.filter,
                            )
                            .await
                            .map_err(say)?;
                        Ok(SearchOut {
                            hits,
                            model: m.model().to_string(),
                        })
                    }
                },
            )
        };
        let get = {
            let m = m.clone();
            typed_route(
                tool_spec(
                    "memory_get",
                    "Read one document of a memory collection: its text, metadata, embedding model and version.",
                    tool_annotations(true, false, true),
                ),
                Access::Read,
                move |id, a: DocArgs| {
                    let m = m.clone();
                    async move {
                        let document = m
                            .store
                            .get(&id.tenant, &a.collection, &a.id)
                            .await
                            .map_err(explain)?;
                        Ok(GetOut {
                            found: document.is_some(),
                            document,
                        })
                    }
                },
            )
        };
        let delete = {
            let m = m.clone();
            typed_route(
                tool_spec(
                    "memory_delete",
                    "Delete one document of a memory collection.",
                    tool_annotations(false, true, true),
                ),
                Access::Write,
                move |id, a: DocArgs| {
                    let m = m.clone();
                    async move {
                        let deleted = m
                            .store
                            .delete(&id.tenant, &a.collection, &a.id)
                            .await
                            .map_err(explain)?;
                        Ok(DeletedOut { deleted })
                    }
                },
            )
        };
        let collections = {
            let m = m.clone();
            typed_route(
                tool_spec(
                    "memory_collections",
                    "List your tenant's memory collections with their document counts and embedding models.",
                    tool_annotations(true, false, true),
                ),
                Access::Read,
                move |id, _a: NoArgs| {
                    let m = m.clone();
                    async move {
                        let collections = m.store.collections(&id.tenant).await.map_err(explain)?;
                        Ok(CollectionsOut {
                            collections,
                            model: m.embedder.is_some().then(|| m.model().to_string()),
                        })
                    }
                },
            )
        };
        vec![put, search, get, delete, collections]
    }
}
