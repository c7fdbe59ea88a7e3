//! `agentbus`: plan, deploy, destroy and inspect agentbus workspaces; run the server.
//!
//! This file only parses and dispatches: each subcommand is a module of [`commands`] that
//! calls one operation of the library.

mod commands;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use commands::{cost, deploy, destroy, healthcheck, image, plan, serve, status, token, unlock, up};

#[derive(Parser, Debug)]
#[command(
    name = "agentbus",
    version,
    about = "Stand up and run an agentbus workspace on AWS"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Environment name: lowercase letters, digits and '-', 1-16 characters (default:
    /// AGENTBUS_ENV, else ENV when it is a valid name, else dev).
    #[arg(long = "env", global = true)]
    pub env_flag: Option<String>,
    /// AWS region (default: the standard chain, e.g. AWS_REGION or the profile's region).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// AWS profile (default: AWS_PROFILE or "default").
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Machine-readable JSON on stdout; human output goes to stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
}

impl Global {
    /// The environment: `--env`, else `AGENTBUS_ENV`, else the seed's `ENV` when it is a valid
    /// name (the POSIX shell's `ENV` often names a startup file), else `dev`. A bad value is
    /// reported with where it came from.
    pub fn env(&self) -> anyhow::Result<tier_xs::workspace::Env> {
        use tier_xs::workspace::Env;
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (value, source) = match (&self.env_flag, var("AGENTBUS_ENV")) {
            (Some(v), _) => (v.clone(), "--env"),
            (None, Some(v)) => (v, "AGENTBUS_ENV"),
            (None, None) => match var("ENV").filter(|v| Env::new(v).is_ok()) {
                Some(v) => (v, "ENV"),
                None => ("dev".to_string(), "the default"),
            },
        };
        Env::new(&value).map_err(|e| anyhow::anyhow!("{source} {value:?}: {e}"))
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
    Status,
    /// Remove a deploy lock whose holder has stopped (refuses while it is alive).
    Unlock,
    /// Run a tier locally on embedded storage (no AWS account needed): dashboard and MCP on 127.0.0.1.
    Up(up::UpArgs),
    /// Run the server: on AWS as configured by the deploy (AGENTBUS_* variables), or on
    /// embedded storage with --data-dir; --stdio serves MCP on stdin/stdout.
    Serve(serve::ServeArgs),
    /// Manage the bearer tokens of the server (embedded with --data-dir, else the env's workspace secret).
    Token(token::TokenArgs),
    /// Build the server's container image (no Docker needed) and push it to a registry.
    Image {
        #[command(subcommand)]
        action: image::ImageCommand,
    },
    /// Exit 0 when the server on this host answers GET /health with 200 (the container's
    /// health check; needs no curl in the image).
    Healthcheck(healthcheck::HealthcheckArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    // The container's health check runs often: no async runtime for it.
    if let Command::Healthcheck(args) = &cli.command {
        return healthcheck::run(args);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Plan(args) => plan::run(g, args).await,
        Command::Deploy(args) => deploy::run(g, args).await,
        Command::Destroy(args) => destroy::run(g, args).await,
        Command::Cost(args) => cost::run(g, args),
        Command::Status => status::run(g).await,
        Command::Unlock => unlock::run(g).await,
        Command::Up(args) => up::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Token(args) => token::run(g, args).await,
        Command::Image { action } => image::run(g, action).await,
        Command::Healthcheck(_) => Ok(0),
    }
}
