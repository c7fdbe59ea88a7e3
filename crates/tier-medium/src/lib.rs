//! The medium tier: everything of the small tier ([`tier_small`]), plus governed multi-agent
//! workflows: the conductor, critic and sweeper of [`agents`] run the lanes pipeline, with
//! human approvals that name the exact plan.
//!
//! On AWS the workflow is a Step Functions state machine compiled from the one workflow
//! definition, the agents are ECS tasks whose task role is their step's lane, and CloudWatch
//! alarms (to an SNS topic) and a dashboard watch the workspace ([`tier`]). Locally
//! (`agentbus up medium`) the workflow runner is durable in SQLite and the agents run in
//! process, reaching the workspace through its own MCP tools.

pub mod aws;
pub mod components;
pub mod config;
pub mod cost;
pub mod external;
pub mod layer;
pub mod prompts;
pub mod runtime;
pub mod tier;
pub mod tools;

/// The ladder of a build up to the medium tier: the small ladder with this tier's layer.
pub fn ladder() -> tier_xs::ladder::Ladder {
    tier_small::ladder().with(layer::MediumLayer)
}

/// The deploy flags of every tier up to medium.
pub type Flags = layer::MediumFlags;
