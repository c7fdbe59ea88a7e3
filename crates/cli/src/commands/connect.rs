//! `agentbus connect`: a local stdio MCP server that carries a client's messages to an
//! agentbus server over Streamable HTTP with a bearer token (for clients that start their
//! servers as processes, Claude Desktop among them). With `--env`, the deployed workspace says
//! where its dashboard answers and which certificate it speaks TLS with, and only that
//! certificate is accepted.

use anyhow::{Context, Result, bail};
use clap::Args;
use tier_xs::server::bridge::{Target, run as bridge};

use crate::{Global, Output};

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("server").required(true).multiple(true).args(["url", "env_flag"]))]
pub struct ConnectArgs {
    /// The server: its dashboard address (https://host/) or its MCP endpoint (…/mcp). With
    /// --env, this address instead of the one the workspace reports.
    #[arg(long)]
    url: Option<String>,
    /// The deployed workspace: where its dashboard answers (unless --url) and, when the
    /// server speaks TLS with the workspace certificate, the certificate's fingerprint, which
    /// is then the only one accepted.
    #[arg(long = "env", value_name = "ENV")]
    env_flag: Option<String>,
    /// AWS region of the workspace (with --env; default: the standard chain).
    #[arg(long, requires = "env_flag")]
    region: Option<String>,
    /// AWS profile (with --env; default: AWS_PROFILE or "default").
    #[arg(long, requires = "env_flag")]
    profile: Option<String>,
    /// Allow plain http to an address beyond this machine (the token then crosses the network
    /// in clear text).
    #[arg(long)]
    allow_http: bool,
}

/// The token comes from AGENTBUS_TOKEN, never from an argument (the process list shows those).
pub async fn run(args: ConnectArgs) -> Result<u8> {
    let token = std::env::var("AGENTBUS_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .context("set AGENTBUS_TOKEN to an agentbus token (`agentbus token create`): the bridge sends it to the server")?;
    let target = match &args.env_flag {
        None => Target::parse(args.url.as_deref().unwrap_or_default(), args.allow_http)?,
        Some(env) => {
            let g = Global {
                env_flag: Some(env.clone()),
                region: args.region.clone(),
                profile: args.profile.clone(),
                out: Output::default(),
            };
            let d = super::connect(&g).await?;
            let dashboard = d.dashboard_now().await?;
            let url = match (&args.url, &dashboard.url) {
                (Some(u), _) | (None, Some(u)) => u.clone(),
                (None, None) => bail!(
                    "workspace {} reports no dashboard address yet (its task is not running): `agentbus status --env {env}` shows it once it is, or pass --url",
                    d.ws.id()
                ),
            };
            let target = Target::parse(&url, args.allow_http)?;
            // An address the workspace names by its domain is verified as any public site;
            // one given by IP address has no name to verify: the workspace certificate, which
            // the server answers such handshakes with, is pinned.
            let pin = match (dashboard.certificate, &args.url) {
                (Some(pin), _) => Some(pin),
                (None, Some(u)) if names_an_ip_address(u) => d.workspace_certificate().await,
                (None, _) => None,
            };
            match pin {
                Some(pin) => target.pinned(pin)?,
                None => target,
            }
        }
    };
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    bridge(target, token.trim(), stdin, tokio::io::stdout()).await?;
    Ok(0)
}

/// Whether `url`'s host is an IP address (which a TLS client cannot send as a name).
fn names_an_ip_address(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::names_an_ip_address;

    #[test]
    fn an_address_given_by_ip_is_told_from_one_given_by_name() {
        assert!(names_an_ip_address("https://203.0.113.7:8080/"));
        assert!(names_an_ip_address("https://127.0.0.1:8080/mcp"));
        assert!(names_an_ip_address("https://[2001:db8::1]:8080/"));
        assert!(names_an_ip_address("https://203.0.113.7"));
        assert!(!names_an_ip_address("https://mcp.example.com:8080/"));
        assert!(!names_an_ip_address("https://mcp.example.com"));
    }
}
