//! Benchmark of the agentbus MCP server on the embedded backend, next to a minimal KV server
//! written with the official Python MCP SDK.
//!
//!   cargo bench -p cli --bench mcp_server            (release build; ~2 minutes)
//!
//! Measures `tools/call` throughput and p50/p99 latency of `kv_get` and `kv_set` at 1, 16 and
//! 64 concurrent clients (each its own MCP session over Streamable HTTP on 127.0.0.1),
//! resident memory idle and under load, and the time from process start to the first served
//! request. Client and server share the machine's cores. Results: docs/benchmarks/mcp-server.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECONDS_PER_CASE: u64 = 5;
const KEYS: usize = 1000;

/// One MCP client on one keep-alive HTTP/1.1 connection.
struct Client {
    stream: TcpStream,
    port: u16,
    token: Option<String>,
    session: Option<String>,
    next_id: u64,
}

impl Client {
    async fn connect(port: u16, token: Option<String>) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = Client {
            stream,
            port,
            token,
            session: None,
            next_id: 1,
        };
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
        let (headers, _) = c.post(&init).await;
        c.session = headers.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("mcp-session-id")
                .then(|| value.trim().to_string())
        });
        c.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        c
    }

    async fn call(&mut self, tool: &str, args: Value) -> Value {
        self.next_id += 1;
        let req = json!({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": {"name": tool, "arguments": args}});
        let (head, body) = self.post(&req).await;
        let data = body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .rfind(|d| !d.is_empty())
            .map(str::to_string)
            .unwrap_or(body);
        let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
        assert!(
            v["result"].is_object() && v["result"]["isError"] != true,
            "{tool} failed: {} {v}",
            head.lines().next().unwrap_or("")
        );
        v
    }

    /// Ends the session (DELETE /mcp), as a well-behaved client does: the server holds at
    /// most 128 open sessions per token.
    async fn close(mut self) {
        let Some(s) = &self.session else { return };
        let req = format!(
            "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nMcp-Session-Id: {s}\r\n{}Content-Length: 0\r\n\r\n",
            self.port,
            self.token
                .as_ref()
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default()
        );
        self.stream.write_all(req.as_bytes()).await.unwrap();
        read_response(&mut self.stream).await;
    }

    /// POSTs a JSON-RPC message; returns the response head and the (de-chunked) body.
    async fn post(&mut self, msg: &Value) -> (String, String) {
        let body = msg.to_string();
        let mut req = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(s) = &self.session {
            req.push_str(&format!(
                "Mcp-Session-Id: {s}\r\nMcp-Protocol-Version: 2025-06-18\r\n"
            ));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        self.stream.write_all(req.as_bytes()).await.unwrap();
        read_response(&mut self.stream).await
    }
}

async fn fill(s: &mut TcpStream, rest: &mut Vec<u8>) {
    let mut chunk = [0u8; 8192];
    let n = s.read(&mut chunk).await.unwrap();
    assert!(n > 0, "connection closed in body");
    rest.extend_from_slice(&chunk[..n]);
}

async fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in headers");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let lower = head.to_ascii_lowercase();
    let mut rest = buf[head_end..].to_vec();
    let body = if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while rest.len() < len {
            fill(s, &mut rest).await;
        }
        rest[..len].to_vec()
    } else if lower.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = loop {
                if let Some(i) = rest[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + i;
                }
                fill(s, &mut rest).await;
            };
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[pos..line_end]).trim(), 16)
                    .unwrap();
            let start = line_end + 2;
            while rest.len() < start + size + 2 {
                fill(s, &mut rest).await;
            }
            out.extend_from_slice(&rest[start..start + size]);
            pos = start + size + 2;
            if size == 0 {
                break;
            }
        }
        out
    } else {
        Vec::new()
    };
    (head, String::from_utf8_lossy(&body).to_string())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Milliseconds from spawn until GET /health (or any HTTP answer) comes back.
fn wait_ready(port: u16, started: Instant) -> f64 {
    use std::io::{Read, Write};
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(
                format!(
                    "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            let mut b = [0u8; 16];
            if s.read(&mut b).map(|n| n > 0).unwrap_or(false) {
                return started.elapsed().as_secs_f64() * 1000.0;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Result_ {
    tool: &'static str,
    clients: usize,
    calls_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn load(port: u16, token: Option<String>, pid: u32, peak: Arc<AtomicU64>) -> Vec<Result_> {
    // Keys for kv_get.
    let mut c = Client::connect(port, token.clone()).await;
    for i in 0..KEYS {
        c.call(
            "kv_set",
            json!({"key": format!("bench/{i}"), "value": "x".repeat(100)}),
        )
        .await;
    }
    c.close().await;
    let mut out = Vec::new();
    for tool in ["kv_get", "kv_set"] {
        for clients in [1usize, 16, 64] {
            let deadline = Instant::now() + Duration::from_secs(SECONDS_PER_CASE);
            let mut tasks = Vec::new();
            for w in 0..clients {
                let token = token.clone();
                tasks.push(tokio::spawn(async move {
                    let mut c = Client::connect(port, token).await;
                    let mut lat = Vec::new();
                    let mut i = w;
                    while Instant::now() < deadline {
                        let key = format!("bench/{}", i % KEYS);
                        let args = if tool == "kv_get" {
                            json!({"key": key})
                        } else {
                            json!({"key": key, "value": "y".repeat(100)})
                        };
                        let t = Instant::now();
                        c.call(tool, args).await;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        i += 7;
                    }
                    c.close().await;
                    lat
                }));
            }
            let sampler = {
                let peak = peak.clone();
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            };
            let mut lat: Vec<f64> = Vec::new();
            for t in tasks {
                lat.extend(t.await.unwrap());
            }
            sampler.await.unwrap();
            lat.sort_by(|a, b| a.total_cmp(b));
            let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            out.push(Result_ {
                tool,
                clients,
                calls_per_s: lat.len() as f64 / SECONDS_PER_CASE as f64,
                p50_ms: pct(0.50),
                p99_ms: pct(0.99),
            });
        }
    }
    out
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn report(name: &str, start_ms: f64, idle: u64, peak: u64, rows: &[Result_]) {
    println!("\n### {name}\n");
    println!(
        "start to first served request: {start_ms:.0} ms; resident memory idle {} MiB, peak under load {} MiB\n",
        idle / 1024,
        peak / 1024
    );
    println!("| tool | clients | calls/s | p50 ms | p99 ms |\n|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} |",
            r.tool, r.clients, r.calls_per_s, r.p50_ms, r.p99_ms
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

    // agentbus, embedded backend, authenticated.
    let dir = std::env::temp_dir().join(format!("agentbus-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_agentbus"))
        // The per-tenant rate limit (1200/min by default) would cap the load at 20 calls/s:
        // lift it, the benchmark measures the server itself.
        .args([
            "up",
            "--data-dir",
            dir.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--rate-limit",
            "100000000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start_ms = wait_ready(port, started);
    let mut server = Guard(child);
    let mut out = String::new();
    use std::io::Read;
    let mut buf = [0u8; 4096];
    let stdout = server.0.stdout.as_mut().unwrap();
    while !out.contains("Ctrl-C") {
        let n = stdout.read(&mut buf).unwrap();
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let token = out
        .split("tenant default): ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.0.id();
    let idle = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(idle));
    let rows = rt.block_on(load(port, Some(token), pid, peak.clone()));
    report(
        "agentbus (Rust, rmcp, SQLite)",
        start_ms,
        idle,
        peak.load(Ordering::Relaxed),
        &rows,
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    // The reference: a minimal KV server with the official Python SDK, in memory, no auth.
    let port = free_port();
    let started = Instant::now();
    let child = Command::new(format!("{root}/.venv/bin/python"))
        .arg(format!("{root}/benches/py_kv_server.py"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Guard(child);
    let start_ms = wait_ready(port, started);
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.0.id();
    let idle = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(idle));
    let rows = rt.block_on(load(port, None, pid, peak.clone()));
    report(
        "reference: Python MCP SDK (MCPServer, dict in memory)",
        start_ms,
        idle,
        peak.load(Ordering::Relaxed),
        &rows,
    );
}
