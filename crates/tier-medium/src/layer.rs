//! The medium tier's layer: its resources (the workflow's state machine, the agents' task
//! definitions and lane roles, the approvals queue, alarms and a CloudWatch dashboard), how it
//! shapes the dashboard service, its flags, prices and usage fields, and its server part (the
//! workflow tools and, locally, the embedded runner).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use serde_json::json;
use tier_small::layer::SmallFlags;
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostError, PriceSource, Usage, UsageBook};
use tier_xs::engine::{EngineError, Permissions};
use tier_xs::ladder::{
    Built, DashboardSpec, Document, Embedded as EmbeddedAt, Layer, LayerContext, ServerPart,
    TierFlags,
};
use tier_xs::runtime::RuntimeError;
use tier_xs::workspace::{Tier, Workspace};

use crate::aws::MediumAws;
use crate::config::MediumConfig;
use tier_xs::xs::XsSettings;

use crate::components::state_machine::ExecutionLogging;
use crate::cost::{MediumUsage, PRICES};
use crate::runtime::runner::{LocalAgents, Runner};
use crate::runtime::sfn::StepFunctions;
use crate::runtime::store::Store;
use crate::runtime::workflows::Embedded;
use crate::tier::{AgentDispatch, MediumOwn, MediumSettings};
use crate::tools::MediumTools;

/// The seed's monthly target of the medium tier.
pub const SEED_TARGET: (f64, f64) = (50.0, 80.0);

/// The remembered setting holding `--agent-image`.
pub const SETTING_AGENT_IMAGE: &str = "agent_image";
/// The remembered setting holding `--workflow-logs`.
pub const SETTING_WORKFLOW_LOGS: &str = "workflow_logs";

/// The remembered setting holding `--agents`.
pub const SETTING_AGENTS: &str = "agents";

/// Where the workflow's agents run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agents {
    /// A Fargate task per step, in its lane's IAM role.
    Ecs,
    /// Steps wait in the workspace's agent-tasks queue for agents you run yourself.
    Queue,
}

/// How much of each workflow run Step Functions logs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkflowLogs {
    /// Failures only, without the states' data (task tokens stay out of the logs).
    Errors,
    /// Every event with its data: for debugging, never for prod.
    All,
}

/// The medium tier's deploy flags, and the lower tiers'.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MediumFlags {
    #[command(flatten)]
    pub small: SmallFlags,
    /// Container image of the workflow's agents (`agentbus image push --agent`; remembered).
    #[arg(long)]
    pub agent_image: Option<String>,
    /// What Step Functions logs of each run: errors (default) or all, with the states' data
    /// (remembered).
    #[arg(long, value_enum)]
    pub workflow_logs: Option<WorkflowLogs>,
    /// Where the workflow's agents run: ecs (default), or queue for agents you run yourself
    /// with `agentbus agent --queue` (remembered).
    #[arg(long, value_enum)]
    pub agents: Option<Agents>,
}

impl TierFlags for MediumFlags {
    fn settings(&self) -> BTreeMap<String, Value> {
        let mut s = self.small.settings();
        if let Some(i) = &self.agent_image {
            s.insert(SETTING_AGENT_IMAGE.to_string(), json!(i));
        }
        if let Some(l) = self.workflow_logs {
            let v = match l {
                WorkflowLogs::Errors => "errors",
                WorkflowLogs::All => "all",
            };
            s.insert(SETTING_WORKFLOW_LOGS.to_string(), json!(v));
        }
        if let Some(a) = self.agents {
            let v = match a {
                Agents::Ecs => "ecs",
                Agents::Queue => "queue",
            };
            s.insert(SETTING_AGENTS.to_string(), json!(v));
        }
        s
    }
}

impl MediumSettings {
    /// The medium settings of a deploy, from the remembered ones and this run's flags.
    pub fn from_context(ctx: &LayerContext<'_>) -> Self {
        MediumSettings {
            agent_image: ctx.settings.text(SETTING_AGENT_IMAGE),
            agent_architecture: tier_xs::ladder::image_architecture(
                ctx.settings,
                ctx.settings.text(SETTING_AGENT_IMAGE).as_deref(),
            ),
            logging: match ctx.settings.text(SETTING_WORKFLOW_LOGS).as_deref() {
                Some("all") => ExecutionLogging::All,
                _ => ExecutionLogging::Errors,
            },
            dispatch: match ctx.settings.text(SETTING_AGENTS).as_deref() {
                Some("queue") => AgentDispatch::Queue,
                _ => AgentDispatch::Ecs,
            },
        }
    }
}

fn own(ctx: &LayerContext<'_>) -> MediumOwn {
    MediumOwn::new(
        ctx.ws,
        &XsSettings::from_context(ctx),
        &MediumSettings::from_context(ctx),
    )
}

/// The runs (execution names) the workspace's state machine is running now.
async fn running_runs(aws: &AwsClients, ws: &Workspace) -> Result<Vec<String>, EngineError> {
    let machine = MediumConfig::for_workspace(ws).state_machine_arn;
    let mut runs = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = aws
            .sfn()
            .list_executions()
            .state_machine_arn(&machine)
            .status_filter(aws_sdk_sfn::types::ExecutionStatus::Running)
            .max_results(100)
            .set_next_token(next.take())
            .send()
            .await;
        let page = match page {
            Ok(p) => p,
            // No state machine: nothing runs.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_state_machine_does_not_exist()) =>
            {
                return Ok(runs);
            }
            Err(e) => return Err(EngineError::aws(&machine, "ListExecutions", e)),
        };
        runs.extend(page.executions().iter().map(|e| e.name().to_string()));
        match page.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => return Ok(runs),
        }
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

    fn shape_dashboard(&self, ctx: &LayerContext<'_>, spec: &mut DashboardSpec) {
        own(ctx).shape_dashboard(ctx.ws, spec);
    }

    fn build(&self, ctx: &LayerContext<'_>, dashboard: &DashboardSpec) -> Built {
        let own = own(ctx).with_charts(dashboard);
        Built {
            resources: own.resources,
            problems: own.problems,
            images: own.images,
            notes: own.notes,
        }
    }

    fn documents(&self, ctx: &LayerContext<'_>) -> Vec<Document> {
        let own = own(ctx);
        let definition = own
            .resources
            .iter()
            .find(|r| r.id() == crate::tier::ids::STATE_MACHINE)
            .and_then(|r| {
                // Only the agents' security group's id is known after the first apply.
                let outputs = tier_xs::engine::Outputs::from([(
                    format!("{}.id", crate::tier::ids::AGENTS_SECURITY_GROUP),
                    "sg-(known after apply)".to_string(),
                )]);
                r.desired(&outputs).get("definition").cloned()
            });
        definition
            .map(|d| Document {
                name: "asl",
                about: "the workflow's state machine definition, Amazon States Language",
                text: serde_json::to_string_pretty(&d).unwrap_or_default(),
            })
            .into_iter()
            .collect()
    }

    fn price_source(&self, region: &str) -> Result<PriceSource, CostError> {
        PRICES.source(region).cloned()
    }

    fn usage(&self, book: UsageBook) -> UsageBook {
        book.with::<MediumUsage>()
    }

    fn cost_assumptions(&self, _region: &str, usage: &Usage) -> Result<Vec<String>, CostError> {
        Ok(vec![usage.part::<MediumUsage>()?.describe()])
    }

    async fn serve_embedded(&self, at: EmbeddedAt<'_>) -> Result<Option<ServerPart>, RuntimeError> {
        let pool = tier_xs::runtime::embedded::open(at.data_dir).await?;
        let store = Arc::new(Store::open(pool).await?);
        let runner = Runner::new(store.clone(), agents::workflow::Workflow::lanes());
        let runs = Arc::new(Embedded {
            store,
            wake: runner.waker(),
        });
        // Locally, a registered MCP server may be anywhere (a service on this machine),
        // unless others can reach this server.
        let tools = MediumTools::new(
            runs,
            Arc::default(),
            tier_small::config::embedded_reach(at.exposed),
        );
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

    fn permissions(&self, ws: &Workspace) -> Permissions {
        let machine = MediumConfig::for_workspace(ws).state_machine_arn;
        let executions = format!("{}:*", machine.replacen(":stateMachine:", ":execution:", 1));
        Permissions::new()
            .read(&["states:ListExecutions"], &[machine])
            .write(&["states:StopExecution"], &[executions])
    }

    async fn in_flight(
        &self,
        aws: &AwsClients,
        ws: &Workspace,
    ) -> Result<Vec<String>, EngineError> {
        let running = running_runs(aws, ws).await?;
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let mut shown: Vec<&str> = running.iter().take(3).map(String::as_str).collect();
        if running.len() > shown.len() {
            shown.push("…");
        }
        Ok(vec![format!(
            "{} workflow run(s) in flight ({})",
            running.len(),
            shown.join(", ")
        )])
    }

    async fn stop_in_flight(&self, aws: &AwsClients, ws: &Workspace) -> Result<(), EngineError> {
        let machine = MediumConfig::for_workspace(ws).state_machine_arn;
        for run in running_runs(aws, ws).await? {
            let execution = crate::runtime::sfn::execution_arn(&machine, &run);
            aws.sfn()
                .stop_execution()
                .execution_arn(execution)
                .error(crate::runtime::sfn::CANCELLED)
                .cause("the medium tier was removed (--stop-in-flight)")
                .send()
                .await
                .map_err(|e| EngineError::aws(&run, "StopExecution", e))?;
        }
        Ok(())
    }

    async fn serve_aws(&self, aws: &AwsClients) -> Result<Option<ServerPart>, RuntimeError> {
        let cfg = crate::config::MediumConfig::from_env()
            .map_err(|e| RuntimeError::invalid("configuration", e))?;
        let server = Arc::default();
        let runs = Arc::new(StepFunctions::new(
            aws,
            &cfg.runs_table,
            &cfg.state_machine_arn,
            &cfg.approvals_queue,
            Arc::clone(&server),
        ));
        let tools = MediumTools::new(runs.clone(), server, tier_small::config::deployed_reach());
        let attached = tools.clone();
        // Deployed agents prove their lane with their task role instead of holding a token.
        let proofs = (!cfg.agent_roles.is_empty()).then(|| {
            Arc::new(crate::runtime::proof::StsAgents::new(
                &aws.region,
                aws.endpoint.as_deref(),
                &cfg.state_machine_arn,
                cfg.agent_roles.clone(),
                runs.clone(),
            ))
        });
        Ok(Some(ServerPart {
            tools: Arc::new(tools),
            feed: Some(Box::new(move |server, stop| {
                if let Some(p) = proofs {
                    server.auth.accept_agents(p);
                }
                attached.attach(server);
                Box::pin(runs.feed(stop))
            })),
        }))
    }
}
