//! `agentbus workflow asl`: the workflow's state machine definition as the deploy would
//! create it for a workspace (needs no AWS account).

use anyhow::Result;
use clap::{Args, Subcommand};

use super::ladder;

#[derive(Args, Debug)]
pub struct WorkflowArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Print the Amazon States Language definition of the workspace's state machine.
    Asl(AslArgs),
}

#[derive(Args, Debug)]
struct AslArgs {
    /// Environment whose resource names the definition uses (as `plan --env`).
    #[arg(long = "env", value_name = "ENV")]
    env_flag: Option<String>,
    /// Region of the ARNs (default: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Account of the ARNs (12 digits).
    #[arg(long, default_value = "000000000000", value_parser = super::account)]
    account: String,
    /// The tiers' flags, as `plan` takes them (--agents queue, say).
    #[command(flatten)]
    tiers: super::TopFlags,
}

pub fn run(args: WorkflowArgs) -> Result<u8> {
    match args.what {
        What::Asl(a) => {
            let region = super::region_or_default(a.region.clone());
            let env = crate::resolve_env(a.env_flag.as_deref())?;
            use tier_xs::ladder::TierFlags;
            let text = tier_xs::ops::document(
                &ladder(),
                env,
                &region,
                &a.account,
                a.tiers.settings(),
                "asl",
            )?;
            println!("{text}");
            Ok(0)
        }
    }
}
