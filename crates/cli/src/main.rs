//! `agentbus`: plan, deploy, destroy and inspect agentbus workspaces; run the server.
//!
//! This file only parses and dispatches: each subcommand is a module of [`commands`] that
//! calls one operation of the library.

mod commands;

use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use commands::{
    agent, certificate, completions, connect, cost, deploy, destroy, healthcheck, iam_policy,
    image, plan, serve, status, token, unlock, up, workflow,
};

#[derive(Parser, Debug)]
#[command(
    name = "agentbus",
    version,
    about = "Stand up and run an agentbus workspace on AWS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which workspace, in which account, and how to answer: the options of every command that
/// talks to a deployed workspace.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Workspace")]
pub struct Global {
    /// Environment name: lowercase letters, digits and '-', 1-16 characters (default:
    /// AGENTBUS_ENV, else ENV when it is a valid name, else dev).
    #[arg(long = "env", value_name = "ENV")]
    pub env_flag: Option<String>,
    /// AWS region (default: the standard chain, e.g. AWS_REGION or the profile's region).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile (default: AWS_PROFILE or "default").
    #[arg(long)]
    pub profile: Option<String>,
    #[command(flatten)]
    pub out: Output,
}

/// How a command answers.
#[derive(Args, Debug, Clone, Default)]
pub struct Output {
    /// Machine-readable JSON on stdout (errors too); the human lines are left out.
    #[arg(long)]
    pub json: bool,
}

/// The environment: `flag`, else `AGENTBUS_ENV`, else the seed's `ENV` when it is a valid name
/// (the POSIX shell's `ENV` often names a startup file), else `dev`. A bad value is reported
/// with where it came from.
pub fn resolve_env(flag: Option<&str>) -> anyhow::Result<tier_xs::workspace::Env> {
    use tier_xs::workspace::Env;
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (value, source) = match (flag, var("AGENTBUS_ENV")) {
        (Some(v), _) => (v.to_string(), "--env"),
        (None, Some(v)) => (v, "AGENTBUS_ENV"),
        (None, None) => match var("ENV").filter(|v| Env::new(v).is_ok()) {
            Some(v) => (v, "ENV"),
            None => ("dev".to_string(), "the default"),
        },
    };
    Env::new(&value).map_err(|e| anyhow::anyhow!("{source} {value:?}: {e}"))
}

impl Global {
    /// The environment these options name (see [`resolve_env`]).
    pub fn env(&self) -> anyhow::Result<tier_xs::workspace::Env> {
        resolve_env(self.env_flag.as_deref())
    }
    pub fn json(&self) -> bool {
        self.out.json
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what a deploy of TIER would change, and nothing else.
    Plan(plan::PlanArgs),
    /// Converge the workspace to TIER.
    Deploy(deploy::DeployArgs),
    /// Remove the workspace. Tables stay unless --destroy-data.
    Destroy(destroy::DestroyArgs),
    /// What a tier costs a month, resource by resource (needs no AWS account).
    Cost(cost::CostArgs),
    /// Show the deployed tier, drift, the lock and recent applies.
    Status(status::StatusArgs),
    /// Remove a deploy lock whose holder has stopped (refuses while it is alive).
    Unlock(unlock::UnlockArgs),
    /// Run a tier locally on embedded storage (no AWS account needed): dashboard and MCP on 127.0.0.1.
    Up(up::UpArgs),
    /// Run the server: on AWS as configured by the deploy (AGENTBUS_* variables), or on
    /// embedded storage with --data-dir; --stdio serves MCP on stdin/stdout.
    Serve(serve::ServeArgs),
    /// Manage the bearer tokens of the server (embedded with --data-dir, else the env's workspace secret).
    Token(token::TokenArgs),
    /// Manage the workspace certificate the extra-small server speaks TLS with: `rotate`.
    Certificate(certificate::CertificateArgs),
    /// Build the server's container image (no Docker needed) and push it to a registry.
    Image(image::ImageArgs),
    /// Serve MCP on stdin/stdout for a client that starts its servers (Claude Desktop…),
    /// carrying every message to an agentbus server with the token in AGENTBUS_TOKEN.
    Connect(connect::ConnectArgs),
    /// Exit 0 when the server on this host answers GET /health with 200 (the container's
    /// health check; needs no curl in the image).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Run the workflow's agents outside the server: one step from the environment (as Step
    /// Functions starts it on ECS), or every step of an SQS queue.
    Agent(agent::AgentArgs),
    /// Print what the deploy derives for a workspace: `workflow asl`, the state machine's
    /// definition (needs no AWS account).
    Workflow(workflow::WorkflowArgs),
    /// Print the IAM policy documents that let a person or pipeline plan, deploy up to a tier,
    /// destroy, unlock, push the image and manage tokens of one workspace (needs no AWS account).
    IamPolicy(iam_policy::IamPolicyArgs),
    /// Print a shell completion script: `agentbus completions bash > /etc/bash_completion.d/agentbus`.
    Completions(completions::CompletionsArgs),
}

impl Command {
    /// Whether this command answers in JSON (its errors then do too).
    fn json(&self) -> bool {
        match self {
            Command::Plan(a) => a.g.json(),
            Command::Deploy(a) => a.g.json(),
            Command::Destroy(a) => a.g.json(),
            Command::Cost(a) => a.out.json,
            Command::Status(a) => a.g.json(),
            Command::Unlock(a) => a.g.json(),
            Command::Token(a) => a.json(),
            Command::Certificate(a) => a.json(),
            Command::Image(a) => a.json(),
            Command::Up(_)
            | Command::Serve(_)
            | Command::Connect(_)
            | Command::Healthcheck(_)
            | Command::Completions(_)
            | Command::Workflow(_)
            | Command::IamPolicy(_)
            | Command::Agent(_) => false,
        }
    }
}

/// An error for a person, or for a program when it asked for JSON.
fn report(json: bool, message: &str) {
    if json {
        println!("{}", serde_json::json!({ "error": message }));
    } else {
        eprintln!("error: {message}");
    }
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    // Plain text when stderr is not a terminal: a task's stderr goes to CloudWatch Logs,
    // where colour codes are noise.
    use tracing_subscriber::prelude::*;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            // The SDK's own warnings (an IMDS probe off EC2, say) would bury the one line
            // that says what is missing; RUST_LOG brings them back.
            .unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,aws_config=error,aws_runtime=error")
            })
    };
    // The MCP library logs whole requests and results (secret values, tokens' payloads) below
    // warn: capped there whatever RUST_LOG says.
    let no_payloads = || {
        tracing_subscriber::filter::filter_fn(|m| {
            !(m.target().starts_with("rmcp") && *m.level() > tracing::Level::WARN)
        })
    };
    // A deployed task logs one JSON object a line (its fields, and the request's trace id
    // from the span), which Logs Insights reads field by field.
    let json = std::env::var(tier_xs::config::ENV_LOG_FORMAT).is_ok_and(|f| f == "json");
    let text_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
    });
    let json_layer = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    // The filters are global, not per layer (one layer writes): a per-layer filter keeps
    // per-span state and asks again on every span and event, a cost on every request.
    tracing_subscriber::registry()
        .with(filter())
        .with(no_payloads())
        .with(text_layer)
        .with(json_layer)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are not errors; a usage error asked for JSON answers in JSON.
            if e.use_stderr() && std::env::args().any(|a| a == "--json") {
                let text = e.render().to_string();
                report(true, text.trim().trim_start_matches("error: "));
                return ExitCode::from(2);
            }
            e.exit();
        }
    };
    // The container's health check runs often: no async runtime for it.
    if let Command::Healthcheck(args) = &cli.command {
        return healthcheck::run(args);
    }
    if let Command::Completions(args) = &cli.command {
        completions::run(args, &mut Cli::command());
        return ExitCode::SUCCESS;
    }
    let json = cli.command.json();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(json, &format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(json, &format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Plan(args) => plan::run(args).await,
        Command::Deploy(args) => deploy::run(args).await,
        Command::Destroy(args) => destroy::run(args).await,
        Command::Cost(args) => cost::run(args),
        Command::Status(args) => status::run(args).await,
        Command::Unlock(args) => unlock::run(args).await,
        Command::Up(args) => up::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Connect(args) => connect::run(args).await,
        Command::Token(args) => token::run(args).await,
        Command::Certificate(args) => certificate::run(args).await,
        Command::Image(args) => image::run(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::Workflow(args) => workflow::run(args),
        Command::IamPolicy(args) => iam_policy::run(args),
        Command::Healthcheck(_) | Command::Completions(_) => Ok(0),
    }
}

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
