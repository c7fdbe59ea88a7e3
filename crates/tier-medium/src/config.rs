//! The names the medium tier's server needs on top of the small ones, passed to the
//! dashboard task as `AGENTBUS_*` variables.

use tier_xs::workspace::Workspace;

pub const ENV_STATE_MACHINE_ARN: &str = "AGENTBUS_STATE_MACHINE_ARN";
pub const ENV_APPROVALS_QUEUE: &str = "AGENTBUS_APPROVALS_QUEUE";

/// Name components of the medium tier's resources.
pub mod component {
    pub const STATE_MACHINE: &str = "lanes";
    pub const APPROVALS_QUEUE: &str = "approvals";
    pub const APPROVALS_DEAD_LETTERS: &str = "approvals-dlq";
    pub const ALERTS: &str = "alerts";
    pub const AGENTS: &str = "agents";
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediumConfig {
    pub state_machine_arn: String,
    /// The queue the state machine puts approval requests in, which the server reads.
    pub approvals_queue: String,
}

impl MediumConfig {
    pub fn for_workspace(ws: &Workspace) -> Self {
        MediumConfig {
            state_machine_arn: ws.arn(
                "states",
                &format!("stateMachine:{}", ws.name(component::STATE_MACHINE)),
            ),
            approvals_queue: ws.name(component::APPROVALS_QUEUE),
        }
    }

    pub fn to_env(&self) -> Vec<(String, String)> {
        vec![
            (ENV_STATE_MACHINE_ARN.into(), self.state_machine_arn.clone()),
            (ENV_APPROVALS_QUEUE.into(), self.approvals_queue.clone()),
        ]
    }

    /// Reads the names back from the task's environment; names every missing variable.
    pub fn from_env() -> Result<Self, String> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let missing: Vec<&str> = [ENV_STATE_MACHINE_ARN, ENV_APPROVALS_QUEUE]
            .into_iter()
            .filter(|k| get(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing configuration: {}", missing.join(", ")));
        }
        Ok(MediumConfig {
            state_machine_arn: get(ENV_STATE_MACHINE_ARN).unwrap_or_default(),
            approvals_queue: get(ENV_APPROVALS_QUEUE).unwrap_or_default(),
        })
    }
}
