//! Deliveries after recording. The monitor records an event at once and hands its webhook
//! deliveries here, so a slow or dead webhook holds up nobody's events, not even its own
//! tenant's recording.
//!
//! Each subscription has its own queue, delivered in order by one worker at a time. Workers
//! share [`MAX_IN_FLIGHT`] delivery slots, and one tenant's take at most [`TENANT_IN_FLIGHT`]
//! of them: a tenant whose webhooks all hang leaves the others theirs. A queue holds at most
//! [`MAX_QUEUED`] deliveries (more are recorded as failed, not sent), and a subscription that
//! failed [`DISABLE_AFTER`] deliveries in a row is disabled, with the reason in its last
//! error. The store is the outbox: an event is marked dispatched only when every delivery
//! was made, so the events a stop cut off are found again (`EventStore::undispatched`) and
//! delivered when the monitor starts ([`super::Monitor::resume`]): at least once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tier_xs::runtime::Tenant;
use tokio::sync::{Notify, Semaphore};

use super::webhook::{Delivery, Webhooks};
use super::{EventStore, MonitoredEvent, Outcome, StoredSubscription};
use crate::runtime::timeline::ts_of;

/// Deliveries in flight at once, every tenant together.
pub const MAX_IN_FLIGHT: usize = 32;
/// Deliveries in flight at once for one tenant.
pub const TENANT_IN_FLIGHT: usize = 4;
/// Deliveries waiting for one subscription; more are not sent.
pub const MAX_QUEUED: usize = 1000;
/// Failed deliveries in a row (each after its retries) that disable a subscription.
pub const DISABLE_AFTER: u64 = 10;

/// The delivery queues of one monitor (clones share them).
#[derive(Clone)]
pub struct Dispatcher(Arc<Inner>);

struct Inner {
    store: Arc<dyn EventStore>,
    webhooks: Webhooks,
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    /// Woken whenever the last delivery in flight finishes.
    settled: Notify,
}

#[derive(Default)]
struct State {
    /// Waiting deliveries by subscription (tenant, id); a key is present exactly while a
    /// worker serves that subscription.
    queues: HashMap<(String, String), VecDeque<Job>>,
    tenants: HashMap<String, Arc<Semaphore>>,
    /// Events with deliveries still to make, and how many.
    events: HashMap<String, usize>,
}

struct Job {
    event: Arc<MonitoredEvent>,
    document: Arc<Value>,
    target: StoredSubscription,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn EventStore>, webhooks: Webhooks) -> Self {
        Dispatcher(Arc::new(Inner {
            store,
            webhooks,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            state: Mutex::default(),
            settled: Notify::new(),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the deliveries of a recorded event; returns at once. An event whose deliveries
    /// are already queued (the bus delivered it twice) is not queued again.
    pub fn dispatch(&self, event: MonitoredEvent, targets: Vec<StoredSubscription>) {
        if targets.is_empty() {
            return;
        }
        let event = Arc::new(event);
        let document = Arc::new(event.document());
        let mut full = Vec::new();
        {
            let mut state = self.state();
            if state.events.contains_key(&event.event_id) {
                return;
            }
            state.events.insert(event.event_id.clone(), targets.len());
            for target in targets {
                let key = (
                    event.tenant.clone(),
                    target.subscription.subscription_id.clone(),
                );
                let job = Job {
                    event: event.clone(),
                    document: document.clone(),
                    target,
                };
                match state.queues.get_mut(&key) {
                    Some(q) if q.len() >= MAX_QUEUED => full.push(job),
                    Some(q) => q.push_back(job),
                    None => {
                        state.queues.insert(key.clone(), VecDeque::from([job]));
                        tokio::spawn(self.clone().serve(key));
                    }
                }
            }
        }
        for job in full {
            let me = self.clone();
            tokio::spawn(async move {
                let o = failed(
                    &job.event.event_id,
                    format!("not sent: {MAX_QUEUED} deliveries already wait for this webhook"),
                );
                me.outcome(&job, &o).await;
                me.finish(&job.event).await;
            });
        }
    }

    /// Waits until no delivery is waiting or in flight.
    pub async fn settled(&self) {
        loop {
            let woken = self.0.settled.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.state().events.is_empty() {
                return;
            }
            woken.await;
        }
    }

    /// Delivers one subscription's queue in order, until it is empty.
    async fn serve(self, key: (String, String)) {
        let tenant_slots = self
            .state()
            .tenants
            .entry(key.0.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(TENANT_IN_FLIGHT)))
            .clone();
        let mut disabled = false;
        loop {
            let job = {
                let mut state = self.state();
                match state.queues.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(job) => job,
                    None => {
                        state.queues.remove(&key);
                        return;
                    }
                }
            };
            if !disabled {
                let (Ok(_tenant), Ok(_slot)) = (
                    tenant_slots.clone().acquire_owned().await,
                    self.0.slots.clone().acquire_owned().await,
                ) else {
                    return;
                };
                let s = &job.target.subscription;
                let o = self
                    .0
                    .webhooks
                    .deliver(&Delivery {
                        url: &s.url,
                        secret: &job.target.secret,
                        subscription_id: &s.subscription_id,
                        rule: &s.rule,
                        event_id: &job.event.event_id,
                        document: &job.document,
                    })
                    .await;
                if !o.ok {
                    tracing::warn!(
                        subscription = %s.subscription_id,
                        event = %job.event.event_id,
                        "webhook delivery failed: {}",
                        o.summary
                    );
                }
                self.outcome(&job, &o).await;
                if !o.ok {
                    disabled = self.disable_if_failing(&job).await;
                }
            }
            // The deliveries still queued for a subscription just disabled are not sent.
            self.finish(&job.event).await;
        }
    }

    async fn outcome(&self, job: &Job, o: &Outcome) {
        let Ok(tenant) = Tenant::new(&job.event.tenant) else {
            return;
        };
        if !o.ok {
            tier_xs::metrics::count(
                super::metric_names::WEBHOOK_FAILURES,
                None,
                Some(&tenant),
                1,
            );
        }
        let id = &job.target.subscription.subscription_id;
        if let Err(e) = self.0.store.record_outcome(&tenant, id, o).await {
            tracing::warn!(subscription = %id, "recording a delivery's outcome: {e}");
        }
    }

    /// Disables the job's subscription when its deliveries failed [`DISABLE_AFTER`] times in
    /// a row; true when it is disabled.
    async fn disable_if_failing(&self, job: &Job) -> bool {
        let Ok(tenant) = Tenant::new(&job.event.tenant) else {
            return false;
        };
        let id = &job.target.subscription.subscription_id;
        let subs = match self.0.store.subscriptions(&tenant).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(subscription = %id, "reading the subscription: {e}");
                return false;
            }
        };
        let Some(s) = subs
            .into_iter()
            .find(|s| &s.subscription.subscription_id == id)
        else {
            // Deleted meanwhile: nothing more to send it.
            return true;
        };
        let stats = &s.subscription.stats;
        if !s.subscription.enabled {
            return true;
        }
        if stats.consecutive_failures < DISABLE_AFTER {
            return false;
        }
        let note = format!(
            "disabled after {} failed deliveries in a row (the last: {}); enable it again with subscriptions_enable",
            stats.consecutive_failures,
            stats.last_error.as_deref().unwrap_or("unknown")
        );
        match self
            .0
            .store
            .set_enabled(&tenant, id, false, Some(&note))
            .await
        {
            Ok(_) => {
                tracing::warn!(subscription = %id, "webhook disabled after repeated failures");
                true
            }
            Err(e) => {
                tracing::warn!(subscription = %id, "disabling the subscription: {e}");
                false
            }
        }
    }

    /// One delivery of `event` is done; the last one marks it dispatched.
    async fn finish(&self, event: &MonitoredEvent) {
        let last = {
            let mut state = self.state();
            state.events.get_mut(&event.event_id).is_some_and(|n| {
                *n = n.saturating_sub(1);
                *n == 0
            })
        };
        if !last {
            return;
        }
        // Left undispatched on failure: the next start delivers it again.
        if let Err(e) = self.0.store.mark_dispatched(event).await {
            tracing::warn!(event = %event.event_id, "marking the event dispatched: {e}");
        }
        let mut state = self.state();
        state.events.remove(&event.event_id);
        if state.events.is_empty() {
            self.0.settled.notify_waiters();
        }
    }
}

fn failed(event_id: &str, why: String) -> Outcome {
    Outcome {
        event_id: event_id.to_string(),
        at: ts_of(tier_xs::runtime::now_millis()),
        ok: false,
        summary: why.clone(),
        error: Some(why),
    }
}
