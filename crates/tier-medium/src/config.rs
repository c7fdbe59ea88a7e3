//! The names the medium tier's server needs on top of the small ones, passed to the
//! dashboard task as `AGENTBUS_*` variables.

use agents::lane::Lane;
use tier_xs::workspace::Workspace;

pub const ENV_STATE_MACHINE_ARN: &str = "AGENTBUS_STATE_MACHINE_ARN";
pub const ENV_APPROVALS_QUEUE: &str = "AGENTBUS_APPROVALS_QUEUE";
pub const ENV_RUNS_TABLE: &str = "AGENTBUS_RUNS_TABLE";
/// The agents' lane roles, `lane=role ARN` separated by commas: an agent proving it runs
/// under one of them is that lane's agent of its run.
pub const ENV_AGENT_ROLES: &str = "AGENTBUS_AGENT_ROLES";

/// Name components of the medium tier's resources.
pub mod component {
    pub const STATE_MACHINE: &str = "lanes";
    pub const APPROVALS_QUEUE: &str = "approvals";
    pub const APPROVALS_DEAD_LETTERS: &str = "approvals-dlq";
    pub const ALERTS: &str = "alerts";
    pub const AGENTS: &str = "agents";
    pub const RUNS: &str = "runs";
    pub const AGENT_TASKS: &str = "agent-tasks";
    pub const AGENT_TASKS_DEAD_LETTERS: &str = "agent-tasks-dlq";
    pub const AGENT_READ_ONLY: &str = "agent-read-only";
    pub const AGENT_DRY_RUN: &str = "agent-dry-run";
    pub const AGENT_EXECUTE: &str = "agent-execute";
}

/// Each lane and the name component of its role.
pub const LANE_ROLES: [(Lane, &str); 3] = [
    (Lane::ReadOnly, component::AGENT_READ_ONLY),
    (Lane::DryRun, component::AGENT_DRY_RUN),
    (Lane::Execute, component::AGENT_EXECUTE),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediumConfig {
    pub state_machine_arn: String,
    /// The queue the state machine puts approval requests in, which the server reads.
    pub approvals_queue: String,
    /// The runs table: whose each run is, what it is for, what it waits on.
    pub runs_table: String,
    /// The queue steps wait in for agents of your own (`--agents queue`).
    pub agent_tasks_queue: String,
    /// The role ARN of each lane's agents.
    pub agent_roles: Vec<(Lane, String)>,
}

impl MediumConfig {
    pub fn for_workspace(ws: &Workspace) -> Self {
        MediumConfig {
            state_machine_arn: ws.arn(
                "states",
                &format!("stateMachine:{}", ws.name(component::STATE_MACHINE)),
            ),
            approvals_queue: ws.name(component::APPROVALS_QUEUE),
            runs_table: ws.name(component::RUNS),
            agent_tasks_queue: ws.name(component::AGENT_TASKS),
            agent_roles: LANE_ROLES
                .iter()
                .map(|(lane, name)| (*lane, ws.iam_arn(&format!("role/{}", ws.name(name)))))
                .collect(),
        }
    }

    pub fn to_env(&self) -> Vec<(String, String)> {
        vec![
            (ENV_STATE_MACHINE_ARN.into(), self.state_machine_arn.clone()),
            (ENV_APPROVALS_QUEUE.into(), self.approvals_queue.clone()),
            (ENV_RUNS_TABLE.into(), self.runs_table.clone()),
            (
                ENV_AGENT_ROLES.into(),
                self.agent_roles
                    .iter()
                    .map(|(lane, arn)| format!("{}={arn}", lane.as_str()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]
    }

    /// Reads the names back from the task's environment; names every missing variable.
    pub fn from_env() -> Result<Self, String> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let missing: Vec<&str> = [ENV_STATE_MACHINE_ARN, ENV_APPROVALS_QUEUE, ENV_RUNS_TABLE]
            .into_iter()
            .filter(|k| get(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing configuration: {}", missing.join(", ")));
        }
        Ok(MediumConfig {
            state_machine_arn: get(ENV_STATE_MACHINE_ARN).unwrap_or_default(),
            approvals_queue: get(ENV_APPROVALS_QUEUE).unwrap_or_default(),
            runs_table: get(ENV_RUNS_TABLE).unwrap_or_default(),
            agent_tasks_queue: String::new(),
            // Without it, no agent proof is accepted (agents then need tokens).
            agent_roles: get(ENV_AGENT_ROLES)
                .unwrap_or_default()
                .split(',')
                .filter_map(|pair| {
                    let (lane, arn) = pair.split_once('=')?;
                    Some((lane.parse::<Lane>().ok()?, arn.to_string()))
                })
                .collect(),
        })
    }
}
