//! The medium tier's layer: its server part (the workflow tools and the embedded runner) and,
//! on AWS, a plan problem until its resources exist.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tier_small::layer::SmallFlags;
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostError, PriceSource};
use tier_xs::ladder::{Built, DashboardSpec, Layer, LayerContext, Problem, ServerPart, TierFlags};
use tier_xs::runtime::RuntimeError;
use tier_xs::workspace::Tier;

use crate::cost::PRICES;
use crate::runtime::runner::{LocalAgents, Runner};
use crate::runtime::store::Store;
use crate::tools::MediumTools;

/// The seed's monthly target of the medium tier.
pub const SEED_TARGET: (f64, f64) = (50.0, 80.0);

/// The medium tier's deploy flags, and the lower tiers'.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MediumFlags {
    #[command(flatten)]
    pub small: SmallFlags,
}

impl TierFlags for MediumFlags {
    fn settings(&self) -> BTreeMap<String, Value> {
        self.small.settings()
    }
}

/// The medium tier's layer.
pub struct MediumLayer;

#[async_trait]
impl Layer for MediumLayer {
    fn tier(&self) -> Tier {
        Tier::Medium
    }

    fn seed_target(&self) -> (f64, f64) {
        SEED_TARGET
    }

    fn build(&self, ctx: &LayerContext<'_>, _dashboard: &DashboardSpec) -> Built {
        let mut problems = Vec::new();
        if ctx.target.is_some_and(|t| t >= Tier::Medium) {
            problems.push(Problem::new(
                "the medium tier's AWS resources (the workflow's state machine, the agents' task definitions, alarms) are not in this version yet: `agentbus up medium` runs the tier locally",
            ));
        }
        Built {
            resources: Vec::new(),
            problems,
            images: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn price_source(&self, region: &str) -> Result<PriceSource, CostError> {
        PRICES.source(region).cloned()
    }

    fn cost_assumptions(
        &self,
        _region: &str,
        _usage: &tier_xs::cost::Usage,
    ) -> Result<Vec<String>, CostError> {
        Ok(vec![
            "the medium tier's own AWS resources (the workflow's state machine, the agents' tasks, alarms) are not deployed by this version, so not priced yet: the total is the small tier's".into(),
        ])
    }

    async fn serve_embedded(&self, data_dir: &Path) -> Result<Option<ServerPart>, RuntimeError> {
        let pool = tier_xs::runtime::embedded::open(data_dir).await?;
        let store = Arc::new(Store::open(pool).await?);
        let runner = Runner::new(store.clone(), agents::workflow::Workflow::lanes());
        let tools = MediumTools::new(store, runner.waker());
        let attached = tools.clone();
        Ok(Some(ServerPart {
            tools: Arc::new(tools),
            feed: Some(Box::new(move |server, stop| {
                attached.attach(server.clone());
                Box::pin(async move {
                    let model = agents::model::Model::from_env()
                        .await
                        .map(|m| m.map(Arc::new))
                        .map_err(|e| e.to_string());
                    match &model {
                        Ok(Some(m)) => tracing::info!("workflow agents consult {}", m.describe()),
                        Ok(None) => tracing::info!(
                            "workflow agents run without a model (AGENTBUS_MODEL is not set)"
                        ),
                        Err(e) => tracing::error!(
                            "AGENTBUS_MODEL: {e}; agent steps fail until it is fixed"
                        ),
                    }
                    runner
                        .run(Arc::new(LocalAgents::new(server, model)), stop)
                        .await
                })
            })),
        }))
    }

    async fn serve_aws(&self, _aws: &AwsClients) -> Result<Option<ServerPart>, RuntimeError> {
        // The deployed medium tier (Step Functions, agents on ECS) comes with its resources.
        Ok(None)
    }
}
