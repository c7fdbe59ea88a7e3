//! `agentbus destroy`: remove the workspace; data stays unless `--destroy-data`.

use anyhow::Result;
use clap::Args;

use super::{ApplyFlags, ChangeFlags, connect, deploy, inputs};
use crate::Global;

#[derive(Args, Debug)]
pub struct DestroyArgs {
    #[command(flatten)]
    change: ChangeFlags,
    #[command(flatten)]
    apply: ApplyFlags,
    #[command(flatten)]
    pub g: Global,
}

pub async fn run(args: DestroyArgs) -> Result<u8> {
    let d = connect(&args.g).await?;
    let inputs = inputs(&args.change, None, None);
    deploy::converge(&args.g, &d, None, &inputs, &args.apply).await
}
