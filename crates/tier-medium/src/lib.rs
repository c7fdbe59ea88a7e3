//! The medium tier: everything of the small tier ([`tier_small`]), plus governed multi-agent
//! workflows: the conductor, critic and sweeper of [`agents`] run the lanes pipeline, with
//! human approvals that name the exact plan.
//!
//! Today the tier runs on embedded storage (`agentbus up medium`): the workflow runner is
//! durable in SQLite and the agents run in process, reaching the workspace through its own
//! MCP tools. Its AWS resources (the state machine, the agents' task definitions, alarms)
//! are the next step; until then a plan for AWS says so and changes nothing.

pub mod cost;
pub mod layer;
pub mod runtime;
pub mod tools;

/// The ladder of a build up to the medium tier: the small ladder with this tier's layer.
pub fn ladder() -> tier_xs::ladder::Ladder {
    tier_small::ladder().with(layer::MediumLayer)
}

/// The deploy flags of every tier up to medium.
pub type Flags = layer::MediumFlags;
