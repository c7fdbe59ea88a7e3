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
//! * [`metrics`]: the server's own metrics, for its dashboard and as CloudWatch EMF.

pub mod aws;
pub mod components;
pub mod config;
pub mod cost;
pub mod ec2;
pub mod engine;
pub mod iam;
pub mod image;
pub mod ladder;
pub mod metrics;
pub mod ops;
pub mod query;
pub mod runtime;
pub mod server;
pub mod traces;
pub mod workspace;
pub mod xs;

/// The ladder of a build that has the extra-small tier alone; each tier crate above puts its
/// layer on the ladder of the tier below.
pub fn ladder() -> ladder::Ladder {
    ladder::Ladder::new(xs::layer::XsLayer)
}

/// The deploy flags of the extra-small tier (the top tier crate names its own).
pub type Flags = xs::layer::XsFlags;
