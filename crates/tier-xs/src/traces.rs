//! Traces: the spans of requests and tool calls, sent to CloudWatch's OTLP traces endpoint
//! (`https://xray.{region}.amazonaws.com/v1/traces`, OTLP 1.x over HTTP, binary protobuf,
//! signed with SigV4 for `xray`). That endpoint keeps spans only in accounts with CloudWatch
//! Transaction Search on; the layer that starts the export checks that first.
//!
//! Recording is off until an [`Exporter`] runs: a request then costs one atomic load. When on,
//! a finished span goes to a bounded queue (spans past [`MAX_QUEUED`] are dropped and
//! counted, never waited for) that the exporter empties every [`FLUSH_EVERY`].
//!
//! Which traces are kept: a caller that says (W3C `traceparent`'s sampled flag, or
//! `X-Amzn-Trace-Id`'s `Sampled`) is obeyed; otherwise a share of the traces,
//! `AGENTBUS_TRACE_SAMPLE` (0 to 1, default 1), chosen by the trace id so that every span of
//! a trace is kept or none.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::aws::AwsClients;
use crate::server::trace::{SpanId, TraceContext, TraceId};

/// The variable setting the share of traces kept when the caller does not say (0 to 1).
pub const ENV_TRACE_SAMPLE: &str = "AGENTBUS_TRACE_SAMPLE";
/// Spans waiting to be sent, at most; more are dropped (and counted).
pub const MAX_QUEUED: usize = 8192;
/// Spans in one request to the endpoint, at most.
pub const BATCH: usize = 512;
/// How often the queue is sent.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How long one request to the endpoint may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

static ON: AtomicBool = AtomicBool::new(false);
/// The share of traces kept: trace ids whose last 64 bits are below this (all at `u64::MAX`).
static KEEP_BELOW: AtomicU64 = AtomicU64::new(u64::MAX);
static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    spans: Vec::new(),
    dropped: 0,
});

struct Queue {
    spans: Vec<Span>,
    dropped: u64,
}

/// What a span is to its trace (OTLP `SpanKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Work inside the server (a tool call within its request).
    Internal = 1,
    /// A request the server answered.
    Server = 2,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// A finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace: TraceId,
    pub id: SpanId,
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Attr)>,
    /// The span failed, and why (OTLP status ERROR with this message).
    pub error: Option<String>,
}

/// Whether spans of this trace are recorded now: an exporter runs, and the caller asked for
/// the trace or did not say and the trace is in the kept share.
pub fn wanted(ctx: &TraceContext) -> bool {
    if !ON.load(Ordering::Relaxed) {
        return false;
    }
    match ctx.sampled {
        Some(s) => s,
        None => {
            let keep = KEEP_BELOW.load(Ordering::Relaxed);
            keep == u64::MAX || ctx.trace.low_bits() < keep
        }
    }
}

/// Queues a finished span for the exporter (dropped when the queue is full or no exporter
/// runs). Call it only for traces [`wanted`] says are recorded.
pub fn record(span: Span) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let Ok(mut q) = QUEUE.lock() else { return };
    if q.spans.len() >= MAX_QUEUED {
        q.dropped += 1;
    } else {
        q.spans.push(span);
    }
}

/// Takes what is queued: the spans, and how many were dropped since the last take.
fn take() -> (Vec<Span>, u64) {
    match QUEUE.lock() {
        Ok(mut q) => (
            std::mem::take(&mut q.spans),
            std::mem::replace(&mut q.dropped, 0),
        ),
        Err(_) => (Vec::new(), 0),
    }
}

/// The share of traces to keep from `AGENTBUS_TRACE_SAMPLE`'s text (0 to 1).
pub fn parse_share(text: &str) -> Result<f64, TraceError> {
    match text.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(TraceError::Config(format!(
            "{ENV_TRACE_SAMPLE}={text:?}: a share of traces from 0 to 1 (0.1 keeps one in ten)"
        ))),
    }
}

fn keep_below(share: f64) -> u64 {
    if share >= 1.0 {
        u64::MAX
    } else {
        (share * u64::MAX as f64) as u64
    }
}

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("traces: {0}")]
    Config(String),
    #[error("traces: AWS credentials: {0}")]
    Credentials(String),
    #[error("traces: signing the request: {0}")]
    Sign(String),
    #[error("traces: sending to {url}: {detail}")]
    Send { url: String, detail: String },
    #[error("traces: {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

/// CloudWatch's OTLP traces endpoint in the clients' region, or the custom endpoint's
/// `/v1/traces` (an emulator).
pub fn endpoint(aws: &AwsClients) -> String {
    match &aws.endpoint {
        Some(e) => format!("{}/v1/traces", e.trim_end_matches('/')),
        None => format!("https://xray.{}.amazonaws.com/v1/traces", aws.region),
    }
}

/// Sends the recorded spans to CloudWatch's OTLP traces endpoint until stopped.
pub struct Exporter {
    aws: AwsClients,
    url: String,
    http: reqwest::Client,
    /// The resource every span comes from (`service.name`, the environment, …).
    resource: Vec<(&'static str, String)>,
}

impl Exporter {
    /// An exporter to the clients' endpoint, for the workspace environment `env`.
    pub fn new(aws: &AwsClients, env: &str) -> Result<Self, TraceError> {
        let share = match std::env::var(ENV_TRACE_SAMPLE) {
            Ok(v) if !v.is_empty() => parse_share(&v)?,
            _ => 1.0,
        };
        KEEP_BELOW.store(keep_below(share), Ordering::Relaxed);
        let http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .build()
            .map_err(|e| TraceError::Config(e.to_string()))?;
        Ok(Exporter {
            url: endpoint(aws),
            aws: aws.clone(),
            http,
            resource: vec![
                ("service.name", "agentbus".to_string()),
                ("service.version", env!("CARGO_PKG_VERSION").to_string()),
                ("deployment.environment.name", env.to_string()),
                ("cloud.provider", "aws".to_string()),
                ("cloud.region", aws.region.clone()),
            ],
        })
    }

    /// Records spans and sends them every [`FLUSH_EVERY`] until `stop`; what is queued then is
    /// sent before it returns. A failed send is logged (at most once a minute) and its spans
    /// dropped: traces are best effort and never hold a request up.
    pub async fn run(self, stop: CancellationToken) {
        ON.store(true, Ordering::Relaxed);
        tracing::info!(endpoint = %self.url, "traces are sent to CloudWatch (Transaction Search)");
        let mut last_warning: Option<std::time::Instant> = None;
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
            };
            if stopping {
                ON.store(false, Ordering::Relaxed);
            }
            let (spans, dropped) = take();
            let mut failed = None;
            for batch in spans.chunks(BATCH) {
                if let Err(e) = self.send(encode(&self.resource, batch)).await {
                    failed = Some(e);
                }
            }
            let due = last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
            if (failed.is_some() || dropped > 0) && due {
                last_warning = Some(std::time::Instant::now());
                match failed {
                    Some(e) => tracing::warn!(dropped, "{e}"),
                    None => tracing::warn!(
                        dropped,
                        "spans dropped: more than {MAX_QUEUED} waited to be sent"
                    ),
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// One signed OTLP/HTTP request.
    async fn send(&self, body: Vec<u8>) -> Result<(), TraceError> {
        let cfg = self.aws.sdk_config();
        let creds = cfg
            .credentials_provider()
            .ok_or_else(|| TraceError::Credentials("none are configured".into()))?;
        let creds = aws_credential_types::provider::ProvideCredentials::provide_credentials(&creds)
            .await
            .map_err(|e| TraceError::Credentials(e.to_string()))?;
        let host = self
            .url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        let headers = [
            ("host", host.as_str()),
            ("content-type", "application/x-protobuf"),
        ];
        let identity = creds.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.aws.region)
            .name("xray")
            .time(SystemTime::now())
            .settings(aws_sigv4::http_request::SigningSettings::default())
            .build()
            .map_err(|e| TraceError::Sign(e.to_string()))?
            .into();
        let signable = aws_sigv4::http_request::SignableRequest::new(
            "POST",
            self.url.as_str(),
            headers.iter().copied(),
            aws_sigv4::http_request::SignableBody::Bytes(&body),
        )
        .map_err(|e| TraceError::Sign(e.to_string()))?;
        let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
            .map_err(|e| TraceError::Sign(e.to_string()))?
            .into_parts();
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-protobuf");
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        let resp = req.body(body).send().await.map_err(|e| TraceError::Send {
            url: self.url.clone(),
            detail: crate::aws::error_text(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(TraceError::Refused {
            url: self.url.clone(),
            status: status.as_u16(),
            body: body.chars().take(300).collect(),
        })
    }
}

/// Protocol Buffers' wire format, as much of it as OTLP's trace messages use.
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }
    fn uint(&mut self, field: u32, v: u64) {
        self.tag(field, 0);
        self.varint(v);
    }
    fn fixed64(&mut self, field: u32, v: u64) {
        self.tag(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, field: u32, v: &[u8]) {
        self.tag(field, 2);
        self.varint(v.len() as u64);
        self.0.extend_from_slice(v);
    }
    fn string(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }
    /// A nested message, written by `f`.
    fn message(&mut self, field: u32, f: impl FnOnce(&mut Pb)) {
        let mut inner = Pb(Vec::new());
        f(&mut inner);
        self.bytes(field, &inner.0);
    }
    /// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string_value = 1; bool_value
    /// = 2; int_value = 3 }`.
    fn key_value(&mut self, field: u32, key: &str, value: &Attr) {
        self.message(field, |kv| {
            kv.string(1, key);
            kv.message(2, |v| match value {
                Attr::Str(s) => v.string(1, s),
                Attr::Bool(b) => v.uint(2, u64::from(*b)),
                Attr::Int(i) => v.uint(3, *i as u64),
            });
        });
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// An OTLP `ExportTraceServiceRequest` (opentelemetry-proto, trace/v1 and
/// collector/trace/v1) of `spans` from one resource, in binary protobuf.
pub fn encode(resource: &[(&'static str, String)], spans: &[Span]) -> Vec<u8> {
    let mut out = Pb(Vec::with_capacity(256 * spans.len() + 256));
    // ExportTraceServiceRequest.resource_spans = 1
    out.message(1, |rs| {
        // ResourceSpans.resource = 1: Resource.attributes = 1
        rs.message(1, |r| {
            for (k, v) in resource {
                r.key_value(1, k, &Attr::Str(v.clone()));
            }
        });
        // ResourceSpans.scope_spans = 2
        rs.message(2, |ss| {
            // ScopeSpans.scope = 1: InstrumentationScope { name = 1; version = 2 }
            ss.message(1, |s| {
                s.string(1, "agentbus");
                s.string(2, env!("CARGO_PKG_VERSION"));
            });
            for span in spans {
                // ScopeSpans.spans = 2
                ss.message(2, |s| {
                    s.bytes(1, &span.trace.to_bytes());
                    s.bytes(2, &span.id.to_bytes());
                    if let Some(p) = span.parent {
                        s.bytes(4, &p.to_bytes());
                    }
                    s.string(5, &span.name);
                    s.uint(6, span.kind as u64);
                    s.fixed64(7, nanos(span.start));
                    s.fixed64(8, nanos(span.end));
                    for (k, v) in &span.attributes {
                        s.key_value(9, k, v);
                    }
                    // Status { message = 2; code = 3 }: OK, or ERROR with its reason.
                    s.message(15, |st| match &span.error {
                        Some(why) => {
                            st.string(2, why);
                            st.uint(3, 2);
                        }
                        None => st.uint(3, 1),
                    });
                });
            }
        });
    });
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fixed_fields_are_written_as_protocol_buffers_define_them() {
        let mut pb = Pb(Vec::new());
        pb.uint(1, 300);
        pb.fixed64(7, 1);
        pb.string(5, "hi");
        assert_eq!(
            pb.0,
            [
                0x08, 0xac, 0x02, // field 1 varint 300
                0x39, 1, 0, 0, 0, 0, 0, 0, 0, // field 7 fixed64 1
                0x2a, 2, b'h', b'i', // field 5 length-delimited "hi"
            ]
        );
    }

    #[test]
    fn a_share_of_traces_is_a_number_from_zero_to_one() {
        assert_eq!(parse_share("0.25").ok(), Some(0.25));
        assert_eq!(parse_share(" 1 ").ok(), Some(1.0));
        for bad in ["1.5", "-0.1", "half", "NaN", ""] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
        assert_eq!(keep_below(1.0), u64::MAX);
        assert_eq!(keep_below(0.0), 0);
        assert!(keep_below(0.5).abs_diff(u64::MAX / 2) < 1 << 12);
    }
}
