//! The large tier's layer: its flags (the database's capacity), its AWS resources (Aurora
//! PostgreSQL Serverless v2 in two zones, see [`crate::tier`]) and its server part (the
//! memory tools, on embedded storage or on PostgreSQL).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostError, PriceSource, Usage, UsageBook};
use tier_xs::ladder::{
    Built, DashboardSpec, Embedded, Feed, Layer, LayerContext, ServerPart, TierFlags,
};
use tier_xs::runtime::RuntimeError;
use tier_xs::workspace::Tier;
use tier_xs::xs::XsSettings;

use crate::cost::{LargeUsage, PRICES};
use crate::database;
use crate::embed::{self, Embedder};
use crate::memory::embedded::EmbeddedMemory;
use crate::memory::pgvector::PgMemory;
use crate::memory::{Memory, VectorStore};
use crate::tier::{DATABASE_CLUSTER_ENV, LargeOwn, LargeSettings};
use crate::tools::MemoryTools;

/// The seed's monthly target of the large tier.
pub const SEED_TARGET: (f64, f64) = (200.0, 400.0);

/// The variable naming a PostgreSQL database (with pgvector) for memory instead of the
/// embedded store: `postgres://user:password@host:port/db`.
pub const DATABASE_URL_ENV: &str = "AGENTBUS_DATABASE_URL";

/// Documents re-embedded per pass of the background re-embedding.
const REEMBED_BATCH: usize = 256;

/// The database's least capacity (remembered).
pub const SETTING_DB_MIN_ACU: &str = "db_min_acu";
/// The database's most capacity (remembered).
pub const SETTING_DB_MAX_ACU: &str = "db_max_acu";
/// The dashboard's least and most tasks (remembered).
pub const SETTING_MIN_TASKS: &str = "dashboard_min_tasks";
pub const SETTING_MAX_TASKS: &str = "dashboard_max_tasks";
/// The most readers of the database (remembered; 0: no reader scaling).
pub const SETTING_DB_MAX_READERS: &str = "db_max_readers";
/// Turn CloudWatch Transaction Search on (remembered).
pub const SETTING_TRANSACTION_SEARCH: &str = "transaction_search";

/// The large tier's deploy flags, and the lower tiers'.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LargeFlags {
    #[command(flatten)]
    pub medium: tier_medium::Flags,
    /// The database's least capacity in Aurora capacity units (about 2 GiB each; default 1,
    /// enough to keep the vector index in memory; remembered).
    #[arg(long, allow_hyphen_values = true)]
    pub db_min_acu: Option<f64>,
    /// The database's most capacity in ACUs (default 8; remembered).
    #[arg(long, allow_hyphen_values = true)]
    pub db_max_acu: Option<f64>,
    /// The least dashboard tasks the autoscaler keeps (default 2: one per zone; remembered).
    #[arg(long)]
    pub dashboard_min_tasks: Option<u32>,
    /// The most dashboard tasks the autoscaler starts under load (default 6; remembered).
    #[arg(long)]
    pub dashboard_max_tasks: Option<u32>,
    /// Scale the database's readers on their CPU, up to this many (2 to 15, the deployed
    /// reader included; default 0: no reader scaling; remembered). Turning it off again
    /// removes the readers the autoscaler added.
    #[arg(long, value_name = "READERS")]
    pub db_max_readers: Option<u32>,
    /// Turn on CloudWatch Transaction Search so the server's traces are kept. It is a
    /// setting of the whole account and region (X-Ray's trace destination becomes CloudWatch
    /// Logs); agentbus never turns it off. Remembered: a later deploy turns it on again if it
    /// was turned off, and its plan says so; `=false` stops that.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_transaction_search: Option<bool>,
}

impl TierFlags for LargeFlags {
    fn settings(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let mut s = self.medium.settings();
        if let Some(v) = self.db_min_acu {
            s.insert(SETTING_DB_MIN_ACU.to_string(), serde_json::json!(v));
        }
        if let Some(v) = self.db_max_acu {
            s.insert(SETTING_DB_MAX_ACU.to_string(), serde_json::json!(v));
        }
        if let Some(v) = self.dashboard_min_tasks {
            s.insert(SETTING_MIN_TASKS.to_string(), serde_json::json!(v));
        }
        if let Some(v) = self.dashboard_max_tasks {
            s.insert(SETTING_MAX_TASKS.to_string(), serde_json::json!(v));
        }
        if let Some(v) = self.db_max_readers {
            s.insert(SETTING_DB_MAX_READERS.to_string(), serde_json::json!(v));
        }
        if let Some(v) = self.enable_transaction_search {
            s.insert(SETTING_TRANSACTION_SEARCH.to_string(), serde_json::json!(v));
        }
        s
    }
}

impl LargeSettings {
    /// The large settings of a deploy, from the remembered ones and this run's flags.
    pub fn from_context(ctx: &LayerContext<'_>) -> Self {
        let d = LargeSettings::default();
        LargeSettings {
            min_acu: ctx.settings.number(SETTING_DB_MIN_ACU).unwrap_or(d.min_acu),
            max_acu: ctx.settings.number(SETTING_DB_MAX_ACU).unwrap_or(d.max_acu),
            min_tasks: ctx
                .settings
                .number(SETTING_MIN_TASKS)
                .map_or(d.min_tasks, |v| v as u32),
            max_tasks: ctx
                .settings
                .number(SETTING_MAX_TASKS)
                .map_or(d.max_tasks, |v| v as u32),
            max_readers: ctx
                .settings
                .number(SETTING_DB_MAX_READERS)
                .map_or(d.max_readers, |v| v as u32),
            transaction_search: ctx
                .settings
                .flag(SETTING_TRANSACTION_SEARCH)
                .unwrap_or(d.transaction_search),
        }
    }
}

fn own(ctx: &LayerContext<'_>) -> LargeOwn {
    LargeOwn::new(
        ctx.ws,
        &XsSettings::from_context(ctx),
        &LargeSettings::from_context(ctx),
    )
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
            format!(
                "neither {DATABASE_CLUSTER_ENV} nor {DATABASE_URL_ENV} is set: the large tier's memory needs its database"
            ),
        )),
    }
}

/// The deployed workspace's memory: on its Aurora cluster, the password read from the secret
/// RDS manages and read again every [`database::REREAD_EVERY`] (a rotation changes it) and
/// at once when the database refuses it, or on the database `AGENTBUS_DATABASE_URL` names.
async fn aws_store(aws: &AwsClients) -> Result<(Arc<dyn VectorStore>, Option<Feed>), RuntimeError> {
    let Some(cluster) = var(DATABASE_CLUSTER_ENV).filter(|_| var(DATABASE_URL_ENV).is_none())
    else {
        return Ok((store(None).await?, None));
    };
    let at = database::address(aws, &cluster).await?;
    let reconnect: crate::memory::pgvector::Reconnect = {
        let (aws, at) = (aws.clone(), at.clone());
        Arc::new(move || {
            let (aws, at) = (aws.clone(), at.clone());
            Box::pin(async move { database::options(&aws, &at).await })
        })
    };
    let memory = Arc::new(
        PgMemory::connect_with(database::options(aws, &at).await?)
            .await?
            .with_reconnect(reconnect),
    );
    let store = memory.clone();
    let aws = aws.clone();
    let reread: Feed = Box::new(move |_server, stop| {
        Box::pin(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(database::REREAD_EVERY) => {}
                }
                match database::options(&aws, &at).await {
                    Ok(o) => store.set_connect_options(o),
                    Err(e) => tracing::warn!("reading the database's password again: {e}"),
                }
            }
        })
    });
    Ok((memory, Some(reread)))
}

#[async_trait]
impl Layer for LargeLayer {
    fn tier(&self) -> Tier {
        Tier::Large
    }

    fn seed_target(&self) -> (f64, f64) {
        SEED_TARGET
    }

    fn shape_dashboard(&self, ctx: &LayerContext<'_>, spec: &mut DashboardSpec) {
        own(ctx).shape_dashboard(ctx.ws, spec);
    }

    fn build(&self, ctx: &LayerContext<'_>, _dashboard: &DashboardSpec) -> Built {
        let own = own(ctx);
        Built {
            resources: own.resources,
            problems: if ctx.target.is_some_and(|t| t >= Tier::Large) {
                own.problems
            } else {
                Vec::new()
            },
            images: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn price_source(&self, region: &str) -> Result<PriceSource, CostError> {
        PRICES.source(region).cloned()
    }

    fn usage(&self, book: UsageBook) -> UsageBook {
        book.with::<LargeUsage>()
    }

    fn cost_assumptions(&self, _region: &str, usage: &Usage) -> Result<Vec<String>, CostError> {
        Ok(vec![usage.part::<LargeUsage>()?.describe()])
    }

    async fn serve_embedded(&self, at: Embedded<'_>) -> Result<Option<ServerPart>, RuntimeError> {
        let memory = Memory::new(
            store(Some(at.data_dir)).await?,
            embedder(Some(at.data_dir), None).await?,
        );
        Ok(Some(server_part(memory)))
    }

    async fn serve_aws(&self, aws: &AwsClients) -> Result<Option<ServerPart>, RuntimeError> {
        let (store, reread) = aws_store(aws).await?;
        let memory = Memory::new(store, embedder(None, Some(aws)).await?);
        let mut part = server_part(memory);
        let feeds: Vec<Feed> = part
            .feed
            .take()
            .into_iter()
            .chain(reread)
            .chain(std::iter::once(traces_feed(aws.clone())))
            .collect();
        part.feed = Some(Box::new(move |server, stop| {
            Box::pin(async move {
                futures::future::join_all(
                    feeds.into_iter().map(|f| f(server.clone(), stop.clone())),
                )
                .await;
            })
        }));
        Ok(Some(part))
    }
}

/// How often a server whose account keeps no traces asks again (Transaction Search may be
/// turned on after it started).
const TRACES_RECHECK: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether the account keeps the spans sent to CloudWatch's OTLP endpoint: its X-Ray trace
/// destination is CloudWatch Logs (Transaction Search; PENDING counts, it is on its way).
async fn traces_kept(aws: &AwsClients) -> Result<bool, String> {
    use crate::aws::LargeAws;
    let out = aws
        .xray()
        .get_trace_segment_destination()
        .send()
        .await
        .map_err(|e| tier_xs::aws::error_text(&e))?;
    Ok(out.destination() == Some(&aws_sdk_xray::types::TraceSegmentDestination::CloudWatchLogs))
}

/// The server's traces: sent while the account keeps them, looked up at the start and every
/// [`TRACES_RECHECK`] until it does; otherwise the server says once why there are none.
fn traces_feed(aws: AwsClients) -> Feed {
    Box::new(move |_server, stop| {
        Box::pin(async move {
            let env = var(tier_xs::config::ENV_ENV).unwrap_or_default();
            let mut said = false;
            loop {
                match traces_kept(&aws).await {
                    Ok(true) => match tier_xs::traces::Exporter::new(&aws, &env) {
                        Ok(exporter) => return exporter.run(stop).await,
                        Err(e) => return tracing::error!("{e}"),
                    },
                    Ok(false) if !said => {
                        said = true;
                        tracing::info!(
                            "traces are not sent: CloudWatch Transaction Search is off in this account and region (agentbus deploy large --enable-transaction-search turns it on)"
                        );
                    }
                    Ok(false) => {}
                    Err(e) if !said => {
                        said = true;
                        tracing::warn!(
                            "traces are not sent: asking X-Ray where spans go failed: {e}"
                        );
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(TRACES_RECHECK) => {}
                }
            }
        })
    })
}
