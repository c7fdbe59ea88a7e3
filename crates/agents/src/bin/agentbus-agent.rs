//! `agentbus-agent`: the conductor, critic and sweeper outside the server — the command of the
//! agents' container image. One task from the environment (as Step Functions starts it on
//! ECS), or every task of an SQS queue with `--queue`. (`agentbus agent` runs the same code.)

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "agentbus-agent",
    version,
    about = "Do one agentbus workflow step (or every step of a queue) and answer Step Functions"
)]
struct Args {
    /// Answer every task of this SQS queue instead of the one in the environment.
    #[arg(long)]
    queue: Option<String>,
    /// The workspace's MCP endpoint (its token in AGENTBUS_MCP_TOKEN).
    #[arg(long, env = "AGENTBUS_MCP_URL", hide_env_values = true)]
    mcp_url: String,
    /// Seconds between heartbeats while a task runs.
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
}

fn main() -> ExitCode {
    // One JSON object a line when the deploy asks (AGENTBUS_LOG_FORMAT=json), for Logs Insights.
    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if std::env::var("AGENTBUS_LOG_FORMAT").is_ok_and(|f| f == "json") {
        log.json().flatten_event(true).init();
    } else {
        log.init();
    }
    let args = Args::parse();
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    let heartbeat = Duration::from_secs(args.heartbeat.max(1));
    match rt.block_on(agents::worker::run(args.queue, args.mcp_url, heartbeat)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
