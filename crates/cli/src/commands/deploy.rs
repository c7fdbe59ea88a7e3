//! `agentbus deploy`: converge the workspace to a tier, through the deploy protocol of
//! [`Deployer::converge`]; this module is its terminal: the plan, the question, progress and
//! the summary.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use tier_xs::engine::apply::{ApplyOptions, ApplyReport, Outcome, Progress};
use tier_xs::ops::{ConvergeUi, Converged, Deployer, Inputs, Planned, TableFate, header};
use tier_xs::workspace::Tier;
use tokio_util::sync::CancellationToken;

use super::{
    ApplyFlags, ChangeFlags, TargetFlags, color, connect, human, inputs, parse_tier, print_json,
    seconds,
};
use crate::Global;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// extra-small (xs), small, medium or large; default: $WS.
    tier: Option<String>,
    #[command(flatten)]
    target: TargetFlags,
    #[command(flatten)]
    change: ChangeFlags,
    /// Seconds to wait for the dashboard service to become steady (at least 1).
    #[arg(long, default_value_t = 600, value_parser = seconds, allow_hyphen_values = true)]
    wait_timeout: u64,
    #[command(flatten)]
    apply: ApplyFlags,
    #[command(flatten)]
    pub g: Global,
}

pub async fn run(args: DeployArgs) -> Result<u8> {
    let tier = parse_tier(args.tier)?;
    let d = connect(&args.g).await?;
    let inputs = inputs(&args.change, Some(&args.target), Some(args.wait_timeout));
    converge(&args.g, &d, Some(tier), &inputs, &args.apply).await
}

/// The terminal side of a deploy or destroy.
struct Terminal<'a> {
    g: &'a Global,
    yes: bool,
    d: &'a Deployer,
    what: String,
    cancel: CancellationToken,
    ctrl_c: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ConvergeUi for Terminal<'_> {
    fn show(&self, planned: &Planned) {
        human(self.g.json(), &header(&self.d.ws, &self.what));
        human(self.g.json(), &planned.plan.render(color(self.g.json())));
    }
    fn assume_yes(&self) -> bool {
        self.yes
    }
    fn can_ask(&self) -> bool {
        std::io::stdin().is_terminal()
    }
    fn confirm(&self, _planned: &Planned) -> bool {
        eprint!("Apply this plan? Type 'yes' to continue: ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).is_ok() && line.trim() == "yes"
    }
    fn applying(&self, parallelism: usize) {
        let cancel = self.cancel.clone();
        let watcher = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
                eprintln!(
                    "\ninterrupted: the changes in flight finish, nothing new starts (Ctrl-C again abandons them)"
                );
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!(
                        "abandoning in-flight calls; the next deploy converges from wherever they stopped"
                    );
                    std::process::exit(130);
                }
            }
        });
        if let Ok(mut slot) = self.ctrl_c.lock() {
            *slot = Some(watcher);
        }
        eprintln!("\napplying with parallelism {parallelism}:");
    }
}

/// Plans, asks and applies `target` (`None`: destroy), and says how it went.
pub async fn converge(
    g: &Global,
    d: &Deployer,
    target: Option<Tier>,
    inputs: &Inputs,
    apply: &ApplyFlags,
) -> Result<u8> {
    let ui = Terminal {
        g,
        yes: apply.yes,
        d,
        what: match target {
            Some(t) => format!("Deploy {t} to"),
            None => "Destroy".to_string(),
        },
        cancel: CancellationToken::new(),
        ctrl_c: Mutex::new(None),
    };
    let opts = ApplyOptions {
        parallelism: inputs.parallelism,
        cancel: ui.cancel.clone(),
        progress: progress_printer(),
    };
    let result = d
        .converge(
            target,
            inputs,
            Duration::from_secs(apply.lock_ttl),
            &ui,
            opts,
        )
        .await;
    if let Some(w) = ui.ctrl_c.lock().ok().and_then(|mut s| s.take()) {
        w.abort();
    }
    match result? {
        Converged::Unchanged(planned) => {
            if g.json() {
                print_json(&serde_json::json!({
                    "workspace": d.ws.id(), "changed": false, "plan": planned.plan,
                    "api_calls": d.aws.stats.total(), "write_calls": d.aws.stats.writes(), "calls": d.aws.stats.snapshot(),
                }))?;
            }
            Ok(0)
        }
        Converged::Declined(_) => {
            if g.json() {
                print_json(
                    &serde_json::json!({"workspace": d.ws.id(), "changed": false, "declined": true}),
                )?;
            }
            eprintln!("nothing changed");
            Ok(1)
        }
        Converged::Applied {
            planned,
            report,
            deploy_table,
        } => {
            let next = if report.succeeded() && target.is_some() {
                Some(next_steps(d, &planned, &report).await)
            } else {
                None
            };
            let code = summarize(g, d, &planned, &report, next.as_ref())?;
            match deploy_table {
                Some(TableFate::Deleted) => eprintln!(
                    "deleted the deploy table {} (the workspace's apply history)",
                    d.table.table
                ),
                Some(TableFate::Kept) => eprintln!(
                    "kept the deploy table {} (the workspace's apply history){}",
                    d.table.table,
                    if inputs.destroy_data {
                        ""
                    } else {
                        "; --destroy-data deletes it"
                    }
                ),
                None => {}
            }
            Ok(code)
        }
    }
}

/// After a deploy: where the dashboard answers and what to do next.
struct NextSteps {
    dashboard: tier_xs::ops::Dashboard,
    next: String,
}

impl NextSteps {
    fn render(&self, env: &str) -> String {
        let mut out = match &self.dashboard.url {
            Some(u) => format!("dashboard: {u}  (MCP at {u}mcp)\n"),
            None => format!(
                "dashboard: not answering yet; `agentbus status --env {env}` shows its address once its task runs\n"
            ),
        };
        if let Some(c) = &self.dashboard.certificate {
            out.push_str(&format!(
                "certificate: SHA-256 {c}\n  (self-signed; MCP clients: `agentbus connect --env {env}` pins it)\n"
            ));
        }
        out.push_str(&format!("next: {}\n", self.next));
        out
    }
}

async fn next_steps(d: &Deployer, planned: &Planned, report: &ApplyReport) -> NextSteps {
    let env = d.ws.env.to_string();
    NextSteps {
        dashboard: d.dashboard_after(&planned.plan, report).await,
        next: format!(
            "`agentbus token create --env {env} --tenant NAME` prints a token for the dashboard and MCP clients"
        ),
    }
}

fn progress_printer() -> Arc<dyn Fn(Progress) + Send + Sync> {
    Arc::new(|p: Progress| match p {
        Progress::Started { name, action, .. } => eprintln!("  … {} {name}", action.verb()),
        Progress::Done {
            name,
            action,
            seconds,
            ..
        } => {
            eprintln!("  ✓ {} {name} ({seconds:.1}s)", action.verb())
        }
        Progress::Failed {
            name,
            action,
            error,
            ..
        } => {
            eprintln!("  ✗ {} {name}: {error}", action.verb())
        }
        Progress::Skipped { name, reason, .. } => eprintln!("  - {name}: {reason}"),
        Progress::Cancelling { in_flight } => eprintln!(
            "\ninterrupted: starting nothing new; waiting for {in_flight} call(s) in flight (Ctrl-C again to abandon them)"
        ),
    })
}

fn summarize(
    g: &Global,
    d: &Deployer,
    planned: &Planned,
    report: &ApplyReport,
    next: Option<&NextSteps>,
) -> Result<u8> {
    let mut out = String::new();
    let done = report
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::Done)
        .count();
    out.push_str(&format!(
        "\n{} resource(s) changed in {:.1}s, {} API calls.\n",
        done,
        report.seconds,
        d.aws.stats.total()
    ));
    for r in &report.results {
        match &r.outcome {
            Outcome::Kept(why) => out.push_str(&format!("kept {}: {why}\n", r.name)),
            Outcome::Failed(e) => out.push_str(&format!("FAILED {}: {e}\n", r.name)),
            Outcome::Skipped(e) => out.push_str(&format!("not done {}: {e}\n", r.name)),
            Outcome::NotStarted => out.push_str(&format!("not started {} (interrupted)\n", r.name)),
            _ => {}
        }
    }
    if report.cancelled {
        out.push_str("interrupted: every change above that shows ✓ is complete; run the same deploy again to finish.\n");
    } else if !report.succeeded() {
        out.push_str("some changes failed: fix the cause and run the same command again; it continues from here.\n");
    } else {
        out.push_str("done.\n");
    }
    if g.json() {
        print_json(&serde_json::json!({
            "workspace": d.ws.id(), "changed": true, "plan": planned.plan, "report": report,
            "api_calls": d.aws.stats.total(), "write_calls": d.aws.stats.writes(), "calls": d.aws.stats.snapshot(),
            "dashboard_url": next.and_then(|n| n.dashboard.url.clone()),
            "certificate": next.and_then(|n| n.dashboard.certificate),
            "next": next.map(|n| n.next.clone()),
        }))?;
    } else {
        eprint!("{out}");
        if let Some(n) = next {
            eprint!("{}", n.render(&d.ws.env.to_string()));
        }
    }
    Ok(if report.succeeded() { 0 } else { 1 })
}
