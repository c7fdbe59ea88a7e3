//! The lanes workflow, defined once as typed data: plan → record the plan on the timeline →
//! review → approval gate → execute the approved subtasks (bounded fan-out) → sweep. The
//! embedded runner walks this definition; [`crate::asl`] compiles it to Amazon States
//! Language for Step Functions, so what the tests execute is what AWS runs.
//!
//! Every step is an agent answering one message ([`AgentTask`]); the message is the same
//! whether it reaches the agent through ECS (on AWS), an SQS queue (in the emulator) or a
//! function call (embedded). Payloads are artifact references, never bodies: Step Functions
//! passes at most 256 KiB between states.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::lane::Lane;

/// Which agent answers a step.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Conductor,
    Critic,
    Sweeper,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Conductor => "conductor",
            Role::Critic => "critic",
            Role::Sweeper => "sweeper",
        }
    }

    pub const ALL: [Role; 3] = [Role::Conductor, Role::Critic, Role::Sweeper];
}

/// What the agent is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Conductor: gather context, write `plan.md`, `subtasks.json` and the evidence.
    Plan,
    /// Sweeper: one timeline record of the plan, before anyone reviews it.
    Record,
    /// Critic: the governance policy, then an advisory model review; `verdict.json`.
    Review,
    /// Conductor: one approved subtask, exactly as approved.
    Execute,
    /// Sweeper: the run's timeline record, its retrospective, its scratch entries compacted.
    Cleanup,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Plan => "plan",
            Phase::Record => "record",
            Phase::Review => "review",
            Phase::Execute => "execute",
            Phase::Cleanup => "cleanup",
        }
    }
}

/// How a failed or silent step is tried again: exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retry {
    /// Attempts after the first.
    pub max_attempts: u32,
    pub interval_seconds: u32,
    pub backoff_rate: f64,
    pub max_delay_seconds: u32,
}

/// One agent step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgentStep {
    /// The state's name (in the ASL and in the run's history).
    pub state: &'static str,
    pub role: Role,
    pub phase: Phase,
    pub lane: Lane,
    /// The step fails when the agent has not answered in this time.
    pub timeout_seconds: u32,
    /// ... or has not sent a heartbeat in this time.
    pub heartbeat_seconds: u32,
    pub retry: Retry,
    /// Where the agent's answer goes in the run's state (`$.plan`, ...).
    pub result: &'static str,
}

/// The error an agent reports when it fails (`SendTaskFailure`): tried again.
pub const AGENT_FAILED: &str = "agentbus.AgentFailed";
/// The error an agent reports when it refuses or cannot do its step for good: not tried again.
pub const REFUSED: &str = "agentbus.Refused";
/// The error an approval decision reports on a rejection.
pub const REJECTED: &str = "agentbus.Rejected";

/// The whole pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub plan: AgentStep,
    pub record: AgentStep,
    pub review: AgentStep,
    /// How long a run waits for a human decision.
    pub approval_timeout_seconds: u32,
    pub execute: AgentStep,
    /// Subtasks executed at once.
    pub execute_concurrency: u32,
    pub sweep: AgentStep,
}

/// How a run ended, as the sweeper records it and the run's status says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// The policy (or a model) blocked the plan.
    Blocked,
    /// A human rejected it.
    Rejected,
    /// No one decided in time.
    TimedOut,
    /// A step failed after its retries.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Succeeded,
        Outcome::Blocked,
        Outcome::Rejected,
        Outcome::TimedOut,
        Outcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Blocked => "blocked",
            Outcome::Rejected => "rejected",
            Outcome::TimedOut => "timed_out",
            Outcome::Failed => "failed",
        }
    }

    /// The error a run that ended so fails with (none for success).
    pub fn error(self) -> Option<&'static str> {
        match self {
            Outcome::Succeeded => None,
            Outcome::Blocked => Some("agentbus.Blocked"),
            Outcome::Rejected => Some(REJECTED),
            Outcome::TimedOut => Some("agentbus.ApprovalTimeout"),
            Outcome::Failed => Some("agentbus.Failed"),
        }
    }
}

const AGENT_RETRY: Retry = Retry {
    max_attempts: 2,
    interval_seconds: 5,
    backoff_rate: 2.0,
    max_delay_seconds: 60,
};

impl Workflow {
    /// The medium tier's workflow.
    pub fn lanes() -> Workflow {
        let step = |state, role, phase, lane, timeout_seconds, result| AgentStep {
            state,
            role,
            phase,
            lane,
            timeout_seconds,
            heartbeat_seconds: 120,
            retry: AGENT_RETRY,
            result,
        };
        Workflow {
            plan: step(
                "Plan",
                Role::Conductor,
                Phase::Plan,
                Lane::ReadOnly,
                1800,
                "$.plan",
            ),
            record: step(
                "RecordPlan",
                Role::Sweeper,
                Phase::Record,
                Lane::ReadOnly,
                300,
                "$.recorded",
            ),
            review: step(
                "Review",
                Role::Critic,
                Phase::Review,
                Lane::DryRun,
                1800,
                "$.review",
            ),
            approval_timeout_seconds: 24 * 3600,
            execute: step(
                "ExecuteSubtask",
                Role::Conductor,
                Phase::Execute,
                Lane::Execute,
                3600,
                "$",
            ),
            execute_concurrency: 4,
            sweep: step(
                "Sweep",
                Role::Sweeper,
                Phase::Cleanup,
                Lane::ReadOnly,
                600,
                "$.sweep",
            ),
        }
    }

    /// Every agent step, in the order a successful run meets them.
    pub fn steps(&self) -> [&AgentStep; 5] {
        [
            &self.plan,
            &self.record,
            &self.review,
            &self.execute,
            &self.sweep,
        ]
    }

    /// With shorter waits (the scenario tests; a workspace that wants quick answers).
    pub fn with_timeouts(
        mut self,
        agent_seconds: u32,
        heartbeat_seconds: u32,
        approval_seconds: u32,
    ) -> Workflow {
        for s in [
            &mut self.plan,
            &mut self.record,
            &mut self.review,
            &mut self.execute,
            &mut self.sweep,
        ] {
            s.timeout_seconds = agent_seconds;
            s.heartbeat_seconds = heartbeat_seconds;
            s.retry.interval_seconds = 1;
            s.retry.max_delay_seconds = 2;
        }
        self.approval_timeout_seconds = approval_seconds;
        self
    }
}

/// The message an agent answers: the same on ECS, through SQS and embedded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTask {
    /// Answer with `SendTaskSuccess` / `SendTaskFailure` / `SendTaskHeartbeat` and this token.
    pub task_token: String,
    pub run_id: String,
    pub role: Role,
    pub phase: Phase,
    pub lane: Lane,
    /// The run's state when the step started: references (artifact keys, hashes), not bodies.
    pub input: serde_json::Value,
}

/// The longest cause a failed step reports to Step Functions: it stays in the run's state,
/// which the next agent on ECS receives within 8 KiB of task overrides.
pub const MAX_CAUSE_CHARS: usize = 1000;

/// The input a run starts with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInput {
    pub run_id: String,
    pub tenant: String,
    /// The artifact holding the goal (and its inputs).
    pub goal_ref: String,
    /// The token that started the run (four-eyes compares the approver with it).
    pub started_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_runs_in_the_lane_the_governance_model_gives_it() {
        let w = Workflow::lanes();
        let lanes: Vec<(Role, Phase, Lane)> = w
            .steps()
            .iter()
            .map(|s| (s.role, s.phase, s.lane))
            .collect();
        assert_eq!(
            lanes,
            [
                (Role::Conductor, Phase::Plan, Lane::ReadOnly),
                (Role::Sweeper, Phase::Record, Lane::ReadOnly),
                (Role::Critic, Phase::Review, Lane::DryRun),
                (Role::Conductor, Phase::Execute, Lane::Execute),
                (Role::Sweeper, Phase::Cleanup, Lane::ReadOnly),
            ]
        );
        for s in w.steps() {
            assert!(s.heartbeat_seconds < s.timeout_seconds, "{}", s.state);
        }
    }

    #[test]
    fn every_unsuccessful_outcome_has_its_own_error_name() {
        let errors: Vec<_> = Outcome::ALL.iter().filter_map(|o| o.error()).collect();
        assert_eq!(errors.len(), 4);
        let mut unique = errors.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 4);
    }
}
