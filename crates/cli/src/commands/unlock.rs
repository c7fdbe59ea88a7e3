//! `agentbus unlock`: remove a deploy lock whose holder has stopped.

use anyhow::Result;
use tier_xs::engine::lock::iso;

use super::{connect, human, print_json};
use crate::Global;

pub async fn run(g: &Global) -> Result<u8> {
    let d = connect(g).await?;
    match d.table.unlock().await? {
        Some(info) => {
            human(
                g,
                &format!(
                    "removed the stale lock of {} (held by {} since {}, last heartbeat {})\n",
                    d.ws.id(),
                    info.holder,
                    info.acquired_at_text(),
                    iso(info.heartbeat_at)
                ),
            );
            if g.json {
                print_json(&serde_json::json!({"unlocked": true, "previous": info}))?;
            }
        }
        None => {
            human(g, &format!("{} is not locked\n", d.ws.id()));
            if g.json {
                print_json(&serde_json::json!({"unlocked": false}))?;
            }
        }
    }
    Ok(0)
}
