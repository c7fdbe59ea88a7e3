//! External MCP servers registered with a tenant: `tools_register {name, url, token?}` (an
//! admin) fetches the server's tool list and keeps it — the registration in the KV key
//! `agentbus/tools/{name}` (workspace configuration: only admins write it), the token as the
//! tenant's secret `tools-{name}`, never shown again. `tools_list` shows what is registered,
//! `tools_call {server, tool, arguments}` calls one of its tools through the server (which
//! alone holds the token), and `tools_unregister` forgets it.
//!
//! A call is gated by the external tool's own annotations, like the workspace's tools: one
//! that does not say it only reads needs a token that may write — so a viewer, or an agent in a
//! lane that only reads, cannot reach it. The agents see each external tool as
//! `{server}__{tool}` with those annotations (see `agents::tools::Gated`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agents::tools::EXTERNAL_SEPARATOR;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tier_small::runtime::monitor::webhook::{Reach, outbound_client};
use tier_xs::runtime::kv::Ttl;
use tier_xs::runtime::now_secs;
use tier_xs::server::AppState;
use tier_xs::server::auth::{Identity, Role};
use tier_xs::server::mcp::{Access, Route, explain, tool_annotations, tool_spec, typed_route};

/// Where registrations live in the tenant's KV.
pub const KEY_PREFIX: &str = "agentbus/tools/";
/// How long connecting to an external server and one call may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// The most tools kept of one server.
const MAX_TOOLS: usize = 200;

fn key(name: &str) -> String {
    format!("{KEY_PREFIX}{name}")
}

fn secret(name: &str) -> String {
    format!("tools-{name}")
}

/// One tool of an external server, as its list said.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ExternalTool {
    pub name: String,
    pub description: String,
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub idempotent: Option<bool>,
    pub open_world: Option<bool>,
    /// Its input's JSON Schema.
    pub input_schema: Value,
}

/// A registered server.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Registration {
    pub name: String,
    pub url: String,
    /// Whether calls carry a bearer token (kept as the tenant's secret; never shown).
    pub has_token: bool,
    pub tools: Vec<ExternalTool>,
    /// When the tool list was fetched (epoch seconds).
    pub fetched_at: u64,
    pub registered_by: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterArgs {
    /// The server's name in this tenant: 1-32 of a-z, 0-9 and '-'. Its tools become
    /// `{name}__{tool}` for the agents.
    pub name: String,
    /// Its Streamable HTTP endpoint (http:// or https://).
    pub url: String,
    /// A bearer token the server wants; kept as the tenant's secret `tools-{name}`.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    /// The registered server's name.
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallArgs {
    /// The registered server's name.
    pub server: String,
    /// One of its tools.
    pub tool: String,
    /// The tool's arguments (an object).
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOut {
    pub servers: Vec<Registration>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CallOut {
    /// The tool's structured result, if it gave one.
    pub structured: Option<Value>,
    /// Its text content.
    pub text: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct UnregisterOut {
    pub removed: bool,
}

fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.contains(EXTERNAL_SEPARATOR);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?}: use 1-32 of a-z, 0-9 and '-' (it prefixes the server's tools)"
        ))
    }
}

fn valid_url(url: &str) -> Result<(), String> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "url {url:?}: give the server's Streamable HTTP endpoint, http:// or https://"
        ))
    }
}

/// An MCP client of a registered server, through the outbound client of `reach` (a deployed
/// server reaches only public HTTPS addresses, resolved on every connection).
async fn connect(
    url: &str,
    token: Option<&str>,
    reach: Reach,
) -> Result<agents::tools::McpClient, String> {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    if reach == Reach::PublicHttps && !url.starts_with("https://") {
        return Err(format!(
            "url {url:?}: a deployed server calls external MCP servers over https only"
        ));
    }
    let client = outbound_client(
        reach,
        CALL_LIMIT,
        concat!("agentbus/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|e| e.to_string())?;
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    if let Some(token) = token {
        config = config.auth_header(token.to_string());
    }
    let transport = StreamableHttpClientTransport::with_client(client, config);
    let running = tokio::time::timeout(CALL_LIMIT, ().serve(transport))
        .await
        .map_err(|_| format!("{url} did not answer within {}s", CALL_LIMIT.as_secs()))?
        .map_err(|e| format!("cannot reach the MCP server at {url}: {e}"))?;
    Ok(agents::tools::McpClient(running))
}

/// The external tools, on the server they are part of.
#[derive(Clone)]
pub struct External {
    server: Arc<OnceLock<Arc<AppState>>>,
    reach: Reach,
}

impl External {
    pub fn new(server: Arc<OnceLock<Arc<AppState>>>, reach: Reach) -> Self {
        External { server, reach }
    }

    fn state(&self) -> Result<&Arc<AppState>, String> {
        self.server
            .get()
            .ok_or_else(|| "the server is not assembled yet".to_string())
    }

    async fn registration(&self, id: &Identity, name: &str) -> Result<Registration, String> {
        let entry = self
            .state()?
            .kv
            .get(&id.tenant, &key(name))
            .await
            .map_err(explain)?
            .ok_or_else(|| format!("no tool server {name:?} is registered in your tenant"))?;
        serde_json::from_str(&entry.value)
            .map_err(|e| format!("the registration of {name:?} does not parse: {e}"))
    }

    async fn register(&self, id: Identity, a: RegisterArgs) -> Result<Registration, String> {
        if id.role != Role::Admin {
            return Err("registering a tool server needs an admin token".into());
        }
        valid_name(&a.name)?;
        valid_url(&a.url)?;
        let token = a.token.filter(|t| !t.is_empty());
        let client = connect(&a.url, token.as_deref(), self.reach).await?;
        let listed = tokio::time::timeout(CALL_LIMIT, client.0.list_all_tools())
            .await
            .map_err(|_| format!("{} did not list its tools in time", a.url))?
            .map_err(|e| format!("{} did not list its tools: {e}", a.url))?;
        // Closing the session: the answer is in hand, and a close that fails only leaves the
        // external server to time the session out.
        let _ = client.0.cancel().await;
        let tools: Vec<ExternalTool> = listed
            .into_iter()
            .take(MAX_TOOLS)
            .map(|t| {
                let hints = t.annotations.clone().unwrap_or_default();
                ExternalTool {
                    name: t.name.to_string(),
                    description: t.description.as_deref().unwrap_or_default().to_string(),
                    read_only: hints.read_only_hint,
                    destructive: hints.destructive_hint,
                    idempotent: hints.idempotent_hint,
                    open_world: hints.open_world_hint,
                    input_schema: Value::Object((*t.input_schema).clone()),
                }
            })
            .collect();
        let reg = Registration {
            name: a.name.clone(),
            url: a.url,
            has_token: token.is_some(),
            tools,
            fetched_at: now_secs(),
            registered_by: id.token_id.clone(),
        };
        let state = self.state()?;
        match &token {
            Some(t) => {
                state
                    .secrets
                    .put(&id.tenant, &secret(&a.name), t)
                    .await
                    .map_err(explain)?;
            }
            None => {
                state
                    .secrets
                    .delete(&id.tenant, &secret(&a.name))
                    .await
                    .map_err(explain)?;
            }
        }
        let value = serde_json::to_string(&reg).map_err(|e| e.to_string())?;
        state
            .kv
            .set(&id.tenant, &key(&a.name), &value, Ttl::Never)
            .await
            .map_err(explain)?;
        Ok(reg)
    }

    async fn list(&self, id: Identity) -> Result<ListOut, String> {
        let state = self.state()?;
        let mut servers = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = state
                .kv
                .list(&id.tenant, KEY_PREFIX, cursor.as_deref(), 100)
                .await
                .map_err(explain)?;
            // A listing has sizes, not values: each registration is read on its own.
            for listed in &page.entries {
                let entry = state
                    .kv
                    .get(&id.tenant, &listed.key)
                    .await
                    .map_err(explain)?;
                servers.extend(
                    entry.and_then(|e| serde_json::from_str::<Registration>(&e.value).ok()),
                );
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(ListOut { servers })
    }

    async fn call(&self, id: Identity, a: CallArgs) -> Result<CallOut, String> {
        let reg = self.registration(&id, &a.server).await?;
        let tool = reg
            .tools
            .iter()
            .find(|t| t.name == a.tool)
            .ok_or_else(|| {
                format!(
                    "{} has no tool {:?} (its tools as of its registration: {}); register it again to refresh the list",
                    a.server,
                    a.tool,
                    reg.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                )
            })?;
        if tool.read_only != Some(true) && !id.role.can_write() {
            return Err(format!(
                "{}{EXTERNAL_SEPARATOR}{} does not say it only reads: it needs a token that may write",
                a.server, a.tool
            ));
        }
        let token = if reg.has_token {
            self.state()?
                .secrets
                .read(&id.tenant, &secret(&a.server))
                .await
                .map_err(explain)?
        } else {
            None
        };
        let client = connect(&reg.url, token.as_deref(), self.reach).await?;
        let params = rmcp::model::CallToolRequestParams::new(a.tool.clone())
            .with_arguments(a.arguments.unwrap_or_default());
        let result = tokio::time::timeout(CALL_LIMIT, client.0.call_tool(params)).await;
        // As above: the result is in hand whether or not the close succeeds.
        let _ = client.0.cancel().await;
        let r = result
            .map_err(|_| {
                format!(
                    "{}{EXTERNAL_SEPARATOR}{} did not answer in time",
                    a.server, a.tool
                )
            })?
            .map_err(|e| format!("{}{EXTERNAL_SEPARATOR}{}: {e}", a.server, a.tool))?;
        let text = r
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n");
        if r.is_error == Some(true) {
            return Err(format!(
                "{}{EXTERNAL_SEPARATOR}{}: {text}",
                a.server, a.tool
            ));
        }
        Ok(CallOut {
            structured: r.structured_content,
            text,
        })
    }

    async fn unregister(&self, id: Identity, a: NameArgs) -> Result<UnregisterOut, String> {
        if id.role != Role::Admin {
            return Err("removing a tool server needs an admin token".into());
        }
        let state = self.state()?;
        let removed = state
            .kv
            .delete(&id.tenant, &key(&a.name))
            .await
            .map_err(explain)?;
        state
            .secrets
            .delete(&id.tenant, &secret(&a.name))
            .await
            .map_err(explain)?;
        Ok(UnregisterOut { removed })
    }

    pub fn routes(&self) -> Vec<Route> {
        let (r, l, c, u) = (self.clone(), self.clone(), self.clone(), self.clone());
        vec![
            typed_route(
                tool_spec(
                    "tools_register",
                    "Register an external MCP server (Streamable HTTP) with your tenant: its tool list is fetched and kept, its token kept as a secret; agents then use its tools as {name}__{tool}, gated by their annotations. Admin only; registering a name again refreshes it.",
                    tool_annotations(false, false, true),
                ),
                Access::Write,
                move |id, a: RegisterArgs| {
                    let r = r.clone();
                    async move { r.register(id, a).await }
                },
            ),
            typed_route(
                tool_spec(
                    "tools_list",
                    "The external MCP servers registered with your tenant, and their tools as of registration.",
                    tool_annotations(true, false, true),
                ),
                Access::Read,
                move |id, _: Empty| {
                    let l = l.clone();
                    async move { l.list(id).await }
                },
            ),
            typed_route(
                tool_spec(
                    "tools_call",
                    "Call a tool of a registered external MCP server through the workspace (which holds its token). A tool that does not say it only reads needs a token that may write.",
                    tool_annotations(false, false, false),
                ),
                Access::Read,
                move |id, a: CallArgs| {
                    let c = c.clone();
                    async move { c.call(id, a).await }
                },
            ),
            typed_route(
                tool_spec(
                    "tools_unregister",
                    "Forget a registered external MCP server and its token. Admin only.",
                    tool_annotations(false, true, true),
                ),
                Access::Write,
                move |id, a: NameArgs| {
                    let u = u.clone();
                    async move { u.unregister(id, a).await }
                },
            ),
        ]
    }
}

/// No arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deployed_server_calls_only_public_https_servers() {
        // Plain HTTP, and names of this machine or the task's metadata endpoint: refused
        // before anything is sent (localhost resolves to 127.0.0.1 here).
        for url in [
            "http://mcp.example.com/mcp",
            "http://169.254.170.2/v2/credentials",
        ] {
            let e = connect(url, None, Reach::PublicHttps).await.err().unwrap();
            assert!(e.contains("https only"), "{url}: {e}");
        }
        let e = connect("https://localhost:9/mcp", None, Reach::PublicHttps)
            .await
            .err()
            .unwrap();
        assert!(e.contains("cannot reach"), "{e}");
    }

    #[test]
    fn names_and_urls_are_checked_before_anything_is_fetched() {
        assert!(valid_name("weather").is_ok());
        assert!(valid_name("a-1").is_ok());
        for bad in ["", "Weather", "a__b", "a b", &"x".repeat(33)] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
        assert!(valid_url("https://mcp.example.com/mcp").is_ok());
        for bad in [
            "ftp://x",
            "file:///etc/passwd",
            "http://a b",
            "mcp.example.com",
        ] {
            assert!(valid_url(bad).is_err(), "{bad}");
        }
    }
}
