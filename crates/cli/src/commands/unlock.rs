//! `agentbus unlock`: remove a deploy lock whose holder has stopped.

use anyhow::Result;
use clap::Args;
use tier_xs::engine::lock::iso;

use super::{connect, human, print_json};
use crate::Global;

#[derive(Args, Debug)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub g: Global,
}

pub async fn run(args: UnlockArgs) -> Result<u8> {
    let g = &args.g;
    let d = connect(g).await?;
    match d.table.unlock().await? {
        Some(info) => {
            human(
                g.json(),
                &format!(
                    "removed the stale lock of {} (held by {} since {}, last heartbeat {})\n",
                    d.ws.id(),
                    info.holder,
                    info.acquired_at_text(),
                    iso(info.heartbeat_at)
                ),
            );
            if g.json() {
                print_json(&serde_json::json!({"unlocked": true, "previous": info}))?;
            }
        }
        None => {
            human(g.json(), &format!("{} is not locked\n", d.ws.id()));
            if g.json() {
                print_json(&serde_json::json!({"unlocked": false}))?;
            }
        }
    }
    Ok(0)
}
