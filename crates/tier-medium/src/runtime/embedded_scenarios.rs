//! The workflow scenarios on the embedded engine, and what only it needs: a restart in the
//! middle of a run.

use std::sync::Arc;

use agents::approval::{Choice, plan_sha256};
use agents::policy::Policy;
use agents::run::{Goal, ProposedCall};
use agents::workflow::{AgentTask, Phase, Workflow};
use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::runner::{AgentFailure, AgentPool, Runner, decide_run, new_run};
use super::scenarios::{Engine, PLAN_BYTES, Script, Seen, Session, admin_request, quick, until};
use super::store::{RunStatus, Store};

struct Scripted(Arc<Script>);

#[async_trait]
impl AgentPool for Scripted {
    async fn perform(&self, _tenant: &str, task: AgentTask) -> Result<Value, AgentFailure> {
        self.0.answer(&task).await
    }
    async fn keep(
        &self,
        _tenant: &str,
        _run_id: &str,
        _tool: &str,
        _arguments: Value,
    ) -> Result<(), AgentFailure> {
        Ok(())
    }
}

pub struct EmbeddedEngine;

struct Embedded {
    store: Arc<Store>,
    stop: CancellationToken,
    wake: Arc<Notify>,
    dir: std::path::PathBuf,
}

async fn store() -> (Arc<Store>, std::path::PathBuf) {
    // One directory per session: a counter, not the clock (tests start in the same millisecond).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("agentbus-scenario-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pool = tier_xs::runtime::embedded::open(&dir).await.unwrap();
    (Arc::new(Store::open(pool).await.unwrap()), dir)
}

fn engine(
    store: Arc<Store>,
    script: Arc<Script>,
    workflow: Workflow,
) -> (CancellationToken, Arc<Notify>) {
    let runner = Runner::new(store, workflow);
    let wake = runner.waker();
    let stop = CancellationToken::new();
    tokio::spawn(runner.run(Arc::new(Scripted(script)), stop.clone()));
    (stop, wake)
}

#[async_trait]
impl Engine for EmbeddedEngine {
    async fn open(&self, script: Arc<Script>, workflow: Workflow) -> Box<dyn Session> {
        let (store, dir) = store().await;
        let (stop, wake) = engine(store.clone(), script, workflow);
        Box::new(Embedded {
            store,
            stop,
            wake,
            dir,
        })
    }
}

#[async_trait]
impl Session for Embedded {
    async fn start(&self) -> String {
        let goal = Goal {
            goal: "greet".into(),
            subtasks: vec![ProposedCall {
                tool: "kv_set".into(),
                arguments: serde_json::Map::new(),
                why: String::new(),
            }],
        };
        let run = new_run("acme", "tok-starter", &goal).unwrap();
        self.store.create(&run).await.unwrap();
        self.wake.notify_one();
        run.run_id
    }

    async fn seen(&self, run_id: &str) -> Seen {
        let run = self.store.get("acme", run_id).await.unwrap().unwrap();
        Seen {
            status: run.status,
            state: Some(run.state),
        }
    }

    async fn decide(
        &self,
        run_id: &str,
        token: &str,
        choice: Choice,
        hash: &str,
    ) -> Result<(), String> {
        let out = decide_run(
            &self.store,
            "acme",
            run_id,
            &admin_request(token, choice, hash),
            &Policy::default(),
        )
        .await
        .map(|_| ());
        self.wake.notify_one();
        out
    }

    async fn cancel(&self, run_id: &str) {
        self.store.cancel("acme", run_id).await.unwrap();
    }

    async fn close(&self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

crate::workflow_scenarios!(EmbeddedEngine);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_approval_survives_a_restart_and_finishes_on_the_new_runner() {
    let (store, dir) = store().await;
    let first = Arc::new(Script::new(true, true));
    let (stop, wake) = engine(store.clone(), first.clone(), quick(60));
    let s = Embedded {
        store: store.clone(),
        stop,
        wake,
        dir,
    };
    let id = s.start().await;
    until(&s, &id, RunStatus::Waiting).await;
    // The server stops; another starts on the same data.
    s.stop.cancel();
    let second = Arc::new(Script::new(true, true));
    let (stop2, wake2) = engine(store.clone(), second.clone(), quick(60));
    assert_eq!(s.seen(&id).await.status, RunStatus::Waiting);
    decide_run(
        &store,
        "acme",
        &id,
        &admin_request("tok-other", Choice::Approve, &plan_sha256(PLAN_BYTES)),
        &Policy::default(),
    )
    .await
    .unwrap();
    wake2.notify_one();
    until(&s, &id, RunStatus::Succeeded).await;
    assert_eq!(
        second.calls(Phase::Execute),
        2,
        "the new runner executed it"
    );
    assert_eq!(second.calls(Phase::Plan), 0, "and did not plan it again");
    stop2.cancel();
    s.close().await;
}
