//! `agentbus destroy`: remove the workspace; data stays unless `--destroy-data`.

use anyhow::Result;
use clap::Args;

use super::{DeployFlags, connect, deploy};
use crate::Global;

#[derive(Args, Debug)]
pub struct DestroyArgs {
    #[command(flatten)]
    flags: DeployFlags,
}

pub async fn run(g: &Global, args: DestroyArgs) -> Result<u8> {
    let d = connect(g).await?;
    deploy::converge(g, &d, None, &args.flags).await
}
