//! The workspace's record of its deploys, as the console's Workspace panel shows it: which
//! tier ran from when, by whom, what changed, and the month's spend against the budget.
//!
//! - On AWS the `deploy` command writes each apply into the workspace's deploy table
//!   ([`crate::engine::lock::DeployTable`]); the server reads it, and the budget's spend from
//!   AWS Budgets.
//! - The embedded target has no deploy: each start on a tier other than the last one is a
//!   move, recorded in the data directory's database. It has no budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_budgets::operation::describe_budget::DescribeBudgetError;
use serde::Serialize;
use sqlx::SqlitePool;
use tokio::sync::{Mutex, OnceCell};

use super::RuntimeError;
use crate::aws::AwsClients;
use crate::engine::lock::{ApplyRecord, DeployTable};
use crate::workspace::Workspace;

/// The monthly budget and what the month has cost so far.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BudgetSpend {
    pub name: String,
    pub limit_usd: f64,
    /// Month to date, as AWS Budgets last computed it (it lags the bill by up to a day).
    pub actual_usd: f64,
    /// AWS's forecast for the month, once it has enough history.
    pub forecast_usd: Option<f64>,
}

#[async_trait]
pub trait Deployments: Send + Sync {
    /// Records an apply (on AWS the deploy does this; the server only reads).
    async fn record(&self, rec: &ApplyRecord) -> Result<(), RuntimeError>;
    /// The newest `limit` records, newest first.
    async fn history(&self, limit: usize) -> Result<Vec<ApplyRecord>, RuntimeError>;
    /// The budget's limit and spend, where the account has one.
    async fn budget(&self) -> Result<Option<BudgetSpend>, RuntimeError>;
}

/// How long a read of the budget answers for: AWS Budgets recomputes spend a few times a day,
/// and every open console asks every 10 s.
pub const BUDGET_FOR: Duration = Duration::from_secs(15 * 60);
/// How long a read of the deploy history answers for (a deploy shows within this).
pub const HISTORY_FOR: Duration = Duration::from_secs(30);

/// A value read at most once per `ttl`, however many ask; a failed read is not kept.
pub struct Cached<T> {
    ttl: Duration,
    slot: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Cached<T> {
    pub fn new(ttl: Duration) -> Self {
        Cached {
            ttl,
            slot: Mutex::new(None),
        }
    }

    /// The kept value while it is fresh, else `read`'s (one read at a time: the others wait
    /// for it and take its answer).
    pub async fn get<F, Fut>(&self, read: F) -> Result<T, RuntimeError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((at, v)) = slot.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(v.clone());
        }
        let v = read().await?;
        *slot = Some((Instant::now(), v.clone()));
        Ok(v)
    }
}

/// The deploy table and the budget of a deployed workspace.
pub struct AwsDeployments {
    aws: AwsClients,
    table: DeployTable,
    budget: String,
    /// The account, for DescribeBudget (read once from STS: the server is not told it).
    account: OnceCell<String>,
    budget_read: Cached<Option<BudgetSpend>>,
    history_read: Cached<Vec<ApplyRecord>>,
}

impl AwsDeployments {
    /// `ws` may carry a stand-in account: the table's and the budget's names do not use it.
    pub fn new(aws: &AwsClients, ws: &Workspace) -> Self {
        AwsDeployments {
            aws: aws.clone(),
            table: DeployTable::new(aws, ws),
            budget: ws.id(),
            account: OnceCell::new(),
            budget_read: Cached::new(BUDGET_FOR),
            history_read: Cached::new(HISTORY_FOR),
        }
    }

    async fn account(&self) -> Result<&str, RuntimeError> {
        self.account
            .get_or_try_init(|| async {
                let me = self
                    .aws
                    .sts()
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| RuntimeError::backend("read the account id", e))?;
                me.account.ok_or_else(|| RuntimeError::Backend {
                    op: "read the account id",
                    message: "STS named no account".into(),
                })
            })
            .await
            .map(String::as_str)
    }
}

#[async_trait]
impl Deployments for AwsDeployments {
    async fn record(&self, rec: &ApplyRecord) -> Result<(), RuntimeError> {
        self.table
            .record_apply(rec)
            .await
            .map_err(|e| RuntimeError::backend("record an apply", e))
    }

    async fn history(&self, limit: usize) -> Result<Vec<ApplyRecord>, RuntimeError> {
        // The console's 10 newest are kept a little while; other sizes are read each time.
        if limit == CONSOLE_HISTORY {
            return self.history_read.get(|| self.read_history(limit)).await;
        }
        self.read_history(limit).await
    }

    async fn budget(&self) -> Result<Option<BudgetSpend>, RuntimeError> {
        self.budget_read.get(|| self.read_budget()).await
    }
}

/// How many applies the console shows.
pub const CONSOLE_HISTORY: usize = 10;

impl AwsDeployments {
    async fn read_history(&self, limit: usize) -> Result<Vec<ApplyRecord>, RuntimeError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        self.table
            .history(limit)
            .await
            .map_err(|e| RuntimeError::backend("read the deploy history", e))
    }

    async fn read_budget(&self) -> Result<Option<BudgetSpend>, RuntimeError> {
        let account = self.account().await?;
        let out = match self
            .aws
            .budgets()
            .describe_budget()
            .account_id(account)
            .budget_name(&self.budget)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(DescribeBudgetError::is_not_found_exception) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(RuntimeError::backend("read the budget", e)),
        };
        let Some(b) = out.budget else {
            return Ok(None);
        };
        let amount = |s: Option<&aws_sdk_budgets::types::Spend>| {
            s.and_then(|s| s.amount.parse::<f64>().ok())
        };
        let spend = b.calculated_spend.as_ref();
        Ok(Some(BudgetSpend {
            name: b.budget_name,
            limit_usd: amount(b.budget_limit.as_ref()).unwrap_or(0.0),
            actual_usd: amount(spend.and_then(|s| s.actual_spend.as_ref())).unwrap_or(0.0),
            forecast_usd: amount(spend.and_then(|s| s.forecasted_spend.as_ref())),
        }))
    }
}

/// The tier moves of an embedded data directory.
pub struct SqliteDeployments {
    pool: SqlitePool,
}

impl SqliteDeployments {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteDeployments { pool }
    }
}

#[async_trait]
impl Deployments for SqliteDeployments {
    async fn record(&self, rec: &ApplyRecord) -> Result<(), RuntimeError> {
        let body =
            serde_json::to_string(rec).map_err(|e| RuntimeError::backend("record an apply", e))?;
        sqlx::query("INSERT OR REPLACE INTO deployments (at_ms, record) VALUES (?, ?)")
            .bind(i64::try_from(rec.at_ms).unwrap_or(i64::MAX))
            .bind(body)
            .execute(&self.pool)
            .await
            .map_err(|e| RuntimeError::backend("record an apply", e))?;
        Ok(())
    }

    async fn history(&self, limit: usize) -> Result<Vec<ApplyRecord>, RuntimeError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT record FROM deployments ORDER BY at_ms DESC LIMIT ?")
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| RuntimeError::backend("read the deploy history", e))?;
        Ok(rows
            .iter()
            .filter_map(|(r,)| serde_json::from_str(r).ok())
            .collect())
    }

    async fn budget(&self) -> Result<Option<BudgetSpend>, RuntimeError> {
        Ok(None)
    }
}

/// Records a start of the embedded target on `tier` when the last start was on another one
/// (or there was none): the embedded counterpart of a deploy.
pub async fn record_start(
    deployments: &Arc<dyn Deployments>,
    tier: crate::workspace::Tier,
) -> Result<(), RuntimeError> {
    let last = deployments.history(1).await?;
    if last.first().and_then(|r| r.tier) == Some(tier) {
        return Ok(());
    }
    let now_ms = super::now_millis();
    let user = std::env::var("USER").unwrap_or_else(|_| "local user".into());
    deployments
        .record(&ApplyRecord {
            at: crate::engine::lock::iso(now_ms / 1000),
            at_ms: now_ms,
            tier: Some(tier),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            caller: format!("{user}, on this machine"),
            succeeded: true,
            cancelled: false,
            changes: Vec::new(),
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_cached_read_is_made_once_per_period_and_a_failure_is_not_kept() {
        let reads = AtomicU32::new(0);
        let read = |fail: bool| {
            let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if fail {
                    Err(RuntimeError::invalid("read", "failed"))
                } else {
                    Ok(n)
                }
            }
        };
        let c = Cached::new(Duration::from_millis(200));
        assert!(c.get(|| read(true)).await.is_err());
        assert_eq!(c.get(|| read(false)).await.unwrap(), 2);
        assert_eq!(c.get(|| read(false)).await.unwrap(), 2);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(c.get(|| read(false)).await.unwrap(), 3);
    }
}
