//! The workspace's operations as tools: `workspace_plan` previews a tier change or a setting
//! of a deployed workspace (the plan text, its SHA-256 and its monthly cost delta), and
//! `workspace_apply` applies exactly that plan. A workflow's conductor plans with the first;
//! its execute phase runs the second once an approval names the plan (its hash is one of the
//! subtask's arguments), and the apply refuses when the plan it would run under the deploy
//! lock differs from the one approved.
//!
//! A server offers them only when its operator says which workspace and which tenant
//! (`agentbus up --workspace-env`): a workspace is shared by every tenant, so one tenant, the
//! operator's, governs it. The deploy runs with the operator's AWS credentials, through the
//! same [`Deployer`] as `agentbus deploy`: the same lock, the same history, and no flag that
//! deletes data (`--destroy-data` is not among the flags a tool takes).

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::apply::ApplyOptions;
use crate::engine::lock::RecordedChange;
use crate::ops::{ConvergeUi, Converged, Deployer, Inputs, OpsError, Planned, header};
use crate::runtime::Tenant;
use crate::server::auth::{Identity, Role};
use crate::server::mcp::{Access, Route, ToolExtension, tool_spec, typed_route};
use crate::workspace::Tier;

/// Turns the flags of `agentbus plan` (`--vpc`, `--profile-usage`, the tiers' flags) into a
/// deploy's inputs; an unknown or malformed flag is an error naming it.
pub type ParseFlags = Arc<dyn Fn(&[String]) -> Result<Inputs, String> + Send + Sync>;

/// How long the deploy lock of a tool's apply lives without a heartbeat.
const LOCK_TTL: Duration = Duration::from_secs(60);

/// `workspace_plan` and `workspace_apply` for one deployed workspace.
#[derive(Clone)]
pub struct WorkspaceTools {
    deployer: Arc<Deployer>,
    /// The tenant that governs the workspace.
    tenant: Tenant,
    flags: ParseFlags,
}

impl WorkspaceTools {
    pub fn new(deployer: Deployer, tenant: Tenant, flags: ParseFlags) -> Self {
        WorkspaceTools {
            deployer: Arc::new(deployer),
            tenant,
            flags,
        }
    }

    /// The workspace these tools change (`agentbus-{env}` in its account and region).
    pub fn workspace(&self) -> String {
        self.deployer.ws.id()
    }

    fn governs(&self, id: &Identity) -> Result<(), String> {
        if id.tenant != self.tenant {
            return Err(format!(
                "the workspace {} is governed by tenant {}: its operations are not offered to tenant {}",
                self.deployer.ws.id(),
                self.tenant,
                id.tenant
            ));
        }
        Ok(())
    }

    async fn planned(&self, change: &Change) -> Result<(Tier, Planned), String> {
        let tier: Tier = change.tier.parse().map_err(|e| format!("tier: {e}"))?;
        let inputs = (self.flags)(&change.flags)?;
        let planned = self
            .deployer
            .plan(Some(tier), &inputs)
            .await
            .map_err(|e| e.to_string())?;
        Ok((tier, planned))
    }

    /// The plan as people read it, exactly what its hash covers.
    fn text(&self, tier: Tier, planned: &Planned) -> String {
        format!(
            "{}{}",
            header(&self.deployer.ws, &format!("Plan: {tier} for")),
            planned.plan.render(false)
        )
    }

    async fn plan(&self, id: Identity, change: Change) -> Result<WorkspacePlan, String> {
        self.governs(&id)?;
        let (tier, planned) = self.planned(&change).await?;
        let text = self.text(tier, &planned);
        let deployed = self
            .deployer
            .table
            .history(10)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|r| r.succeeded)
            .and_then(|r| r.tier);
        let plan = &planned.plan;
        Ok(WorkspacePlan {
            workspace: self.deployer.ws.id(),
            tier: tier.short().to_string(),
            deployed_tier: deployed.map(|t| t.short().to_string()),
            plan_sha256: digest(&text),
            changes: plan.changes.iter().filter(|c| c.action.is_change()).count(),
            cost_delta_monthly: plan.cost.as_ref().map(|c| round_cents(c.after - c.before)),
            problems: plan.problems.clone(),
            plan: text,
        })
    }

    async fn apply(&self, id: Identity, a: ApplyArgs) -> Result<WorkspaceApplied, String> {
        self.governs(&id)?;
        // A person applies with an admin token; an agent only as a run's execute phase, which
        // runs nothing an approval does not name.
        let agent_executes = id.run.is_some() && id.role.can_write();
        if id.role != Role::Admin && !agent_executes {
            return Err(
                "workspace_apply needs an admin token, or a workflow run's approved execute phase"
                    .into(),
            );
        }
        let tier: Tier = a.tier.parse().map_err(|e| format!("tier: {e}"))?;
        let inputs = (self.flags)(&a.flags)?;
        let ui = Approved {
            tools: self.clone(),
            tier,
            sha: a.plan_sha256.clone(),
        };
        // The apply goes on if the caller goes away: an apply stopped half-way would leave
        // the lock and the workspace in between.
        let deployer = self.deployer.clone();
        let job = tokio::spawn(async move {
            let converged = deployer
                .converge(Some(tier), &inputs, LOCK_TTL, &ui, ApplyOptions::default())
                .await;
            (converged, ui)
        });
        let (converged, ui) = job.await.map_err(|e| format!("the apply stopped: {e}"))?;
        let workspace = self.deployer.ws.id();
        match converged {
            Ok(Converged::Applied {
                planned, report, ..
            }) => Ok(WorkspaceApplied {
                workspace,
                tier: tier.short().to_string(),
                plan_sha256: digest(&ui.text(&planned)),
                succeeded: report.succeeded(),
                changes: report.recorded_changes(),
            }),
            Ok(Converged::Unchanged(planned)) if digest(&ui.text(&planned)) == a.plan_sha256 => {
                Ok(WorkspaceApplied {
                    workspace,
                    tier: tier.short().to_string(),
                    plan_sha256: a.plan_sha256,
                    succeeded: true,
                    changes: Vec::new(),
                })
            }
            Ok(Converged::Unchanged(planned)) | Ok(Converged::Declined(planned)) => Err(format!(
                "the workspace's plan is no longer the approved one (now {}, approved {}): plan again with workspace_plan",
                digest(&ui.text(&planned)),
                a.plan_sha256
            )),
            Err(OpsError::Problems(p)) => Err(format!(
                "the plan has problems, nothing was applied: {}",
                p.join("; ")
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The converge's questions, answered by the approval: apply only the plan it names.
struct Approved {
    tools: WorkspaceTools,
    tier: Tier,
    sha: String,
}

impl Approved {
    fn text(&self, planned: &Planned) -> String {
        self.tools.text(self.tier, planned)
    }
}

impl ConvergeUi for Approved {
    fn show(&self, _planned: &Planned) {}
    fn assume_yes(&self) -> bool {
        false
    }
    fn can_ask(&self) -> bool {
        true
    }
    fn confirm(&self, planned: &Planned) -> bool {
        digest(&self.text(planned)) == self.sha
    }
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn round_cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A change of the workspace: a tier, and flags as `agentbus plan` takes them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// extra-small (xs), small, medium or large.
    pub tier: String,
    /// Flags as `agentbus plan` takes them, e.g. ["--budget", "25"]; remembered settings
    /// apply unless a flag changes them.
    #[serde(default)]
    pub flags: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyArgs {
    /// The tier, as given to workspace_plan.
    pub tier: String,
    /// The flags, as given to workspace_plan.
    #[serde(default)]
    pub flags: Vec<String>,
    /// The plan_sha256 workspace_plan gave for this change: the apply refuses any other plan.
    pub plan_sha256: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WorkspacePlan {
    /// The workspace: `agentbus-{env}` in its account and region.
    pub workspace: String,
    pub tier: String,
    /// The tier of the last successful deploy, if any (what a rollback returns to).
    pub deployed_tier: Option<String>,
    /// The plan as `agentbus plan` shows it: every change, field by field, and the cost.
    pub plan: String,
    /// SHA-256 of `plan`: what workspace_apply and an approval name.
    pub plan_sha256: String,
    /// Resources created, changed, replaced or deleted.
    pub changes: usize,
    /// Monthly cost after minus before (USD), when the tier is priced.
    pub cost_delta_monthly: Option<f64>,
    /// What stops the plan from being applied; empty when it can be.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WorkspaceApplied {
    pub workspace: String,
    pub tier: String,
    pub plan_sha256: String,
    pub succeeded: bool,
    /// What happened to each resource, as the apply history records it.
    pub changes: Vec<RecordedChange>,
}

impl ToolExtension for WorkspaceTools {
    fn instructions(&self) -> &'static str {
        "workspace_plan previews a change of the deployed workspace (a tier, or the flags of \
         `agentbus plan`) with its cost delta and the plan's SHA-256; workspace_apply applies \
         exactly that plan, for an admin or a workflow run's approved execute phase."
    }

    fn routes(&self) -> Vec<Route> {
        let open = |read_only: bool, destructive: bool| {
            rmcp::model::ToolAnnotations::new()
                .read_only(read_only)
                .destructive(destructive)
                .idempotent(read_only)
                .open_world(true)
        };
        let plan = {
            let t = self.clone();
            typed_route(
                tool_spec(
                    "workspace_plan",
                    "Preview a change of the deployed workspace: to a tier, with the flags of `agentbus plan`. Changes nothing. Returns the plan text, its SHA-256 (what workspace_apply and an approval name), the monthly cost delta and any problems.",
                    open(true, false),
                ),
                Access::Read,
                move |id: Identity, a: Change| {
                    let t = t.clone();
                    async move { t.plan(id, a).await }
                },
            )
        };
        let apply = {
            let t = self.clone();
            typed_route(
                tool_spec(
                    "workspace_apply",
                    "Apply a change of the deployed workspace exactly as workspace_plan showed it: give the same tier and flags and its plan_sha256. Refuses if the plan under the deploy lock differs. Never deletes data-bearing resources.",
                    open(false, true),
                ),
                Access::Write,
                move |id: Identity, a: ApplyArgs| {
                    let t = t.clone();
                    async move { t.apply(id, a).await }
                },
            )
        };
        vec![plan, apply]
    }
}
