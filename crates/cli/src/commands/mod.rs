//! One module per subcommand (as cargo's `commands/*.rs`), each calling one operation of the
//! library, and what they share: the ladder of this build, the deploy flags, output helpers.

pub mod agent;
pub mod certificate;
pub mod completions;
pub mod connect;
pub mod cost;
pub mod deploy;
pub mod destroy;
pub mod healthcheck;
pub mod iam_policy;
pub mod image;
pub mod plan;
pub mod serve;
pub mod status;
pub mod token;
pub mod unlock;
pub mod up;
pub mod workflow;

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
use tier_large as top;

/// The flags of every tier of this build.
pub type TopFlags = top::Flags;

/// Every tier this build can deploy and serve.
pub fn ladder() -> Ladder {
    top::ladder()
}

/// What the workspace should be: the flags of `plan` and `deploy`, the workspace's own, then
/// every tier's.
#[derive(Args, Debug, Clone)]
pub struct TargetFlags {
    /// VPC for the workspace (default: the region's default VPC; remembered).
    #[arg(long)]
    vpc: Option<String>,
    /// Subnet for the workspace; repeat for several (default: the VPC's default subnets; remembered).
    #[arg(long)]
    subnet: Vec<String>,
    /// Usage profile for the monthly cost in the plan: idle, light, team, or a JSON file.
    #[arg(long = "profile-usage")]
    profile_usage: Option<String>,
    #[command(flatten)]
    tiers: top::Flags,
}

/// How changes are planned: the flags of `plan`, `deploy` and `destroy`.
#[derive(Args, Debug, Clone)]
pub struct ChangeFlags {
    /// Resources changed at once (at least 1); a plan reads eight times as many at once.
    #[arg(long, default_value_t = 8, value_parser = at_least_one, allow_hyphen_values = true)]
    pub parallelism: usize,
    /// Allow deleting or replacing data-bearing resources (tables, buckets, secrets) and their data.
    #[arg(long)]
    pub destroy_data: bool,
    /// Stop work in flight that leaving a tier would cut off (running workflows) instead of
    /// refusing.
    #[arg(long)]
    pub stop_in_flight: bool,
}

/// How an apply runs: the flags of `deploy` and `destroy`.
#[derive(Args, Debug, Clone)]
pub struct ApplyFlags {
    /// Seconds a deploy lock lives without a heartbeat (at least 1).
    #[arg(long, default_value_t = 60, value_parser = seconds, allow_hyphen_values = true)]
    pub lock_ttl: u64,
    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// What each tenant may write a UTC day: the flags of `up` and `serve`.
#[derive(Args, Debug, Clone, Copy)]
pub struct QuotaFlags {
    /// KiB of KV writes a tenant may make a UTC day (each write counts its key and value in
    /// whole KiB); 0: no limit.
    #[arg(long, default_value_t = tier_xs::server::quota::KV_KIB_PER_DAY)]
    pub quota_kv_kib_per_day: u64,
    /// Events a tenant may publish a UTC day; 0: no limit.
    #[arg(long, default_value_t = tier_xs::server::quota::EVENTS_PER_DAY)]
    pub quota_events_per_day: u64,
    /// KV entries a tenant may keep (new keys are refused beyond it; existing ones can still be
    /// written); 0: no limit.
    #[arg(long, default_value_t = tier_xs::server::quota::KV_ENTRIES)]
    pub quota_kv_entries: u64,
    /// MiB of files (the small tier's artifacts) a tenant may keep; 0: no limit.
    #[arg(long, default_value_t = tier_xs::server::quota::STORED_MIB)]
    pub quota_stored_mib: u64,
}

impl QuotaFlags {
    pub fn limits(&self) -> tier_xs::server::quota::QuotaLimits {
        tier_xs::server::quota::QuotaLimits {
            kv_kib: self.quota_kv_kib_per_day,
            events: self.quota_events_per_day,
            kv_entries: self.quota_kv_entries,
            stored_mib: self.quota_stored_mib,
        }
    }
}

/// A count that must be at least 1, with the flag's own message for anything else.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

/// An AWS account id: 12 digits.
pub fn account(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not an AWS account id (12 digits)"))
    }
}

/// A number of seconds, at least 1.
pub fn seconds(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a whole number of seconds (at least 1)"
        )),
    }
}

/// What a run asks of the deploy: `target` for plan and deploy (none for destroy).
pub fn inputs(change: &ChangeFlags, target: Option<&TargetFlags>, wait: Option<u64>) -> Inputs {
    let mut settings = target.map(|t| t.tiers.settings()).unwrap_or_default();
    if let Some(t) = target {
        if let Some(v) = &t.vpc {
            settings.insert(SETTING_VPC.to_string(), serde_json::json!(v));
        }
        if !t.subnet.is_empty() {
            settings.insert(SETTING_SUBNETS.to_string(), serde_json::json!(t.subnet));
        }
    }
    Inputs {
        settings,
        parallelism: change.parallelism.max(1),
        destroy_data: change.destroy_data,
        stop_in_flight: change.stop_in_flight,
        service_wait: wait.map(Duration::from_secs),
        usage: target.and_then(|t| t.profile_usage.clone()),
    }
}

/// The flags a workspace tool takes (`workspace_plan`, `workspace_apply`): those of
/// `agentbus plan` that say what the workspace should be, never `--destroy-data`.
#[derive(clap::Parser, Debug)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct ToolFlags {
    #[command(flatten)]
    target: TargetFlags,
}

/// A workspace tool's flags as a deploy's inputs; an unknown or malformed flag is an error
/// that names it.
pub fn tool_inputs(flags: &[String]) -> Result<Inputs, String> {
    use clap::Parser;
    let f = ToolFlags::try_parse_from(flags).map_err(|e| {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        format!("flags: {}", first.trim_start_matches("error: "))
    })?;
    let change = ChangeFlags {
        parallelism: 8,
        destroy_data: false,
        stop_in_flight: false,
    };
    Ok(inputs(&change, Some(&f.target), None))
}

/// The region a command that needs no AWS account works for: `--region`, else AWS_REGION,
/// else AWS_DEFAULT_REGION, else us-east-1.
pub fn region_or_default(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into())
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
/// Human output on stdout; left out under `--json`, whose answer is the JSON alone.
pub fn human(json: bool, text: &str) {
    if !json {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}

pub fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn color(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
