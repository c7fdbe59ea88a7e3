//! `agentbus certificate rotate`: a new workspace certificate, the one the extra-small server
//! speaks TLS with where nothing fronts it (its key stays in the workspace secret).

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{connect, human, print_json};
use crate::Global;

#[derive(Args, Debug)]
pub struct CertificateArgs {
    #[command(subcommand)]
    action: CertificateCommand,
}

#[derive(Subcommand, Debug)]
enum CertificateCommand {
    /// Replace the workspace certificate and its key (after a leak, or as a routine): running
    /// servers answer with the new one within 5 minutes; `agentbus connect --env` pins it
    /// from its next start.
    Rotate {
        #[command(flatten)]
        g: Global,
    },
}

impl CertificateArgs {
    pub fn json(&self) -> bool {
        match &self.action {
            CertificateCommand::Rotate { g } => g.json(),
        }
    }
}

pub async fn run(args: CertificateArgs) -> Result<u8> {
    let CertificateCommand::Rotate { g } = &args.action;
    let d = connect(g).await?;
    let (old, new) = d.rotate_certificate().await?;
    human(
        g.json(),
        &format!(
            "workspace certificate of {} rotated\n  was: SHA-256 {old}\n  now: SHA-256 {new}\nrunning servers answer with it within {} minutes; `agentbus connect --env {}` pins it from its next start\n",
            d.ws.id(),
            tier_xs::server::CERTIFICATE_FOLLOW.as_secs() / 60,
            d.ws.env
        ),
    );
    if g.json() {
        print_json(&serde_json::json!({"previous": old, "certificate": new}))?;
    }
    Ok(0)
}
