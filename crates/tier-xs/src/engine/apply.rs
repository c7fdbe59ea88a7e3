//! Apply: walk the plan's dependency graph with bounded parallelism, passing outputs to
//! dependents. Creations and updates go first, dependencies before dependents; deletions
//! follow in reverse dependency order. Cancelling stops new work and lets in-flight calls
//! finish; whatever was not done is reported, and the next apply converges from there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::plan::{Action, Plan, diff};
use super::{EngineError, Observed, Outputs, Resource};
use crate::aws::AwsClients;

/// Progress of one resource, for a live display.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    Started {
        id: &'static str,
        name: String,
        action: Action,
    },
    Done {
        id: &'static str,
        name: String,
        action: Action,
        seconds: f64,
    },
    Failed {
        id: &'static str,
        name: String,
        action: Action,
        error: String,
    },
    Skipped {
        id: &'static str,
        name: String,
        reason: String,
    },
    Cancelling {
        in_flight: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    Done,
    /// Planned as an update, but nothing differed once dependency outputs were known.
    Unchanged,
    Failed(String),
    /// Not attempted because a dependency failed or was not done.
    Skipped(String),
    /// A data-bearing resource kept on purpose.
    Kept(String),
    /// Not started because the apply was cancelled.
    NotStarted,
}

/// The outcome as the apply history records it.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Done => f.write_str("done"),
            Outcome::Unchanged => f.write_str("unchanged"),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
            Outcome::Skipped(e) => write!(f, "skipped: {e}"),
            Outcome::Kept(e) => write!(f, "kept: {e}"),
            Outcome::NotStarted => f.write_str("not started (cancelled)"),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ResourceResult {
    pub id: &'static str,
    pub name: String,
    pub action: Action,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Serialize)]
pub struct ApplyReport {
    pub results: Vec<ResourceResult>,
    pub cancelled: bool,
    pub seconds: f64,
    /// Outputs of every resource after the apply.
    #[serde(skip)]
    pub outputs: Outputs,
}

impl ApplyReport {
    /// What happened to each resource, as the apply history records it.
    pub fn recorded_changes(&self) -> Vec<crate::engine::lock::RecordedChange> {
        self.results
            .iter()
            .map(|r| crate::engine::lock::RecordedChange {
                id: r.id.to_string(),
                name: r.name.clone(),
                action: r.action.verb().to_string(),
                outcome: r.outcome.to_string(),
            })
            .collect()
    }

    pub fn succeeded(&self) -> bool {
        !self.cancelled
            && self.results.iter().all(|r| {
                matches!(
                    r.outcome,
                    Outcome::Done | Outcome::Unchanged | Outcome::Kept(_)
                )
            })
    }

    pub fn failures(&self) -> Vec<&ResourceResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .collect()
    }
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

#[derive(Clone)]
pub struct ApplyOptions {
    /// Resources changed at once (at least 1).
    pub parallelism: usize,
    pub cancel: CancellationToken,
    pub progress: ProgressFn,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: 8,
            cancel: CancellationToken::new(),
            progress: Arc::new(|_| {}),
        }
    }
}

/// A finished node: its index, what happened, and how long it took.
type NodeResult = (usize, Result<Outcome, EngineError>, f64);

struct Node {
    resource: Arc<dyn Resource>,
    action: Action,
    deps: Vec<usize>,
}

/// Applies a plan. Errors of single resources are in the report, not the `Result`.
pub async fn apply(aws: &AwsClients, plan: &Plan, opts: ApplyOptions) -> ApplyReport {
    let started = Instant::now();
    let by_id: HashMap<&str, Arc<dyn Resource>> =
        plan.resources.iter().map(|r| (r.id(), r.clone())).collect();
    let outputs = Arc::new(Mutex::new(plan.observed_outputs()));
    let mut results: BTreeMap<usize, ResourceResult> = BTreeMap::new();

    // Build the graph of work.
    let mut nodes: Vec<Node> = Vec::new();
    let mut node_of: HashMap<&str, usize> = HashMap::new();
    let mut kept = Vec::new();
    for c in &plan.changes {
        let Some(r) = by_id.get(c.id) else { continue };
        match c.action {
            Action::NoOp => {}
            Action::Keep => kept.push(ResourceResult {
                id: c.id,
                name: label(r.as_ref()),
                action: c.action,
                outcome: Outcome::Kept(c.reason.clone().unwrap_or_default()),
            }),
            _ => {
                node_of.insert(c.id, nodes.len());
                nodes.push(Node {
                    resource: r.clone(),
                    action: c.action,
                    deps: Vec::new(),
                });
            }
        }
    }
    let forward: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].action != Action::Delete)
        .collect();
    for i in 0..nodes.len() {
        let mut deps = Vec::new();
        if nodes[i].action == Action::Delete {
            // Everything else first, and dependents are deleted before what they depend on.
            deps.extend(forward.iter().copied());
            for (j, n) in nodes.iter().enumerate() {
                if n.action == Action::Delete
                    && n.resource.depends_on().contains(&nodes[i].resource.id())
                {
                    deps.push(j);
                }
            }
        } else {
            for d in nodes[i].resource.depends_on() {
                if let Some(&j) = node_of.get(d)
                    && nodes[j].action != Action::Delete
                {
                    deps.push(j);
                }
            }
        }
        nodes[i].deps = deps;
    }

    let parallelism = opts.parallelism.max(1);
    // When more is ready than may run, the longest chain of dependents goes first: a role
    // that a task definition and then a service wait for starts before a log group nothing
    // waits for.
    let order = longest_chain_first(&nodes);
    let mut status: Vec<Option<bool>> = vec![None; nodes.len()]; // Some(true) ok, Some(false) not ok
    let mut started_set: HashSet<usize> = HashSet::new();
    let mut running: FuturesUnordered<BoxFuture<'_, NodeResult>> = FuturesUnordered::new();
    let mut cancel_reported = false;

    loop {
        if !opts.cancel.is_cancelled() {
            // Skip what can no longer run, start what is ready.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for &i in &order {
                    if started_set.contains(&i) {
                        continue;
                    }
                    if let Some(&bad) = nodes[i].deps.iter().find(|&&d| status[d] == Some(false)) {
                        let reason = format!(
                            "not attempted: {} did not complete",
                            nodes[bad].resource.name()
                        );
                        (opts.progress)(Progress::Skipped {
                            id: nodes[i].resource.id(),
                            name: label(nodes[i].resource.as_ref()),
                            reason: reason.clone(),
                        });
                        started_set.insert(i);
                        status[i] = Some(false);
                        results.insert(
                            i,
                            ResourceResult {
                                id: nodes[i].resource.id(),
                                name: label(nodes[i].resource.as_ref()),
                                action: nodes[i].action,
                                outcome: Outcome::Skipped(reason),
                            },
                        );
                        progressed = true;
                        continue;
                    }
                    let ready = nodes[i].deps.iter().all(|&d| status[d] == Some(true));
                    if ready && running.len() < parallelism {
                        started_set.insert(i);
                        let r = nodes[i].resource.clone();
                        let action = nodes[i].action;
                        (opts.progress)(Progress::Started {
                            id: r.id(),
                            name: label(r.as_ref()),
                            action,
                        });
                        let current = plan.observed.get(r.id()).cloned();
                        let outputs = outputs.clone();
                        running.push(Box::pin(async move {
                            let t = Instant::now();
                            let res = run_one(aws, r.as_ref(), action, current, &outputs).await;
                            (i, res, t.elapsed().as_secs_f64())
                        }));
                    }
                }
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some((i, res, secs)) = running.next() => {
                let r = &nodes[i].resource;
                let action = nodes[i].action;
                let outcome = match res {
                    Ok(o) => {
                        status[i] = Some(true);
                        (opts.progress)(Progress::Done { id: r.id(), name: label(r.as_ref()), action, seconds: secs });
                        o
                    }
                    Err(e) => {
                        status[i] = Some(false);
                        let msg = e.to_string();
                        (opts.progress)(Progress::Failed { id: r.id(), name: label(r.as_ref()), action, error: msg.clone() });
                        Outcome::Failed(msg)
                    }
                };
                results.insert(i, ResourceResult { id: r.id(), name: label(r.as_ref()), action, outcome });
            }
            _ = opts.cancel.cancelled(), if !cancel_reported => {
                cancel_reported = true;
                (opts.progress)(Progress::Cancelling { in_flight: running.len() });
            }
        }
    }

    for (i, n) in nodes.iter().enumerate() {
        results.entry(i).or_insert_with(|| ResourceResult {
            id: n.resource.id(),
            name: label(n.resource.as_ref()),
            action: n.action,
            outcome: Outcome::NotStarted,
        });
    }
    let mut all: Vec<ResourceResult> = results.into_values().collect();
    all.extend(kept);
    let final_outputs = outputs.lock().map(|o| o.clone()).unwrap_or_default();
    ApplyReport {
        results: all,
        cancelled: opts.cancel.is_cancelled(),
        seconds: started.elapsed().as_secs_f64(),
        outputs: final_outputs,
    }
}

/// Node indices by the length of the longest chain of nodes that wait on each (longest first;
/// ties keep the plan's order).
fn longest_chain_first(nodes: &[Node]) -> Vec<usize> {
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (j, n) in nodes.iter().enumerate() {
        for &d in &n.deps {
            dependents[d].push(j);
        }
    }
    fn chain(i: usize, dependents: &[Vec<usize>], memo: &mut [Option<usize>]) -> usize {
        if let Some(h) = memo[i] {
            return h;
        }
        let h = 1 + dependents[i]
            .iter()
            .map(|&j| chain(j, dependents, memo))
            .max()
            .unwrap_or(0);
        memo[i] = Some(h);
        h
    }
    let mut memo = vec![None; nodes.len()];
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(chain(i, &dependents, &mut memo)));
    order
}

/// `kind name`, e.g. `ecs service agentbus-dev-dashboard`.
fn label(r: &dyn Resource) -> String {
    format!("{} {}", r.kind(), r.name())
}

fn snapshot(outputs: &Mutex<Outputs>) -> Outputs {
    outputs.lock().map(|o| o.clone()).unwrap_or_default()
}

fn publish(outputs: &Mutex<Outputs>, id: &str, produced: &Observed) {
    if let Ok(mut o) = outputs.lock() {
        let prefix = format!("{id}.");
        o.retain(|k, _| !k.starts_with(&prefix));
        for (k, v) in &produced.outputs {
            o.insert(format!("{id}.{k}"), v.clone());
        }
    }
}

async fn run_one(
    aws: &AwsClients,
    r: &dyn Resource,
    action: Action,
    current: Option<Observed>,
    outputs: &Mutex<Outputs>,
) -> Result<Outcome, EngineError> {
    match action {
        Action::Create => {
            let produced = super::create(r, aws, &snapshot(outputs)).await?;
            publish(outputs, r.id(), &produced);
            Ok(Outcome::Done)
        }
        Action::Update | Action::Replace => {
            let Some(current) = current else {
                let produced = super::create(r, aws, &snapshot(outputs)).await?;
                publish(outputs, r.id(), &produced);
                return Ok(Outcome::Done);
            };
            // Dependencies are applied now: diff again with their real outputs.
            let now = snapshot(outputs);
            let changes = diff(&super::desired_of(r, &now), &current);
            if changes.is_empty() {
                return Ok(Outcome::Unchanged);
            }
            if changes.iter().any(|c| c.forces_replace) {
                r.delete(aws, &current).await?;
                let produced = super::create(r, aws, &now).await?;
                publish(outputs, r.id(), &produced);
            } else {
                let fields: Vec<String> = changes.into_iter().map(|c| c.field).collect();
                let produced = super::update(r, aws, &now, &current, &fields).await?;
                publish(outputs, r.id(), &produced);
            }
            Ok(Outcome::Done)
        }
        Action::Delete => {
            if let Some(current) = current {
                r.delete(aws, &current).await?;
            }
            if let Ok(mut o) = outputs.lock() {
                let prefix = format!("{}.", r.id());
                o.retain(|k, _| !k.starts_with(&prefix));
            }
            Ok(Outcome::Done)
        }
        Action::Keep | Action::NoOp => Ok(Outcome::Unchanged),
    }
}

/// Default time to wait for a service to reach a steady state.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);
