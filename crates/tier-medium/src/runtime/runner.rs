//! The embedded engine of the lanes workflow: it walks [`Workflow`] for every running run,
//! one step at a time, writing each step's answer before the next starts. Agents are reached
//! through an [`AgentPool`]: in process on embedded storage ([`LocalAgents`]), scripted in
//! the scenario tests.
//!
//! It keeps the same rules as the compiled ASL (`agents::asl`): per-step timeouts, retries
//! with exponential backoff and full jitter for failures worth retrying, every ending through
//! the sweeper, a human approval that waits durably and expires.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agents::approval::{Approval, Choice, Pending};
use agents::lane::Lane;
use agents::policy::Policy;
use agents::run::{Goal, Planned, Reviewed, run_key};
use agents::workflow::{AGENT_FAILED, AgentStep, AgentTask, Outcome, REJECTED, Workflow};
use async_trait::async_trait;
use serde_json::{Value, json};
use tier_xs::server::AppState;
use tier_xs::server::auth::{Identity, Role};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::store::{Run, RunStatus, Store};
use tier_xs::runtime::now_millis;

/// The states of the pipeline besides the agent steps (the same names as in the ASL).
pub mod steps {
    pub const START: &str = "Start";
    pub const GATE: &str = "ApprovalGate";
    pub const AWAIT: &str = "AwaitApproval";
    pub const RECORD_DECISION: &str = "RecordDecision";
    pub const EXECUTE: &str = "Execute";
    pub const DONE: &str = "Done";
}

pub use agents::worker::POLICY_KEY;

/// Why an agent step failed, as `SendTaskFailure` would say it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentFailure {
    /// `agentbus.AgentFailed` (tried again) or `agentbus.Refused` (not).
    pub error: String,
    pub cause: String,
}

impl AgentFailure {
    pub fn retryable(&self) -> bool {
        self.error == AGENT_FAILED
    }
}

/// Where the runner's agents are.
#[async_trait]
pub trait AgentPool: Send + Sync {
    /// One agent step of a run of `tenant`.
    async fn perform(&self, tenant: &str, task: AgentTask) -> Result<Value, AgentFailure>;
    /// One of the run's own records (its goal artifact, a decision on the timeline).
    async fn keep(
        &self,
        tenant: &str,
        run_id: &str,
        tool: &str,
        arguments: Value,
    ) -> Result<(), AgentFailure>;
}

/// The agents in this process, reaching the workspace through its own MCP tools as the run's
/// tenant.
pub struct LocalAgents {
    server: Arc<AppState>,
    /// The model the agents may consult (`AGENTBUS_MODEL`), or why it could not be set up.
    model: Result<Option<Arc<agents::model::Model>>, String>,
}

impl LocalAgents {
    pub fn new(
        server: Arc<AppState>,
        model: Result<Option<Arc<agents::model::Model>>, String>,
    ) -> Self {
        LocalAgents { server, model }
    }

    async fn client(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<agents::tools::McpClient, AgentFailure> {
        let tenant = tier_xs::runtime::Tenant::new(tenant).map_err(|e| refused(e.to_string()))?;
        let identity = Identity::agent(format!("agent:{run_id}"), tenant, Role::User, run_id);
        let client = tier_xs::server::in_process_client(self.server.clone(), identity)
            .await
            .map_err(|e| AgentFailure {
                error: AGENT_FAILED.into(),
                cause: format!("cannot reach the workspace's tools: {e}"),
            })?;
        Ok(agents::tools::McpClient(client))
    }
}

fn refused(cause: String) -> AgentFailure {
    AgentFailure {
        error: agents::workflow::REFUSED.into(),
        cause,
    }
}

#[async_trait]
impl AgentPool for LocalAgents {
    async fn perform(&self, tenant: &str, task: AgentTask) -> Result<Value, AgentFailure> {
        let model = match &self.model {
            Ok(m) => m.clone(),
            Err(e) => {
                return Err(refused(format!(
                    "the model configuration is not usable: {e}"
                )));
            }
        };
        let client = self.client(tenant, &task.run_id).await?;
        let policy = agents::worker::workspace_policy(&client)
            .await
            .map_err(refused)?;
        let out = agents::roles::perform(
            &task,
            &client,
            &policy,
            model.as_deref(),
            time::OffsetDateTime::now_utc(),
        )
        .await;
        let _ = client.0.cancel().await;
        out.map_err(|e| AgentFailure {
            error: e.error_name().into(),
            cause: e.to_string(),
        })
    }

    async fn keep(
        &self,
        tenant: &str,
        run_id: &str,
        tool: &str,
        arguments: Value,
    ) -> Result<(), AgentFailure> {
        use agents::tools::Tools;
        let client = self.client(tenant, run_id).await?;
        let out = client.call(tool, arguments).await;
        let _ = client.0.cancel().await;
        out.map(|_| ()).map_err(|e| refused(e.to_string()))
    }
}

/// The engine.
pub struct Runner {
    store: Arc<Store>,
    workflow: Workflow,
    wake: Arc<Notify>,
}

impl Runner {
    pub fn new(store: Arc<Store>, workflow: Workflow) -> Runner {
        Runner {
            store,
            workflow,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes the runner (a run was started or decided).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Advances runs until `stop`: those running (also after a restart), and waits that
    /// expired.
    pub async fn run(self, pool: Arc<dyn AgentPool>, stop: CancellationToken) {
        let this = Arc::new(self);
        let active: Arc<Mutex<HashSet<String>>> = Arc::default();
        loop {
            if let Err(e) = this.expire_waits().await {
                tracing::warn!("workflow runner: {e}");
            }
            match this.store.runnable().await {
                Ok(runs) => {
                    for run in runs {
                        let fresh = active
                            .lock()
                            .map(|mut a| a.insert(run.run_id.clone()))
                            .unwrap_or(false);
                        if !fresh {
                            continue;
                        }
                        let (this, pool, active, stop) =
                            (this.clone(), pool.clone(), active.clone(), stop.clone());
                        tokio::spawn(async move {
                            let id = run.run_id.clone();
                            tokio::select! {
                                r = this.advance(run, pool.as_ref()) => if let Err(e) = r {
                                    tracing::warn!("workflow run {id}: {e}");
                                },
                                _ = stop.cancelled() => {}
                            }
                            if let Ok(mut a) = active.lock() {
                                a.remove(&id);
                            }
                            this.wake.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!("workflow runner: {e}"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = this.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn expire_waits(&self) -> Result<(), tier_xs::runtime::RuntimeError> {
        for mut run in self.store.expired_waits(now_millis() / 1000).await? {
            set(
                &mut run.state,
                "error",
                json!({"Error": "States.Timeout", "Cause": "no one decided on the approval in time"}),
            );
            outcome(&mut run, Outcome::TimedOut, &self.workflow);
            run.wait_until = None;
            if self.store.advance(&run, RunStatus::Waiting).await? {
                self.store
                    .note(
                        &run.run_id,
                        steps::AWAIT,
                        "timed_out",
                        "the approval request expired",
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Walks one run from its current step until it waits, ends or is cancelled.
    async fn advance(
        &self,
        mut run: Run,
        pool: &dyn AgentPool,
    ) -> Result<(), tier_xs::runtime::RuntimeError> {
        let w = &self.workflow;
        loop {
            let step = run.step.clone();
            match step.as_str() {
                steps::START => {
                    let key = run_key(&run.run_id, "goal.json");
                    let goal = serde_json::to_string_pretty(&run.goal).unwrap_or_default();
                    let kept = pool
                        .keep(&run.tenant, &run.run_id, "artifacts_put", json!({"key": key, "content": goal, "content_type": "application/json"}))
                        .await;
                    match kept {
                        Ok(()) => {
                            set(&mut run.state, "goal_ref", json!(key));
                            run.step = w.plan.state.into();
                        }
                        Err(f) => fail(&mut run, &f, w),
                    }
                }
                s if s == w.plan.state => {
                    self.agent_step(&mut run, &w.plan, w.record.state, pool)
                        .await?
                }
                s if s == w.record.state => {
                    self.agent_step(&mut run, &w.record, w.review.state, pool)
                        .await?
                }
                s if s == w.review.state => {
                    self.agent_step(&mut run, &w.review, steps::GATE, pool)
                        .await?
                }
                steps::GATE => {
                    let review: Option<Reviewed> =
                        serde_json::from_value(run.state["review"].clone()).ok();
                    let plan: Option<Planned> =
                        serde_json::from_value(run.state["plan"].clone()).ok();
                    match (review, plan) {
                        (Some(r), _) if !r.approved => outcome(&mut run, Outcome::Blocked, w),
                        (Some(r), Some(_)) if r.needs_human => {
                            let now = now_millis() / 1000;
                            let pending = Pending {
                                run_id: run.run_id.clone(),
                                plan_sha256: r.plan_sha256.clone(),
                                lane: Lane::Execute,
                                started_by: run.started_by.clone(),
                                requested_at: now,
                                expires_at: now + u64::from(w.approval_timeout_seconds),
                            };
                            set(
                                &mut run.state,
                                "pending",
                                serde_json::to_value(&pending).unwrap_or_default(),
                            );
                            run.status = RunStatus::Waiting;
                            run.step = steps::AWAIT.into();
                            run.wait_until = Some(pending.expires_at);
                        }
                        (Some(r), Some(_)) => {
                            set(
                                &mut run.state,
                                "approval",
                                json!({"choice": "approve", "automatic": true, "plan_sha256": r.plan_sha256}),
                            );
                            run.step = steps::EXECUTE.into();
                        }
                        _ => fail(
                            &mut run,
                            &refused("the review or the plan is missing from the run".into()),
                            w,
                        ),
                    }
                }
                steps::RECORD_DECISION => {
                    let decision: Option<Approval> =
                        serde_json::from_value(run.state["decision"].clone()).ok();
                    if let Some(d) = decision {
                        let verb = if d.choice == Choice::Approve {
                            "approved"
                        } else {
                            "rejected"
                        };
                        let record = json!({
                            "agent": "approver",
                            "task_id": run.run_id,
                            "action": verb,
                            "summary": format!("Token {} {verb} plan {} for {}: {}", d.decided_by, &d.plan_sha256[..12.min(d.plan_sha256.len())], d.lane, d.reason),
                            "refs": {"plan_sha256": [d.plan_sha256]},
                        });
                        if let Err(f) = pool
                            .keep(&run.tenant, &run.run_id, "timeline_append", record)
                            .await
                        {
                            tracing::warn!(
                                "run {}: the decision was not recorded on the timeline: {}",
                                run.run_id,
                                f.cause
                            );
                        }
                        if d.choice == Choice::Approve {
                            set(
                                &mut run.state,
                                "approval",
                                serde_json::to_value(&d).unwrap_or_default(),
                            );
                            run.step = steps::EXECUTE.into();
                        } else {
                            set(
                                &mut run.state,
                                "error",
                                json!({"Error": REJECTED, "Cause": d.reason}),
                            );
                            outcome(&mut run, Outcome::Rejected, w);
                        }
                    } else {
                        fail(
                            &mut run,
                            &refused("the decision is missing from the run".into()),
                            w,
                        );
                    }
                }
                steps::EXECUTE => self.execute(&mut run, pool).await?,
                s if s == w.sweep.state => {
                    let status = match run.state["outcome"]["status"].as_str() {
                        Some("succeeded") => RunStatus::Succeeded,
                        Some("blocked") => RunStatus::Blocked,
                        Some("rejected") => RunStatus::Rejected,
                        Some("timed_out") => RunStatus::TimedOut,
                        _ => RunStatus::Failed,
                    };
                    match self
                        .call_agent(&run, &w.sweep, run.state.clone(), pool)
                        .await
                    {
                        Ok(out) => set(&mut run.state, "sweep", out),
                        Err(f) => {
                            run.error =
                                Some(format!("the sweeper could not record the run: {}", f.cause));
                        }
                    }
                    run.status = if run.error.is_some() && status == RunStatus::Succeeded {
                        RunStatus::Failed
                    } else {
                        status
                    };
                    run.step = steps::DONE.into();
                }
                _ => {
                    run.status = RunStatus::Failed;
                    run.error = Some(format!("unknown step {step}"));
                    run.step = steps::DONE.into();
                }
            }
            if !self.store.advance(&run, RunStatus::Running).await? {
                // Cancelled (or decided) meanwhile: what this step did is not carried on.
                self.store
                    .note(
                        &run.run_id,
                        &step,
                        "stopped",
                        "the run changed while this step ran",
                    )
                    .await?;
                return Ok(());
            }
            if run.step != step || run.status != RunStatus::Running {
                let event = if run.status == RunStatus::Waiting {
                    "waiting"
                } else {
                    "done"
                };
                self.store
                    .note(
                        &run.run_id,
                        &step,
                        event,
                        &format!("next: {} ({})", run.step, run.status.as_str()),
                    )
                    .await?;
            }
            if run.status != RunStatus::Running {
                return Ok(());
            }
        }
    }

    /// An agent step: its answer goes to `step.result`, then `next`; a failure (after its
    /// retries) sends the run to the sweeper as failed.
    async fn agent_step(
        &self,
        run: &mut Run,
        step: &AgentStep,
        next: &str,
        pool: &dyn AgentPool,
    ) -> Result<(), tier_xs::runtime::RuntimeError> {
        match self.call_agent(run, step, run.state.clone(), pool).await {
            Ok(out) => {
                let field = step.result.trim_start_matches("$.");
                set(&mut run.state, field, out);
                run.step = next.into();
            }
            Err(f) => fail(run, &f, &self.workflow),
        }
        Ok(())
    }

    /// Exactly the approved subtasks, a few at a time; the first failure fails the run.
    async fn execute(
        &self,
        run: &mut Run,
        pool: &dyn AgentPool,
    ) -> Result<(), tier_xs::runtime::RuntimeError> {
        let w = &self.workflow;
        let subtasks: Vec<Value> = run.state["plan"]["subtasks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let limit = w.execute_concurrency.max(1) as usize;
        let mut results = vec![Value::Null; subtasks.len()];
        let mut failure = None;
        for (chunk_no, chunk) in subtasks.chunks(limit).enumerate() {
            let calls = chunk.iter().map(|s| {
                let item = json!({
                    "run_id": run.run_id,
                    "tenant": run.tenant,
                    "plan": run.state["plan"],
                    "approval": run.state["approval"],
                    "subtask": s,
                });
                self.call_agent(run, &w.execute, item, pool)
            });
            for (i, r) in futures::future::join_all(calls)
                .await
                .into_iter()
                .enumerate()
            {
                match r {
                    Ok(v) => results[chunk_no * limit + i] = v,
                    Err(f) => failure = failure.or(Some(f)),
                }
            }
            if failure.is_some() {
                break;
            }
        }
        match failure {
            Some(f) => fail(run, &f, w),
            // Each result is an artifact (`runs/RUN/results/ID.json`); the state keeps none,
            // as on Step Functions.
            None => outcome(run, Outcome::Succeeded, w),
        }
        Ok(())
    }

    /// One agent call with its timeout and retries (exponential backoff, full jitter).
    async fn call_agent(
        &self,
        run: &Run,
        step: &AgentStep,
        input: Value,
        pool: &dyn AgentPool,
    ) -> Result<Value, AgentFailure> {
        let mut attempt = 0;
        loop {
            let task = AgentTask {
                task_token: format!("{}:{}:{attempt}", run.run_id, step.state),
                run_id: run.run_id.clone(),
                role: step.role,
                phase: step.phase,
                lane: step.lane,
                input: input.clone(),
            };
            let limit = Duration::from_secs(u64::from(step.timeout_seconds));
            let result = match tokio::time::timeout(limit, pool.perform(&run.tenant, task)).await {
                Ok(r) => r,
                Err(_) => Err(AgentFailure {
                    error: "States.Timeout".into(),
                    cause: format!(
                        "no answer from the {} in {}s",
                        step.role.as_str(),
                        step.timeout_seconds
                    ),
                }),
            };
            let failure = match result {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            let again = (failure.retryable() || failure.error == "States.Timeout")
                && attempt < step.retry.max_attempts;
            if !again {
                return Err(failure);
            }
            // The retry goes ahead even if its history line cannot be written.
            if let Err(e) = self
                .store
                .note(
                    &run.run_id,
                    step.state,
                    "retrying",
                    &format!("{}: {}", failure.error, failure.cause),
                )
                .await
            {
                tracing::warn!("run {}: {e}", run.run_id);
            }
            let cap = f64::from(step.retry.interval_seconds)
                * step.retry.backoff_rate.powi(attempt as i32);
            let cap = cap.min(f64::from(step.retry.max_delay_seconds));
            tokio::time::sleep(Duration::from_secs_f64(cap * jitter())).await;
            attempt += 1;
        }
    }
}

/// A fraction in [0, 1): the full jitter of a retry's delay.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// Sets `field` in a run's state (making it an object if it is not).
pub(crate) fn set(state: &mut Value, field: &str, v: Value) {
    if !state.is_object() {
        *state = json!({});
    }
    if let Some(o) = state.as_object_mut() {
        o.insert(field.to_string(), v);
    }
}

/// The run ends with `o`: to the sweeper.
fn outcome(run: &mut Run, o: Outcome, w: &Workflow) {
    set(&mut run.state, "outcome", json!({"status": o.as_str()}));
    run.status = RunStatus::Running;
    run.step = w.sweep.state.into();
}

/// A step failed for good: the run goes to the sweeper as failed, with why.
fn fail(run: &mut Run, f: &AgentFailure, w: &Workflow) {
    set(
        &mut run.state,
        "error",
        json!({"Error": f.error, "Cause": f.cause}),
    );
    run.error = Some(f.cause.clone());
    outcome(run, Outcome::Failed, w);
}

/// A human decision on a waiting run of `tenant`: checked (admin, four-eyes, the exact plan's
/// hash, the request's expiry), written, and the run goes on (to execute, or to the sweeper
/// when rejected). Wake the runner afterwards.
pub async fn decide_run(
    store: &Store,
    tenant: &str,
    run_id: &str,
    request: &agents::approval::Request,
    policy: &Policy,
) -> Result<Approval, String> {
    let mut run = store
        .get(tenant, run_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no run {run_id} in your tenant"))?;
    if run.status != RunStatus::Waiting {
        return Err(format!(
            "run {} is not waiting for a decision (it is {})",
            run.run_id,
            run.status.as_str()
        ));
    }
    let pending: Pending = serde_json::from_value(run.state["pending"].clone())
        .map_err(|e| format!("run {} has no pending approval: {e}", run.run_id))?;
    let approval = agents::approval::decide(&pending, request, policy, now_millis() / 1000)
        .map_err(|e| e.to_string())?;
    if let Some(o) = run.state.as_object_mut() {
        o.insert("decision".into(), json!(approval));
        o.remove("pending");
    }
    run.status = RunStatus::Running;
    run.step = steps::RECORD_DECISION.into();
    run.wait_until = None;
    if !store
        .advance(&run, RunStatus::Waiting)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!("run {} stopped waiting meanwhile", run.run_id));
    }
    let verb = if approval.choice == Choice::Approve {
        "approved"
    } else {
        "rejected"
    };
    store
        .note(
            &run.run_id,
            steps::AWAIT,
            "decided",
            &format!(
                "{verb} by token {}: {}",
                approval.decided_by, approval.reason
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(approval)
}

/// Starts a run: the goal is kept as its first artifact by the runner.
pub fn new_run(
    tenant: &str,
    started_by: &str,
    goal: &Goal,
) -> Result<Run, tier_xs::runtime::RuntimeError> {
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).map_err(|e| tier_xs::runtime::RuntimeError::Backend {
        op: "run id",
        message: e.to_string(),
    })?;
    let now = now_millis();
    Ok(Run {
        // The time first, so ids sort as runs were started (the runs table lists by id).
        run_id: format!("run-{now:012x}{}", hex::encode(id)),
        tenant: tenant.to_string(),
        started_by: started_by.to_string(),
        goal: serde_json::to_value(goal).unwrap_or_default(),
        status: RunStatus::Running,
        step: steps::START.into(),
        state: json!({"run_id": "", "tenant": tenant, "started_by": started_by}),
        error: None,
        created_at: now,
        updated_at: now,
        wait_until: None,
    }
    .with_id_in_state())
}

impl Run {
    fn with_id_in_state(mut self) -> Run {
        let id = self.run_id.clone();
        set(&mut self.state, "run_id", json!(id));
        self
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn run_ids_sort_as_the_runs_were_started() {
        let goal = Goal {
            goal: "g".into(),
            subtasks: Vec::new(),
        };
        let first = new_run("acme", "tok", &goal).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_run("acme", "tok", &goal).unwrap();
        assert!(
            first.run_id < second.run_id,
            "{} {}",
            first.run_id,
            second.run_id
        );
        assert!(first.run_id.len() <= 80, "a valid execution name");
    }
}
