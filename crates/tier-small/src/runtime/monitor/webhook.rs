//! Webhook deliveries: an HTTP POST of the event, signed with the subscription's secret,
//! retried with exponential backoff.
//!
//! Headers of every request:
//! - `X-Agentbus-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! - `X-Agentbus-Event-Id`, `X-Agentbus-Subscription`, `X-Agentbus-Attempt` (1, 2, ...)
//!
//! A receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares in
//! constant time, and rejects old timestamps. Deliveries are at least once: a receiver
//! dedupes by event id.
//!
//! Addresses: on AWS only `https` URLs to public addresses are accepted, checked when the
//! subscription is made and again on every connection (a name that later resolves to a
//! private, loopback or link-local address — the task's credentials endpoint, say — is
//! refused). The embedded server, on the user's own machine, also accepts `http` and private
//! addresses. Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tier_xs::runtime::{RuntimeError, now_millis};

use super::Outcome;
use crate::runtime::timeline::ts_of;

pub const MAX_URL_BYTES: usize = 2048;
/// Attempts per delivery (the first and four retries).
pub const MAX_ATTEMPTS: u32 = 5;
/// Time for one attempt (connect, send, response headers).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where webhooks may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// `https` to public addresses only (the server on AWS).
    PublicHttps,
    /// Also `http`, loopback and private networks (the embedded server, or a test setup).
    Anywhere,
}

#[derive(Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    reach: Reach,
    /// Wait before the second attempt; doubled for each further one.
    first_backoff: Duration,
}

/// One event for one subscription.
pub struct Delivery<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub subscription_id: &'a str,
    pub rule: &'a str,
    pub event_id: &'a str,
    pub document: &'a Value,
}

/// Whether a connection to this address may leave the server's own networks.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Addresses that carry an IPv4 address are judged by it: mapped (::ffff:a.b.c.d),
            // compatible (::a.b.c.d, deprecated), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                std::net::Ipv4Addr::new(a, b, c, d)
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            if s[..6] == [0; 6] {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_public(IpAddr::V4(embedded(s[1], s[2])));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || s[0] == 0x64 && s[1] == 0xff9b // NAT64 local-use (64:ff9b:1::/48)
                || s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

/// Resolves names like the system does, then drops addresses the policy forbids.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves only to non-public addresses").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// An HTTP client for calls the server makes to addresses its users give it (webhooks,
/// registered MCP servers): no redirects, `timeout` per request, and with
/// [`Reach::PublicHttps`] only HTTPS to public addresses, checked on every name resolution
/// (so a name cannot be pointed at the task's metadata or credentials endpoints).
pub fn outbound_client(
    reach: Reach,
    timeout: Duration,
    user_agent: &str,
) -> Result<reqwest::Client, RuntimeError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(user_agent);
    if reach == Reach::PublicHttps {
        b = b.dns_resolver(Arc::new(PublicOnly)).https_only(true);
    }
    b.build()
        .map_err(|e| RuntimeError::backend("outbound HTTP client", e))
}

/// `t=...,v1=...` for a body sent at `t` (unix seconds).
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhooks {
    pub fn new(reach: Reach) -> Result<Self, RuntimeError> {
        Self::with_backoff(reach, Duration::from_millis(500))
    }

    pub fn with_backoff(reach: Reach, first_backoff: Duration) -> Result<Self, RuntimeError> {
        let client = outbound_client(
            reach,
            ATTEMPT_TIMEOUT,
            concat!("agentbus-webhooks/", env!("CARGO_PKG_VERSION")),
        )?;
        Ok(Webhooks {
            client,
            reach,
            first_backoff,
        })
    }

    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// Checks a subscriber's URL against the policy.
    pub fn check_url(&self, url: &str) -> Result<(), RuntimeError> {
        let bad = |why: String| Err(RuntimeError::invalid("url", why));
        if url.len() > MAX_URL_BYTES {
            return bad(format!("at most {MAX_URL_BYTES} bytes"));
        }
        let Ok(u) = url.parse::<reqwest::Url>() else {
            return bad(format!("{url:?} is not a URL"));
        };
        if !u.username().is_empty() || u.password().is_some() {
            return bad(
                "must not carry credentials; the signature authenticates deliveries".into(),
            );
        }
        let Some(host) = u.host_str() else {
            return bad("has no host".into());
        };
        match (u.scheme(), self.reach) {
            ("https", _) | ("http", Reach::Anywhere) => {}
            (s, Reach::PublicHttps) => {
                return bad(format!("{s}: webhooks from this server must use https"));
            }
            (s, Reach::Anywhere) => return bad(format!("{s}: use http or https")),
        }
        if self.reach == Reach::PublicHttps {
            let literal = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>();
            if let Ok(ip) = literal
                && !is_public(ip)
            {
                return bad(format!("{ip} is not a public address"));
            }
            if host == "localhost" || host.ends_with(".localhost") || host.ends_with(".internal") {
                return bad(format!("{host} is not a public host"));
            }
        }
        Ok(())
    }

    /// Delivers one event, retrying network errors, timeouts, 408, 429 and 5xx with
    /// exponential backoff (with jitter); other answers end the delivery at once.
    pub async fn deliver(&self, d: &Delivery<'_>) -> Outcome {
        let body = json!({
            "subscription_id": d.subscription_id,
            "rule": d.rule,
            "event": d.document,
        })
        .to_string();
        let mut wait = self.first_backoff;
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            if let Err(e) = self.check_url(d.url) {
                last = e.to_string();
                break;
            }
            let t = now_millis() / 1000;
            let sent = self
                .client
                .post(d.url)
                .header("content-type", "application/json")
                .header(
                    "x-agentbus-signature",
                    signature(d.secret, t, body.as_bytes()),
                )
                .header("x-agentbus-event-id", d.event_id)
                .header("x-agentbus-subscription", d.subscription_id)
                .header("x-agentbus-attempt", attempt.to_string())
                .body(body.clone())
                .send()
                .await;
            let retry = match sent {
                Ok(resp) if resp.status().is_success() => {
                    return Outcome {
                        event_id: d.event_id.to_string(),
                        at: ts_of(now_millis()),
                        ok: true,
                        summary: format!(
                            "{} after {attempt} attempt{}",
                            resp.status().as_u16(),
                            if attempt == 1 { "" } else { "s" }
                        ),
                        error: None,
                    };
                }
                Ok(resp) => {
                    let s = resp.status();
                    last = format!("HTTP {}", s.as_u16());
                    s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429
                }
                Err(e) => {
                    // Without the URL: a webhook URL may carry a token in its path, and
                    // this text goes to logs and into the subscription's last error.
                    let retry = !e.is_builder();
                    last = tier_xs::engine::error_text(&e.without_url());
                    retry
                }
            };
            if !retry || attempt == MAX_ATTEMPTS {
                let summary = format!(
                    "{last} after {attempt} attempt{}",
                    if attempt == 1 { "" } else { "s" }
                );
                return Outcome {
                    event_id: d.event_id.to_string(),
                    at: ts_of(now_millis()),
                    ok: false,
                    summary: summary.clone(),
                    error: Some(summary),
                };
            }
            tokio::time::sleep(jitter(wait)).await;
            wait = wait.saturating_mul(2);
        }
        Outcome {
            event_id: d.event_id.to_string(),
            at: ts_of(now_millis()),
            ok: false,
            summary: last.clone(),
            error: Some(last),
        }
    }
}

/// 80-120 % of the wait, so many failing subscribers do not retry in step.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let r = if getrandom::fill(&mut b).is_ok() {
        b[0]
    } else {
        128
    };
    d.mul_f64(0.8 + 0.4 * f64::from(r) / 255.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_time_and_body() {
        // RFC 4231 test case 2 shape: key "Jefe", data "what do ya want for nothing?".
        let s = signature("Jefe", 0, b"what do ya want for nothing?");
        // The signed text is "0.what do ya want ...", so the value differs from the RFC's;
        // recompute with the hmac crate directly.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        assert_eq!(
            s,
            format!("t=0,v1={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_ne!(signature("other", 0, b"x"), signature("Jefe", 0, b"x"));
    }

    #[test]
    fn public_addresses_only_on_aws() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.5",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.170.2",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            // IPv4 inside IPv6: NAT64, 6to4, compatible; and the other reserved ranges.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:a9fe:a9fe::",
            "2002:c0a8:0101::1",
            "::127.0.0.1",
            "::a9fe:a9fe",
            "fec0::1",
            "192.0.0.1",
            "64:ff9b:1::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "52.94.76.1",
            "2600:1f18::1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        let aws = Webhooks::new(Reach::PublicHttps).unwrap();
        assert!(aws.check_url("https://hooks.example.com/x").is_ok());
        for bad in [
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://169.254.169.254/latest",
            "https://[::1]:8443/",
            "https://localhost/x",
            "https://user:pw@hooks.example.com/",
            "ftp://hooks.example.com/",
            "not a url",
        ] {
            assert!(aws.check_url(bad).is_err(), "{bad}");
        }
        let local = Webhooks::new(Reach::Anywhere).unwrap();
        assert!(local.check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(local.check_url("ftp://127.0.0.1/").is_err());
    }

    /// A listener on 127.0.0.1 that answers every request with `answer` and counts the
    /// connections it accepted.
    async fn answering(answer: String) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let _ = c.read(&mut buf).await;
                    let _ = c.write_all(answer.as_bytes()).await;
                });
            }
        });
        (port, seen)
    }

    fn delivery(url: &str) -> Delivery<'_> {
        Delivery {
            url,
            secret: "s",
            subscription_id: "sub",
            rule: "r",
            event_id: "e",
            document: &serde_json::Value::Null,
        }
    }

    #[tokio::test]
    async fn server_errors_throttling_and_request_timeouts_are_retried_five_times_and_nothing_else_is()
     {
        use std::sync::atomic::Ordering::SeqCst;
        let w = Webhooks::with_backoff(Reach::Anywhere, Duration::from_millis(1)).unwrap();
        for (status, attempts) in [
            ("500 Internal Server Error", 5),
            ("503 Service Unavailable", 5),
            ("429 Too Many Requests", 5),
            ("408 Request Timeout", 5),
            ("404 Not Found", 1),
            ("401 Unauthorized", 1),
            ("400 Bad Request", 1),
        ] {
            let (port, seen) = answering(format!(
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            ))
            .await;
            let url = format!("http://127.0.0.1:{port}/hook");
            let out = w.deliver(&delivery(&url)).await;
            let code = &status[..3];
            let plural = if attempts == 1 { "" } else { "s" };
            assert!(!out.ok, "{status}");
            assert_eq!(
                out.summary,
                format!("HTTP {code} after {attempts} attempt{plural}")
            );
            assert_eq!(seen.load(SeqCst), attempts, "{status}");
        }
    }

    #[tokio::test]
    async fn an_attempt_without_an_answer_is_given_up_after_five_seconds_and_tried_again() {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The first connection is read and never answered; the next ones get a 200.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = vec![0u8; 65536];
                let _ = c.read(&mut buf).await;
                if count.fetch_add(1, SeqCst) == 0 {
                    held.push(c);
                } else {
                    let _ = c
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            }
        });
        let w = Webhooks::with_backoff(Reach::Anywhere, Duration::from_millis(1)).unwrap();
        let url = format!("http://127.0.0.1:{port}/hook");
        let started = std::time::Instant::now();
        // A bound on a hang (an attempt that waited forever), not a measure.
        let out = tokio::time::timeout(Duration::from_secs(20), w.deliver(&delivery(&url)))
            .await
            .expect("the unanswered attempt was given up");
        assert!(out.ok, "{}", out.summary);
        assert_eq!(out.summary, "200 after 2 attempts");
        assert_eq!(seen.load(SeqCst), 2);
        // It waited the whole attempt's time first.
        assert!(
            started.elapsed() >= ATTEMPT_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_webhook_that_redirects_is_not_followed_and_fails_without_retries() {
        let (target, reached) =
            answering("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into()).await;
        let (hook, _) = answering(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{target}/\r\ncontent-length: 0\r\n\r\n"
        ))
        .await;
        let w = Webhooks::with_backoff(Reach::Anywhere, Duration::from_millis(1)).unwrap();
        let url = format!("http://127.0.0.1:{hook}/hook");
        let out = w
            .deliver(&Delivery {
                url: &url,
                secret: "s",
                subscription_id: "sub",
                rule: "r",
                event_id: "e",
                document: &json!({}),
            })
            .await;
        assert!(!out.ok);
        assert_eq!(out.summary, "HTTP 307 after 1 attempt");
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_name_is_judged_by_the_addresses_it_resolves_to_at_each_connection() {
        let (port, reached) =
            answering("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into()).await;
        // The resolver every deployed outbound connection goes through.
        let e = reqwest::dns::Resolve::resolve(&PublicOnly, "localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("only to non-public addresses"),
            "{e}"
        );
        // A name that resolves to loopback is not connected to, whatever passed before.
        let client = outbound_client(Reach::PublicHttps, Duration::from_secs(5), "t").unwrap();
        let e = client
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(
            tier_xs::engine::error_text(&e).contains("only to non-public addresses"),
            "{e:?}"
        );
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
