//! Workflow runs as the server's tools see them: start, read, list, cancel, and decide the
//! approvals they wait on. One trait, two backends: the embedded runner's store
//! ([`Embedded`]) and Step Functions ([`super::sfn::StepFunctions`]).

use std::sync::Arc;

use agents::approval::{Approval, Choice, Pending, Request};
use agents::policy::Policy;
use async_trait::async_trait;
use tier_xs::runtime::{RuntimeError, now_millis};
use tokio::sync::Notify;

use super::runner::decide_run;
use super::store::{HistoryEntry, Run, RunStatus, Store};

/// Why a decision was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The run, its state or the request does not allow it (said in words).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Workflow runs, tenant by tenant.
#[async_trait]
pub trait Workflows: Send + Sync {
    /// Starts `run` (made by [`super::runner::new_run`]); the run as it is now.
    async fn start(&self, run: Run) -> Result<Run, RuntimeError>;
    /// A run of `tenant`, as it stands now.
    async fn get(&self, tenant: &str, run_id: &str) -> Result<Option<Run>, RuntimeError>;
    /// Every step of a run of `tenant`, in order.
    async fn history(&self, tenant: &str, run_id: &str) -> Result<Vec<HistoryEntry>, RuntimeError>;
    /// A tenant's runs, newest first, a page at a time (the cursor is the last run's id).
    async fn list(
        &self,
        tenant: &str,
        status: Option<RunStatus>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Run>, Option<String>), RuntimeError>;
    /// Cancels a run of `tenant` that has not ended; the run afterwards (`None`: no such run).
    async fn cancel(
        &self,
        tenant: &str,
        run_id: &str,
        by: &str,
    ) -> Result<Option<Run>, RuntimeError>;
    /// A tenant's runs waiting for a human, oldest first, each with its `pending` request.
    async fn waiting(&self, tenant: &str) -> Result<Vec<Run>, RuntimeError>;
    /// Decides the approval a run of `tenant` waits on, by the rules of
    /// [`agents::approval::decide`] and the tenant's policy.
    async fn decide(
        &self,
        tenant: &str,
        run_id: &str,
        request: &Request,
        policy: &Policy,
    ) -> Result<Approval, DecideError>;
}

/// The pending request of a waiting run, checked and decided: what both backends do first.
pub fn judge(run: &Run, request: &Request, policy: &Policy) -> Result<Approval, DecideError> {
    if run.status != RunStatus::Waiting {
        return Err(DecideError::Refused(format!(
            "run {} is not waiting for a decision (it is {})",
            run.run_id,
            run.status.as_str()
        )));
    }
    let pending: Pending = serde_json::from_value(run.state["pending"].clone()).map_err(|e| {
        DecideError::Refused(format!("run {} has no pending approval: {e}", run.run_id))
    })?;
    agents::approval::decide(&pending, request, policy, now_millis() / 1000)
        .map_err(|e| DecideError::Refused(e.to_string()))
}

/// What a decision did, in a word: `approved` or `rejected`.
pub fn verb(choice: Choice) -> &'static str {
    match choice {
        Choice::Approve => "approved",
        Choice::Reject => "rejected",
    }
}

/// The history line a decision leaves.
pub fn decision_note(approval: &Approval) -> (&'static str, String) {
    (
        "decided",
        format!(
            "{} by token {} for plan {}: {}",
            verb(approval.choice),
            approval.decided_by,
            approval.plan_sha256,
            approval.reason
        ),
    )
}

/// The embedded backend: the runner's store, and the runner woken when a run changes.
pub struct Embedded {
    pub store: Arc<Store>,
    pub wake: Arc<Notify>,
}

#[async_trait]
impl Workflows for Embedded {
    async fn start(&self, run: Run) -> Result<Run, RuntimeError> {
        self.store.create(&run).await?;
        self.wake.notify_one();
        Ok(run)
    }

    async fn get(&self, tenant: &str, run_id: &str) -> Result<Option<Run>, RuntimeError> {
        self.store.get(tenant, run_id).await
    }

    async fn history(&self, tenant: &str, run_id: &str) -> Result<Vec<HistoryEntry>, RuntimeError> {
        match self.store.get(tenant, run_id).await? {
            Some(r) => self.store.history(&r.run_id).await,
            None => Ok(Vec::new()),
        }
    }

    async fn list(
        &self,
        tenant: &str,
        status: Option<RunStatus>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Run>, Option<String>), RuntimeError> {
        self.store.list(tenant, status, cursor, limit).await
    }

    async fn cancel(
        &self,
        tenant: &str,
        run_id: &str,
        by: &str,
    ) -> Result<Option<Run>, RuntimeError> {
        let Some(before) = self.store.get(tenant, run_id).await? else {
            return Ok(None);
        };
        let after = self.store.cancel(tenant, run_id).await?;
        if let Some(after) = &after
            && !before.status.is_final()
            && after.status == RunStatus::Cancelled
        {
            self.store
                .note(
                    &after.run_id,
                    &after.step,
                    "cancelled",
                    &format!("by token {by}"),
                )
                .await?;
        }
        Ok(after)
    }

    async fn waiting(&self, tenant: &str) -> Result<Vec<Run>, RuntimeError> {
        self.store.waiting(tenant).await
    }

    async fn decide(
        &self,
        tenant: &str,
        run_id: &str,
        request: &Request,
        policy: &Policy,
    ) -> Result<Approval, DecideError> {
        let approval = decide_run(&self.store, tenant, run_id, request, policy)
            .await
            .map_err(DecideError::Refused)?;
        self.wake.notify_one();
        Ok(approval)
    }
}
