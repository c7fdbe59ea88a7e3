//! The small tier's resource kinds (tables and the rest come from `tier_xs::components`).

pub mod alb;
pub mod bucket;
pub mod queue;
