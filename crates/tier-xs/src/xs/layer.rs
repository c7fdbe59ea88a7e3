//! The extra-small tier's layer: the bottom of every ladder. It owns the dashboard service
//! that the layers above shape, its deploy flags, prices and usage fields.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{ExtraSmall, XsSettings, ids};
use crate::aws::AwsClients;
use crate::cost::base::{BaseUsage, PRICES};
use crate::cost::{CostError, PriceSource, Usage, UsageBook};
use crate::engine::permissions::{Permissions, any};
use crate::engine::plan::Plan;
use crate::ladder::{Built, DashboardSpec, Layer, LayerContext, TierFlags};
use crate::workspace::{Tier, Workspace};

/// The seed's monthly target of the extra-small tier: under $10.
pub const SEED_TARGET: (f64, f64) = (0.0, 10.0);

/// Remembered settings of the extra-small tier.
pub mod settings {
    pub const IMAGE: &str = "image";
    pub const ALLOW_CIDRS: &str = "allow_cidrs";
    pub const BUDGET: &str = "budget_usd";
    pub const EMAIL: &str = "alert_email";
    pub const DOMAIN: &str = "domain";
    pub const ACME_DIRECTORY: &str = "acme_directory";
}

/// The extra-small tier's deploy flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct XsFlags {
    /// Container image of the dashboard server (remembered for later deploys).
    #[arg(long)]
    pub image: Option<String>,
    /// CIDR admitted to the dashboard port; repeat for several, "none" to clear (remembered).
    #[arg(long = "allow-cidr")]
    pub allow_cidr: Vec<String>,
    /// Monthly limit of the workspace's AWS Budget in USD (default: the tier's estimate with
    /// 25% headroom; remembered).
    #[arg(long, value_parser = positive_usd, allow_hyphen_values = true)]
    pub budget_usd: Option<f64>,
    /// Email the budget alerts go to ("none" to stop them; remembered).
    #[arg(long)]
    pub alert_email: Option<String>,
    /// A name the dashboard answers to with a publicly trusted certificate ("none" to clear;
    /// remembered): the server keeps its A record pointing at the task and has ACME issue and
    /// renew the certificate (DNS-01). Needs a public Route 53 hosted zone holding the name.
    /// Where nothing fronts the server (extra-small); a load balancer takes --certificate-arn.
    #[arg(long, value_parser = domain_or_none)]
    pub domain: Option<String>,
    /// The ACME directory the domain's certificate comes from (https; default: Let's
    /// Encrypt's; remembered).
    #[arg(long, value_parser = https_url)]
    pub acme_directory: Option<String>,
}

/// `--domain`: a domain name, or "none".
fn domain_or_none(s: &str) -> Result<String, String> {
    match s {
        "none" => Ok(String::new()),
        _ => crate::components::domain::parse_domain(s),
    }
}

/// `--acme-directory`: an https address.
fn https_url(s: &str) -> Result<String, String> {
    match reqwest::Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?} is not an https address of an ACME directory (e.g. {})",
            crate::config::LETS_ENCRYPT
        )),
    }
}

/// An amount of US dollars above zero, with the flag's own message for anything else.
fn positive_usd(s: &str) -> Result<f64, String> {
    match s.trim().trim_start_matches('$').parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not an amount of US dollars above zero")),
    }
}

impl TierFlags for XsFlags {
    fn settings(&self) -> BTreeMap<String, Value> {
        let mut s = BTreeMap::new();
        if let Some(i) = &self.image {
            s.insert(settings::IMAGE.to_string(), json!(i));
        }
        if !self.allow_cidr.is_empty() {
            let mut c: Vec<String> = if self.allow_cidr.iter().any(|c| c == "none") {
                Vec::new()
            } else {
                self.allow_cidr.clone()
            };
            c.sort();
            c.dedup();
            s.insert(settings::ALLOW_CIDRS.to_string(), json!(c));
        }
        if let Some(b) = self.budget_usd {
            s.insert(settings::BUDGET.to_string(), json!(b));
        }
        if let Some(e) = &self.alert_email {
            let e = if e == "none" { "" } else { e.as_str() };
            s.insert(settings::EMAIL.to_string(), json!(e));
        }
        if let Some(d) = &self.domain {
            s.insert(settings::DOMAIN.to_string(), json!(d));
        }
        if let Some(a) = &self.acme_directory {
            s.insert(settings::ACME_DIRECTORY.to_string(), json!(a));
        }
        s
    }
}

impl XsSettings {
    /// The extra-small settings of a deploy: the remembered ones merged with this run's
    /// flags, the workspace's network, and the budget following the target tier's seed.
    pub fn from_context(ctx: &LayerContext<'_>) -> Self {
        let mut xs = XsSettings::new(ctx.network.clone());
        xs.image = ctx.settings.text(settings::IMAGE);
        xs.architecture = crate::ladder::image_architecture(ctx.settings, xs.image.as_deref());
        xs.allow_cidrs = ctx.settings.list(settings::ALLOW_CIDRS);
        xs.budget_usd = ctx
            .settings
            .number(settings::BUDGET)
            .unwrap_or(ctx.budget_default);
        xs.alert_email = ctx.settings.text(settings::EMAIL);
        xs.domain = ctx
            .settings
            .text(settings::DOMAIN)
            .filter(|d| !d.is_empty());
        if let Some(a) = ctx.settings.text(settings::ACME_DIRECTORY) {
            xs.acme_directory = a;
        }
        xs.service_wait = ctx.service_wait;
        xs
    }
}

/// The extra-small tier's layer.
pub struct XsLayer;

#[async_trait]
impl Layer for XsLayer {
    fn tier(&self) -> Tier {
        Tier::ExtraSmall
    }

    fn seed_target(&self) -> (f64, f64) {
        SEED_TARGET
    }

    fn build(&self, ctx: &LayerContext<'_>, dashboard: &DashboardSpec) -> Built {
        let settings = XsSettings::from_context(ctx);
        let tier = ExtraSmall::new(ctx.ws, &settings, dashboard);
        let mut notes = Vec::new();
        if let Some(e) = &ctx.estimate
            && ctx.target.is_some()
            && settings.budget_usd < e.monthly
        {
            notes.push(format!(
                "the budget's limit ${:.2} is below this tier's estimate of ${:.2} a month (usage profile {:?}): its forecast alert would fire every month; raise --budget-usd",
                settings.budget_usd, e.monthly, e.usage
            ));
        }
        if let Some((account, _, repo)) = settings
            .image
            .as_deref()
            .and_then(crate::components::ecr::ecr_image)
            .filter(|(account, _, _)| *account != ctx.ws.account)
        {
            notes.push(format!(
                "the image is in account {account}'s repository {repo}: its repository policy must let account {} pull",
                ctx.ws.account
            ));
        }
        if settings.allow_cidrs.is_empty() && dashboard.front().is_none() {
            notes.push(format!(
                "the dashboard admits no one: add --allow-cidr YOUR.IP/32 to reach port {}",
                crate::config::DASHBOARD_PORT
            ));
        }
        match (&settings.domain, dashboard.front()) {
            (Some(d), None) => notes.push(format!(
                "the dashboard answers at https://{d}:{}/ with a certificate from {} once the server has it (a few minutes after its task starts; the workspace certificate until then)",
                crate::config::DASHBOARD_PORT,
                settings.acme_directory
            )),
            (Some(d), Some(_)) => notes.push(format!(
                "--domain {d} is for a server that speaks TLS itself (extra-small): here the load balancer answers; point {d} at it and pass --certificate-arn"
            )),
            (None, _) => {}
        }
        if dashboard.front().is_none() && settings.domain.is_none() {
            notes.push(format!(
                "the dashboard speaks HTTPS itself on port {} with the workspace certificate (self-signed, in the workspace secret): MCP clients reach it through `agentbus connect --env {}`, which pins the certificate's fingerprint; a browser warns once, and `agentbus status` prints the fingerprint to compare",
                crate::config::DASHBOARD_PORT,
                ctx.ws.env
            ));
        }
        Built {
            resources: tier.resources(),
            problems: tier.problems,
            images: settings
                .image
                .into_iter()
                .map(|i| (ids::DASHBOARD_TASK_DEFINITION, i))
                .collect(),
            notes,
        }
    }

    fn price_source(&self, region: &str) -> Result<PriceSource, CostError> {
        PRICES.source(region).cloned()
    }

    fn usage(&self, book: UsageBook) -> UsageBook {
        book.with::<BaseUsage>()
    }

    fn cost_assumptions(&self, region: &str, usage: &Usage) -> Result<Vec<String>, CostError> {
        let u: BaseUsage = usage.part()?;
        Ok(vec![
            u.describe(&usage.name),
            "the AWS Budget is one of the account's two free budgets".to_string(),
            "the deploy table (lock, apply history) sees a few hundred requests a month: under $0.01"
                .to_string(),
            format!(
                "the first {} GB a month of data transfer out is free (shared by the account)",
                PRICES.region(region)?.transfer_out_free_gb
            ),
            "Fargate Spot is priced at the region's published Spot rate, which moves with demand"
                .to_string(),
        ])
    }

    fn permissions(&self, ws: &Workspace) -> Permissions {
        // `address`: the dashboard task's network interface. ECS's ListTasks takes the
        // cluster, DescribeTasks its tasks; EC2's Describe actions take no resource.
        Permissions::new()
            .read_when(
                &["ecs:ListTasks"],
                &any(),
                json!({"ArnEquals": {"ecs:cluster": ws.arn("ecs", &format!("cluster/{}", ws.id()))}}),
            )
            .read(
                &["ecs:DescribeTasks"],
                &[ws.arn("ecs", &format!("task/{}/*", ws.id()))],
            )
            .read(&["ec2:DescribeNetworkInterfaces"], &any())
    }

    async fn address(&self, aws: &AwsClients, ws: &Workspace, plan: &Plan) -> Option<String> {
        plan.observed.get(ids::DASHBOARD_SERVICE)?;
        task_address(aws, ws).await
    }
}

/// The public address of the running dashboard task, if it has one.
async fn task_address(aws: &AwsClients, ws: &Workspace) -> Option<String> {
    let cluster = ws.id();
    let ecs = aws.ecs();
    let tasks = ecs
        .list_tasks()
        .cluster(&cluster)
        .service_name(ws.name("dashboard"))
        .send()
        .await
        .ok()?;
    let arns = tasks.task_arns().to_vec();
    if arns.is_empty() {
        return None;
    }
    let described = ecs
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
    let ip = aws
        .ec2()
        .describe_network_interfaces(&[&eni], &[])
        .await
        .ok()?
        .into_iter()
        .next()?
        .public_ip?;
    // Nothing fronts it: the server speaks TLS itself (`server::tls`).
    Some(format!("https://{ip}:{}/", crate::config::DASHBOARD_PORT))
}
