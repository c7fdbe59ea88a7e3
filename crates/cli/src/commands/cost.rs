//! `agentbus cost`: what a tier costs a month, resource by resource (needs no AWS account).

use anyhow::Result;
use clap::Args;

use super::{human, ladder, parse_tier, print_json};
use crate::Global;

#[derive(Args, Debug)]
pub struct CostArgs {
    /// extra-small (xs), small, medium or large; default: $WS.
    tier: Option<String>,
    /// Usage profile: idle, light, team, or a JSON file with your own numbers.
    #[arg(long = "profile-usage", default_value = "light")]
    profile_usage: String,
}

pub fn run(g: &Global, args: CostArgs) -> Result<u8> {
    if let Some(p) = &g.profile {
        anyhow::bail!(
            "--profile {p:?} names an AWS profile, which cost does not use (prices need no account); for a usage profile pass --profile-usage {p}"
        );
    }
    let tier = parse_tier(args.tier)?;
    let region = g
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into());
    let report = tier_xs::ops::price(&ladder(), tier, g.env()?, &region, &args.profile_usage)?;
    if g.json {
        print_json(&serde_json::to_value(&report)?)?;
    }
    human(g, &report.render());
    Ok(0)
}
