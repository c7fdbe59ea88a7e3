//! Bearer tokens: each maps to a tenant and a role. Only SHA-256 hashes are stored — in the
//! workspace secret on AWS, in `tokens.json` of the data directory locally. A token is shown
//! once, when it is created.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::tls::{CertSlot, Fingerprint, WorkspaceCertificate};
use crate::runtime::{RuntimeError, Tenant, now_secs};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including workspace details.
    Admin,
    /// Read and write the tenant's KV, events and secrets.
    User,
    /// Read only.
    Viewer,
}

impl std::str::FromStr for Role {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "viewer" => Ok(Role::Viewer),
            _ => Err(RuntimeError::invalid(
                "role",
                format!("{s:?}: use admin, user or viewer"),
            )),
        }
    }
}

impl Role {
    pub fn can_write(self) -> bool {
        matches!(self, Role::Admin | Role::User)
    }
}

/// Who is calling: derived from the token, never from request input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub token_id: String,
    pub tenant: Tenant,
    pub role: Role,
    /// A workflow run's agent in a lane that only reads: besides reading, it may write its
    /// run's own records — keys that begin with this prefix — and timeline entries.
    pub records: Option<String>,
    /// A workflow run's agent: the run it acts for (a token of a person has none).
    pub run: Option<String>,
}

impl Identity {
    /// A token's identity.
    pub fn new(token_id: impl Into<String>, tenant: Tenant, role: Role) -> Self {
        Identity {
            token_id: token_id.into(),
            tenant,
            role,
            records: None,
            run: None,
        }
    }

    /// The identity of run `run_id`'s agent, acting for `tenant` with `role`.
    pub fn agent(token_id: impl Into<String>, tenant: Tenant, role: Role, run_id: &str) -> Self {
        Identity {
            run: Some(run_id.to_string()),
            ..Identity::new(token_id, tenant, role)
        }
    }

    /// Whether this caller may write `key` (of an artifact or a KV entry).
    pub fn may_write(&self, key: &str) -> bool {
        self.role.can_write() || self.records.as_deref().is_some_and(|p| key.starts_with(p))
    }
}

/// The prefix of an agent's proof of its AWS identity, in place of a bearer token.
pub const AGENT_PROOF_PREFIX: &str = "agentbus-aws.";

/// Verifies a workflow agent's proof of who it is (see [`AGENT_PROOF_PREFIX`]); a tier with
/// agents provides it.
#[async_trait]
pub trait AgentProof: Send + Sync {
    async fn verify(&self, proof: &str) -> Option<Identity>;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// Hex SHA-256 of the whole token.
    pub hash: String,
    pub tenant: Tenant,
    pub role: Role,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl TokenRecord {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Constant-time comparison of two hex digests.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(crate) fn random_hex(n: usize) -> Result<String, RuntimeError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| RuntimeError::Backend {
        op: "generate token",
        message: e.to_string(),
    })?;
    Ok(hex::encode(b))
}

/// The whole second a token made at `now_ms` with `ttl` expires at, rounded up: a token lives
/// at least its `ttl` (seconds alone would let a `1s` token expire at once). A zero `ttl` is
/// expired from the start.
fn expiry(now_ms: u128, ttl: Duration) -> u64 {
    if ttl.is_zero() {
        return (now_ms / 1000) as u64;
    }
    (now_ms + ttl.as_millis()).div_ceil(1000) as u64
}

/// A new token and its record. The token is `ab_{id}_{secret}`.
pub fn mint(
    tenant: Tenant,
    role: Role,
    ttl: Option<Duration>,
) -> Result<(String, TokenRecord), RuntimeError> {
    let id = random_hex(6)?;
    let token = format!("ab_{id}_{}", random_hex(32)?);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let rec = TokenRecord {
        id,
        hash: sha256_hex(&token),
        tenant,
        role,
        created_at: (now_ms / 1000) as u64,
        expires_at: ttl.map(|t| expiry(now_ms, t)),
    };
    Ok((token, rec))
}

/// Where token records live.
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn load(&self) -> Result<Vec<TokenRecord>, RuntimeError>;
    async fn save(&self, tokens: &[TokenRecord]) -> Result<(), RuntimeError>;
}

/// `tokens.json` in the data directory, readable by its owner only.
pub struct FileTokens {
    pub path: PathBuf,
}

#[async_trait]
impl TokenStore for FileTokens {
    async fn load(&self) -> Result<Vec<TokenRecord>, RuntimeError> {
        match tokio::fs::read_to_string(&self.path).await {
            Ok(s) => serde_json::from_str(&s).map_err(|e| RuntimeError::Backend {
                op: "read tokens",
                message: format!("{}: {e}", self.path.display()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(RuntimeError::backend("read tokens", e)),
        }
    }

    async fn save(&self, tokens: &[TokenRecord]) -> Result<(), RuntimeError> {
        let body = serde_json::to_string_pretty(tokens)
            .map_err(|e| RuntimeError::backend("write tokens", e))?;
        let tmp = self.path.with_extension("json.tmp");
        tokio::fs::write(&tmp, body)
            .await
            .map_err(|e| RuntimeError::backend("write tokens", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
        }
        tokio::fs::rename(&tmp, &self.path)
            .await
            .map_err(|e| RuntimeError::backend("write tokens", e))
    }
}

/// The `tokens` list inside the workspace secret (`agentbus/{env}/server`).
pub struct SecretTokens {
    pub client: aws_sdk_secretsmanager::Client,
    pub secret: String,
}

impl SecretTokens {
    async fn document(&self) -> Result<Value, RuntimeError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret)
            .send()
            .await
            .map_err(|e| RuntimeError::backend("GetSecretValue", e))?;
        Ok(out
            .secret_string
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_else(|| json!({"version": 1})))
    }
}

impl SecretTokens {
    /// The workspace certificate the secret holds, if any.
    pub async fn certificate(&self) -> Result<Option<WorkspaceCertificate>, RuntimeError> {
        WorkspaceCertificate::from_secret_document(&self.document().await?)
            .transpose()
            .map_err(|e| RuntimeError::backend("the workspace certificate", e))
    }

    /// Replaces the workspace certificate with a new one for the workspace `id`, keeping the
    /// rest of the secret (the tokens); returns the fingerprints of the old one and the new.
    pub async fn rotate_certificate(
        &self,
        id: &str,
    ) -> Result<(Fingerprint, Fingerprint), RuntimeError> {
        let mut doc = self.document().await?;
        let old = match WorkspaceCertificate::from_secret_document(&doc) {
            Some(cert) => cert
                .and_then(|c| c.fingerprint())
                .map_err(|e| RuntimeError::backend("the workspace certificate", e))?,
            None => {
                return Err(RuntimeError::invalid(
                    "workspace certificate",
                    format!(
                        "the secret {} holds none: the workspace's server does not speak TLS itself (`agentbus deploy` of the extra-small tier adds one)",
                        self.secret
                    ),
                ));
            }
        };
        let fail = |e: super::tls::TlsError| RuntimeError::backend("the workspace certificate", e);
        let cert = WorkspaceCertificate::generate(id, now_secs() as i64).map_err(fail)?;
        let new = cert.fingerprint().map_err(fail)?;
        doc["tls"] = serde_json::to_value(&cert)
            .map_err(|e| RuntimeError::backend("the workspace certificate", e))?;
        self.client
            .put_secret_value()
            .secret_id(&self.secret)
            .secret_string(doc.to_string())
            .send()
            .await
            .map_err(|e| RuntimeError::backend("PutSecretValue", e))?;
        Ok((old, new))
    }

    /// Keeps the workspace certificate `slot` answers with the one the secret holds, read
    /// every `every` until `stop`: a rotated certificate is served without a restart.
    pub fn follow_certificate(
        self,
        slot: Arc<CertSlot>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
                let cert = match self.certificate().await {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!("the workspace certificate: {e}");
                        continue;
                    }
                };
                if cert.fingerprint().ok() == slot.fingerprint() {
                    continue;
                }
                match cert.certified_key() {
                    Ok(key) => {
                        slot.replace(key);
                        tracing::info!(fingerprint = ?slot.fingerprint(), "the workspace certificate was rotated: serving the new one");
                    }
                    Err(e) => tracing::warn!("the rotated workspace certificate: {e}"),
                }
            }
        })
    }
}

#[async_trait]
impl TokenStore for SecretTokens {
    async fn load(&self) -> Result<Vec<TokenRecord>, RuntimeError> {
        let doc = self.document().await?;
        Ok(serde_json::from_value(doc["tokens"].clone()).unwrap_or_default())
    }

    async fn save(&self, tokens: &[TokenRecord]) -> Result<(), RuntimeError> {
        // Keep the rest of the document (the session key) as it is.
        let mut doc = self.document().await?;
        doc["tokens"] =
            serde_json::to_value(tokens).map_err(|e| RuntimeError::backend("encode tokens", e))?;
        self.client
            .put_secret_value()
            .secret_id(&self.secret)
            .secret_string(doc.to_string())
            .send()
            .await
            .map_err(|e| RuntimeError::backend("PutSecretValue", e))?;
        Ok(())
    }
}

/// Verifies tokens against a cached copy of the store. The copy is reloaded every
/// [`RELOAD_EVERY`] (so revocations take effect), and sooner when a token id it does not know
/// shows up (so a new token works within a second) — but then at most once per
/// [`UNKNOWN_RELOAD_GAP`] for the whole server, the unknown ids waiting for that read: made-up
/// ids cannot turn into a stream of reads of the token store, and each costs its sender a
/// wait. Verifying a known token against a fresh copy never waits.
pub struct Authenticator {
    store: Box<dyn TokenStore>,
    cache: std::sync::RwLock<Arc<TokenCache>>,
    /// Held while the store is read: one reload at a time.
    reloading: tokio::sync::Mutex<()>,
    agents: std::sync::OnceLock<std::sync::Arc<dyn AgentProof>>,
    /// Proofs verified lately, by their hash: one check per proof, not per request.
    proven: Mutex<HashMap<String, (Identity, Instant)>>,
}

/// How long a verified agent proof is taken without asking again (its signature is good for
/// 15 minutes).
const PROOF_KEPT: Duration = Duration::from_secs(60);

/// How old the cached token list may get.
const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// The least time between two reloads that unknown token ids ask for.
const UNKNOWN_RELOAD_GAP: Duration = Duration::from_secs(1);

/// The token list as last read, and when (`None`: never, or made stale on purpose).
#[derive(Default)]
struct TokenCache {
    tokens: Vec<TokenRecord>,
    loaded: Option<Instant>,
}

impl TokenCache {
    /// Older than [`RELOAD_EVERY`] (or never read).
    fn stale(&self) -> bool {
        self.loaded.is_none_or(|t| t.elapsed() >= RELOAD_EVERY)
    }

    /// Whether this copy should be read again before answering for token id `id`, asked
    /// at `arrived`: it is stale, or it does not know `id` and was read before `arrived`.
    fn due(&self, id: &str, arrived: Instant) -> bool {
        self.stale()
            || (self.loaded.is_some_and(|t| t < arrived) && !self.tokens.iter().any(|r| r.id == id))
    }
}

impl Authenticator {
    pub fn new(store: Box<dyn TokenStore>) -> Self {
        Authenticator {
            store,
            cache: std::sync::RwLock::new(Arc::default()),
            reloading: tokio::sync::Mutex::new(()),
            agents: std::sync::OnceLock::new(),
            proven: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts workflow agents' proofs of identity, checked by `proof` (set once).
    pub fn accept_agents(&self, proof: std::sync::Arc<dyn AgentProof>) {
        let _ = self.agents.set(proof);
    }

    async fn verify_agent(&self, proof: &str) -> Option<Identity> {
        let agents = self.agents.get()?;
        let key = sha256_hex(proof);
        {
            let proven = self.proven.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((id, at)) = proven.get(&key)
                && at.elapsed() < PROOF_KEPT
            {
                return Some(id.clone());
            }
        }
        let id = agents.verify(proof).await?;
        let mut proven = self.proven.lock().unwrap_or_else(|p| p.into_inner());
        // Expired entries go when one is added (not on every request), and the map is
        // bounded: a flood of distinct valid proofs cannot grow it without limit.
        proven.retain(|_, (_, at)| at.elapsed() < PROOF_KEPT);
        if proven.len() < 10_000 {
            proven.insert(key, (id.clone(), Instant::now()));
        }
        Some(id)
    }

    pub fn store(&self) -> &dyn TokenStore {
        self.store.as_ref()
    }

    /// The identity of a bearer token, or `None`.
    pub async fn verify(&self, token: &str) -> Option<Identity> {
        if token.starts_with(AGENT_PROOF_PREFIX) {
            return self.verify_agent(token).await;
        }
        let mut parts = token.splitn(3, '_');
        let (Some("ab"), Some(id), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let hash = sha256_hex(token);
        let arrived = Instant::now();
        let mut cache = self.snapshot();
        if cache.due(id, arrived) {
            // An id the copy does not know may be a token made since it was read: read the
            // store again, but not sooner than a gap after the last read. The wait is at
            // most the gap, and every request waiting meanwhile shares the one read.
            if let Some(ready) = cache.loaded.map(|t| t + UNKNOWN_RELOAD_GAP)
                && !cache.stale()
            {
                tokio::time::sleep_until(ready.into()).await;
            }
            let _one = self.reloading.lock().await;
            // Another request may have read it while this one waited.
            cache = self.snapshot();
            if cache.due(id, arrived) {
                let started = Instant::now();
                match self.store.load().await {
                    Ok(tokens) => {
                        cache = Arc::new(TokenCache {
                            tokens,
                            loaded: Some(started),
                        });
                        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = cache.clone();
                    }
                    Err(e) => tracing::warn!("cannot load tokens: {e}"),
                }
            }
        }
        let now = now_secs();
        cache
            .tokens
            .iter()
            .find(|r| r.id == id && same(&r.hash, &hash) && r.live(now))
            .map(|r| Identity::new(r.id.clone(), r.tenant.clone(), r.role))
    }

    fn snapshot(&self) -> Arc<TokenCache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes the next verification read the store (after this server changed it).
    fn forget(&self) {
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Arc::default();
    }

    /// Creates a token; returns it (shown once) and its record.
    pub async fn create(
        &self,
        tenant: Tenant,
        role: Role,
        ttl: Option<Duration>,
    ) -> Result<(String, TokenRecord), RuntimeError> {
        let (token, rec) = mint(tenant, role, ttl)?;
        let mut all = self.store.load().await?;
        all.push(rec.clone());
        self.store.save(&all).await?;
        self.forget();
        Ok((token, rec))
    }

    pub async fn list(&self) -> Result<Vec<TokenRecord>, RuntimeError> {
        self.store.load().await
    }

    /// True when a token with that id existed.
    pub async fn revoke(&self, id: &str) -> Result<bool, RuntimeError> {
        let mut all = self.store.load().await?;
        let before = all.len();
        all.retain(|r| r.id != id);
        if all.len() == before {
            return Ok(false);
        }
        self.store.save(&all).await?;
        self.forget();
        Ok(true)
    }
}

/// Per-tenant request limit over a sliding one-minute window.
pub struct RateLimiter {
    per_minute: u32,
    start: Instant,
    tenants: Mutex<HashMap<Tenant, Window>>,
    tokens: Mutex<HashMap<String, Window>>,
}

/// Requests counted per second over the last minute: constant memory and work however many
/// arrive (a log of every request's time held 720,000 entries per busy token at 12,000 calls
/// a second). A request leaves the count 59 to 60 seconds after it came.
struct Window {
    slots: [u32; 60],
    /// The second (since the limiter started) of the newest slot.
    at: u64,
    total: u64,
}

impl Window {
    fn new() -> Self {
        Window {
            slots: [0; 60],
            at: 0,
            total: 0,
        }
    }

    /// Moves the window to second `now`, emptying the slots of the seconds it passed.
    fn advance(&mut self, now: u64) {
        if now <= self.at {
            return;
        }
        if now - self.at >= 60 {
            self.slots = [0; 60];
            self.total = 0;
        } else {
            for second in self.at + 1..=now {
                let slot = &mut self.slots[(second % 60) as usize];
                self.total -= u64::from(*slot);
                *slot = 0;
            }
        }
        self.at = now;
    }

    /// Whether fewer than `limit` requests fell in the last minute.
    fn admits(&mut self, limit: usize, now: u64) -> bool {
        self.advance(now);
        self.total < limit as u64
    }

    fn count(&mut self, now: u64) {
        self.advance(now);
        let slot = &mut self.slots[(now % 60) as usize];
        *slot = slot.saturating_add(1);
        self.total += 1;
    }
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            start: Instant::now(),
            tenants: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// What one token may use of its tenant's minute: three quarters, so no single token
    /// (a viewer's, say) can use up its tenant's budget alone.
    fn per_token(&self) -> usize {
        ((self.per_minute as usize) * 3 / 4).max(1)
    }

    /// True when the request may go ahead (and counts it): within its token's share and its
    /// tenant's budget. An admin token is held to its own share only, so the tenant's other
    /// tokens can never lock its admins out.
    pub fn allow(&self, who: &Identity) -> bool {
        let (Ok(mut tenants), Ok(mut tokens)) = (self.tenants.lock(), self.tokens.lock()) else {
            return true;
        };
        let now = self.start.elapsed().as_secs();
        // No key is copied for a request that finds its window.
        if !tokens.contains_key(&who.token_id) {
            tokens.insert(who.token_id.clone(), Window::new());
        }
        if !tenants.contains_key(&who.tenant) {
            tenants.insert(who.tenant.clone(), Window::new());
        }
        let (Some(token), Some(tenant)) =
            (tokens.get_mut(&who.token_id), tenants.get_mut(&who.tenant))
        else {
            return true;
        };
        if !token.admits(self.per_token(), now) {
            return false;
        }
        let tenant_ok = tenant.admits(self.per_minute as usize, now);
        if !tenant_ok && who.role != Role::Admin {
            return false;
        }
        token.count(now);
        tenant.count(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lives_at_least_its_ttl() {
        let second = Duration::from_secs(1);
        // Made late in second 100: it must stay valid through 101.9, so expires at 102.
        assert_eq!(expiry(100_900, second), 102);
        assert_eq!(expiry(100_000, second), 101);
        assert_eq!(expiry(100_900, Duration::ZERO), 100);
        let rec = |exp| TokenRecord {
            id: "x".into(),
            hash: String::new(),
            tenant: Tenant::new("t").unwrap(),
            role: Role::User,
            created_at: 100,
            expires_at: Some(exp),
        };
        assert!(rec(expiry(100_900, second)).live(101));
        assert!(!rec(expiry(100_900, second)).live(102));
    }

    struct Mem(tokio::sync::Mutex<Vec<TokenRecord>>);

    #[async_trait]
    impl TokenStore for Mem {
        async fn load(&self) -> Result<Vec<TokenRecord>, RuntimeError> {
            Ok(self.0.lock().await.clone())
        }
        async fn save(&self, t: &[TokenRecord]) -> Result<(), RuntimeError> {
            *self.0.lock().await = t.to_vec();
            Ok(())
        }
    }

    #[tokio::test]
    async fn tokens_verify_only_as_created_and_stop_when_revoked() {
        let auth = Authenticator::new(Box::new(Mem(Default::default())));
        let (token, rec) = auth
            .create(Tenant::new("acme").unwrap(), Role::User, None)
            .await
            .unwrap();
        assert!(
            !auth.list().await.unwrap()[0].hash.contains(&token),
            "only the hash is stored"
        );
        let who = auth.verify(&token).await.unwrap();
        assert_eq!((who.tenant.as_str(), who.role), ("acme", Role::User));
        assert!(auth.verify(&format!("{token}x")).await.is_none());
        assert!(auth.verify("ab_nope_nope").await.is_none());
        assert!(auth.verify("").await.is_none());
        assert!(auth.revoke(&rec.id).await.unwrap());
        assert!(auth.verify(&token).await.is_none());
        let (expired, _) = auth
            .create(
                Tenant::new("acme").unwrap(),
                Role::User,
                Some(Duration::from_secs(0)),
            )
            .await
            .unwrap();
        assert!(
            auth.verify(&expired).await.is_none(),
            "an expired token is refused"
        );
    }

    /// A store that counts its reads.
    struct Counted(Mem, std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl TokenStore for Arc<Counted> {
        async fn load(&self) -> Result<Vec<TokenRecord>, RuntimeError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.load().await
        }
        async fn save(&self, t: &[TokenRecord]) -> Result<(), RuntimeError> {
            self.0.save(t).await
        }
    }

    #[tokio::test]
    async fn made_up_token_ids_cannot_make_the_server_read_its_token_store_over_and_over() {
        let store = Arc::new(Counted(
            Mem(Default::default()),
            std::sync::atomic::AtomicUsize::new(0),
        ));
        let auth = Arc::new(Authenticator::new(Box::new(store.clone())));
        let reads = || store.1.load(std::sync::atomic::Ordering::SeqCst);
        // A flood of made-up ids from many callers at once, for 1.5 s.
        let start = Instant::now();
        let mut flood = Vec::new();
        for n in 0..200 {
            let auth = auth.clone();
            flood.push(tokio::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < Duration::from_millis(1500) {
                    assert!(auth.verify(&format!("ab_{n}x{i}_secret")).await.is_none());
                    i += 1;
                }
                i
            }));
        }
        let mut tried = 0;
        for f in flood {
            tried += f.await.unwrap();
        }
        let took = start.elapsed();
        assert!(tried >= 200, "the flood made {tried} attempts");
        // The first read, and at most one per UNKNOWN_RELOAD_GAP after it.
        let most = 1 + (took.as_secs_f64() / UNKNOWN_RELOAD_GAP.as_secs_f64()).ceil() as usize;
        assert!(
            reads() <= most,
            "{} reads for {tried} made-up ids in {took:?}",
            reads()
        );
        // Known tokens do not wait behind them.
        let (known, rec) = mint(Tenant::new("acme").unwrap(), Role::User, None).unwrap();
        store.0.save(&[rec]).await.unwrap();
        auth.forget();
        assert!(auth.verify(&known).await.is_some());
        let quick = Instant::now();
        for _ in 0..100 {
            assert!(auth.verify(&known).await.is_some());
        }
        assert!(
            quick.elapsed() < UNKNOWN_RELOAD_GAP / 2,
            "{:?}",
            quick.elapsed()
        );

        // A token made elsewhere (another process writing the store) works within the gap.
        let (token, rec) = mint(Tenant::new("acme").unwrap(), Role::User, None).unwrap();
        store.0.save(&[rec]).await.unwrap();
        let made = Instant::now();
        while auth.verify(&token).await.is_none() {
            assert!(
                made.elapsed() < UNKNOWN_RELOAD_GAP * 2,
                "the new token never worked"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn the_rate_limit_is_per_tenant_and_no_token_takes_it_all() {
        let rl = RateLimiter::new(8);
        let who =
            |id: &str, tenant: &str, role| Identity::new(id, Tenant::new(tenant).unwrap(), role);
        let (viewer, user, admin) = (
            who("v", "a", Role::Viewer),
            who("u", "a", Role::User),
            who("ad", "a", Role::Admin),
        );
        // One token: at most 6 of the tenant's 8.
        assert_eq!((0..10).filter(|_| rl.allow(&viewer)).count(), 6);
        // The tenant's other tokens: the 2 left.
        assert_eq!((0..10).filter(|_| rl.allow(&user)).count(), 2);
        // An admin is held to its own share only: never locked out by the others.
        assert_eq!((0..10).filter(|_| rl.allow(&admin)).count(), 6);
        // Another tenant has its own budget.
        assert!(rl.allow(&who("b1", "b", Role::User)));
    }

    #[test]
    fn a_request_leaves_the_rate_window_a_minute_after_it_came() {
        let mut w = Window::new();
        for _ in 0..3 {
            w.count(10);
        }
        w.count(40);
        assert!(!w.admits(4, 69), "all four are within the minute");
        assert!(w.admits(4, 70), "the three of second 10 have left");
        assert!(!w.admits(1, 70), "the one of second 40 is still there");
        assert!(w.admits(1, 100));
        w.count(500);
        assert!(
            !w.admits(1, 500),
            "a long quiet spell empties the window, then counts again"
        );
    }
}
