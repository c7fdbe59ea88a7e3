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
    #[error("the {0} tier is not available in this version yet: up to {1} is")]
    TierNotBuilt(Tier, Tier),
    #[error(transparent)]
    Cost(#[from] CostError),
    #[error("the plan has problems that must be fixed first:\n  - {}", .0.join("\n  - "))]
    Problems(Vec<String>),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("{0}")]
    Registry(String),
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
    /// Settings of higher tiers, remembered like the rest (`certificate_arn` of the small
    /// tier, ...); an empty string clears one.
    pub tier_settings: std::collections::BTreeMap<String, Value>,
}

const SETTING_IMAGE: &str = "image";
const SETTING_CIDRS: &str = "allow_cidrs";
const SETTING_VPC: &str = "vpc";
const SETTING_SUBNETS: &str = "subnets";
const SETTING_BUDGET: &str = "budget_usd";
const SETTING_EMAIL: &str = "alert_email";

/// What a build of agentbus can deploy: the resources of every tier it knows. The crate of
/// the highest tier provides it (tier crates depend downwards, so this one cannot name them).
pub trait Catalog: Send + Sync {
    /// The highest tier this catalog can deploy.
    fn highest(&self) -> Tier;
    /// Every resource of every tier this catalog knows, shaped for `ctx.target` (the
    /// dashboard task, for one, is configured for the tier it serves), and the problems
    /// that block deploying it.
    fn universe(&self, ctx: &UniverseContext<'_>) -> Universe;
}

/// What a catalog needs to lay out the universe.
pub struct UniverseContext<'a> {
    pub ws: &'a Workspace,
    pub xs: XsSettings,
    /// The remembered settings, for tiers with settings of their own.
    pub settings: &'a StoredSettings,
    /// `None`: destroy.
    pub target: Option<Tier>,
    /// The AWS endpoint is plain HTTP (an emulator): TLS-only policies would lock clients out.
    pub plain_http: bool,
}

pub struct Universe {
    pub resources: Vec<Arc<dyn Resource>>,
    pub problems: Vec<String>,
}

/// The extra-small tier alone.
pub struct XsCatalog;

impl Catalog for XsCatalog {
    fn highest(&self) -> Tier {
        Tier::ExtraSmall
    }
    fn universe(&self, ctx: &UniverseContext<'_>) -> Universe {
        let tier = ExtraSmall::new(ctx.ws, &ctx.xs);
        Universe {
            resources: tier.resources(),
            problems: tier.problems,
        }
    }
}

pub struct Deployer {
    pub aws: AwsClients,
    pub ws: Workspace,
    pub caller: Caller,
    pub table: DeployTable,
    pub catalog: Arc<dyn Catalog>,
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
    /// A deployer for the extra-small tier alone.
    pub async fn connect(aws: AwsClients, env: Env) -> Result<Self, OpsError> {
        Self::connect_with(aws, env, Arc::new(XsCatalog)).await
    }

    /// A deployer for every tier `catalog` knows.
    pub async fn connect_with(
        aws: AwsClients,
        env: Env,
        catalog: Arc<dyn Catalog>,
    ) -> Result<Self, OpsError> {
        let caller = aws.caller().await?;
        let ws = Workspace::new(env, caller.account.clone(), aws.region.clone());
        let table = DeployTable::new(&aws, &ws);
        Ok(Deployer {
            aws,
            ws,
            caller,
            table,
            catalog,
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
        for (k, v) in &inputs.tier_settings {
            put(k, v.clone());
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

    /// Every resource of every tier the catalog knows, shaped for `target`.
    fn universe(
        &self,
        xs: &XsSettings,
        settings: &StoredSettings,
        target: Option<Tier>,
    ) -> Universe {
        self.catalog.universe(&UniverseContext {
            ws: &self.ws,
            xs: xs.clone(),
            settings,
            target,
            plain_http: self
                .aws
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
        })
    }

    /// Plans converging the workspace to `target` (`None`: remove everything).
    pub async fn plan(&self, target: Option<Tier>, inputs: &Inputs) -> Result<Planned, OpsError> {
        if let Some(t) = target
            && t > self.catalog.highest()
        {
            return Err(OpsError::TierNotBuilt(t, self.catalog.highest()));
        }
        let (settings, settings_changed) = self.settings(inputs).await?;
        let xs = self.xs_settings(&settings, inputs, target).await?;
        let Universe {
            resources: universe,
            problems,
        } = self.universe(&xs, &settings, target);
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
            // Never point the service at an image its registry does not have.
            if needs_image
                && let Some(image) = xs.image.as_deref().filter(|i| !i.is_empty())
                && let Err(problem) = self.verify_image(image).await
            {
                plan.problems.push(problem);
            }
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
                // Kept resources (data a downgrade or destroy leaves) go on costing.
                let kept: std::collections::HashSet<&str> = plan
                    .changes
                    .iter()
                    .filter(|c| c.action == plan::Action::Keep)
                    .map(|c| c.id)
                    .collect();
                let after = sum(&|r| {
                    target.is_some_and(|t| r.tier() <= t && r.wanted()) || kept.contains(r.id())
                });
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
        let dashboard_url = match &planned {
            Ok(p) => self.dashboard_url(&p.plan).await,
            Err(_) => None,
        };
        Ok(Status {
            workspace: self.ws.id(),
            account: self.ws.account.clone(),
            region: self.ws.region.clone(),
            deployed_tier: target,
            in_sync,
            dashboard_url,
            lock,
            resources,
            history,
        })
    }
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

/// `(account, region)` of an ECR registry host.
fn ecr_host(host: &str) -> Option<(&str, &str)> {
    let (account, rest) = host.split_once(".dkr.ecr.")?;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        .then_some((account, region))
}

impl Deployer {
    /// Checks that `image` exists in its registry: an ECR image through the ECR API (in
    /// its own region), any other through the OCI distribution API, anonymously. The error
    /// is a plan problem, worded for the user.
    pub async fn verify_image(&self, image: &str) -> Result<(), String> {
        let r = crate::image::registry::parse_reference(image).map_err(|e| e.to_string())?;
        let host = r.resolve_registry().to_string();
        if let Some((account, region)) = ecr_host(&host) {
            let ecr = if region == self.aws.region {
                self.aws.ecr.clone()
            } else {
                aws_sdk_ecr::Client::from_conf(
                    self.aws
                        .ecr
                        .config()
                        .to_builder()
                        .region(aws_types::region::Region::new(region.to_string()))
                        .build(),
                )
            };
            let id = aws_sdk_ecr::types::ImageIdentifier::builder()
                .set_image_digest(r.digest().map(str::to_string))
                .set_image_tag(if r.digest().is_none() {
                    Some(r.tag().unwrap_or("latest").to_string())
                } else {
                    None
                })
                .build();
            return match ecr
                .describe_images()
                .registry_id(account)
                .repository_name(r.repository())
                .image_ids(id)
                .send()
                .await
            {
                Ok(out) if !out.image_details().is_empty() => Ok(()),
                Ok(_) => Err(format!(
                    "image {image} is not in its ECR repository: push it first (`agentbus image push`)"
                )),
                Err(e) => match crate::engine::error_code(&e) {
                    Some("ImageNotFoundException") | Some("RepositoryNotFoundException") => {
                        Err(format!(
                            "image {image} is not in its ECR repository: push it first (`agentbus image push`)"
                        ))
                    }
                    _ => Err(format!(
                        "cannot confirm that image {image} exists: {}",
                        crate::engine::error_text(&e)
                    )),
                },
            };
        }
        let registry =
            crate::image::registry::Registry::for_reference(&r).map_err(|e| e.to_string())?;
        match registry.manifest_digest(&r).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "image {image} is not in its registry {host}: push it first (`agentbus image push`)"
            )),
            Err(e) => Err(format!("cannot confirm that image {image} exists: {e}")),
        }
    }

    /// Creates the workspace's image repository, or brings its settings back to the spec.
    /// Returns its URI.
    pub async fn ensure_image_repository(&self) -> Result<String, OpsError> {
        let repo = crate::components::ecr::EcrRepository::for_workspace(&self.ws);
        let outputs = Default::default();
        let observed = match repo.observe(&self.aws).await? {
            None => repo.create(&self.aws, &outputs).await?,
            Some(current) => {
                let desired = repo.desired(&outputs);
                let changed: Vec<String> = desired
                    .fields
                    .iter()
                    .filter(|(k, f)| current.fields.get(*k) != Some(&f.value))
                    .map(|(k, _)| k.clone())
                    .collect();
                if changed.is_empty() {
                    current
                } else {
                    repo.update(&self.aws, &outputs, &current, &changed).await?
                }
            }
        };
        observed
            .outputs
            .get("uri")
            .cloned()
            .ok_or_else(|| OpsError::Registry(format!("{}: ECR returned no URI", repo.name)))
    }

    /// A registry login for this account's ECR (the token lives 12 hours).
    pub async fn ecr_login(&self) -> Result<EcrLogin, OpsError> {
        use base64::Engine as _;
        let out = self
            .aws
            .ecr
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
            settings
                .values
                .insert(SETTING_IMAGE.to_string(), json!(image));
            self.table.save_settings(&settings).await
        }
        .await;
        let released = lease.release().await;
        result?;
        released?;
        Ok(())
    }
}

impl Deployer {
    /// The dashboard's address: a resource's own address if one has it (the small tier's
    /// load balancer), else the public IP of a running dashboard task.
    async fn dashboard_url(&self, plan: &Plan) -> Option<String> {
        let fronted = plan
            .resources
            .iter()
            .find_map(|r| plan.observed.get(r.id()).and_then(|o| r.address(o)));
        if fronted.is_some() {
            return fronted;
        }
        plan.observed.get(crate::tier::ids::DASHBOARD_SERVICE)?;
        let cluster = self.ws.id();
        let tasks = self
            .aws
            .ecs
            .list_tasks()
            .cluster(&cluster)
            .service_name(self.ws.name("dashboard"))
            .send()
            .await
            .ok()?;
        let arns = tasks.task_arns().to_vec();
        if arns.is_empty() {
            return None;
        }
        let described = self
            .aws
            .ecs
            .describe_tasks()
            .cluster(&cluster)
            .set_tasks(Some(arns))
            .send()
            .await
            .ok()?;
        let eni = described
            .tasks()
            .iter()
            .flat_map(|t| t.attachments())
            .flat_map(|a| a.details())
            .find(|d| d.name() == Some("networkInterfaceId"))
            .and_then(|d| d.value())?
            .to_string();
        let nics = self
            .aws
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(eni)
            .send()
            .await
            .ok()?;
        let ip = nics
            .network_interfaces()
            .first()?
            .association()?
            .public_ip()?
            .to_string();
        Some(format!("http://{ip}:{}/", crate::config::DASHBOARD_PORT))
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
    /// Where the dashboard answers: the load balancer (small tier on), else the running
    /// task's public address.
    pub dashboard_url: Option<String>,
    pub lock: Option<LockInfo>,
    pub resources: Vec<Value>,
    pub history: Vec<ApplyRecord>,
}
