//! The three agents' work, phase by phase: the deterministic part that runs with or without a
//! model. Each phase reads the run's state (references), acts through [`Tools`] behind its
//! lane, writes its artifacts under `runs/{run_id}/` and answers with a small record.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::approval::{ApprovalError, check_execute, plan_sha256};
use crate::lane::Lane;
use crate::model::{Model, ModelError, Usage};
use crate::policy::{Evidence, Policy, Tests};
use crate::run::{
    Approved, Executed, Goal, Planned, Reviewed, Subtask, SubtaskRef, Swept, run_key, run_prefix,
};
use crate::tools::{Gated, ToolError, Tools};
use crate::verdict::{ModelReview, Verdict};
use crate::workflow::{AgentTask, Outcome, Phase, Role};

/// Why an agent could not do its step.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error("the run's state lacks {0}")]
    Input(String),
    #[error("{0}")]
    Plan(String),
    #[error(
        "this step needs a model: {0}; set AGENTBUS_MODEL (bedrock:MODEL_ID, openai:MODEL at AGENTBUS_MODEL_URL, or anthropic:MODEL; see the README)"
    )]
    NeedsModel(String),
    #[error("the {role} does not do the {phase} phase")]
    WrongRole {
        role: &'static str,
        phase: &'static str,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl AgentError {
    /// The error name the step fails with: [`AGENT_FAILED`] (tried again) or [`REFUSED`].
    pub fn error_name(&self) -> &'static str {
        if self.retryable() {
            crate::workflow::AGENT_FAILED
        } else {
            crate::workflow::REFUSED
        }
    }

    /// Worth another attempt (a tool server that failed), or not (a refusal stays one).
    pub fn retryable(&self) -> bool {
        match self {
            AgentError::Tool(ToolError::Transport(_)) => true,
            AgentError::Model(e) => e.retryable(),
            _ => false,
        }
    }
}

/// Does the step `task` asks for, at `now`, with the workspace's `policy` and, when one is
/// configured, a `model` to plan goals given in words and to review plans (advisory).
pub async fn perform(
    task: &AgentTask,
    tools: &dyn Tools,
    policy: &Policy,
    model: Option<&Model>,
    now: time::OffsetDateTime,
) -> Result<Value, AgentError> {
    let approved_tools = match task.phase {
        Phase::Execute => {
            let sub: SubtaskRef = field(&task.input, "subtask")?;
            vec![sub.tool]
        }
        _ => Vec::new(),
    };
    let g = Gated::new(tools, task.lane, &task.run_id, approved_tools).await?;
    let out = match (task.role, task.phase) {
        (Role::Conductor, Phase::Plan) => {
            to_value(plan(&g, &task.run_id, &task.input, model).await?)
        }
        (Role::Sweeper, Phase::Record) => record(&g, &task.run_id, &task.input).await?,
        (Role::Critic, Phase::Review) => {
            to_value(review(&g, &task.run_id, &task.input, policy, model, now).await?)
        }
        (Role::Conductor, Phase::Execute) => {
            to_value(execute(&g, &task.run_id, &task.input, now).await?)
        }
        (Role::Sweeper, Phase::Cleanup) => to_value(cleanup(&g, &task.run_id, &task.input).await?),
        (role, phase) => {
            return Err(AgentError::WrongRole {
                role: role.as_str(),
                phase: phase.as_str(),
            });
        }
    };
    Ok(out)
}

fn to_value<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn field<T: DeserializeOwned>(state: &Value, name: &str) -> Result<T, AgentError> {
    serde_json::from_value(state.get(name).cloned().unwrap_or(Value::Null))
        .map_err(|e| AgentError::Input(format!("{name} ({e})")))
}

async fn read_artifact(g: &Gated<'_>, key: &str) -> Result<String, AgentError> {
    let got = g.call("artifacts_get", json!({"key": key})).await?;
    if got["found"] != json!(true) {
        return Err(AgentError::Input(format!("the artifact {key}")));
    }
    Ok(got["content"].as_str().unwrap_or_default().to_string())
}

const MARKDOWN: &str = "text/markdown; charset=utf-8";
const JSON: &str = "application/json";

async fn write_artifact(
    g: &Gated<'_>,
    key: &str,
    content: &str,
    content_type: &str,
) -> Result<(), AgentError> {
    g.call(
        "artifacts_put",
        json!({"key": key, "content": content, "content_type": content_type}),
    )
    .await?;
    Ok(())
}

/// A record of the run as a JSON artifact, pretty-printed for people.
async fn write_json(g: &Gated<'_>, key: &str, v: &impl Serialize) -> Result<(), AgentError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    write_artifact(g, key, &text, JSON).await
}

/// A count from a listing tool, when the workspace offers it.
async fn count(g: &Gated<'_>, tool: &str, args: Value, list: &str) -> Option<usize> {
    if !g.has(tool) {
        return None;
    }
    let out = g.call(tool, args).await.ok()?;
    out[list].as_array().map(Vec::len)
}

/// Conductor, plan phase (`read_only`): the goal, the workspace's context, `plan.md`,
/// `subtasks.json` and the evidence the critic reads.
async fn plan(
    g: &Gated<'_>,
    run: &str,
    state: &Value,
    model: Option<&Model>,
) -> Result<Planned, AgentError> {
    let goal_ref: String = field(state, "goal_ref")?;
    let mut goal: Goal = serde_json::from_str(&read_artifact(g, &goal_ref).await?)
        .map_err(|e| AgentError::Plan(format!("the goal {goal_ref} does not parse: {e}")))?;
    let mut model_usage = None;
    if goal.subtasks.is_empty() {
        let Some(model) = model else {
            return Err(AgentError::NeedsModel(format!(
                "the goal {:?} names no tool calls, and turning words into tool calls is a model's work",
                goal.goal
            )));
        };
        let (proposed, usage) = propose(g, model, &goal.goal).await?;
        goal.subtasks = proposed;
        model_usage = Some(usage);
    }
    // A change of the deployed workspace: its deploy plan and cost delta are the evidence,
    // and the plan's hash goes into the subtask, so approving subtasks.json approves the plan.
    let mut workspace = WorkspaceChanges::default();
    for (i, call) in goal.subtasks.iter_mut().enumerate() {
        if call.tool == WORKSPACE_APPLY {
            workspace
                .preview(g, run, &format!("s{}", i + 1), call)
                .await?;
        }
    }
    let related = related_runs(g, &goal.goal).await;
    let kv = count(g, "kv_list", json!({"limit": 1000}), "entries").await;
    let artifacts = count(g, "artifacts_list", json!({"limit": 1000}), "artifacts").await;
    let records = count(g, "timeline_query", json!({"limit": 200}), "records").await;

    let mut subtasks = Vec::new();
    for (i, call) in goal.subtasks.iter().enumerate() {
        let Some(hints) = g.hints(&call.tool) else {
            return Err(AgentError::Plan(format!(
                "the goal names the tool {}, which this workspace does not offer",
                call.tool
            )));
        };
        let lane = if hints.read_only == Some(true) {
            Lane::ReadOnly
        } else {
            Lane::Execute
        };
        subtasks.push(Subtask {
            id: format!("s{}", i + 1),
            lane,
            tool: call.tool.clone(),
            arguments: call.arguments.clone(),
            deliverables: vec![run_key(run, &format!("results/s{}.json", i + 1))],
            why: call.why.clone(),
        });
    }
    let subtasks_json = serde_json::to_string_pretty(&subtasks).unwrap_or_default();
    let changes: Vec<String> = subtasks
        .iter()
        .filter(|s| s.lane == Lane::Execute)
        .map(|s| format!("{} {}", s.tool, Value::Object(s.arguments.clone())))
        .collect();
    let mut md = format!(
        "# Plan for run {run}\n\nGoal: {}\n\n## Context\n\n",
        goal.goal
    );
    let say = |n: Option<usize>, what: &str| match n {
        Some(n) => format!("- {n} {what}\n"),
        None => format!("- {what}: not offered by this workspace\n"),
    };
    md.push_str(&say(kv, "KV entries (first page)"));
    md.push_str(&say(artifacts, "artifacts (first page)"));
    md.push_str(&say(records, "timeline records (first page)"));
    if let Some(related) = &related {
        md.push_str("\n## Related past runs\n\n");
        md.push_str(related);
    }
    md.push_str("\n## Subtasks\n\n");
    for s in &subtasks {
        md.push_str(&format!(
            "{}. `{}` ({}) {}{}\n",
            &s.id[1..],
            s.tool,
            s.lane,
            Value::Object(s.arguments.clone()),
            if s.why.is_empty() {
                String::new()
            } else {
                format!(": {}", s.why)
            }
        ));
    }
    md.push_str(&workspace.markdown());
    md.push_str(
        "\n## Won't do\n\nAnything not listed above: execute runs exactly these subtasks, as approved.\n",
    );
    let rollback_plan = workspace.write_rollback(g, run).await?;
    let mut artifacts = vec![run_key(run, "plan.md"), run_key(run, "subtasks.json")];
    artifacts.extend(workspace.plans.iter().map(|p| p.key.clone()));
    artifacts.extend(rollback_plan.clone());
    let mut changes = changes.join("\n");
    for p in &workspace.plans {
        changes.push('\n');
        changes.push_str(&p.text);
    }
    let evidence = Evidence {
        artifacts,
        changes,
        tests: Tests::Exception {
            reason: if workspace.plans.is_empty() {
                // The workspace's own tools act on its data: no code to test, nothing that
                // bills monthly.
                "the subtasks call the workspace's own tools on its data; there is no code to test"
                    .into()
            } else {
                "a change of the deployed workspace: its deploy plan is the evidence, and the apply refuses any plan but the approved one".into()
            },
        },
        cost_delta_monthly: workspace.cost,
        rollback_plan,
        rollout_plan: None,
    };
    let (plan_ref, subtasks_ref, evidence_ref) = (
        run_key(run, "plan.md"),
        run_key(run, "subtasks.json"),
        run_key(run, "evidence.json"),
    );
    write_artifact(g, &plan_ref, &md, MARKDOWN).await?;
    write_artifact(g, &subtasks_ref, &subtasks_json, JSON).await?;
    write_json(g, &evidence_ref, &evidence).await?;
    Ok(Planned {
        plan_ref,
        subtasks_ref,
        evidence_ref,
        plan_sha256: plan_sha256(subtasks_json.as_bytes()),
        subtasks: subtasks
            .iter()
            .map(|s| SubtaskRef {
                id: s.id.clone(),
                tool: s.tool.clone(),
            })
            .collect(),
        cost_delta_monthly: evidence.cost_delta_monthly,
        model_usage,
    })
}

/// The tool a subtask changes the deployed workspace with; the conductor plans it first.
pub const WORKSPACE_APPLY: &str = "workspace_apply";
const WORKSPACE_PLAN: &str = "workspace_plan";

/// The run's changes of the deployed workspace, as the plan phase previewed them.
struct WorkspaceChanges {
    plans: Vec<WorkspacePreview>,
    /// The sum of their monthly cost deltas; `None` once one is unknown.
    cost: Option<f64>,
}

struct WorkspacePreview {
    subtask: String,
    key: String,
    text: String,
    changes: u64,
    cost: Option<f64>,
    /// The tier deployed before the run (what a rollback returns to).
    deployed: Option<String>,
}

impl Default for WorkspaceChanges {
    fn default() -> Self {
        WorkspaceChanges {
            plans: Vec::new(),
            cost: Some(0.0),
        }
    }
}

impl WorkspaceChanges {
    /// Plans `call` with `workspace_plan`, keeps the plan text as an artifact and names the
    /// plan's hash in the call (any hash the goal gave is replaced: the apply runs the plan
    /// made here, or nothing).
    async fn preview(
        &mut self,
        g: &Gated<'_>,
        run: &str,
        subtask: &str,
        call: &mut crate::run::ProposedCall,
    ) -> Result<(), AgentError> {
        if !g.has(WORKSPACE_PLAN) {
            return Err(AgentError::Plan(format!(
                "{WORKSPACE_APPLY} needs {WORKSPACE_PLAN}, which this workspace does not offer"
            )));
        }
        let mut args = call.arguments.clone();
        args.remove("plan_sha256");
        let p = g.call(WORKSPACE_PLAN, Value::Object(args.clone())).await?;
        let problems: Vec<&str> = p["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !problems.is_empty() {
            return Err(AgentError::Plan(format!(
                "the workspace plan of {subtask} cannot be applied: {}",
                problems.join("; ")
            )));
        }
        let (Some(text), Some(sha)) = (p["plan"].as_str(), p["plan_sha256"].as_str()) else {
            return Err(AgentError::Plan(format!(
                "{WORKSPACE_PLAN} answered without a plan and its hash: {p}"
            )));
        };
        let key = run_key(run, &format!("workspace-plan-{subtask}.txt"));
        write_artifact(g, &key, text, "text/plain; charset=utf-8").await?;
        args.insert("plan_sha256".into(), Value::String(sha.to_string()));
        call.arguments = args;
        let cost = p["cost_delta_monthly"].as_f64();
        self.cost = self.cost.zip(cost).map(|(a, b)| a + b);
        self.plans.push(WorkspacePreview {
            subtask: subtask.to_string(),
            key,
            text: text.to_string(),
            changes: p["changes"].as_u64().unwrap_or_default(),
            cost,
            deployed: p["deployed_tier"].as_str().map(str::to_string),
        });
        Ok(())
    }

    /// plan.md's section on them (nothing when there are none).
    fn markdown(&self) -> String {
        if self.plans.is_empty() {
            return String::new();
        }
        let mut md = String::from("\n## Workspace changes\n\n");
        for p in &self.plans {
            md.push_str(&format!(
                "- {}: {} resource change(s), monthly cost {}; the deploy plan is {}\n",
                p.subtask,
                p.changes,
                match p.cost {
                    Some(c) => format!("{}${:.2}", if c < 0.0 { "-" } else { "+" }, c.abs()),
                    None => "unknown".into(),
                },
                p.key
            ));
        }
        md
    }

    /// The rollback plan: deploy the tier the workspace was at before the run.
    async fn write_rollback(&self, g: &Gated<'_>, run: &str) -> Result<Option<String>, AgentError> {
        let Some(first) = self.plans.first() else {
            return Ok(None);
        };
        let back = match &first.deployed {
            Some(tier) => format!(
                "The workspace was at the {tier} tier before this run. To undo the change, apply that tier again: \
                 a run with the subtask `{WORKSPACE_APPLY} {{\"tier\": \"{tier}\"}}`, or `agentbus deploy {tier}`."
            ),
            None => "Nothing was deployed before this run. To undo the change, `agentbus destroy` the workspace.".into(),
        };
        let md = format!(
            "# Rollback of run {run}\n\n{back} Going down a tier keeps the data-bearing resources \
             (tables, buckets, the database) unless `--destroy-data` is given, which no tool can give.\n"
        );
        let key = run_key(run, "rollback.md");
        write_artifact(g, &key, &md, MARKDOWN).await?;
        Ok(Some(key))
    }
}

/// The past runs whose retrospectives are closest in meaning to `goal`, as Markdown lines,
/// when the workspace has memory (large tier); what went wrong when the search failed.
async fn related_runs(g: &Gated<'_>, goal: &str) -> Option<String> {
    if !g.has("memory_search") {
        return None;
    }
    let args = json!({"collection": crate::tools::RUNS_COLLECTION, "query": goal, "k": 3});
    Some(match g.call("memory_search", args).await {
        Ok(found) => {
            let hits = found["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                "- none yet\n".to_string()
            } else {
                hits.iter()
                    .map(|h| {
                        format!(
                            "- {} (similarity {:.2}): {}\n",
                            h["id"].as_str().unwrap_or_default(),
                            h["score"].as_f64().unwrap_or_default(),
                            h["text"].as_str().unwrap_or_default()
                        )
                    })
                    .collect()
            }
        }
        Err(e) => format!("- not searched: {e}\n"),
    })
}

/// What the conductor tells its model: its part, and the tools it may propose (read-only ones
/// marked). The server offers it as the `conductor` prompt too.
pub fn conductor_instructions(tools: &[crate::tools::ToolInfo]) -> String {
    let catalog: String = tools
        .iter()
        .map(|t| {
            format!(
                "- {}{}: {}\n",
                t.name,
                if t.hints.read_only == Some(true) {
                    " (read-only)"
                } else {
                    ""
                },
                t.description
            )
        })
        .collect();
    format!(
        "You are the conductor of an agentbus workspace. Propose the fewest tool calls that achieve the goal, using only these tools:\n{catalog}Every call that changes something will be reviewed and approved before it runs."
    )
}

/// What the critic tells its model (the `critic` prompt too).
pub const CRITIC_INSTRUCTIONS: &str = "You are the critic of an agentbus workspace. Review the plan for safety, cost and quality. You may refuse it or add conditions; you cannot approve what the policy's checks block.";

/// The critic's request: the plan and the policy's checks of it.
pub fn critic_request(plan: &str, checks: &str) -> String {
    format!("The plan:\n{plan}\n\nThe policy's checks:\n{checks}")
}

/// Asks the model for the tool calls that achieve `goal`, among the workspace's tools.
async fn propose(
    g: &Gated<'_>,
    model: &Model,
    goal: &str,
) -> Result<(Vec<crate::run::ProposedCall>, Usage), AgentError> {
    let names: Vec<&str> = g.listed().iter().map(|t| t.name.as_str()).collect();
    let schema = json!({
        "type": "object",
        "properties": {"subtasks": {"type": "array", "minItems": 1, "maxItems": 10, "items": {
            "type": "object",
            "properties": {
                "tool": {"type": "string", "enum": names},
                "arguments": {"type": "object"},
                "why": {"type": "string"}
            },
            "required": ["tool", "arguments", "why"]
        }}},
        "required": ["subtasks"]
    });
    let system = conductor_instructions(g.listed());
    let (args, usage) = model
        .structured(
            &system,
            goal,
            "propose_subtasks",
            "The tool calls that achieve the goal, in order",
            schema,
        )
        .await?;
    let calls: Vec<crate::run::ProposedCall> = serde_json::from_value(args["subtasks"].clone())
        .map_err(|e| AgentError::Plan(format!("the model's subtasks do not parse: {e}")))?;
    if calls.is_empty() {
        return Err(AgentError::Plan("the model proposed no tool calls".into()));
    }
    Ok((calls, usage))
}

/// Sweeper, record phase: the plan on the timeline before anyone reviews it.
async fn record(g: &Gated<'_>, run: &str, state: &Value) -> Result<Value, AgentError> {
    let p: Planned = field(state, "plan")?;
    let rec = g
        .call(
            "timeline_append",
            json!({
                "agent": "conductor",
                "task_id": run,
                "action": "plan",
                "summary": format!("Planned {} subtask(s): {}.", p.subtasks.len(),
                    p.subtasks.iter().map(|s| format!("{} {}", s.id, s.tool)).collect::<Vec<_>>().join(", ")),
                "artifacts": [p.plan_ref, p.subtasks_ref, p.evidence_ref],
                "metrics": {"cost_delta_monthly": p.cost_delta_monthly.unwrap_or(0.0), "subtasks": p.subtasks.len() as f64},
            }),
        )
        .await?;
    Ok(json!({"record_id": rec["id"]}))
}

/// Critic, review phase (`dry_run`): the policy over the plan's evidence; `verdict.json`.
async fn review(
    g: &Gated<'_>,
    run: &str,
    state: &Value,
    policy: &Policy,
    model: Option<&Model>,
    now: time::OffsetDateTime,
) -> Result<Reviewed, AgentError> {
    let p: Planned = field(state, "plan")?;
    let subtasks = read_artifact(g, &p.subtasks_ref).await?;
    let hash = plan_sha256(subtasks.as_bytes());
    if hash != p.plan_sha256 {
        return Err(AgentError::Plan(format!(
            "subtasks.json changed after planning (hash {hash}, planned {})",
            p.plan_sha256
        )));
    }
    let evidence: Evidence = serde_json::from_str(&read_artifact(g, &p.evidence_ref).await?)
        .map_err(|e| AgentError::Plan(format!("evidence.json does not parse: {e}")))?;
    let decision = policy.review(&evidence);
    let notes_ref = run_key(run, "review-notes.md");
    let mut verdict =
        Verdict::from_decision(&decision, &notes_ref, now, policy.approval_ttl_seconds);
    let mut model_usage = None;
    if let Some(model) = model {
        // Advisory: the model may add conditions or refuse, never approve what the policy blocks.
        let plan_md = read_artifact(g, &p.plan_ref).await.unwrap_or_default();
        let prompt = critic_request(
            &plan_md,
            &serde_json::to_string_pretty(&decision.findings).unwrap_or_default(),
        );
        let schema = serde_json::to_value(schemars::schema_for!(ModelReview)).unwrap_or_default();
        let (args, usage) = model
            .structured(
                CRITIC_INSTRUCTIONS,
                &prompt,
                "review_plan",
                "Your review of the plan",
                schema,
            )
            .await?;
        let review: ModelReview = serde_json::from_value(args)
            .map_err(|e| AgentError::Plan(format!("the model's review does not parse: {e}")))?;
        verdict = verdict.with_model_review(review);
        model_usage = Some(usage);
    }
    let mut notes = format!(
        "# Review of run {run}\n\n{} ({}).\n\n",
        if verdict.approved {
            "Approved for execute"
        } else {
            "Blocked"
        },
        if verdict.needs_human {
            "a human approval is still needed"
        } else if verdict.approved {
            "the workspace's policy approves it automatically"
        } else {
            "see the failing checks"
        }
    );
    for f in &verdict.findings {
        notes.push_str(&format!(
            "- {} {}: {}\n",
            if f.passed { "pass" } else { "FAIL" },
            f.check,
            f.explanation
        ));
    }
    let verdict_ref = run_key(run, "verdict.json");
    write_artifact(g, &notes_ref, &notes, MARKDOWN).await?;
    write_json(g, &verdict_ref, &verdict).await?;
    Ok(Reviewed {
        approved: verdict.approved,
        needs_human: verdict.needs_human,
        lane: verdict.lane,
        verdict_ref,
        plan_sha256: p.plan_sha256,
        model_usage,
    })
}

/// Conductor, execute phase (`execute`): one subtask, exactly as approved.
async fn execute(
    g: &Gated<'_>,
    run: &str,
    state: &Value,
    now: time::OffsetDateTime,
) -> Result<Executed, AgentError> {
    let p: Planned = field(state, "plan")?;
    let sub: SubtaskRef = field(state, "subtask")?;
    let approval: Approved = field(state, "approval")?;
    let bytes = read_artifact(g, &p.subtasks_ref).await?;
    match &approval {
        Approved::Human(a) => {
            check_execute(a, bytes.as_bytes(), now.unix_timestamp().max(0) as u64)?
        }
        Approved::Automatic { plan_sha256: h, .. } => {
            let actual = plan_sha256(bytes.as_bytes());
            if &actual != h {
                return Err(ApprovalError::WrongPlan {
                    expected: actual,
                    given: h.clone(),
                }
                .into());
            }
        }
    }
    let subtasks: Vec<Subtask> = serde_json::from_str(&bytes)
        .map_err(|e| AgentError::Plan(format!("subtasks.json does not parse: {e}")))?;
    let Some(s) = subtasks
        .iter()
        .find(|s| s.id == sub.id && s.tool == sub.tool)
    else {
        return Err(AgentError::Plan(format!(
            "subtask {} ({}) is not in the approved plan",
            sub.id, sub.tool
        )));
    };
    let result = g.call(&s.tool, Value::Object(s.arguments.clone())).await?;
    let result_ref = result_key(run, &s.id);
    write_json(g, &result_ref, &result).await?;
    Ok(Executed {
        id: s.id.clone(),
        tool: s.tool.clone(),
        result_ref,
    })
}

/// Where a subtask's result goes: `runs/{run}/results/{id}.json`.
fn result_key(run: &str, id: &str) -> String {
    run_key(run, &format!("results/{id}.json"))
}

/// Sweeper, cleanup phase (`read_only`, its own records only): the run's timeline record, a
/// retrospective of two to four sentences, and the run's scratch KV entries removed.
async fn cleanup(g: &Gated<'_>, run: &str, state: &Value) -> Result<Swept, AgentError> {
    let outcome: Outcome = state
        .get("outcome")
        .and_then(|o| o.get("status"))
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .ok_or_else(|| AgentError::Input("outcome".into()))?;
    let plan: Option<Planned> = field(state, "plan").ok();
    let review: Option<Reviewed> = field(state, "review").ok();
    // A run that succeeded ran every planned subtask (the execute map fails as a whole), and
    // each left its result under the run's results/.
    let executed: Vec<Executed> = match (&plan, outcome) {
        (Some(p), Outcome::Succeeded) => p
            .subtasks
            .iter()
            .map(|s| Executed {
                id: s.id.clone(),
                tool: s.tool.clone(),
                result_ref: result_key(run, &s.id),
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut sentences = vec![format!("Run {run} {}.", describe(outcome))];
    if let Some(p) = &plan {
        sentences.push(format!(
            "The conductor planned {} subtask(s) ({}), with a monthly cost delta of ${:.2}.",
            p.subtasks.len(),
            p.subtasks
                .iter()
                .map(|s| s.tool.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            p.cost_delta_monthly.unwrap_or(0.0)
        ));
    }
    if let Some(r) = &review {
        sentences.push(if r.approved {
            format!(
                "The critic approved it for execute{}.",
                if r.needs_human {
                    ", pending a human approval"
                } else {
                    " under the workspace's automatic approval"
                }
            )
        } else {
            format!("The critic blocked it; {} explains why.", r.verdict_ref)
        });
    }
    if !executed.is_empty() {
        sentences.push(format!(
            "{} subtask(s) ran; their results are under {}results/.",
            executed.len(),
            run_prefix(run)
        ));
    } else if let Some(e) = state.get("error") {
        let why = e["Cause"]
            .as_str()
            .or(e["Error"].as_str())
            .unwrap_or("unknown");
        let why: String = why.chars().take(200).collect();
        sentences.push(format!("It stopped on: {why}."));
    }
    sentences.truncate(4);
    let retrospective = sentences.join(" ");
    let retrospective_ref = run_key(run, "retrospective.md");
    write_artifact(
        g,
        &retrospective_ref,
        &format!("{retrospective}\n"),
        MARKDOWN,
    )
    .await?;
    let mut artifacts = vec![retrospective_ref.clone()];
    if let Some(p) = &plan {
        artifacts.push(p.plan_ref.clone());
    }
    if let Some(r) = &review {
        artifacts.push(r.verdict_ref.clone());
    }
    artifacts.extend(executed.iter().map(|e| e.result_ref.clone()));
    g.call(
        "timeline_append",
        json!({
            "agent": "sweeper",
            "task_id": run,
            "action": outcome.as_str(),
            "summary": retrospective,
            "artifacts": artifacts,
            "metrics": metrics(plan.as_ref(), review.as_ref()),
        }),
    )
    .await?;
    // The retrospective goes to memory (large tier), for later runs' plans to find. Memory is
    // a help, not part of the run's record: a failure is logged, never the run's end.
    let remembered = if g.has("memory_put") {
        let doc =
            json!({"id": run, "text": retrospective, "metadata": {"outcome": outcome.as_str()}});
        match g
            .call(
                "memory_put",
                json!({"collection": crate::tools::RUNS_COLLECTION, "documents": [doc]}),
            )
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("run {run}: the retrospective was not put in memory: {e}");
                false
            }
        }
    } else {
        false
    };
    // Compaction: the run's scratch entries go with the run.
    let mut compacted = 0;
    if g.has("kv_list") {
        let listed = g
            .call("kv_list", json!({"prefix": run_prefix(run), "limit": 1000}))
            .await?;
        for e in listed["entries"].as_array().into_iter().flatten() {
            if let Some(k) = e["key"].as_str() {
                g.call("kv_delete", json!({"key": k})).await?;
                compacted += 1;
            }
        }
    }
    Ok(Swept {
        retrospective_ref,
        compacted,
        remembered,
    })
}

/// The run's numbers for its timeline record: the cost delta, and what models used.
fn metrics(plan: Option<&Planned>, review: Option<&Reviewed>) -> Value {
    let mut used = Usage::default();
    for u in [
        plan.and_then(|p| p.model_usage),
        review.and_then(|r| r.model_usage),
    ]
    .into_iter()
    .flatten()
    {
        used.add(&u);
    }
    let mut m =
        json!({"cost_delta_monthly": plan.and_then(|p| p.cost_delta_monthly).unwrap_or(0.0)});
    if used.calls > 0 {
        m["model_calls"] = json!(used.calls);
        m["model_input_tokens"] = json!(used.input_tokens);
        m["model_output_tokens"] = json!(used.output_tokens);
        if let Some(c) = used.cost_usd {
            m["model_cost_usd"] = json!(c);
        }
    }
    m
}

fn describe(o: Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "succeeded",
        Outcome::Blocked => "was blocked by review",
        Outcome::Rejected => "was rejected by a human",
        Outcome::TimedOut => "waited for an approval that did not come in time",
        Outcome::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::approval::{Choice, Decider, Pending, Request, decide};
    use crate::tools::fake::Fake;
    use crate::workflow::Workflow;

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-12-01 12:00 UTC)
    }

    async fn step(
        f: &Fake,
        phase_of: &crate::workflow::AgentStep,
        state: &Value,
    ) -> Result<Value, AgentError> {
        let task = AgentTask {
            task_token: "t".into(),
            run_id: "r1".into(),
            role: phase_of.role,
            phase: phase_of.phase,
            lane: phase_of.lane,
            input: state.clone(),
        };
        perform(&task, f, &Policy::default(), None, now()).await
    }

    fn goal(f: &Fake, subtasks: Value) -> Value {
        f.artifacts.lock().unwrap().insert(
            "runs/r1/goal.json".into(),
            json!({"goal": "greet the team", "subtasks": subtasks}).to_string(),
        );
        json!({"run_id": "r1", "tenant": "acme", "goal_ref": "runs/r1/goal.json", "started_by": "tok-a"})
    }

    #[tokio::test]
    async fn a_run_goes_from_plan_to_sweep_with_a_human_approval_of_the_exact_plan() {
        let f = Fake::default();
        let w = Workflow::lanes();
        let mut state = goal(
            &f,
            json!([
                {"tool": "kv_set", "arguments": {"key": "greeting", "value": "hello"}, "why": "the team asked"},
                {"tool": "kv_get", "arguments": {"key": "greeting"}}
            ]),
        );
        f.kv.lock()
            .unwrap()
            .insert("runs/r1/scratch".into(), "x".into());
        state["plan"] = step(&f, &w.plan, &state).await.unwrap();
        let p: Planned = serde_json::from_value(state["plan"].clone()).unwrap();
        assert_eq!(p.subtasks.len(), 2);
        assert!(
            f.kv.lock().unwrap().get("greeting").is_none(),
            "planning changes nothing"
        );
        let plan_md = f.artifacts.lock().unwrap()["runs/r1/plan.md"].clone();
        assert!(
            plan_md.contains("`kv_set` (execute)") && plan_md.contains("`kv_get` (read_only)"),
            "{plan_md}"
        );

        state["recorded"] = step(&f, &w.record, &state).await.unwrap();
        state["review"] = step(&f, &w.review, &state).await.unwrap();
        let r: Reviewed = serde_json::from_value(state["review"].clone()).unwrap();
        assert!(r.approved && r.needs_human, "{r:?}");
        let verdict = f.artifacts.lock().unwrap()["runs/r1/verdict.json"].clone();
        assert!(Verdict::parse(&verdict).unwrap().approved);

        let pending = Pending {
            run_id: "r1".into(),
            plan_sha256: r.plan_sha256.clone(),
            lane: Lane::Execute,
            started_by: "tok-a".into(),
            requested_at: 0,
            expires_at: u64::MAX,
        };
        let approval = decide(
            &pending,
            &Request {
                who: Decider {
                    token_id: "tok-b".into(),
                    is_admin: true,
                },
                choice: Choice::Approve,
                plan_sha256: r.plan_sha256.clone(),
                reason: "fine".into(),
            },
            &Policy::default(),
            now().unix_timestamp() as u64,
        )
        .unwrap();
        state["approval"] = serde_json::to_value(&approval).unwrap();
        let mut executed = Vec::new();
        for s in &p.subtasks {
            let mut item = state.clone();
            item["subtask"] = serde_json::to_value(s).unwrap();
            executed.push(step(&f, &w.execute, &item).await.unwrap());
        }
        assert_eq!(
            f.kv.lock().unwrap().get("greeting").map(String::as_str),
            Some("hello")
        );
        state["execute"] = Value::Array(executed);
        state["outcome"] = json!({"status": "succeeded"});
        let swept: Swept =
            serde_json::from_value(step(&f, &w.sweep, &state).await.unwrap()).unwrap();
        assert_eq!(swept.compacted, 1);
        assert!(f.kv.lock().unwrap().get("runs/r1/scratch").is_none());
        let retro = f.artifacts.lock().unwrap()["runs/r1/retrospective.md"].clone();
        let sentences = retro.matches(". ").count() + 1;
        assert!((2..=4).contains(&sentences), "{retro}");
        let timeline = f.timeline.lock().unwrap().clone();
        assert_eq!(timeline.len(), 2);
        assert_eq!(timeline[0]["action"], "plan");
        assert_eq!(timeline[1]["action"], "succeeded");
        assert_eq!(timeline[1]["agent"], "sweeper");
    }

    #[tokio::test]
    async fn execute_refuses_a_plan_changed_after_approval_and_a_subtask_not_in_it() {
        let f = Fake::default();
        let w = Workflow::lanes();
        let mut state = goal(
            &f,
            json!([{"tool": "kv_set", "arguments": {"key": "a", "value": "1"}}]),
        );
        state["plan"] = step(&f, &w.plan, &state).await.unwrap();
        let p: Planned = serde_json::from_value(state["plan"].clone()).unwrap();
        state["approval"] =
            json!({"choice": "approve", "automatic": true, "plan_sha256": p.plan_sha256});
        // Someone rewrites subtasks.json after the review.
        f.artifacts.lock().unwrap().insert(
            "runs/r1/subtasks.json".into(),
            json!([{"id": "s1", "lane": "execute", "tool": "secrets_delete", "arguments": {"name": "x"}, "deliverables": [], "why": ""}]).to_string(),
        );
        state["subtask"] = json!({"id": "s1", "tool": "secrets_delete"});
        let e = step(&f, &w.execute, &state).await.unwrap_err();
        assert!(
            matches!(e, AgentError::Approval(ApprovalError::WrongPlan { .. })),
            "{e}"
        );
        assert!(
            !f.calls
                .lock()
                .unwrap()
                .contains(&"secrets_delete".to_string())
        );
    }

    #[tokio::test]
    async fn without_a_model_a_goal_in_words_only_says_how_to_configure_one() {
        let f = Fake::default();
        let w = Workflow::lanes();
        let state = goal(&f, json!([]));
        let e = step(&f, &w.plan, &state).await.unwrap_err();
        assert!(e.to_string().contains("AGENTBUS_MODEL"), "{e}");
        let state = goal(&f, json!([{"tool": "launch_rockets"}]));
        let e = step(&f, &w.plan, &state).await.unwrap_err();
        assert!(e.to_string().contains("does not offer"), "{e}");
        // A role asked for another's phase refuses.
        let task = AgentTask {
            task_token: "t".into(),
            run_id: "r1".into(),
            role: Role::Critic,
            phase: Phase::Execute,
            lane: Lane::Execute,
            input: json!({"subtask": {"id": "s1", "tool": "kv_set"}}),
        };
        assert!(matches!(
            perform(&task, &f, &Policy::default(), None, now()).await,
            Err(AgentError::WrongRole { .. })
        ));
    }

    #[tokio::test]
    async fn a_model_plans_goals_in_words_and_advises_the_review_but_cannot_approve_over_it() {
        let k = crate::model::tests::katan(&[]);
        let model = Model::new(
            Box::new(
                crate::model::openai::OpenAi::new(
                    format!("http://127.0.0.1:{}/v1", k.port),
                    "m",
                    Some("sk-test".into()),
                )
                .unwrap(),
            ),
            std::time::Duration::from_secs(20),
            0,
            None,
        );
        let w = Workflow::lanes();
        let task = |step: &crate::workflow::AgentStep, input: &Value| AgentTask {
            task_token: "t".into(),
            run_id: "r1".into(),
            role: step.role,
            phase: step.phase,
            lane: step.lane,
            input: input.clone(),
        };
        // Words only: the model is asked; an empty proposal is refused, not planned.
        let f = Fake::default();
        let state = goal(&f, json!([]));
        let e = perform(
            &task(&w.plan, &state),
            &f,
            &Policy::default(),
            Some(&model),
            now(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("proposed no tool calls"), "{e}");
        assert_eq!(model.usage().calls, 1);
        // Given subtasks: planned without the model; the review asks it, and its refusal
        // (llm-katan answers `refuse: true`) takes the policy's approval away.
        let mut state = goal(
            &f,
            json!([{"tool": "kv_set", "arguments": {"key": "a", "value": "1"}}]),
        );
        state["plan"] = perform(
            &task(&w.plan, &state),
            &f,
            &Policy::default(),
            Some(&model),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(model.usage().calls, 1, "no model needed for given subtasks");
        state["review"] = perform(
            &task(&w.review, &state),
            &f,
            &Policy::default(),
            Some(&model),
            now(),
        )
        .await
        .unwrap();
        let r: Reviewed = serde_json::from_value(state["review"].clone()).unwrap();
        assert!(!r.approved && !r.needs_human, "{r:?}");
        assert_eq!(r.model_usage.map(|u| u.calls), Some(1));
        let verdict = Verdict::parse(&f.artifacts.lock().unwrap()["runs/r1/verdict.json"]).unwrap();
        assert!(
            verdict.model.as_ref().is_some_and(|m| m.refuse),
            "{verdict:?}"
        );
        assert!(
            verdict.findings.iter().all(|f| f.passed),
            "the policy itself approved"
        );
        state["outcome"] = json!({"status": "blocked"});
        perform(
            &task(&w.sweep, &state),
            &f,
            &Policy::default(),
            Some(&model),
            now(),
        )
        .await
        .unwrap();
        let record = f.timeline.lock().unwrap().last().cloned().unwrap();
        assert_eq!(record["metrics"]["model_calls"], 1, "{record}");
        assert!(
            record["metrics"]["model_input_tokens"].as_u64().is_some(),
            "{record}"
        );
    }
}
