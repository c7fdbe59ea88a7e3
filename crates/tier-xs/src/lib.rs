//! agentbus foundation and extra-small tier.
//!
//! * [`workspace`]: env validation, the tier ladder, the naming function and tags.
//! * [`aws`]: SDK configuration from the standard chain, one client per service, call counting.
//! * [`engine`]: desired state, plan (observe + diff), apply (parallel graph walk), the lease lock.
//! * [`components`]: the extra-small tier's resources (KV table, event bus, secret, dashboard service).
//! * [`tier`]: the `ExtraSmall` tier type, which lists what the tier deploys.
//! * [`cost`]: price table, usage profiles, per-resource monthly cost.
//! * [`config`]: the server configuration the deploy hands to the dashboard task.
//! * [`ops`]: workspace operations (plan, locked apply with a record, status).
//! * [`runtime`]: KV, events and secrets services, each on AWS and on embedded SQLite.

pub mod aws;
pub mod components;
pub mod config;
pub mod cost;
pub mod engine;
pub mod image;
pub mod ops;
pub mod runtime;
pub mod server;
pub mod tier;
pub mod workspace;
