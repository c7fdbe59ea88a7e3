//! Workspace operations on AWS, as the CLI and the tests use them: settings, plan, locked
//! apply with a record, destroy, status, unlock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::aws::{AwsClients, AwsSetupError, Caller};
use crate::components::network;
use crate::cost::{CostContext, CostDelta, CostError, PriceTable, Usage, seed_target};
use crate::engine::apply::{self, ApplyOptions, ApplyReport};
use crate::engine::lock::{
    ApplyRecord, DeployTable, Lease, LockError, LockInfo, RecordedChange, StoredSettings, iso,
    now_millis,
};
use crate::engine::plan::{self, Plan, PlanRequest};
use crate::engine::{EngineError, Resource};
use crate::tier::{ExtraSmall, XsSettings};
use crate::workspace::{Env, Tier, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Setup(#[from] AwsSetupError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the {0} tier is not available in this version yet: extra-small (xs) is")]
    TierNotBuilt(Tier),
    #[error(transparent)]
    Cost(#[from] CostError),
    #[error("the plan has problems that must be fixed first:\n  - {}", .0.join("\n  - "))]
    Problems(Vec<String>),
}

/// What the user asked for on this run. `None` means "as last deployed".
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub image: Option<String>,
    /// `Some(vec![])` clears the list.
    pub allow_cidrs: Option<Vec<String>>,
    pub vpc: Option<String>,
    pub subnets: Option<Vec<String>>,
    pub parallelism: usize,
    pub destroy_data: bool,
    pub service_wait: Option<Duration>,
    /// Usage profile for the cost shown with the plan (default `light`).
    pub usage: Option<String>,
    /// Monthly budget limit (default: the tier's target).
    pub budget_usd: Option<f64>,
    /// `Some("")` clears the address.
    pub alert_email: Option<String>,
}

const SETTING_IMAGE: &str = "image";
const SETTING_CIDRS: &str = "allow_cidrs";
const SETTING_VPC: &str = "vpc";
const SETTING_SUBNETS: &str = "subnets";
const SETTING_BUDGET: &str = "budget_usd";
const SETTING_EMAIL: &str = "alert_email";

/// The highest tier this build can deploy.
pub const HIGHEST_BUILT: Tier = Tier::ExtraSmall;

pub struct Deployer {
    pub aws: AwsClients,
    pub ws: Workspace,
    pub caller: Caller,
    pub table: DeployTable,
}

/// A plan together with the settings it was made for.
pub struct Planned {
    pub plan: Plan,
    pub settings: StoredSettings,
    /// Settings differ from the stored ones (a deploy then records them even without
    /// resource changes).
    pub settings_changed: bool,
}

impl Deployer {
    pub async fn connect(aws: AwsClients, env: Env) -> Result<Self, OpsError> {
        let caller = aws.caller().await?;
        let ws = Workspace::new(env, caller.account.clone(), aws.region.clone());
        let table = DeployTable::new(&aws, &ws);
        Ok(Deployer {
            aws,
            ws,
            caller,
            table,
        })
    }

    /// Merges this run's inputs over the settings of the last deploy.
    pub async fn settings(&self, inputs: &Inputs) -> Result<(StoredSettings, bool), OpsError> {
        let stored = self.table.load_settings().await?;
        let mut values = stored.values.clone();
        let mut put = |k: &str, v: Value| {
            values.insert(k.to_string(), v);
        };
        if let Some(i) = &inputs.image {
            put(SETTING_IMAGE, json!(i));
        }
        if let Some(c) = &inputs.allow_cidrs {
            let mut c = c.clone();
            c.sort();
            c.dedup();
            put(SETTING_CIDRS, json!(c));
        }
        if let Some(v) = &inputs.vpc {
            put(SETTING_VPC, json!(v));
        }
        if let Some(s) = &inputs.subnets {
            put(SETTING_SUBNETS, json!(s));
        }
        if let Some(b) = inputs.budget_usd {
            put(SETTING_BUDGET, json!(b));
        }
        if let Some(e) = &inputs.alert_email {
            put(SETTING_EMAIL, json!(e));
        }
        let merged = StoredSettings { values };
        let changed = merged != stored;
        Ok((merged, changed))
    }

    async fn xs_settings(
        &self,
        s: &StoredSettings,
        inputs: &Inputs,
        target: Option<Tier>,
    ) -> Result<XsSettings, OpsError> {
        let get_str = |k: &str| s.values.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let get_list = |k: &str| -> Vec<String> {
            s.values
                .get(k)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default()
        };
        let net = network::resolve(
            &self.aws,
            get_str(SETTING_VPC).as_deref(),
            &get_list(SETTING_SUBNETS),
        )
        .await?;
        let mut xs = XsSettings::new(net);
        xs.image = get_str(SETTING_IMAGE);
        xs.allow_cidrs = get_list(SETTING_CIDRS);
        xs.budget_usd = s
            .values
            .get(SETTING_BUDGET)
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| seed_target(target.unwrap_or(Tier::ExtraSmall)).1);
        xs.alert_email = get_str(SETTING_EMAIL).filter(|e| !e.is_empty());
        if let Some(w) = inputs.service_wait {
            xs.service_wait = w;
        }
        Ok(xs)
    }

    /// Every resource of every tier this build knows, for these settings.
    fn universe(&self, xs: &XsSettings) -> (Vec<Arc<dyn Resource>>, Vec<String>) {
        let tier = ExtraSmall::new(&self.ws, xs);
        (tier.resources(), tier.problems)
    }

    /// Plans converging the workspace to `target` (`None`: remove everything).
    pub async fn plan(&self, target: Option<Tier>, inputs: &Inputs) -> Result<Planned, OpsError> {
        if let Some(t) = target
            && t > HIGHEST_BUILT
        {
            return Err(OpsError::TierNotBuilt(t));
        }
        let (settings, settings_changed) = self.settings(inputs).await?;
        let xs = self.xs_settings(&settings, inputs, target).await?;
        let (universe, problems) = self.universe(&xs);
        let mut plan = plan::plan(
            &self.aws,
            PlanRequest {
                universe,
                target,
                destroy_data: inputs.destroy_data,
                parallelism: inputs.parallelism.max(1),
            },
        )
        .await?;
        if target.is_some() {
            // The image matters only when the dashboard task is being (re)defined.
            let needs_image = plan
                .change(crate::tier::ids::DASHBOARD_TASK_DEFINITION)
                .is_some_and(|c| c.action.is_change());
            plan.problems.extend(
                problems
                    .into_iter()
                    .filter(|p| needs_image || !p.contains("--image")),
            );
            if xs.allow_cidrs.is_empty() {
                plan.notes.push(format!(
                    "the dashboard admits no one: add --allow-cidr YOUR.IP/32 to reach port {}",
                    crate::config::DASHBOARD_PORT
                ));
            }
        }
        let usage_name = inputs.usage.clone().unwrap_or_else(|| "light".into());
        let usage = Usage::load(&usage_name)?;
        match PriceTable::builtin().and_then(|t| t.region(&self.ws.region).map(|p| (t, p))) {
            Ok((table, prices)) => {
                let ctx = CostContext {
                    prices,
                    usage: &usage,
                    hours: table.hours_per_month,
                };
                let sum = |keep: &dyn Fn(&dyn Resource) -> bool| -> f64 {
                    plan.resources
                        .iter()
                        .filter(|r| keep(r.as_ref()))
                        .flat_map(|r| r.monthly_cost(&ctx))
                        .map(|l| l.monthly)
                        .sum()
                };
                let observed: std::collections::HashSet<&str> =
                    plan.observed.keys().copied().collect();
                let before = sum(&|r| observed.contains(r.id()));
                let after = sum(&|r| target.is_some_and(|t| r.tier() <= t));
                plan.cost = Some(CostDelta {
                    before,
                    after,
                    usage: usage.name.clone(),
                    region: self.ws.region.clone(),
                });
            }
            Err(e) => plan.notes.push(format!("cost not shown: {e}")),
        }
        if self.aws.is_custom_endpoint() {
            plan.notes.push(format!(
                "endpoint: {}",
                self.aws.endpoint.clone().unwrap_or_default()
            ));
        }
        Ok(Planned {
            plan,
            settings,
            settings_changed,
        })
    }

    /// Who takes the lock: the caller, this host and process.
    pub fn holder(&self) -> String {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown-host".into());
        format!("{} on {host} (pid {})", self.caller.arn, std::process::id())
    }

    /// Creates the deploy table if needed and takes the workspace lock.
    pub async fn lock(&self, ttl: Duration) -> Result<Lease, OpsError> {
        self.table.ensure().await?;
        Ok(self.table.acquire(&self.holder(), ttl).await?)
    }

    /// Applies a plan made under the lock, records it, and stores the settings.
    pub async fn apply(
        &self,
        planned: &Planned,
        lease: &Lease,
        mut opts: ApplyOptions,
    ) -> Result<ApplyReport, OpsError> {
        if !planned.plan.problems.is_empty() {
            return Err(OpsError::Problems(planned.plan.problems.clone()));
        }
        // Losing the lease stops the apply like Ctrl-C does.
        let cancel = opts.cancel.clone();
        let lost = lease.lost.clone();
        let watcher = tokio::spawn(async move {
            lost.cancelled().await;
            cancel.cancel();
        });
        opts.parallelism = opts.parallelism.max(1);
        let report = apply::apply(&self.aws, &planned.plan, opts).await;
        watcher.abort();
        if planned.plan.target.is_some() {
            self.table.save_settings(&planned.settings).await?;
        }
        self.record(&planned.plan, &report).await?;
        Ok(report)
    }

    async fn record(&self, plan: &Plan, report: &ApplyReport) -> Result<(), OpsError> {
        let ms = now_millis() as u64;
        let rec = ApplyRecord {
            at: iso(ms / 1000),
            at_ms: ms,
            tier: plan.target,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            caller: self.caller.arn.clone(),
            succeeded: report.succeeded(),
            cancelled: report.cancelled,
            changes: report
                .results
                .iter()
                .map(|r| RecordedChange {
                    id: r.id.to_string(),
                    name: r.name.clone(),
                    action: r.action.verb().to_string(),
                    outcome: match &r.outcome {
                        apply::Outcome::Done => "done".into(),
                        apply::Outcome::Unchanged => "unchanged".into(),
                        apply::Outcome::Failed(e) => format!("failed: {e}"),
                        apply::Outcome::Skipped(e) => format!("skipped: {e}"),
                        apply::Outcome::Kept(e) => format!("kept: {e}"),
                        apply::Outcome::NotStarted => "not started (cancelled)".into(),
                    },
                })
                .collect(),
        };
        self.table.record_apply(&rec).await?;
        Ok(())
    }

    pub async fn status(&self) -> Result<Status, OpsError> {
        let history = self.table.history(10).await?;
        let lock = self.table.read_lock().await?;
        let deployed = history.iter().find(|r| r.succeeded).map(|r| r.tier);
        let target = deployed.flatten();
        let planned = self
            .plan(
                target.or(Some(Tier::ExtraSmall)),
                &Inputs {
                    parallelism: 8,
                    ..Inputs::default()
                },
            )
            .await;
        let mut resources = Vec::new();
        let mut in_sync = None;
        if let Ok(p) = &planned {
            let observed: HashMap<&str, bool> =
                p.plan.observed.keys().map(|k| (*k, true)).collect();
            for c in &p.plan.changes {
                resources.push(json!({
                    "id": c.id, "kind": c.kind, "name": c.name, "tier": c.tier.short(),
                    "exists": observed.contains_key(c.id),
                    "drift": if target.is_some() { c.action.is_change() } else { false },
                }));
            }
            in_sync = target.map(|_| !p.plan.has_changes());
        }
        Ok(Status {
            workspace: self.ws.id(),
            account: self.ws.account.clone(),
            region: self.ws.region.clone(),
            deployed_tier: target,
            in_sync,
            lock,
            resources,
            history,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub workspace: String,
    pub account: String,
    pub region: String,
    pub deployed_tier: Option<Tier>,
    /// Whether the cloud matches the deployed tier (no drift).
    pub in_sync: Option<bool>,
    pub lock: Option<LockInfo>,
    pub resources: Vec<Value>,
    pub history: Vec<ApplyRecord>,
}
