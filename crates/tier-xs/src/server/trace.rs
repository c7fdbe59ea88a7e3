//! Trace ids: every request carries one, taken from its W3C `traceparent` header, else from the
//! Root of the `X-Amzn-Trace-Id` a load balancer adds (the same 128 bits, the form X-Ray and
//! W3C share), else a new random one. The request and each tool call run in a span with it
//! (`trace_id`), so every line the server logs for them names it, and JSON logs can be
//! searched by it in Logs Insights. When traces are exported ([`crate::traces`]), the request
//! and each tool call are spans of that trace: the request a child of the caller's span, the
//! tool call a child of the request.

use std::fmt;
use std::time::SystemTime;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::traces::{self, Attr, Kind, Span};

/// 128 bits from a generator per thread, seeded from the system's entropy (ids must be
/// unique, not secret; no system call per request), never zero.
fn random_bits() -> u128 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u128> = Cell::new({
            let mut seed = [0u8; 16];
            // Without entropy the time alone seeds it: ids need to be unique, not secret.
            let _ = getrandom::fill(&mut seed);
            let time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            u128::from_le_bytes(seed) ^ time
        });
    }
    // SplitMix-style: a Weyl sequence through a mixing function.
    let bits = STATE.with(|s| {
        let next = s
            .get()
            .wrapping_add(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        s.set(next);
        let mut z = next;
        z = (z ^ (z >> 67)).wrapping_mul(0xbf58_476d_1ce4_e5b9_94d0_49bb_1331_11eb);
        z ^ (z >> 61)
    });
    if bits == 0 { 1 } else { bits }
}

/// A span's id: 64 bits, never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanId(u64);

impl SpanId {
    pub fn random() -> Self {
        let bits = random_bits() as u64;
        SpanId(if bits == 0 { 1 } else { bits })
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// 16 lowercase hex digits, not all zeros.
    fn parse(hex: &str) -> Option<Self> {
        let ok = hex.len() == 16
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
            .filter(|v| *v != 0)
            .map(SpanId)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a request stands in its trace: the trace, the request's own span, the caller's span
/// and whether the caller asked for the trace to be recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace: TraceId,
    /// The request's span: the tool calls made in it are its children.
    pub span: SpanId,
    /// The caller's span (`traceparent`'s parent id, `X-Amzn-Trace-Id`'s `Parent`).
    pub parent: Option<SpanId>,
    /// The caller's sampling decision (`traceparent`'s sampled flag, `Sampled=0|1`); `None`:
    /// it did not say.
    pub sampled: Option<bool>,
}

impl TraceContext {
    /// The trace the middleware gave a request (in its extensions), or a new one where there
    /// is none (over stdio).
    pub fn of_request(extensions: Option<&axum::http::Extensions>) -> Self {
        extensions
            .and_then(|e| e.get::<TraceContext>())
            .cloned()
            .unwrap_or_else(|| TraceContext::of(&HeaderMap::new()))
    }

    /// The trace a request belongs to, as its headers say, or a new one.
    pub fn of(headers: &HeaderMap) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (trace, parent, sampled) = header("traceparent")
            .and_then(from_traceparent)
            .or_else(|| header("x-amzn-trace-id").and_then(from_amzn))
            .unwrap_or_else(|| (TraceId::random(), None, None));
        TraceContext {
            trace,
            span: SpanId::random(),
            parent,
            sampled,
        }
    }
}

/// 32 lowercase hex digits, never all zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceId(String);

impl TraceId {
    /// A new id: 128 bits from a generator per thread (see [`random_bits`]).
    pub fn random() -> Self {
        TraceId(hex(&random_bits().to_be_bytes()))
    }

    /// Its 16 bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        u128::from_str_radix(&self.0, 16).unwrap_or(0).to_be_bytes()
    }

    /// Its last 64 bits, which W3C Trace Context asks to be random: what sampling by trace
    /// id compares.
    pub fn low_bits(&self) -> u64 {
        self.0
            .get(16..)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    }

    /// The trace a request belongs to, as its headers say, or a new one.
    pub fn of(headers: &HeaderMap) -> Self {
        TraceContext::of(headers).trace
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hexadecimal, in one allocation.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn valid(hex: &str) -> Option<TraceId> {
    let ok = hex.len() == 32
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && hex.bytes().any(|b| b != b'0');
    ok.then(|| TraceId(hex.to_string()))
}

/// What a header says: the trace, the caller's span, its sampling decision.
type Caller = (TraceId, Option<SpanId>, Option<bool>);

/// `00-<trace id>-<parent id>-<flags>` (W3C Trace Context, version 00 and later versions'
/// first four fields); flag bit 0 is "sampled".
fn from_traceparent(v: &str) -> Option<Caller> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    if version.len() != 2 || version == "ff" {
        return None;
    }
    let id = valid(parts.next()?)?;
    let parent = SpanId::parse(parts.next()?)?;
    let flags = parts.next()?;
    let flags = (flags.len() == 2)
        .then(|| u8::from_str_radix(flags, 16).ok())
        .flatten()?;
    Some((id, Some(parent), Some(flags & 1 == 1)))
}

/// `Root=1-<8 hex: epoch seconds>-<24 hex>;Parent=<16 hex>;Sampled=<0|1|?>`.
fn from_amzn(v: &str) -> Option<Caller> {
    let field = |name: &str| {
        v.split(';')
            .find_map(|f| f.trim().strip_prefix(name)?.strip_prefix('='))
    };
    let root = field("Root")?;
    let mut parts = root.split('-');
    (parts.next()? == "1").then_some(())?;
    let time = parts.next()?;
    let rest = parts.next()?;
    (time.len() == 8 && parts.next().is_none()).then_some(())?;
    let id = valid(&format!("{time}{rest}"))?;
    let sampled = match field("Sampled") {
        Some("1") => Some(true),
        Some("0") => Some(false),
        _ => None,
    };
    Some((id, field("Parent").and_then(SpanId::parse), sampled))
}

/// The first two segments of a path, for a span's name: which part of the server a request
/// went to, without the keys and ids further on (they are the tenants' data).
fn route(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()).take(2) {
        out.push('/');
        if seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && seg.len() <= 32
        {
            out.push_str(seg);
        } else {
            out.push('…');
        }
    }
    if out.is_empty() { "/".into() } else { out }
}

/// Puts the request's trace in its extensions and runs it in a span carrying the trace id.
/// The span is at the level of the lines that are always logged, so they carry the id
/// whatever RUST_LOG says. When traces are exported, the request is recorded as a span
/// (health checks aside: a load balancer's, every few seconds, would be most of them).
pub async fn traced(mut req: Request, next: Next) -> Response {
    let ctx = TraceContext::of(req.headers());
    let span = tracing::error_span!("request", trace_id = %ctx.trace);
    let exported = (traces::wanted(&ctx) && req.uri().path() != "/health").then(|| {
        (
            SystemTime::now(),
            req.method().as_str().to_string(),
            route(req.uri().path()),
        )
    });
    req.extensions_mut().insert(ctx.clone());
    let response = next.run(req).instrument(span).await;
    if let Some((start, method, route)) = exported {
        let status = response.status();
        traces::record(Span {
            name: format!("{method} {route}"),
            trace: ctx.trace,
            id: ctx.span,
            parent: ctx.parent,
            kind: Kind::Server,
            start,
            end: SystemTime::now(),
            attributes: vec![
                ("http.request.method", Attr::Str(method)),
                (
                    "http.response.status_code",
                    Attr::Int(i64::from(status.as_u16())),
                ),
            ],
            error: status.is_server_error().then(|| status.to_string()),
        });
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_comes_from_traceparent_then_the_load_balancer_then_chance() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
                .parse()
                .expect("header"),
        );
        assert_eq!(TraceId::of(&h).as_str(), "5759e988bd862e3fe1be46a994272793");
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("header"),
        );
        assert_eq!(TraceId::of(&h).as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f35-00f067aa0ba902b7-01",
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", bad.parse().expect("header"));
            let id = TraceId::of(&h);
            assert_ne!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert!(valid(id.as_str()).is_some(), "{bad} gave {id}");
        }
        assert_ne!(TraceId::random(), TraceId::random());
    }

    #[test]
    fn the_callers_span_and_sampling_decision_come_with_the_trace() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .expect("header"),
        );
        let ctx = TraceContext::of(&h);
        assert_eq!(
            ctx.parent.map(|p| p.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(ctx.sampled, Some(false));
        assert_ne!(Some(ctx.span), ctx.parent);
        assert_eq!(ctx.trace.to_bytes()[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(ctx.trace.low_bits(), 0xa3ce929d0e0e4736);
        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                .parse()
                .expect("header"),
        );
        let ctx = TraceContext::of(&h);
        assert_eq!(
            ctx.parent.map(|p| p.to_string()).as_deref(),
            Some("53995c3f42cd8ad8")
        );
        assert_eq!(ctx.sampled, Some(true));
        // Without a header the server starts the trace and decides itself.
        let ctx = TraceContext::of(&HeaderMap::new());
        assert_eq!((ctx.parent, ctx.sampled), (None, None));
    }

    #[test]
    fn a_span_is_named_by_the_part_of_the_server_never_by_a_key() {
        assert_eq!(route("/mcp"), "/mcp");
        assert_eq!(route("/api/artifacts/reports%2Fq3.pdf"), "/api/artifacts");
        assert_eq!(route("/"), "/");
        assert_eq!(route("/a b/x"), "/…/x");
    }
}
