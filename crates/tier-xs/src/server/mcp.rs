//! The MCP server of the extra-small tier (official `rmcp` SDK): KV, events, secrets and
//! status tools with typed inputs and structured outputs. The caller's tenant and role come
//! from the authenticated request (HTTP) or from the process (stdio), never from arguments.

use std::sync::Arc;

use std::future::Future;

use rmcp::handler::server::router::tool::{ToolRoute, ToolRouter};
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{CallToolResult, ContentBlock, Tool};
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, schemars, tool_handler};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Identity;
use super::resources::{self as res, ResourceSource};
use super::subscriptions::{self, SessionWatch, Watch, WatchError};
use super::{AppState, Health};
use crate::runtime::{RuntimeError, Tenant};

/// A tool's failure as the message a person can act on (sent with `isError: true`). Tools
/// spell out `Result<Json<T>, String>`: the SDK derives the output schema from that form.
/// A `resources/list` cursor this server did not give.
fn bad_cursor(c: &str) -> rmcp::ErrorData {
    rmcp::ErrorData::invalid_params(format!("cursor {c:?} is not one this server gave"), None)
}

/// A request without a caller (it cannot reach here through the token check).
fn unauthenticated(e: String) -> rmcp::ErrorData {
    rmcp::ErrorData::invalid_request(e, None)
}

/// Why a resource cannot be watched, as the error MCP clients expect.
fn watch_refused(e: WatchError) -> rmcp::ErrorData {
    match e {
        WatchError::NotOurs(_) => rmcp::ErrorData::resource_not_found(e.to_string(), None),
        WatchError::Full => rmcp::ErrorData::invalid_request(e.to_string(), None),
        WatchError::Ended => rmcp::ErrorData::internal_error(e.to_string(), None),
        WatchError::Runtime(e) => rmcp::ErrorData::internal_error(explain(e), None),
    }
}

pub fn explain(e: RuntimeError) -> String {
    match e {
        RuntimeError::Backend { op, .. } => {
            tracing::error!("tool backend failure: {e}");
            format!(
                "the backing service failed during {op}; try again, and check the server log if it persists"
            )
        }
        other => other.to_string(),
    }
}

#[derive(Clone)]
pub struct AgentbusMcp {
    state: Arc<AppState>,
    /// Set for stdio, where the whole process acts as one identity.
    fixed: Option<Identity>,
    /// The tools, made once and shared by every session and request: a 2026-07-28 request has
    /// no session, so it would otherwise make the whole table (schemas included) per call.
    tools: Arc<Tools>,
    /// The session's `logging/setLevel`: the least severity it is sent log messages of
    /// ([`LOG_OFF`] until it asks).
    log_level: Arc<std::sync::atomic::AtomicU8>,
    /// Every kind of data offered as resources: the KV store's, then the layers'.
    sources: res::Sources,
    /// The resources the session subscribed to (`resources/subscribe`).
    watch: SessionWatch,
}

/// No log messages for the session (it has not called `logging/setLevel`).
const LOG_OFF: u8 = u8::MAX;

/// A severity's rank, least first (RFC 5424's order, as MCP's logging levels follow it).
#[allow(deprecated)]
fn log_rank(level: rmcp::model::LoggingLevel) -> u8 {
    use rmcp::model::LoggingLevel as L;
    match level {
        L::Debug => 0,
        L::Info => 1,
        L::Notice => 2,
        L::Warning => 3,
        L::Error => 4,
        L::Critical => 5,
        L::Alert => 6,
        L::Emergency => 7,
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyArgs {
    /// The key, 1-512 bytes, no control characters.
    pub key: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvSetArgs {
    /// The key, 1-512 bytes, no control characters.
    pub key: String,
    /// The value (text, up to 350 KiB).
    pub value: String,
    /// Seconds until the entry expires (default 86400, at most 31536000: a year).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// True: the entry never expires; it lives until `kv_delete` (not with `ttl_seconds`).
    #[serde(default)]
    pub no_expiry: Option<bool>,
    /// Write only if the entry is at this version (compare-and-set).
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// Write only if the key does not exist yet.
    #[serde(default)]
    pub only_if_absent: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvListArgs {
    /// Only keys that start with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Entries per page, 1-1000 (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventArgs {
    /// What happened, e.g. "Agent Task Completed" (1-128 characters).
    pub detail_type: String,
    /// The event's data: a JSON object (up to 200 KiB).
    pub detail: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretPutArgs {
    /// Name: 1-128 of letters, digits, '-', '_', '.'.
    pub name: String,
    /// The secret value (never shown again by any tool).
    pub value: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretNameArgs {
    /// Name of the secret.
    pub name: String,
}

/// The arguments of a tool that takes none.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// The hints a tool gives its client; every agentbus tool stays inside its workspace.
pub fn tool_annotations(
    read_only: bool,
    destructive: bool,
    idempotent: bool,
) -> rmcp::model::ToolAnnotations {
    rmcp::model::ToolAnnotations::new()
        .read_only(read_only)
        .destructive(destructive)
        .idempotent(idempotent)
        .open_world(false)
}

/// A tool's name, description and hints; [`typed_route`] adds its schemas.
pub fn tool_spec(
    name: &'static str,
    description: &'static str,
    a: rmcp::model::ToolAnnotations,
) -> Tool {
    Tool::new(name, description, Arc::new(serde_json::Map::new())).annotate(a)
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct KvGetOut {
    pub found: bool,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct KvSetOut {
    pub key: String,
    pub version: u64,
    pub expires_at: Option<u64>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeletedOut {
    pub deleted: bool,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct KvListItem {
    pub key: String,
    pub version: u64,
    pub bytes: u64,
    pub expires_at: Option<u64>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct KvListOut {
    pub entries: Vec<KvListItem>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct EventOut {
    pub id: String,
    pub source: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SecretOut {
    pub name: String,
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SecretsOut {
    pub secrets: Vec<SecretOut>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StatusOut {
    pub tier: String,
    pub env: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub tenant: String,
    pub role: String,
    pub health: Health,
}

impl AgentbusMcp {
    pub fn new(state: Arc<AppState>, fixed: Option<Identity>) -> Self {
        let mut routes = super::core_tools::routes();
        for ext in state.extensions() {
            routes.extend(ext.routes());
        }
        let mut router = ToolRouter::new();
        let mut runs = std::collections::HashMap::with_capacity(routes.len());
        for route in routes {
            router.add_route(route.rmcp());
            runs.insert(route.tool.name.to_string(), route.run);
        }
        let sources = state.resource_sources();
        AgentbusMcp {
            state,
            fixed,
            tools: Arc::new(Tools { router, runs }),
            log_level: Arc::new(std::sync::atomic::AtomicU8::new(LOG_OFF)),
            sources,
            watch: SessionWatch::default(),
        }
    }

    /// A server for a new session or a sessionless request: the same tools, a log level and
    /// resource subscriptions of its own.
    pub fn fresh(&self) -> Self {
        AgentbusMcp {
            log_level: Arc::new(std::sync::atomic::AtomicU8::new(LOG_OFF)),
            watch: SessionWatch::default(),
            ..self.clone()
        }
    }

    /// A watch of the caller's resources.
    fn watch_for(&self, tenant: Tenant) -> Watch {
        self.state
            .changes
            .watch(tenant, self.sources.clone(), subscriptions::POLL)
    }

    /// Whether this server has a tool of that name.
    pub(crate) fn has_tool(&self, name: &str) -> bool {
        self.tools.runs.contains_key(name)
    }

    /// The caller: the token's identity (HTTP) or the process's (stdio).
    pub fn caller(&self, ctx: &RequestContext<RoleServer>) -> Option<Identity> {
        if let Some(id) = &self.fixed {
            return Some(id.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| super::caller(&p.extensions))
    }

    /// The caller, or why there is none.
    pub fn who(&self, ctx: &RequestContext<RoleServer>) -> Result<Identity, String> {
        self.caller(ctx)
            .ok_or_else(|| NOT_AUTHENTICATED.to_string())
    }
}

/// A request without a caller: it cannot reach a tool through the token check.
const NOT_AUTHENTICATED: &str = "not authenticated";

/// A tool call taking this long is logged (with its trace id) as well as measured.
pub const SLOW_TOOL_CALL: std::time::Duration = std::time::Duration::from_secs(1);

/// KV keys under this prefix configure the workspace (`agentbus/policy`, `agentbus/tools/…`):
/// every token of the tenant reads them, only an admin writes them.
pub const CONFIG_PREFIX: &str = "agentbus/";

/// Tools a higher tier adds to this server. They are served on the same sessions with the
/// same authentication; [`typed_route`] builds one from a typed function.
pub trait ToolExtension: Send + Sync {
    fn routes(&self) -> Vec<Route>;
    /// A sentence for the server's instructions about these tools.
    fn instructions(&self) -> &'static str;
    /// JSON API routes for the dashboard, served behind the same token check as `/api/*`
    /// ([`super::caller`] gives the identity).
    fn api(&self) -> axum::Router<Arc<AppState>> {
        axum::Router::new()
    }
    /// Dashboard panels: HTML sections (with their script) inserted into the signed-in page.
    /// A script registers a loader with `window.agentbusPanels.push(fn)`; it is called with
    /// the request headers (the bearer token) after sign-in and on every refresh.
    fn panels(&self) -> &'static str {
        ""
    }
    /// The largest MCP request (a whole JSON-RPC body) these tools accept, when that is more
    /// than [`super::MAX_REQUEST_BYTES`]: the server admits the largest any part needs.
    fn max_request_bytes(&self) -> usize {
        0
    }
    /// Data these tools keep that clients may list and read as MCP resources.
    fn resources(&self) -> Vec<Arc<dyn ResourceSource>> {
        Vec::new()
    }
    /// Prompts these tools come with (the agents' own instructions, say).
    fn prompts(&self) -> Vec<PromptSpec> {
        Vec::new()
    }
}

/// A prompt a layer offers, and how its messages are made from the arguments and the tools
/// the session has.
#[derive(Clone)]
pub struct PromptSpec {
    pub prompt: rmcp::model::Prompt,
    #[allow(clippy::type_complexity)]
    pub render: Arc<
        dyn Fn(
                &[rmcp::model::Tool],
                &serde_json::Map<String, Value>,
            ) -> Result<Vec<rmcp::model::PromptMessage>, String>
            + Send
            + Sync,
    >,
}

/// Whether a tool only reads, and so which callers may use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Needs a role that may write (not `viewer`).
    Write,
    /// Writes a record: a writer, or a run's agent in a lane that only reads (the tool checks
    /// each key with [`Identity::may_write`]).
    Record,
}

impl Access {
    /// The caller, if this access admits them.
    pub fn admit(self, id: Identity) -> Result<Identity, String> {
        let writer = |id: Identity| {
            if id.role.can_write() {
                Ok(id)
            } else {
                Err(format!(
                    "the token of tenant {} is read-only (role viewer); ask an admin for a user token",
                    id.tenant
                ))
            }
        };
        match self {
            Access::Read => Ok(id),
            Access::Write => writer(id),
            Access::Record if id.records.is_some() => Ok(id),
            Access::Record => writer(id),
        }
    }
}

/// What a tool runs: from the server's state, the caller (none when the request carries no
/// identity) and the call's raw arguments, its result. Both ways a call reaches a tool run
/// it: rmcp's, and the direct lane for plain sessionless calls ([`super::direct`]).
pub type Run = Arc<
    dyn Fn(
            Arc<AppState>,
            Option<Identity>,
            rmcp::model::JsonObject,
        ) -> futures::future::BoxFuture<'static, Result<CallToolResult, rmcp::ErrorData>>
        + Send
        + Sync,
>;

/// A tool: what `tools/list` shows of it, and what a call runs.
#[derive(Clone)]
pub struct Route {
    pub tool: Tool,
    run: Run,
}

impl Route {
    /// The same tool as rmcp's router holds it.
    fn rmcp(&self) -> ToolRoute<AgentbusMcp> {
        let run = self.run.clone();
        ToolRoute::new_dyn(
            self.tool.clone(),
            move |ctx: ToolCallContext<'_, AgentbusMcp>| {
                let call = run(
                    ctx.service.state.clone(),
                    ctx.service.caller(&ctx.request_context),
                    ctx.arguments.unwrap_or_default(),
                );
                Box::pin(async move { call.await.map(Into::into) })
            },
        )
    }
}

/// The table of tools every session and request shares.
pub(crate) struct Tools {
    /// What `tools/list` shows (and how rmcp would call each tool).
    router: ToolRouter<AgentbusMcp>,
    /// What a call runs, by tool name.
    runs: std::collections::HashMap<String, Run>,
}

/// A tool from a typed function: the arguments are parsed into `A` (when they do not fit, an
/// `isError` result naming what is wrong: the MCP specification's input-validation errors
/// are tool execution errors), `f` runs with the caller's identity, and its `O` is the
/// structured result or its message a tool error. The tool's input and output schemas come
/// from `A` and `O`.
pub fn typed_route<A, O, F, Fut>(tool: Tool, access: Access, f: F) -> Route
where
    A: DeserializeOwned + schemars::JsonSchema + Send + 'static,
    O: Serialize + schemars::JsonSchema + Send + 'static,
    F: Fn(Identity, A) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<O, String>> + Send + 'static,
{
    typed_route_in(tool, access, move |_, id, a| f(id, a))
}

/// [`typed_route`] whose function also gets the server's state (its quotas).
pub fn typed_route_in<A, O, F, Fut>(tool: Tool, access: Access, f: F) -> Route
where
    A: DeserializeOwned + schemars::JsonSchema + Send + 'static,
    O: Serialize + schemars::JsonSchema + Send + 'static,
    F: Fn(Arc<AppState>, Identity, A) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<O, String>> + Send + 'static,
{
    let tool = tool.with_input_schema::<A>().with_output_schema::<O>();
    let run: Run = Arc::new(move |state, caller, arguments| {
        let caller = caller
            .ok_or_else(|| NOT_AUTHENTICATED.to_string())
            .and_then(|id| access.admit(id));
        let args = serde_json::from_value::<A>(Value::Object(arguments));
        let f = f.clone();
        Box::pin(async move {
            let result = match (caller, args) {
                (Err(e), _) => Err(e),
                (_, Err(e)) => Err(format!("invalid arguments: {e}")),
                (Ok(id), Ok(args)) => f(state, id, args).await,
            };
            Ok(match result {
                Ok(out) => CallToolResult::structured(serde_json::to_value(out).map_err(|e| {
                    rmcp::ErrorData::internal_error(format!("encoding the result: {e}"), None)
                })?),
                Err(msg) => CallToolResult::error(vec![ContentBlock::text(msg)]),
            })
        })
    });
    Route { tool, run }
}

/// A tool call done: its result, and why it failed if it did.
pub(crate) struct Called {
    pub result: Result<rmcp::model::CallToolResponse, rmcp::ErrorData>,
    /// `tool_error` (an `isError` result) or `invalid_request` (a JSON-RPC error).
    pub failure: Option<&'static str>,
    /// The tool's name as measured (`unknown` for a name no tool has).
    tool: String,
    span: tracing::Span,
}

impl AgentbusMcp {
    /// A tool call, whichever way it came: it runs in a span carrying the request's trace id
    /// and the tool's name, and is measured: its latency, and whether it failed, by tool (a
    /// name no tool has counts as `unknown`, so callers cannot make up metrics). What it
    /// wrote is announced to the resources' watchers, and a sampled trace gets its span.
    pub(crate) async fn call(
        &self,
        name: &str,
        arguments: Option<rmcp::model::JsonObject>,
        caller: Option<Identity>,
        ctx: &super::trace::TraceContext,
    ) -> Called {
        use crate::metrics::{self, Unit, names};
        use tracing::Instrument;
        let started = std::time::Instant::now();
        let run = self.tools.runs.get(name);
        let tool: String = match run {
            Some(_) => name.to_string(),
            None => "unknown".to_string(),
        };
        let tenant = caller.as_ref().map(|id| id.tenant.clone());
        let trace = &ctx.trace;
        let exported = crate::traces::wanted(ctx).then(std::time::SystemTime::now);
        // At the level of the lines always logged, so a tool's warnings and errors carry it.
        let span = tracing::error_span!("tool", trace_id = %trace, tool = %tool);
        // The resources a write names, announced to their watchers once it is done.
        let written: Vec<(&'static str, String)> = match arguments
            .as_ref()
            .and_then(|a| a.get("key"))
            .and_then(Value::as_str)
        {
            Some(key) => self
                .sources
                .iter()
                .filter(|s| s.written_by(&tool))
                .map(|s| (s.kind(), key.to_string()))
                .collect(),
            None => Vec::new(),
        };
        let result = match run {
            Some(run) => run(self.state.clone(), caller, arguments.unwrap_or_default())
                .instrument(span.clone())
                .await
                .map(Into::into),
            None => Err(rmcp::ErrorData::invalid_params("tool not found", None)),
        };
        let elapsed = started.elapsed();
        let failure = match &result {
            Ok(rmcp::model::CallToolResponse::Complete(r)) if r.is_error == Some(true) => {
                Some("tool_error")
            }
            Ok(_) => None,
            Err(_) => Some("invalid_request"),
        };
        let failed = failure.is_some();
        if let (false, Some(t)) = (failed, &tenant) {
            for (kind, key) in &written {
                self.state.changes.changed(t, kind, key);
            }
        }
        if let Some(start) = exported {
            use crate::traces::{Attr, Kind, Span};
            let mut attributes = vec![
                ("mcp.method.name", Attr::Str("tools/call".into())),
                ("gen_ai.operation.name", Attr::Str("execute_tool".into())),
                ("gen_ai.tool.name", Attr::Str(tool.clone())),
            ];
            if let Some(t) = &tenant {
                attributes.push(("agentbus.tenant", Attr::Str(t.to_string())));
            }
            if let Some(kind) = failure {
                attributes.push(("error.type", Attr::Str(kind.into())));
            }
            crate::traces::record(Span {
                trace: ctx.trace.clone(),
                id: super::trace::SpanId::random(),
                // A child of the request it came in.
                parent: Some(ctx.span),
                name: format!("tools/call {tool}"),
                kind: Kind::Internal,
                start,
                end: std::time::SystemTime::now(),
                attributes,
                error: failure.map(str::to_string),
            });
        }
        if let Some(error) = failure {
            // In the call's span: the line carries its trace id and tool.
            span.in_scope(|| {
                tracing::info!(
                    elapsed_ms = elapsed.as_millis() as u64,
                    error,
                    "tool call failed"
                )
            });
        }
        let values = [
            (
                names::TOOL_LATENCY,
                Unit::Milliseconds,
                metrics::ms(elapsed),
            ),
            (names::TOOL_CALLS, Unit::Count, 1.0),
            (names::TOOL_ERRORS, Unit::Count, 1.0),
        ];
        let recorded = if failed { &values[..] } else { &values[..2] };
        metrics::observe(Some(("Tool", tool.as_str())), tenant.as_ref(), recorded);
        if elapsed >= SLOW_TOOL_CALL {
            tracing::warn!(
                tool = %tool,
                trace_id = %trace,
                elapsed_ms = elapsed.as_millis() as u64,
                failed,
                "slow tool call"
            );
        }
        Called {
            result,
            failure,
            tool,
            span,
        }
    }
}

#[tool_handler(router = self.tools.router)]
impl ServerHandler for AgentbusMcp {
    /// A tool call through rmcp ([`AgentbusMcp::call`]); a failure is also sent to the caller
    /// as a log message when it asked for warnings.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        // The request's trace (over stdio there is none: the call starts its own).
        let ctx = super::trace::TraceContext::of_request(
            context
                .extensions
                .get::<axum::http::request::Parts>()
                .map(|p| &p.extensions),
        );
        // The least severity the caller is sent log messages of: the request's own (2026-07-28
        // carries it in each request's metadata), else the session's `logging/setLevel`.
        let log_level = context.meta.log_level().map_or_else(
            || self.log_level.load(std::sync::atomic::Ordering::Relaxed),
            log_rank,
        );
        let called = self
            .call(
                &request.name,
                request.arguments,
                self.caller(&context),
                &ctx,
            )
            .await;
        #[allow(deprecated)]
        if let Some(error) = called.failure
            && log_level <= log_rank(rmcp::model::LoggingLevel::Warning)
        {
            let mut message = rmcp::model::LoggingMessageNotificationParam::new(
                rmcp::model::LoggingLevel::Warning,
                serde_json::json!({
                    "message": "tool call failed",
                    "tool": called.tool,
                    "error": error,
                    "trace_id": ctx.trace.as_str(),
                }),
            );
            message.logger = Some("agentbus".into());
            if let Err(e) = context.peer.notify_logging_message(message).await {
                called
                    .span
                    .in_scope(|| tracing::debug!("a log message to the session was not sent: {e}"));
            }
        }
        called.result
    }

    /// The caller's tenant's resources, source after source: the cursor names the source
    /// (`kind:` and that source's own cursor).
    async fn list_resources(
        &self,
        request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, rmcp::ErrorData> {
        let id = self.who(&context).map_err(unauthenticated)?;
        let sources = &self.sources;
        let cursor = request.and_then(|r| r.cursor);
        let (mut at, mut inner) = match cursor.as_deref() {
            None => (0, None),
            Some(c) => {
                let (kind, rest) = c.split_once(':').ok_or_else(|| bad_cursor(c))?;
                let at = sources
                    .iter()
                    .position(|s| s.kind() == kind)
                    .ok_or_else(|| bad_cursor(c))?;
                (at, (!rest.is_empty()).then(|| rest.to_string()))
            }
        };
        let mut resources = Vec::new();
        while at < sources.len() && resources.len() < res::PAGE as usize {
            let source = &sources[at];
            let (listed, next) = source
                .list(&id.tenant, "", inner.as_deref())
                .await
                .map_err(|e| rmcp::ErrorData::internal_error(explain(e), None))?;
            resources.extend(listed.iter().map(|l| res::resource(source.kind(), l)));
            match next {
                Some(n) => inner = Some(n),
                None => {
                    at += 1;
                    inner = None;
                }
            }
        }
        let mut result = rmcp::model::ListResourcesResult::with_all_items(resources);
        if at < sources.len() {
            result.next_cursor = Some(format!(
                "{}:{}",
                sources[at].kind(),
                inner.unwrap_or_default()
            ));
        }
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, rmcp::ErrorData> {
        self.who(&context).map_err(unauthenticated)?;
        Ok(rmcp::model::ListResourceTemplatesResult::with_all_items(
            self.sources
                .iter()
                .map(|s| res::template(s.as_ref()))
                .collect(),
        ))
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, rmcp::ErrorData> {
        let id = self.who(&context).map_err(unauthenticated)?;
        let uri = request.uri;
        let not_found = || {
            rmcp::ErrorData::resource_not_found(
                format!("no resource {uri}"),
                Some(serde_json::json!({ "uri": uri })),
            )
        };
        let (kind, key) = res::parse(&uri).ok_or_else(not_found)?;
        let source = res::of_kind(&self.sources, kind).ok_or_else(not_found)?;
        let found = source
            .read(&id.tenant, &key)
            .await
            .map_err(|e| rmcp::ErrorData::internal_error(explain(e), None))?
            .ok_or_else(not_found)?;
        Ok(rmcp::model::ReadResourceResult::new(vec![res::contents(&uri, found)]).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, rmcp::ErrorData> {
        self.who(&context).map_err(unauthenticated)?;
        Ok(rmcp::model::ListPromptsResult::with_all_items(
            self.state
                .extensions()
                .iter()
                .flat_map(|e| e.prompts())
                .map(|p| p.prompt)
                .collect(),
        ))
    }

    /// A prompt's messages; its required arguments must be there (invalid params otherwise).
    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, rmcp::ErrorData> {
        self.who(&context).map_err(unauthenticated)?;
        let spec = self
            .state
            .extensions()
            .iter()
            .flat_map(|e| e.prompts())
            .find(|p| p.prompt.name == request.name)
            .ok_or_else(|| {
                rmcp::ErrorData::invalid_params(format!("no prompt {}", request.name), None)
            })?;
        let args = request.arguments.unwrap_or_default();
        for a in spec.prompt.arguments.iter().flatten() {
            let given = args.get(&a.name).and_then(Value::as_str);
            if a.required == Some(true) && given.is_none_or(str::is_empty) {
                return Err(rmcp::ErrorData::invalid_params(
                    format!("prompt {} needs the argument {}", request.name, a.name),
                    None,
                ));
            }
        }
        if let Some(unknown) = args.keys().find(|k| {
            !spec
                .prompt
                .arguments
                .iter()
                .flatten()
                .any(|a| &a.name == *k)
        }) {
            return Err(rmcp::ErrorData::invalid_params(
                format!("prompt {} takes no argument {unknown}", request.name),
                None,
            ));
        }
        let messages = (spec.render)(&self.tools.router.list_all(), &args)
            .map_err(|e| rmcp::ErrorData::invalid_params(e, None))?;
        let mut result = rmcp::model::GetPromptResult::new(messages);
        if let Some(d) = &spec.prompt.description {
            result = result.with_description(d.clone());
        }
        Ok(result.into())
    }

    /// Completes a resource template's `key` from the caller's own keys of that kind.
    async fn complete(
        &self,
        request: rmcp::model::CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, rmcp::ErrorData> {
        let id = self.who(&context).map_err(unauthenticated)?;
        let r = match &request.r#ref {
            rmcp::model::Reference::Resource(r) => r,
            // A prompt's arguments are free text: nothing to offer.
            rmcp::model::Reference::Prompt(p) => {
                let known = self
                    .state
                    .extensions()
                    .iter()
                    .flat_map(|e| e.prompts())
                    .any(|s| s.prompt.name == p.name);
                return if known {
                    Ok(rmcp::model::CompleteResult::default())
                } else {
                    Err(rmcp::ErrorData::invalid_params(
                        format!("no prompt {}", p.name),
                        None,
                    ))
                };
            }
            _ => {
                return Err(rmcp::ErrorData::invalid_params(
                    "only resource templates and prompts are completed",
                    None,
                ));
            }
        };
        let source = self
            .sources
            .iter()
            .find(|s| res::template_uri(s.kind()) == r.uri)
            .ok_or_else(|| {
                rmcp::ErrorData::invalid_params(format!("no resource template {}", r.uri), None)
            })?;
        if request.argument.name != "key" {
            return Err(rmcp::ErrorData::invalid_params(
                format!(
                    "{} has one argument, key, not {}",
                    r.uri, request.argument.name
                ),
                None,
            ));
        }
        let (listed, next) = source
            .list(&id.tenant, &request.argument.value, None)
            .await
            .map_err(|e| rmcp::ErrorData::internal_error(explain(e), None))?;
        let values: Vec<String> = listed
            .into_iter()
            .map(|l| l.key)
            .take(rmcp::model::CompletionInfo::MAX_VALUES)
            .collect();
        let info = rmcp::model::CompletionInfo::with_pagination(values, None, next.is_some())
            .map_err(|e| rmcp::ErrorData::internal_error(e, None))?;
        Ok(rmcp::model::CompleteResult::new(info))
    }

    /// The least severity of the log messages this session is sent: for now, a tool call
    /// that failed (a warning, with its tool, error and trace id).
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        self.log_level.store(
            log_rank(request.level),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// Watches a resource of the caller's for the session (protocol versions up to
    /// 2025-11-25): `notifications/resources/updated` follows each change of it.
    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        let id = self.who(&context).map_err(unauthenticated)?;
        let peer = context.peer.clone();
        self.watch
            .subscribe(&request.uri, || (self.watch_for(id.tenant), peer))
            .await
            .map_err(watch_refused)
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        self.watch.unsubscribe(&request.uri).await;
        Ok(())
    }

    /// A `subscriptions/listen` stream (2026-07-28) watches the resources of this server
    /// among those it asks for.
    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        let ours = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| {
                res::parse(uri).is_some_and(|(kind, _)| res::of_kind(&self.sources, kind).is_some())
            });
        Some(
            rmcp::model::SubscriptionFilter::builder()
                .resource_subscriptions(ours.take(subscriptions::MAX_PER_TENANT).cloned())
                .build(),
        )
    }

    async fn listen(
        &self,
        context: rmcp::service::SubscriptionContext,
    ) -> Result<(), rmcp::ErrorData> {
        use rmcp::model::{ResourceUpdatedNotification, ResourceUpdatedNotificationParam};
        let id = self
            .who(context.request_context())
            .map_err(unauthenticated)?;
        let mut watch = self.watch_for(id.tenant);
        for uri in context.accepted().resource_subscriptions.iter().flatten() {
            watch.add(uri).await.map_err(watch_refused)?;
        }
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                uri = watch.changed() => {
                    let update = ResourceUpdatedNotification::new(ResourceUpdatedNotificationParam::new(uri));
                    if let Err(e) = context
                        .sink()
                        .send(rmcp::model::ServerNotification::ResourceUpdatedNotification(update))
                        .await
                    {
                        tracing::debug!("a subscriptions/listen stream ends: {e}");
                        return Ok(());
                    }
                }
            }
        }
    }

    fn get_info(&self) -> ServerConfig {
        let has_prompts = self
            .state
            .extensions()
            .iter()
            .any(|e| !e.prompts().is_empty());
        #[allow(deprecated)]
        let mut capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_logging()
            .enable_completions()
            .build();
        if has_prompts {
            capabilities.prompts = Some(Default::default());
        }
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("agentbus", env!("CARGO_PKG_VERSION")))
            .with_instructions({
                let mut text = String::from(
                    "agentbus workspace tools: a KV store (kv_*), the event bus (events_send), write-only \
                     secrets (secrets_*) and status. Everything is scoped to the tenant of your token. \
                     Your KV entries (and, on higher tiers, artifacts) are also resources, agentbus://kv/{key}, \
                     with their keys completed from your own.",
                );
                for ext in self.state.extensions() {
                    text.push(' ');
                    text.push_str(ext.instructions());
                }
                text
            })
    }
}
