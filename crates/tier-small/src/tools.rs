//! The small tier's MCP tools, added to the extra-small server: artifacts and the timeline.
//! Everything is scoped to the caller's tenant (from the token, never from arguments).

use crate::aws::SmallAws;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Query, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tier_xs::aws::AwsClients;
use tier_xs::runtime::RuntimeError;
use tier_xs::server::mcp::{
    Access, Route, ToolExtension, explain, tool_annotations, tool_spec, typed_route, typed_route_in,
};
use tier_xs::server::quota::Kept;
use tier_xs::server::{AppState, api_error, caller};

use crate::config::SmallConfig;
use crate::runtime::artifacts::{
    ArtifactPage, ArtifactStore, EmbeddedArtifacts, Presigned, S3Artifacts, Transfer,
};
use crate::runtime::monitor::Monitor;
use crate::runtime::monitor::dynamo::{DynamoEventStore, SqsFeed};
use crate::runtime::monitor::sqlite::{LogFeed, SqliteEventStore};
use crate::runtime::monitor::webhook::{Reach, Webhooks};
use crate::runtime::timeline::{
    EmbeddedTimeline, NewRecord, S3Timeline, TimelinePage, TimelineQuery, TimelineRecord,
    TimelineStore,
};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct SmallTools {
    pub artifacts: Arc<dyn ArtifactStore>,
    pub timeline: Arc<dyn TimelineStore>,
    pub monitor: Monitor,
    /// The feed's dead-letter queue (AWS only: the embedded feed has none).
    pub dead_letters: Option<DeadLetters>,
}

impl SmallTools {
    /// Refuses `adding` bytes past the tenant's quota of stored files. The store's total is
    /// read at most once a minute; this server's own writes are added to it meanwhile, by
    /// [`Self::stored`] once they are done.
    async fn admit_bytes(
        &self,
        state: &AppState,
        tenant: &tier_xs::runtime::Tenant,
        adding: u64,
    ) -> Result<(), String> {
        let q = &state.quota;
        if q.limits().stored_mib == 0 {
            return Ok(());
        }
        let kept = match q.kept(tenant, Kept::StoredBytes) {
            Some(n) => n,
            None => {
                let n = self.artifacts.stored_bytes(tenant).await.map_err(explain)?;
                q.counted(tenant, Kept::StoredBytes, n);
                n
            }
        };
        q.admit_bytes(tenant, kept, adding).map_err(explain)?;
        Ok(())
    }

    /// Adds `bytes` this server stored (or let a client upload) to the tenant's count, so a
    /// failed write counts nothing.
    fn stored(state: &AppState, tenant: &tier_xs::runtime::Tenant, bytes: u64) {
        state
            .quota
            .kept_changed(tenant, Kept::StoredBytes, bytes as i64);
    }
}

/// The depth of the feed's dead-letter queue: messages the monitor could not take.
#[derive(Clone)]
pub struct DeadLetters {
    sqs: aws_sdk_sqs::Client,
    queue: String,
    /// Its URL, looked up once.
    url: Arc<tokio::sync::OnceCell<String>>,
}

impl DeadLetters {
    /// Messages waiting plus those being read (SQS's approximate counts).
    pub async fn depth(&self) -> Result<u64, RuntimeError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let url = self
            .url
            .get_or_try_init(|| crate::runtime::monitor::dynamo::queue_url(&self.sqs, &self.queue))
            .await?;
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| RuntimeError::backend("read the dead-letter queue's depth", e))?;
        let count = |a: A| {
            attrs
                .attributes()
                .and_then(|m| m.get(&a))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(count(A::ApproximateNumberOfMessages) + count(A::ApproximateNumberOfMessagesNotVisible))
    }
}

/// What brings the bus's events to the monitor; the server runs it in the background.
pub enum Feed {
    Log(LogFeed),
    Sqs(SqsFeed),
}

impl Feed {
    pub async fn run(self, stop: CancellationToken) {
        match self {
            Feed::Log(f) => f.run(stop).await,
            Feed::Sqs(f) => f.run(stop).await,
        }
    }
}

impl SmallTools {
    /// On embedded storage in `data_dir` (the same database as the extra-small services),
    /// delivering webhooks within `reach` ([`crate::config::embedded_reach`]).
    pub async fn embedded(data_dir: &Path, reach: Reach) -> Result<(Self, Feed), RuntimeError> {
        let pool = tier_xs::runtime::embedded::open(data_dir).await?;
        let monitor = Monitor::new(
            Arc::new(SqliteEventStore::open(pool.clone()).await?),
            Webhooks::new(reach)?,
        );
        let feed = Feed::Log(LogFeed::new(pool.clone(), monitor.clone()));
        Ok((
            SmallTools {
                artifacts: Arc::new(EmbeddedArtifacts::open(pool.clone(), data_dir).await?),
                timeline: Arc::new(EmbeddedTimeline::open(pool).await?),
                monitor,
                dead_letters: None,
            },
            feed,
        ))
    }

    /// On the workspace's buckets, tables and queue.
    pub fn aws(
        aws: &AwsClients,
        cfg: &SmallConfig,
        reach: Reach,
    ) -> Result<(Self, Feed), RuntimeError> {
        let monitor = Monitor::new(
            Arc::new(DynamoEventStore::new(aws.dynamodb(), cfg)),
            Webhooks::new(reach)?,
        );
        let feed = Feed::Sqs(SqsFeed::new(aws.sqs(), &cfg.events_queue, monitor.clone()));
        Ok((
            SmallTools {
                artifacts: Arc::new(S3Artifacts::new(aws.s3(), &cfg.artifacts_bucket)),
                timeline: Arc::new(S3Timeline::new(aws.s3(), &cfg.timeline_bucket)),
                monitor,
                dead_letters: Some(DeadLetters {
                    sqs: aws.sqs(),
                    queue: cfg.dead_letter_queue.clone(),
                    url: Arc::default(),
                }),
            },
            feed,
        ))
    }
}

/// Whether a media type is text: `text/*`, JSON, XML, YAML, JavaScript, TOML, CSV (and the
/// `+json` / `+xml` suffixes), or anything with a `charset`.
pub fn is_text_type(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/json"
                | "application/xml"
                | "application/yaml"
                | "application/x-yaml"
                | "application/toml"
                | "application/javascript"
                | "application/x-ndjson"
        )
        || ct.contains("charset=")
}

/// An artifact's content as a tool returns it: text types that are valid UTF-8 as is
/// (`utf8`), everything else as base64, so binary content always round-trips even when its
/// bytes happen to be valid UTF-8.
pub fn wire_content(content_type: &str, data: Vec<u8>) -> (&'static str, String) {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    if !is_text_type(content_type) {
        return ("base64", b64(&data));
    }
    match String::from_utf8(data) {
        Ok(s) => ("utf8", s),
        Err(e) => ("base64", b64(e.as_bytes())),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutArgs {
    /// Path-like key, e.g. `plans/2026-11-26/plan.md` (1-512 bytes, no `..`).
    pub key: String,
    /// The content: text as is, or base64 with `encoding: "base64"`.
    pub content: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Media type (default `text/plain; charset=utf-8`, or `application/octet-stream` for base64).
    #[serde(default)]
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyArgs {
    /// The artifact's key, as `artifacts_put` stored it (e.g. `plans/2026-11-26/plan.md`).
    pub key: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only keys that start with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Artifacts per page, 1-1000 (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlArgs {
    /// The artifact's key (e.g. `plans/2026-11-26/plan.md`).
    pub key: String,
    /// A URL to upload (PUT) instead of download (GET).
    #[serde(default)]
    pub upload: bool,
    /// For an upload: its exact size in bytes (at most 1 GiB). The size is signed into the
    /// URL, which then takes a body of that size only.
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct GetOut {
    pub found: bool,
    pub key: String,
    pub content_type: Option<String>,
    pub size: Option<u64>,
    /// `utf8` when the content is text, else `base64`.
    pub encoding: Option<String>,
    pub content: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeletedOut {
    pub deleted: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// From this time on (RFC 3339, inclusive).
    #[serde(default)]
    pub from: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    #[serde(default)]
    pub to: Option<String>,
    /// Only this agent's records.
    #[serde(default)]
    pub agent: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Records per page, 1-200 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl From<QueryArgs> for TimelineQuery {
    fn from(a: QueryArgs) -> Self {
        TimelineQuery {
            from: a.from,
            to: a.to,
            agent: a.agent,
            cursor: a.cursor,
            limit: a.limit,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ArtifactsQuery {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

impl ToolExtension for SmallTools {
    fn api(&self) -> axum::Router<Arc<AppState>> {
        let (a, t) = (self.artifacts.clone(), self.timeline.clone());
        let dead = self.dead_letters.clone();
        crate::monitor_tools::api(self.monitor.clone())
            .route(
                "/api/monitor/dead-letters",
                get(move |req: Request| {
                    let dead = dead.clone();
                    async move {
                        let Some(id) = caller(req.extensions()) else {
                            return StatusCode::UNAUTHORIZED.into_response();
                        };
                        // The workspace's queue, not a tenant's: its depth is for admins.
                        if id.role != tier_xs::server::auth::Role::Admin {
                            return (
                                StatusCode::FORBIDDEN,
                                axum::Json(serde_json::json!({ "error": "admins only" })),
                            )
                                .into_response();
                        }
                        let depth = match &dead {
                            Some(d) => match d.depth().await {
                                Ok(n) => Some(n),
                                Err(e) => return api_error(&e),
                            },
                            None => None,
                        };
                        axum::Json(serde_json::json!({ "depth": depth })).into_response()
                    }
                }),
            )
            .route(
                "/api/artifacts",
                get(move |Query(q): Query<ArtifactsQuery>, req: Request| {
                    let a = a.clone();
                    async move {
                        let Some(id) = caller(req.extensions()) else {
                            return StatusCode::UNAUTHORIZED.into_response();
                        };
                        match a
                            .list(
                                &id.tenant,
                                q.prefix.as_deref().unwrap_or(""),
                                q.cursor.as_deref(),
                                q.limit,
                            )
                            .await
                        {
                            Ok(page) => axum::Json(page).into_response(),
                            Err(e) => api_error(&e),
                        }
                    }
                }),
            )
            .route(
                "/api/timeline",
                get(move |Query(q): Query<QueryArgs>, req: Request| {
                    let t = t.clone();
                    async move {
                        let Some(id) = caller(req.extensions()) else {
                            return StatusCode::UNAUTHORIZED.into_response();
                        };
                        match t.query(&id.tenant, &q.into()).await {
                            Ok(page) => axum::Json(page).into_response(),
                            Err(e) => api_error(&e),
                        }
                    }
                }),
            )
    }

    fn panels(&self) -> &'static str {
        include_str!("panels.html")
    }

    fn resources(&self) -> Vec<Arc<dyn tier_xs::server::resources::ResourceSource>> {
        vec![
            Arc::new(ArtifactResources(self.artifacts.clone())),
            Arc::new(TimelineResources(self.timeline.clone())),
        ]
    }

    /// An inline artifact of the largest size, base64 in JSON (a third more), with room for
    /// the JSON-RPC envelope and the other arguments.
    fn max_request_bytes(&self) -> usize {
        crate::runtime::artifacts::MAX_INLINE_BYTES.div_ceil(3) * 4 + 64 * 1024
    }

    fn instructions(&self) -> &'static str {
        "The small tier adds artifacts (artifacts_*: files by path-like key, with presigned URLs for large ones on AWS) \
         and the timeline (timeline_append, timeline_query: the agents' record of what they did). \
         Event monitoring records every event on the bus once: events_query and events_get read them \
         (by source, detail type, priority, time), events_counts counts them per hour or day, events_health sums up \
         the last 24 hours. rules_put saves an \
         EventBridge-style pattern; subscriptions_create sends the events a rule matches to a webhook \
         (signed POSTs, retried; failures show in subscriptions_list)."
    }

    fn routes(&self) -> Vec<Route> {
        let t = self.clone();
        let put = {
            let t = t.clone();
            typed_route_in(
                tool_spec(
                    "artifacts_put",
                    "Store an artifact (a plan, report, diff...) under a key of your tenant; overwrites. Up to 10 MiB; larger ones through artifacts_url.",
                    tool_annotations(false, true, true),
                ),
                Access::Record,
                move |state: Arc<AppState>, id, a: PutArgs| {
                    let t = t.clone();
                    async move {
                        if !id.may_write(&a.key) {
                            return Err(format!(
                                "this agent's lane only reads: it may write its run's records, not {}",
                                a.key
                            ));
                        }
                        let (data, default_type) = match a.encoding.as_deref() {
                            None | Some("utf8") => {
                                (a.content.into_bytes(), "text/plain; charset=utf-8")
                            }
                            Some("base64") => (
                                base64::engine::general_purpose::STANDARD
                                    .decode(a.content.as_bytes())
                                    .map_err(|e| format!("content is not valid base64: {e}"))?,
                                "application/octet-stream",
                            ),
                            Some(other) => {
                                return Err(format!(
                                    "encoding {other:?}: use \"utf8\" or \"base64\""
                                ));
                            }
                        };
                        let ct = a.content_type.unwrap_or_else(|| default_type.to_string());
                        t.admit_bytes(&state, &id.tenant, data.len() as u64).await?;
                        let put = t
                            .artifacts
                            .put(&id.tenant, &a.key, &data, &ct)
                            .await
                            .map_err(explain)?;
                        SmallTools::stored(&state, &id.tenant, data.len() as u64);
                        Ok(put)
                    }
                },
            )
        };
        let get = {
            let t = t.clone();
            typed_route(
                tool_spec(
                    "artifacts_get",
                    "Read an artifact of your tenant: text types come back as is (`encoding: utf8`), anything else as base64 (`encoding: base64`).",
                    tool_annotations(true, false, true),
                ),
                Access::Read,
                move |id, a: KeyArgs| {
                    let t = t.clone();
                    async move {
                        let got = t.artifacts.get(&id.tenant, &a.key).await.map_err(explain)?;
                        Ok(match got {
                            None => GetOut {
                                found: false,
                                key: a.key,
                                content_type: None,
                                size: None,
                                encoding: None,
                                content: None,
                            },
                            Some((meta, data)) => {
                                let (encoding, content) = wire_content(&meta.content_type, data);
                                GetOut {
                                    found: true,
                                    key: meta.key,
                                    content_type: Some(meta.content_type),
                                    size: Some(meta.size),
                                    encoding: Some(encoding.into()),
                                    content: Some(content),
                                }
                            }
                        })
                    }
                },
            )
        };
        let list = {
            let t = t.clone();
            typed_route(
                tool_spec(
                    "artifacts_list",
                    "List your tenant's artifacts by key prefix, in key order, a page at a time (pass next_cursor back).",
                    tool_annotations(true, false, true),
                ),
                Access::Read,
                move |id, a: ListArgs| {
                    let t = t.clone();
                    async move {
                        let page: ArtifactPage = t
                            .artifacts
                            .list(
                                &id.tenant,
                                a.prefix.as_deref().unwrap_or(""),
                                a.cursor.as_deref(),
                                a.limit,
                            )
                            .await
                            .map_err(explain)?;
                        Ok(page)
                    }
                },
            )
        };
        let delete = {
            let t = t.clone();
            typed_route_in(
                tool_spec(
                    "artifacts_delete",
                    "Delete an artifact of your tenant. On AWS the bucket keeps old versions for 90 days.",
                    tool_annotations(false, true, true),
                ),
                Access::Write,
                move |state: Arc<AppState>, id, a: KeyArgs| {
                    let t = t.clone();
                    async move {
                        let deleted = t
                            .artifacts
                            .delete(&id.tenant, &a.key)
                            .await
                            .map_err(explain)?;
                        // Its size is not known here: the next quota check asks the store.
                        state.quota.recount(&id.tenant, Kept::StoredBytes);
                        Ok(DeletedOut { deleted })
                    }
                },
            )
        };
        let url = {
            let t = t.clone();
            typed_route_in(
                tool_spec(
                    "artifacts_url",
                    "A presigned URL (15 minutes) to upload (give its exact size; send the headers returned, as they are) or download one large artifact directly. On AWS only.",
                    tool_annotations(true, false, false),
                ),
                Access::Write,
                move |state: Arc<AppState>, id, a: UrlArgs| {
                    let t = t.clone();
                    async move {
                        let transfer = match (a.upload, a.size) {
                            (true, Some(size)) => Transfer::Upload { size },
                            (true, None) => {
                                return Err(explain(RuntimeError::invalid(
                                    "size",
                                    "an upload URL needs the artifact's exact size in bytes",
                                )));
                            }
                            (false, Some(_)) => {
                                return Err(explain(RuntimeError::invalid(
                                    "size",
                                    "only an upload takes a size",
                                )));
                            }
                            (false, None) => Transfer::Download,
                        };
                        if let Transfer::Upload { size } = transfer {
                            t.admit_bytes(&state, &id.tenant, size).await?;
                        }
                        let p: Option<Presigned> = t
                            .artifacts
                            .presign(&id.tenant, &a.key, transfer)
                            .await
                            .map_err(explain)?;
                        // Counted when signed: the upload itself is between the client and
                        // the store, and several URLs signed at once must not each fit alone.
                        if let (Some(_), Transfer::Upload { size }) = (&p, transfer) {
                            SmallTools::stored(&state, &id.tenant, size);
                        }
                        p.ok_or_else(|| {
                            "this server stores artifacts on local disk, which has no URLs: use artifacts_put and artifacts_get".to_string()
                        })
                    }
                },
            )
        };
        let append = {
            let t = t.clone();
            typed_route(
                tool_spec(
                    "timeline_append",
                    "Append a record to your tenant's timeline: agent, task_id, action, summary, and optionally artifacts (keys), refs (links by kind) and metrics (numbers). The server sets its time.",
                    tool_annotations(false, false, false),
                ),
                Access::Record,
                move |id, r: NewRecord| {
                    let t = t.clone();
                    async move {
                        let rec: TimelineRecord =
                            t.timeline.append(&id.tenant, &r).await.map_err(explain)?;
                        Ok(rec)
                    }
                },
            )
        };
        let query = typed_route(
            tool_spec(
                "timeline_query",
                "Read your tenant's timeline in time order, by time range (RFC 3339) and agent, a page at a time.",
                tool_annotations(true, false, true),
            ),
            Access::Read,
            move |id, a: QueryArgs| {
                let t = t.clone();
                async move {
                    let page: TimelinePage = t
                        .timeline
                        .query(&id.tenant, &a.into())
                        .await
                        .map_err(explain)?;
                    Ok(page)
                }
            },
        );
        let mut all = vec![put, get, list, delete, url, append, query];
        all.extend(crate::monitor_tools::routes(&self.monitor));
        all
    }
}

/// The tenant's artifacts as MCP resources: `agentbus://artifacts/{key}`, text when their
/// type is text and they are UTF-8, bytes (base64) otherwise.
struct ArtifactResources(Arc<dyn ArtifactStore>);

#[async_trait::async_trait]
impl tier_xs::server::resources::ResourceSource for ArtifactResources {
    fn kind(&self) -> &'static str {
        "artifacts"
    }
    fn describe(&self) -> (&'static str, &'static str) {
        (
            "Artifact",
            "An artifact of your tenant (a plan, report, diff…): text when its type is text, bytes otherwise.",
        )
    }
    async fn list(
        &self,
        tenant: &tier_xs::runtime::Tenant,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<
        (Vec<tier_xs::server::resources::Listed>, Option<String>),
        tier_xs::runtime::RuntimeError,
    > {
        let page = self
            .0
            .list(
                tenant,
                prefix,
                cursor,
                Some(tier_xs::server::resources::PAGE),
            )
            .await?;
        Ok((
            page.artifacts
                .into_iter()
                .map(|a| tier_xs::server::resources::Listed {
                    key: a.key,
                    mime_type: Some(a.content_type),
                    size: Some(a.size),
                })
                .collect(),
            page.next_cursor,
        ))
    }
    async fn fingerprint(
        &self,
        tenant: &tier_xs::runtime::Tenant,
        key: &str,
    ) -> Result<Option<String>, tier_xs::runtime::RuntimeError> {
        self.0.fingerprint(tenant, key).await
    }
    fn written_by(&self, tool: &str) -> bool {
        matches!(tool, "artifacts_put" | "artifacts_delete")
    }
    async fn read(
        &self,
        tenant: &tier_xs::runtime::Tenant,
        key: &str,
    ) -> Result<Option<tier_xs::server::resources::Contents>, tier_xs::runtime::RuntimeError> {
        use tier_xs::server::resources::{Contents, is_text};
        Ok(self.0.get(tenant, key).await?.map(|(meta, bytes)| {
            if is_text(&meta.content_type) {
                match String::from_utf8(bytes) {
                    Ok(text) => Contents::Text {
                        mime_type: meta.content_type,
                        text,
                    },
                    Err(e) => Contents::Bytes {
                        mime_type: meta.content_type,
                        bytes: e.into_bytes(),
                    },
                }
            } else {
                Contents::Bytes {
                    mime_type: meta.content_type,
                    bytes,
                }
            }
        }))
    }
}

/// The tenant's recent timeline records as MCP resources: `agentbus://timeline/{name}`
/// (`{ts}_{agent}_{id}`), those of the last [`TIMELINE_RESOURCE_DAYS`] days, each as JSON.
/// Listing reads names only; a record is read when it is read.
struct TimelineResources(Arc<dyn TimelineStore>);

/// How far back the timeline's records are offered as resources (`timeline_query` reads all).
const TIMELINE_RESOURCE_DAYS: u64 = 7;

#[async_trait::async_trait]
impl tier_xs::server::resources::ResourceSource for TimelineResources {
    fn kind(&self) -> &'static str {
        "timeline"
    }
    fn describe(&self) -> (&'static str, &'static str) {
        (
            "Timeline record",
            "A record of your tenant's timeline from the last 7 days (an agent's step: who, what, which artifacts), as JSON; timeline_query searches them all.",
        )
    }
    async fn list(
        &self,
        tenant: &tier_xs::runtime::Tenant,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<
        (Vec<tier_xs::server::resources::Listed>, Option<String>),
        tier_xs::runtime::RuntimeError,
    > {
        let from = crate::runtime::timeline::ts_of(
            tier_xs::runtime::now_millis()
                .saturating_sub(TIMELINE_RESOURCE_DAYS * 24 * 3600 * 1000),
        );
        let (names, more) = self
            .0
            .names(
                tenant,
                &from,
                prefix,
                cursor,
                tier_xs::server::resources::PAGE,
            )
            .await?;
        let next = more.then(|| names.last().cloned()).flatten();
        Ok((
            names
                .into_iter()
                .map(|key| tier_xs::server::resources::Listed {
                    key,
                    mime_type: Some("application/json".into()),
                    size: None,
                })
                .collect(),
            next,
        ))
    }
    async fn read(
        &self,
        tenant: &tier_xs::runtime::Tenant,
        key: &str,
    ) -> Result<Option<tier_xs::server::resources::Contents>, tier_xs::runtime::RuntimeError> {
        Ok(self
            .0
            .get(tenant, key)
            .await?
            .map(|r| tier_xs::server::resources::Contents::Text {
                mime_type: "application/json".into(),
                text: serde_json::to_string_pretty(&r).unwrap_or_default(),
            }))
    }
    /// A record never changes once written: it is there or not.
    async fn fingerprint(
        &self,
        tenant: &tier_xs::runtime::Tenant,
        key: &str,
    ) -> Result<Option<String>, tier_xs::runtime::RuntimeError> {
        Ok(self.0.get(tenant, key).await?.map(|r| r.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedded server others can reach (`serve --host 0.0.0.0`) delivers webhooks only
    /// where a deployed one may: not to this machine or its private network.
    #[tokio::test]
    async fn an_exposed_embedded_server_keeps_the_deployed_webhook_rules() {
        use crate::runtime::monitor::Rule;
        let dir = std::env::temp_dir().join(format!("agentbus-exposed-{}", std::process::id()));
        let t = tier_xs::runtime::Tenant::new("t").unwrap();
        let rule = Rule {
            name: "all".into(),
            pattern: serde_json::json!({"source": ["x"]}),
            description: String::new(),
            enabled: true,
            updated_at: String::new(),
        };
        for exposed in [false, true] {
            let reach = crate::config::embedded_reach(exposed);
            let (tools, _feed) = SmallTools::embedded(&dir, reach).await.unwrap();
            tools.monitor.put_rule(&t, &rule).await.unwrap();
            let r = tools
                .monitor
                .subscribe(&t, "all", "http://127.0.0.1:9/hook")
                .await;
            assert_eq!(r.is_ok(), !exposed, "exposed {exposed}: {:?}", r.err());
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn binary_content_comes_back_as_base64_even_when_it_is_valid_utf8() {
        // `AAECAwQ=`: bytes 0-4, valid UTF-8, stored as application/octet-stream.
        let bytes = vec![0u8, 1, 2, 3, 4];
        assert_eq!(
            wire_content("application/octet-stream", bytes.clone()),
            ("base64", "AAECAwQ=".to_string())
        );
        assert_eq!(
            wire_content("image/png", b"plain".to_vec()),
            ("base64", "cGxhaW4=".to_string())
        );
        assert_eq!(
            wire_content("text/plain; charset=utf-8", b"# plan\n".to_vec()),
            ("utf8", "# plan\n".to_string())
        );
        assert_eq!(
            wire_content("application/vnd.api+json", b"{}".to_vec()),
            ("utf8", "{}".to_string())
        );
        // Text that is not UTF-8 still round-trips.
        assert_eq!(
            wire_content("text/plain", vec![0xff, 0xfe]),
            ("base64", "//4=".to_string())
        );
    }
}
