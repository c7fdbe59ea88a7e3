//! `agentbus plan`: what a deploy would change, and nothing else.

use anyhow::Result;
use clap::Args;
use tier_xs::ops::header;

use super::{ChangeFlags, TargetFlags, color, connect, human, inputs, parse_tier, print_json};
use crate::Global;

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// extra-small (xs), small, medium or large; default: $WS.
    tier: Option<String>,
    #[command(flatten)]
    target: TargetFlags,
    #[command(flatten)]
    change: ChangeFlags,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    #[command(flatten)]
    pub g: Global,
}

pub async fn run(args: PlanArgs) -> Result<u8> {
    let g = &args.g;
    let tier = parse_tier(args.tier)?;
    let d = connect(g).await?;
    let planned = d
        .plan(Some(tier), &inputs(&args.change, Some(&args.target), None))
        .await?;
    human(g.json(), &header(&d.ws, &format!("Plan: {tier} for")));
    human(g.json(), &planned.plan.render(color(g.json())));
    if g.json() {
        print_json(&serde_json::json!({
            "workspace": d.ws.id(), "tier": tier, "plan": planned.plan,
            "settings_changed": planned.settings_changed,
            "api_calls": d.aws.stats.total(), "write_calls": d.aws.stats.writes(), "calls": d.aws.stats.snapshot(),
        }))?;
    }
    if !planned.plan.problems.is_empty() {
        return Ok(1);
    }
    Ok(if args.detailed_exitcode && planned.plan.has_changes() {
        2
    } else {
        0
    })
}
