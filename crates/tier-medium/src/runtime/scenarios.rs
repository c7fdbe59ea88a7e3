//! The workflow scenarios, written once for every engine: the embedded runner (this crate's
//! tests) and the compiled ASL on Step Functions (the end-to-end tests, on moto's
//! interpreter). Agents follow a [`Script`]; an [`Engine`] runs them.
//!
//! Automatic approval, human approve (with four-eyes and a forged plan hash refused), human
//! reject, approval timeout, a blocked plan, an agent failing then succeeding on retry, a
//! step that never answers, a cancel.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed check panics

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agents::approval::{Choice, plan_sha256};
use agents::lane::Lane;
use agents::workflow::{AGENT_FAILED, AgentTask, Phase, Workflow};
use async_trait::async_trait;
use serde_json::{Value, json};

use super::runner::AgentFailure;
use super::store::RunStatus;

/// The bytes whose hash the scripted plan names.
pub const PLAN_BYTES: &[u8] = b"[subtasks]";

/// Agents that answer as the scenario says.
#[derive(Default)]
pub struct Script {
    pub approved: bool,
    pub needs_human: bool,
    /// Fail this many attempts of a phase first (a failure worth retrying).
    pub failures: Mutex<HashMap<Phase, u32>>,
    /// A phase that never answers.
    pub hang: Option<Phase>,
    calls: Mutex<Vec<Phase>>,
}

impl Script {
    pub fn new(approved: bool, needs_human: bool) -> Script {
        Script {
            approved,
            needs_human,
            ..Script::default()
        }
    }

    /// How often a phase was asked for.
    pub fn calls(&self, p: Phase) -> usize {
        self.calls
            .lock()
            .map(|c| c.iter().filter(|x| **x == p).count())
            .unwrap_or(0)
    }

    /// The answer to one agent task (never returns for the phase that hangs).
    pub async fn answer(&self, task: &AgentTask) -> Result<Value, AgentFailure> {
        if let Ok(mut c) = self.calls.lock() {
            c.push(task.phase);
        }
        if self.hang == Some(task.phase) {
            std::future::pending::<()>().await;
        }
        let fail_now = self
            .failures
            .lock()
            .map(|mut f| match f.get_mut(&task.phase) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            })
            .unwrap_or(false);
        if fail_now {
            return Err(AgentFailure {
                error: AGENT_FAILED.into(),
                cause: "the model endpoint answered 503".into(),
            });
        }
        let run = &task.run_id;
        Ok(match task.phase {
            Phase::Plan => json!({
                "plan_ref": format!("runs/{run}/plan.md"), "subtasks_ref": format!("runs/{run}/subtasks.json"),
                "evidence_ref": format!("runs/{run}/evidence.json"), "plan_sha256": plan_sha256(PLAN_BYTES),
                "subtasks": [{"id": "s1", "tool": "kv_set"}, {"id": "s2", "tool": "kv_get"}], "cost_delta_monthly": 0.0
            }),
            Phase::Record => json!({"record_id": "t1"}),
            Phase::Review => json!({
                "approved": self.approved, "needs_human": self.needs_human,
                "lane": if self.approved { "execute" } else { "dry_run" },
                "verdict_ref": format!("runs/{run}/verdict.json"), "plan_sha256": plan_sha256(PLAN_BYTES)
            }),
            Phase::Execute => {
                if task.lane != Lane::Execute {
                    return Err(AgentFailure {
                        error: agents::workflow::REFUSED.into(),
                        cause: format!("execute asked in lane {}", task.lane),
                    });
                }
                json!({"id": task.input["subtask"]["id"], "tool": task.input["subtask"]["tool"], "result_ref": "r"})
            }
            Phase::Cleanup => {
                json!({"retrospective_ref": format!("runs/{run}/retrospective.md"), "compacted": 0})
            }
        })
    }
}

/// A run as an engine reports it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub status: RunStatus,
    /// The run's state (embedded) or the execution's output (Step Functions), when known.
    pub state: Option<Value>,
}

/// One engine, with agents that follow a script.
#[async_trait]
pub trait Engine: Send + Sync {
    async fn open(&self, script: Arc<Script>, workflow: Workflow) -> Box<dyn Session>;
}

/// Runs of one engine, as a user of the workflow tools sees them.
#[async_trait]
pub trait Session: Send + Sync {
    /// Starts a run; the starting token is `tok-starter`, of tenant `acme`.
    async fn start(&self) -> String;
    async fn seen(&self, run_id: &str) -> Seen;
    /// A decision by admin `token` on the plan with `hash`.
    async fn decide(
        &self,
        run_id: &str,
        token: &str,
        choice: Choice,
        hash: &str,
    ) -> Result<(), String>;
    async fn cancel(&self, run_id: &str);
    async fn close(&self);
}

/// Waits (on the condition, up to a minute) for the run to reach `status`.
pub async fn until(s: &dyn Session, run_id: &str, status: RunStatus) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = s.seen(run_id).await;
        if seen.status == status {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} is {:?}, not {status:?}: {:?}",
            seen.status,
            seen.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A decision by admin `token` on the plan with `hash`, as the scenarios make them.
pub fn admin_request(token: &str, choice: Choice, hash: &str) -> agents::approval::Request {
    agents::approval::Request {
        who: agents::approval::Decider {
            token_id: token.into(),
            is_admin: true,
        },
        choice,
        plan_sha256: hash.into(),
        reason: "reviewed".into(),
    }
}

/// Short waits for the scenarios: answers within 3 s, heartbeats every 2 s.
pub fn quick(approval_seconds: u32) -> Workflow {
    Workflow::lanes().with_timeouts(3, 2, approval_seconds)
}

pub async fn a_run_the_policy_approves_goes_through_without_a_human(e: &dyn Engine) {
    let script = Arc::new(Script::new(true, false));
    let s = e.open(script.clone(), quick(60)).await;
    let id = s.start().await;
    let seen = until(s.as_ref(), &id, RunStatus::Succeeded).await;
    if let Some(state) = seen.state {
        assert_eq!(state["approval"]["automatic"], true, "{state}");
        assert!(
            state.get("execute").is_none(),
            "results are artifacts, not state: {state}"
        );
    }
    assert_eq!(script.calls(Phase::Execute), 2);
    assert_eq!(script.calls(Phase::Cleanup), 1);
    s.close().await;
}

pub async fn a_human_approval_of_the_exact_plan_lets_execute_run(e: &dyn Engine) {
    let script = Arc::new(Script::new(true, true));
    let s = e.open(script.clone(), quick(60)).await;
    let id = s.start().await;
    until(s.as_ref(), &id, RunStatus::Waiting).await;
    assert_eq!(
        script.calls(Phase::Execute),
        0,
        "nothing executes before the approval"
    );
    let right = plan_sha256(PLAN_BYTES);
    let e1 = s
        .decide(&id, "tok-starter", Choice::Approve, &right)
        .await
        .unwrap_err();
    assert!(e1.contains("four-eyes"), "{e1}");
    let e2 = s
        .decide(
            &id,
            "tok-other",
            Choice::Approve,
            &plan_sha256(b"another plan"),
        )
        .await
        .unwrap_err();
    assert!(e2.contains("waits on plan"), "{e2}");
    assert_eq!(s.seen(&id).await.status, RunStatus::Waiting);
    s.decide(&id, "tok-other", Choice::Approve, &right)
        .await
        .unwrap();
    let seen = until(s.as_ref(), &id, RunStatus::Succeeded).await;
    if let Some(state) = seen.state {
        assert_eq!(state["approval"]["decided_by"], "tok-other", "{state}");
    }
    assert_eq!(script.calls(Phase::Execute), 2);
    s.close().await;
}

pub async fn a_rejected_run_never_executes_and_is_swept(e: &dyn Engine) {
    let script = Arc::new(Script::new(true, true));
    let s = e.open(script.clone(), quick(60)).await;
    let id = s.start().await;
    until(s.as_ref(), &id, RunStatus::Waiting).await;
    s.decide(&id, "tok-starter", Choice::Reject, &plan_sha256(PLAN_BYTES))
        .await
        .unwrap();
    until(s.as_ref(), &id, RunStatus::Rejected).await;
    assert_eq!(script.calls(Phase::Execute), 0);
    assert_eq!(script.calls(Phase::Cleanup), 1);
    s.close().await;
}

pub async fn an_approval_no_one_gives_in_time_times_the_run_out(e: &dyn Engine) {
    let script = Arc::new(Script::new(true, true));
    let s = e.open(script.clone(), quick(2)).await;
    let id = s.start().await;
    until(s.as_ref(), &id, RunStatus::TimedOut).await;
    assert_eq!(script.calls(Phase::Execute), 0);
    assert_eq!(script.calls(Phase::Cleanup), 1);
    s.close().await;
}

pub async fn a_blocked_plan_is_swept_and_waits_for_no_one(e: &dyn Engine) {
    let script = Arc::new(Script::new(false, false));
    let s = e.open(script.clone(), quick(60)).await;
    let id = s.start().await;
    until(s.as_ref(), &id, RunStatus::Blocked).await;
    assert_eq!(script.calls(Phase::Execute), 0);
    assert_eq!(script.calls(Phase::Cleanup), 1);
    s.close().await;
}

pub async fn an_agent_that_fails_once_is_retried_and_the_run_succeeds(e: &dyn Engine) {
    let script = Arc::new(Script::new(true, false));
    if let Ok(mut f) = script.failures.lock() {
        f.insert(Phase::Plan, 1);
    }
    let s = e.open(script.clone(), quick(60)).await;
    let id = s.start().await;
    until(s.as_ref(), &id, RunStatus::Succeeded).await;
    assert_eq!(script.calls(Phase::Plan), 2);
    s.close().await;
}

pub async fn a_step_that_never_answers_fails_the_run_after_its_retries(e: &dyn Engine) {
    let script = Arc::new(Script {
        hang: Some(Phase::Review),
        ..Script::new(true, false)
    });
    let s = e.open(script.clone(), quick(60)).await;
    let id = s.start().await;
    until(s.as_ref(), &id, RunStatus::Failed).await;
    assert_eq!(
        script.calls(Phase::Review),
        3,
        "the first attempt and two retries"
    );
    assert_eq!(script.calls(Phase::Execute), 0);
    assert_eq!(script.calls(Phase::Cleanup), 1, "a failed run is swept too");
    s.close().await;
}

pub async fn a_cancelled_run_stops_where_it_is(e: &dyn Engine) {
    let script = Arc::new(Script::new(true, true));
    let s = e.open(script.clone(), quick(60)).await;
    let id = s.start().await;
    until(s.as_ref(), &id, RunStatus::Waiting).await;
    s.cancel(&id).await;
    until(s.as_ref(), &id, RunStatus::Cancelled).await;
    assert!(
        s.decide(&id, "tok-other", Choice::Approve, &plan_sha256(PLAN_BYTES))
            .await
            .is_err()
    );
    assert_eq!(script.calls(Phase::Execute), 0);
    s.close().await;
}

/// Every scenario as a test of `engine` (an expression building one).
#[macro_export]
macro_rules! workflow_scenarios {
    ($engine:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_run_the_policy_approves_goes_through_without_a_human() {
            $crate::runtime::scenarios::a_run_the_policy_approves_goes_through_without_a_human(
                &$engine,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_human_approval_of_the_exact_plan_lets_execute_run() {
            $crate::runtime::scenarios::a_human_approval_of_the_exact_plan_lets_execute_run(
                &$engine,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_rejected_run_never_executes_and_is_swept() {
            $crate::runtime::scenarios::a_rejected_run_never_executes_and_is_swept(&$engine).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_approval_no_one_gives_in_time_times_the_run_out() {
            $crate::runtime::scenarios::an_approval_no_one_gives_in_time_times_the_run_out(&$engine)
                .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_blocked_plan_is_swept_and_waits_for_no_one() {
            $crate::runtime::scenarios::a_blocked_plan_is_swept_and_waits_for_no_one(&$engine).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_agent_that_fails_once_is_retried_and_the_run_succeeds() {
            $crate::runtime::scenarios::an_agent_that_fails_once_is_retried_and_the_run_succeeds(
                &$engine,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_step_that_never_answers_fails_the_run_after_its_retries() {
            $crate::runtime::scenarios::a_step_that_never_answers_fails_the_run_after_its_retries(
                &$engine,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_cancelled_run_stops_where_it_is() {
            $crate::runtime::scenarios::a_cancelled_run_stops_where_it_is(&$engine).await
        }
    };
}
