//! `agentbus`: plan, deploy, destroy and inspect agentbus workspaces; run the server.

mod image;
mod serve;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use tier_xs::aws::{AwsClients, AwsOptions};
use tier_xs::engine::apply::{ApplyOptions, ApplyReport, Outcome, Progress};
use tier_xs::engine::lock::iso;
use tier_xs::ops::{Catalog, Deployer, Inputs, OpsError, Planned, UniverseContext};
use tier_xs::workspace::{Env, Tier};
use tokio_util::sync::CancellationToken;

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

#[derive(Args, Debug, Clone)]
struct Global {
    /// Environment name: lowercase letters, digits and '-', 1-16 characters.
    #[arg(long, global = true, env = "ENV", default_value = "dev")]
    env: String,
    /// AWS region (default: the standard chain, e.g. AWS_REGION or the profile's region).
    #[arg(long, global = true)]
    region: Option<String>,
    /// AWS profile (default: AWS_PROFILE or "default").
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Machine-readable JSON on stdout; human output goes to stderr.
    #[arg(long, global = true)]
    json: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y', global = true)]
    yes: bool,
}

#[derive(Args, Debug, Clone)]
struct DeployFlags {
    /// Container image of the dashboard server (remembered for later deploys).
    #[arg(long)]
    image: Option<String>,
    /// CIDR admitted to the dashboard port; repeat for several, "none" to clear (remembered).
    #[arg(long = "allow-cidr")]
    allow_cidr: Vec<String>,
    /// VPC for the dashboard service (default: the region's default VPC).
    #[arg(long)]
    vpc: Option<String>,
    /// Subnet for the dashboard service; repeat for several (default: the VPC's default subnets).
    #[arg(long)]
    subnet: Vec<String>,
    /// Resources changed at once.
    #[arg(long, default_value_t = 8)]
    parallelism: usize,
    /// Allow deleting or replacing tables (and their data).
    #[arg(long)]
    destroy_data: bool,
    /// Seconds to wait for the dashboard service to become steady.
    #[arg(long, default_value_t = 600)]
    wait_timeout: u64,
    /// Usage profile for the monthly cost in the plan: idle, light, team, or a JSON file.
    #[arg(long = "profile-usage")]
    profile_usage: Option<String>,
    /// Monthly limit of the workspace's AWS Budget in USD (default: the tier's target; remembered).
    #[arg(long)]
    budget_usd: Option<f64>,
    /// Email the budget alerts go to ("none" to stop them; remembered).
    #[arg(long)]
    alert_email: Option<String>,
    /// ACM certificate for HTTPS on the small tier's load balancer; port 80 then redirects
    /// to 443 ("none" to go back to HTTP only; remembered).
    #[arg(long)]
    certificate_arn: Option<String>,
    /// Seconds a deploy lock lives without a heartbeat.
    #[arg(long, default_value_t = 60)]
    lock_ttl: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what a deploy of TIER would change, and nothing else.
    Plan {
        /// extra-small (xs), small, medium or large; default: $WS.
        tier: Option<String>,
        #[command(flatten)]
        flags: DeployFlags,
        /// Exit 0 when there are no changes, 2 when there are, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Converge the workspace to TIER.
    Deploy {
        /// extra-small (xs), small, medium or large; default: $WS.
        tier: Option<String>,
        #[command(flatten)]
        flags: DeployFlags,
    },
    /// Remove the workspace. Tables stay unless --destroy-data.
    Destroy {
        #[command(flatten)]
        flags: DeployFlags,
    },
    /// What a tier costs a month, resource by resource (needs no AWS account).
    Cost {
        /// extra-small (xs), small, medium or large; default: $WS.
        tier: Option<String>,
        /// Usage profile: idle, light, team, or a JSON file with your own numbers.
        #[arg(long = "profile-usage", default_value = "light")]
        profile_usage: String,
    },
    /// Show the deployed tier, drift, the lock and recent applies.
    Status,
    /// Remove a deploy lock whose holder has stopped (refuses while it is alive).
    Unlock,
    /// Run a tier locally on embedded storage (no AWS account needed): dashboard and MCP on 127.0.0.1.
    Up {
        /// The tier to run (default extra-small).
        tier: Option<String>,
        /// Where the data lives (kept across restarts).
        #[arg(long, default_value = serve::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = tier_xs::config::DASHBOARD_PORT)]
        port: u16,
        /// Requests per tenant per minute.
        #[arg(long, default_value_t = tier_xs::server::RATE_LIMIT_PER_MINUTE)]
        rate_limit: u32,
    },
    /// Run the server: on AWS as configured by the deploy (AGENTBUS_* variables), or on
    /// embedded storage with --data-dir; --stdio serves MCP on stdin/stdout.
    Serve {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        stdio: bool,
        /// Tenant of the stdio session.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Port (default: AGENTBUS_PORT or 8080).
        #[arg(long)]
        port: Option<u16>,
        /// Address to listen on (default: 0.0.0.0 when configured by the deploy, as in the
        /// container; 127.0.0.1 with --data-dir).
        #[arg(long)]
        host: Option<std::net::IpAddr>,
        /// Requests per tenant per minute.
        #[arg(long, default_value_t = tier_xs::server::RATE_LIMIT_PER_MINUTE)]
        rate_limit: u32,
        /// With --data-dir: the tier whose tools to serve (on AWS the deploy says).
        #[arg(long, default_value = "xs")]
        tier: String,
    },
    /// Manage the bearer tokens of the server (embedded with --data-dir, else the env's workspace secret).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Build the server's container image (no Docker needed) and push it to a registry.
    Image {
        #[command(subcommand)]
        action: image::ImageCommand,
    },
    /// Exit 0 when the server on this host answers GET /health with 200 (the container's
    /// health check; needs no curl in the image).
    Healthcheck {
        #[arg(long, env = "AGENTBUS_PORT", default_value_t = tier_xs::config::DASHBOARD_PORT)]
        port: u16,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        #[arg(long)]
        tenant: String,
        /// admin, user or viewer.
        #[arg(long, default_value = "user")]
        role: String,
        /// How long the token lives, e.g. 90d, 12h, 30m, 45s (default: until revoked).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// List tokens (ids, tenants, roles; never the tokens).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

/// `90d`, `12h`, `30m`, `45s` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: use e.g. 90d, 12h, 30m or 45s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: the unit must be d, h, m or s")),
    };
    if secs == 0 {
        return Err("the lifetime must be at least one second".into());
    }
    Ok(Duration::from_secs(secs))
}

/// GET /health on 127.0.0.1:port over plain HTTP/1.1; true on a 200.
fn healthcheck(port: u16, timeout: Duration) -> Result<()> {
    use std::io::Read;
    use std::net::{SocketAddr, TcpStream};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("nothing listens on {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    // Read until the status line is complete: a response may arrive in several pieces.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 128];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        bail!(
            "{addr}/health answered {:?}",
            line.lines().next().unwrap_or("")
        )
    }
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
    if let Command::Healthcheck { port, timeout } = cli.command {
        return match healthcheck(port, Duration::from_secs(timeout)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                ExitCode::from(1)
            }
        };
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

fn parse_tier(arg: Option<String>) -> Result<Tier> {
    let raw = arg
        .or_else(|| std::env::var("WS").ok().filter(|s| !s.is_empty()))
        .ok_or_else(|| {
            anyhow!("name a tier: extra-small (xs), small, medium or large (or set WS)")
        })?;
    Ok(raw.parse::<Tier>()?)
}

fn inputs(flags: &DeployFlags) -> Inputs {
    let cidrs = if flags.allow_cidr.is_empty() {
        None
    } else if flags.allow_cidr.iter().any(|c| c == "none") {
        Some(Vec::new())
    } else {
        Some(flags.allow_cidr.clone())
    };
    Inputs {
        image: flags.image.clone(),
        allow_cidrs: cidrs,
        vpc: flags.vpc.clone(),
        subnets: (!flags.subnet.is_empty()).then(|| flags.subnet.clone()),
        parallelism: flags.parallelism.max(1),
        destroy_data: flags.destroy_data,
        service_wait: Some(Duration::from_secs(flags.wait_timeout)),
        usage: flags.profile_usage.clone(),
        budget_usd: flags.budget_usd,
        alert_email: flags.alert_email.as_ref().map(|e| {
            if e == "none" {
                String::new()
            } else {
                e.clone()
            }
        }),
        tier_settings: flags
            .certificate_arn
            .iter()
            .map(|c| {
                let v = if c == "none" { "" } else { c.as_str() };
                (
                    tier_small::catalog::SETTING_CERTIFICATE.to_string(),
                    serde_json::json!(v),
                )
            })
            .collect(),
    }
}

async fn connect(g: &Global) -> Result<Deployer> {
    let env = Env::new(&g.env)?;
    let aws = AwsClients::load(&AwsOptions {
        region: g.region.clone(),
        profile: g.profile.clone(),
    })
    .await?;
    Ok(Deployer::connect_with(aws, env, catalog()).await?)
}

/// Every tier this build can deploy.
fn catalog() -> Arc<dyn Catalog> {
    Arc::new(tier_small::catalog::SmallCatalog)
}

/// Human output: stdout normally, stderr when stdout carries JSON.
fn human(g: &Global, text: &str) {
    if g.json {
        eprint!("{text}");
    } else {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn color(g: &Global) -> bool {
    !g.json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn header(d: &Deployer, what: &str) -> String {
    format!(
        "{what} workspace {} (account {}, region {})\n\n",
        d.ws.id(),
        d.ws.account,
        d.ws.region
    )
}

async fn run(cli: Cli) -> Result<u8> {
    let g = cli.global.clone();
    match cli.command {
        Command::Plan {
            tier,
            flags,
            detailed_exitcode,
        } => {
            let tier = parse_tier(tier)?;
            let d = connect(&g).await?;
            let planned = d.plan(Some(tier), &inputs(&flags)).await?;
            human(&g, &header(&d, &format!("Plan: {tier} for")));
            human(&g, &planned.plan.render(color(&g)));
            if g.json {
                print_json(&serde_json::json!({
                    "workspace": d.ws.id(), "tier": tier, "plan": planned.plan,
                    "settings_changed": planned.settings_changed,
                    "api_calls": d.aws.stats.total(), "write_calls": d.aws.stats.writes(),
                }))?;
            }
            if !planned.plan.problems.is_empty() {
                return Ok(1);
            }
            Ok(if detailed_exitcode && planned.plan.has_changes() {
                2
            } else {
                0
            })
        }
        Command::Deploy { tier, flags } => {
            let tier = parse_tier(tier)?;
            let d = connect(&g).await?;
            converge(&g, &d, Some(tier), &flags).await
        }
        Command::Destroy { flags } => {
            let d = connect(&g).await?;
            converge(&g, &d, None, &flags).await
        }
        Command::Cost {
            tier,
            profile_usage,
        } => {
            let tier = parse_tier(tier)?;
            let report = cost_report(&g, tier, &profile_usage)?;
            if g.json {
                print_json(&serde_json::to_value(&report)?)?;
            }
            human(&g, &report.render());
            Ok(0)
        }
        Command::Status => {
            let d = connect(&g).await?;
            let s = d.status().await?;
            if g.json {
                print_json(&serde_json::to_value(&s)?)?;
            }
            let mut out = header(&d, "Status of");
            out.push_str(&format!(
                "deployed tier: {}\n",
                s.deployed_tier
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "none".into())
            ));
            if let Some(sync) = s.in_sync {
                out.push_str(if sync {
                    "in sync: yes\n"
                } else {
                    "in sync: NO (drift; run plan)\n"
                });
            }
            match &s.dashboard_url {
                Some(u) => out.push_str(&format!("dashboard: {u}  (MCP at {u}mcp)\n")),
                None if s.deployed_tier.is_some() => {
                    out.push_str("dashboard: no running task found yet\n")
                }
                None => {}
            }
            match &s.lock {
                Some(l) if l.is_alive() => out.push_str(&format!(
                    "lock: held by {} since {} (heartbeat {}s ago)\n",
                    l.holder,
                    l.acquired_at_text(),
                    l.heartbeat_age_secs()
                )),
                Some(l) => out.push_str(&format!(
                    "lock: stale, left by {} (last heartbeat {}s ago); `agentbus unlock` removes it\n",
                    l.holder,
                    l.heartbeat_age_secs()
                )),
                None => out.push_str("lock: free\n"),
            }
            out.push_str("\nresources:\n");
            for r in &s.resources {
                out.push_str(&format!(
                    "  {:<8} {:<20} {}{}\n",
                    if r["exists"].as_bool() == Some(true) {
                        "present"
                    } else {
                        "absent"
                    },
                    r["kind"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or(""),
                    if r["drift"].as_bool() == Some(true) {
                        "  (differs from spec)"
                    } else {
                        ""
                    }
                ));
            }
            out.push_str("\nrecent applies:\n");
            if s.history.is_empty() {
                out.push_str("  none\n");
            }
            for h in &s.history {
                let changed = h.changes.iter().filter(|c| c.outcome == "done").count();
                out.push_str(&format!(
                    "  {}  {:<12} {:<10} {} change(s)  by {}  (agentbus {})\n",
                    h.at,
                    h.tier
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "destroy".into()),
                    if h.succeeded {
                        "ok"
                    } else if h.cancelled {
                        "cancelled"
                    } else {
                        "failed"
                    },
                    changed,
                    h.caller,
                    h.tool_version
                ));
            }
            human(&g, &out);
            Ok(0)
        }
        Command::Healthcheck { .. } => Ok(0),
        Command::Image { action } => image::run(&g, action).await,
        Command::Up {
            tier,
            data_dir,
            port,
            rate_limit,
        } => {
            let tier = match tier.or_else(|| std::env::var("WS").ok().filter(|s| !s.is_empty())) {
                Some(t) => t.parse::<Tier>()?,
                None => Tier::ExtraSmall,
            };
            serve::up_cmd(tier, &data_dir, port, rate_limit).await
        }
        Command::Serve {
            data_dir,
            stdio,
            tenant,
            port,
            host,
            rate_limit,
            tier,
        } => {
            let tier = tier.parse::<Tier>()?;
            serve::serve_cmd(data_dir, stdio, &tenant, port, host, rate_limit, tier).await
        }
        Command::Token { action, data_dir } => {
            let action = match action {
                TokenCommand::Create { tenant, role, ttl } => {
                    serve::TokenAction::Create { tenant, role, ttl }
                }
                TokenCommand::List => serve::TokenAction::List,
                TokenCommand::Revoke { id } => serve::TokenAction::Revoke { id },
            };
            serve::token_cmd(
                action,
                data_dir.as_deref(),
                &g.env,
                g.region.clone(),
                g.profile.clone(),
                g.json,
            )
            .await
        }
        Command::Unlock => {
            let d = connect(&g).await?;
            match d.table.unlock().await {
                Ok(Some(info)) => {
                    human(
                        &g,
                        &format!(
                            "removed the stale lock of {} (held by {} since {}, last heartbeat {})\n",
                            d.ws.id(),
                            info.holder,
                            info.acquired_at_text(),
                            iso(info.heartbeat_at)
                        ),
                    );
                    if g.json {
                        print_json(&serde_json::json!({"unlocked": true, "previous": info}))?;
                    }
                    Ok(0)
                }
                Ok(None) => {
                    human(&g, &format!("{} is not locked\n", d.ws.id()));
                    if g.json {
                        print_json(&serde_json::json!({"unlocked": false}))?;
                    }
                    Ok(0)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Prices a tier without touching AWS: prices do not depend on the account, so the names use
/// the all-zero account id.
fn cost_report(g: &Global, tier: Tier, usage: &str) -> Result<tier_xs::cost::CostReport> {
    let catalog = catalog();
    if tier > catalog.highest() {
        return Err(OpsError::TierNotBuilt(tier, catalog.highest()).into());
    }
    let env = Env::new(&g.env)?;
    let region = g
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into());
    let ws = tier_xs::workspace::Workspace::new(env, "000000000000", region.clone());
    let network = tier_xs::components::network::Network {
        vpc_id: "(default VPC)".into(),
        subnet_ids: Vec::new(),
    };
    let settings = tier_xs::engine::lock::StoredSettings::default();
    let universe = catalog.universe(&UniverseContext {
        ws: &ws,
        xs: tier_xs::tier::XsSettings::new(network),
        settings: &settings,
        target: Some(tier),
        plain_http: false,
    });
    let usage = tier_xs::cost::Usage::load(usage)?;
    Ok(tier_xs::cost::report(
        tier,
        &region,
        &usage,
        &universe.resources,
    )?)
}

fn confirm(g: &Global, question: &str) -> Result<bool> {
    if g.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to change anything without confirmation: pass --yes");
    }
    eprint!("{question} Type 'yes' to continue: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

fn progress_printer() -> Arc<dyn Fn(Progress) + Send + Sync> {
    Arc::new(|p: Progress| match p {
        Progress::Started { name, action, .. } => eprintln!("  … {} {name}", action.verb()),
        Progress::Done {
            name,
            action,
            seconds,
            ..
        } => {
            eprintln!("  ✓ {} {name} ({seconds:.1}s)", action.verb())
        }
        Progress::Failed {
            name,
            action,
            error,
            ..
        } => {
            eprintln!("  ✗ {} {name}: {error}", action.verb())
        }
        Progress::Skipped { name, reason, .. } => eprintln!("  - {name}: {reason}"),
        Progress::Cancelling { in_flight } => eprintln!(
            "\ninterrupted: starting nothing new; waiting for {in_flight} call(s) in flight (Ctrl-C again to abandon them)"
        ),
    })
}

async fn converge(
    g: &Global,
    d: &Deployer,
    target: Option<Tier>,
    flags: &DeployFlags,
) -> Result<u8> {
    let what = match target {
        Some(t) => format!("Deploy {t} to"),
        None => "Destroy".to_string(),
    };
    let inputs = inputs(flags);
    // A first plan without the lock: when nothing changes, nothing is written at all.
    let first = d.plan(target, &inputs).await?;
    if !first.plan.problems.is_empty() {
        human(g, &header(d, &what));
        human(g, &first.plan.render(color(g)));
        return Err(OpsError::Problems(first.plan.problems.clone()).into());
    }
    let settings_to_save = first.settings_changed && target.is_some();
    if !first.plan.has_changes() && !settings_to_save {
        human(g, &header(d, &what));
        human(g, &first.plan.render(color(g)));
        if g.json {
            print_json(&serde_json::json!({
                "workspace": d.ws.id(), "changed": false, "plan": first.plan,
                "api_calls": d.aws.stats.total(), "write_calls": d.aws.stats.writes(),
            }))?;
        }
        return Ok(0);
    }

    if !g.yes && !std::io::stdin().is_terminal() {
        human(g, &header(d, &what));
        human(g, &first.plan.render(color(g)));
        bail!("refusing to change anything without confirmation: pass --yes");
    }
    let lease = d
        .lock(Duration::from_secs(flags.lock_ttl))
        .await
        .context("could not take the workspace lock")?;
    let result = locked_converge(g, d, target, &inputs, flags, &lease).await;
    let released = lease.release().await;
    let code = result?;
    released.context("releasing the workspace lock")?;

    if target.is_none() && code == 0 {
        if flags.destroy_data
            && d.status()
                .await
                .map(|s| s.resources.iter().all(|r| r["exists"] != true))
                .unwrap_or(false)
        {
            d.table.delete().await?;
            eprintln!(
                "deleted the deploy table {} (the workspace's apply history)",
                d.table.table
            );
        } else {
            eprintln!(
                "kept the deploy table {} (the workspace's apply history){}",
                d.table.table,
                if flags.destroy_data {
                    ""
                } else {
                    "; --destroy-data deletes it"
                }
            );
        }
    }
    Ok(code)
}

async fn locked_converge(
    g: &Global,
    d: &Deployer,
    target: Option<Tier>,
    inputs: &Inputs,
    flags: &DeployFlags,
    lease: &tier_xs::engine::lock::Lease,
) -> Result<u8> {
    let what = match target {
        Some(t) => format!("Deploy {t} to"),
        None => "Destroy".to_string(),
    };
    // Plan again under the lock: the cloud may have changed since.
    let planned: Planned = d.plan(target, inputs).await?;
    human(g, &header(d, &what));
    human(g, &planned.plan.render(color(g)));
    if !confirm(g, "Apply this plan?")? {
        eprintln!("nothing changed");
        return Ok(1);
    }
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c2.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "abandoning in-flight calls; the next deploy converges from wherever they stopped"
                );
                std::process::exit(130);
            }
        }
    });
    eprintln!("\napplying with parallelism {}:", flags.parallelism.max(1));
    let report = d
        .apply(
            &planned,
            lease,
            ApplyOptions {
                parallelism: flags.parallelism,
                cancel,
                progress: progress_printer(),
            },
        )
        .await?;
    ctrl_c.abort();
    summarize(g, d, &planned, &report)
}

fn summarize(g: &Global, d: &Deployer, planned: &Planned, report: &ApplyReport) -> Result<u8> {
    let mut out = String::new();
    let done = report
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::Done)
        .count();
    out.push_str(&format!(
        "\n{} resource(s) changed in {:.1}s, {} API calls.\n",
        done,
        report.seconds,
        d.aws.stats.total()
    ));
    for r in &report.results {
        match &r.outcome {
            Outcome::Kept(why) => out.push_str(&format!("kept {}: {why}\n", r.name)),
            Outcome::Failed(e) => out.push_str(&format!("FAILED {}: {e}\n", r.name)),
            Outcome::Skipped(e) => out.push_str(&format!("not done {}: {e}\n", r.name)),
            Outcome::NotStarted => out.push_str(&format!("not started {} (interrupted)\n", r.name)),
            _ => {}
        }
    }
    if report.cancelled {
        out.push_str("interrupted: every change above that shows ✓ is complete; run the same deploy again to finish.\n");
    } else if !report.succeeded() {
        out.push_str("some changes failed: fix the cause and run the same command again; it continues from here.\n");
    } else {
        out.push_str("done.\n");
    }
    eprint!("{out}");
    if g.json {
        print_json(&serde_json::json!({
            "workspace": d.ws.id(), "changed": true, "plan": planned.plan, "report": report,
            "api_calls": d.aws.stats.total(), "write_calls": d.aws.stats.writes(),
        }))?;
    }
    Ok(if report.succeeded() { 0 } else { 1 })
}
