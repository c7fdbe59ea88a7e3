//! The direct lane of `/mcp`: a plain `tools/call` of the 2026-07-28 protocol (no session, one
//! request whose answer is one JSON message) goes from its HTTP request straight to the tool
//! and back, without rmcp's per-request service. rmcp would decode the message through its
//! untagged enums, make a server and a transport for the one request, spawn their tasks, and
//! pass the request and its answer over channels: most of a call's cost
//! (docs/benchmarks/mcp-server.md). Every other request, and every call this lane is not
//! sure of, goes to rmcp unchanged.
//!
//! Architecture invariant: the lane answers only requests that rmcp accepts, and answers them
//! with the bytes rmcp would send. It takes a call only when every check rmcp makes passes
//! (the headers, the message, its `_meta`) in the plainest form of each; anything else
//! (a session, a header rmcp reads in more than one form, a log level or progress token in
//! `_meta`, a tool this server does not have, a body it cannot read) is handed to rmcp,
//! which refuses or answers it as it always did. The tests send each case both ways and
//! compare the answers.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header, request::Parts};
use axum::response::Response;
use rmcp::model::{
    ClientCapabilities, ErrorCode, Implementation, JsonObject, RequestId, ServerJsonRpcMessage,
    ServerResult,
};
use serde::Deserialize;

use super::mcp::AgentbusMcp;
use super::trace::TraceContext;

/// The protocol whose requests the lane takes: the first without sessions.
const PROTOCOL: &str = "2026-07-28";
const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";
const MCP_NAME: header::HeaderName = header::HeaderName::from_static("mcp-name");
/// How rmcp marks a header value that is Base64 (SEP-2243); the lane takes plain values only.
const BASE64_PREFIX: &str = "=?base64?";

/// The lane, in front of rmcp's service.
#[derive(Clone)]
pub(super) struct Lane {
    tools: AgentbusMcp,
    /// rmcp's Host check is on (the server only answers on loopback names).
    local_hosts: bool,
    /// The largest request body rmcp reads.
    max_request: usize,
    /// Cancelled when the server stops: a call still running then is dropped, as rmcp drops
    /// its handlers, so a slow tool does not hold the shutdown.
    stopping: tokio_util::sync::CancellationToken,
}

/// A JSON-RPC request, as the lane reads it: exactly these fields, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message<'a> {
    jsonrpc: &'a str,
    id: RequestId,
    method: &'a str,
    #[serde(borrow)]
    params: Params<'a>,
}

/// A `tools/call`'s parameters, with nothing besides the tool, its arguments and `_meta`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params<'a> {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
    #[serde(rename = "_meta", borrow)]
    meta: Meta<'a>,
}

/// A call's `_meta`: the keys 2026-07-28 requires, decoded as rmcp decodes them, and the
/// client's name. Any other key (a log level, a progress token) changes how rmcp answers:
/// a log message or progress notifications before the result.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
    protocol: &'a str,
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities")]
    _capabilities: ClientCapabilities,
    #[serde(rename = "io.modelcontextprotocol/clientInfo", default)]
    _info: Option<Implementation>,
}

/// A call the lane takes.
struct Call {
    id: RequestId,
    name: String,
    arguments: Option<JsonObject>,
}

impl Lane {
    pub(super) fn new(
        tools: AgentbusMcp,
        local_hosts: bool,
        max_request: usize,
        stopping: tokio_util::sync::CancellationToken,
    ) -> Self {
        Lane {
            tools,
            local_hosts,
            max_request,
            stopping,
        }
    }

    /// The answer to `req` when the lane takes it; the request (its body read, if it came to
    /// that) when rmcp must.
    pub(super) async fn take(&self, req: Request) -> Result<Response, Request> {
        if !self.fits(req.method(), req.uri(), req.headers()) {
            return Err(req);
        }
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, self.max_request).await {
            Ok(bytes) => bytes,
            // The client went away mid-body: rmcp answers an unreadable body.
            Err(_) => return Err(Request::from_parts(parts, Body::empty())),
        };
        match self.call(&parts, &bytes) {
            Some(call) => {
                #[cfg(test)]
                tests::TAKEN.with(|n| n.set(n.get() + 1));
                Ok(self.answer(&parts, call).await)
            }
            None => Err(Request::from_parts(parts, Body::from(bytes))),
        }
    }

    /// Whether the request line and headers are a plain sessionless `tools/call`'s, each
    /// in the one form the lane reads; rmcp would accept all of them. One pass over the
    /// headers: each the lane reads must come once.
    fn fits(&self, method: &Method, uri: &axum::http::Uri, h: &HeaderMap) -> bool {
        if method != Method::POST || self.local_hosts && uri.authority().is_some() {
            return false;
        }
        let mut seen = [false; 6];
        let (mut json, mut sse) = (false, false);
        for (name, value) in h {
            let Ok(v) = value.to_str() else {
                return false;
            };
            let (slot, fits) = match name.as_str() {
                "mcp-protocol-version" => (0, v == PROTOCOL),
                "mcp-method" => (1, v == "tools/call"),
                "mcp-name" => (2, !v.starts_with(BASE64_PREFIX)),
                "host" => (3, !self.local_hosts || loopback(v)),
                "content-type" => (
                    4,
                    v.split_once(';')
                        .map_or(v, |(essence, _)| essence)
                        .trim()
                        .eq_ignore_ascii_case(JSON),
                ),
                "content-length" => (5, v.parse::<usize>().is_ok_and(|n| n <= self.max_request)),
                "accept" => {
                    if !accepted(v, &mut json, &mut sse) {
                        return false;
                    }
                    continue;
                }
                // A session, an origin to check, parameters to check against the tool's schema.
                "mcp-session-id" | "origin" => return false,
                n if n.starts_with("mcp-param-") => return false,
                _ => continue,
            };
            if !fits || std::mem::replace(&mut seen[slot], true) {
                return false;
            }
        }
        json && sse
            && seen[..3] == [true; 3]
            && seen[4]
            && seen[5]
            && (seen[3] || !self.local_hosts)
    }

    /// The call in `body`, when it is a plain one for a tool this server has.
    fn call(&self, parts: &Parts, body: &[u8]) -> Option<Call> {
        let m: Message = serde_json::from_slice(body).ok()?;
        let plain = m.jsonrpc == "2.0"
            && m.method == "tools/call"
            && self.tools.has_tool(&m.params.name)
            // Mcp-Name names the tool of the body (rmcp refuses the request otherwise).
            && parts.headers.get(MCP_NAME)?.as_bytes() == m.params.name.as_bytes()
            && m.params.meta.protocol == PROTOCOL;
        plain.then_some(Call {
            id: m.id,
            name: m.params.name,
            arguments: m.params.arguments,
        })
    }

    /// Runs the call as rmcp would ([`AgentbusMcp::call`]) and answers it as one JSON message.
    async fn answer(&self, parts: &Parts, call: Call) -> Response {
        let caller = super::caller(&parts.extensions);
        let trace = TraceContext::of_request(Some(&parts.extensions));
        let called = tokio::select! {
            called = self.tools.call(&call.name, call.arguments, caller, &trace) => called,
            () = self.stopping.cancelled() => {
                // rmcp's answer to a request whose handler the shutdown cancelled.
                return internal_error("empty response", "no response message received from handler");
            }
        };
        let (message, status) = match called.result {
            Ok(r) => (
                ServerJsonRpcMessage::response(ServerResult::from(r), call.id),
                StatusCode::OK,
            ),
            Err(e) => {
                let status = status_of(e.code);
                (ServerJsonRpcMessage::error(e, Some(call.id)), status)
            }
        };
        match serde_json::to_vec(&message) {
            Ok(body) => {
                let mut r = Response::new(Body::from(Bytes::from(body)));
                *r.status_mut() = status;
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(JSON));
                r
            }
            Err(e) => internal_error("serialize json response", &e.to_string()),
        }
    }
}

/// rmcp's answer when it cannot answer a request: 500, and what it was doing.
fn internal_error(context: &str, error: &str) -> Response {
    tracing::error!("Internal server error when {context}: {error}");
    let mut r = Response::new(Body::from(format!(
        "Encounter an error when {context}: {error}"
    )));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// The HTTP status of a JSON-RPC error answering a 2026-07-28 request, as rmcp gives it: the
/// protocol's own refusals are 400, an unknown method 404, any other error travels in a 200.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// A Host of a loopback name (rmcp's default allowed hosts), with any port.
fn loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[::1]:port`, `name:port`; a bare `::1` has colons but no brackets.
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// Reads one Accept header: whether it names JSON and event streams (rmcp refuses a POST that
/// does not take both), each as a bare media type. False for a weight or another parameter:
/// rmcp reads those.
fn accepted(value: &str, json: &mut bool, sse: &mut bool) -> bool {
    for entry in value.split(',') {
        let entry = entry.trim();
        if entry.contains(['"', ';']) {
            return false;
        }
        *json |= entry.eq_ignore_ascii_case(JSON);
        *sse |= entry.eq_ignore_ascii_case(EVENT_STREAM);
    }
    true
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::PathBuf;
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::Request;
    use serde_json::{Value, json};

    use crate::runtime::Tenant;
    use crate::server::AppState;
    use crate::server::auth::Role;

    thread_local! {
        /// Calls the lane answered on this thread (a test's runtime runs on one).
        pub(super) static TAKEN: Cell<usize> = const { Cell::new(0) };
    }

    /// One server with the lane or without it, in a data directory of its own, with a user's
    /// and a viewer's token of one tenant.
    struct Server {
        app: Router,
        user: String,
        viewer: String,
        dir: PathBuf,
    }

    impl Server {
        async fn new(name: &str, lane: bool) -> Server {
            let dir =
                std::env::temp_dir().join(format!("agentbus-lane-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a data directory");
            let state: Arc<AppState> = AppState::embedded(&dir, "xs", "test", 1_000_000)
                .await
                .expect("the embedded backends");
            let tenant = Tenant::new("acme").expect("a tenant");
            let (user, _) = state
                .auth
                .create(tenant.clone(), Role::User, None)
                .await
                .expect("a user token");
            let (viewer, _) = state
                .auth
                .create(tenant, Role::Viewer, None)
                .await
                .expect("a viewer token");
            Server {
                app: super::super::surface(state, lane),
                user,
                viewer,
                dir,
            }
        }

        /// The answer to a request: its status, content type and body.
        async fn send(&self, r: &Case) -> (u16, String, String) {
            let token = if r.viewer { &self.viewer } else { &self.user };
            let mut b = Request::post("/mcp")
                .header("authorization", format!("Bearer {token}"))
                .header("content-length", r.body.len());
            let defaults = [
                ("host", "127.0.0.1:8080"),
                ("content-type", "application/json"),
            ];
            for (k, v) in defaults {
                if !r.headers.iter().any(|(name, _)| *name == k) {
                    b = b.header(k, v);
                }
            }
            for (k, v) in &r.headers {
                b = b.header(*k, *v);
            }
            let req = b.body(Body::from(r.body.clone())).expect("a request");
            let res = tower::Service::call(&mut self.app.clone(), req)
                .await
                .expect("an answer");
            let status = res.status().as_u16();
            let kind = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .expect("a body");
            (status, kind, String::from_utf8_lossy(&body).into_owned())
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A request to `/mcp`: a 2026-07-28 call's headers, changed as the case says.
    struct Case {
        what: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        viewer: bool,
    }

    fn meta() -> Value {
        json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        })
    }

    fn call(what: &'static str, id: Value, tool: &'static str, arguments: Value) -> Case {
        let body = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": meta()},
        });
        Case {
            what,
            headers: vec![
                ("accept", "application/json, text/event-stream"),
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", tool),
            ],
            body: body.to_string(),
            viewer: false,
        }
    }

    fn with_header(mut c: Case, name: &'static str, value: &'static str) -> Case {
        c.headers.retain(|(k, _)| *k != name);
        c.headers.push((name, value));
        c
    }

    fn with_body(mut c: Case, f: impl FnOnce(&mut Value)) -> Case {
        let mut v: Value = serde_json::from_str(&c.body).expect("a JSON body");
        f(&mut v);
        c.body = v.to_string();
        c
    }

    /// Sends every case, in order, to a server with the lane and to one without, and checks
    /// that the lane took the cases it should and that both answered each alike.
    async fn both_ways_alike(name: &str, cases: Vec<(Case, bool)>) {
        let lane = Server::new(&format!("{name}-lane"), true).await;
        let rmcp = Server::new(&format!("{name}-rmcp"), false).await;
        for (case, taken) in &cases {
            let before = TAKEN.with(Cell::get);
            let direct = lane.send(case).await;
            let took = TAKEN.with(Cell::get) - before;
            let through_rmcp = rmcp.send(case).await;
            assert_eq!(
                TAKEN.with(Cell::get) - before,
                took,
                "{}: rmcp's server has no lane",
                case.what
            );
            assert_eq!(
                took,
                usize::from(*taken),
                "{}: taken by the lane: {direct:?}",
                case.what
            );
            assert_eq!(
                direct, through_rmcp,
                "{}: the lane's answer, then rmcp's",
                case.what
            );
        }
    }

    #[tokio::test]
    async fn the_lane_answers_plain_tool_calls_exactly_as_rmcp_does() {
        let set = |key: &str, value: &str| json!({"key": key, "value": value, "no_expiry": true});
        let mut viewer = call("a viewer writes", json!(9), "kv_set", set("v", "1"));
        viewer.viewer = true;
        both_ways_alike(
            "plain",
            vec![
                (
                    call("a first write", json!(1), "kv_set", set("a", "1")),
                    true,
                ),
                (
                    call("a second write", json!(2), "kv_set", set("a", "2")),
                    true,
                ),
                (
                    call("a read", json!("two"), "kv_get", json!({"key": "a"})),
                    true,
                ),
                (
                    call("a read of nothing", json!(3), "kv_get", json!({"key": "b"})),
                    true,
                ),
                (
                    call(
                        "a compare-and-set that loses",
                        json!(4),
                        "kv_set",
                        json!({"key": "a", "value": "3", "expected_version": 1, "no_expiry": true}),
                    ),
                    true,
                ),
                (
                    call(
                        "a value of the wrong type",
                        json!(5),
                        "kv_set",
                        json!({"key": "a", "value": 5}),
                    ),
                    true,
                ),
                (
                    call(
                        "an argument no tool has",
                        json!(6),
                        "kv_get",
                        json!({"key": "a", "x": 1}),
                    ),
                    true,
                ),
                (
                    call(
                        "a config key as a user",
                        json!(7),
                        "kv_set",
                        set("agentbus/policy", "{}"),
                    ),
                    true,
                ),
                (
                    call("a list", json!(8), "kv_list", json!({"prefix": ""})),
                    true,
                ),
                (viewer, true),
                (
                    call("a delete", json!(10), "kv_delete", json!({"key": "a"})),
                    true,
                ),
                (
                    call("secrets of nobody", json!(11), "secrets_list", json!({})),
                    true,
                ),
                (
                    call(
                        "a secret that is not there",
                        json!(12),
                        "secrets_delete",
                        json!({"name": "s"}),
                    ),
                    true,
                ),
                (
                    with_body(
                        call("no arguments at all", json!(13), "secrets_list", json!({})),
                        |b| {
                            b["params"].as_object_mut().map(|p| p.remove("arguments"));
                        },
                    ),
                    true,
                ),
                (
                    with_header(
                        call(
                            "a content type with a charset",
                            json!(14),
                            "kv_get",
                            json!({"key": "a"}),
                        ),
                        "content-type",
                        "application/json; charset=utf-8",
                    ),
                    true,
                ),
                (
                    with_body(
                        call("client info", json!(15), "kv_get", json!({"key": "a"})),
                        |b| {
                            b["params"]["_meta"]["io.modelcontextprotocol/clientInfo"] =
                                json!({"name": "t", "version": "1"});
                        },
                    ),
                    true,
                ),
                (
                    with_body(
                        call("no client info", json!(16), "kv_get", json!({"key": "a"})),
                        |b| {
                            b["params"]["_meta"]["io.modelcontextprotocol/clientInfo"] =
                                Value::Null;
                        },
                    ),
                    true,
                ),
                (
                    with_body(
                        call("capabilities", json!(17), "kv_get", json!({"key": "a"})),
                        |b| {
                            b["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
                                json!({"sampling": {}, "elicitation": {}});
                        },
                    ),
                    true,
                ),
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn the_lane_leaves_to_rmcp_every_request_it_is_not_sure_of() {
        let get = || call("", json!(1), "kv_get", json!({"key": "a"}));
        let named = |mut c: Case, what: &'static str| {
            c.what = what;
            c
        };
        let meta_without = |key: &'static str, what| {
            with_body(named(get(), what), move |b| {
                b["params"]["_meta"].as_object_mut().map(|m| m.remove(key));
            })
        };
        // One header changed from a plain call's.
        let headers = [
            ("mcp-name", "kv_set", "an Mcp-Name of another tool"),
            ("mcp-name", "=?base64?a3ZfZ2V0?=", "a Base64 Mcp-Name"),
            (
                "mcp-method",
                "tools/list",
                "an Mcp-Method of another method",
            ),
            ("mcp-protocol-version", "2025-06-18", "an older protocol"),
            ("mcp-session-id", "nope", "a session"),
            ("accept", "application/json", "no event streams accepted"),
            (
                "accept",
                "application/json;q=0, text/event-stream",
                "JSON refused by weight",
            ),
            ("content-type", "text/plain", "a body that is not JSON"),
            ("origin", "http://evil.example", "an Origin"),
            ("host", "evil.example", "another host"),
            ("mcp-param-key", "a", "a parameter header"),
        ];
        let mut cases: Vec<Case> = headers
            .into_iter()
            .map(|(name, value, what)| named(with_header(get(), name, value), what))
            .collect();
        cases.extend([
            meta_without(
                "io.modelcontextprotocol/clientCapabilities",
                "no client capabilities",
            ),
            meta_without(
                "io.modelcontextprotocol/protocolVersion",
                "no protocol in _meta",
            ),
            with_body(named(get(), "a log level"), |b| {
                b["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = json!("debug");
            }),
            with_body(named(get(), "a progress token"), |b| {
                b["params"]["_meta"]["progressToken"] = json!("p");
            }),
            with_body(named(get(), "another protocol in _meta"), |b| {
                b["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] =
                    json!("2025-11-25");
            }),
            with_body(named(get(), "capabilities that are not an object"), |b| {
                b["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!("all");
            }),
            with_body(named(get(), "client info that is not an object"), |b| {
                b["params"]["_meta"]["io.modelcontextprotocol/clientInfo"] = json!(7);
            }),
            {
                let mut c = named(get(), "two Mcp-Name headers");
                c.headers.push(("mcp-name", "kv_get"));
                c
            },
            with_body(named(get(), "a task"), |b| {
                b["params"]["task"] = json!({"ttl": 1000});
            }),
            with_body(named(get(), "a field JSON-RPC does not have"), |b| {
                b["extra"] = json!(1);
            }),
            with_body(named(get(), "JSON-RPC 1.0"), |b| {
                b["jsonrpc"] = json!("1.0")
            }),
            with_body(named(get(), "a batch"), |b| *b = json!([b.clone()])),
            named(
                call("", json!(1), "no_such_tool", json!({})),
                "a tool this server does not have",
            ),
            named(
                with_header(
                    call("", json!(1), "no_such_tool", json!({})),
                    "mcp-name",
                    "no_such_tool",
                ),
                "an unknown tool named",
            ),
        ]);
        both_ways_alike("declined", cases.into_iter().map(|c| (c, false)).collect()).await;
    }
}
