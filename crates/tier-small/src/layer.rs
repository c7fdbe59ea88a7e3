//! The small tier's layer: its resources, how it shapes the dashboard (behind the load
//! balancer, with the buckets, tables and queue it may use), its flags, prices, usage fields
//! and server tools.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostError, PriceSource, Usage, UsageBook};
use tier_xs::ladder::{Built, DashboardSpec, Embedded, Layer, LayerContext, ServerPart, TierFlags};
use tier_xs::runtime::RuntimeError;
use tier_xs::workspace::Tier;
use tier_xs::xs::XsSettings;
use tier_xs::xs::layer::XsFlags;

use crate::cost::{PRICES, SmallUsage};
use crate::tier::{SmallOwn, SmallSettings};
use crate::tools::SmallTools;

/// The seed's monthly target of the small tier.
pub const SEED_TARGET: (f64, f64) = (15.0, 20.0);

/// The remembered setting holding `--certificate-arn`.
pub const SETTING_CERTIFICATE: &str = "certificate_arn";

/// The small tier's deploy flags, and the extra-small ones.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SmallFlags {
    #[command(flatten)]
    pub xs: XsFlags,
    /// ACM certificate for HTTPS on the small tier's load balancer; port 80 then redirects
    /// to 443 ("none" to go back to HTTP only; remembered).
    #[arg(long)]
    pub certificate_arn: Option<String>,
}

impl TierFlags for SmallFlags {
    fn settings(&self) -> BTreeMap<String, Value> {
        let mut s = self.xs.settings();
        if let Some(c) = &self.certificate_arn {
            let c = if c == "none" { "" } else { c.as_str() };
            s.insert(SETTING_CERTIFICATE.to_string(), json!(c));
        }
        s
    }
}

impl SmallSettings {
    /// The small settings of a deploy, from the remembered ones and this run's flags.
    pub fn from_context(ctx: &LayerContext<'_>) -> Self {
        SmallSettings {
            plain_http: ctx.plain_http,
            certificate_arn: ctx.settings.text(SETTING_CERTIFICATE),
        }
    }
}

/// The small tier's layer.
pub struct SmallLayer;

fn own(ctx: &LayerContext<'_>) -> SmallOwn {
    SmallOwn::new(
        ctx.ws,
        &XsSettings::from_context(ctx),
        &SmallSettings::from_context(ctx),
    )
}

#[async_trait]
impl Layer for SmallLayer {
    fn tier(&self) -> Tier {
        Tier::Small
    }

    fn seed_target(&self) -> (f64, f64) {
        SEED_TARGET
    }

    fn shape_dashboard(&self, ctx: &LayerContext<'_>, spec: &mut DashboardSpec) {
        own(ctx).shape_dashboard(ctx.ws, spec);
    }

    fn build(&self, ctx: &LayerContext<'_>, _dashboard: &DashboardSpec) -> Built {
        let own = own(ctx);
        let mut notes = Vec::new();
        if SmallSettings::from_context(ctx).certificate_arn.is_none() && !ctx.ws.env.is_prod() {
            notes.push(
                "WARNING: no --certificate-arn: the load balancer serves plain HTTP on port 80, so every bearer token sent to the dashboard crosses the internet in clear text; pass --certificate-arn for HTTPS (port 80 then redirects to it)"
                    .to_string(),
            );
        }
        Built {
            resources: own.resources(),
            problems: own.problems,
            images: Vec::new(),
            notes,
        }
    }

    fn price_source(&self, region: &str) -> Result<PriceSource, CostError> {
        PRICES.source(region).cloned()
    }

    fn usage(&self, book: UsageBook) -> UsageBook {
        book.with::<SmallUsage>()
    }

    fn cost_assumptions(&self, _region: &str, usage: &Usage) -> Result<Vec<String>, CostError> {
        Ok(vec![usage.part::<SmallUsage>()?.describe()])
    }

    async fn serve_embedded(&self, at: Embedded<'_>) -> Result<Option<ServerPart>, RuntimeError> {
        let reach = crate::config::embedded_reach(at.exposed);
        let (tools, feed) = SmallTools::embedded(at.data_dir, reach).await?;
        Ok(Some(ServerPart {
            tools: Arc::new(tools),
            feed: Some(Box::new(move |_server, stop| Box::pin(feed.run(stop)))),
        }))
    }

    async fn serve_aws(&self, aws: &AwsClients) -> Result<Option<ServerPart>, RuntimeError> {
        let cfg = crate::config::SmallConfig::from_env()
            .map_err(|e| RuntimeError::invalid("configuration", e))?;
        let reach = crate::config::deployed_reach();
        let (tools, feed) = SmallTools::aws(aws, &cfg, reach)?;
        Ok(Some(ServerPart {
            tools: Arc::new(tools),
            feed: Some(Box::new(move |_server, stop| Box::pin(feed.run(stop)))),
        }))
    }
}
