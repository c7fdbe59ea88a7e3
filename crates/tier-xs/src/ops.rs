//! Workspace operations on AWS, as the CLI and the tests use them: settings, plan, locked
//! apply with a record, destroy, status, unlock.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::aws::{AwsClients, AwsSetupError, Caller};
use crate::components::network;
use crate::cost::{CostDelta, CostError, Usage};
use crate::engine::apply::{self, ApplyOptions, ApplyReport};
use crate::engine::lock::{
    ApplyRecord, DeployTable, Lease, LockError, LockInfo, LockSeen, StoredSettings, iso, now_millis,
};
use crate::engine::plan::{self, Plan, PlanRequest};
use crate::engine::{self, EngineError, Resource};
use crate::image::platform::CpuArchitecture;
use crate::ladder::{IMAGE_ARCHITECTURES, Ladder, LadderError, LayerContext, monthly_total};
use crate::server::tls::Fingerprint;
use crate::workspace::{Env, Tier, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Setup(#[from] AwsSetupError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Ladder(#[from] LadderError),
    #[error(transparent)]
    Cost(#[from] CostError),
    #[error("the plan has problems that must be fixed first:\n  - {}", .0.join("\n  - "))]
    Problems(Vec<String>),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("{0}")]
    Registry(String),
    #[error("refusing to change anything without confirmation: pass --yes")]
    NeedsConfirmation,
    #[error("could not take the workspace lock: {0}")]
    Locking(LockError),
    #[error("releasing the workspace lock: {0}")]
    Releasing(LockError),
    #[error("{0}")]
    Unknown(String),
    #[error("workspace {0} has no deployed tier: `agentbus deploy` first")]
    NotDeployed(String),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// How a deploy talks to the person running it: shows plans, asks before applying.
pub trait ConvergeUi: Send + Sync {
    /// Shows a plan (the one being applied, or the one that stops the run).
    fn show(&self, planned: &Planned);
    /// Whether the run may change things without asking (`--yes`).
    fn assume_yes(&self) -> bool;
    /// Whether someone can be asked.
    fn can_ask(&self) -> bool;
    /// Asks whether to apply the plan just shown.
    fn confirm(&self, planned: &Planned) -> bool;
    /// The apply starts now (a CLI starts listening for Ctrl-C here).
    fn applying(&self, _parallelism: usize) {}
}

/// How a converge ended.
pub enum Converged {
    /// Nothing to change: nothing was written, not even the lock.
    Unchanged(Planned),
    /// The person said no; nothing changed.
    Declined(Planned),
    /// Applied (completely or not: the report says).
    Applied {
        planned: Planned,
        report: ApplyReport,
        /// After a destroy: whether the deploy table (the apply history) went too.
        deploy_table: Option<TableFate>,
    },
}

/// What a destroy did with the deploy table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFate {
    Deleted,
    Kept,
}

/// The network of the commands that need no AWS account.
fn stand_in_network() -> network::Network {
    network::Network {
        vpc_id: "(default VPC)".into(),
        subnet_ids: Vec::new(),
        zones: Default::default(),
    }
}

/// The layout context of the commands that need no AWS account, for `target`.
fn offline_context<'a>(
    ws: &'a Workspace,
    settings: &'a StoredSettings,
    network: &'a network::Network,
    target: Tier,
) -> LayerContext<'a> {
    LayerContext {
        ws,
        settings,
        network,
        target: Some(target),
        plain_http: false,
        service_wait: DEFAULT_SERVICE_WAIT,
        budget_default: 0.0,
        estimate: None,
    }
}

/// What a deployer needs for workspace `ws` to plan it, deploy it up to `tier`, destroy it,
/// see its status, unlock it, push its image and manage its tokens (needs no AWS account).
/// Plans observe every resource this build knows, so the reads cover every tier; the changes
/// stay within `tier`.
pub fn deployer_permissions(
    ladder: &Ladder,
    tier: Tier,
    ws: &Workspace,
) -> Result<crate::engine::Permissions, OpsError> {
    ladder.check(tier)?;
    let network = stand_in_network();
    let settings = StoredSettings::default();
    let ctx = offline_context(ws, &settings, &network, tier);
    let mut all = foundation_permissions(ws);
    let resources = ladder.universe(&ctx).resources;
    let parts = resources
        .iter()
        .map(|r| (r.tier(), r.permissions(ws)))
        .chain(
            ladder
                .layers()
                .iter()
                .map(|l| (l.tier(), l.permissions(ws))),
        );
    for (at, p) in parts {
        all.read.extend(p.read);
        if at <= tier {
            all.write.extend(p.write);
        }
    }
    Ok(all)
}

/// The calls the deploy makes outside any resource: who is calling, the deploy table (lock,
/// settings, history), the network, the image's registry, the tokens in the server secret.
fn foundation_permissions(ws: &Workspace) -> crate::engine::Permissions {
    use crate::engine::permissions::any;
    let table = [ws.arn(
        "dynamodb",
        &format!("table/{}", crate::engine::lock::deploy_table_name(ws)),
    )];
    let repository = [ws.arn(
        "ecr",
        &format!("repository/{}", crate::xs::image_repository_name(ws)),
    )];
    let secret = [ws.arn(
        "secretsmanager",
        &format!("secret:{}-??????", ws.secret_name("server")),
    )];
    crate::engine::Permissions::new()
        // GetCallerIdentity needs no permission.
        .read(
            &[
                "dynamodb:DescribeTable",
                "dynamodb:GetItem",
                "dynamodb:Query",
            ],
            &table,
        )
        .read(&["ec2:DescribeVpcs", "ec2:DescribeSubnets"], &any())
        // The image's manifest and config: it must exist, and its architecture is the
        // task's.
        .read(
            &["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            &repository,
        )
        .write(
            &[
                "dynamodb:CreateTable",
                "dynamodb:TagResource",
                "dynamodb:UpdateContinuousBackups",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:DeleteTable",
            ],
            &table,
        )
        // `image push`: the registry's login and its upload protocol.
        .write(&["ecr:GetAuthorizationToken"], &any())
        .write(
            &[
                "ecr:BatchCheckLayerAvailability",
                "ecr:InitiateLayerUpload",
                "ecr:UploadLayerPart",
                "ecr:CompleteLayerUpload",
                "ecr:PutImage",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            &repository,
        )
        // `token create|list|revoke` and `certificate rotate`: in the server secret.
        .write(
            &[
                "secretsmanager:DescribeSecret",
                "secretsmanager:GetSecretValue",
                "secretsmanager:PutSecretValue",
            ],
            &secret,
        )
}

/// [`deployer_permissions`] as IAM managed policy documents (more than one when they would
/// not fit IAM's size limit in one).
pub fn deployer_policy(
    ladder: &Ladder,
    tier: Tier,
    ws: &Workspace,
) -> Result<Vec<Value>, OpsError> {
    let p = deployer_permissions(ladder, tier, ws)?;
    Ok(crate::components::iam::documents(
        p.read.iter().chain(&p.write),
    ))
}

/// Prices `tier` of a ladder without an AWS account: prices do not depend on the account, so
/// the names use the all-zero account id and the network is a stand-in.
pub fn price(
    ladder: &Ladder,
    tier: Tier,
    env: Env,
    region: &str,
    usage: &str,
) -> Result<crate::cost::CostReport, OpsError> {
    Ok(priced(ladder, tier, env, region, usage)?.0)
}

/// The report of [`price`], with the resources it priced.
fn priced(
    ladder: &Ladder,
    tier: Tier,
    env: Env,
    region: &str,
    usage: &str,
) -> Result<(crate::cost::CostReport, Vec<Arc<dyn Resource>>), OpsError> {
    ladder.check(tier)?;
    let ws = Workspace::new(env, "000000000000", region);
    let network = stand_in_network();
    let settings = StoredSettings::default();
    let usage = ladder.usage_book().load(usage)?;
    let ctx = ladder.with_estimates(offline_context(&ws, &settings, &network, tier), &usage);
    let universe = ladder.universe(&ctx);
    let report = ladder.cost_report(tier, region, &usage, &universe.resources)?;
    Ok((report, universe.resources))
}

/// One resource of a tier, as the console lists it.
#[derive(Clone, Debug, Serialize)]
pub struct TierResource {
    /// Logical id (what plans and apply records name it by).
    pub id: String,
    pub kind: &'static str,
    /// The tier that brings it.
    pub tier: String,
    /// Its share of the monthly estimate (the `light` usage profile).
    pub monthly_usd: f64,
}

/// What the console shows of a tier without an AWS account: the resources a deploy of it
/// has, and its monthly cost line by line (the numbers of `agentbus cost TIER`).
#[derive(Clone, Debug, Serialize)]
pub struct TierFacts {
    pub region: String,
    pub resources: Vec<TierResource>,
    pub cost: crate::cost::CostReport,
}

pub fn tier_facts(
    ladder: &Ladder,
    tier: Tier,
    env: Env,
    region: &str,
) -> Result<TierFacts, OpsError> {
    let (cost, universe) = priced(ladder, tier, env, region, "light")?;
    let resources = universe
        .iter()
        .filter(|r| r.meta().tier <= tier)
        .map(|r| {
            let id = r.meta().id.to_string();
            TierResource {
                monthly_usd: cost
                    .lines
                    .iter()
                    .filter(|l| l.resource == id)
                    .map(|l| l.monthly)
                    .sum(),
                kind: r.kind(),
                tier: r.meta().tier.short().to_string(),
                id,
            }
        })
        .collect();
    Ok(TierFacts {
        region: region.to_string(),
        resources,
        cost,
    })
}

/// A layer's document `name` (see [`crate::ladder::Document`]) for a workspace of `env` in
/// `region` and `account` with `settings` (the tiers' flags), as the deploy would build it;
/// needs no AWS account. An unknown name is an error that lists the known ones.
pub fn document(
    ladder: &Ladder,
    env: Env,
    region: &str,
    account: &str,
    settings: BTreeMap<String, Value>,
    name: &str,
) -> Result<String, OpsError> {
    let ws = Workspace::new(env, account, region);
    let network = stand_in_network();
    let settings = StoredSettings {
        values: settings.into_iter().collect(),
    };
    let ctx = offline_context(&ws, &settings, &network, ladder.highest());
    let documents: Vec<_> = ladder
        .layers()
        .iter()
        .flat_map(|l| l.documents(&ctx))
        .collect();
    documents
        .iter()
        .find(|d| d.name == name)
        .map(|d| d.text.clone())
        .ok_or_else(|| {
            OpsError::Unknown(format!(
                "no document {name:?} in this build; there are: {}",
                documents
                    .iter()
                    .map(|d| format!("{} ({})", d.name, d.about))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// What the user asked for on this run.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Settings to merge over the remembered ones (the tiers' flags, [`SETTING_VPC`] and
    /// [`SETTING_SUBNETS`]); an empty string or list clears one.
    pub settings: BTreeMap<String, Value>,
    pub parallelism: usize,
    pub destroy_data: bool,
    /// Stop the work in flight that a removed layer would cut off (running workflows),
    /// instead of refusing to remove it.
    pub stop_in_flight: bool,
    pub service_wait: Option<Duration>,
    /// Usage profile for the cost shown with the plan (default `light`).
    pub usage: Option<String>,
}

/// The workspace's VPC (remembered; default: the region's default VPC).
pub const SETTING_VPC: &str = "vpc";
/// The workspace's subnets (remembered; default: the VPC's default subnets).
pub const SETTING_SUBNETS: &str = "subnets";

/// How long a deploy waits for services to become steady unless told otherwise.
pub const DEFAULT_SERVICE_WAIT: Duration = Duration::from_secs(600);

pub struct Deployer {
    pub aws: AwsClients,
    pub ws: Workspace,
    pub caller: Caller,
    pub table: DeployTable,
    pub ladder: Ladder,
}

/// A plan together with the settings it was made for.
pub struct Planned {
    pub plan: Plan,
    pub settings: StoredSettings,
    /// Settings differ from the stored ones (a deploy then records them even without
    /// resource changes).
    pub settings_changed: bool,
    /// The lock as it was before the plan's observations.
    pub lock_seen: LockSeen,
}

/// This run's inputs merged over the stored settings, and whether that changes them.
fn merge_settings(stored: StoredSettings, inputs: &Inputs) -> (StoredSettings, bool) {
    let mut values = stored.values.clone();
    for (k, v) in &inputs.settings {
        values.insert(k.clone(), v.clone());
    }
    let merged = StoredSettings { values };
    let changed = merged != stored;
    (merged, changed)
}

/// The state of one resource of the workspace, as `status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ResourceStatus {
    pub id: &'static str,
    pub kind: &'static str,
    pub name: String,
    pub tier: &'static str,
    pub exists: bool,
    /// It exists but differs from what the deployed tier wants.
    pub drift: bool,
}

impl Deployer {
    /// A deployer for every tier `ladder` knows.
    pub async fn connect(aws: AwsClients, env: Env, ladder: Ladder) -> Result<Self, OpsError> {
        let caller = aws.caller().await?;
        let ws = Workspace::new(env, caller.account.clone(), aws.region.clone());
        let table = DeployTable::new(&aws, &ws);
        Ok(Deployer {
            aws,
            ws,
            caller,
            table,
            ladder,
        })
    }

    /// Merges this run's inputs over the settings of the last deploy.
    pub async fn settings(&self, inputs: &Inputs) -> Result<(StoredSettings, bool), OpsError> {
        Ok(merge_settings(self.table.load_settings().await?, inputs))
    }

    /// What a plan starts from, read together: the deploy table's lock, this run's settings
    /// merged over the stored ones (and whether that changes them), and the workspace's
    /// network. Unless this run names a VPC or subnets, the region's default network is looked
    /// up while the table is read, and used unless the stored settings name one (a deploy
    /// stores `--vpc` and `--subnet`, so a named network costs a round trip more).
    async fn starting_point(
        &self,
        inputs: &Inputs,
    ) -> Result<(LockSeen, StoredSettings, bool, network::Network), OpsError> {
        let names_network = [SETTING_VPC, SETTING_SUBNETS]
            .iter()
            .any(|k| inputs.settings.contains_key(*k));
        let default = async {
            if names_network {
                None
            } else {
                Some(network::resolve(&self.aws, None, &[]).await)
            }
        };
        let (table, default) = tokio::join!(self.table.snapshot(), default);
        let table = table?;
        let (settings, changed) = merge_settings(table.settings, inputs);
        let (vpc, subnets) = (settings.text(SETTING_VPC), settings.list(SETTING_SUBNETS));
        let network = match default {
            Some(default) if vpc.is_none() && subnets.is_empty() => default?,
            _ => network::resolve(&self.aws, vpc.as_deref(), &subnets).await?,
        };
        Ok((table.lock, settings, changed, network))
    }

    /// Plans converging the workspace to `target` (`None`: remove everything).
    pub async fn plan(&self, target: Option<Tier>, inputs: &Inputs) -> Result<Planned, OpsError> {
        if let Some(t) = target {
            self.ladder.check(t)?;
        }
        let (lock_seen, mut settings, mut settings_changed, network) =
            self.starting_point(inputs).await?;
        let usage = self
            .ladder
            .usage_book()
            .load(inputs.usage.as_deref().unwrap_or("light"))?;
        let mut universe = self
            .ladder
            .universe(&self.layer_context(&settings, &network, target, inputs, &usage));
        // Images looked up by this plan, with what was found: an architecture, or a problem.
        let mut inspected = BTreeMap::new();
        if target.is_some() {
            let learned;
            (inspected, learned) = self
                .learn_architectures(&universe.images, &mut settings)
                .await;
            if learned {
                settings_changed = true;
                universe = self
                    .ladder
                    .universe(&self.layer_context(&settings, &network, target, inputs, &usage));
            }
        }
        let mut plan = plan::plan(
            &self.aws,
            PlanRequest {
                universe: universe.resources,
                target,
                destroy_data: inputs.destroy_data,
                parallelism: inputs.parallelism.max(1),
            },
        )
        .await?;
        if target.is_some() {
            let changing = |id: &str| plan.change(id).is_some_and(|c| c.action.is_change());
            // One line per problem, however many resources it blocks.
            let mut problems: Vec<String> = Vec::new();
            for p in universe
                .problems
                .iter()
                .filter(|p| p.only_if_changing.is_none_or(&changing))
            {
                let p = p.to_string();
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
            // Never point a task at an image its registry does not have.
            let images: Vec<String> = universe
                .images
                .iter()
                .filter(|(id, image)| changing(id) && !image.is_empty())
                .map(|(_, image)| image.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            plan.problems.extend(problems);
            for image in images {
                let found = match inspected.remove(&image) {
                    Some(found) => found,
                    None => self.inspect_image(&image).await,
                };
                if let Err(problem) = found {
                    plan.problems.push(problem);
                }
            }
            plan.notes.extend(universe.notes);
        }
        self.check_in_flight(&mut plan, target, inputs.stop_in_flight)
            .await?;
        match self.cost_delta(&plan, target, &usage) {
            Ok(delta) => plan.cost = Some(delta),
            Err(e @ CostError::BadProfile { .. }) | Err(e @ CostError::UnknownProfile(_)) => {
                return Err(e.into());
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
            lock_seen,
        })
    }

    /// Layers whose resources this plan deletes, by tier.
    fn leaving<'a>(
        &'a self,
        plan: &'a Plan,
        target: Option<Tier>,
    ) -> impl Iterator<Item = &'a std::sync::Arc<dyn crate::ladder::Layer>> {
        self.ladder.removed(target).filter(move |l| {
            plan.changes
                .iter()
                .any(|c| c.tier == l.tier() && c.action == plan::Action::Delete)
        })
    }

    /// A plan that removes a layer with work in flight refuses, unless told to stop it.
    async fn check_in_flight(
        &self,
        plan: &mut Plan,
        target: Option<Tier>,
        stop: bool,
    ) -> Result<(), OpsError> {
        let mut found = Vec::new();
        for layer in self.leaving(plan, target) {
            found.extend(layer.in_flight(&self.aws, &self.ws).await?);
        }
        for work in found {
            if stop {
                plan.notes.push(format!(
                    "{work}: stopped before the tier goes (--stop-in-flight)"
                ));
            } else {
                plan.problems.push(format!(
                    "{work}: let it end or cancel it first, or pass --stop-in-flight to stop it"
                ));
            }
        }
        Ok(())
    }

    /// The monthly cost of what exists now and of what the plan leaves.
    fn cost_delta(
        &self,
        plan: &Plan,
        target: Option<Tier>,
        usage: &Usage,
    ) -> Result<CostDelta, CostError> {
        self.ladder.check_prices(&self.ws.region)?;
        let region = &self.ws.region;
        let observed: HashSet<&str> = plan.observed.keys().copied().collect();
        let before = monthly_total(
            plan.resources.iter().filter(|r| observed.contains(r.id())),
            region,
            usage,
        )?;
        // Kept resources (data a downgrade or destroy leaves) go on costing.
        let kept: HashSet<&str> = plan
            .changes
            .iter()
            .filter(|c| c.action == plan::Action::Keep)
            .map(|c| c.id)
            .collect();
        let after = monthly_total(
            plan.resources.iter().filter(|r| {
                target.is_some_and(|t| r.tier() <= t && r.wanted())
                    || kept.contains(r.id())
                    // An account's setting that is on stays on.
                    || (r.account_setting() && observed.contains(r.id()))
            }),
            region,
            usage,
        )?;
        Ok(CostDelta {
            before,
            after,
            usage: usage.name.clone(),
            region: self.ws.region.clone(),
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

    /// Takes the workspace lock, creating the deploy table on a workspace's first deploy.
    pub async fn lock(&self, ttl: Duration) -> Result<Lease, OpsError> {
        match self.table.acquire(&self.holder(), ttl).await {
            Err(LockError::NoTable(_)) => {
                self.table.create().await?;
                Ok(self.table.acquire(&self.holder(), ttl).await?)
            }
            other => Ok(other?),
        }
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
        let save = async {
            if planned.plan.target.is_some() && planned.settings_changed {
                self.table.save_settings(&planned.settings).await?;
            }
            Ok::<_, OpsError>(())
        };
        tokio::try_join!(save, self.record(&planned.plan, &report))?;
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
            changes: report.recorded_changes(),
        };
        self.table.record_apply(&rec).await?;
        Ok(())
    }

    /// The deploy protocol: plan without the lock (nothing changes: nothing is written), take
    /// the lock, plan again (the cloud may have changed), show, ask, apply, record, release;
    /// after a destroy, the deploy table goes too when it was the last thing left and
    /// `--destroy-data` says so.
    pub async fn converge(
        &self,
        target: Option<Tier>,
        inputs: &Inputs,
        lock_ttl: Duration,
        ui: &dyn ConvergeUi,
        opts: ApplyOptions,
    ) -> Result<Converged, OpsError> {
        let first = self.plan(target, inputs).await?;
        if !first.plan.problems.is_empty() {
            ui.show(&first);
            return Err(OpsError::Problems(first.plan.problems.clone()));
        }
        let settings_to_save = first.settings_changed && target.is_some();
        if !first.plan.has_changes() && !settings_to_save {
            ui.show(&first);
            return Ok(Converged::Unchanged(first));
        }
        if !ui.assume_yes() && !ui.can_ask() {
            ui.show(&first);
            return Err(OpsError::NeedsConfirmation);
        }
        let lease = self.lock(lock_ttl).await.map_err(|e| match e {
            OpsError::Lock(l) => OpsError::Locking(l),
            other => other,
        })?;
        let result = self
            .converge_locked(first, target, inputs, &lease, ui, opts)
            .await;
        let released = lease.release().await;
        let converged = result?;
        released.map_err(OpsError::Releasing)?;
        match converged {
            Converged::Applied {
                planned,
                report,
                deploy_table: None,
            } if target.is_none() && report.succeeded() => {
                let fate = self.after_destroy(inputs.destroy_data).await?;
                Ok(Converged::Applied {
                    planned,
                    report,
                    deploy_table: Some(fate),
                })
            }
            other => Ok(other),
        }
    }

    /// Under the lock: the first plan stands when no other deploy held the lock since it was
    /// made (see [`LockSeen::unchanged_by`]); otherwise the cloud is observed again.
    async fn converge_locked(
        &self,
        first: Planned,
        target: Option<Tier>,
        inputs: &Inputs,
        lease: &Lease,
        ui: &dyn ConvergeUi,
        opts: ApplyOptions,
    ) -> Result<Converged, OpsError> {
        let planned = if first.lock_seen.unchanged_by(lease) {
            first
        } else {
            tracing::info!("another deploy held the lock since the plan was made: planning again");
            self.plan(target, inputs).await?
        };
        ui.show(&planned);
        if !ui.assume_yes() && !ui.confirm(&planned) {
            return Ok(Converged::Declined(planned));
        }
        if inputs.stop_in_flight {
            for layer in self.leaving(&planned.plan, target) {
                layer.stop_in_flight(&self.aws, &self.ws).await?;
            }
        }
        ui.applying(opts.parallelism.max(1));
        let report = self.apply(&planned, lease, opts).await?;
        Ok(Converged::Applied {
            planned,
            report,
            deploy_table: None,
        })
    }

    /// After a complete destroy: the deploy table goes when `destroy_data` says so and
    /// nothing else of the workspace is left.
    async fn after_destroy(&self, destroy_data: bool) -> Result<TableFate, OpsError> {
        if destroy_data
            && self
                .status()
                .await
                .map(|s| s.resources.iter().all(|r| !r.exists))
                .unwrap_or(false)
        {
            self.table.delete().await?;
            return Ok(TableFate::Deleted);
        }
        Ok(TableFate::Kept)
    }

    pub async fn status(&self) -> Result<Status, OpsError> {
        let (history, lock) = tokio::try_join!(self.table.history(10), self.table.read_lock())?;
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
            for c in &p.plan.changes {
                resources.push(ResourceStatus {
                    id: c.id,
                    kind: c.kind,
                    name: c.name.clone(),
                    tier: c.tier.short(),
                    exists: p.plan.observed.contains_key(c.id),
                    drift: target.is_some() && c.action.is_change(),
                });
            }
            in_sync = target.map(|_| !p.plan.has_changes());
        }
        let (dashboard, unobserved) = match &planned {
            Ok(p) => (self.dashboard(&p.plan).await, None),
            Err(e) => (Dashboard::default(), Some(e.to_string())),
        };
        let Dashboard {
            url: dashboard_url,
            certificate,
        } = dashboard;
        Ok(Status {
            workspace: self.ws.id(),
            env: self.ws.env.to_string(),
            account: self.ws.account.clone(),
            region: self.ws.region.clone(),
            deployed_tier: target,
            in_sync,
            warnings: clear_text_warnings(dashboard_url.as_deref()),
            dashboard_url,
            certificate,
            lock,
            resources,
            unobserved,
            history,
        })
    }

    /// Where the dashboard answers after an apply, from the outputs the apply left: what a
    /// deploy prints next, without observing the workspace once more.
    pub async fn dashboard_after(&self, plan: &Plan, report: &ApplyReport) -> Dashboard {
        let mut after = plan.clone();
        after.observed = plan
            .resources
            .iter()
            .filter_map(|r| {
                let prefix = format!("{}.", r.id());
                let outputs: BTreeMap<String, String> = report
                    .outputs
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
                    .collect();
                (!outputs.is_empty()).then(|| {
                    (
                        r.id(),
                        engine::Observed {
                            fields: BTreeMap::new(),
                            outputs,
                        },
                    )
                })
            })
            .collect();
        self.dashboard(&after).await
    }

    /// Where the deployed workspace's dashboard answers now, and the certificate to pin
    /// (`agentbus connect --env`): the deployed tier's plan, then [`Self::dashboard`].
    pub async fn dashboard_now(&self) -> Result<Dashboard, OpsError> {
        let deployed = self
            .table
            .history(10)
            .await?
            .iter()
            .find(|r| r.succeeded)
            .and_then(|r| r.tier);
        let Some(tier) = deployed else {
            return Err(OpsError::NotDeployed(self.ws.id()));
        };
        let planned = self
            .plan(
                Some(tier),
                &Inputs {
                    parallelism: 8,
                    ..Inputs::default()
                },
            )
            .await?;
        Ok(self.dashboard(&planned.plan).await)
    }

    /// Where the dashboard answers: a resource's own address if one has it (whatever fronts
    /// the dashboard), else what a layer finds (the running task's public address). Nothing
    /// in front, the server speaks TLS itself with the workspace certificate, whose
    /// fingerprint comes from the workspace secret.
    async fn dashboard(&self, plan: &Plan) -> Dashboard {
        let fronted = plan
            .resources
            .iter()
            .find_map(|r| plan.observed.get(r.id()).and_then(|o| r.address(o)));
        if fronted.is_some() {
            return Dashboard {
                url: fronted,
                certificate: None,
            };
        }
        let (url, certificate) = tokio::join!(
            async {
                for layer in self.ladder.layers().iter().rev() {
                    if let Some(a) = layer.address(&self.aws, &self.ws, plan).await {
                        return Some(a);
                    }
                }
                None
            },
            self.workspace_certificate()
        );
        Dashboard { url, certificate }
    }

    /// Replaces the workspace certificate (`agentbus certificate rotate`): returns the old
    /// fingerprint and the new. Running servers answer with the new one within
    /// [`crate::server::CERTIFICATE_FOLLOW`].
    pub async fn rotate_certificate(&self) -> Result<(Fingerprint, Fingerprint), OpsError> {
        let store = crate::server::auth::SecretTokens {
            client: self.aws.secrets(),
            secret: self.ws.secret_name("server"),
        };
        Ok(store.rotate_certificate(&self.ws.id()).await?)
    }

    /// The fingerprint of the workspace certificate, if the workspace secret holds one.
    pub async fn workspace_certificate(&self) -> Option<Fingerprint> {
        let store = crate::server::auth::SecretTokens {
            client: self.aws.secrets(),
            secret: self.ws.secret_name("server"),
        };
        match store.certificate().await {
            Ok(cert) => cert.and_then(|c| c.fingerprint().ok()),
            Err(e) => {
                tracing::warn!("the workspace certificate could not be read: {e}");
                None
            }
        }
    }
}

/// Where a deployed dashboard answers, and the certificate a client pins when the server
/// speaks TLS itself (nothing in front of it).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Dashboard {
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Fingerprint>,
}

/// Registry credentials for the workspace's ECR repository.
pub struct EcrLogin {
    /// `ACCOUNT.dkr.ecr.REGION.amazonaws.com` (or what a compatible endpoint answers).
    pub host: String,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for EcrLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrLogin")
            .field("host", &self.host)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Deployer {
    /// The context the layers lay the universe out in.
    fn layer_context<'a>(
        &'a self,
        settings: &'a StoredSettings,
        network: &'a network::Network,
        target: Option<Tier>,
        inputs: &Inputs,
        usage: &Usage,
    ) -> LayerContext<'a> {
        self.ladder.with_estimates(
            LayerContext {
                ws: &self.ws,
                settings,
                network,
                target,
                plain_http: self
                    .aws
                    .endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
                service_wait: inputs.service_wait.unwrap_or(DEFAULT_SERVICE_WAIT),
                budget_default: 0.0,
                estimate: None,
            },
            usage,
        )
    }

    /// Looks up the architecture of each image the universe runs that the settings do not
    /// know yet (concurrently), remembers those found, and forgets those of images no longer
    /// run. Returns what each lookup found and whether the settings changed.
    async fn learn_architectures(
        &self,
        images: &[(&'static str, String)],
        settings: &mut StoredSettings,
    ) -> (BTreeMap<String, Result<CpuArchitecture, String>>, bool) {
        let known: BTreeMap<String, Value> = settings
            .values
            .get(IMAGE_ARCHITECTURES)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let used: BTreeSet<&str> = images
            .iter()
            .map(|(_, i)| i.as_str())
            .filter(|i| !i.is_empty())
            .collect();
        let unknown: Vec<&str> = used
            .iter()
            .copied()
            .filter(|i| !known.contains_key(*i))
            .collect();
        let found = futures::future::join_all(unknown.iter().map(|i| self.inspect_image(i))).await;
        let mut next: BTreeMap<String, Value> = known
            .iter()
            .filter(|(i, _)| used.contains(i.as_str()))
            .map(|(i, a)| (i.clone(), a.clone()))
            .collect();
        let mut inspected = BTreeMap::new();
        for (image, result) in unknown.into_iter().zip(found) {
            if let Ok(a) = &result {
                next.insert(image.to_string(), json!(a.as_str()));
            }
            inspected.insert(image.to_string(), result);
        }
        let changed = next != known;
        if changed {
            settings
                .values
                .insert(IMAGE_ARCHITECTURES.to_string(), json!(next));
        }
        (inspected, changed)
    }

    /// Checks that `image` exists in its registry and finds the CPU architecture a Fargate
    /// task runs it on: an ECR image through the ECR API (in its own region), any other
    /// through the OCI distribution API, anonymously. The error is a plan problem, worded
    /// for the user.
    pub async fn inspect_image(&self, image: &str) -> Result<CpuArchitecture, String> {
        // `agentbus:latest` means Docker Hub to ECS: almost never what was meant here.
        let names_registry = image
            .split_once('/')
            .is_some_and(|(h, _)| h.contains('.') || h.contains(':') || h == "localhost");
        if !names_registry {
            return Err(format!(
                "image {image:?} names no registry, so ECS would pull it from Docker Hub: \
                 `agentbus image push` puts agentbus's image in the workspace's ECR and sets it, \
                 or name the registry in full (e.g. docker.io/{image})"
            ));
        }
        let r = crate::image::registry::parse_reference(image).map_err(|e| e.to_string())?;
        let host = r.resolve_registry().to_string();
        if let Some((account, region)) = crate::components::ecr::ecr_host(&host) {
            let ecr = if region == self.aws.region {
                self.aws.ecr()
            } else {
                aws_sdk_ecr::Client::from_conf(
                    self.aws
                        .ecr()
                        .config()
                        .to_builder()
                        .region(aws_types::region::Region::new(region.to_string()))
                        .build(),
                )
            };
            return crate::image::ecr::architecture(&ecr, image, account, &r).await;
        }
        let registry =
            crate::image::registry::Registry::for_reference(&r).map_err(|e| e.to_string())?;
        match registry.architecture(&r).await {
            Ok(Some(found)) => found,
            Ok(None) => Err(format!(
                "image {image} is not in its registry {host}: push it first (`agentbus image push`)"
            )),
            Err(e) => Err(format!(
                "cannot confirm that image {image} exists: {e} (is the registry reachable from here? `agentbus image push` puts the image in the workspace's ECR)"
            )),
        }
    }

    /// Creates the workspace's image repository, or brings its settings back to the spec.
    /// Returns its URI.
    pub async fn ensure_image_repository(&self) -> Result<String, OpsError> {
        // The image the workspace runs stays protected by the lifecycle.
        let (settings, _) = self.settings(&Inputs::default()).await?;
        let running = settings.text(crate::xs::layer::settings::IMAGE);
        let repo = crate::xs::image_repository(
            &self.ws,
            &running.as_deref().into_iter().collect::<Vec<_>>(),
        );
        let outputs = Default::default();
        let observed = match engine::observe(&repo, &self.aws).await? {
            None => engine::create(&repo, &self.aws, &outputs).await?,
            Some(current) => {
                let changed: Vec<String> =
                    plan::diff(&engine::desired_of(&repo, &outputs), &current)
                        .into_iter()
                        .map(|c| c.field)
                        .collect();
                if changed.is_empty() {
                    current
                } else {
                    engine::update(&repo, &self.aws, &outputs, &current, &changed).await?
                }
            }
        };
        observed
            .outputs
            .get("uri")
            .cloned()
            .ok_or_else(|| OpsError::Registry(format!("{}: ECR returned no URI", repo.meta.name)))
    }

    /// A registry login for this account's ECR (the token lives 12 hours).
    pub async fn ecr_login(&self) -> Result<EcrLogin, OpsError> {
        use base64::Engine as _;
        let out = self
            .aws
            .ecr()
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| {
                OpsError::Registry(format!(
                    "ECR GetAuthorizationToken failed: {}",
                    crate::engine::error_text(&e)
                ))
            })?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| OpsError::Registry("ECR returned no authorization data".into()))?;
        let token = base64::engine::general_purpose::STANDARD
            .decode(data.authorization_token().unwrap_or_default())
            .map_err(|_| OpsError::Registry("ECR returned a token that is not base64".into()))?;
        let token = String::from_utf8(token)
            .map_err(|_| OpsError::Registry("ECR returned a token that is not text".into()))?;
        let (user, password) = token
            .split_once(':')
            .ok_or_else(|| OpsError::Registry("ECR returned a token without a user".into()))?;
        let endpoint = data.proxy_endpoint().unwrap_or_default();
        let host = endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        if host.is_empty() {
            return Err(OpsError::Registry(
                "ECR returned no registry endpoint".into(),
            ));
        }
        Ok(EcrLogin {
            host,
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    /// Makes `image` the one the next deploy uses (unless `--image` says otherwise), under
    /// the workspace lock so it cannot race a deploy.
    pub async fn remember_image(&self, image: &str) -> Result<(), OpsError> {
        let lease = self.lock(Duration::from_secs(60)).await?;
        let result = async {
            let mut settings = self.table.load_settings().await?;
            let before = settings
                .values
                .insert(crate::xs::layer::settings::IMAGE.to_string(), json!(image));
            if before.as_ref() == Some(&json!(image)) {
                return Ok(());
            }
            self.table.save_settings(&settings).await
        }
        .await;
        let released = lease.release().await;
        result?;
        released?;
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub workspace: String,
    pub env: String,
    pub account: String,
    pub region: String,
    pub deployed_tier: Option<Tier>,
    /// Whether the cloud matches the deployed tier (no drift).
    pub in_sync: Option<bool>,
    /// Where the dashboard answers: the address a resource in front of it reports, else the
    /// running task's public address.
    pub dashboard_url: Option<String>,
    /// The SHA-256 fingerprint of the certificate the dashboard speaks TLS with, when it is
    /// the workspace's own (nothing in front of the server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Fingerprint>,
    /// What an operator must know now (tokens crossing a network in clear text).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub lock: Option<LockInfo>,
    pub resources: Vec<ResourceStatus>,
    /// Why the resources could not be observed, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unobserved: Option<String>,
    pub history: Vec<ApplyRecord>,
}

/// A dashboard answering plain HTTP beyond this machine receives bearer tokens in clear text.
fn clear_text_warnings(dashboard_url: Option<&str>) -> Vec<String> {
    let Some(rest) = dashboard_url.and_then(|u| u.strip_prefix("http://")) else {
        return Vec::new();
    };
    let host = rest.split('/').next().unwrap_or_default();
    if crate::image::registry::is_loopback(host) {
        return Vec::new();
    }
    vec![
        "the dashboard answers plain HTTP: every bearer token sent to it crosses the network in clear text; serve it behind HTTPS before real tokens use it (the plan says how for this tier)"
            .into(),
    ]
}

/// The first line of what a command prints about a workspace.
pub fn header(ws: &Workspace, what: &str) -> String {
    format!(
        "{what} workspace {} (account {}, region {})\n\n",
        ws.id(),
        ws.account,
        ws.region
    )
}

impl Status {
    /// The status as people read it.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Status of workspace {} (account {}, region {})\n\n",
            self.workspace, self.account, self.region
        );
        out.push_str(&format!(
            "deployed tier: {}\n",
            self.deployed_tier
                .map(|t| t.to_string())
                .unwrap_or_else(|| "none".into())
        ));
        if let Some(sync) = self.in_sync {
            out.push_str(if sync {
                "in sync: yes\n"
            } else {
                "in sync: NO (drift; run plan)\n"
            });
        }
        match &self.dashboard_url {
            Some(u) => out.push_str(&format!("dashboard: {u}  (MCP at {u}mcp)\n")),
            None if self.deployed_tier.is_some() => {
                out.push_str("dashboard: no running task found yet\n")
            }
            None => {}
        }
        if let Some(c) = &self.certificate {
            out.push_str(&format!(
                "certificate: SHA-256 {c}\n  (the workspace's own, self-signed: `agentbus connect --env {}` pins it; a browser shows the same fingerprint)\n",
                self.env
            ));
        }
        for w in &self.warnings {
            out.push_str(&format!("WARNING: {w}\n"));
        }
        match &self.lock {
            Some(l) if l.is_alive() => out.push_str(&format!(
                "lock: held by {} since {} (heartbeat {}s ago)\n",
                l.holder,
                l.acquired_at_text(),
                l.heartbeat_age_secs()
            )),
            Some(l) => out.push_str(&format!(
                "lock: stale, left by {} (last heartbeat {}s ago); `agentbus unlock` removes it\n",
                l.holder,
                l.heartbeat_age_secs()
            )),
            None => out.push_str("lock: free\n"),
        }
        out.push_str("\nresources:\n");
        if let Some(e) = &self.unobserved {
            out.push_str(&format!("  could not be observed: {e}\n"));
        }
        for r in &self.resources {
            out.push_str(&format!(
                "  {:<8} {:<20} {}{}\n",
                if r.exists { "present" } else { "absent" },
                r.kind,
                r.name,
                if r.drift { "  (differs from spec)" } else { "" }
            ));
        }
        out.push_str("\nrecent applies:\n");
        if self.history.is_empty() {
            out.push_str("  none\n");
        }
        for h in &self.history {
            let changed = h.changes.iter().filter(|c| c.outcome == "done").count();
            out.push_str(&format!(
                "  {}  {:<12} {:<10} {} change(s)  by {}  (agentbus {})\n",
                h.at,
                h.tier
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "destroy".into()),
                if h.succeeded {
                    "ok"
                } else if h.cancelled {
                    "cancelled"
                } else {
                    "failed"
                },
                changed,
                h.caller,
                h.tool_version
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::lock::RecordedChange;

    fn record(at: &str, tier: Option<Tier>, ok: bool, done: usize) -> ApplyRecord {
        ApplyRecord {
            at: at.into(),
            at_ms: 0,
            tier,
            tool_version: "0.1.0".into(),
            caller: "arn:aws:iam::123456789012:user/dev".into(),
            succeeded: ok,
            cancelled: false,
            changes: (0..done)
                .map(|i| RecordedChange {
                    id: format!("r{i}"),
                    name: format!("agentbus-demo-r{i}"),
                    action: "create".into(),
                    outcome: "done".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn status_reads_as_the_deployed_tier_its_drift_and_history() {
        let resource = |id, kind, name: &str, exists, drift| ResourceStatus {
            id,
            kind,
            name: name.into(),
            tier: "xs",
            exists,
            drift,
        };
        let s = Status {
            workspace: "agentbus-demo".into(),
            env: "demo".into(),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            deployed_tier: Some(Tier::ExtraSmall),
            in_sync: Some(false),
            dashboard_url: Some("https://203.0.113.7:8080/".into()),
            certificate: Some(
                "5D:41:40:2A:BC:4B:2A:76:B9:71:9D:91:10:17:C5:92:5D:41:40:2A:BC:4B:2A:76:B9:71:9D:91:10:17:C5:92"
                    .parse()
                    .unwrap(),
            ),
            warnings: clear_text_warnings(Some("https://203.0.113.7:8080/")),
            lock: None,
            unobserved: None,
            resources: vec![
                resource(
                    "kv-table",
                    "dynamodb table",
                    "agentbus-demo-kv",
                    true,
                    false,
                ),
                resource(
                    "dashboard-service",
                    "ecs service",
                    "agentbus-demo-dashboard",
                    true,
                    true,
                ),
                resource("budget", "budget", "agentbus-demo", false, true),
            ],
            history: vec![
                record("2026-12-01T10:00:00Z", Some(Tier::ExtraSmall), true, 15),
                record("2026-11-30T09:00:00Z", None, false, 3),
            ],
        };
        insta::assert_snapshot!(s.render());
    }

    #[test]
    fn only_a_dashboard_reached_over_plain_http_beyond_this_machine_is_warned_about() {
        assert_eq!(
            clear_text_warnings(Some("http://203.0.113.7:8080/")).len(),
            1
        );
        assert_eq!(
            clear_text_warnings(Some("http://dash.example.com/")).len(),
            1
        );
        for quiet in [
            Some("https://dash.example.com/"),
            Some("http://127.0.0.1:8080/"),
            Some("http://localhost:8080/"),
            None,
        ] {
            assert!(clear_text_warnings(quiet).is_empty(), "{quiet:?}");
        }
    }

    #[test]
    fn status_says_why_the_resources_could_not_be_observed() {
        let s = Status {
            workspace: "agentbus-demo".into(),
            env: "demo".into(),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            deployed_tier: None,
            in_sync: None,
            dashboard_url: None,
            certificate: None,
            warnings: Vec::new(),
            lock: None,
            resources: Vec::new(),
            unobserved: Some("ec2: DescribeVpcs failed: access denied".into()),
            history: Vec::new(),
        };
        assert!(
            s.render().contains(
                "resources:\n  could not be observed: ec2: DescribeVpcs failed: access denied\n"
            ),
            "{}",
            s.render()
        );
    }

    #[test]
    fn the_cost_of_extra_small_reads_line_by_line() {
        let r = price(
            &crate::ladder(),
            Tier::ExtraSmall,
            Env::new("demo").unwrap(),
            "us-east-1",
            "light",
        )
        .unwrap();
        insta::assert_snapshot!(r.render_on(time::macros::date!(2026 - 01 - 01)));
    }

    /// The deployer's policy of the extra-small tier, statement by statement: what each
    /// resource kind declares, merged by `components::iam::documents` (the workspace's own
    /// documents in `docs/iam/` come from the whole ladder and are checked by the CLI).
    #[test]
    fn the_extra_small_deployer_policy_grants_exactly_what_its_resources_declare() {
        let ws = Workspace::new(Env::new("dev").unwrap(), "123456789012", "us-east-1");
        let docs = deployer_policy(&crate::ladder(), Tier::ExtraSmall, &ws).unwrap();
        insta::assert_snapshot!(serde_json::to_string_pretty(&docs).unwrap());
    }

    #[test]
    fn a_tier_above_the_ladder_is_refused_by_name() {
        let e = price(
            &crate::ladder(),
            Tier::Small,
            Env::new("demo").unwrap(),
            "us-east-1",
            "light",
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("the small tier is not available in this version yet: up to extra-small is")
        );
    }
}
