//! `agentbus connect`: a local stdio MCP server that carries a client's messages to an
//! agentbus server over Streamable HTTP with a bearer token (for clients that start their
//! servers as processes, Claude Desktop among them).

use anyhow::{Context, Result};
use clap::Args;
use tier_xs::server::bridge::{Target, run as bridge};

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The server: its dashboard address (https://host/) or its MCP endpoint (…/mcp).
    #[arg(long)]
    url: String,
    /// Allow plain http to an address beyond this machine (the token then crosses the network
    /// in clear text).
    #[arg(long)]
    allow_http: bool,
}

/// The token comes from AGENTBUS_TOKEN, never from an argument (the process list shows those).
pub async fn run(args: ConnectArgs) -> Result<u8> {
    let target = Target::parse(&args.url, args.allow_http)?;
    let token = std::env::var("AGENTBUS_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .context("set AGENTBUS_TOKEN to an agentbus token (`agentbus token create`): the bridge sends it to the server")?;
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    bridge(target, token.trim(), stdin, tokio::io::stdout()).await?;
    Ok(0)
}
