//! The names the small tier's server needs on top of the extra-small ones, passed to the
//! dashboard task as `AGENTBUS_*` variables (one typed source of names: prior art's pitfall 7).

use tier_xs::workspace::Workspace;

use crate::monitoring;

pub const ENV_ARTIFACTS_BUCKET: &str = "AGENTBUS_ARTIFACTS_BUCKET";
pub const ENV_TIMELINE_BUCKET: &str = "AGENTBUS_TIMELINE_BUCKET";
pub const ENV_EVENTS_TABLE: &str = "AGENTBUS_EVENTS_TABLE";
pub const ENV_SUBSCRIPTIONS_TABLE: &str = "AGENTBUS_SUBSCRIPTIONS_TABLE";
pub const ENV_RULES_TABLE: &str = "AGENTBUS_EVENT_RULES_TABLE";
pub const ENV_EVENTS_QUEUE: &str = "AGENTBUS_EVENTS_QUEUE";
pub const ENV_DEAD_LETTER_QUEUE: &str = "AGENTBUS_EVENTS_DEAD_LETTER_QUEUE";
/// `true` lets webhooks reach private and loopback addresses over plain HTTP (never set by
/// the deploy; for a server run on a private network or in a test).
pub const ENV_WEBHOOKS_ANYWHERE: &str = "AGENTBUS_WEBHOOKS_ANYWHERE";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmallConfig {
    pub artifacts_bucket: String,
    pub timeline_bucket: String,
    pub events_table: String,
    pub subscriptions_table: String,
    pub rules_table: String,
    /// The queue the bus rule fills with every event, which the monitor drains.
    pub events_queue: String,
    /// Where what the monitor could not take ends (the console shows its depth to admins).
    pub dead_letter_queue: String,
}

impl SmallConfig {
    pub fn for_workspace(ws: &Workspace) -> Self {
        SmallConfig {
            // Bucket names are global: they carry the account and the region.
            artifacts_bucket: ws.global_name("artifacts"),
            timeline_bucket: ws.global_name("timeline"),
            events_table: ws.name(monitoring::events::COMPONENT),
            subscriptions_table: ws.name(monitoring::subscriptions::COMPONENT),
            rules_table: ws.name(monitoring::rules::COMPONENT),
            events_queue: ws.name(monitoring::QUEUE_COMPONENT),
            dead_letter_queue: ws.name(monitoring::DEAD_LETTER_COMPONENT),
        }
    }

    pub fn to_env(&self) -> Vec<(String, String)> {
        vec![
            (ENV_ARTIFACTS_BUCKET.into(), self.artifacts_bucket.clone()),
            (ENV_TIMELINE_BUCKET.into(), self.timeline_bucket.clone()),
            (ENV_EVENTS_TABLE.into(), self.events_table.clone()),
            (
                ENV_SUBSCRIPTIONS_TABLE.into(),
                self.subscriptions_table.clone(),
            ),
            (ENV_RULES_TABLE.into(), self.rules_table.clone()),
            (ENV_EVENTS_QUEUE.into(), self.events_queue.clone()),
            (ENV_DEAD_LETTER_QUEUE.into(), self.dead_letter_queue.clone()),
        ]
    }

    /// Reads the names back from the task's environment; names every missing variable.
    pub fn from_env() -> Result<Self, String> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let names = [
            ENV_ARTIFACTS_BUCKET,
            ENV_TIMELINE_BUCKET,
            ENV_EVENTS_TABLE,
            ENV_SUBSCRIPTIONS_TABLE,
            ENV_RULES_TABLE,
            ENV_EVENTS_QUEUE,
            ENV_DEAD_LETTER_QUEUE,
        ];
        let missing: Vec<&str> = names.iter().copied().filter(|k| get(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(format!("missing configuration: {}", missing.join(", ")));
        }
        let v = |k: &str| get(k).unwrap_or_default();
        Ok(SmallConfig {
            artifacts_bucket: v(ENV_ARTIFACTS_BUCKET),
            timeline_bucket: v(ENV_TIMELINE_BUCKET),
            events_table: v(ENV_EVENTS_TABLE),
            subscriptions_table: v(ENV_SUBSCRIPTIONS_TABLE),
            rules_table: v(ENV_RULES_TABLE),
            events_queue: v(ENV_EVENTS_QUEUE),
            dead_letter_queue: v(ENV_DEAD_LETTER_QUEUE),
        })
    }
}

/// Where a deployed server's own outbound calls (webhooks, registered MCP servers) may go:
/// public HTTPS addresses only, unless the operator says otherwise with
/// [`ENV_WEBHOOKS_ANYWHERE`] (a private network, or a test on one machine).
/// Where an embedded server's webhooks may go: anywhere on its user's machine when it listens
/// on loopback only; when others can reach it (`serve --host`), where a deployed server's may.
pub fn embedded_reach(exposed: bool) -> crate::runtime::monitor::webhook::Reach {
    if exposed {
        deployed_reach()
    } else {
        crate::runtime::monitor::webhook::Reach::Anywhere
    }
}

pub fn deployed_reach() -> crate::runtime::monitor::webhook::Reach {
    use crate::runtime::monitor::webhook::Reach;
    match std::env::var(ENV_WEBHOOKS_ANYWHERE).as_deref() {
        Ok("true") => Reach::Anywhere,
        _ => Reach::PublicHttps,
    }
}
