//! Workflow runs and their history, in the embedded database: every step's result is written
//! before the next starts, so a restart resumes a run where it stopped, and a run waiting for
//! an approval keeps waiting.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Row, SqlitePool};
use tier_xs::runtime::{RuntimeError, now_millis};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS workflow_runs (
    run_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    started_by TEXT NOT NULL,
    goal TEXT NOT NULL,
    status TEXT NOT NULL,
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    wait_until INTEGER
);
CREATE INDEX IF NOT EXISTS workflow_runs_by_tenant ON workflow_runs (tenant, created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS workflow_runs_by_status ON workflow_runs (status);
CREATE TABLE IF NOT EXISTS workflow_history (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    step TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
";

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The runner is advancing it.
    Running,
    /// It waits for a human decision.
    Waiting,
    Succeeded,
    Blocked,
    Rejected,
    TimedOut,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Succeeded,
        RunStatus::Blocked,
        RunStatus::Rejected,
        RunStatus::TimedOut,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Blocked => "blocked",
            RunStatus::Rejected => "rejected",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// A status by its name (an unknown one reads as failed).
    pub(crate) fn parse(s: &str) -> RunStatus {
        RunStatus::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or(RunStatus::Failed)
    }

    /// Ended: nothing more happens to it.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Running | RunStatus::Waiting)
    }
}

/// One run.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Run {
    pub run_id: String,
    pub tenant: String,
    pub started_by: String,
    /// The goal (`agents::run::Goal`).
    pub goal: Value,
    pub status: RunStatus,
    /// The state it is in, or was in when it ended.
    pub step: String,
    /// What the steps answered (references to artifacts).
    pub state: Value,
    pub error: Option<String>,
    /// Epoch milliseconds.
    pub created_at: u64,
    pub updated_at: u64,
    /// While waiting: epoch seconds when the approval request expires.
    pub wait_until: Option<u64>,
}

/// One line of a run's history.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct HistoryEntry {
    pub seq: u64,
    /// Epoch milliseconds.
    pub at: u64,
    pub step: String,
    /// `started`, `succeeded`, `failed`, `retrying`, `waiting`, `decided`, `cancelled` ...
    pub event: String,
    pub detail: String,
}

/// The embedded store of runs.
pub struct Store {
    pool: SqlitePool,
}

fn db(op: &'static str) -> impl Fn(sqlx::Error) -> RuntimeError {
    move |e| RuntimeError::backend(op, e)
}

fn run_of(r: &sqlx::sqlite::SqliteRow) -> Run {
    let json = |col: &str| serde_json::from_str(&r.get::<String, _>(col)).unwrap_or(Value::Null);
    Run {
        run_id: r.get("run_id"),
        tenant: r.get("tenant"),
        started_by: r.get("started_by"),
        goal: json("goal"),
        status: RunStatus::parse(&r.get::<String, _>("status")),
        step: r.get("step"),
        state: json("state"),
        error: r.get("error"),
        created_at: r.get::<i64, _>("created_at") as u64,
        updated_at: r.get::<i64, _>("updated_at") as u64,
        wait_until: r.get::<Option<i64>, _>("wait_until").map(|v| v as u64),
    }
}

impl Store {
    pub async fn open(pool: SqlitePool) -> Result<Store, RuntimeError> {
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(db("create workflow schema"))?;
        Ok(Store { pool })
    }

    pub async fn create(&self, run: &Run) -> Result<(), RuntimeError> {
        sqlx::query(
            "INSERT INTO workflow_runs (run_id, tenant, started_by, goal, status, step, state, error, created_at, updated_at, wait_until)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&run.run_id)
        .bind(&run.tenant)
        .bind(&run.started_by)
        .bind(run.goal.to_string())
        .bind(run.status.as_str())
        .bind(&run.step)
        .bind(run.state.to_string())
        .bind(&run.error)
        .bind(run.created_at as i64)
        .bind(run.updated_at as i64)
        .bind(run.wait_until.map(|v| v as i64))
        .execute(&self.pool)
        .await
        .map_err(db("create run"))?;
        self.note(&run.run_id, &run.step, "started", "the run was started")
            .await
    }

    /// A run of `tenant`.
    pub async fn get(&self, tenant: &str, run_id: &str) -> Result<Option<Run>, RuntimeError> {
        let row = sqlx::query("SELECT * FROM workflow_runs WHERE tenant = ? AND run_id = ?")
            .bind(tenant)
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("get run"))?;
        Ok(row.as_ref().map(run_of))
    }

    /// A tenant's runs, newest first, `limit` at a time; the cursor is the last run's id.
    pub async fn list(
        &self,
        tenant: &str,
        status: Option<RunStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Run>, Option<String>), RuntimeError> {
        let (after_at, after_id) = match after {
            Some(id) => match self.get(tenant, id).await? {
                Some(r) => (r.created_at as i64, r.run_id),
                None => return Err(RuntimeError::invalid("cursor", "not a run of yours")),
            },
            None => (i64::MAX, String::new()),
        };
        let rows = sqlx::query(
            "SELECT * FROM workflow_runs WHERE tenant = ?1 AND (?2 IS NULL OR status = ?2)
               AND (created_at < ?3 OR (created_at = ?3 AND (?4 = '' OR run_id < ?4)))
             ORDER BY created_at DESC, run_id DESC LIMIT ?5",
        )
        .bind(tenant)
        .bind(status.map(|s| s.as_str()))
        .bind(after_at)
        .bind(&after_id)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db("list runs"))?;
        let mut runs: Vec<Run> = rows.iter().map(run_of).collect();
        let next = if runs.len() > limit as usize {
            runs.truncate(limit as usize);
            runs.last().map(|r| r.run_id.clone())
        } else {
            None
        };
        Ok((runs, next))
    }

    /// Runs the runner should advance (every tenant's).
    pub async fn runnable(&self) -> Result<Vec<Run>, RuntimeError> {
        let rows =
            sqlx::query("SELECT * FROM workflow_runs WHERE status = 'running' ORDER BY created_at")
                .fetch_all(&self.pool)
                .await
                .map_err(db("runnable runs"))?;
        Ok(rows.iter().map(run_of).collect())
    }

    /// Waiting runs whose approval request expired by `now_s`.
    pub async fn expired_waits(&self, now_s: u64) -> Result<Vec<Run>, RuntimeError> {
        let rows = sqlx::query(
            "SELECT * FROM workflow_runs WHERE status = 'waiting' AND wait_until IS NOT NULL AND wait_until <= ?",
        )
        .bind(now_s as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("expired waits"))?;
        Ok(rows.iter().map(run_of).collect())
    }

    /// Waiting runs of a tenant (pending approvals), oldest first.
    pub async fn waiting(&self, tenant: &str) -> Result<Vec<Run>, RuntimeError> {
        let rows = sqlx::query(
            "SELECT * FROM workflow_runs WHERE tenant = ? AND status = 'waiting' ORDER BY created_at",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(db("waiting runs"))?;
        Ok(rows.iter().map(run_of).collect())
    }

    /// Writes a run's progress, if it is still in the status `from` (a cancel or a decision
    /// in between wins). Returns whether it was written.
    pub async fn advance(&self, run: &Run, from: RunStatus) -> Result<bool, RuntimeError> {
        let done = sqlx::query(
            "UPDATE workflow_runs SET status = ?, step = ?, state = ?, error = ?, updated_at = ?, wait_until = ?
             WHERE run_id = ? AND status = ?",
        )
        .bind(run.status.as_str())
        .bind(&run.step)
        .bind(run.state.to_string())
        .bind(&run.error)
        .bind(now_millis() as i64)
        .bind(run.wait_until.map(|v| v as i64))
        .bind(&run.run_id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await
        .map_err(db("advance run"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancels a run of `tenant` that has not ended. Returns the run as it now stands.
    pub async fn cancel(&self, tenant: &str, run_id: &str) -> Result<Option<Run>, RuntimeError> {
        sqlx::query(
            "UPDATE workflow_runs SET status = 'cancelled', updated_at = ?, wait_until = NULL
             WHERE tenant = ? AND run_id = ? AND status IN ('running', 'waiting')",
        )
        .bind(now_millis() as i64)
        .bind(tenant)
        .bind(run_id)
        .execute(&self.pool)
        .await
        .map_err(db("cancel run"))?;
        self.get(tenant, run_id).await
    }

    /// Appends to a run's history.
    pub async fn note(
        &self,
        run_id: &str,
        step: &str,
        event: &str,
        detail: &str,
    ) -> Result<(), RuntimeError> {
        sqlx::query(
            "INSERT INTO workflow_history (run_id, seq, at, step, event, detail)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM workflow_history WHERE run_id = ?1), ?2, ?3, ?4, ?5)",
        )
        .bind(run_id)
        .bind(now_millis() as i64)
        .bind(step)
        .bind(event)
        .bind(detail)
        .execute(&self.pool)
        .await
        .map_err(db("note history"))?;
        Ok(())
    }

    pub async fn history(&self, run_id: &str) -> Result<Vec<HistoryEntry>, RuntimeError> {
        let rows = sqlx::query("SELECT * FROM workflow_history WHERE run_id = ? ORDER BY seq")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db("read history"))?;
        Ok(rows
            .iter()
            .map(|r| HistoryEntry {
                seq: r.get::<i64, _>("seq") as u64,
                at: r.get::<i64, _>("at") as u64,
                step: r.get("step"),
                event: r.get("event"),
                detail: r.get("detail"),
            })
            .collect())
    }
}
