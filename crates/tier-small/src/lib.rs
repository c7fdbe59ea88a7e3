//! The small tier: everything of the extra-small tier ([`tier_xs`]), plus an S3 artifacts
//! bucket, an S3 timeline store, the three event-monitoring tables and (coming) an
//! application load balancer in front of the dashboard.
//!
//! [`tier::Small`] owns an [`tier_xs::tier::ExtraSmall`]: a small workspace cannot exist
//! without its extra-small components. [`catalog::SmallCatalog`] tells the deploy engine
//! about every resource this build knows.

pub mod catalog;
pub mod components;
pub mod config;
pub mod monitor_tools;
pub mod monitoring;
pub mod runtime;
pub mod tier;
pub mod tools;
