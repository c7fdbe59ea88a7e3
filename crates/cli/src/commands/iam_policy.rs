//! `agentbus iam-policy`: the IAM policy a person or pipeline needs to deploy a workspace up
//! to a tier (needs no AWS account).

use anyhow::Result;
use clap::Args;
use tier_xs::workspace::Workspace;

use super::ladder;

#[derive(Args, Debug)]
pub struct IamPolicyArgs {
    /// The highest tier the policy may deploy: extra-small (xs), small, medium or large.
    #[arg(long)]
    tier: String,
    /// Environment whose resource names the policy allows (as `deploy --env`).
    #[arg(long = "env", value_name = "ENV")]
    env_flag: Option<String>,
    /// Region of the ARNs (default: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Account of the ARNs (12 digits).
    #[arg(long, value_parser = super::account)]
    account: String,
}

/// Prints the policy documents as a JSON array: one managed policy each (IAM caps a managed
/// policy at 6,144 characters).
pub fn run(args: IamPolicyArgs) -> Result<u8> {
    let tier = super::parse_tier(Some(args.tier))?;
    let env = crate::resolve_env(args.env_flag.as_deref())?;
    let ws = Workspace::new(env, args.account, super::region_or_default(args.region));
    let documents = tier_xs::ops::deployer_policy(&ladder(), tier, &ws)?;
    super::print_json(&serde_json::Value::Array(documents))?;
    Ok(0)
}
