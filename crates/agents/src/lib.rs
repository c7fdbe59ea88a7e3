//! The agents of the medium tier and the rules they run under.
//!
//! - [`lane`]: the three lanes (`read_only` < `dry_run` < `execute`) and which tools a lane
//!   admits, judged from the tools' MCP annotations.
//! - [`policy`]: the governance policy, deterministic and the same everywhere: what the
//!   critic checks before anything reaches the execute lane, each decision explained.
//! - [`verdict`]: the critic's `verdict.json`, with its JSON Schema.
//! - [`approval`]: approvals that name the SHA-256 of the exact plan, its lane and an expiry;
//!   four-eyes; the check the execute phase makes before it runs anything.
//! - [`workflow`]: the lanes pipeline as typed data, and the message every agent answers.
//! - [`tools`]: the one interface agents call MCP tools through, and the lane gate.
//! - [`roles`]: the conductor's, critic's and sweeper's work, phase by phase; [`run`]: the
//!   small records that pass between the phases.
//! - [`model`]: the models the agents may consult (Bedrock, OpenAI-compatible, Anthropic).
//! - [`worker`]: the agents outside the server (the `agentbus-agent` binary): tasks from the
//!   environment or a queue, answered to Step Functions.
//! - [`asl`]: that pipeline in Amazon States Language, agents dispatched by task token
//!   through ECS (AWS) or SQS (the emulator).
//!
//! Architecture invariant: nothing here performs I/O. The policy, approvals and verdicts are
//! pure functions of their inputs (and the time passed in), so the embedded workflow runner,
//! the agents on ECS and the tests decide alike.

pub mod approval;
pub mod asl;
pub mod lane;
pub mod model;
pub mod policy;
pub mod proof;
pub mod roles;
pub mod run;
pub mod tools;
pub mod verdict;
pub mod worker;
pub mod workflow;
