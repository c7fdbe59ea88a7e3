//! `agentbus status`: the deployed tier, drift, where the dashboard answers, the lock and
//! recent applies.

use anyhow::Result;

use super::{connect, human, print_json};
use crate::Global;

pub async fn run(g: &Global) -> Result<u8> {
    let d = connect(g).await?;
    let s = d.status().await?;
    if g.json {
        print_json(&serde_json::to_value(&s)?)?;
    }
    human(g, &s.render());
    Ok(0)
}
