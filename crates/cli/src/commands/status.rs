//! `agentbus status`: the deployed tier, drift, where the dashboard answers, the lock and
//! recent applies.

use anyhow::Result;
use clap::Args;

use super::{connect, human, print_json};
use crate::Global;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub g: Global,
}

pub async fn run(args: StatusArgs) -> Result<u8> {
    let d = connect(&args.g).await?;
    let s = d.status().await?;
    if args.g.json() {
        print_json(&serde_json::to_value(&s)?)?;
    }
    human(args.g.json(), &s.render());
    Ok(0)
}
