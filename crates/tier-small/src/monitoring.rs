//! The event-monitoring tables: one schema, one set of index names, used by the deploy (the
//! tables' key schemas and indexes) and by the runtime (every query names an index from
//! here), so the two cannot drift apart. Every partition key starts with the tenant, so every
//! query is tenant-scoped.

use tier_xs::components::table::{Gsi, GsiProjection};

/// The queue every bus event passes through on its way into the events table, its
/// dead-letter queue, and the bus rule that fills it.
pub const QUEUE_COMPONENT: &str = "events-feed";
pub const DEAD_LETTER_COMPONENT: &str = "events-feed-dlq";
pub const RULE_COMPONENT: &str = "monitor";
/// Matches every event on the bus, whatever its source (EventBridge needs some field).
pub fn all_events_pattern() -> serde_json::Value {
    serde_json::json!({"source": [{"prefix": ""}]})
}

/// The events table: one item per event, written once (idempotent by event id).
pub mod events {
    use super::{Gsi, GsiProjection};

    pub const COMPONENT: &str = "events";
    /// Partition key: the event's id.
    pub const EVENT_ID: &str = "event_id";
    pub const TENANT: &str = "tenant";
    /// Sort key of every index: `{RFC 3339 time with milliseconds}#{event id}`, so a time
    /// range is a key range and equal times still sort uniquely.
    pub const TIME_ID: &str = "ts_id";
    pub const TENANT_SOURCE: &str = "tenant_source";
    pub const TENANT_TYPE: &str = "tenant_type";
    pub const TENANT_PRIORITY: &str = "tenant_priority";
    /// Epoch seconds after which DynamoDB removes the event.
    pub const EXPIRES_AT: &str = "expires_at";
    /// How long events are kept.
    pub const RETENTION_DAYS: u64 = 90;

    /// What the indexes copy of an event besides their keys: what lists filter on and counts
    /// count, never the detail. An event's write then costs one unit per index, not its
    /// whole size per index; a list reads the details of the events it returns from the table.
    pub const INDEXED: [&str; 5] = [TENANT, "time", "source", "detail_type", "priority"];

    /// An index of a tenant's events (or of one source, type or priority) newest first.
    const fn by_time(name: &'static str, hash: &'static str) -> Gsi {
        Gsi {
            name,
            hash,
            range: Some(TIME_ID),
            projection: GsiProjection::Include(&INDEXED),
        }
    }

    pub const BY_TIME: Gsi = by_time("by-tenant-time", TENANT);
    pub const BY_SOURCE: Gsi = by_time("by-source-time", TENANT_SOURCE);
    pub const BY_TYPE: Gsi = by_time("by-type-time", TENANT_TYPE);
    pub const BY_PRIORITY: Gsi = by_time("by-priority-time", TENANT_PRIORITY);
    pub const INDEXES: [Gsi; 4] = [BY_TIME, BY_SOURCE, BY_TYPE, BY_PRIORITY];

    /// The priority scale, lowest first.
    pub const PRIORITIES: [&str; 4] = ["info", "warning", "error", "critical"];
}

/// Webhook subscriptions: partition = tenant, sort = subscription id.
pub mod subscriptions {
    pub const COMPONENT: &str = "subscriptions";
    pub const TENANT: &str = "tenant";
    pub const SUBSCRIPTION_ID: &str = "subscription_id";
}

/// Event rules (EventBridge-style patterns): partition = tenant, sort = rule id.
pub mod rules {
    pub const COMPONENT: &str = "event-rules";
    pub const TENANT: &str = "tenant";
    pub const RULE_ID: &str = "rule_id";
}
