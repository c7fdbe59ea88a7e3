//! The agentbus server (axum): `/health`, the dashboard page, its JSON API, and the MCP
//! endpoint `/mcp` (Streamable HTTP, `rmcp`). The same MCP tools are served over stdio.
//! Every request except `/health` and the page shell is authenticated with a bearer token.

pub mod auth;
pub mod bridge;
mod core_tools;
pub mod direct;
pub mod domain;
pub mod mcp;
pub mod quota;
pub mod resources;
pub mod subscriptions;
pub mod tls;
pub mod trace;
pub mod workspace_tools;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::auth::{Authenticator, FileTokens, Identity, RateLimiter, SecretTokens};
use self::mcp::AgentbusMcp;
use crate::config::ServerConfig;
use crate::runtime::deployments::{AwsDeployments, Deployments, SqliteDeployments};
use crate::runtime::events::{AwsEvents, Event, EventBus, SqliteEvents};
use crate::runtime::kv::{DynamoKv, KvStore, SqliteKv};
use crate::runtime::secrets::{AwsSecrets, SecretStore, SqliteSecrets};
use crate::runtime::{RuntimeError, Tenant, embedded};
use crate::workspace::{Env, Workspace};

/// Requests per tenant per minute.
pub const RATE_LIMIT_PER_MINUTE: u32 = 1200;

/// The largest MCP request body the extra-small tools need (a KV value of 350 KiB, a secret,
/// an event, in JSON); a higher tier's tools may need more
/// ([`mcp::ToolExtension::max_request_bytes`]).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// What the server says about its workspace.
#[derive(Clone, Debug, Serialize)]
pub struct WorkspaceInfo {
    pub tier: String,
    pub env: String,
    /// `aws` or `embedded`.
    pub backend: String,
}

/// Health of each backing service, as seen by one tenant.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Health {
    pub kv: String,
    pub events: String,
    pub secrets: String,
    pub kv_entries: Option<u64>,
}

pub struct AppState {
    pub kv: Arc<dyn KvStore>,
    pub events: Arc<dyn EventBus>,
    pub secrets: Arc<dyn SecretStore>,
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    /// What each tenant may write a day.
    pub quota: quota::DailyQuota,
    pub info: WorkspaceInfo,
    pub started: Instant,
    /// Events published through this server, for live dashboards.
    pub live: broadcast::Sender<(Tenant, Event)>,
    /// Cancelled when the server shuts down: ends live streams.
    pub shutdown: CancellationToken,
    /// Check the Host header against loopback names (DNS-rebinding protection for local use).
    pub local_only: bool,
    /// Where the server's metrics go besides its dashboard (a deployed server whose layers
    /// asked for CloudWatch metrics).
    pub emf: Option<Arc<crate::metrics::EmfSink>>,
    /// Resources changed through this server, for their watchers.
    pub changes: subscriptions::Changes,
    /// The workspace's deploy record, for the console's Workspace panel.
    pub deployments: Arc<dyn Deployments>,
    /// The tier's resources and cost, set once before serving (the ladder knows them).
    tier_facts: std::sync::OnceLock<crate::ops::TierFacts>,
    /// Tools of higher tiers, set once before serving.
    extensions: std::sync::OnceLock<Vec<Arc<dyn mcp::ToolExtension>>>,
    /// The data offered as MCP resources: the KV store's, then the layers' (built on first use,
    /// once the extensions are set).
    sources: std::sync::OnceLock<resources::Sources>,
}

/// The runtime services of one target (AWS or embedded).
struct Backends {
    kv: Arc<dyn KvStore>,
    events: Arc<dyn EventBus>,
    secrets: Arc<dyn SecretStore>,
    deployments: Arc<dyn Deployments>,
}

impl AppState {
    fn assemble(
        backends: Backends,
        auth: Authenticator,
        info: WorkspaceInfo,
        local_only: bool,
        rate_per_minute: u32,
    ) -> Self {
        let Backends {
            kv,
            events,
            secrets,
            deployments,
        } = backends;
        AppState {
            deployments,
            tier_facts: std::sync::OnceLock::new(),
            kv,
            events,
            secrets,
            auth,
            limiter: RateLimiter::new(rate_per_minute),
            quota: quota::DailyQuota::default(),
            info,
            started: Instant::now(),
            live: broadcast::channel(256).0,
            shutdown: CancellationToken::new(),
            local_only,
            emf: None,
            changes: subscriptions::Changes::default(),
            extensions: std::sync::OnceLock::new(),
            sources: std::sync::OnceLock::new(),
        }
    }

    /// Adds a higher tier's tools; once, before serving (later calls are refused).
    pub fn set_extensions(
        &self,
        extensions: Vec<Arc<dyn mcp::ToolExtension>>,
    ) -> Result<(), RuntimeError> {
        self.extensions
            .set(extensions)
            .map_err(|_| RuntimeError::invalid("extensions", "already set"))
    }

    /// Sets the tier's resources and cost for the console; once, before serving.
    pub fn set_tier_facts(&self, facts: crate::ops::TierFacts) -> Result<(), RuntimeError> {
        self.tier_facts
            .set(facts)
            .map_err(|_| RuntimeError::invalid("tier facts", "already set"))
    }

    pub fn extensions(&self) -> &[Arc<dyn mcp::ToolExtension>] {
        self.extensions.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every kind of data offered as MCP resources: the KV store's, then the layers'.
    pub fn resource_sources(&self) -> resources::Sources {
        self.sources
            .get_or_init(|| {
                let mut sources: Vec<Arc<dyn resources::ResourceSource>> =
                    vec![Arc::new(resources::KvResources(self.kv.clone()))];
                for ext in self.extensions() {
                    sources.extend(ext.resources());
                }
                sources.into()
            })
            .clone()
    }

    /// The embedded backends in a data directory.
    pub async fn embedded(
        data_dir: &Path,
        tier: &str,
        env: &str,
        rate_per_minute: u32,
    ) -> Result<Arc<Self>, RuntimeError> {
        let pool = embedded::open(data_dir).await?;
        Ok(Arc::new(Self::assemble(
            Backends {
                kv: Arc::new(SqliteKv::new(embedded::Direct::new(data_dir))),
                events: Arc::new(SqliteEvents::new(pool.clone())),
                secrets: Arc::new(SqliteSecrets::new(pool.clone())),
                deployments: Arc::new(SqliteDeployments::new(pool)),
            },
            Authenticator::new(Box::new(FileTokens {
                path: data_dir.join("tokens.json"),
            })),
            WorkspaceInfo {
                tier: tier.into(),
                env: env.into(),
                backend: "embedded".into(),
            },
            true,
            rate_per_minute,
        )))
    }

    /// The AWS backends named by a server configuration.
    pub fn aws(
        aws: &crate::aws::AwsClients,
        cfg: &ServerConfig,
        rate_per_minute: u32,
    ) -> Result<Arc<Self>, RuntimeError> {
        let env =
            Env::new(&cfg.env).map_err(|e| RuntimeError::invalid("AGENTBUS_ENV", e.to_string()))?;
        let ws = Workspace::new(env, "unknown", cfg.region.clone());
        let mut state = Self::assemble(
            Backends {
                kv: Arc::new(DynamoKv::new(aws.dynamodb(), &cfg.kv_table)),
                events: Arc::new(AwsEvents::new(
                    aws.events(),
                    aws.logs(),
                    &cfg.event_bus,
                    &cfg.events_log_group,
                )),
                secrets: Arc::new(AwsSecrets::new(aws.secrets(), &ws)),
                deployments: Arc::new(AwsDeployments::new(aws, &ws)),
            },
            Authenticator::new(Box::new(SecretTokens {
                client: aws.secrets(),
                secret: cfg.secret.clone(),
            })),
            WorkspaceInfo {
                tier: cfg.tier.short().into(),
                env: cfg.env.clone(),
                backend: "aws".into(),
            },
            false,
            rate_per_minute,
        );
        state.emf = cfg
            .metrics_log_group
            .as_ref()
            .map(|group| Arc::new(crate::metrics::EmfSink::new(aws.logs(), group, &ws.id())));
        Ok(Arc::new(state))
    }

    /// Publishes an event and shows it to live dashboards of the tenant.
    pub async fn publish(
        &self,
        tenant: &Tenant,
        detail_type: &str,
        detail: &Value,
    ) -> Result<Event, RuntimeError> {
        self.quota.take(tenant, quota::Meter::Events, 1)?;
        let ev = self.events.publish(tenant, detail_type, detail).await?;
        let _ = self.live.send((tenant.clone(), ev.clone()));
        Ok(ev)
    }

    /// Refuses a new KV key of a tenant at its entry quota (a key it has may be written). The
    /// store is counted at most once a minute; at the limit, one read tells a new key from one
    /// it has.
    pub async fn admit_kv_entry(&self, tenant: &Tenant, key: &str) -> Result<(), RuntimeError> {
        if self.quota.limits().kv_entries == 0 {
            return Ok(());
        }
        let kept = match self.quota.kept(tenant, quota::Kept::KvEntries) {
            Some(n) => n,
            None => {
                let n = self.kv.count(tenant).await?;
                self.quota.counted(tenant, quota::Kept::KvEntries, n);
                n
            }
        };
        if self.quota.admit_entry(tenant, kept).is_ok() || self.kv.get(tenant, key).await?.is_some()
        {
            return Ok(());
        }
        self.quota.admit_entry(tenant, kept)
    }

    pub async fn health(&self, tenant: &Tenant) -> Health {
        let (kv, events, secrets) = tokio::join!(
            self.kv.count(tenant),
            self.events.recent(tenant, 1),
            self.secrets.list(tenant)
        );
        let state = |r: Result<(), RuntimeError>| match r {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                tracing::warn!("health check: {e}");
                "unavailable".to_string()
            }
        };
        Health {
            kv_entries: kv.as_ref().ok().copied(),
            kv: state(kv.map(|_| ())),
            events: state(events.map(|_| ())),
            secrets: state(secrets.map(|_| ())),
        }
    }
}

/// The whole HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    surface(state, true)
}

/// The HTTP surface, with plain tool calls on the direct lane or (to compare the two) all
/// through rmcp.
fn surface(state: Arc<AppState>, direct_lane: bool) -> Router {
    let max_request = state
        .extensions()
        .iter()
        .map(|e| e.max_request_bytes())
        .fold(MAX_REQUEST_BYTES, usize::max);
    let mut mcp_config = StreamableHttpServerConfig::default()
        // A 2026-07-28 request (no session) whose answer is its only message gets it as JSON,
        // not as an event stream of one event.
        .with_json_response(true)
        .with_cancellation_token(state.shutdown.child_token())
        .with_max_request_body_bytes(max_request);
    if !state.local_only {
        // Behind a front or at a task address the Host varies; every request carries a
        // bearer token, which is what protects the endpoint there.
        mcp_config = mcp_config.disable_allowed_hosts();
    }
    let tools = AgentbusMcp::new(state.clone(), None);
    let lane = direct_lane.then(|| {
        direct::Lane::new(
            tools.clone(),
            state.local_only,
            max_request,
            state.shutdown.child_token(),
        )
    });
    let mcp = SharedMcp(Arc::new(McpEndpoint {
        lane,
        rmcp: StreamableHttpService::new(
            move || Ok(tools.fresh()),
            Arc::new(LocalSessionManager::default()),
            mcp_config,
        ),
    }));
    let sessions = Arc::new(SessionOwners::default());
    let mcp = tower::ServiceBuilder::new()
        .layer(middleware::map_response(session_closed))
        .layer(middleware::from_fn_with_state(sessions, own_sessions))
        .service(mcp);
    let mut protected = Router::new()
        .route("/api/status", get(api_status))
        .route("/api/events", get(api_events))
        .route("/api/events/stream", get(api_stream))
        .route("/api/metrics", get(api_metrics))
        .route("/api/workspace", get(api_workspace))
        .route_service("/mcp", mcp.clone())
        .route_service("/mcp/", mcp);
    for ext in state.extensions() {
        protected = protected.merge(ext.api());
    }
    let protected = protected.layer(middleware::from_fn_with_state(state.clone(), require_token));
    let routes = Router::new()
        .route("/health", get(health))
        .route("/", get(dashboard))
        // MCP clients look for OAuth metadata after a 401; say plainly there is none.
        .route("/.well-known/oauth-protected-resource", get(no_oauth))
        .route(
            "/.well-known/oauth-protected-resource/{*rest}",
            get(no_oauth),
        )
        .route("/.well-known/oauth-authorization-server", get(no_oauth))
        .route(
            "/.well-known/oauth-authorization-server/{*rest}",
            get(no_oauth),
        )
        .route("/.well-known/openid-configuration", get(no_oauth))
        .merge(protected)
        .with_state(state);
    // What every answer gets is one stack around the whole app, not `Router::layer`s: each
    // of those boxes every route once more, and a request clones each box inside the one it
    // passes (through `/mcp`'s five layers, a fifth of a tool call's instructions).
    let app = tower::ServiceBuilder::new()
        .layer(middleware::from_fn(trace::traced))
        .layer(middleware::map_response(security_headers))
        .service(routes);
    Router::new().fallback_service(app)
}

/// `/mcp`: the direct lane for plain sessionless tool calls ([`direct`]), rmcp's service for
/// everything else.
struct McpEndpoint {
    lane: Option<direct::Lane>,
    rmcp: StreamableHttpService<AgentbusMcp, LocalSessionManager>,
}

/// The MCP endpoint behind an `Arc`: each request's middleware clones the service it wraps,
/// and this clone is a reference count where the MCP library's own copies its configuration.
#[derive(Clone)]
struct SharedMcp(Arc<McpEndpoint>);

impl tower::Service<Request> for SharedMcp {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let mcp = self.0.clone();
        Box::pin(async move {
            let req = match &mcp.lane {
                Some(lane) => match lane.take(req).await {
                    Ok(answered) => return Ok(answered),
                    Err(req) => req,
                },
                None => req,
            };
            Ok(mcp.rmcp.handle(req).await.map(axum::body::Body::new))
        })
    }
}

/// Headers every answer carries: no content sniffing, no referrer, never inside a frame.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// Which token opened each MCP session: a session answers only the token that opened it, so
/// another token (of another tenant, say) that learns its id can neither use nor close it.
/// Sessions are also kept by token, so counting a token's sessions reads only its own: many
/// sessions of one tenant do not slow another's requests.
#[derive(Default)]
struct SessionOwners {
    inner: std::sync::Mutex<Owners>,
}

#[derive(Default)]
struct Owners {
    /// Each session's token.
    owner: std::collections::HashMap<String, String>,
    /// Each token's sessions, with when each was last used.
    held: std::collections::HashMap<String, std::collections::HashMap<String, Instant>>,
}

/// A session idle this long is gone: the MCP library's keep-alive, which this server keeps.
const SESSION_IDLE: std::time::Duration =
    rmcp::transport::streamable_http_server::session::local::SessionConfig::DEFAULT_KEEP_ALIVE;

/// Sessions one token may hold open at once: abandoned sessions cost memory (about 65 KB
/// each) until they idle out, and one token must not hold the server's memory. An agent
/// framework may run many sessions in parallel under one token (the MCP benchmark runs 64).
pub const MAX_SESSIONS_PER_TOKEN: usize = 128;

/// Sessions known here before the idle ones are forgotten.
const SESSIONS_KEPT: usize = 1_000;

impl SessionOwners {
    fn owners(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `token_id` may use session `sid` (a session nobody opened here is left to the
    /// MCP library, which answers 404).
    fn allows(&self, sid: &str, token_id: &str) -> bool {
        let mut owners = self.owners();
        match owners.owner.get(sid) {
            Some(owner) if owner == token_id => {
                if let Some(seen) = owners
                    .held
                    .get_mut(token_id)
                    .and_then(|sessions| sessions.get_mut(sid))
                {
                    *seen = Instant::now();
                }
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// How many live sessions `token_id` holds.
    fn held_by(&self, token_id: &str) -> usize {
        self.owners().held.get(token_id).map_or(0, |sessions| {
            sessions
                .values()
                .filter(|seen| seen.elapsed() < SESSION_IDLE)
                .count()
        })
    }

    fn opened(&self, sid: &str, token_id: &str) {
        let mut guard = self.owners();
        let owners = &mut *guard;
        if owners.owner.len() >= SESSIONS_KEPT {
            for sessions in owners.held.values_mut() {
                sessions.retain(|sid, seen| {
                    let live = seen.elapsed() < SESSION_IDLE;
                    if !live {
                        owners.owner.remove(sid);
                    }
                    live
                });
            }
            owners.held.retain(|_, sessions| !sessions.is_empty());
        }
        owners.owner.insert(sid.to_string(), token_id.to_string());
        owners
            .held
            .entry(token_id.to_string())
            .or_default()
            .insert(sid.to_string(), Instant::now());
    }

    fn closed(&self, sid: &str) {
        let mut owners = self.owners();
        if let Some(token_id) = owners.owner.remove(sid)
            && let Some(sessions) = owners.held.get_mut(&token_id)
        {
            sessions.remove(sid);
            if sessions.is_empty() {
                owners.held.remove(&token_id);
            }
        }
    }
}

const SESSION_HEADER: &str = "mcp-session-id";

async fn own_sessions(
    State(sessions): State<Arc<SessionOwners>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(id) = identity(req.extensions()) else {
        return unauthorized(Refusal::Missing);
    };
    let sid = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(sid) = &sid
        && !sessions.allows(sid, &id.token_id)
    {
        // As for a session that does not exist: its id tells another token nothing.
        return (StatusCode::NOT_FOUND, "session not found\n").into_response();
    }
    let method = req.method().clone();
    // A POST without a session opens one.
    if sid.is_none()
        && method == axum::http::Method::POST
        && sessions.held_by(&id.token_id) >= MAX_SESSIONS_PER_TOKEN
    {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this token holds {MAX_SESSIONS_PER_TOKEN} open MCP sessions: close one (DELETE /mcp with its Mcp-Session-Id) or let an idle one expire ({} s)\n",
                SESSION_IDLE.as_secs()
            ),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let r = next.run(req).await;
    match (
        &sid,
        r.headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok()),
    ) {
        (None, Some(new)) if r.status().is_success() => sessions.opened(new, &id.token_id),
        (Some(old), _) if method == axum::http::Method::DELETE && r.status().is_success() => {
            sessions.closed(old)
        }
        _ => {}
    }
    r
}

/// A session closed by DELETE: rmcp answers 202 Accepted, but the session is already gone,
/// and MCP clients (the Python SDK among them) expect 200 or 204 for a completed close.
async fn session_closed(method: axum::http::Method, mut r: Response) -> Response {
    if method == axum::http::Method::DELETE && r.status() == StatusCode::ACCEPTED {
        *r.status_mut() = StatusCode::NO_CONTENT;
        *r.body_mut() = axum::body::Body::empty();
        r.headers_mut().remove(header::CONTENT_TYPE);
        r.headers_mut().remove(header::CONTENT_LENGTH);
    }
    r
}

async fn no_oauth() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "error": "this server does not use OAuth: send Authorization: Bearer TOKEN, from `agentbus token create`"
        })),
    )
        .into_response()
}

/// Why a request was refused (RFC 6750, section 3).
enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is unknown, revoked or expired.
    Invalid,
}

fn unauthorized(why: Refusal) -> Response {
    let (challenge, body) = match why {
        Refusal::Missing => (
            "Bearer realm=\"agentbus\"",
            "missing bearer token: send Authorization: Bearer TOKEN (`agentbus token create` prints one)\n",
        ),
        Refusal::Invalid => (
            "Bearer realm=\"agentbus\", error=\"invalid_token\", error_description=\"the token is unknown, revoked or expired\"",
            "invalid bearer token: it is unknown, revoked or expired\n",
        ),
    };
    let mut r = (StatusCode::UNAUTHORIZED, body).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

async fn require_token(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return unauthorized(Refusal::Missing);
    };
    let Some(identity) = state.auth.verify(token).await else {
        return unauthorized(Refusal::Invalid);
    };
    if !state.limiter.allow(&identity) {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit: too many requests for this token or its tenant; retry in a minute\n",
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

async fn health(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(json!({
        "status": "healthy",
        "service": "agentbus",
        "version": env!("CARGO_PKG_VERSION"),
        "tier": state.info.tier,
        "env": state.info.env,
        "timestamp": crate::engine::lock::iso(crate::runtime::now_secs()),
    }))
}

/// The dashboard page, under a strict content security policy: scripts only the page's own
/// (each carries this answer's nonce), connections only to this server, nothing framed,
/// no plugins, no other origin's anything.
async fn dashboard(State(state): State<Arc<AppState>>) -> Response {
    let nonce = match auth::random_hex(16) {
        Ok(n) => n,
        Err(e) => return api_error(&e),
    };
    let page = include_str!("dashboard.html")
        .replace("{{tier}}", &html_escape(&state.info.tier))
        .replace("{{env}}", &html_escape(&state.info.env))
        .replace("{{backend}}", &html_escape(&state.info.backend))
        .replace("{{version}}", env!("CARGO_PKG_VERSION"));
    let panels: String = state.extensions().iter().map(|e| e.panels()).collect();
    let page = page
        .replace("<!-- {{panels}} -->", &panels)
        .replace("<script>", &format!("<script nonce=\"{nonce}\">"));
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    );
    let mut r = Html(page).into_response();
    if let Ok(v) = HeaderValue::from_str(&policy) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn identity(req_ext: &axum::http::Extensions) -> Option<Identity> {
    req_ext.get::<Identity>().cloned()
}

/// The authenticated caller of an `/api/*` request (set by the token check).
pub fn caller(req_ext: &axum::http::Extensions) -> Option<Identity> {
    identity(req_ext)
}

/// A JSON error answer for the dashboard API: bad input is 400 with the reason, a failing
/// backing service 503 with the operation (details go to the log).
pub fn api_error(e: &RuntimeError) -> Response {
    match e {
        RuntimeError::Backend { op, .. } => {
            tracing::error!("dashboard API backend failure: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "error": format!("the backing service failed during {op}") })),
            )
                .into_response()
        }
        other => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": other.to_string() })),
        )
            .into_response(),
    }
}

async fn api_status(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let Some(id) = identity(req.extensions()) else {
        return unauthorized(Refusal::Missing);
    };
    let health = state.health(&id.tenant).await;
    axum::Json(json!({
        "tier": state.info.tier,
        "env": state.info.env,
        "backend": state.info.backend,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "tenant": id.tenant,
        "role": id.role,
        "health": health,
    }))
    .into_response()
}

/// The workspace as the console's Workspace panel shows it: what runs, its resources and
/// their monthly cost, the budget's spend, and the last applies (on the embedded target, the
/// tier moves). What runs and what it costs by the price sheet, every token may read; who
/// deployed and what the account spends, only admins.
async fn api_workspace(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let Some(id) = identity(req.extensions()) else {
        return unauthorized(Refusal::Missing);
    };
    let unavailable = |what: &str, e: RuntimeError| {
        tracing::warn!("workspace panel: {what}: {e}");
        json!({ "unavailable": format!("{what} could not be read") })
    };
    let (history, budget) = if id.role == auth::Role::Admin {
        let (h, b) = tokio::join!(
            state
                .deployments
                .history(crate::runtime::deployments::CONSOLE_HISTORY),
            state.deployments.budget()
        );
        (
            h.map_or_else(|e| unavailable("the deploy history", e), |h| json!(h)),
            b.map_or_else(|e| unavailable("the budget", e), |b| json!(b)),
        )
    } else {
        let admins = json!({ "unavailable": "shown to admins only" });
        (admins.clone(), admins)
    };
    let facts = state.tier_facts.get();
    axum::Json(json!({
        "tier": state.info.tier,
        "env": state.info.env,
        "backend": state.info.backend,
        "version": env!("CARGO_PKG_VERSION"),
        "region": facts.map(|f| f.region.as_str()),
        "resources": facts.map(|f| &f.resources),
        "cost": facts.map(|f| json!({
            "total_usd": f.cost.total,
            "target_low_usd": f.cost.target_low,
            "target_high_usd": f.cost.target_high,
            "usage_profile": "light",
            "prices_as_of": f.cost.prices_as_of,
            "lines": f.cost.lines,
        })),
        "role": id.role,
        "budget": budget,
        "history": history,
    }))
    .into_response()
}

/// The caller's tenant's metrics of the last hour, minute by minute (the open minute last).
async fn api_metrics(req: Request) -> Response {
    let Some(id) = identity(req.extensions()) else {
        return unauthorized(Refusal::Missing);
    };
    axum::Json(json!({
        "interval_seconds": crate::metrics::interval().as_secs(),
        "windows": crate::metrics::global().recent(&id.tenant),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct RecentQuery {
    limit: Option<u32>,
}

async fn api_events(
    State(state): State<Arc<AppState>>,
    Query(q): Query<RecentQuery>,
    req: Request,
) -> Response {
    let Some(id) = identity(req.extensions()) else {
        return unauthorized(Refusal::Missing);
    };
    match state.events.recent(&id.tenant, q.limit.unwrap_or(20)).await {
        Ok(events) => axum::Json(json!({ "events": events })).into_response(),
        Err(RuntimeError::Invalid { what, why }) => {
            (StatusCode::BAD_REQUEST, format!("invalid {what}: {why}\n")).into_response()
        }
        Err(e) => {
            tracing::error!("recent events: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the event store is unavailable\n",
            )
                .into_response()
        }
    }
}

async fn api_stream(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let Some(id) = identity(req.extensions()) else {
        return unauthorized(Refusal::Missing);
    };
    let rx = state.live.subscribe();
    let stop = state.shutdown.clone();
    Sse::new(live_events(rx, id.tenant, stop))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The tenant's events as they are published, until the server shuts down.
fn live_events(
    mut rx: broadcast::Receiver<(Tenant, Event)>,
    tenant: Tenant,
    stop: CancellationToken,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream(move |tx| async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = rx.recv() => match msg {
                    Ok((t, ev)) if t == tenant => {
                        let data = serde_json::to_string(&ev).unwrap_or_default();
                        if tx.send(Ok(SseEvent::default().event("agentbus-event").data(data))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    })
}

/// A stream fed by an async task through a small channel.
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// How long a client may take to send a request's headers, also the first ones on a
/// connection and the next ones on a kept-alive one: a silent connection is closed after this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a server that speaks TLS itself reads the workspace certificate again, so a
/// rotated one (`agentbus certificate rotate`) is served without a restart.
pub const CERTIFICATE_FOLLOW: Duration = Duration::from_secs(300);

/// Connections served at once unless told otherwise; more wait in the listen backlog until
/// one closes.
pub const MAX_CONNECTIONS: usize = 512;

/// Serves until `signal` resolves, then stops accepting, ends live streams, and lets
/// in-flight requests finish. At most `max_connections` connections are served at once, and a
/// connection that sends no request headers for [`HEADER_READ_TIMEOUT`] is closed, so silent
/// clients cannot hold the server. With `tls`, connections speak TLS, and plain HTTP is
/// answered only to this machine ([`tls::wire`]).
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    max_connections: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = state.shutdown.clone();
    let metrics = tokio::spawn(crate::metrics::global().clone().run(
        state.emf.clone(),
        crate::metrics::interval(),
        stop.clone(),
    ));
    let app = router(state);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let connections = tokio_util::task::TaskTracker::new();
    tokio::pin!(signal);
    loop {
        // A free slot first: beyond the limit, connections wait in the backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = &mut signal => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        // Responses go out in several writes (headers, then the event stream): without
        // TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to every call.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {e}");
        }
        let app = app.clone();
        let stopping = stop.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                None => serve_connection(tcp, app, stopping).await,
                Some(tls) => serve_tls(tcp, peer, tls, app, stopping).await,
            }
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    stop.cancel();
    connections.wait().await;
    // The last window goes out before the process ends.
    if let Err(e) = metrics.await {
        tracing::error!("the server's metrics stopped: {e}");
    }
    Ok(())
}

/// One connection of a TLS-speaking server: TLS, plain HTTP from this machine, or the refusal.
/// The handshake has the header-read timeout: a silent client is closed as on plain HTTP.
async fn serve_tls(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    app: Router,
    stopping: CancellationToken,
) {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 1];
    let wire = match tokio::time::timeout(HEADER_READ_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => tls::wire(first[0], peer.ip().is_loopback()),
        _ => return,
    };
    match wire {
        tls::Wire::Tls => match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(tcp)).await {
            Ok(Ok(stream)) => serve_connection(stream, app, stopping).await,
            Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
            Err(_) => tracing::debug!("TLS handshake with {peer}: timed out"),
        },
        tls::Wire::Plain => serve_connection(tcp, app, stopping).await,
        tls::Wire::Refuse => {
            let mut tcp = tcp;
            let _ = tcp.write_all(&tls::plain_http_refusal()).await;
            let _ = tcp.shutdown().await;
        }
    }
}

/// Serves HTTP/1.1 on one connection until it closes or the server stops.
async fn serve_connection<I>(io: I, app: Router, stopping: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(connection);
    // The connection first: a request it has already received is read and answered before a
    // shutdown closes it; after the request in flight, it closes.
    let ended = tokio::select! {
        biased;
        ended = connection.as_mut() => ended,
        _ = stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("connection: {e}");
    }
}

/// Serves the MCP tools over stdin/stdout as one identity, until the client closes.
/// An MCP client of this server in the same process, acting as `identity` (the agents of
/// an embedded workflow use it, as agents elsewhere use the HTTP endpoint).
pub async fn in_process_client(
    state: Arc<AppState>,
    identity: Identity,
) -> Result<rmcp::service::RunningService<rmcp::RoleClient, ()>, String> {
    use rmcp::ServiceExt;
    let (server_io, client_io) = tokio::io::duplex(256 * 1024);
    let server = AgentbusMcp::new(state, Some(identity));
    tokio::spawn(async move {
        match server.serve(server_io).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => tracing::warn!("in-process MCP server: {e}"),
        }
    });
    ().serve(client_io).await.map_err(|e| e.to_string())
}

pub async fn serve_stdio(state: Arc<AppState>, identity: Identity) -> Result<(), String> {
    use rmcp::ServiceExt;
    let running = AgentbusMcp::new(state, Some(identity))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| e.to_string())?;
    running.waiting().await.map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_answers_only_its_token_and_each_token_counts_only_its_own_sessions() {
        let sessions = SessionOwners::default();
        for sid in ["a1", "a2", "a3"] {
            sessions.opened(sid, "token-a");
        }
        for sid in ["b1", "b2"] {
            sessions.opened(sid, "token-b");
        }
        assert_eq!(sessions.held_by("token-a"), 3);
        assert_eq!(sessions.held_by("token-b"), 2);
        assert_eq!(sessions.held_by("token-c"), 0);
        assert!(sessions.allows("a1", "token-a"));
        assert!(!sessions.allows("a1", "token-b"), "another token's session");
        assert!(
            sessions.allows("unknown", "token-b"),
            "left to the MCP library"
        );
        sessions.closed("a1");
        assert_eq!(sessions.held_by("token-a"), 2);
        assert!(
            sessions.allows("a1", "token-b"),
            "a closed session is forgotten"
        );
        sessions.closed("b1");
        sessions.closed("b2");
        assert_eq!(sessions.held_by("token-b"), 0);
        assert!(!sessions.owners().held.contains_key("token-b"));
    }
}
