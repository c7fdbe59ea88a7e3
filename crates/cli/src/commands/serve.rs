//! `agentbus serve`: the server, on AWS (configured by the deploy through the environment)
//! or on embedded storage in a data directory, with the tools of every layer of its tier.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use tier_xs::aws::{AwsClients, AwsOptions};
use tier_xs::config::{DASHBOARD_PORT, ServerConfig};
use tier_xs::ladder::{Embedded, ServerPart};
use tier_xs::runtime::Tenant;
use tier_xs::server::auth::{Identity, Role};
use tier_xs::server::mcp::ToolExtension;
use tier_xs::server::tls::{CertSlot, ServerConfig as TlsConfig};
use tier_xs::server::workspace_tools::WorkspaceTools;
use tier_xs::server::{AppState, serve, serve_stdio};
use tier_xs::workspace::Tier;

use super::ladder;

/// Default data directory of the embedded target.
pub const DEFAULT_DATA_DIR: &str = ".agentbus";

/// How long in-flight requests get after SIGTERM (ECS waits 30 s before SIGKILL).
const DRAIN: Duration = Duration::from_secs(25);

/// Resolves on Ctrl-C or SIGTERM (a Fargate Spot interruption).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the HTTP server until a stop signal, then drains for at most [`DRAIN`].
pub async fn run_http(
    state: Arc<AppState>,
    addr: std::net::SocketAddr,
    max_connections: usize,
    tls: Option<Arc<TlsConfig>>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        stop_signal().await;
        tracing::info!("stopping: no new connections; finishing requests in flight");
        let _ = tx.send(());
    };
    let server = serve(state, listener, max_connections, tls, signal);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.context("server failed")?,
        _ = async { let _ = rx.await; tokio::time::sleep(DRAIN).await } => {
            tracing::warn!("requests still in flight after {}s; exiting", DRAIN.as_secs());
        }
    }
    Ok(())
}

/// Adds the layers' tools to the server and starts their feeds.
fn attach(
    state: &Arc<AppState>,
    parts: Vec<ServerPart>,
    mut tools: Vec<Arc<dyn ToolExtension>>,
) -> Result<()> {
    for part in parts {
        tools.push(part.tools);
        if let Some(feed) = part.feed {
            tokio::spawn(feed(state.clone(), state.shutdown.child_token()));
        }
    }
    state.set_extensions(tools)?;
    Ok(())
}

/// Gives the console the tier's resources and cost (the ladder knows them; no account needed).
fn tier_facts(state: &AppState, tier: Tier, env: &str, region: &str) -> Result<()> {
    let env = tier_xs::workspace::Env::new(env).map_err(|e| anyhow!("env {env:?}: {e}"))?;
    state.set_tier_facts(tier_xs::ops::tier_facts(&ladder(), tier, env, region)?)?;
    Ok(())
}

/// The server of `tier` on embedded storage in `data_dir`.
/// `exposed`: it listens beyond loopback (its outbound connections then follow a deployed
/// server's rules).
pub async fn embedded_state(
    data_dir: &Path,
    tier: Tier,
    rate: u32,
    exposed: bool,
    governs: Option<WorkspaceTools>,
) -> Result<Arc<AppState>> {
    let open = || format!("opening the data directory {}", data_dir.display());
    let state = AppState::embedded(data_dir, tier.short(), "local", rate)
        .await
        .with_context(open)?;
    let at = Embedded { data_dir, exposed };
    let parts = ladder().serve_embedded(tier, at).await.with_context(open)?;
    let tools: Vec<Arc<dyn ToolExtension>> = governs
        .into_iter()
        .map(|t| Arc::new(t) as Arc<dyn ToolExtension>)
        .collect();
    attach(&state, parts, tools)?;
    // Prices of the default region: the embedded target stands for a deploy anywhere.
    tier_facts(&state, tier, "dev", "us-east-1")?;
    tier_xs::runtime::deployments::record_start(&state.deployments, tier)
        .await
        .with_context(open)?;
    Ok(state)
}

/// The deployed workspace's server, as its task's environment configures it.
struct Deployed {
    state: Arc<AppState>,
    cfg: ServerConfig,
    aws: AwsClients,
    /// The certificate it speaks TLS with, when it speaks TLS itself.
    tls: Option<Arc<CertSlot>>,
}

/// The server of the deployed workspace, with the workspace certificate when it speaks TLS
/// itself.
async fn aws_state(rate: u32) -> Result<Deployed> {
    let cfg = ServerConfig::from_env().map_err(|e| anyhow!(e))?;
    let aws = AwsClients::load(&AwsOptions {
        region: Some(cfg.region.clone()),
        profile: None,
    })
    .await?;
    let tls = match cfg.tls {
        true => Some(workspace_tls(&aws, &cfg.secret).await?),
        false => None,
    };
    let state = AppState::aws(&aws, &cfg, rate)?;
    let parts = ladder().serve_aws(cfg.tier, &aws).await?;
    attach(&state, parts, Vec::new())?;
    tier_facts(&state, cfg.tier, &cfg.env, &cfg.region)?;
    Ok(Deployed {
        state,
        cfg,
        aws,
        tls,
    })
}

/// The workspace certificate in `secret`, as what a TLS listener answers with.
async fn workspace_tls(aws: &AwsClients, secret: &str) -> Result<Arc<CertSlot>> {
    let store = tier_xs::server::auth::SecretTokens {
        client: aws.secrets(),
        secret: secret.to_string(),
    };
    let cert = store
        .certificate()
        .await?
        .with_context(|| format!("the workspace secret {secret} holds no certificate to speak TLS with; `agentbus deploy` adds one"))?;
    let fingerprint = cert.fingerprint()?;
    tracing::info!(%fingerprint, "TLS with the workspace certificate");
    Ok(CertSlot::new(cert.certified_key()?))
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve embedded storage in this directory (as `up`) instead of the deployed workspace
    /// the AGENTBUS_* variables describe.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve MCP on stdin/stdout (for clients that start their servers), not HTTP.
    #[arg(long)]
    stdio: bool,
    /// Tenant of the stdio session.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Port (default: AGENTBUS_PORT or 8080).
    #[arg(long, allow_hyphen_values = true)]
    port: Option<u16>,
    /// Address to listen on (default: 0.0.0.0 when configured by the deploy, as in the
    /// container; 127.0.0.1 with --data-dir).
    #[arg(long)]
    host: Option<std::net::IpAddr>,
    /// Requests per tenant per minute.
    #[arg(long, default_value_t = tier_xs::server::RATE_LIMIT_PER_MINUTE, allow_hyphen_values = true)]
    rate_limit: u32,
    /// With --data-dir: the tier whose tools to serve (on AWS the deploy says).
    #[arg(long, default_value = "xs")]
    tier: String,
    /// Connections served at once (at least 1); more wait until one closes.
    #[arg(long, default_value_t = tier_xs::server::MAX_CONNECTIONS, value_parser = super::at_least_one, allow_hyphen_values = true)]
    max_connections: usize,
    #[command(flatten)]
    quota: super::QuotaFlags,
}

/// `agentbus serve`.
pub async fn run(args: ServeArgs) -> Result<u8> {
    let ServeArgs {
        data_dir,
        stdio,
        tenant,
        port,
        host,
        rate_limit: rate,
        tier,
        max_connections,
        quota,
    } = args;
    let tier = tier.parse::<Tier>()?;
    ladder().check(tier)?;
    let exposed = host.is_some_and(|h| !h.is_loopback());
    let (state, default_port, bind_all, deployed) = match &data_dir {
        Some(d) => (
            embedded_state(d, tier, rate, exposed, None).await?,
            DASHBOARD_PORT,
            false,
            None,
        ),
        None => {
            let d = aws_state(rate).await?;
            (d.state.clone(), d.cfg.port, true, Some(d))
        }
    };
    state.quota.set_limits(quota.limits());
    if stdio {
        let identity = Identity::new("stdio", Tenant::new(&tenant)?, Role::Admin);
        serve_stdio(state, identity)
            .await
            .map_err(|e| anyhow!("stdio server: {e}"))?;
        return Ok(0);
    }
    // In a container the task must listen on every interface; locally only on loopback.
    let ip = host.unwrap_or(if bind_all {
        [0, 0, 0, 0].into()
    } else {
        [127, 0, 0, 1].into()
    });
    let addr = std::net::SocketAddr::from((ip, port.unwrap_or(default_port)));
    let slot = deployed.as_ref().and_then(|d| d.tls.clone());
    let tls = slot.clone().map(CertSlot::server_config).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // A rotated workspace certificate is served without a restart.
    if let (Some(d), Some(slot)) = (&deployed, &slot) {
        let every = std::env::var("AGENTBUS_CERTIFICATE_FOLLOW_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(tier_xs::server::CERTIFICATE_FOLLOW, Duration::from_secs);
        tier_xs::server::auth::SecretTokens {
            client: d.aws.secrets(),
            secret: d.cfg.secret.clone(),
        }
        .follow_certificate(slot.clone(), every, state.shutdown.child_token());
    }
    // With its own name, the server keeps the name's record and certificate (into the slot).
    let keeper = deployed.and_then(|d| {
        let (domain, slot) = (d.cfg.domain?, slot?);
        Some(tier_xs::server::domain::keep(
            d.aws,
            domain,
            slot,
            state.shutdown.child_token(),
        ))
    });
    tracing::info!("agentbus server on {scheme}://{addr}");
    eprintln!("agentbus server listening on {scheme}://{addr} (MCP at /mcp)");
    let stop = state.shutdown.clone();
    let served = run_http(state, addr, max_connections, tls).await;
    if let Some(keeper) = keeper {
        // Lets go of the domain's record (the next task points it at itself).
        stop.cancel();
        if tokio::time::timeout(Duration::from_secs(4), keeper)
            .await
            .is_err()
        {
            tracing::warn!("the domain's record was not released in time");
        }
    }
    served?;
    Ok(0)
}
