//! `agentbus token`: the server's bearer tokens, in a data directory or the env's secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tier_xs::aws::{AwsClients, AwsOptions};
use tier_xs::config::ServerConfig;
use tier_xs::runtime::Tenant;
use tier_xs::server::auth::{Authenticator, FileTokens, Role, SecretTokens};
use tier_xs::workspace::{Env, Tier, Workspace};

use crate::Global;

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    action: TokenCommand,
}

/// Where the tokens are: a data directory, or the env's workspace secret on AWS.
#[derive(Args, Debug)]
pub struct TokenStore {
    /// The embedded server's data directory (as `up` and `serve --data-dir`); without it the
    /// tokens are the env's on AWS, in its workspace secret.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub g: Global,
}

impl TokenArgs {
    pub fn json(&self) -> bool {
        self.store().g.json()
    }
    fn store(&self) -> &TokenStore {
        match &self.action {
            TokenCommand::Create { store, .. }
            | TokenCommand::List { store }
            | TokenCommand::Revoke { store, .. } => store,
        }
    }
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        /// The tenant whose data the token reaches: lowercase letters, digits and '-'.
        #[arg(long)]
        tenant: String,
        /// admin, user or viewer.
        #[arg(long, default_value = "user")]
        role: String,
        /// How long the token lives, e.g. 90d, 12h, 30m, 45s (default: until revoked).
        #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
        ttl: Option<Duration>,
        #[command(flatten)]
        store: TokenStore,
    },
    /// List tokens (ids, tenants, roles; never the tokens).
    List {
        #[command(flatten)]
        store: TokenStore,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
        #[command(flatten)]
        store: TokenStore,
    },
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

async fn authenticator(
    data_dir: Option<&Path>,
    env: Env,
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
            let ws = Workspace::new(env, "unknown", aws.region.clone());
            let cfg = ServerConfig::for_workspace(&ws, Tier::ExtraSmall);
            // The workspace secret holds the tokens: without it there is no workspace.
            match aws
                .secrets()
                .describe_secret()
                .secret_id(&cfg.secret)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    bail!(
                        "{} is not deployed in {} (it has no secret {}): check --env and --region, or deploy it first",
                        ws.id(),
                        aws.region,
                        cfg.secret
                    );
                }
                Err(e) => bail!(
                    "cannot read the workspace secret {}: {}",
                    cfg.secret,
                    tier_xs::engine::error_text(&e)
                ),
            }
            Authenticator::new(Box::new(SecretTokens {
                client: aws.secrets(),
                secret: cfg.secret,
            }))
        }
    })
}

/// `agentbus token create|list|revoke`.
pub async fn run(args: TokenArgs) -> Result<u8> {
    let store = args.store();
    let g = &store.g;
    let json = g.json();
    let auth = authenticator(
        store.data_dir.as_deref(),
        g.env()?,
        g.region.clone(),
        g.profile.clone(),
    )
    .await?;
    match args.action {
        TokenCommand::Create {
            tenant, role, ttl, ..
        } => {
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
        TokenCommand::List { .. } => {
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
        TokenCommand::Revoke { id, .. } => {
            if !auth.revoke(&id).await? {
                bail!("no token with id {id}");
            }
            if json {
                println!("{}", serde_json::json!({"revoked": id}));
            } else {
                eprintln!("revoked token {id}");
            }
        }
    }
    Ok(0)
}
