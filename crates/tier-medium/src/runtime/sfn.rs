//! Workflow runs on Step Functions: each run an execution of the workspace's state machine
//! (named by the run's id), and an item in the runs table (`agentbus-{env}-runs`, keyed by
//! tenant and run id) that says whose it is, what it is for and, while it waits, the approval
//! request it waits on.
//!
//! The state machine sends approval requests to the approvals queue; [`StepFunctions::feed`]
//! takes each into its run's item (and only then deletes the message: one the server cannot
//! place goes to the dead-letter queue after five tries). `approval_decide` answers the
//! request's task token with `SendTaskSuccess` or `SendTaskFailure`. Everything else is read
//! from the execution as Step Functions describes it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agents::approval::{Approval, Choice, Pending, Request};
use agents::lane::Lane;
use agents::policy::Policy;
use agents::run::run_key;
use agents::tools::{McpClient, Tools};
use agents::workflow::{REJECTED, RunInput};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sfn::error::SdkError;
use aws_sdk_sfn::operation::send_task_failure::SendTaskFailureError;
use aws_sdk_sfn::operation::send_task_success::SendTaskSuccessError;
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent, HistoryEventType};
use serde_json::{Value, json};
use tier_xs::runtime::{RuntimeError, now_millis};
use tier_xs::server::AppState;
use tier_xs::server::auth::{Identity, Role};
use tokio_util::sync::CancellationToken;

use super::runner::set;
use super::store::{HistoryEntry, Run, RunStatus};
use super::workflows::{DecideError, Workflows, judge};

/// The step names a run shows on Step Functions (the state machine's states).
const AWAIT_STEP: &str = "AwaitApproval";
/// How long a finished run's item is kept (its execution's history is kept 90 days).
const KEEP_SECONDS: u64 = 90 * 86_400;
/// How long one receive of the approvals queue waits for a message, and how long it may take
/// in all before it is dropped and asked again.
const LONG_POLL_SECONDS: i32 = 20;
const POLL_LIMIT: Duration = Duration::from_secs(30);

/// The error a cancelled execution is stopped with.
pub const CANCELLED: &str = "agentbus.Cancelled";

/// The ARN of a run's execution: the state machine's, as an execution named by the run id.
pub fn execution_arn(machine_arn: &str, run_id: &str) -> String {
    format!(
        "{}:{run_id}",
        machine_arn.replacen(":stateMachine:", ":execution:", 1)
    )
}

/// The Step Functions backend of [`Workflows`].
pub struct StepFunctions {
    sfn: aws_sdk_sfn::Client,
    sqs: aws_sdk_sqs::Client,
    db: aws_sdk_dynamodb::Client,
    table: String,
    machine_arn: String,
    approvals_queue: String,
    /// The server, once assembled: a run's goal is written through its own tools.
    server: Arc<OnceLock<Arc<AppState>>>,
}

fn backend(op: &'static str) -> impl Fn(String) -> RuntimeError {
    move |message| RuntimeError::Backend { op, message }
}

fn err<E: std::error::Error>(op: &'static str) -> impl Fn(E) -> RuntimeError {
    move |e| RuntimeError::Backend {
        op,
        message: tier_xs::aws::error_text(&e),
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

type Item = HashMap<String, AttributeValue>;

fn text(item: &Item, k: &str) -> Option<String> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

fn number(item: &Item, k: &str) -> Option<u64> {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// The `updated_at` of a write after one that carried `prev`: now, and always later than
/// `prev`, so a compare-and-set on it tells every write apart.
fn stamp(prev: u64) -> u64 {
    now_millis().max(prev + 1)
}

/// A run from its item.
fn run_of(item: &Item) -> Run {
    let json = |k: &str| {
        text(item, k)
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or(Value::Null)
    };
    Run {
        run_id: text(item, "run_id").unwrap_or_default(),
        tenant: text(item, "tenant").unwrap_or_default(),
        started_by: text(item, "started_by").unwrap_or_default(),
        goal: json("goal"),
        status: RunStatus::parse(&text(item, "status").unwrap_or_default()),
        step: text(item, "step").unwrap_or_default(),
        state: json("state"),
        error: text(item, "error"),
        created_at: number(item, "created_at").unwrap_or_default(),
        updated_at: number(item, "updated_at").unwrap_or_default(),
        wait_until: number(item, "wait_until"),
    }
}

/// The run's state as the tools show it: the artifacts each step writes (their keys are
/// the run's own), and what the item holds (a pending request, a decision, the output).
fn refs(run_id: &str) -> Value {
    json!({
        "run_id": run_id,
        "goal_ref": run_key(run_id, "goal.json"),
        "plan": {
            "plan_ref": run_key(run_id, "plan.md"),
            "subtasks_ref": run_key(run_id, "subtasks.json"),
        },
    })
}

/// What an ended execution means for its run.
fn ended(status: &ExecutionStatus, error: &str) -> Option<RunStatus> {
    Some(match status {
        ExecutionStatus::Succeeded => RunStatus::Succeeded,
        ExecutionStatus::TimedOut => RunStatus::TimedOut,
        ExecutionStatus::Aborted => RunStatus::Cancelled,
        ExecutionStatus::Failed => match error {
            "agentbus.Blocked" => RunStatus::Blocked,
            e if e == REJECTED => RunStatus::Rejected,
            "agentbus.ApprovalTimeout" => RunStatus::TimedOut,
            _ => RunStatus::Failed,
        },
        _ => return None,
    })
}

/// One history line from one event (the events that say where a run is).
fn entry(e: &HistoryEvent, step: &mut String) -> Option<HistoryEntry> {
    use HistoryEventType as T;
    let at = e.timestamp().to_millis().unwrap_or_default().max(0) as u64;
    let line = |step: &str, event: &str, detail: String| HistoryEntry {
        seq: e.id().max(0) as u64,
        at,
        step: step.to_string(),
        event: event.to_string(),
        detail,
    };
    if let Some(d) = e.state_entered_event_details() {
        *step = d.name().to_string();
        // Entering the approval's state is waiting for a human.
        let event = if step == AWAIT_STEP {
            "waiting"
        } else {
            "started"
        };
        return Some(line(step, event, String::new()));
    }
    let failure = |error: Option<&str>, cause: Option<&str>| {
        format!(
            "{}: {}",
            error.unwrap_or("error"),
            cause.unwrap_or_default()
        )
    };
    Some(match e.r#type() {
        T::TaskSucceeded | T::MapStateSucceeded => line(step, "succeeded", String::new()),
        T::TaskFailed => {
            let d = e.task_failed_event_details();
            line(
                step,
                "failed",
                failure(d.and_then(|d| d.error()), d.and_then(|d| d.cause())),
            )
        }
        T::TaskTimedOut => line(step, "timed_out", String::new()),
        T::ExecutionSucceeded => line(step, "succeeded", "the run ended".into()),
        T::ExecutionFailed => {
            let d = e.execution_failed_event_details();
            line(
                step,
                "failed",
                failure(d.and_then(|d| d.error()), d.and_then(|d| d.cause())),
            )
        }
        T::ExecutionAborted => line(step, "cancelled", String::new()),
        T::ExecutionTimedOut => line(step, "timed_out", "the run's time limit".into()),
        _ => return None,
    })
}

impl StepFunctions {
    pub fn new(
        aws: &tier_xs::aws::AwsClients,
        table: &str,
        machine_arn: &str,
        approvals_queue: &str,
        server: Arc<OnceLock<Arc<AppState>>>,
    ) -> Self {
        use crate::aws::MediumAws;
        use tier_small::aws::SmallAws;
        StepFunctions {
            sfn: aws.sfn(),
            sqs: aws.sqs(),
            db: aws.dynamodb(),
            table: table.to_string(),
            machine_arn: machine_arn.to_string(),
            approvals_queue: approvals_queue.to_string(),
            server,
        }
    }

    fn execution_arn(&self, run_id: &str) -> String {
        format!(
            "{}:{run_id}",
            self.machine_arn
                .replacen(":stateMachine:", ":execution:", 1)
        )
    }

    async fn item(&self, tenant: &str, run_id: &str) -> Result<Option<Item>, RuntimeError> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("tenant", s(tenant))
            .key("run_id", s(run_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(err("GetItem"))?;
        Ok(out.item)
    }

    /// Whether the run exists and has not ended (an agent may act for it).
    pub async fn is_live(&self, tenant: &str, run_id: &str) -> Result<bool, RuntimeError> {
        Ok(self
            .item(tenant, run_id)
            .await?
            .is_some_and(|item| !run_of(&item).status.is_final()))
    }

    /// Writes what changed of a run (status, step, state, error).
    ///
    /// `read` guards a write derived from what was read: it lands only if the item still
    /// carries that `updated_at`, so a refresh never undoes what another writer did
    /// meanwhile (the feed putting the run into `waiting` with its task token). Answers
    /// whether the write landed; an unguarded write (a decision, a cancel) always does.
    async fn save(&self, run: &Run, read: Option<u64>) -> Result<bool, RuntimeError> {
        let now = stamp(run.updated_at);
        let mut req = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("tenant", s(&run.tenant))
            .key("run_id", s(&run.run_id))
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", s(run.status.as_str()))
            .expression_attribute_values(":step", s(&run.step))
            .expression_attribute_values(":state", s(run.state.to_string()))
            .expression_attribute_values(":u", n(now));
        let mut set = "SET #s = :s, step = :step, #st = :state, updated_at = :u".to_string();
        req = req.expression_attribute_names("#st", "state");
        if let Some(e) = &run.error {
            set.push_str(", #e = :e");
            req = req
                .expression_attribute_names("#e", "error")
                .expression_attribute_values(":e", s(e));
        }
        let mut remove = Vec::new();
        if run.status.is_final() {
            set.push_str(", expires_at = :x");
            req = req.expression_attribute_values(":x", n(now / 1000 + KEEP_SECONDS));
            remove.push("task_token");
            remove.push("wait_until");
        } else if run.status == RunStatus::Running {
            remove.push("task_token");
            remove.push("wait_until");
        }
        let update = if remove.is_empty() {
            set
        } else {
            format!("{set} REMOVE {}", remove.join(", "))
        };
        req = match read {
            Some(read) => req
                .condition_expression("attribute_exists(run_id) AND updated_at = :read")
                .expression_attribute_values(":read", n(read)),
            None => req.condition_expression("attribute_exists(run_id)"),
        };
        match req.update_expression(update).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if read.is_some()
                    && e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(err("UpdateItem")(e)),
        }
    }

    /// A run brought up to date with its execution (ended runs are as they ended).
    async fn refresh(&self, item: &Item, with_step: bool) -> Result<Run, RuntimeError> {
        let mut run = run_of(item);
        if run.status.is_final() {
            return Ok(run);
        }
        let arn = self.execution_arn(&run.run_id);
        let d = match self
            .sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
        {
            Ok(d) => d,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_execution_does_not_exist()) =>
            {
                // Started moments ago, or its start failed and was recorded.
                return Ok(run);
            }
            Err(e) => return Err(err("DescribeExecution")(e)),
        };
        let (error, why) = if d.status() == &ExecutionStatus::Failed {
            let (error, why) = self.failure(&arn).await?;
            (d.error().map(str::to_string).unwrap_or(error), why)
        } else {
            (d.error().unwrap_or_default().to_string(), String::new())
        };
        let before = (run.status, run.step.clone());
        match ended(d.status(), &error) {
            Some(status) => {
                run.status = status;
                run.wait_until = None;
                if let Some(out) = d
                    .output()
                    .and_then(|o| serde_json::from_str::<Value>(o).ok())
                {
                    merge(&mut run.state, out);
                }
                if !error.is_empty() {
                    let cause = if why.is_empty() {
                        d.cause().unwrap_or_default().to_string()
                    } else {
                        why
                    };
                    run.error = Some(format!("{error}: {cause}"));
                }
                run.step = "Done".into();
            }
            None if with_step && run.status == RunStatus::Running => {
                if let Some(step) = self.current_step(&arn).await? {
                    run.step = step;
                }
            }
            None => {}
        }
        if (run.status, run.step.clone()) != before {
            let read = run.updated_at;
            run.updated_at = stamp(read);
            if !self.save(&run, Some(read)).await? {
                // Another writer was first (the feed, a decision, a cancel): theirs stands.
                return Ok(self
                    .item(&run.tenant, &run.run_id)
                    .await?
                    .map(|item| run_of(&item))
                    .unwrap_or(run));
            }
        }
        Ok(run)
    }

    /// The state the execution is in: the last one it entered.
    async fn current_step(&self, arn: &str) -> Result<Option<String>, RuntimeError> {
        let h = self
            .sfn
            .get_execution_history()
            .execution_arn(arn)
            .reverse_order(true)
            .max_results(25)
            .send()
            .await
            .map_err(err("GetExecutionHistory"))?;
        Ok(h.events().iter().find_map(|e| {
            e.state_entered_event_details()
                .map(|d| d.name().to_string())
        }))
    }

    /// The error a failed execution ended with, and why its run failed: the cause of the last
    /// step that failed (the execution's own cause only says the sweeper recorded it).
    async fn failure(&self, arn: &str) -> Result<(String, String), RuntimeError> {
        let h = self
            .sfn
            .get_execution_history()
            .execution_arn(arn)
            .reverse_order(true)
            .max_results(100)
            .send()
            .await
            .map_err(err("GetExecutionHistory"))?;
        let error = h
            .events()
            .iter()
            .find_map(|e| {
                e.execution_failed_event_details()
                    .and_then(|d| d.error())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let why = h
            .events()
            .iter()
            .find_map(|e| {
                e.task_failed_event_details().map(|d| {
                    format!(
                        "{} ({})",
                        d.cause().unwrap_or_default(),
                        d.error().unwrap_or_default()
                    )
                })
            })
            .unwrap_or_default();
        Ok((error, why))
    }

    /// Calls one of the workspace's own tools in process, as `token_id` of `tenant`.
    async fn tool(
        &self,
        tenant: &str,
        token_id: &str,
        role: Role,
        name: &str,
        args: Value,
    ) -> Result<Value, RuntimeError> {
        let server =
            self.server.get().cloned().ok_or_else(|| {
                backend("workspace tools")("the server is not assembled yet".into())
            })?;
        let identity = Identity::new(token_id, tier_xs::runtime::Tenant::new(tenant)?, role);
        let client = tier_xs::server::in_process_client(server, identity)
            .await
            .map_err(backend("workspace tools"))?;
        McpClient(client)
            .call(name, args)
            .await
            .map_err(|e| backend("workspace tools")(format!("{name}: {e}")))
    }

    /// Writes the goal as the run's first artifact, through the workspace's own tools, as the
    /// token that started it.
    async fn write_goal(&self, run: &Run) -> Result<String, RuntimeError> {
        let key = run_key(&run.run_id, "goal.json");
        self.tool(
            &run.tenant,
            &run.started_by,
            Role::User,
            "artifacts_put",
            json!({
                "key": key,
                "content": serde_json::to_string_pretty(&run.goal).unwrap_or_default(),
                "content_type": "application/json",
            }),
        )
        .await?;
        Ok(key)
    }

    /// Records a decision on the tenant's timeline, as the embedded runner does.
    async fn record_decision(&self, tenant: &str, a: &Approval) {
        let verb = super::workflows::verb(a.choice);
        let record = json!({
            "agent": "approver",
            "task_id": a.run_id,
            "action": verb,
            "summary": format!("Token {} {verb} plan {} for {}: {}", a.decided_by, &a.plan_sha256[..12.min(a.plan_sha256.len())], a.lane, a.reason),
            "refs": {"plan_sha256": [a.plan_sha256]},
        });
        if let Err(e) = self
            .tool(
                tenant,
                &a.decided_by,
                Role::Admin,
                "timeline_append",
                record,
            )
            .await
        {
            tracing::warn!(
                "run {}: the decision was not recorded on the timeline: {e}",
                a.run_id
            );
        }
    }

    /// Takes the approval requests the state machine sent into their runs' items, until
    /// `stop`. A request is deleted from the queue only once its run holds it.
    pub async fn feed(self: Arc<Self>, stop: CancellationToken) {
        let url = match self
            .sqs
            .get_queue_url()
            .queue_name(&self.approvals_queue)
            .send()
            .await
        {
            Ok(o) => o.queue_url().unwrap_or_default().to_string(),
            Err(e) => {
                tracing::error!(
                    "approvals queue {}: {}; approvals cannot be received",
                    self.approvals_queue,
                    tier_xs::aws::error_text(&e)
                );
                return;
            }
        };
        let mut backoff = Duration::from_secs(1);
        while !stop.is_cancelled() {
            // A long poll answers within its 20 s; one that has not after 30 (a connection
            // that died quietly) is dropped and asked again, so a request is never held up.
            let receive = self
                .sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(LONG_POLL_SECONDS)
                .send();
            let got = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(POLL_LIMIT, receive) => r,
            };
            let Ok(got) = got else {
                tracing::warn!("approvals queue: a receive outlived its long poll; asking again");
                continue;
            };
            let messages = match got {
                Ok(o) => {
                    backoff = Duration::from_secs(1);
                    o.messages.unwrap_or_default()
                }
                Err(e) => {
                    tracing::warn!("approvals queue: {}", tier_xs::aws::error_text(&e));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            for m in messages {
                match self.take_request(m.body().unwrap_or_default()).await {
                    Ok(()) => {
                        if let Some(h) = m.receipt_handle()
                            && let Err(e) = self
                                .sqs
                                .delete_message()
                                .queue_url(&url)
                                .receipt_handle(h)
                                .send()
                                .await
                        {
                            tracing::warn!(
                                "approvals queue: delete: {}",
                                tier_xs::aws::error_text(&e)
                            );
                        }
                    }
                    Err(e) => tracing::warn!("an approval request was not taken: {e}"),
                }
            }
        }
    }

    /// Puts one approval request into its run's item: the run now waits for a decision.
    async fn take_request(&self, body: &str) -> Result<(), RuntimeError> {
        let v: Value = serde_json::from_str(body)
            .map_err(|e| RuntimeError::invalid("approval request", e.to_string()))?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let (tenant, run_id, token) = (field("tenant"), field("run_id"), field("task_token"));
        if v["kind"] != "approval" || tenant.is_empty() || run_id.is_empty() || token.is_empty() {
            return Err(RuntimeError::invalid(
                "approval request",
                "it names no run, tenant or task token",
            ));
        }
        // Compare-and-set on the item's stamp: a refresh or a cancel that wrote meanwhile
        // is read again rather than overwritten.
        for _ in 0..5 {
            let Some(item) = self.item(&tenant, &run_id).await? else {
                return Err(RuntimeError::invalid(
                    "approval request",
                    format!("run {run_id} of tenant {tenant} was not started by this server"),
                ));
            };
            let mut run = run_of(&item);
            if run.status.is_final() {
                return Ok(());
            }
            let now = now_millis() / 1000;
            let timeout = u64::from(agents::workflow::Workflow::lanes().approval_timeout_seconds);
            let pending = Pending {
                run_id: run_id.clone(),
                plan_sha256: field("plan_sha256"),
                lane: Lane::Execute,
                started_by: field("started_by"),
                requested_at: now,
                expires_at: now + timeout,
            };
            set(&mut run.state, "pending", json!(pending));
            if let Some(verdict) = v["verdict_ref"].as_str() {
                set(&mut run.state, "review", json!({"verdict_ref": verdict}));
            }
            let written = self
                .db
                .update_item()
                .table_name(&self.table)
                .key("tenant", s(&tenant))
                .key("run_id", s(&run_id))
                .condition_expression("attribute_exists(run_id) AND updated_at = :read")
                .update_expression(
                    "SET #s = :w, step = :step, #st = :state, task_token = :tok, wait_until = :until, updated_at = :u",
                )
                .expression_attribute_names("#s", "status")
                .expression_attribute_names("#st", "state")
                .expression_attribute_values(":w", s(RunStatus::Waiting.as_str()))
                .expression_attribute_values(":read", n(run.updated_at))
                .expression_attribute_values(":step", s(AWAIT_STEP))
                .expression_attribute_values(":state", s(run.state.to_string()))
                .expression_attribute_values(":tok", s(&token))
                .expression_attribute_values(":until", n(pending.expires_at))
                .expression_attribute_values(":u", n(stamp(run.updated_at)))
                .send()
                .await;
            match written {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(err("UpdateItem")(e)),
            }
        }
        Err(RuntimeError::invalid(
            "approval request",
            format!("run {run_id} kept changing while its approval request was taken"),
        ))
    }

    async fn query(
        &self,
        tenant: &str,
        start: Option<&str>,
        limit: u32,
        waiting_only: bool,
    ) -> Result<(Vec<Item>, Option<String>), RuntimeError> {
        let mut req = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("tenant = :t")
            .expression_attribute_values(":t", s(tenant))
            // Newest first (run ids sort by time): a waiting run is at most a day old, so the
            // first pages find it however many runs a tenant kept.
            .scan_index_forward(false)
            .limit(limit as i32);
        if waiting_only {
            req = req
                .filter_expression("#s = :w")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":w", s(RunStatus::Waiting.as_str()));
        }
        if let Some(after) = start {
            req = req
                .exclusive_start_key("tenant", s(tenant))
                .exclusive_start_key("run_id", s(after));
        }
        let out = req.send().await.map_err(err("Query"))?;
        let next = out.last_evaluated_key().and_then(|k| text(k, "run_id"));
        Ok((out.items.unwrap_or_default(), next))
    }
}

/// Adds what an execution's output says to a run's state.
fn merge(state: &mut Value, output: Value) {
    if let Value::Object(o) = output {
        for (k, v) in o {
            set(state, &k, v);
        }
    }
}

#[async_trait]
impl Workflows for StepFunctions {
    async fn start(&self, mut run: Run) -> Result<Run, RuntimeError> {
        let goal_ref = self.write_goal(&run).await?;
        run.state = refs(&run.run_id);
        set(&mut run.state, "tenant", json!(run.tenant));
        set(&mut run.state, "started_by", json!(run.started_by));
        run.step = "Plan".into();
        let mut item: Item = HashMap::new();
        for (k, v) in [
            ("tenant", s(&run.tenant)),
            ("run_id", s(&run.run_id)),
            ("started_by", s(&run.started_by)),
            ("goal", s(run.goal.to_string())),
            ("status", s(run.status.as_str())),
            ("step", s(&run.step)),
            ("state", s(run.state.to_string())),
            ("created_at", n(run.created_at)),
            ("updated_at", n(run.updated_at)),
        ] {
            item.insert(k.to_string(), v);
        }
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(run_id)")
            .send()
            .await
            .map_err(err("PutItem"))?;
        let input = RunInput {
            run_id: run.run_id.clone(),
            tenant: run.tenant.clone(),
            goal_ref,
            started_by: run.started_by.clone(),
        };
        let started = self
            .sfn
            .start_execution()
            .state_machine_arn(&self.machine_arn)
            .name(&run.run_id)
            .input(serde_json::to_string(&input).unwrap_or_default())
            .send()
            .await;
        if let Err(e) = started {
            let why = tier_xs::aws::error_text(&e);
            run.status = RunStatus::Failed;
            run.error = Some(format!("the run could not start: {why}"));
            self.save(&run, None).await?;
            return Err(backend("StartExecution")(why));
        }
        Ok(run)
    }

    async fn get(&self, tenant: &str, run_id: &str) -> Result<Option<Run>, RuntimeError> {
        match self.item(tenant, run_id).await? {
            Some(item) => Ok(Some(self.refresh(&item, true).await?)),
            None => Ok(None),
        }
    }

    async fn history(&self, tenant: &str, run_id: &str) -> Result<Vec<HistoryEntry>, RuntimeError> {
        let Some(item) = self.item(tenant, run_id).await? else {
            return Ok(Vec::new());
        };
        let arn = self.execution_arn(run_id);
        let mut out = Vec::new();
        let mut step = "Start".to_string();
        let mut next: Option<String> = None;
        // A run's history is bounded: a few events per step and per subtask.
        for _ in 0..10 {
            let page = match self
                .sfn
                .get_execution_history()
                .execution_arn(&arn)
                .max_results(1000)
                .set_next_token(next.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_execution_does_not_exist()) =>
                {
                    break;
                }
                Err(e) => return Err(err("GetExecutionHistory")(e)),
            };
            out.extend(page.events().iter().filter_map(|e| entry(e, &mut step)));
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        // A decision is the server's, not the execution's: it is in the run's state.
        let run = run_of(&item);
        if let Ok(a) = serde_json::from_value::<Approval>(run.state["decision"].clone()) {
            let (event, detail) = super::workflows::decision_note(&a);
            out.push(HistoryEntry {
                seq: u64::MAX,
                at: a.decided_at * 1000,
                step: AWAIT_STEP.into(),
                event: event.into(),
                detail,
            });
            out.sort_by_key(|h| h.at);
        }
        Ok(out)
    }

    async fn list(
        &self,
        tenant: &str,
        status: Option<RunStatus>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Run>, Option<String>), RuntimeError> {
        let mut runs = Vec::new();
        let mut after = cursor.map(str::to_string);
        // Statuses are read from the executions, so a status filter applies after the read;
        // a page scans at most ten query pages.
        for _ in 0..10 {
            let (items, next) = self.query(tenant, after.as_deref(), limit, false).await?;
            for (i, item) in items.iter().enumerate() {
                let run = self.refresh(item, false).await?;
                if status.is_none_or(|s| s == run.status) {
                    runs.push(run);
                }
                if runs.len() == limit as usize {
                    let more = next.is_some() || i + 1 < items.len();
                    let last = runs.last().map(|r| r.run_id.clone());
                    return Ok((runs, if more { last } else { None }));
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok((runs, None)),
            }
        }
        Ok((runs, after))
    }

    async fn cancel(
        &self,
        tenant: &str,
        run_id: &str,
        by: &str,
    ) -> Result<Option<Run>, RuntimeError> {
        let Some(item) = self.item(tenant, run_id).await? else {
            return Ok(None);
        };
        let run = self.refresh(&item, false).await?;
        if run.status.is_final() {
            return Ok(Some(run));
        }
        match self
            .sfn
            .stop_execution()
            .execution_arn(self.execution_arn(run_id))
            .error(CANCELLED)
            .cause(format!("cancelled by token {by}"))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_execution_does_not_exist()) => {}
            Err(e) => return Err(err("StopExecution")(e)),
        }
        let mut run = run;
        run.status = RunStatus::Cancelled;
        run.error = Some(format!("cancelled by token {by}"));
        run.updated_at = stamp(run.updated_at);
        self.save(&run, None).await?;
        Ok(Some(run))
    }

    async fn waiting(&self, tenant: &str) -> Result<Vec<Run>, RuntimeError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10 {
            let (items, next) = self.query(tenant, after.as_deref(), 100, true).await?;
            for item in &items {
                let run = self.refresh(item, false).await?;
                if run.status == RunStatus::Waiting {
                    out.push(run);
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        out.sort_by_key(|r| r.wait_until);
        Ok(out)
    }

    async fn decide(
        &self,
        tenant: &str,
        run_id: &str,
        request: &Request,
        policy: &Policy,
    ) -> Result<Approval, DecideError> {
        let Some(item) = self.item(tenant, run_id).await? else {
            return Err(DecideError::Refused(format!(
                "no run {run_id} in your tenant"
            )));
        };
        let mut run = self.refresh(&item, false).await?;
        let approval = judge(&run, request, policy)?;
        let token = text(&item, "task_token")
            .ok_or_else(|| DecideError::Refused(format!("run {run_id} has no pending approval")))?;
        // A token that is gone (decided, expired, its run stopped) is the caller's problem.
        fn answer<E>(
            r: Result<impl Sized, SdkError<E>>,
            gone: fn(&E) -> bool,
        ) -> Result<(), (bool, String)>
        where
            E: std::error::Error + Send + Sync + 'static,
        {
            r.map(|_| ()).map_err(|e| {
                (
                    e.as_service_error().is_some_and(gone),
                    tier_xs::aws::error_text(&e),
                )
            })
        }
        let sent = match approval.choice {
            Choice::Approve => answer(
                self.sfn
                    .send_task_success()
                    .task_token(&token)
                    .output(serde_json::to_string(&approval).unwrap_or_default())
                    .send()
                    .await,
                |e: &SendTaskSuccessError| e.is_task_timed_out() || e.is_task_does_not_exist(),
            ),
            Choice::Reject => answer(
                self.sfn
                    .send_task_failure()
                    .task_token(&token)
                    .error(REJECTED)
                    .cause(approval.reason.clone())
                    .send()
                    .await,
                |e: &SendTaskFailureError| e.is_task_timed_out() || e.is_task_does_not_exist(),
            ),
        };
        match sent {
            Ok(()) => {}
            Err((true, _)) => {
                return Err(DecideError::Refused(format!(
                    "run {run_id} no longer waits: its approval request was decided or expired"
                )));
            }
            Err((false, why)) => return Err(DecideError::Runtime(backend("decide")(why))),
        }
        if let Some(o) = run.state.as_object_mut() {
            o.insert("decision".into(), json!(approval));
            o.remove("pending");
        }
        self.record_decision(tenant, &approval).await;
        run.status = RunStatus::Running;
        run.step = "Execute".into();
        run.wait_until = None;
        run.updated_at = stamp(run.updated_at);
        self.save(&run, None).await?;
        Ok(approval)
    }
}
