//! The server's own TLS where nothing in front of it terminates TLS (the extra-small tier has
//! no load balancer): a **workspace certificate** the deploy generates and keeps in the
//! workspace secret, next to the tokens. No public authority vouches for it (the task's public
//! address changes with every task), so clients pin it by its SHA-256 fingerprint, as SSH pins
//! a host key: `agentbus status` prints the fingerprint, `agentbus connect --env` pins it, and
//! `openssl x509 -fingerprint -sha256` shows the same form.
//!
//! On the wire a connection starts with either a TLS ClientHello or plain HTTP. Plain HTTP is
//! answered only to this machine (the container's own health check); from anywhere else it
//! gets a `400` naming the https address, so a token sent by mistake is never answered as if
//! it were welcome.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};

/// The TLS settings a server answers with (rustls's).
pub use rustls::ServerConfig;
use sha2::{Digest, Sha256};

/// Why a certificate could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the workspace certificate: {0}")]
    Generate(String),
    #[error("the workspace certificate is unreadable: {0}")]
    Unreadable(String),
    #[error("{0:?} is not a SHA-256 fingerprint (64 hexadecimal digits, colons allowed)")]
    Fingerprint(String),
}

/// Years a workspace certificate is valid. Pinned clients do not check the dates; browsers
/// showing it do.
const VALID_YEARS: i64 = 10;

/// A workspace's certificate and its private key, in PEM, as the workspace secret keeps them
/// (`tls` in its JSON document).
#[derive(Clone, Serialize, Deserialize)]
pub struct WorkspaceCertificate {
    pub certificate: String,
    pub private_key: String,
}

impl fmt::Debug for WorkspaceCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key never reaches a log line, whatever prints this.
        f.debug_struct("WorkspaceCertificate")
            .field("fingerprint", &self.fingerprint().ok())
            .finish_non_exhaustive()
    }
}

impl WorkspaceCertificate {
    /// A new self-signed certificate (ECDSA P-256) for the workspace `id`
    /// (`agentbus-{env}`), valid from a day ago for [`VALID_YEARS`].
    pub fn generate(id: &str, now_unix: i64) -> Result<Self, TlsError> {
        let fail = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
        // The name is for people reading the certificate; clients pin the fingerprint.
        let mut params =
            rcgen::CertificateParams::new(vec![format!("{id}.workspace.agentbus.invalid")])
                .map_err(fail)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("agentbus workspace {id}"),
        );
        let at = |secs: i64| {
            time::OffsetDateTime::from_unix_timestamp(secs)
                .map_err(|e| TlsError::Generate(e.to_string()))
        };
        params.not_before = at(now_unix - 86_400)?;
        params.not_after = at(now_unix + VALID_YEARS * 365 * 86_400)?;
        let cert = params.self_signed(&key).map_err(fail)?;
        Ok(Self {
            certificate: cert.pem(),
            private_key: key.serialize_pem(),
        })
    }

    /// The certificate, as in the workspace secret's document, if it holds one.
    pub fn from_secret_document(doc: &serde_json::Value) -> Option<Result<Self, TlsError>> {
        let tls = doc.get("tls")?;
        Some(
            serde_json::from_value(tls.clone())
                .map_err(|e| TlsError::Unreadable(format!("the secret's \"tls\" entry: {e}"))),
        )
    }

    fn der(&self) -> Result<CertificateDer<'static>, TlsError> {
        CertificateDer::from_pem_slice(self.certificate.as_bytes())
            .map_err(|e| TlsError::Unreadable(format!("certificate: {e}")))
    }

    /// The SHA-256 fingerprint of the certificate (of its DER form, as openssl and browsers
    /// compute it).
    pub fn fingerprint(&self) -> Result<Fingerprint, TlsError> {
        Ok(Fingerprint::of(&self.der()?))
    }

    /// What the server answers TLS with: TLS 1.3 and 1.2, HTTP/1.1, this certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        CertSlot::new(self.certified_key()?).server_config()
    }

    /// The certificate with its key, as a TLS server presents it.
    pub fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        certified_key(&self.certificate, &self.private_key)
    }
}

/// A certificate chain (the server's certificate first) and its private key, both in PEM, as
/// a TLS server presents them; the key must belong to the first certificate.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Unreadable(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Unreadable("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Unreadable(format!("private key: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| TlsError::Unreadable(format!("certificate and key: {e}")))
}

/// The certificates a TLS-speaking server answers with, replaceable while it runs. The
/// workspace certificate answers every handshake, except those that name (SNI) the server's
/// own domain once ACME issued a certificate for it (`server::domain`): clients that reach
/// the server by its address (no name to send) and pin the workspace certificate keep
/// working after a domain is added. Connections already open keep the certificate they
/// began with.
pub struct CertSlot {
    workspace: ArcSwap<CertifiedKey>,
    named: ArcSwapOption<Named>,
}

/// A domain's certificate and the name it answers.
struct Named {
    name: String,
    key: Arc<CertifiedKey>,
}

impl fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSlot")
            .field("workspace", &self.fingerprint())
            .field("named", &self.named_fingerprint())
            .finish()
    }
}

impl CertSlot {
    pub fn new(workspace: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            workspace: ArcSwap::from_pointee(workspace),
            named: ArcSwapOption::empty(),
        })
    }

    /// New handshakes that name no domain of the server get `next`.
    pub fn replace(&self, next: CertifiedKey) {
        self.workspace.store(Arc::new(next));
    }

    /// New handshakes that name `name` get `key`.
    pub fn set_named(&self, name: &str, key: CertifiedKey) {
        self.named.store(Some(Arc::new(Named {
            name: name.to_ascii_lowercase(),
            key: Arc::new(key),
        })));
    }

    /// The fingerprint of the workspace certificate answered with now.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.workspace
            .load()
            .cert
            .first()
            .map(|c| Fingerprint::of(c))
    }

    /// The fingerprint of the domain's certificate answered with now, if there is one.
    pub fn named_fingerprint(&self) -> Option<Fingerprint> {
        self.named
            .load()
            .as_ref()
            .and_then(|n| n.key.cert.first().map(|c| Fingerprint::of(c)))
    }

    /// The certificate for a handshake that names `server_name` (if it names any).
    fn for_name(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        if let (Some(asked), Some(named)) = (server_name, self.named.load_full())
            && asked.eq_ignore_ascii_case(&named.name)
        {
            return named.key.clone();
        }
        self.workspace.load_full()
    }

    /// What the server answers TLS with: TLS 1.3 and 1.2, HTTP/1.1, the slot's certificates
    /// at the time of each handshake.
    pub fn server_config(self: Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Unreadable(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.for_name(hello.server_name()))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate's validity (RFC 5280, 4.1.2.5) as Unix seconds: (notBefore, notAfter), read
/// from its DER form. `None` for what is not an X.509 certificate.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (cert, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(cert, 0x30)?;
    // The explicit version [0], then the serial number, the signature algorithm, the issuer.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30] {
        tbs = der_element(tbs, tag)?.1;
    }
    let (validity, _) = der_element(tbs, 0x30)?;
    let (from, rest) = der_time(validity)?;
    let (until, _) = der_time(rest)?;
    Some((from, until))
}

/// One DER element of tag `tag` at the start of `input`: its contents and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, mut rest) = rest.split_first()?;
    let len = if len < 0x80 {
        len as usize
    } else {
        let n = (len & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) at the start of
/// `input`, as Unix seconds, and what follows it.
fn der_time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (text, rest, century) = match der_element(input, 0x17) {
        Some((t, r)) => (t, r, true),
        None => {
            let (t, r) = der_element(input, 0x18)?;
            (t, r, false)
        }
    };
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let num = |s: &str| s.parse::<i32>().ok();
    let (year, rest_of) = if century {
        // RFC 5280: YY below 50 is 20YY, otherwise 19YY.
        let yy = num(text.get(..2)?)?;
        (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
    } else {
        (num(text.get(..4)?)?, text.get(4..)?)
    };
    if rest_of.len() != 10 {
        return None;
    }
    let part = |i: usize| num(rest_of.get(i..i + 2)?);
    let month = time::Month::try_from(u8::try_from(part(0)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(part(2)?).ok()?).ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(part(4)?).ok()?,
        u8::try_from(part(6)?).ok()?,
        u8::try_from(part(8)?).ok()?,
    )
    .ok()?;
    Some((date.with_time(clock).assume_utc().unix_timestamp(), rest))
}

/// A certificate's SHA-256 fingerprint. Shown as openssl shows it (`AB:CD:…`, 32 pairs);
/// read with or without the colons, in either case.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA-256 {self}")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, TlsError> {
        let digits: String = s.trim().chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex::decode_to_slice(&digits, &mut out).map_err(|_| TlsError::Fingerprint(s.into()))?;
        Ok(Self(out))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A client's TLS settings that accept exactly the certificate with this fingerprint (its
/// handshake signature checked as usual), whatever name or address it is reached by and
/// whatever its dates.
pub fn pinned_client_config(pin: Fingerprint) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Unreadable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is not the workspace's: its SHA-256 fingerprint is {seen}, the workspace's is {}",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The first byte of a TLS connection: a handshake record.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// What a connection whose first byte is `first`, from a peer on loopback or not, is served
/// as, when the server speaks TLS.
#[derive(Debug, PartialEq, Eq)]
pub enum Wire {
    Tls,
    /// Plain HTTP from this machine (the container's health check).
    Plain,
    /// Plain HTTP from elsewhere: refused with an answer naming https.
    Refuse,
}

pub fn wire(first: u8, peer_is_loopback: bool) -> Wire {
    match (first == TLS_HANDSHAKE, peer_is_loopback) {
        (true, _) => Wire::Tls,
        (false, true) => Wire::Plain,
        (false, false) => Wire::Refuse,
    }
}

/// The answer to plain HTTP from beyond this machine.
pub fn plain_http_refusal() -> Vec<u8> {
    let body = "This server speaks HTTPS only: use https:// with this address. Its certificate is \
                the workspace's: `agentbus status` prints its fingerprint and `agentbus connect \
                --env` pins it.\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_has_a_stable_fingerprint_and_serves_tls() {
        let cert = WorkspaceCertificate::generate("agentbus-dev", 1_790_000_000).unwrap();
        assert!(cert.certificate.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.private_key.contains("PRIVATE KEY"));
        let fp = cert.fingerprint().unwrap();
        assert_eq!(fp, cert.fingerprint().unwrap());
        let shown = fp.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1, "{shown}");
        assert_eq!(shown.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(
            shown
                .replace(':', "")
                .to_lowercase()
                .parse::<Fingerprint>()
                .unwrap(),
            fp
        );
        cert.server_config().unwrap();
        // Another generation is another key and another fingerprint.
        let other = WorkspaceCertificate::generate("agentbus-dev", 1_790_000_000).unwrap();
        assert_ne!(other.fingerprint().unwrap(), fp);
        // The key never shows in a debug print.
        let debug = format!("{cert:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        assert!(debug.contains(&shown), "{debug}");
    }

    #[test]
    fn a_certificate_s_validity_is_read_from_its_der_form() {
        let cert = WorkspaceCertificate::generate("agentbus-dev", 1_790_000_000).unwrap();
        let der = cert.der().unwrap();
        assert_eq!(
            validity(&der),
            Some((
                1_790_000_000 - 86_400,
                1_790_000_000 + VALID_YEARS * 365 * 86_400
            ))
        );
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&der[..der.len() / 3]), None);
        assert_eq!(validity(b"\x30\x03\x02\x01\x01"), None);
    }

    #[test]
    fn a_slot_answers_new_handshakes_with_the_certificate_put_in_it() {
        let first = WorkspaceCertificate::generate("agentbus-dev", 1_790_000_000).unwrap();
        let second = WorkspaceCertificate::generate("agentbus-dev", 1_790_000_000).unwrap();
        let slot = CertSlot::new(first.certified_key().unwrap());
        assert_eq!(slot.fingerprint(), first.fingerprint().ok());
        assert_eq!(slot.named_fingerprint(), None);
        let fp = |k: Arc<CertifiedKey>| Some(Fingerprint::of(&k.cert[0]));
        assert_eq!(
            fp(slot.for_name(Some("mcp.example.com"))),
            slot.fingerprint()
        );
        // A domain's certificate answers handshakes naming it, in any case; the others and
        // those naming nothing (an address) keep the workspace certificate.
        let domain = WorkspaceCertificate::generate("agentbus-dev", 1_790_000_000).unwrap();
        slot.set_named("MCP.example.com", domain.certified_key().unwrap());
        assert_eq!(slot.named_fingerprint(), domain.fingerprint().ok());
        assert_eq!(
            fp(slot.for_name(Some("mcp.Example.com"))),
            domain.fingerprint().ok()
        );
        assert_eq!(
            fp(slot.for_name(Some("other.example.com"))),
            first.fingerprint().ok()
        );
        assert_eq!(fp(slot.for_name(None)), first.fingerprint().ok());
        slot.replace(second.certified_key().unwrap());
        assert_eq!(slot.fingerprint(), second.fingerprint().ok());
        assert_eq!(fp(slot.for_name(None)), second.fingerprint().ok());
        // A key that is not the certificate's is refused.
        assert!(certified_key(&first.certificate, &second.private_key).is_err());
        assert!(certified_key("", &first.private_key).is_err());
    }

    #[test]
    fn a_fingerprint_must_be_32_bytes_of_hex() {
        for bad in ["", "AB:CD", &"G".repeat(64), &"AB".repeat(33)] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plain_http_is_served_only_to_this_machine() {
        assert_eq!(wire(TLS_HANDSHAKE, false), Wire::Tls);
        assert_eq!(wire(TLS_HANDSHAKE, true), Wire::Tls);
        assert_eq!(wire(b'G', true), Wire::Plain);
        assert_eq!(wire(b'G', false), Wire::Refuse);
        assert_eq!(wire(b'P', false), Wire::Refuse);
        let answer = String::from_utf8(plain_http_refusal()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains("https://"), "{body}");
    }

    #[test]
    fn a_certificate_is_read_from_the_secret_document_only_when_it_is_there() {
        let cert = WorkspaceCertificate::generate("agentbus-dev", 1_790_000_000).unwrap();
        let doc = serde_json::json!({"version": 1, "tokens": [], "tls": cert});
        let read = WorkspaceCertificate::from_secret_document(&doc)
            .unwrap()
            .unwrap();
        assert_eq!(read.fingerprint().unwrap(), cert.fingerprint().unwrap());
        assert!(
            WorkspaceCertificate::from_secret_document(&serde_json::json!({"tokens": []}))
                .is_none()
        );
        assert!(
            WorkspaceCertificate::from_secret_document(&serde_json::json!({"tls": 3}))
                .unwrap()
                .is_err()
        );
    }
}
