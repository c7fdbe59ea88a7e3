//! agentbus foundation and extra-small tier.
//!
//! * [`workspace`]: env validation, the tier ladder, the naming function and tags.
//! * [`aws`]: SDK configuration from the standard chain, one client per service, call counting.
//! * [`engine`]: desired state, plan (observe + diff), apply (parallel graph walk), the lease lock.
//! * [`components`]: the extra-small tier's resources (KV table, event bus, secret, dashboard service).
//! * [`tier`]: the `ExtraSmall` tier type, which lists what the tier deploys.

pub mod aws;
pub mod components;
pub mod config;
pub mod cost;
pub mod engine;
pub mod ops;
pub mod tier;
pub mod workspace;
