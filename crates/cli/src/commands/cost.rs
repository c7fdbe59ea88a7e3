//! `agentbus cost`: what a tier costs a month, resource by resource (needs no AWS account).

use anyhow::Result;
use clap::Args;

use super::{human, ladder, parse_tier, print_json};
use crate::Output;

#[derive(Args, Debug)]
pub struct CostArgs {
    /// extra-small (xs), small, medium or large; default: $WS.
    tier: Option<String>,
    /// Usage profile: idle, light, team, or a JSON file with your own numbers.
    #[arg(long = "profile-usage", default_value = "light")]
    profile_usage: String,
    /// Region whose prices to use (default: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Environment whose resource names the report uses (as `plan --env`).
    #[arg(long = "env", value_name = "ENV")]
    env_flag: Option<String>,
    #[command(flatten)]
    pub out: Output,
}

/// `cost` takes no AWS profile (prices need no account): `--profile` is an unknown argument,
/// and clap points at `--profile-usage`.
pub fn run(args: CostArgs) -> Result<u8> {
    let tier = parse_tier(args.tier)?;
    let region = super::region_or_default(args.region.clone());
    let env = crate::resolve_env(args.env_flag.as_deref())?;
    let report = tier_xs::ops::price(&ladder(), tier, env, &region, &args.profile_usage)?;
    if args.out.json {
        print_json(&serde_json::to_value(&report)?)?;
    }
    human(args.out.json, &report.render());
    Ok(0)
}
