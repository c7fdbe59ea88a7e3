//! `agentbus connect`: a local stdio MCP server that carries every message to an agentbus
//! server's Streamable HTTP endpoint with the caller's bearer token, for clients that start
//! their servers as processes (Claude Desktop, and any client without a header setting).
//!
//! Messages are passed through unchanged, one JSON-RPC message per line each way:
//! - each message from the client is POSTed; what comes back (a JSON answer, or an SSE stream
//!   of notifications and the answer) is written to stdout as it arrives, so messages run
//!   side by side and a long stream (`subscriptions/listen`) holds nothing else up;
//! - a 2026-07-28 message carries its routing headers (`MCP-Protocol-Version`, `Mcp-Method`,
//!   `Mcp-Name`), taken from the message itself;
//! - an older session keeps the server's `Mcp-Session-Id` and negotiated version, and the
//!   server's own stream (GET) is opened once the session is initialized, for what the server
//!   sends outside an answer (`notifications/resources/updated`); the session is closed
//!   (DELETE) when the client goes.
//!
//! An HTTP refusal becomes a JSON-RPC error answer that says what to do. The token is never
//! written anywhere. A target may pin the server's certificate by its SHA-256 fingerprint
//! (a workspace certificate, `server::tls`): then that certificate alone is accepted, whatever
//! address the server has.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{0}")]
    Url(String),
    #[error("the token is not a valid header value")]
    Token,
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
    #[error("stdio: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the bridge goes: the MCP endpoint of an agentbus server.
#[derive(Clone, Debug)]
pub struct Target {
    pub endpoint: reqwest::Url,
    /// The only certificate accepted, when the server has its workspace's own.
    pub pin: Option<super::tls::Fingerprint>,
}

impl Target {
    /// The endpoint from a server's address (`https://host/`) or its MCP URL
    /// (`https://host/mcp`). Plain HTTP carries the token in clear text: only to this machine,
    /// unless `allow_http`.
    pub fn parse(url: &str, allow_http: bool) -> Result<Self, BridgeError> {
        let mut u = reqwest::Url::parse(url)
            .map_err(|e| BridgeError::Url(format!("--url {url:?} is not a URL: {e}")))?;
        match u.scheme() {
            "https" => {}
            "http" => {
                let host = u.host_str().unwrap_or_default();
                if !allow_http && !crate::image::registry::is_loopback(host) {
                    return Err(BridgeError::Url(format!(
                        "--url {url}: plain HTTP would carry the token in clear text to {host}; use https (or --allow-http on a network you trust)"
                    )));
                }
            }
            s => {
                return Err(BridgeError::Url(format!(
                    "--url {url}: {s} is not http or https"
                )));
            }
        }
        if !u.path().trim_end_matches('/').ends_with("/mcp") {
            let path = format!("{}/mcp", u.path().trim_end_matches('/'));
            u.set_path(&path);
        }
        Ok(Target {
            endpoint: u,
            pin: None,
        })
    }

    /// Accepts only the certificate with this fingerprint (an https endpoint's).
    pub fn pinned(mut self, pin: super::tls::Fingerprint) -> Result<Self, BridgeError> {
        if self.endpoint.scheme() != "https" {
            return Err(BridgeError::Url(format!(
                "{}: a pinned certificate needs https",
                self.endpoint
            )));
        }
        self.pin = Some(pin);
        Ok(self)
    }
}

/// The methods whose target is mirrored in `Mcp-Name`, and the parameter that names it.
const NAME_BEARING: &[(&str, &str)] = &[
    ("tools/call", "name"),
    ("prompts/get", "name"),
    ("resources/read", "uri"),
];

/// A header value as MCP carries it: printable ASCII as is, anything else base64 in the
/// `=?base64?…?=` form.
fn header_value(v: &str) -> Option<HeaderValue> {
    use base64::Engine;
    let plain = v.bytes().all(|b| (0x20..0x7f).contains(&b))
        && v.trim() == v
        && !(v.starts_with("=?base64?") && v.ends_with("?="));
    let text = if plain {
        v.to_string()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(v)
        )
    };
    HeaderValue::from_str(&text).ok()
}

/// The session of a client of protocol 2025-11-25 or older.
#[derive(Default)]
struct Session {
    id: Option<String>,
    version: Option<String>,
}

struct Inner {
    http: reqwest::Client,
    target: Target,
    auth: HeaderValue,
    session: Mutex<Session>,
    out: Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
}

/// Runs the bridge until the client closes its input.
pub async fn run(
    target: Target,
    token: &str,
    input: impl AsyncBufRead + Unpin,
    output: impl AsyncWrite + Send + Unpin + 'static,
) -> Result<(), BridgeError> {
    let mut auth =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| BridgeError::Token)?;
    auth.set_sensitive(true);
    let mut http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if let Some(pin) = target.pin {
        let tls = super::tls::pinned_client_config(pin)
            .map_err(|e| BridgeError::Client(e.to_string()))?;
        http = http.tls_backend_preconfigured(tls);
    }
    let http = http
        .build()
        .map_err(|e| BridgeError::Client(e.to_string()))?;
    let bridge = Arc::new(Inner {
        http,
        target,
        auth,
        session: Mutex::new(Session::default()),
        out: Mutex::new(Box::new(output)),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut lines = input.lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                bridge
                    .write(&json!({"jsonrpc": "2.0", "id": null,
                        "error": {"code": -32700, "message": format!("not JSON: {e}")}}))
                    .await?;
                continue;
            }
        };
        // The answer to `initialize` sets the session every later message uses: it goes
        // first, alone.
        if msg["method"] == "initialize" {
            bridge.clone().forward(msg).await?;
        } else {
            let b = bridge.clone();
            tasks.spawn(async move { b.forward(msg).await });
        }
        while let Some(done) = tasks.try_join_next() {
            if let Ok(Err(e)) = done {
                return Err(e);
            }
        }
    }
    // The client is gone: end its session, and what still streams to it.
    tasks.abort_all();
    bridge.close().await;
    Ok(())
}

impl Inner {
    async fn write(&self, msg: &Value) -> Result<(), BridgeError> {
        let mut line = serde_json::to_vec(msg).unwrap_or_default();
        line.push(b'\n');
        let mut out = self.out.lock().await;
        out.write_all(&line).await?;
        out.flush().await?;
        Ok(())
    }

    /// The headers of a message: the token, and how the server routes it.
    async fn headers(&self, msg: &Value) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, self.auth.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let modern = msg["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"].as_str();
        if let Some(version) = modern {
            if let Some(v) = header_value(version) {
                h.insert("mcp-protocol-version", v);
            }
            if let Some(method) = msg["method"].as_str() {
                if let Some(v) = header_value(method) {
                    h.insert("mcp-method", v);
                }
                let named = NAME_BEARING.iter().find(|(m, _)| *m == method);
                if let Some(name) = named.and_then(|(_, key)| msg["params"][*key].as_str())
                    && let Some(v) = header_value(name)
                {
                    h.insert("mcp-name", v);
                }
            }
            return h;
        }
        let session = self.session.lock().await;
        if let Some(v) = session
            .id
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            h.insert("mcp-session-id", v);
        }
        if let Some(v) = session.version.as_deref().and_then(header_value) {
            h.insert("mcp-protocol-version", v);
        }
        h
    }

    /// Carries one message to the server and its answers back.
    async fn forward(self: Arc<Self>, msg: Value) -> Result<(), BridgeError> {
        let headers = self.headers(&msg).await;
        let sent = self
            .http
            .post(self.target.endpoint.clone())
            .headers(headers)
            .json(&msg)
            .send()
            .await;
        let r = match sent {
            Ok(r) => r,
            Err(e) => {
                return self
                    .refuse(
                        &msg,
                        format!(
                            "cannot reach {}: {}",
                            self.target.endpoint,
                            crate::aws::error_text(&e)
                        ),
                    )
                    .await;
            }
        };
        if msg["method"] == "initialize"
            && let Some(id) = r
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
        {
            self.session.lock().await.id = Some(id.to_string());
        }
        let status = r.status();
        if status == reqwest::StatusCode::ACCEPTED {
            if msg["method"] == "notifications/initialized"
                && self.session.lock().await.id.is_some()
            {
                tokio::spawn(self.clone().server_stream());
            }
            return Ok(());
        }
        let sse = r
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if sse {
            return self.relay_events(r, Some(&msg)).await;
        }
        let body = r.text().await.unwrap_or_default();
        match serde_json::from_str::<Value>(&body) {
            Ok(Value::Array(batch)) => {
                for m in &batch {
                    self.answered(&msg, m).await;
                    self.write(m).await?;
                }
                Ok(())
            }
            Ok(m) if m.get("jsonrpc").is_some() => {
                self.answered(&msg, &m).await;
                self.write(&m).await
            }
            _ if status.is_success() => Ok(()),
            _ => {
                let why = match status.as_u16() {
                    401 => "the server refused the token: set AGENTBUS_TOKEN to an agentbus token (`agentbus token create`)".to_string(),
                    404 if self.session.lock().await.id.is_some() => {
                        "the server no longer knows this session (it restarted or it expired): restart the client".to_string()
                    }
                    429 => "rate limited: too many requests for this token; retry in a minute".to_string(),
                    _ => format!("HTTP {status}: {}", body.lines().next().unwrap_or_default()),
                };
                self.refuse(&msg, why).await
            }
        }
    }

    /// Keeps the version an `initialize` answer negotiated.
    async fn answered(&self, request: &Value, answer: &Value) {
        if request["method"] == "initialize"
            && answer.get("id") == request.get("id")
            && let Some(v) = answer["result"]["protocolVersion"].as_str()
        {
            self.session.lock().await.version = Some(v.to_string());
        }
    }

    /// A request the server did not answer gets an error answer; a notification nothing.
    async fn refuse(&self, msg: &Value, why: String) -> Result<(), BridgeError> {
        tracing::warn!("agentbus connect: {why}");
        match msg.get("id") {
            Some(id) if msg.get("method").is_some() => {
                self.write(&json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32000, "message": format!("agentbus connect: {why}")}}))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Writes every message of an SSE answer as it comes.
    async fn relay_events(
        &self,
        mut r: reqwest::Response,
        request: Option<&Value>,
    ) -> Result<(), BridgeError> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = match r.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::warn!("agentbus connect: the server's stream broke: {e}");
                    return Ok(());
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = event_end(&buf) {
                let event: Vec<u8> = buf.drain(..end.1).collect();
                let text = String::from_utf8_lossy(&event[..end.0]);
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                if let Ok(m) = serde_json::from_str::<Value>(&data.join("\n")) {
                    if let Some(req) = request {
                        self.answered(req, &m).await;
                    }
                    self.write(&m).await?;
                }
            }
        }
    }

    /// The server's own stream of an older session: what it sends outside an answer.
    async fn server_stream(self: Arc<Self>) {
        let mut wait = Duration::from_millis(500);
        loop {
            let mut h = self.headers(&Value::Null).await;
            h.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
            h.remove(CONTENT_TYPE);
            match self
                .http
                .get(self.target.endpoint.clone())
                .headers(h)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    wait = Duration::from_millis(500);
                    if self.relay_events(r, None).await.is_err() {
                        return;
                    }
                }
                // No such stream (405), or the session is over (404, 401): nothing to follow.
                Ok(r) if r.status().is_client_error() => return,
                Ok(_) | Err(_) => {}
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    /// Ends an older session (DELETE), as a client leaving does.
    async fn close(&self) {
        if self.session.lock().await.id.is_none() {
            return;
        }
        let h = self.headers(&Value::Null).await;
        let _ = self
            .http
            .delete(self.target.endpoint.clone())
            .headers(h)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
    }
}

/// Where the first SSE event of `buf` ends: (its text's length, its length with the blank
/// line that ends it).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_server_s_mcp_path_and_clear_text_stays_on_this_machine() {
        let t = |u: &str| Target::parse(u, false).map(|t| t.endpoint.to_string());
        assert_eq!(
            t("https://agentbus.example.com").unwrap(),
            "https://agentbus.example.com/mcp"
        );
        assert_eq!(
            t("https://agentbus.example.com/mcp").unwrap(),
            "https://agentbus.example.com/mcp"
        );
        assert_eq!(
            t("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080/mcp"
        );
        assert_eq!(
            t("http://localhost:8080/mcp/").unwrap(),
            "http://localhost:8080/mcp/"
        );
        let refused = t("http://203.0.113.7:8080/").unwrap_err().to_string();
        assert!(
            refused.contains("clear text") && refused.contains("--allow-http"),
            "{refused}"
        );
        assert!(Target::parse("http://203.0.113.7:8080/", true).is_ok());
        assert!(t("ftp://example.com").is_err());
        assert!(t("not a url").is_err());
    }

    #[test]
    fn header_values_outside_printable_ascii_travel_as_base64() {
        assert_eq!(header_value("kv_get").unwrap(), "kv_get");
        assert_eq!(
            header_value("agentbus://kv/caf\u{e9}").unwrap(),
            "=?base64?YWdlbnRidXM6Ly9rdi9jYWbDqQ==?="
        );
        assert_eq!(header_value(" padded").unwrap(), "=?base64?IHBhZGRlZA==?=");
    }

    #[test]
    fn sse_events_end_at_a_blank_line_of_either_kind() {
        assert_eq!(event_end(b"data: 1\n\ndata: 2"), Some((7, 9)));
        assert_eq!(event_end(b"data: 1\r\n\r\n"), Some((7, 11)));
        assert_eq!(event_end(b"data: 1\n"), None);
    }
}

#[cfg(test)]
mod pinning {
    use super::*;
    use crate::server::tls::WorkspaceCertificate;
    use tokio::io::AsyncReadExt;

    /// A TLS server on 127.0.0.1 with `cert` that answers every POST with one JSON-RPC result.
    async fn tls_server(cert: &WorkspaceCertificate) -> u16 {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Headers, then as much body as Content-Length says.
                    loop {
                        let n = tls.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let body =
                        r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25"}}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    async fn bridged(port: u16, pin: crate::server::tls::Fingerprint) -> String {
        let target = Target::parse(&format!("https://127.0.0.1:{port}/"), false)
            .unwrap()
            .pinned(pin)
            .unwrap();
        let input: &[u8] =
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}
"#;
        let (w, mut r) = tokio::io::duplex(64 * 1024);
        run(target, "ab_test_token", input, w).await.unwrap();
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_pinned_bridge_talks_to_the_pinned_certificate_only() {
        let ours = WorkspaceCertificate::generate("agentbus-a", 1_790_000_000).unwrap();
        let theirs = WorkspaceCertificate::generate("agentbus-b", 1_790_000_000).unwrap();
        let port = tls_server(&ours).await;

        let out = bridged(port, ours.fingerprint().unwrap()).await;
        assert!(out.contains(r#""protocolVersion":"2025-11-25""#), "{out}");

        // Another workspace's certificate (a server in the middle, or the wrong address): the
        // request never leaves, and the answer says why with both fingerprints.
        let out = bridged(port, theirs.fingerprint().unwrap()).await;
        assert!(out.contains("not the workspace's"), "{out}");
        assert!(
            out.contains(&ours.fingerprint().unwrap().to_string()),
            "{out}"
        );
        assert!(!out.contains("ab_test_token"), "{out}");
    }

    #[test]
    fn only_https_can_be_pinned() {
        let cert = WorkspaceCertificate::generate("agentbus-a", 1_790_000_000).unwrap();
        let plain = Target::parse("http://127.0.0.1:8080/", false).unwrap();
        assert!(plain.pinned(cert.fingerprint().unwrap()).is_err());
    }
}
