//! The small tier: everything of the extra-small tier ([`tier_xs`]), plus an S3 artifacts
//! bucket, an S3 timeline store, the three event-monitoring tables and (coming) an
//! application load balancer in front of the dashboard.
//!
//! [`tier::Small`] owns an [`tier_xs::xs::ExtraSmall`]: a small workspace cannot exist
//! without its extra-small components. [`layer::SmallLayer`] puts the tier on the ladder.

pub mod aws;
pub mod components;
pub mod config;
pub mod cost;
pub mod layer;
pub mod monitor_tools;
pub mod monitoring;
pub mod runtime;
pub mod tier;
pub mod tools;

/// The ladder of a build up to the small tier: the extra-small ladder with this tier's layer.
pub fn ladder() -> tier_xs::ladder::Ladder {
    tier_xs::ladder().with(layer::SmallLayer)
}

/// The deploy flags of every tier up to small.
pub type Flags = layer::SmallFlags;
