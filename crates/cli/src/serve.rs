//! `agentbus serve`, `agentbus up` and `agentbus token`: the server, on AWS (configured by the
//! deploy through the environment) or on embedded storage in a data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tier_small::runtime::monitor::webhook::Reach;
use tier_xs::aws::{AwsClients, AwsOptions};
use tier_xs::config::{DASHBOARD_PORT, ServerConfig};
use tier_xs::runtime::Tenant;
use tier_xs::server::auth::{Authenticator, FileTokens, Identity, Role, SecretTokens};
use tier_xs::server::{AppState, serve, serve_stdio};
use tier_xs::workspace::{Env, Tier, Workspace};

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
async fn run_http(state: Arc<AppState>, addr: std::net::SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        stop_signal().await;
        tracing::info!("stopping: no new connections; finishing requests in flight");
        let _ = tx.send(());
    };
    let server = serve(state, listener, signal);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.context("server failed")?,
        _ = async { let _ = rx.await; tokio::time::sleep(DRAIN).await } => {
            tracing::warn!("requests still in flight after {}s; exiting", DRAIN.as_secs());
        }
    }
    Ok(())
}

async fn embedded_state(data_dir: &Path, tier: Tier, rate: u32) -> Result<Arc<AppState>> {
    let state = AppState::embedded(data_dir, tier.short(), "local", rate)
        .await
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    if tier >= Tier::Small {
        let (tools, feed) = tier_small::tools::SmallTools::embedded(data_dir)
            .await
            .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
        state.set_extensions(vec![Arc::new(tools)])?;
        tokio::spawn(feed.run(state.shutdown.child_token()));
    }
    Ok(state)
}

async fn aws_state(rate: u32) -> Result<(Arc<AppState>, ServerConfig)> {
    let cfg = ServerConfig::from_env().map_err(|e| anyhow!(e))?;
    let aws = AwsClients::load(&AwsOptions {
        region: Some(cfg.region.clone()),
        profile: None,
    })
    .await?;
    let state = AppState::aws(&aws, &cfg, rate)?;
    if cfg.tier >= Tier::Small {
        let small = tier_small::config::SmallConfig::from_env().map_err(|e| anyhow!(e))?;
        // Webhooks from a deployed server reach only public HTTPS addresses, unless the
        // operator says otherwise (a private network, or a test on one machine).
        let reach = match std::env::var(tier_small::config::ENV_WEBHOOKS_ANYWHERE).as_deref() {
            Ok("true") => Reach::Anywhere,
            _ => Reach::PublicHttps,
        };
        let (tools, feed) = tier_small::tools::SmallTools::aws(&aws, &small, reach)?;
        state.set_extensions(vec![Arc::new(tools)])?;
        tokio::spawn(feed.run(state.shutdown.child_token()));
    }
    Ok((state, cfg))
}

/// `agentbus serve`.
pub async fn serve_cmd(
    data_dir: Option<PathBuf>,
    stdio: bool,
    tenant: &str,
    port: Option<u16>,
    host: Option<std::net::IpAddr>,
    rate: u32,
    tier: Tier,
) -> Result<u8> {
    let (state, default_port, bind_all) = match &data_dir {
        Some(d) => (embedded_state(d, tier, rate).await?, DASHBOARD_PORT, false),
        None => {
            let (s, cfg) = aws_state(rate).await?;
            (s, cfg.port, true)
        }
    };
    if stdio {
        let identity = Identity {
            token_id: "stdio".into(),
            tenant: Tenant::new(tenant)?,
            role: Role::Admin,
        };
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
    tracing::info!("agentbus server on http://{addr}");
    eprintln!("agentbus server listening on http://{addr} (MCP at /mcp)");
    run_http(state, addr).await?;
    Ok(0)
}

/// `agentbus up`: the tier on embedded storage, on 127.0.0.1.
pub async fn up_cmd(tier: Tier, data_dir: &Path, port: u16, rate: u32) -> Result<u8> {
    if tier > Tier::Small {
        bail!(
            "the {tier} tier is not available locally in this version yet: extra-small (xs) and small are"
        );
    }
    let state = embedded_state(data_dir, tier, rate).await?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("port {port} is busy: pass --port"))?;
    let addr = listener.local_addr()?;
    drop(listener);
    let first = state.auth.list().await?.is_empty();
    println!("agentbus {} tier, data in {}", tier, data_dir.display());
    println!("  dashboard: http://{addr}/");
    println!("  MCP:       http://{addr}/mcp");
    if first {
        let (token, rec) = state
            .auth
            .create(Tenant::new("default")?, Role::Admin, None)
            .await?;
        println!("  admin token (shown once; tenant default): {token}");
        tracing::info!("created admin token {}", rec.id);
    } else {
        println!(
            "  tokens: existing ones still work; `agentbus token create --data-dir {}` makes another",
            data_dir.display()
        );
    }
    println!("Ctrl-C stops it; the data stays for the next `agentbus up`.");
    run_http(state, addr).await?;
    println!("stopped.");
    Ok(0)
}

async fn authenticator(
    data_dir: Option<&Path>,
    env: &str,
    region: Option<String>,
    profile: Option<String>,
) -> Result<Authenticator> {
    Ok(match data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            Authenticator::new(Box::new(FileTokens {
                path: d.join("tokens.json"),
            }))
        }
        None => {
            let aws = AwsClients::load(&AwsOptions { region, profile }).await?;
            let ws = Workspace::new(Env::new(env)?, "unknown", aws.region.clone());
            let cfg = ServerConfig::for_workspace(&ws, Tier::ExtraSmall);
            Authenticator::new(Box::new(SecretTokens {
                client: aws.secrets.clone(),
                secret: cfg.secret,
            }))
        }
    })
}

pub enum TokenAction {
    Create {
        tenant: String,
        role: String,
        ttl: Option<Duration>,
    },
    List,
    Revoke {
        id: String,
    },
}

/// `agentbus token create|list|revoke`.
pub async fn token_cmd(
    action: TokenAction,
    data_dir: Option<&Path>,
    env: &str,
    region: Option<String>,
    profile: Option<String>,
    json: bool,
) -> Result<u8> {
    let auth = authenticator(data_dir, env, region, profile).await?;
    match action {
        TokenAction::Create { tenant, role, ttl } => {
            let tenant = Tenant::new(&tenant)?;
            let role: Role = role.parse()?;
            let (token, rec) = auth.create(tenant, role, ttl).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token": token, "id": rec.id, "tenant": rec.tenant, "role": rec.role, "expires_at": rec.expires_at})
                );
            } else {
                println!("{token}");
                eprintln!(
                    "token {} for tenant {} ({:?}); it is shown only this once",
                    rec.id, rec.tenant, rec.role
                );
            }
        }
        TokenAction::List => {
            let all = auth.list().await?;
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|r| serde_json::json!({"id": r.id, "tenant": r.tenant, "role": r.role, "created_at": r.created_at, "expires_at": r.expires_at}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for r in &all {
                    println!(
                        "{}  tenant {:<20} {:<7} created {}",
                        r.id,
                        r.tenant.as_str(),
                        format!("{:?}", r.role).to_lowercase(),
                        tier_xs::engine::lock::iso(r.created_at)
                    );
                }
                if all.is_empty() {
                    println!("no tokens");
                }
            }
        }
        TokenAction::Revoke { id } => {
            if !auth.revoke(&id).await? {
                bail!("no token with id {id}");
            }
            eprintln!("revoked token {id}");
        }
    }
    Ok(0)
}
