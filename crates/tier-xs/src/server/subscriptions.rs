//! Resource subscriptions: a client watching a resource is sent
//! `notifications/resources/updated` with its URI when the resource changes, through a session
//! (`resources/subscribe`, protocol versions up to 2025-11-25) or a `subscriptions/listen`
//! stream (2026-07-28). Both run a [`Watch`].
//!
//! A change made through this server (a tool call, the HTTP API) is announced on [`Changes`]
//! and reported at once. A change made anywhere else (another task of the service, an upload
//! through a presigned URL straight to S3, an entry expiring) is found by reading each watched
//! resource's fingerprint every [`POLL`]. Either way a resource is reported when its
//! fingerprint differs from the last one seen, so one change is reported once.
//!
//! Each watched resource costs one read per poll of the backing store, so a tenant watches at
//! most [`MAX_PER_TENANT`] at once, across all its sessions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::{Peer, RoleServer};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::resources::{self as res, Sources};
use crate::runtime::{RuntimeError, Tenant};

/// How often a watched resource is read for changes made elsewhere.
pub const POLL: Duration = Duration::from_secs(30);
/// Resources one tenant may watch at once.
pub const MAX_PER_TENANT: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0} is not a resource of this server (agentbus://{{kind}}/{{key}})")]
    NotOurs(String),
    #[error(
        "this tenant already watches {MAX_PER_TENANT} resources, the most it may: unsubscribe from one first"
    )]
    Full,
    #[error("the session's watch has ended")]
    Ended,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A resource changed through this server.
#[derive(Debug)]
struct Change {
    tenant: Tenant,
    uri: String,
}

/// Where the server announces the changes it makes, and how many resources each tenant
/// watches.
#[derive(Clone)]
pub struct Changes {
    tx: broadcast::Sender<Arc<Change>>,
    watched: Arc<Mutex<HashMap<Tenant, usize>>>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            // A watcher that falls this far behind reads all its resources instead.
            tx: broadcast::channel(1024).0,
            watched: Arc::default(),
        }
    }
}

impl Changes {
    /// The tenant's resource `key` of `kind` was written or deleted through this server.
    pub fn changed(&self, tenant: &Tenant, kind: &str, key: &str) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(Change {
                tenant: tenant.clone(),
                uri: res::uri(kind, key),
            }));
        }
    }

    /// A watch of the tenant's resources among `sources`, read again every `poll`.
    pub fn watch(&self, tenant: Tenant, sources: Sources, poll: Duration) -> Watch {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watch {
            changes: self.clone(),
            rx: self.tx.subscribe(),
            tenant,
            sources,
            fingerprints: BTreeMap::new(),
            to_check: VecDeque::new(),
            changed: VecDeque::new(),
            every,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Tenant, usize>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The resources one client watches, with the fingerprint each had when last read.
pub struct Watch {
    changes: Changes,
    rx: broadcast::Receiver<Arc<Change>>,
    tenant: Tenant,
    sources: Sources,
    fingerprints: BTreeMap<String, Option<String>>,
    /// Announced as changed here, to be read.
    to_check: VecDeque<String>,
    /// Read as changed, to be reported.
    changed: VecDeque<String>,
    every: tokio::time::Interval,
}

impl Watch {
    /// Watches `uri` from now on (watching it twice is watching it).
    pub async fn add(&mut self, uri: &str) -> Result<(), WatchError> {
        if self.fingerprints.contains_key(uri) {
            return Ok(());
        }
        let (source, key) = self.source_of(uri)?;
        {
            let mut held = self.changes.held();
            let n = held.entry(self.tenant.clone()).or_default();
            if *n >= MAX_PER_TENANT {
                return Err(WatchError::Full);
            }
            *n += 1;
        }
        match source.fingerprint(&self.tenant, &key).await {
            Ok(fingerprint) => {
                self.fingerprints.insert(uri.to_string(), fingerprint);
                Ok(())
            }
            Err(e) => {
                self.release(1);
                Err(e.into())
            }
        }
    }

    /// Stops watching `uri`.
    pub fn remove(&mut self, uri: &str) {
        if self.fingerprints.remove(uri).is_some() {
            self.release(1);
        }
    }

    /// The URIs watched.
    pub fn uris(&self) -> impl Iterator<Item = &str> {
        self.fingerprints.keys().map(String::as_str)
    }

    /// The next watched resource that changed. Cancelling the wait loses nothing: what was
    /// announced or read is kept for the next call.
    pub async fn changed(&mut self) -> String {
        loop {
            if let Some(uri) = self.changed.pop_front() {
                return uri;
            }
            if let Some(uri) = self.to_check.front().cloned() {
                self.check(&uri).await;
                self.to_check.pop_front();
                continue;
            }
            tokio::select! {
                got = self.rx.recv() => match got {
                    Ok(c) if c.tenant == self.tenant && self.fingerprints.contains_key(&c.uri) => {
                        self.to_check.push_back(c.uri.clone());
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => self.check_all(),
                    // `self.changes` holds the sender: never while this lives.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                },
                _ = self.every.tick() => self.check_all(),
            }
        }
    }

    fn check_all(&mut self) {
        let all: Vec<String> = self.fingerprints.keys().cloned().collect();
        self.to_check.extend(all);
    }

    /// Reads `uri`'s fingerprint; a new one makes it changed. A failed read is tried again
    /// at the next poll.
    async fn check(&mut self, uri: &str) {
        let Ok((source, key)) = self.source_of(uri) else {
            return;
        };
        match source.fingerprint(&self.tenant, &key).await {
            Ok(now) => {
                if let Some(before) = self.fingerprints.get_mut(uri)
                    && *before != now
                {
                    *before = now;
                    if !self.changed.iter().any(|u| u == uri) {
                        self.changed.push_back(uri.to_string());
                    }
                }
            }
            Err(e) => tracing::debug!("a watched resource could not be read: {e}"),
        }
    }

    fn source_of(&self, uri: &str) -> Result<(Arc<dyn res::ResourceSource>, String), WatchError> {
        let not_ours = || WatchError::NotOurs(uri.to_string());
        let (kind, key) = res::parse(uri).ok_or_else(not_ours)?;
        let source = res::of_kind(&self.sources, kind).ok_or_else(not_ours)?;
        Ok((source.clone(), key))
    }

    fn release(&self, n: usize) {
        let mut held = self.changes.held();
        if let Some(count) = held.get_mut(&self.tenant) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.release(self.fingerprints.len());
    }
}

/// A session's watch (`resources/subscribe`): a task of its own runs the [`Watch`] and sends
/// the session each update. It ends when the session does (every handle is dropped) or the
/// session can no longer be sent to.
#[derive(Clone, Default)]
pub struct SessionWatch(Arc<tokio::sync::Mutex<Option<mpsc::Sender<Command>>>>);

enum Command {
    Add(String, oneshot::Sender<Result<(), WatchError>>),
    Remove(String, oneshot::Sender<()>),
}

impl SessionWatch {
    /// Watches `uri` for the session, starting the watch (`start`) on the first one.
    pub async fn subscribe(
        &self,
        uri: &str,
        start: impl FnOnce() -> (Watch, Peer<RoleServer>),
    ) -> Result<(), WatchError> {
        let mut task = self.0.lock().await;
        let commands = task.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(16);
            let (watch, peer) = start();
            tokio::spawn(run(watch, rx, peer));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if commands
            .send(Command::Add(uri.to_string(), reply))
            .await
            .is_err()
        {
            *task = None;
            return Err(WatchError::Ended);
        }
        answer.await.unwrap_or(Err(WatchError::Ended))
    }

    /// Stops watching `uri` for the session.
    pub async fn unsubscribe(&self, uri: &str) {
        let task = self.0.lock().await;
        if let Some(commands) = task.as_ref() {
            let (reply, answer) = oneshot::channel();
            if commands
                .send(Command::Remove(uri.to_string(), reply))
                .await
                .is_ok()
            {
                let _ = answer.await;
            }
        }
    }
}

async fn run(mut watch: Watch, mut commands: mpsc::Receiver<Command>, peer: Peer<RoleServer>) {
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Add(uri, reply)) => {
                    let _ = reply.send(watch.add(&uri).await);
                }
                Some(Command::Remove(uri, reply)) => {
                    watch.remove(&uri);
                    let _ = reply.send(());
                }
            },
            uri = watch.changed() => {
                let update = ResourceUpdatedNotificationParam::new(uri);
                if let Err(e) = peer.notify_resource_updated(update).await {
                    tracing::debug!("a session's resource watch ends: {e}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::resources::{Contents, Listed, ResourceSource};
    use async_trait::async_trait;

    /// Resources kept in memory: (tenant, key) → value; the value is its fingerprint.
    #[derive(Default)]
    struct Memory(Mutex<HashMap<(String, String), String>>);

    impl Memory {
        fn set(&self, tenant: &str, key: &str, value: &str) {
            let mut m = self.0.lock().unwrap();
            m.insert((tenant.into(), key.into()), value.into());
        }
    }

    #[async_trait]
    impl ResourceSource for Memory {
        fn kind(&self) -> &'static str {
            "kv"
        }
        fn describe(&self) -> (&'static str, &'static str) {
            ("entry", "an entry")
        }
        async fn list(
            &self,
            _: &Tenant,
            _: &str,
            _: Option<&str>,
        ) -> Result<(Vec<Listed>, Option<String>), RuntimeError> {
            Ok((Vec::new(), None))
        }
        async fn read(&self, _: &Tenant, _: &str) -> Result<Option<Contents>, RuntimeError> {
            Ok(None)
        }
        async fn fingerprint(
            &self,
            tenant: &Tenant,
            key: &str,
        ) -> Result<Option<String>, RuntimeError> {
            let m = self.0.lock().unwrap();
            Ok(m.get(&(tenant.as_str().into(), key.into())).cloned())
        }
    }

    fn tenant(t: &str) -> Tenant {
        Tenant::new(t).unwrap()
    }

    fn only(source: Arc<dyn ResourceSource>) -> Sources {
        Arc::from(vec![source])
    }

    /// Waits for the next change, failing the test after `limit` (a hang is a failure).
    async fn next(w: &mut Watch, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, w.changed()).await.ok()
    }

    #[tokio::test]
    async fn a_change_made_here_is_reported_at_once_and_only_to_its_tenant_s_watchers() {
        let changes = Changes::default();
        let store = Arc::new(Memory::default());
        let sources = only(store.clone());
        // A poll that never comes during the test: only announcements report.
        let mut a = changes.watch(tenant("a"), sources.clone(), Duration::from_secs(3600));
        let mut b = changes.watch(tenant("b"), sources, Duration::from_secs(3600));
        a.add("agentbus://kv/x").await.unwrap();
        b.add("agentbus://kv/x").await.unwrap();

        // b's own x changes, then a's y (not watched), then a's x.
        store.set("b", "x", "1");
        changes.changed(&tenant("b"), "kv", "x");
        store.set("a", "y", "1");
        changes.changed(&tenant("a"), "kv", "y");
        store.set("a", "x", "1");
        changes.changed(&tenant("a"), "kv", "x");
        // a hears of its x first: neither b's change nor a's unwatched y came before it.
        assert_eq!(
            next(&mut a, Duration::from_secs(10)).await.as_deref(),
            Some("agentbus://kv/x")
        );
        assert_eq!(
            next(&mut b, Duration::from_secs(10)).await.as_deref(),
            Some("agentbus://kv/x")
        );
        // Announced again without a change of its fingerprint, x is not reported again: the
        // change announced after it is the next one a hears of.
        a.add("agentbus://kv/z").await.unwrap();
        changes.changed(&tenant("a"), "kv", "x");
        store.set("a", "z", "1");
        changes.changed(&tenant("a"), "kv", "z");
        assert_eq!(
            next(&mut a, Duration::from_secs(10)).await.as_deref(),
            Some("agentbus://kv/z")
        );
    }

    #[tokio::test]
    async fn a_change_made_elsewhere_is_found_by_the_poll_and_an_unwatched_one_is_not() {
        let changes = Changes::default();
        let store = Arc::new(Memory::default());
        store.set("a", "gone", "1");
        let mut a = changes.watch(tenant("a"), only(store.clone()), Duration::from_millis(50));
        a.add("agentbus://kv/x").await.unwrap();
        a.add("agentbus://kv/gone").await.unwrap();
        a.add("agentbus://kv/y").await.unwrap();
        a.remove("agentbus://kv/y");
        // Written behind the server's back: no announcement.
        store.set("a", "y", "1");
        store.set("a", "x", "1");
        assert_eq!(
            next(&mut a, Duration::from_secs(10)).await.as_deref(),
            Some("agentbus://kv/x")
        );
        store.0.lock().unwrap().remove(&("a".into(), "gone".into()));
        // Deleted is changed too; y, no longer watched, never is.
        assert_eq!(
            next(&mut a, Duration::from_secs(10)).await.as_deref(),
            Some("agentbus://kv/gone")
        );
        assert_eq!(
            a.uris().collect::<Vec<_>>(),
            ["agentbus://kv/gone", "agentbus://kv/x"]
        );
    }

    #[tokio::test]
    async fn a_tenant_watches_at_most_its_share_across_watches_until_one_ends() {
        let changes = Changes::default();
        let store: Arc<dyn ResourceSource> = Arc::new(Memory::default());
        let mut first = changes.watch(tenant("a"), only(store.clone()), POLL);
        let mut second = changes.watch(tenant("a"), only(store.clone()), POLL);
        for i in 0..MAX_PER_TENANT - 1 {
            first.add(&format!("agentbus://kv/{i}")).await.unwrap();
        }
        // Watching the same one again takes nothing.
        first.add("agentbus://kv/0").await.unwrap();
        second.add("agentbus://kv/last").await.unwrap();
        assert!(matches!(
            second.add("agentbus://kv/more").await,
            Err(WatchError::Full)
        ));
        // Another tenant has its own share.
        let mut other = changes.watch(tenant("b"), only(store.clone()), POLL);
        other.add("agentbus://kv/0").await.unwrap();
        second.remove("agentbus://kv/last");
        second.add("agentbus://kv/more").await.unwrap();
        drop(first);
        for i in 0..MAX_PER_TENANT - 1 {
            second
                .add(&format!("agentbus://kv/again{i}"))
                .await
                .unwrap();
        }
        assert!(matches!(
            second.add("agentbus://kv/one-too-many").await,
            Err(WatchError::Full)
        ));
    }

    #[tokio::test]
    async fn only_this_server_s_resources_can_be_watched() {
        let changes = Changes::default();
        let mut a = changes.watch(tenant("a"), only(Arc::new(Memory::default())), POLL);
        for uri in [
            "file:///etc/passwd",
            "agentbus://artifacts/x",
            "agentbus://kv/",
        ] {
            assert!(
                matches!(a.add(uri).await, Err(WatchError::NotOurs(ref u)) if u == uri),
                "{uri}"
            );
        }
        assert_eq!(a.uris().count(), 0);
        assert!(changes.held().is_empty(), "a refused watch holds nothing");
    }
}
