//! The large tier's layer: its flags, and its server part (the memory tools, on embedded
//! storage or on PostgreSQL). Its AWS resources are not built yet: `build` reports that as a
//! problem, so a plan of `large` shows it and a deploy is refused.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostError, PriceSource, Usage};
use tier_xs::ladder::{
    Built, DashboardSpec, Embedded, Layer, LayerContext, Problem, ServerPart, TierFlags,
};
use tier_xs::runtime::RuntimeError;
use tier_xs::workspace::Tier;

use crate::embed::{self, Embedder};
use crate::memory::embedded::EmbeddedMemory;
use crate::memory::pgvector::PgMemory;
use crate::memory::{Memory, VectorStore};
use crate::tools::MemoryTools;

/// The seed's monthly target of the large tier.
pub const SEED_TARGET: (f64, f64) = (200.0, 400.0);

/// The variable naming a PostgreSQL database (with pgvector) for memory instead of the
/// embedded store: `postgres://user:password@host:port/db`.
pub const DATABASE_URL_ENV: &str = "AGENTBUS_DATABASE_URL";

/// Documents re-embedded per pass of the background re-embedding.
const REEMBED_BATCH: usize = 256;

/// The large tier's deploy flags, and the lower tiers'.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LargeFlags {
    #[command(flatten)]
    pub medium: tier_medium::Flags,
}

impl TierFlags for LargeFlags {
    fn settings(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.medium.settings()
    }
}

/// The large tier's layer.
pub struct LargeLayer;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The embedder the environment configures; on embedded storage, the local model in the data
/// directory when nothing is configured and it is there.
async fn embedder(
    data_dir: Option<&Path>,
    aws: Option<&AwsClients>,
) -> Result<Option<Arc<dyn Embedder>>, RuntimeError> {
    let bedrock = || async {
        let loaded;
        let clients = match aws {
            Some(a) => a,
            None => {
                loaded = AwsClients::load(&tier_xs::aws::AwsOptions::default())
                    .await
                    .map_err(|e| embed::EmbedError::Config(format!("AWS configuration: {e}")))?;
                &loaded
            }
        };
        Ok(tier_xs::sdk_client!(clients, aws_sdk_bedrockruntime))
    };
    let configured = embed::configured(var, bedrock)
        .await
        .map_err(|e| RuntimeError::invalid("embeddings", e.to_string()))?;
    if configured.is_some() {
        return Ok(configured);
    }
    let Some(dir) = data_dir.map(embed::default_local_dir) else {
        return Ok(None);
    };
    if !dir.join("model.safetensors").exists() {
        return Ok(None);
    }
    let local = tokio::task::spawn_blocking(move || embed::Local::load(&dir))
        .await
        .map_err(|e| RuntimeError::invalid("embeddings", e.to_string()))?
        .map_err(|e| RuntimeError::invalid("embeddings", e.to_string()))?;
    Ok(Some(Arc::new(local)))
}

fn server_part(memory: Memory) -> ServerPart {
    match &memory.embedder {
        Some(e) => tracing::info!(
            "vector memory embeds with {} ({} dimensions)",
            e.model(),
            e.dimensions()
        ),
        None => tracing::warn!(
            "vector memory has no embedding model: memory_put and memory_search fail until AGENTBUS_EMBEDDINGS is set (see the README)"
        ),
    }
    let background = memory.clone();
    ServerPart {
        tools: Arc::new(MemoryTools::new(memory)),
        feed: Some(Box::new(move |_server, stop| {
            Box::pin(async move {
                if background.embedder.is_none() {
                    return;
                }
                // Vectors another model made are embedded again, a batch at a time.
                loop {
                    match background.reembed(REEMBED_BATCH).await {
                        Ok(0) => break,
                        Ok(n) => tracing::info!(n, "memory documents embedded again"),
                        Err(e) => {
                            tracing::error!("re-embedding memory: {e}");
                            break;
                        }
                    }
                    if stop.is_cancelled() {
                        break;
                    }
                }
            })
        })),
    }
}

async fn store(data_dir: Option<&Path>) -> Result<Arc<dyn VectorStore>, RuntimeError> {
    if let Some(url) = var(DATABASE_URL_ENV) {
        return Ok(Arc::new(PgMemory::connect(&url).await?));
    }
    match data_dir {
        Some(dir) => {
            let pool = tier_xs::runtime::embedded::open(dir).await?;
            Ok(Arc::new(EmbeddedMemory::open(pool).await?))
        }
        None => Err(RuntimeError::invalid(
            "configuration",
            format!("{DATABASE_URL_ENV} is not set: the large tier's memory needs its database"),
        )),
    }
}

#[async_trait]
impl Layer for LargeLayer {
    fn tier(&self) -> Tier {
        Tier::Large
    }

    fn seed_target(&self) -> (f64, f64) {
        SEED_TARGET
    }

    fn build(&self, ctx: &LayerContext<'_>, _dashboard: &DashboardSpec) -> Built {
        let mut built = Built::default();
        if ctx.target == Some(Tier::Large) {
            built.problems.push(Problem::new(
                "the large tier's AWS resources (Aurora PostgreSQL with pgvector, auto scaling) are not built yet: deploy medium, or run `agentbus up large` locally",
            ));
        }
        built
    }

    /// The medium tier's sheet: this layer adds no priced resource yet.
    fn price_source(&self, region: &str) -> Result<PriceSource, CostError> {
        tier_medium::cost::PRICES.source(region).cloned()
    }

    /// Pricing the large tier is refused: without its resources the total would be the
    /// medium tier's.
    fn cost_assumptions(&self, _region: &str, _usage: &Usage) -> Result<Vec<String>, CostError> {
        Err(CostError::NotPriced(
            "the large tier has no prices yet: its AWS resources are not built".into(),
        ))
    }

    async fn serve_embedded(&self, at: Embedded<'_>) -> Result<Option<ServerPart>, RuntimeError> {
        let memory = Memory::new(
            store(Some(at.data_dir)).await?,
            embedder(Some(at.data_dir), None).await?,
        );
        Ok(Some(server_part(memory)))
    }

    async fn serve_aws(&self, aws: &AwsClients) -> Result<Option<ServerPart>, RuntimeError> {
        let memory = Memory::new(store(None).await?, embedder(None, Some(aws)).await?);
        Ok(Some(server_part(memory)))
    }
}
