//! `agentbus up`: a tier on embedded storage, on 127.0.0.1 (no AWS account needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tier_xs::aws::{AwsClients, AwsOptions};
use tier_xs::ops::Deployer;
use tier_xs::runtime::Tenant;
use tier_xs::server::auth::Role;
use tier_xs::server::workspace_tools::WorkspaceTools;
use tier_xs::workspace::{Env, Tier};

use super::serve::{DEFAULT_DATA_DIR, embedded_state, run_http};
use super::{QuotaFlags, ladder, tool_inputs};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// The tier to run (default extra-small).
    tier: Option<String>,
    /// Where the data lives (kept across restarts).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = tier_xs::config::DASHBOARD_PORT, allow_hyphen_values = true)]
    port: u16,
    /// Requests per tenant per minute.
    #[arg(long, default_value_t = tier_xs::server::RATE_LIMIT_PER_MINUTE, allow_hyphen_values = true)]
    rate_limit: u32,
    /// Connections served at once (at least 1); more wait until one closes.
    #[arg(long, default_value_t = tier_xs::server::MAX_CONNECTIONS, value_parser = super::at_least_one, allow_hyphen_values = true)]
    max_connections: usize,
    #[command(flatten)]
    quota: QuotaFlags,
    #[command(flatten)]
    governs: GovernFlags,
}

/// Which deployed workspace the server's workflows may change.
#[derive(Args, Debug)]
#[command(next_help_heading = "Governing a deployed workspace")]
struct GovernFlags {
    /// Offer the tools workspace_plan and workspace_apply for the deployed workspace of this
    /// env, run with this shell's AWS credentials: workflows can then plan a change of it,
    /// and apply it once approved.
    #[arg(long, value_name = "ENV")]
    workspace_env: Option<String>,
    /// The tenant whose admins and approved runs may change it (a workspace is shared by
    /// every tenant: one governs it).
    #[arg(long, default_value = "default", requires = "workspace_env")]
    workspace_tenant: String,
    /// Its AWS region (default: the standard chain, e.g. AWS_REGION).
    #[arg(long, requires = "workspace_env")]
    workspace_region: Option<String>,
    /// Its AWS profile (default: AWS_PROFILE or "default").
    #[arg(long, requires = "workspace_env")]
    workspace_profile: Option<String>,
}

impl GovernFlags {
    /// The workspace tools, connected (an account that cannot be reached fails here).
    async fn tools(&self) -> Result<Option<WorkspaceTools>> {
        let Some(env) = &self.workspace_env else {
            return Ok(None);
        };
        let env = Env::new(env).map_err(|e| anyhow::anyhow!("--workspace-env {env:?}: {e}"))?;
        let aws = AwsClients::load(&AwsOptions {
            region: self.workspace_region.clone(),
            profile: self.workspace_profile.clone(),
        })
        .await?;
        let deployer = Deployer::connect(aws, env, ladder())
            .await
            .context("reaching the workspace's AWS account (--workspace-env)")?;
        Ok(Some(WorkspaceTools::new(
            deployer,
            Tenant::new(&self.workspace_tenant)?,
            Arc::new(tool_inputs),
        )))
    }
}

pub async fn run(args: UpArgs) -> Result<u8> {
    let tier = match args
        .tier
        .or_else(|| std::env::var("WS").ok().filter(|s| !s.is_empty()))
    {
        Some(t) => t.parse::<Tier>()?,
        None => Tier::ExtraSmall,
    };
    let governs = args.governs.tools().await?;
    up(
        tier,
        &args.data_dir,
        args.port,
        args.rate_limit,
        args.max_connections,
        args.quota,
        governs,
    )
    .await
}

/// `agentbus up`: the tier on embedded storage, on 127.0.0.1.
async fn up(
    tier: Tier,
    data_dir: &Path,
    port: u16,
    rate: u32,
    max_connections: usize,
    quota: QuotaFlags,
    governs: Option<WorkspaceTools>,
) -> Result<u8> {
    ladder().check(tier)?;
    // The port first: a busy one leaves no data directory behind.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("port {port} is busy: pass --port"))?;
    let addr = listener.local_addr()?;
    drop(listener);
    let governed = governs.as_ref().map(WorkspaceTools::workspace);
    let state = embedded_state(data_dir, tier, rate, false, governs).await?;
    state.quota.set_limits(quota.limits());
    let first = state.auth.list().await?.is_empty();
    println!("agentbus {} tier, data in {}", tier, data_dir.display());
    println!("  dashboard: http://{addr}/");
    println!("  MCP:       http://{addr}/mcp");
    if let Some(ws) = governed {
        println!("  governs:   workspace {ws} (workspace_plan, workspace_apply)");
    }
    if first {
        let (token, rec) = state
            .auth
            .create(Tenant::new("default")?, Role::Admin, None)
            .await?;
        println!("  admin token (shown once; tenant default): {token}");
        tracing::info!("created admin token {}", rec.id);
    } else {
        println!(
            "  tokens: existing ones still work; `agentbus token create --data-dir {} --tenant NAME` makes another",
            data_dir.display()
        );
    }
    println!("Ctrl-C stops it; the data stays for the next `agentbus up`.");
    run_http(state, addr, max_connections, None).await?;
    println!("stopped.");
    Ok(0)
}
