//! One module per subcommand (as cargo's `commands/*.rs`), each calling one operation of the
//! library, and what they share: the ladder of this build, the deploy flags, output helpers.

pub mod cost;
pub mod deploy;
pub mod destroy;
pub mod healthcheck;
pub mod image;
pub mod plan;
pub mod serve;
pub mod status;
pub mod token;
pub mod unlock;
pub mod up;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;
use tier_xs::aws::{AwsClients, AwsOptions};
use tier_xs::ladder::{Ladder, TierFlags};
use tier_xs::ops::{Deployer, Inputs, SETTING_SUBNETS, SETTING_VPC};
use tier_xs::workspace::Tier;

use crate::Global;

/// The top of this build's tier ladder: the one line of the CLI that names a tier crate.
use tier_small as top;

/// Every tier this build can deploy and serve.
pub fn ladder() -> Ladder {
    top::ladder()
}

/// The flags of `plan`, `deploy` and `destroy`: the workspace's own, then every tier's.
#[derive(Args, Debug, Clone)]
pub struct DeployFlags {
    /// VPC for the workspace (default: the region's default VPC; remembered).
    #[arg(long)]
    vpc: Option<String>,
    /// Subnet for the workspace; repeat for several (default: the VPC's default subnets; remembered).
    #[arg(long)]
    subnet: Vec<String>,
    /// Resources changed at once.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// Allow deleting or replacing tables (and their data).
    #[arg(long)]
    destroy_data: bool,
    /// Seconds to wait for the dashboard service to become steady.
    #[arg(long, default_value_t = 600)]
    wait_timeout: u64,
    /// Usage profile for the monthly cost in the plan: idle, light, team, or a JSON file.
    #[arg(long = "profile-usage")]
    profile_usage: Option<String>,
    /// Seconds a deploy lock lives without a heartbeat.
    #[arg(long, default_value_t = 60)]
    pub lock_ttl: u64,
    #[command(flatten)]
    tiers: top::Flags,
}

impl DeployFlags {
    /// What this run asks of the deploy.
    pub fn inputs(&self) -> Inputs {
        let mut settings = self.tiers.settings();
        if let Some(v) = &self.vpc {
            settings.insert(SETTING_VPC.to_string(), serde_json::json!(v));
        }
        if !self.subnet.is_empty() {
            settings.insert(SETTING_SUBNETS.to_string(), serde_json::json!(self.subnet));
        }
        Inputs {
            settings,
            parallelism: self.parallelism.max(1),
            destroy_data: self.destroy_data,
            service_wait: Some(Duration::from_secs(self.wait_timeout)),
            usage: self.profile_usage.clone(),
        }
    }
}

/// The tier named on the command line, or `$WS`.
pub fn parse_tier(arg: Option<String>) -> Result<Tier> {
    let raw = arg
        .or_else(|| std::env::var("WS").ok().filter(|s| !s.is_empty()))
        .ok_or_else(|| {
            anyhow!("name a tier: extra-small (xs), small, medium or large (or set WS)")
        })?;
    Ok(raw.parse::<Tier>()?)
}

/// A deployer for the env of `g`, with AWS from the standard chain.
pub async fn connect(g: &Global) -> Result<Deployer> {
    let env = g.env()?;
    let aws = AwsClients::load(&AwsOptions {
        region: g.region.clone(),
        profile: g.profile.clone(),
    })
    .await?;
    Ok(Deployer::connect(aws, env, ladder()).await?)
}

/// Human output: stdout normally, stderr when stdout carries JSON.
pub fn human(g: &Global, text: &str) {
    if g.json {
        eprint!("{text}");
    } else {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}

pub fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn color(g: &Global) -> bool {
    !g.json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
