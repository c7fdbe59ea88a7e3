//! `agentbus agent`: the workflow's agents outside the server (what the agents' image runs as
//! `agentbus-agent`): one step from the environment, or every step of an SQS queue.

use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Answer every task of this SQS queue instead of the one in the environment
    /// (AGENTBUS_TASK_TOKEN, AGENTBUS_ROLE, AGENTBUS_PHASE, AGENTBUS_LANE, AGENTBUS_RUN_ID, AGENTBUS_INPUT).
    #[arg(long)]
    queue: Option<String>,
    /// The workspace's MCP endpoint; the agent's token comes from AGENTBUS_MCP_TOKEN.
    #[arg(long, env = "AGENTBUS_MCP_URL", hide_env_values = true)]
    mcp_url: String,
    /// Seconds between heartbeats while a task runs (at least 1).
    #[arg(long, default_value_t = 30, value_parser = super::seconds, allow_hyphen_values = true)]
    heartbeat: u64,
}

pub async fn run(args: AgentArgs) -> Result<u8> {
    agents::worker::run(
        args.queue,
        args.mcp_url,
        Duration::from_secs(args.heartbeat),
    )
    .await
    .map_err(|e| anyhow!(e))?;
    Ok(0)
}
