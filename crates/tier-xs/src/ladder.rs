//! The tier ladder: each tier crate provides one [`Layer`], and a [`Ladder`] walks them in
//! order for everything that spans tiers: the universe of resources a plan observes, the
//! dashboard service every layer shapes, unit prices and usage fields, the server's tools.
//!
//! A tier plugs in by implementing [`Layer`] and adding itself on top of the ladder of the
//! tier below (`tier_xs::ladder().with(SmallLayer)`); nothing else names it. The foundation
//! never asks "is the target at least tier X": a layer is *active* when the target tier
//! includes it, and the ladder alone decides that.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::aws::AwsClients;
use crate::components::network::{Ingress, Network};
use crate::cost::{
    CostContext, CostError, CostReport, HOURS_PER_MONTH, PriceSource, PricingNotes, Usage,
    UsageBook,
};
use crate::engine::Resource;
use crate::engine::lock::StoredSettings;
use crate::engine::plan::Plan;
use crate::image::platform::CpuArchitecture;
use crate::runtime::RuntimeError;
use crate::server::AppState;
use crate::server::mcp::ToolExtension;
use crate::workspace::{Tier, Workspace};

/// A problem that blocks a deploy, in the user's words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub message: String,
    /// The problem matters only when this resource (a logical id) is created or changed: a
    /// missing image does not block a deploy that leaves the task definition alone.
    pub only_if_changing: Option<&'static str>,
}

impl Problem {
    /// A problem that always blocks.
    pub fn new(message: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            only_if_changing: None,
        }
    }

    /// A problem that blocks only when `resource_id` changes.
    pub fn when_changing(resource_id: &'static str, message: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            only_if_changing: Some(resource_id),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What sits in front of the dashboard service (the small tier's load balancer): the
/// dashboard then admits only that front's security group, and the service registers its
/// task in the front's target group once the resource that attaches it (a listener) exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Front {
    /// The security group (logical id) the dashboard admits.
    pub security_group_id: &'static str,
    /// The target group (logical id, its `arn` output) the service registers in.
    pub target_group_id: &'static str,
    /// The resource that forwards to the target group (ECS refuses a target group nothing
    /// uses yet).
    pub attached_by_id: &'static str,
    /// The subnets (zones) the front spans: the service's tasks run there, since a target
    /// in a zone the front does not span gets no traffic.
    pub subnets: Vec<String>,
}

/// Who owns the dashboard service's running count: an autoscaler with these bounds. The
/// deploy then plans only the bounds and leaves the count alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scaling {
    pub min: u32,
    pub max: u32,
}

/// A chart of CloudWatch metrics a layer wants on the workspace's monitoring dashboard.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    pub metrics: Vec<ChartMetric>,
    /// Seconds per point.
    pub period: i32,
}

/// One line of a [`Chart`]: a metric, its dimensions and the statistic drawn (`Average`,
/// `Sum`, `Maximum`, …).
#[derive(Clone, Debug, PartialEq)]
pub struct ChartMetric {
    pub namespace: String,
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    pub statistic: String,
}

/// A Logs Insights table a layer wants on the workspace's monitoring dashboard: a query over
/// log groups (`fields … | filter … | sort …`, without the `SOURCE` lines).
#[derive(Clone, Debug, PartialEq)]
pub struct LogChart {
    pub title: String,
    pub log_groups: Vec<String>,
    pub query: String,
}

/// The shared dashboard service as the active layers shape it. Each layer *adds* to it;
/// nothing one layer says is replaced by another (a second front or a second owner of the
/// count is a problem, not an override).
#[derive(Clone, Debug)]
pub struct DashboardSpec {
    /// The tier the server serves: the highest active layer's.
    pub tier: Tier,
    /// More `AGENTBUS_*` variables for the task.
    pub env: Vec<(String, String)>,
    /// More statements for the task role's policy (built with the `iam` helpers).
    pub task_statements: Vec<Value>,
    /// More inbound rules of the dashboard's security group.
    pub ingress: Vec<Ingress>,
    /// Charts for the workspace's CloudWatch dashboard, drawn by the layer that has one.
    pub charts: Vec<Chart>,
    /// Logs Insights tables for the same dashboard, after its own.
    pub log_charts: Vec<LogChart>,
    front: Option<Front>,
    scaling: Option<Scaling>,
    problems: Vec<Problem>,
}

impl DashboardSpec {
    pub fn new(tier: Tier) -> Self {
        DashboardSpec {
            tier,
            env: Vec::new(),
            task_statements: Vec::new(),
            ingress: Vec::new(),
            charts: Vec::new(),
            log_charts: Vec::new(),
            front: None,
            scaling: None,
            problems: Vec::new(),
        }
    }

    /// Puts the dashboard behind `front`.
    pub fn put_behind(&mut self, front: Front) {
        match &self.front {
            Some(f) if *f != front => self.problems.push(Problem::new(format!(
                "two layers put the dashboard behind different fronts ({} and {})",
                f.target_group_id, front.target_group_id
            ))),
            _ => self.front = Some(front),
        }
    }

    pub fn front(&self) -> Option<&Front> {
        self.front.as_ref()
    }

    /// Hands the service's running count to an autoscaler.
    pub fn scale_with(&mut self, scaling: Scaling) {
        if scaling.min > scaling.max {
            self.problems.push(Problem::new(format!(
                "the dashboard's scaling bounds are reversed: min {} > max {}",
                scaling.min, scaling.max
            )));
        }
        match self.scaling {
            Some(s) if s != scaling => self.problems.push(Problem::new(
                "two layers claim the dashboard service's running count",
            )),
            _ => self.scaling = Some(scaling),
        }
    }

    pub fn scaling(&self) -> Option<Scaling> {
        self.scaling
    }

    /// Conflicts between layers' wishes.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

/// What a layer needs to lay out its resources.
pub struct LayerContext<'a> {
    pub ws: &'a Workspace,
    /// The remembered settings merged with this run's flags.
    pub settings: &'a StoredSettings,
    /// The workspace's VPC and subnets.
    pub network: &'a Network,
    /// The tier being deployed; `None`: destroy.
    pub target: Option<Tier>,
    /// The AWS endpoint is plain HTTP (an emulator): TLS-only policies would lock clients out.
    pub plain_http: bool,
    /// How long to wait for services to become steady.
    pub service_wait: Duration,
    /// The monthly limit a budget gets unless told otherwise (see [`Ladder::with_estimates`]).
    pub budget_default: f64,
    /// What the target tier costs a month under the plan's usage profile, when known.
    pub estimate: Option<Estimate>,
}

/// A tier's monthly cost under a usage profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub monthly: f64,
    pub usage: String,
}

/// Headroom of a default budget over the tier's estimate under the `light` profile.
pub const BUDGET_HEADROOM: f64 = 1.25;

/// A layer's resources as laid out for one target.
#[derive(Default)]
pub struct Built {
    pub resources: Vec<Arc<dyn Resource>>,
    pub problems: Vec<Problem>,
    /// Container images the layer's resources run, by the logical id of the resource that
    /// names them: a deploy checks each is in its registry when that resource changes.
    pub images: Vec<(&'static str, String)>,
    /// Notes for the plan.
    pub notes: Vec<String>,
}

/// A layer's part of the server: tools (and dashboard API and panels) and the background
/// work that feeds them, run until the server shuts down.
pub struct ServerPart {
    pub tools: Arc<dyn ToolExtension>,
    pub feed: Option<Feed>,
}

/// Background work of a layer: started once the server is assembled (it gets the server, to
/// reach its tools in process), stopped by the token at shutdown.
pub type Feed = Box<dyn FnOnce(Arc<AppState>, CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// A text a layer derives from what it deploys, for people and tools to read (the medium
/// layer's `asl`: its state machine's definition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub name: &'static str,
    /// One line on what it is.
    pub about: &'static str,
    pub text: String,
}

/// Where an embedded server runs, for the layers' server parts.
#[derive(Clone, Copy, Debug)]
pub struct Embedded<'a> {
    /// Its data directory (the SQLite database, artifact files).
    pub data_dir: &'a Path,
    /// It listens beyond loopback (`serve --host`): others can reach it, so its own outbound
    /// connections (webhooks, registered MCP servers) follow a deployed server's rules.
    pub exposed: bool,
}

/// One tier's part of agentbus.
#[async_trait]
pub trait Layer: Send + Sync {
    /// The tier this layer introduces.
    fn tier(&self) -> Tier;
    /// The seed's monthly target for a workspace of this tier (low, high; USD).
    fn seed_target(&self) -> (f64, f64);
    /// What this layer adds to the shared dashboard service; called for active layers only.
    fn shape_dashboard(&self, _ctx: &LayerContext<'_>, _spec: &mut DashboardSpec) {}
    /// The layer's resources shaped for `ctx.target` (all of them, also when the layer is not
    /// active: the plan then removes, or keeps, what exists), and its problems.
    fn build(&self, ctx: &LayerContext<'_>, dashboard: &DashboardSpec) -> Built;
    /// The texts the layer derives from its resources in `ctx` (none by default).
    fn documents(&self, _ctx: &LayerContext<'_>) -> Vec<Document> {
        Vec::new()
    }
    /// Where this layer's unit prices for `region` come from; an error when it has none.
    fn price_source(&self, region: &str) -> Result<PriceSource, CostError>;
    /// Adds the layer's usage fields.
    fn usage(&self, book: UsageBook) -> UsageBook {
        book
    }
    /// The layer's sentences about a usage profile and its pricing, for the cost report.
    fn cost_assumptions(&self, _region: &str, _usage: &Usage) -> Result<Vec<String>, CostError> {
        Ok(Vec::new())
    }
    /// Where people reach the workspace when no resource says (the extra-small dashboard
    /// task's public address).
    async fn address(&self, _aws: &AwsClients, _ws: &Workspace, _plan: &Plan) -> Option<String> {
        None
    }
    /// The layer's tools on embedded storage.
    async fn serve_embedded(&self, _at: Embedded<'_>) -> Result<Option<ServerPart>, RuntimeError> {
        Ok(None)
    }
    /// Work in flight on the deployed workspace that removing this layer would cut off (a
    /// running workflow), one line each; none by default.
    async fn in_flight(
        &self,
        _aws: &AwsClients,
        _ws: &Workspace,
    ) -> Result<Vec<String>, crate::engine::EngineError> {
        Ok(Vec::new())
    }
    /// Stops that work, just before the layer's resources are removed (`--stop-in-flight`).
    async fn stop_in_flight(
        &self,
        _aws: &AwsClients,
        _ws: &Workspace,
    ) -> Result<(), crate::engine::EngineError> {
        Ok(())
    }
    /// What a deployer needs beyond the layer's resources' own permissions (see
    /// [`crate::engine::Resource::permissions`]): the calls the layer itself makes
    /// (`address`, `in_flight`, `stop_in_flight`). None by default.
    fn permissions(&self, _ws: &Workspace) -> crate::engine::Permissions {
        crate::engine::Permissions::new()
    }
    /// The layer's tools on the deployed workspace (configured by the task's environment).
    async fn serve_aws(&self, _aws: &AwsClients) -> Result<Option<ServerPart>, RuntimeError> {
        Ok(None)
    }
}

/// Remembered setting: the CPU architecture each image the workspace runs was built for
/// (image reference → ECS's name), found by the first plan that names the image.
pub const IMAGE_ARCHITECTURES: &str = "image_architectures";

/// The architecture remembered for `image`: ECS's default (X86_64) until one is known.
pub fn image_architecture(settings: &StoredSettings, image: Option<&str>) -> CpuArchitecture {
    image
        .and_then(|i| settings.values.get(IMAGE_ARCHITECTURES)?.get(i)?.as_str())
        .and_then(CpuArchitecture::parse)
        .unwrap_or_default()
}

/// A tier's deploy flags: `clap::Args` flattened into `plan` and `deploy`. The flags of a
/// tier flatten those of the tier below, so the top tier's type carries them all.
pub trait TierFlags: clap::Args + Clone + fmt::Debug + Send + Sync + 'static {
    /// The settings these flags set, to merge over the remembered ones (an empty string or
    /// list clears one).
    fn settings(&self) -> BTreeMap<String, Value>;
}

/// Every resource a build knows, shaped for one target, and what blocks deploying it.
pub struct Universe {
    pub resources: Vec<Arc<dyn Resource>>,
    pub problems: Vec<Problem>,
    pub images: Vec<(&'static str, String)>,
    pub notes: Vec<String>,
}

/// The layers of a build, bottom first.
#[derive(Clone)]
pub struct Ladder {
    layers: Vec<Arc<dyn Layer>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LadderError {
    #[error("the {0} tier is not available in this version yet: up to {1} is")]
    TierNotBuilt(Tier, Tier),
}

impl Ladder {
    /// A ladder of one layer (the extra-small tier's: `tier_xs::ladder()`).
    pub fn new(base: impl Layer + 'static) -> Self {
        Ladder {
            layers: vec![Arc::new(base)],
        }
    }

    /// This ladder with `layer` on top; its tier must be above the current top.
    pub fn with(mut self, layer: impl Layer + 'static) -> Self {
        assert!(
            layer.tier() > self.highest(),
            "a layer goes on top of the ladder"
        );
        self.layers.push(Arc::new(layer));
        self
    }

    /// The highest tier this build can deploy.
    pub fn highest(&self) -> Tier {
        self.layers
            .last()
            .map(|l| l.tier())
            .unwrap_or(Tier::ExtraSmall)
    }

    pub fn layers(&self) -> &[Arc<dyn Layer>] {
        &self.layers
    }

    /// The layers a workspace of `tier` has, bottom first.
    pub fn up_to(&self, tier: Tier) -> impl Iterator<Item = &Arc<dyn Layer>> {
        self.layers.iter().filter(move |l| l.tier() <= tier)
    }

    /// The layers a converge to `target` removes (every layer for a destroy).
    pub fn removed(&self, target: Option<Tier>) -> impl Iterator<Item = &Arc<dyn Layer>> {
        self.layers
            .iter()
            .filter(move |l| target.is_none_or(|t| l.tier() > t))
    }

    /// Refuses a tier above the top of the ladder.
    pub fn check(&self, tier: Tier) -> Result<(), LadderError> {
        if tier > self.highest() {
            return Err(LadderError::TierNotBuilt(tier, self.highest()));
        }
        Ok(())
    }

    /// The seed's target of `tier`: its layer's, or the top's for a tier above it.
    pub fn seed_target(&self, tier: Tier) -> (f64, f64) {
        self.up_to(tier)
            .last()
            .map(|l| l.seed_target())
            .unwrap_or((0.0, 0.0))
    }

    /// Every resource of every layer, shaped for `ctx.target`: the active layers (every layer,
    /// for a destroy) shape the dashboard first, then every layer lays out its resources.
    pub fn universe(&self, ctx: &LayerContext<'_>) -> Universe {
        let served = ctx.target.unwrap_or(Tier::ExtraSmall);
        let active = |l: &Arc<dyn Layer>| ctx.target.is_some_and(|t| l.tier() <= t);
        // A destroy shapes the dashboard as every layer would: what exists may be the highest
        // tier's, and its dependencies (the dashboard's group admitting the balancer's) must
        // order the deletes.
        let shapes = |l: &Arc<dyn Layer>| ctx.target.is_none_or(|t| l.tier() <= t);
        let mut spec = DashboardSpec::new(served);
        for layer in self.layers.iter().filter(|l| shapes(l)) {
            layer.shape_dashboard(ctx, &mut spec);
        }
        let mut u = Universe {
            resources: Vec::new(),
            problems: spec.problems().to_vec(),
            images: Vec::new(),
            notes: Vec::new(),
        };
        for layer in &self.layers {
            let mut built = layer.build(ctx, &spec);
            u.resources.append(&mut built.resources);
            if active(layer) {
                u.problems.append(&mut built.problems);
                u.images.append(&mut built.images);
                u.notes.append(&mut built.notes);
            }
        }
        u
    }

    /// `ctx` with the budget default following the target tier's own estimate (under the
    /// `light` profile, plus [`BUDGET_HEADROOM`], in whole dollars) and the estimate under
    /// `usage`. Without prices for the region, the seed's target stands in.
    pub fn with_estimates<'a>(&self, mut ctx: LayerContext<'a>, usage: &Usage) -> LayerContext<'a> {
        let tier = ctx.target.unwrap_or(Tier::ExtraSmall);
        ctx.budget_default = self.seed_target(tier).1;
        let Some(target) = ctx.target else {
            return ctx;
        };
        // One layout priced twice (its budget does not change what anything costs).
        let wanted: Vec<Arc<dyn Resource>> = self
            .universe(&ctx)
            .resources
            .into_iter()
            .filter(|r| r.tier() <= target && r.wanted())
            .collect();
        let light = self.usage_book().builtin("light");
        if let Some(Ok(l)) = light.map(|l| monthly_total(&wanted, &ctx.ws.region, &l)) {
            ctx.budget_default = (l * BUDGET_HEADROOM).ceil().max(1.0);
        }
        if let Ok(monthly) = monthly_total(&wanted, &ctx.ws.region, usage) {
            ctx.estimate = Some(Estimate {
                monthly,
                usage: usage.name.clone(),
            });
        }
        ctx
    }

    /// The usage fields of every layer.
    pub fn usage_book(&self) -> UsageBook {
        self.layers
            .iter()
            .fold(UsageBook::default(), |book, l| l.usage(book))
    }

    /// Prices `tier` in `region`: the resources of its universe, with every layer's prices.
    pub fn cost_report(
        &self,
        tier: Tier,
        region: &str,
        usage: &Usage,
        resources: &[Arc<dyn Resource>],
    ) -> Result<CostReport, CostError> {
        let mut sources = Vec::new();
        let mut assumptions = Vec::new();
        for layer in self.up_to(tier) {
            sources.push(layer.price_source(region)?);
            assumptions.extend(layer.cost_assumptions(region, usage)?);
        }
        let ctx = CostContext {
            region,
            usage,
            hours: HOURS_PER_MONTH,
        };
        // What the tier deploys: its resources the settings call for.
        let deployed = |r: &&Arc<dyn Resource>| r.tier() <= tier && r.wanted();
        let mut lines = Vec::new();
        for r in resources.iter().filter(deployed) {
            lines.extend(r.monthly_cost(&ctx)?);
        }
        let priced: BTreeSet<&str> = lines.iter().map(|l| l.resource.as_str()).collect();
        let free: BTreeSet<&str> = resources
            .iter()
            .filter(deployed)
            .filter(|r| !priced.contains(r.id()))
            .map(|r| r.kind())
            .collect();
        let mut notes = vec![
            format!("{HOURS_PER_MONTH} hours a month; services run all month"),
            format!(
                "no charge: {}",
                free.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ];
        notes.append(&mut assumptions);
        Ok(CostReport::new(
            tier,
            region,
            usage,
            lines,
            PricingNotes {
                target: self.seed_target(tier),
                sources,
                assumptions: notes,
            },
        ))
    }

    /// Checks that every layer prices `region` (before a plan's cost is summed).
    pub fn check_prices(&self, region: &str) -> Result<(), CostError> {
        for layer in &self.layers {
            layer.price_source(region)?;
        }
        Ok(())
    }

    /// The server parts of the layers of `tier` on embedded storage.
    pub async fn serve_embedded(
        &self,
        tier: Tier,
        at: Embedded<'_>,
    ) -> Result<Vec<ServerPart>, RuntimeError> {
        let mut parts = Vec::new();
        for layer in self.up_to(tier) {
            parts.extend(layer.serve_embedded(at).await?);
        }
        Ok(parts)
    }

    /// The server parts of the layers of `tier` on AWS.
    pub async fn serve_aws(
        &self,
        tier: Tier,
        aws: &AwsClients,
    ) -> Result<Vec<ServerPart>, RuntimeError> {
        let mut parts = Vec::new();
        for layer in self.up_to(tier) {
            parts.extend(layer.serve_aws(aws).await?);
        }
        Ok(parts)
    }
}

/// What `resources` cost a month in `region` under `usage`.
pub fn monthly_total<'r>(
    resources: impl IntoIterator<Item = &'r Arc<dyn Resource>>,
    region: &str,
    usage: &Usage,
) -> Result<f64, CostError> {
    let cost = CostContext {
        region,
        usage,
        hours: HOURS_PER_MONTH,
    };
    let mut total = 0.0;
    for r in resources {
        total += r
            .monthly_cost(&cost)?
            .iter()
            .map(|l| l.monthly)
            .sum::<f64>();
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
