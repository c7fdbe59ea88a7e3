//! The agents outside the server: each task arrives as an [`AgentTask`] — from the
//! environment (one ECS task per step, started by Step Functions) or from an SQS queue (the
//! emulator, or a pool of workers) — is done through the workspace's MCP endpoint over HTTP
//! with the agent's bearer token, and is answered with `SendTaskSuccess` or
//! `SendTaskFailure`, with `SendTaskHeartbeat` while it runs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::lane::Lane;
use crate::model::Model;
use crate::policy::Policy;
use crate::tools::{McpClient, Tools};
use crate::workflow::{AGENT_FAILED, AgentTask, Phase, REFUSED, Role};

/// The KV key (of the run's tenant) holding the workspace's governance policy as JSON.
pub const POLICY_KEY: &str = "agentbus/policy";

/// Why the worker could not do or answer a task.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name}: {why}")]
    Invalid { name: &'static str, why: String },
    #[error("cannot reach the workspace's MCP endpoint {url}: {why}")]
    Connect { url: String, why: String },
    #[error("Step Functions refused the answer: {0}")]
    Answer(String),
    /// The step's task token is gone (its state timed out, or its run was stopped): the work
    /// is dropped unanswered, and an agent started for it (an ECS task) ends.
    #[error("the step was abandoned: {0}")]
    Abandoned(String),
}

/// How the worker reaches its workspace.
#[derive(Clone)]
pub struct Workspace {
    /// `https://…/mcp` of the workspace's server, or `ecs://CLUSTER/SERVICE:PORT/mcp`: the
    /// private address of a running task of that ECS service (the deployed agents' way in).
    pub mcp_url: String,
    /// Who the agent is to the server.
    pub credential: Credential,
    /// How often to tell Step Functions the task is alive.
    pub heartbeat: Duration,
}

/// What the agent shows the server.
#[derive(Clone)]
pub enum Credential {
    /// A bearer token (`AGENTBUS_MCP_TOKEN`): the token's tenant and role.
    Token(String),
    /// A proof of the agent's AWS identity for each task's run ([`crate::proof`]): the
    /// run's tenant, in the lane of the role the agent runs under. `audience` names the
    /// workspace (`AGENTBUS_AUDIENCE`).
    Proof {
        aws: Box<aws_config::SdkConfig>,
        audience: String,
    },
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("mcp_url", &self.mcp_url)
            .field("credential", &"<redacted>")
            .finish()
    }
}

impl Workspace {
    /// The endpoint and the bearer credential for one task.
    async fn session(&self, task: &AgentTask) -> Result<(String, String), WorkerError> {
        let bearer = match &self.credential {
            Credential::Token(t) => t.clone(),
            Credential::Proof { aws, audience } => {
                let claim = crate::proof::Claim {
                    tenant: task.input["tenant"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    run_id: task.run_id.clone(),
                };
                crate::proof::prove(aws, &claim, audience)
                    .await
                    .map_err(|e| WorkerError::Invalid {
                        name: "AWS identity",
                        why: e.to_string(),
                    })?
            }
        };
        let url = match (&self.credential, self.mcp_url.strip_prefix("ecs://")) {
            (Credential::Proof { aws, .. }, Some(rest)) => resolve_ecs(aws, rest).await?,
            (_, Some(_)) => {
                return Err(WorkerError::Invalid {
                    name: "AGENTBUS_MCP_URL",
                    why: "an ecs:// endpoint is for the deployed agents (no AGENTBUS_MCP_TOKEN)"
                        .into(),
                });
            }
            (_, None) => self.mcp_url.clone(),
        };
        Ok((url, bearer))
    }
}

/// `CLUSTER/SERVICE:PORT/PATH` to `http://PRIVATE_IP:PORT/PATH` of a running task of the
/// service: inside the VPC, where the dashboard admits the agents' security group.
async fn resolve_ecs(aws: &aws_config::SdkConfig, rest: &str) -> Result<String, WorkerError> {
    let invalid = |why: String| WorkerError::Invalid {
        name: "AGENTBUS_MCP_URL",
        why,
    };
    let (cluster, rest) = rest
        .split_once('/')
        .ok_or_else(|| invalid(format!("ecs://{rest} names no service")))?;
    let (service_port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (service, port) = service_port
        .rsplit_once(':')
        .ok_or_else(|| invalid(format!("ecs://{cluster}/{service_port} names no port")))?;
    let ecs = aws_sdk_ecs::Client::new(aws);
    let connect = |why: String| WorkerError::Connect {
        url: format!("ecs://{cluster}/{service_port}"),
        why,
    };
    let listed = ecs
        .list_tasks()
        .cluster(cluster)
        .service_name(service)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
        .send()
        .await
        .map_err(|e| connect(format!("ListTasks: {e}")))?;
    if listed.task_arns().is_empty() {
        return Err(connect("the service runs no task".into()));
    }
    let described = ecs
        .describe_tasks()
        .cluster(cluster)
        .set_tasks(Some(listed.task_arns().to_vec()))
        .send()
        .await
        .map_err(|e| connect(format!("DescribeTasks: {e}")))?;
    let ip = described
        .tasks()
        .iter()
        .filter(|t| t.last_status() == Some("RUNNING"))
        .flat_map(|t| t.attachments())
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
        .ok_or_else(|| connect("no running task has a private address yet".into()))?;
    Ok(format!("http://{ip}:{port}/{path}"))
}

/// An MCP client of the workspace's server over Streamable HTTP.
pub async fn connect(url: &str, token: &str) -> Result<McpClient, WorkerError> {
    connect_to(url, Some(token)).await
}

/// An MCP client of any server over Streamable HTTP, with a bearer token when given.
pub async fn connect_to(url: &str, token: Option<&str>) -> Result<McpClient, WorkerError> {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    if let Some(token) = token {
        config = config.auth_header(token.to_string());
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let client =
        ().serve(transport)
            .await
            .map_err(|e| WorkerError::Connect {
                url: url.to_string(),
                why: e.to_string(),
            })?;
    Ok(McpClient(client))
}

/// The tenant's governance policy: its KV entry [`POLICY_KEY`], else the defaults.
pub async fn workspace_policy(tools: &dyn Tools) -> Result<Policy, String> {
    let got = tools
        .call("kv_get", json!({"key": POLICY_KEY}))
        .await
        .map_err(|e| e.to_string())?;
    match got["value"].as_str() {
        Some(text) if got["found"] == json!(true) => Policy::from_json(text)
            .map_err(|e| format!("the workspace policy (KV {POLICY_KEY}) does not parse: {e}")),
        _ => Ok(Policy::default()),
    }
}

fn env(name: &'static str) -> Result<String, WorkerError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(WorkerError::Missing(name))
}

fn parse<T: serde::de::DeserializeOwned>(name: &'static str, text: &str) -> Result<T, WorkerError> {
    serde_json::from_value(Value::String(text.to_string()))
        .or_else(|_| serde_json::from_str(text))
        .map_err(|e| WorkerError::Invalid {
            name,
            why: e.to_string(),
        })
}

/// The task an ECS task was started for: `AGENTBUS_TASK_TOKEN`, `AGENTBUS_RUN_ID`,
/// `AGENTBUS_ROLE`, `AGENTBUS_PHASE`, `AGENTBUS_LANE` and `AGENTBUS_INPUT` (the state, as JSON),
/// as the compiled workflow sets them.
pub fn task_from_env() -> Result<AgentTask, WorkerError> {
    Ok(AgentTask {
        task_token: env("AGENTBUS_TASK_TOKEN")?,
        run_id: env("AGENTBUS_RUN_ID")?,
        role: parse::<Role>("AGENTBUS_ROLE", &env("AGENTBUS_ROLE")?)?,
        phase: parse::<Phase>("AGENTBUS_PHASE", &env("AGENTBUS_PHASE")?)?,
        lane: parse::<Lane>("AGENTBUS_LANE", &env("AGENTBUS_LANE")?)?,
        input: serde_json::from_str(&env("AGENTBUS_INPUT")?).map_err(|e| WorkerError::Invalid {
            name: "AGENTBUS_INPUT",
            why: e.to_string(),
        })?,
    })
}

/// Does one task and answers it. The answer is sent whatever happened (a failure is an
/// answer); only failing to answer is an error.
pub async fn handle(
    task: AgentTask,
    ws: &Workspace,
    sfn: &aws_sdk_sfn::Client,
    model: Option<&Model>,
) -> Result<(), WorkerError> {
    let beat = CancellationToken::new();
    // Set when Step Functions no longer knows the task token.
    let gone = CancellationToken::new();
    let heartbeat = {
        let (sfn, token, every, stop, gone) = (
            sfn.clone(),
            task.task_token.clone(),
            ws.heartbeat,
            beat.clone(),
            gone.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(every) => {
                        match sfn.send_task_heartbeat().task_token(&token).send().await {
                            Ok(_) => {}
                            Err(e) if e.as_service_error().is_some_and(|e| {
                                e.is_task_timed_out() || e.is_task_does_not_exist() || e.is_invalid_token()
                            }) => {
                                gone.cancel();
                                return Some(format!("{e}"));
                            }
                            Err(e) => tracing::warn!("heartbeat: {e}"),
                        }
                    }
                }
            }
        })
    };
    let outcome = async {
        let (url, bearer) = ws
            .session(&task)
            .await
            .map_err(|e| (AGENT_FAILED, e.to_string()))?;
        let tools = connect(&url, &bearer)
            .await
            .map_err(|e| (AGENT_FAILED, e.to_string()))?;
        let policy = workspace_policy(&tools).await.map_err(|e| (REFUSED, e))?;
        let out = crate::roles::perform(
            &task,
            &tools,
            &policy,
            model,
            time::OffsetDateTime::now_utc(),
        )
        .await
        .map_err(|e| (e.error_name(), e.to_string()));
        let _ = tools.0.cancel().await;
        out
    };
    let outcome = tokio::select! {
        o = outcome => o,
        _ = gone.cancelled() => {
            let why = heartbeat.await.ok().flatten().unwrap_or_default();
            tracing::warn!(
                "{} {} of run {}: Step Functions no longer waits for it ({why}); dropped",
                task.role.as_str(),
                task.phase.as_str(),
                task.run_id
            );
            return Err(WorkerError::Abandoned(why));
        }
    };
    beat.cancel();
    let _ = heartbeat.await;
    let sent = match outcome {
        Ok(v) => sfn
            .send_task_success()
            .task_token(&task.task_token)
            .output(v.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        Err((error, cause)) => {
            tracing::warn!(
                "{} {} of run {}: {cause}",
                task.role.as_str(),
                task.phase.as_str(),
                task.run_id
            );
            sfn.send_task_failure()
                .task_token(&task.task_token)
                .error(error)
                // The cause stays in the run's state: its first MAX_CAUSE_CHARS (the whole
                // is in this log).
                .cause(
                    cause
                        .chars()
                        .take(crate::workflow::MAX_CAUSE_CHARS)
                        .collect::<String>(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        }
    };
    sent.map_err(WorkerError::Answer)
}

/// Answers tasks from an SQS queue until `stop`, each as it arrives.
pub async fn serve_queue(
    queue_url: &str,
    sqs: &aws_sdk_sqs::Client,
    sfn: &aws_sdk_sfn::Client,
    ws: &Workspace,
    model: Option<Arc<Model>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            r = sqs.receive_message().queue_url(queue_url).max_number_of_messages(10).wait_time_seconds(5).send() => r,
        };
        let messages = match got {
            Ok(g) => g.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("receiving from {queue_url}: {e:?}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for m in messages {
            // A task is worked on only by the worker that removed it from the queue: if the
            // delete fails the message comes back and is taken then, never done twice.
            let Some(h) = m.receipt_handle() else {
                continue;
            };
            if let Err(e) = sqs
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(h)
                .send()
                .await
            {
                tracing::warn!("taking a task from {queue_url}: {e:?}; it will come back");
                continue;
            }
            let task: AgentTask = match serde_json::from_str(m.body().unwrap_or_default()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("a message that is not an agent task: {e}");
                    continue;
                }
            };
            let (ws, sfn, model) = (ws.clone(), sfn.clone(), model.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(task, &ws, &sfn, model.as_deref()).await {
                    tracing::error!("{e}");
                }
            });
        }
    }
}

/// The worker: the token from `AGENTBUS_MCP_TOKEN`, AWS from the standard chain, the model
/// from `AGENTBUS_MODEL`; one task from the environment, or the queue's until Ctrl-C or
/// SIGTERM.
pub async fn run(
    queue: Option<String>,
    mcp_url: String,
    heartbeat: Duration,
) -> Result<(), String> {
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    // A token when one is given; else the agent proves its AWS identity (the deployed
    // agents: their task role is their lane).
    let credential = match (env("AGENTBUS_MCP_TOKEN"), env("AGENTBUS_AUDIENCE")) {
        (Ok(token), _) => Credential::Token(token),
        (Err(_), Ok(audience)) => Credential::Proof {
            aws: Box::new(cfg.clone()),
            audience,
        },
        (Err(e), Err(_)) => {
            return Err(format!(
                "{e} (or AGENTBUS_AUDIENCE, for an agent that proves its AWS identity)"
            ));
        }
    };
    let ws = Workspace {
        mcp_url,
        credential,
        heartbeat,
    };
    let sfn = aws_sdk_sfn::Client::new(&cfg);
    let model = Model::from_env()
        .await
        .map_err(|e| e.to_string())?
        .map(Arc::new);
    match queue {
        None => {
            let task = task_from_env().map_err(|e| e.to_string())?;
            handle(task, &ws, &sfn, model.as_deref())
                .await
                .map_err(|e| e.to_string())
        }
        Some(url) => {
            let sqs = aws_sdk_sqs::Client::new(&cfg);
            let stop = CancellationToken::new();
            let on_signal = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                on_signal.cancel();
            });
            serve_queue(&url, &sqs, &sfn, &ws, model, stop).await;
            Ok(())
        }
    }
}
