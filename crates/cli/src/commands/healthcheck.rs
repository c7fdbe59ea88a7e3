//! `agentbus healthcheck`: the container's health check (needs no curl in the image).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// Port of the server on 127.0.0.1.
    #[arg(long, env = "AGENTBUS_PORT", hide_env_values = true, default_value_t = tier_xs::config::DASHBOARD_PORT)]
    port: u16,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

pub fn run(args: &HealthcheckArgs) -> ExitCode {
    match healthcheck(args.port, Duration::from_secs(args.timeout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// GET /health on 127.0.0.1:port over plain HTTP/1.1; Ok on a 200.
fn healthcheck(port: u16, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("nothing listens on {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    // Read until the status line is complete: a response may arrive in several pieces.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 128];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        bail!(
            "{addr}/health answered {:?}",
            line.lines().next().unwrap_or("")
        )
    }
}
