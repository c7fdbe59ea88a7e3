//! The medium tier's MCP tools: start, follow and cancel workflow runs; list and decide
//! approvals. Tenant-scoped like every tool; deciding needs an `admin` token.

use std::sync::{Arc, OnceLock};

use agents::approval::{Choice, Decider, Pending, Request};
use agents::policy::Policy;
use agents::run::{Goal, ProposedCall};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tier_small::runtime::monitor::webhook::Reach;
use tier_xs::runtime::RuntimeError;
use tier_xs::server::AppState;
use tier_xs::server::auth::{Identity, Role};
use tier_xs::server::mcp::{
    Access, PromptSpec, Route, ToolExtension, explain, tool_annotations, tool_spec, typed_route,
};

use crate::runtime::runner::{POLICY_KEY, new_run};
use crate::runtime::store::{HistoryEntry, Run, RunStatus};
use crate::runtime::workflows::{DecideError, Workflows};

/// The workflow tools, on the embedded runner or on Step Functions.
#[derive(Clone)]
pub struct MediumTools {
    runs: Arc<dyn Workflows>,
    /// The server, once assembled (for the tenant's policy).
    server: Arc<OnceLock<Arc<AppState>>>,
    /// Where registered external MCP servers may be.
    reach: Reach,
}

impl MediumTools {
    /// The tools on `runs`; `server` is filled once the server is assembled.
    pub fn new(
        runs: Arc<dyn Workflows>,
        server: Arc<OnceLock<Arc<AppState>>>,
        reach: Reach,
    ) -> Self {
        MediumTools {
            runs,
            server,
            reach,
        }
    }

    /// Gives the tools the server they are part of.
    pub fn attach(&self, server: Arc<AppState>) {
        let _ = self.server.set(server);
    }

    async fn policy(&self, id: &Identity) -> Result<Policy, String> {
        let Some(server) = self.server.get() else {
            return Ok(Policy::default());
        };
        match server
            .kv
            .get(&id.tenant, POLICY_KEY)
            .await
            .map_err(explain)?
        {
            Some(e) => Policy::from_json(&e.value).map_err(|err| {
                format!("the workspace policy (KV {POLICY_KEY}) does not parse: {err}")
            }),
            None => Ok(Policy::default()),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    /// What the run is for, in words (1-4096 characters).
    pub goal: String,
    /// The tool calls to make, when you know them (up to 50): without a model the conductor
    /// plans exactly these; each is reviewed and, if it changes anything, approved first.
    #[serde(default)]
    pub subtasks: Vec<ProposedCall>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StartOut {
    pub run_id: String,
    pub status: RunStatus,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunIdArgs {
    /// The run's id, as workflow_start or workflow_list gave it.
    pub run_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunOut {
    pub run: Run,
    /// Every step, in order.
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only runs in this status.
    #[serde(default)]
    pub status: Option<RunStatus>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Runs per page, 1-100 (default 20).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A run in a list.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunSummary {
    pub run_id: String,
    pub goal: String,
    pub status: RunStatus,
    pub step: String,
    pub started_by: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOut {
    pub runs: Vec<RunSummary>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalsOut {
    /// Runs waiting for a decision, oldest first.
    pub approvals: Vec<PendingOut>,
}

/// A run waiting for a human.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PendingOut {
    #[serde(flatten)]
    pub pending: Pending,
    pub goal: String,
    /// The plan people read, and the plan that runs (its hash is what you approve).
    pub plan_ref: Option<String>,
    pub subtasks_ref: Option<String>,
    pub verdict_ref: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideArgs {
    /// The run waiting for you.
    pub run_id: String,
    /// `approve` or `reject`.
    pub decision: Choice,
    /// The SHA-256 of the plan you reviewed (approvals_list shows the run's): a decision on
    /// any other plan is refused.
    pub plan_sha256: String,
    /// Why, in a sentence (recorded on the timeline).
    pub reason: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DecideOut {
    pub run_id: String,
    pub decision: Choice,
    /// Until when an approval lets execute start (epoch seconds).
    pub expires_at: u64,
}

fn summary(r: Run) -> RunSummary {
    RunSummary {
        goal: r.goal["goal"].as_str().unwrap_or_default().to_string(),
        run_id: r.run_id,
        status: r.status,
        step: r.step,
        started_by: r.started_by,
        created_at: r.created_at,
        updated_at: r.updated_at,
        error: r.error,
    }
}

fn pending_out(r: &Run) -> Option<PendingOut> {
    let pending: Pending = serde_json::from_value(r.state["pending"].clone()).ok()?;
    let text = |v: &Value| v.as_str().map(str::to_string);
    Some(PendingOut {
        pending,
        goal: r.goal["goal"].as_str().unwrap_or_default().to_string(),
        plan_ref: text(&r.state["plan"]["plan_ref"]),
        subtasks_ref: text(&r.state["plan"]["subtasks_ref"]),
        verdict_ref: text(&r.state["review"]["verdict_ref"]),
    })
}

async fn own_run(runs: &dyn Workflows, id: &Identity, run_id: &str) -> Result<Run, String> {
    runs.get(id.tenant.as_str(), run_id)
        .await
        .map_err(explain)?
        .ok_or_else(|| format!("no run {run_id} in your tenant"))
}

/// The body of `POST /api/approvals/{run_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    decision: Choice,
    plan_sha256: String,
    reason: String,
}

impl MediumTools {
    async fn decide_for(
        &self,
        id: &Identity,
        run_id: &str,
        choice: Choice,
        plan_sha256: String,
        reason: String,
    ) -> Result<agents::approval::Approval, String> {
        let policy = self.policy(id).await?;
        let request = Request {
            who: Decider {
                token_id: id.token_id.clone(),
                is_admin: id.role == Role::Admin,
            },
            choice,
            plan_sha256,
            reason,
        };
        self.runs
            .decide(id.tenant.as_str(), run_id, &request, &policy)
            .await
            .map_err(|e| match e {
                DecideError::Refused(why) => why,
                DecideError::Runtime(e) => explain(e),
            })
    }
}

impl ToolExtension for MediumTools {
    fn api(&self) -> axum::Router<Arc<AppState>> {
        use axum::extract::{Extension, Json, Path, Query};
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        use axum::routing::{get, post};
        let (list_t, approvals_t, decide_t) = (self.clone(), self.clone(), self.clone());
        let error = |code: StatusCode, e: String| {
            (code, Json(serde_json::json!({"error": e}))).into_response()
        };
        axum::Router::new()
            .route(
                "/api/workflows",
                get(
                    move |Extension(id): Extension<Identity>, Query(q): Query<ListArgs>| {
                        let t = list_t.clone();
                        async move {
                            let limit = q.limit.unwrap_or(20).clamp(1, 100);
                            match t
                                .runs
                                .list(id.tenant.as_str(), q.status, q.cursor.as_deref(), limit)
                                .await
                            {
                                Ok((runs, next)) => Json(ListOut {
                                    runs: runs.into_iter().map(summary).collect(),
                                    next_cursor: next,
                                })
                                .into_response(),
                                Err(e) => tier_xs::server::api_error(&e),
                            }
                        }
                    },
                ),
            )
            .route(
                "/api/approvals",
                get(move |Extension(id): Extension<Identity>| {
                    let t = approvals_t.clone();
                    async move {
                        match t.runs.waiting(id.tenant.as_str()).await {
                            Ok(w) => Json(ApprovalsOut {
                                approvals: w.iter().filter_map(pending_out).collect(),
                            })
                            .into_response(),
                            Err(e) => tier_xs::server::api_error(&e),
                        }
                    }
                }),
            )
            .route(
                "/api/approvals/{run_id}",
                post(
                    move |Extension(id): Extension<Identity>,
                          Path(run_id): Path<String>,
                          Json(b): Json<DecideBody>| {
                        let t = decide_t.clone();
                        async move {
                            if id.role != Role::Admin {
                                return error(
                                    StatusCode::FORBIDDEN,
                                    "only an admin token can decide on a run".into(),
                                );
                            }
                            match t
                                .decide_for(&id, &run_id, b.decision, b.plan_sha256, b.reason)
                                .await
                            {
                                Ok(a) => Json(DecideOut {
                                    run_id: a.run_id,
                                    decision: a.choice,
                                    expires_at: a.expires_at,
                                })
                                .into_response(),
                                Err(e) => error(StatusCode::BAD_REQUEST, e),
                            }
                        }
                    },
                ),
            )
    }

    fn panels(&self) -> &'static str {
        include_str!("panels.html")
    }

    fn prompts(&self) -> Vec<PromptSpec> {
        crate::prompts::prompts()
    }

    fn instructions(&self) -> &'static str {
        "The medium tier adds governed workflows: workflow_start runs a goal through the lanes \
         (the conductor plans read-only, the critic reviews against the workspace's policy, an admin \
         approves the exact plan by its SHA-256 with approval_decide unless the policy approves it, \
         the conductor executes exactly the approved subtasks, the sweeper records the run); \
         workflow_get, workflow_list and workflow_cancel follow them; approvals_list shows what waits for a human."
    }

    fn routes(&self) -> Vec<Route> {
        let mut routes = self.workflow_routes();
        routes.extend(crate::external::External::new(self.server.clone(), self.reach).routes());
        routes
    }
}

impl MediumTools {
    fn workflow_routes(&self) -> Vec<Route> {
        let t = self.clone();
        let start = {
            let t = t.clone();
            typed_route(
                tool_spec(
                    "workflow_start",
                    "Start a workflow run for a goal: plan (read-only) -> review -> approval -> execute -> sweep. Returns the run id; follow it with workflow_get.",
                    tool_annotations(false, false, false),
                ),
                Access::Write,
                move |id: Identity, a: StartArgs| {
                    let t = t.clone();
                    async move {
                        let goal = a.goal.trim();
                        if goal.is_empty() || goal.chars().count() > 4096 {
                            return Err(explain(RuntimeError::invalid(
                                "goal",
                                "use 1-4096 characters",
                            )));
                        }
                        if a.subtasks.len() > 50 {
                            return Err(explain(RuntimeError::invalid("subtasks", "at most 50")));
                        }
                        let run = new_run(
                            id.tenant.as_str(),
                            &id.token_id,
                            &Goal {
                                goal: goal.to_string(),
                                subtasks: a.subtasks,
                            },
                        )
                        .map_err(explain)?;
                        let run = t.runs.start(run).await.map_err(explain)?;
                        Ok(StartOut {
                            run_id: run.run_id,
                            status: run.status,
                        })
                    }
                },
            )
        };
        let get = {
            let t = t.clone();
            typed_route(
                tool_spec(
                    "workflow_get",
                    "A run of your tenant: its status, current step, what each step produced (artifact keys under runs/RUN_ID/) and its history.",
                    tool_annotations(true, false, true),
                ),
                Access::Read,
                move |id: Identity, a: RunIdArgs| {
                    let t = t.clone();
                    async move {
                        let run = own_run(t.runs.as_ref(), &id, &a.run_id).await?;
                        let history = t
                            .runs
                            .history(id.tenant.as_str(), &run.run_id)
                            .await
                            .map_err(explain)?;
                        Ok(RunOut { run, history })
                    }
                },
            )
        };
        let list = {
            let t = t.clone();
            typed_route(
                tool_spec(
                    "workflow_list",
                    "Your tenant's runs, newest first, optionally by status (running, waiting, succeeded, blocked, rejected, timed_out, failed, cancelled), a page at a time.",
                    tool_annotations(true, false, true),
                ),
                Access::Read,
                move |id: Identity, a: ListArgs| {
                    let t = t.clone();
                    async move {
                        let limit = a.limit.unwrap_or(20);
                        if !(1..=100).contains(&limit) {
                            return Err(explain(RuntimeError::invalid("limit", "use 1-100")));
                        }
                        let (runs, next) = t
                            .runs
                            .list(id.tenant.as_str(), a.status, a.cursor.as_deref(), limit)
                            .await
                            .map_err(explain)?;
                        Ok(ListOut {
                            runs: runs.into_iter().map(summary).collect(),
                            next_cursor: next,
                        })
                    }
                },
            )
        };
        let cancel = {
            let t = t.clone();
            typed_route(
                tool_spec(
                    "workflow_cancel",
                    "Cancel a run that has not ended: no further step starts (a step already running finishes, and its result is dropped).",
                    tool_annotations(false, true, true),
                ),
                Access::Write,
                move |id: Identity, a: RunIdArgs| {
                    let t = t.clone();
                    async move {
                        let after = t
                            .runs
                            .cancel(id.tenant.as_str(), &a.run_id, &id.token_id)
                            .await
                            .map_err(explain)?
                            .ok_or_else(|| format!("no run {} in your tenant", a.run_id))?;
                        Ok(StartOut {
                            run_id: after.run_id,
                            status: after.status,
                        })
                    }
                },
            )
        };
        let approvals = {
            let t = t.clone();
            typed_route(
                tool_spec(
                    "approvals_list",
                    "Runs of your tenant waiting for a human decision, oldest first, each with the plan's SHA-256 to approve, its expiry and the artifacts to read first.",
                    tool_annotations(true, false, true),
                ),
                Access::Read,
                move |id: Identity, _a: tier_xs::server::mcp::NoArgs| {
                    let t = t.clone();
                    async move {
                        let waiting = t.runs.waiting(id.tenant.as_str()).await.map_err(explain)?;
                        Ok(ApprovalsOut {
                            approvals: waiting.iter().filter_map(pending_out).collect(),
                        })
                    }
                },
            )
        };
        let decide_route = {
            let t = t.clone();
            typed_route(
                tool_spec(
                    "approval_decide",
                    "Approve or reject a waiting run (admin tokens only; with four-eyes, not the token that started it). Name the plan's SHA-256 from approvals_list: a decision on another plan is refused.",
                    tool_annotations(false, true, false),
                ),
                Access::Write,
                move |id: Identity, a: DecideArgs| {
                    let t = t.clone();
                    async move {
                        let approval = t
                            .decide_for(&id, &a.run_id, a.decision, a.plan_sha256, a.reason)
                            .await?;
                        Ok(DecideOut {
                            run_id: approval.run_id,
                            decision: approval.choice,
                            expires_at: approval.expires_at,
                        })
                    }
                },
            )
        };
        vec![start, get, list, cancel, approvals, decide_route]
    }
}
