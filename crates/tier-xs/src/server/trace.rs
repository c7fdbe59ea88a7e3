//! Trace ids: every request carries one, taken from its W3C `traceparent` header, else from the
//! Root of the `X-Amzn-Trace-Id` a load balancer adds (the same 128 bits, the form X-Ray and
//! W3C share), else a new random one. The request and each tool call run in a span with it
//! (`trace_id`), so every line the server logs for them names it, and JSON logs can be
//! searched by it in Logs Insights.

use std::fmt;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// 32 lowercase hex digits, never all zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceId(String);

impl TraceId {
    /// A new id: 128 bits from a generator per thread, seeded from the system's entropy (a
    /// trace id must be unique, not secret; no system call per request).
    pub fn random() -> Self {
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
        // SplitMix-style: a Weyl sequence through a mixing function, never zero for long.
        let bits = STATE.with(|s| {
            let next = s
                .get()
                .wrapping_add(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            s.set(next);
            let mut z = next;
            z = (z ^ (z >> 67)).wrapping_mul(0xbf58_476d_1ce4_e5b9_94d0_49bb_1331_11eb);
            z ^ (z >> 61)
        });
        let bits = if bits == 0 { 1 } else { bits };
        TraceId(hex(&bits.to_be_bytes()))
    }

    /// The trace a request belongs to, as its headers say, or a new one.
    pub fn of(headers: &HeaderMap) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        header("traceparent")
            .and_then(from_traceparent)
            .or_else(|| header("x-amzn-trace-id").and_then(from_amzn))
            .unwrap_or_else(TraceId::random)
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

/// `00-<trace id>-<parent id>-<flags>` (W3C Trace Context, version 00 and later versions'
/// first four fields).
fn from_traceparent(v: &str) -> Option<TraceId> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    if version.len() != 2 || version == "ff" {
        return None;
    }
    let id = valid(parts.next()?)?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    (parent.len() == 16 && flags.len() == 2).then_some(id)
}

/// `Root=1-<8 hex: epoch seconds>-<24 hex>;Parent=…;Sampled=…`.
fn from_amzn(v: &str) -> Option<TraceId> {
    let root = v.split(';').find_map(|f| f.trim().strip_prefix("Root="))?;
    let mut parts = root.split('-');
    (parts.next()? == "1").then_some(())?;
    let time = parts.next()?;
    let rest = parts.next()?;
    (time.len() == 8 && parts.next().is_none()).then_some(())?;
    valid(&format!("{time}{rest}"))
}

/// Puts the request's trace id in its extensions and runs it in a span carrying it. The span
/// is at the level of the lines that are always logged, so they carry the id whatever
/// RUST_LOG says.
pub async fn traced(mut req: Request, next: Next) -> Response {
    let id = TraceId::of(req.headers());
    let span = tracing::error_span!("request", trace_id = %id);
    req.extensions_mut().insert(id);
    next.run(req).instrument(span).await
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
}
