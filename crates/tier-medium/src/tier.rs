//! The medium tier's resources, on top of the small tier's: the workflow's state machine, the
//! agents' task definitions with one role per lane, the approvals queue, and the alarms and
//! dashboard that watch all of it.
//!
//! Agents are ECS tasks started by the state machine (`ecs:runTask.waitForTaskToken`): one
//! task definition per agent, and the step's lane picks the task role (`TaskRoleArn` in the
//! run's overrides), so what a lane may do is enforced by IAM. Subtasks need no queue of
//! their own: the compiled workflow's Map state carries them, one iteration (and one agent
//! task) each, with its concurrency limit, retries and catch; a queue would add a second
//! place where a subtask can be lost or run twice.

use std::sync::Arc;

use agents::asl::{Dispatch, Target, compile};
use agents::lane::Lane;
use agents::workflow::{Role as Agent, Workflow};
use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
use serde_json::Value;
use tier_small::components::queue::Queue;
use tier_small::config::SmallConfig;
use tier_small::tier::ids as small_ids;
use tier_small::tier::{Small, SmallOwn, SmallSettings};
use tier_xs::components::ecs::{ContainerSpec, CpuArchitecture, TaskDefinition};
use tier_xs::components::iam::{Role, policy, statement, statement_when};
use tier_xs::components::logs::{LogGroup, LogSource};
use tier_xs::components::network::{Ingress, SecurityGroup, Source};
use tier_xs::components::table::{DynamoTable, TableSpec, TableUsage};
use tier_xs::config::ServerConfig;
use tier_xs::engine::{Meta, Outputs, Resource, output_or_unknown, unknown};
use tier_xs::ladder::{DashboardSpec, Problem};
use tier_xs::workspace::{Tier, Workspace};
use tier_xs::xs::{ExtraSmall, XsSettings};

use crate::components::alarm::{Alarm, Metric, load_balancer_dimension, target_group_dimension};
use crate::components::dashboard::{Dashboard, Graph, LogQuery};
use crate::components::metric_filter::MetricFilter;
use crate::components::state_machine::{ExecutionLogging, StateMachine};
use crate::components::topic::Topic;
use crate::config::{MediumConfig, component};
use crate::cost::{MediumUsage, RunPricing};

/// Logical ids of the medium tier's resources (unique across tiers).
pub mod ids {
    pub const AGENTS_SECURITY_GROUP: &str = "agents-security-group";
    pub const AGENTS_EXECUTION_ROLE: &str = "agents-execution-role";
    pub const READ_ONLY_ROLE: &str = "agent-read-only-role";
    pub const DRY_RUN_ROLE: &str = "agent-dry-run-role";
    pub const EXECUTE_ROLE: &str = "agent-execute-role";
    pub const CONDUCTOR_LOG_GROUP: &str = "conductor-log-group";
    pub const CRITIC_LOG_GROUP: &str = "critic-log-group";
    pub const SWEEPER_LOG_GROUP: &str = "sweeper-log-group";
    pub const CONDUCTOR_TASK_DEFINITION: &str = "conductor-task-definition";
    pub const CRITIC_TASK_DEFINITION: &str = "critic-task-definition";
    pub const SWEEPER_TASK_DEFINITION: &str = "sweeper-task-definition";
    pub const CONDUCTOR_ERRORS: &str = "conductor-errors-filter";
    pub const CRITIC_ERRORS: &str = "critic-errors-filter";
    pub const SWEEPER_ERRORS: &str = "sweeper-errors-filter";
    pub const WORKFLOW_LOG_GROUP: &str = "workflow-log-group";
    pub const WORKFLOW_ROLE: &str = "workflow-role";
    pub const STATE_MACHINE: &str = "state-machine";
    pub const APPROVALS_QUEUE: &str = "approvals-queue";
    pub const APPROVALS_DEAD_LETTER_QUEUE: &str = "approvals-dead-letter-queue";
    pub const ALERTS_TOPIC: &str = "alerts-topic";
    pub const CLOUDWATCH_DASHBOARD: &str = "cloudwatch-dashboard";
    pub const RUNS_TABLE: &str = "runs-table";
    pub const APPROVALS_EXPIRED_FILTER: &str = "approvals-expired-filter";
    pub const AGENT_TASKS_QUEUE: &str = "agent-tasks-queue";
    pub const AGENT_TASKS_DEAD_LETTER_QUEUE: &str = "agent-tasks-dead-letter-queue";
}

/// The agents' container in their task definitions.
pub const AGENT_CONTAINER: &str = "agent";
/// Agent task size: a quarter vCPU and half a GiB (the agents wait on a model and on MCP).
pub const AGENT_CPU: u32 = 256;
pub const AGENT_MEMORY: u32 = 512;
/// Agents' and the workflow's logs are kept 30 days.
pub const LOG_DAYS: i32 = 30;
/// The metric namespace of the workspace's own metrics (the agents' errors).
pub fn metric_namespace(ws: &Workspace) -> String {
    format!("agentbus/{}", ws.env)
}
pub const AGENT_ERRORS_METRIC: &str = "AgentErrors";
pub const APPROVALS_EXPIRED_METRIC: &str = "ApprovalsExpired";
/// An approval request the server has not taken for this long means it is not reading them.
pub const APPROVALS_UNTAKEN_SECONDS: f64 = 900.0;

/// Where the workflow's agents run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgentDispatch {
    /// A Fargate task per step, in its lane's IAM role (the default).
    #[default]
    Ecs,
    /// Steps wait in the workspace's agent-tasks queue for agents run elsewhere
    /// (`agentbus agent --queue`): their lanes are then up to the credentials they are given.
    Queue,
}

/// Settings of the medium tier beyond the small ones.
#[derive(Clone, Debug)]
pub struct MediumSettings {
    /// Container image of the agents (`agentbus image push --agent`).
    pub agent_image: Option<String>,
    /// What that image was built for.
    pub agent_architecture: CpuArchitecture,
    pub logging: ExecutionLogging,
    pub dispatch: AgentDispatch,
}

/// One agent's pieces: its task definition, log group and error filter.
struct AgentIds {
    agent: Agent,
    task_definition: &'static str,
    log_group: &'static str,
    errors: &'static str,
}

const AGENTS: [AgentIds; 3] = [
    AgentIds {
        agent: Agent::Conductor,
        task_definition: ids::CONDUCTOR_TASK_DEFINITION,
        log_group: ids::CONDUCTOR_LOG_GROUP,
        errors: ids::CONDUCTOR_ERRORS,
    },
    AgentIds {
        agent: Agent::Critic,
        task_definition: ids::CRITIC_TASK_DEFINITION,
        log_group: ids::CRITIC_LOG_GROUP,
        errors: ids::CRITIC_ERRORS,
    },
    AgentIds {
        agent: Agent::Sweeper,
        task_definition: ids::SWEEPER_TASK_DEFINITION,
        log_group: ids::SWEEPER_LOG_GROUP,
        errors: ids::SWEEPER_ERRORS,
    },
];

/// The lanes and their roles' logical ids and name components.
const LANES: [(Lane, &str, &str); 3] = [
    (
        Lane::ReadOnly,
        ids::READ_ONLY_ROLE,
        component::AGENT_READ_ONLY,
    ),
    (Lane::DryRun, ids::DRY_RUN_ROLE, component::AGENT_DRY_RUN),
    (Lane::Execute, ids::EXECUTE_ROLE, component::AGENT_EXECUTE),
];

/// The medium tier's own resources (without the small and extra-small ones).
pub struct MediumOwn {
    pub config: MediumConfig,
    pub resources: Vec<Arc<dyn Resource>>,
    pub problems: Vec<Problem>,
    pub images: Vec<(&'static str, String)>,
    pub notes: Vec<String>,
    pub dashboard: Arc<Dashboard>,
    pub alarms: Vec<Arc<Alarm>>,
    /// The agents run as ECS tasks in the workspace's VPC (not on a queue of your own).
    pub agents_in_vpc: bool,
}

/// Where the deployed agents find the MCP endpoint: a running task of the dashboard service,
/// by its private address.
fn agents_mcp_url(ws: &Workspace) -> String {
    format!(
        "ecs://{}/{}:{}/mcp",
        ws.id(),
        ws.name("dashboard"),
        tier_xs::config::DASHBOARD_PORT
    )
}

/// What each lane's role may do with the workspace's data, directly on AWS. The agents work
/// through the workspace's MCP tools; these roles bound what an agent's credentials could do
/// besides, so a read-only step cannot write whatever its process does.
fn lane_statements(ws: &Workspace, lane: Lane) -> Vec<Value> {
    let xs = ServerConfig::for_workspace(ws, Tier::Medium);
    let small = SmallConfig::for_workspace(ws);
    let table = |t: &str| ws.arn("dynamodb", &format!("table/{t}"));
    let tables: Vec<String> = [
        &xs.kv_table,
        &small.events_table,
        &small.subscriptions_table,
        &small.rules_table,
    ]
    .iter()
    .flat_map(|t| [table(t), format!("{}/index/*", table(t))])
    .collect();
    let s3 = |b: &str| format!("arn:{}:s3:::{b}", ws.partition);
    let buckets = vec![s3(&small.artifacts_bucket), s3(&small.timeline_bucket)];
    let objects: Vec<String> = buckets.iter().map(|b| format!("{b}/*")).collect();
    // Every agent answers its own task token; IAM has no resource-level scope for these
    // actions (the token is the credential).
    let mut s = vec![statement(
        &[
            "states:SendTaskSuccess",
            "states:SendTaskFailure",
            "states:SendTaskHeartbeat",
        ],
        &["*".to_string()],
    )];
    s.push(statement(
        &[
            "dynamodb:GetItem",
            "dynamodb:BatchGetItem",
            "dynamodb:Query",
            "dynamodb:DescribeTable",
        ],
        &tables,
    ));
    s.push(statement(&["s3:ListBucket"], &buckets));
    s.push(statement(&["s3:GetObject"], &objects));
    // Finding the dashboard's private address (the agents' way to the MCP endpoint).
    let cluster = ws.arn("ecs", &format!("cluster/{}", ws.id()));
    s.push(statement_when(
        &["ecs:ListTasks"],
        &["*".to_string()],
        serde_json::json!({"ArnEquals": {"ecs:cluster": cluster}}),
    ));
    s.push(statement(
        &["ecs:DescribeTasks"],
        &[ws.arn("ecs", &format!("task/{}/*", ws.id()))],
    ));
    // Its own records: a run's plan, verdict and retrospective, and timeline entries.
    s.push(statement(
        &["s3:PutObject"],
        &[
            format!("{}/*/runs/*", s3(&small.artifacts_bucket)),
            format!("{}/*", s3(&small.timeline_bucket)),
        ],
    ));
    if lane >= Lane::DryRun {
        // Previews: what the deploy engine observes and plans, and what it costs.
        s.push(statement(
            &[
                "ecs:DescribeClusters",
                "ecs:DescribeServices",
                "ecs:DescribeTaskDefinition",
                "events:DescribeEventBus",
                "events:DescribeRule",
                "sqs:GetQueueAttributes",
                "logs:DescribeLogGroups",
                "budgets:ViewBudget",
            ],
            &["*".to_string()],
        ));
    }
    if lane >= Lane::Execute {
        s.push(statement(
            &[
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:ConditionCheckItem",
            ],
            &tables,
        ));
        s.push(statement(&["s3:PutObject", "s3:DeleteObject"], &objects));
        s.push(statement(
            &["events:PutEvents"],
            &[ws.arn("events", &format!("event-bus/{}", xs.event_bus))],
        ));
    }
    s
}

impl MediumOwn {
    pub fn new(ws: &Workspace, xs: &XsSettings, settings: &MediumSettings) -> Self {
        let t = Tier::Medium;
        let prod = ws.env.is_prod();
        let config = MediumConfig::for_workspace(ws);
        let logs_prefix = ws.arn("logs", "log-group:");
        let mut problems = Vec::new();
        let mut resources: Vec<Arc<dyn Resource>> = Vec::new();
        let mut images = Vec::new();
        let tags = |c: &str| ws.tags(t, c);

        let agent_image = settings.agent_image.clone().unwrap_or_default();
        let on_queue = settings.dispatch == AgentDispatch::Queue;
        let mut notes = Vec::new();
        if on_queue {
            notes.push(format!(
                "agents: steps wait in the SQS queue {} for agents you run (`agentbus agent --queue URL --mcp-url https://YOUR-DASHBOARD/mcp`, a token in AGENTBUS_MCP_TOKEN); their lanes are then up to the credentials and token you give them",
                config.agent_tasks_queue
            ));
        } else if agent_image.is_empty() {
            for a in &AGENTS {
                problems.push(Problem::when_changing(
                    a.task_definition,
                    "the agents' task definitions need their container image: pass --agent-image URI (`agentbus image push --agent`)",
                ));
            }
        }

        // Agents reach ECR, the AWS APIs and the workspace's MCP endpoint: out only.
        resources.push(Arc::new(SecurityGroup {
            meta: Meta::new(
                ids::AGENTS_SECURITY_GROUP,
                t,
                ws.name(component::AGENTS),
                tags("agents"),
            ),
            description: format!("agentbus {} agents: no inbound traffic", ws.env),
            vpc_id: xs.network.vpc_id.clone(),
            rules: Vec::new(),
            outbound_only: Some("the agents' tasks"),
            holds_data: false,
        }));

        let log_name = |a: Agent| format!("/ecs/{}", ws.name(a.as_str()));
        for a in &AGENTS {
            resources.push(Arc::new(LogGroup {
                meta: Meta::new(a.log_group, t, log_name(a.agent), tags("agents")),
                source: LogSource::Ingest(MediumUsage::agent_log_gb),
                retention_days: LOG_DAYS,
                arn_prefix: logs_prefix.clone(),
                holds_data: true,
            }));
            resources.push(Arc::new(MetricFilter {
                meta: Meta::new(
                    a.errors,
                    t,
                    format!("{}-errors", ws.name(a.agent.as_str())),
                    Vec::new(),
                ),
                log_group_id: a.log_group,
                log_group: log_name(a.agent),
                pattern: "\"ERROR\"".into(),
                namespace: metric_namespace(ws),
                metric: AGENT_ERRORS_METRIC,
            }));
        }

        // The execution role pulls the agents' image and writes their logs.
        let mut exec = vec![statement(
            &["logs:CreateLogStream", "logs:PutLogEvents"],
            &AGENTS
                .iter()
                .map(|a| format!("{logs_prefix}{}:*", log_name(a.agent)))
                .collect::<Vec<_>>(),
        )];
        if let Some(repo) = tier_xs::xs::ecr_repository_arn(ws, &agent_image) {
            exec.push(statement(
                &[
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                &[repo],
            ));
            exec.push(statement(
                &["ecr:GetAuthorizationToken"],
                &["*".to_string()],
            ));
        }
        let role = |id, name: String, service, statements| Role {
            arn: ws.iam_arn(&format!("role/{name}")),
            meta: Meta::new(id, t, name.clone(), tags("agents")),
            service,
            account: ws.account.clone(),
            policy_name: name,
            policy: policy(statements),
        };
        let exec_role = role(
            ids::AGENTS_EXECUTION_ROLE,
            ws.name("agents-execution"),
            "ecs-tasks.amazonaws.com",
            exec,
        );
        let exec_role_arn = exec_role.arn.clone();
        resources.push(Arc::new(exec_role));
        let mut lane_roles = std::collections::BTreeMap::new();
        for (lane, id, name) in LANES {
            let r = role(
                id,
                ws.name(name),
                "ecs-tasks.amazonaws.com",
                lane_statements(ws, lane),
            );
            lane_roles.insert(lane, r.arn.clone());
            resources.push(Arc::new(r));
        }

        let cluster = ws.id();
        let mut families = std::collections::BTreeMap::new();
        for a in &AGENTS {
            let family = ws.name(a.agent.as_str());
            families.insert(a.agent, family.clone());
            resources.push(Arc::new(TaskDefinition {
                meta: Meta::new(a.task_definition, t, family, tags("agents")),
                cpu: AGENT_CPU,
                memory: AGENT_MEMORY,
                container: ContainerSpec {
                    name: AGENT_CONTAINER.into(),
                    image: agent_image.clone(),
                    port: None,
                    env: vec![
                        ("AGENTBUS_AGENT".into(), a.agent.as_str().into()),
                        // The dashboard's private address, found through ECS, and the
                        // workspace the agent proves its identity to (it holds no token).
                        ("AGENTBUS_MCP_URL".into(), agents_mcp_url(ws)),
                        ("AGENTBUS_AUDIENCE".into(), config.state_machine_arn.clone()),
                        (tier_xs::config::ENV_LOG_FORMAT.into(), "json".into()),
                    ],
                    health_command: None,
                    log_group: log_name(a.agent),
                    region: ws.region.clone(),
                    stop_timeout: 30,
                },
                execution_role_id: ids::AGENTS_EXECUTION_ROLE,
                // The lane's role replaces it for every step (the run's overrides); the
                // default is the least: read-only.
                task_role_id: ids::READ_ONLY_ROLE,
                log_group_id: a.log_group,
                reads_at_start: Vec::new(),
                cpu_architecture: settings.agent_architecture,
                wanted: !on_queue,
            }));
            if !agent_image.is_empty() && !on_queue {
                images.push((a.task_definition, agent_image.clone()));
            }
        }

        // The runs table: whose each run is and what it waits on (the executions hold the
        // rest). Finished runs expire after 90 days, with their executions' history.
        resources.push(Arc::new(DynamoTable(TableSpec {
            meta: Meta::new(
                ids::RUNS_TABLE,
                t,
                config.runs_table.clone(),
                tags("workflows"),
            ),
            hash_key: "tenant",
            range_key: Some("run_id"),
            gsis: Vec::new(),
            ttl_attribute: Some("expires_at"),
            deletion_protection: prod,
            usage: TableUsage::Priced(crate::cost::runs_table_cost),
        })));

        // The approvals queue: the state machine puts a request in it and waits for its
        // token; the server reads it. What fails five receives is kept 14 days.
        let workflow = Workflow::lanes();
        let queue = |id, name: String, dead_letter_id, holds_data, polls, wanted| {
            Arc::new(Queue {
                arn: ws.arn("sqs", &name),
                meta: Meta::new(id, t, name, tags("workflows")),
                retention_seconds: 4 * 86_400,
                visibility_timeout_seconds: 60,
                receive_wait_seconds: 20,
                dead_letter_id,
                policy: None,
                holds_data,
                polls_per_month: polls,
                requests_per_event: 0.0,
                wanted,
            })
        };
        resources.push(queue(
            ids::APPROVALS_QUEUE,
            config.approvals_queue.clone(),
            Some(ids::APPROVALS_DEAD_LETTER_QUEUE),
            false,
            tier_small::tier::QUEUE_POLLS_PER_MONTH,
            true,
        ));
        resources.push(queue(
            ids::APPROVALS_DEAD_LETTER_QUEUE,
            ws.name(component::APPROVALS_DEAD_LETTERS),
            None,
            true,
            0.0,
            true,
        ));
        // With agents of your own, steps wait in a queue for them (one message per step,
        // answered with its task token); what fails five receives is kept 14 days.
        resources.push(queue(
            ids::AGENT_TASKS_QUEUE,
            config.agent_tasks_queue.clone(),
            Some(ids::AGENT_TASKS_DEAD_LETTER_QUEUE),
            false,
            tier_small::tier::QUEUE_POLLS_PER_MONTH,
            on_queue,
        ));
        resources.push(queue(
            ids::AGENT_TASKS_DEAD_LETTER_QUEUE,
            ws.name(component::AGENT_TASKS_DEAD_LETTERS),
            None,
            true,
            0.0,
            on_queue,
        ));

        // The workflow's own log group: under /aws/vendedlogs/, which AWS recommends for
        // Step Functions (no per-group resource policy to outgrow).
        let workflow_log = format!(
            "/aws/vendedlogs/states/{}",
            ws.name(component::STATE_MACHINE)
        );
        resources.push(Arc::new(LogGroup {
            meta: Meta::new(
                ids::WORKFLOW_LOG_GROUP,
                t,
                workflow_log.clone(),
                tags("workflows"),
            ),
            source: LogSource::Ingest(MediumUsage::workflow_log_gb),
            retention_days: LOG_DAYS,
            arn_prefix: logs_prefix.clone(),
            holds_data: true,
        }));
        // An approval that expired: its task (the one that sends to SQS and waits for the
        // token) timed out. Step Functions logs TaskTimedOut at level ERROR, with the task's
        // resource type and without the states' data.
        resources.push(Arc::new(MetricFilter {
            meta: Meta::new(
                ids::APPROVALS_EXPIRED_FILTER,
                t,
                ws.name("approvals-expired"),
                Vec::new(),
            ),
            log_group_id: ids::WORKFLOW_LOG_GROUP,
            log_group: workflow_log.clone(),
            pattern: "{ ($.type = \"TaskTimedOut\") && ($.details.resourceType = \"sqs\") }".into(),
            namespace: metric_namespace(ws),
            metric: APPROVALS_EXPIRED_METRIC,
        }));
        let task_definitions: Vec<String> = families
            .values()
            .map(|f| ws.arn("ecs", &format!("task-definition/{f}:*")))
            .collect();
        let mut pass: Vec<String> = lane_roles.values().cloned().collect();
        pass.push(exec_role_arn);
        let approvals_arn = ws.arn("sqs", &config.approvals_queue);
        let machine_role = role(
            ids::WORKFLOW_ROLE,
            ws.name("workflow"),
            "states.amazonaws.com",
            vec![
                statement(&["ecs:RunTask"], &task_definitions),
                // A state that times out or a run that is stopped stops its task.
                statement(
                    &["ecs:StopTask", "ecs:DescribeTasks"],
                    &[ws.arn("ecs", &format!("task/{cluster}/*"))],
                ),
                statement_when(
                    &["iam:PassRole"],
                    &pass,
                    serde_json::json!({"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}),
                ),
                statement(
                    &["sqs:SendMessage"],
                    &if on_queue {
                        vec![approvals_arn, ws.arn("sqs", &config.agent_tasks_queue)]
                    } else {
                        vec![approvals_arn]
                    },
                ),
                // Execution logging goes through CloudWatch Logs' log delivery, whose
                // actions IAM scopes to no resource (Step Functions' developer guide).
                statement(
                    crate::components::state_machine::LOG_DELIVERY_ACTIONS,
                    &["*".to_string()],
                ),
                statement(
                    &[
                        "xray:PutTraceSegments",
                        "xray:PutTelemetryRecords",
                        "xray:GetSamplingRules",
                        "xray:GetSamplingTargets",
                    ],
                    &["*".to_string()],
                ),
            ],
        );
        resources.push(Arc::new(machine_role));

        let subnets = xs.network.subnet_ids.clone();
        let spot = !prod;
        let approvals_url = ws_queue_url(ws, &config.approvals_queue);
        let agent_tasks_url = ws_queue_url(ws, &config.agent_tasks_queue);
        let compiled_for = workflow.clone();
        let families_for = families.clone();
        let lanes_for = lane_roles.clone();
        let cluster_for = cluster.clone();
        let definition = move |outputs: &Outputs| {
            let sg = match output_or_unknown(outputs, ids::AGENTS_SECURITY_GROUP, "id") {
                Value::String(s) => s,
                _ => return unknown("agents-security-group.id"),
            };
            let dispatch = if on_queue {
                Dispatch::Sqs {
                    queue_url: agent_tasks_url.clone(),
                }
            } else {
                Dispatch::Ecs {
                    cluster: cluster_for.clone(),
                    task_definitions: families_for.clone(),
                    lane_roles: lanes_for.clone(),
                    container: AGENT_CONTAINER.into(),
                    subnets: subnets.clone(),
                    security_groups: vec![sg],
                    assign_public_ip: true,
                    spot,
                }
            };
            compile(
                &compiled_for,
                &Target {
                    dispatch,
                    approvals_queue_url: approvals_url.clone(),
                },
            )
        };
        let machine_name = ws.name(component::STATE_MACHINE);
        resources.push(Arc::new(StateMachine {
            arn: config.state_machine_arn.clone(),
            meta: Meta::new(ids::STATE_MACHINE, t, machine_name, tags("workflows")),
            definition: Box::new(definition),
            definition_needs: vec![
                ids::AGENTS_SECURITY_GROUP,
                ids::CONDUCTOR_TASK_DEFINITION,
                ids::CRITIC_TASK_DEFINITION,
                ids::SWEEPER_TASK_DEFINITION,
                ids::READ_ONLY_ROLE,
                ids::DRY_RUN_ROLE,
                ids::EXECUTE_ROLE,
                ids::APPROVALS_QUEUE,
            ],
            role_id: ids::WORKFLOW_ROLE,
            log_group_id: ids::WORKFLOW_LOG_GROUP,
            logging: settings.logging,
            pricing: RunPricing {
                // Plan, record, review, gate, (await), decision, map, sweep, finish.
                fixed_transitions: 10.0,
                transitions_per_subtask: 2.0,
                fixed_agent_tasks: 4.0,
                cpu: AGENT_CPU,
                memory: AGENT_MEMORY,
                spot,
                on_ecs: !on_queue,
            },
        }));

        let topic_name = ws.name(component::ALERTS);
        resources.push(Arc::new(Topic {
            arn: ws.arn("sns", &topic_name),
            meta: Meta::new(ids::ALERTS_TOPIC, t, topic_name, tags("alerts")),
            email: xs.alert_email.clone(),
        }));

        let watch = Watched::new(ws, &config, workflow.approval_timeout_seconds);
        let alarms: Vec<Arc<Alarm>> = watch.alarms(ws).into_iter().map(Arc::new).collect();
        for a in &alarms {
            resources.push(a.clone());
        }
        let dashboard = Arc::new(Dashboard {
            meta: Meta::new(ids::CLOUDWATCH_DASHBOARD, t, ws.id(), Vec::new()),
            region: ws.region.clone(),
            graphs: watch.graphs(),
            charts: Vec::new(),
            queries: vec![LogQuery {
                title: "Agents' errors".into(),
                log_groups: AGENTS.iter().map(|a| log_name(a.agent)).collect(),
                query: "fields @timestamp, @logStream, @message | filter @message like /ERROR/ | sort @timestamp desc | limit 50".into(),
            }],
        });
        resources.push(dashboard.clone());

        MediumOwn {
            config,
            resources,
            problems,
            images,
            notes,
            dashboard,
            alarms,
            agents_in_vpc: !on_queue,
        }
    }

    /// Draws the charts and Logs Insights tables the layers above asked for on the workspace's
    /// CloudWatch dashboard.
    pub fn with_charts(mut self, spec: &DashboardSpec) -> Self {
        if spec.charts.is_empty() && spec.log_charts.is_empty() {
            return self;
        }
        let mut drawn = (*self.dashboard).clone();
        drawn.charts = spec.charts.clone();
        drawn.queries.extend(spec.log_charts.iter().cloned());
        let drawn = Arc::new(drawn);
        for r in &mut self.resources {
            if r.id() == ids::CLOUDWATCH_DASHBOARD {
                *r = drawn.clone();
            }
        }
        self.dashboard = drawn;
        self
    }

    /// What the dashboard server needs on AWS: the names of the state machine and the
    /// approvals queue, and the rights to start, read and stop runs and to answer approvals.
    pub fn shape_dashboard(&self, ws: &Workspace, spec: &mut DashboardSpec) {
        spec.env.extend(self.config.to_env());
        if self.agents_in_vpc {
            // The agents' tasks reach the MCP endpoint inside the VPC, not through the
            // load balancer (which admits only --allow-cidr).
            spec.ingress.push(Ingress {
                port: tier_xs::config::DASHBOARD_PORT,
                source: Source::Group(ids::AGENTS_SECURITY_GROUP),
            });
        }
        let machine = &self.config.state_machine_arn;
        let executions = ws.arn(
            "states",
            &format!("execution:{}:*", ws.name(component::STATE_MACHINE)),
        );
        spec.task_statements.push(statement(
            &["states:StartExecution", "states:ListExecutions"],
            std::slice::from_ref(machine),
        ));
        spec.task_statements.push(statement(
            &[
                "states:DescribeExecution",
                "states:GetExecutionHistory",
                "states:StopExecution",
            ],
            &[executions],
        ));
        // Approvals are answered with the request's task token (no resource-level scope).
        spec.task_statements.push(statement(
            &["states:SendTaskSuccess", "states:SendTaskFailure"],
            &["*".to_string()],
        ));
        let runs = ws.arn("dynamodb", &format!("table/{}", self.config.runs_table));
        spec.task_statements.push(statement(
            &[
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:Query",
            ],
            &[runs],
        ));
        spec.task_statements.push(statement(
            &[
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
            ],
            &[ws.arn("sqs", &self.config.approvals_queue)],
        ));
    }
}

/// The medium tier: the small tier (its dashboard configured for medium) and its own.
pub struct Medium {
    pub small: Small,
    pub own: MediumOwn,
}

impl Medium {
    /// The medium tier with its dashboard shaped by the small tier and this one.
    pub fn new(
        ws: &Workspace,
        xs: &XsSettings,
        small: &SmallSettings,
        settings: &MediumSettings,
    ) -> Self {
        let own = MediumOwn::new(ws, xs, settings);
        let small_own = SmallOwn::new(ws, xs, small);
        let mut spec = DashboardSpec::new(Tier::Medium);
        small_own.shape_dashboard(ws, &mut spec);
        own.shape_dashboard(ws, &mut spec);
        Medium {
            small: Small {
                xs: ExtraSmall::new(ws, xs, &spec),
                own: small_own,
            },
            own,
        }
    }

    /// Every resource of the tier: the lower tiers' first.
    pub fn resources(&self) -> Vec<Arc<dyn Resource>> {
        let mut r = self.small.resources();
        r.extend(self.own.resources.iter().cloned());
        r
    }

    pub fn problems(&self) -> Vec<Problem> {
        let mut p = self.small.problems();
        p.extend(self.own.problems.iter().cloned());
        p
    }
}

/// A queue's URL from its name: `https://sqs.{region}.{domain}/{account}/{name}` (the
/// endpoint Step Functions' SQS integration is given).
fn ws_queue_url(ws: &Workspace, name: &str) -> String {
    let domain = if ws.partition == "aws-cn" {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sqs.{}.{domain}/{}/{name}", ws.region, ws.account)
}

/// What the alarms and the dashboard watch, by name.
struct Watched {
    machine: String,
    cluster: String,
    service: String,
    approvals: String,
    approvals_dlq: String,
    events_dlq: String,
    namespace: String,
    approval_seconds: u32,
}

impl Watched {
    fn new(ws: &Workspace, config: &MediumConfig, approval_seconds: u32) -> Self {
        Watched {
            machine: config.state_machine_arn.clone(),
            cluster: ws.id(),
            service: ws.name("dashboard"),
            approvals: config.approvals_queue.clone(),
            approvals_dlq: ws.name(component::APPROVALS_DEAD_LETTERS),
            events_dlq: ws.name(tier_small::monitoring::DEAD_LETTER_COMPONENT),
            namespace: metric_namespace(ws),
            approval_seconds,
        }
    }

    fn executions(&self, name: &'static str) -> Metric {
        Metric::new("AWS/States", name, Statistic::Sum).dim("StateMachineArn", &self.machine)
    }

    fn queue(&self, name: &'static str, queue: &str, stat: Statistic) -> Metric {
        Metric::new("AWS/SQS", name, stat).dim("QueueName", queue)
    }

    fn service(&self, name: &'static str, stat: Statistic) -> Metric {
        Metric::new("AWS/ECS", name, stat)
            .dim("ClusterName", &self.cluster)
            .dim("ServiceName", &self.service)
    }

    fn alb(&self, name: &'static str, stat: Statistic) -> Metric {
        Metric::new("AWS/ApplicationELB", name, stat).dim_from(
            "LoadBalancer",
            small_ids::LOAD_BALANCER,
            "arn",
            load_balancer_dimension,
        )
    }

    fn target_group(&self, name: &'static str, stat: Statistic) -> Metric {
        self.alb(name, stat).dim_from(
            "TargetGroup",
            small_ids::TARGET_GROUP,
            "arn",
            target_group_dimension,
        )
    }

    fn agent_errors(&self) -> Metric {
        Metric::new(self.namespace.clone(), AGENT_ERRORS_METRIC, Statistic::Sum)
    }

    fn alarms(&self, ws: &Workspace) -> Vec<Alarm> {
        use ComparisonOperator as C;
        let t = Tier::Medium;
        let alarm = |id: &'static str,
                     component: &str,
                     metric: Metric,
                     (comparison, threshold): (C, f64),
                     (period, periods): (i32, i32),
                     missing: &'static str,
                     description: String| Alarm {
            meta: Meta::new(id, t, ws.name(component), ws.tags(t, "alerts")),
            metric,
            description,
            period_seconds: period,
            evaluation_periods: periods,
            threshold,
            comparison,
            treat_missing_data: missing,
            topic_id: ids::ALERTS_TOPIC,
        };
        let at_least = |n| (C::GreaterThanOrEqualToThreshold, n);
        vec![
            alarm(
                "workflow-failed-alarm",
                "workflow-failed",
                self.executions("ExecutionsFailed"),
                at_least(1.0),
                (300, 1),
                "notBreaching",
                "A workflow run failed. Open the run (`workflow_get`, or the execution in the Step Functions console) and read its error: an agent that failed three times, a refused plan, or an expired approval.".into(),
            ),
            alarm(
                "workflow-timed-out-alarm",
                "workflow-timed-out",
                self.executions("ExecutionsTimedOut"),
                at_least(1.0),
                (300, 1),
                "notBreaching",
                "A workflow run hit its overall time limit. Look for an agent step that kept retrying (the agents' log groups) or a stuck ECS task.".into(),
            ),
            alarm(
                "workflow-aborted-alarm",
                "workflow-aborted",
                self.executions("ExecutionsAborted"),
                at_least(1.0),
                (300, 1),
                "notBreaching",
                "A workflow run was stopped (`workflow_cancel` or StopExecution). Expected when someone cancelled it; otherwise find who stopped it in CloudTrail.".into(),
            ),
            alarm(
                "approvals-expired-alarm",
                "approvals-expired",
                Metric::new(self.namespace.clone(), APPROVALS_EXPIRED_METRIC, Statistic::Sum),
                at_least(1.0),
                (300, 1),
                "notBreaching",
                format!(
                    "An approval request waited longer than its expiry ({} h) and its run ended timed out. Decide waiting runs sooner (the dashboard's approvals panel or `approvals_list`), or give more people an admin token.",
                    self.approval_seconds / 3600
                ),
            ),
            alarm(
                "approvals-untaken-alarm",
                "approvals-untaken",
                self.queue(
                    "ApproximateAgeOfOldestMessage",
                    &self.approvals,
                    Statistic::Maximum,
                ),
                at_least(APPROVALS_UNTAKEN_SECONDS),
                (300, 1),
                "notBreaching",
                "An approval request has sat in the approvals queue for 15 minutes: the dashboard service is not taking them, so nobody can decide. Check that the service runs and its log for the approvals queue.".into(),
            ),
            alarm(
                "approvals-dead-letters-alarm",
                "approvals-dead-letters",
                self.queue(
                    "ApproximateNumberOfMessagesVisible",
                    &self.approvals_dlq,
                    Statistic::Maximum,
                ),
                at_least(1.0),
                (300, 1),
                "notBreaching",
                "Approval requests the server could not read five times are in the approvals dead-letter queue: their runs wait until they expire. Read the messages and the dashboard service's log.".into(),
            ),
            alarm(
                "events-dead-letters-alarm",
                "events-dead-letters",
                self.queue(
                    "ApproximateNumberOfMessagesVisible",
                    &self.events_dlq,
                    Statistic::Maximum,
                ),
                at_least(1.0),
                (300, 1),
                "notBreaching",
                "Events the monitor could not record five times are in the events dead-letter queue (the event monitoring tables miss them). Read the dashboard service's log; redrive the queue once it is fixed.".into(),
            ),
            alarm(
                "dashboard-down-alarm",
                "dashboard-down",
                self.service("CPUUtilization", Statistic::SampleCount),
                (C::LessThanThreshold, 1.0),
                (60, 5),
                "breaching",
                "The dashboard service has had no running task for 5 minutes: MCP, the dashboard and approvals are down. Check the service's events (`agentbus status`, the ECS console): image pull, Spot capacity, a crash on start.".into(),
            ),
            alarm(
                "dashboard-cpu-alarm",
                "dashboard-cpu",
                self.service("CPUUtilization", Statistic::Average),
                (C::GreaterThanThreshold, 80.0),
                (300, 3),
                "notBreaching",
                "The dashboard service has used over 80 % of its CPU for 15 minutes: calls slow down. Find the busy tenant (rate limits), or deploy with a bigger --cpu.".into(),
            ),
            alarm(
                "dashboard-memory-alarm",
                "dashboard-memory",
                self.service("MemoryUtilization", Statistic::Average),
                (C::GreaterThanThreshold, 85.0),
                (300, 3),
                "notBreaching",
                "The dashboard service has used over 85 % of its memory for 15 minutes: it risks being killed. Deploy with a bigger --memory, and look for a leak in its log.".into(),
            ),
            alarm(
                "load-balancer-5xx-alarm",
                "load-balancer-5xx",
                self.alb("HTTPCode_Target_5XX_Count", Statistic::Sum),
                at_least(10.0),
                (300, 1),
                "notBreaching",
                "The dashboard answered 10 or more server errors in 5 minutes. Read the dashboard service's log for the failing calls.".into(),
            ),
            alarm(
                "unhealthy-targets-alarm",
                "unhealthy-targets",
                self.target_group("UnHealthyHostCount", Statistic::Maximum),
                at_least(1.0),
                (60, 3),
                "notBreaching",
                "A dashboard task fails the load balancer's health check. Check the task's health in the ECS console and its log; the load balancer sends nothing to it meanwhile.".into(),
            ),
            alarm(
                "agent-errors-alarm",
                "agent-errors",
                self.agent_errors(),
                at_least(1.0),
                (300, 1),
                "notBreaching",
                "An agent logged an error. The dashboard's \"Agents' errors\" query shows the lines; the run it belongs to is in the log stream's task.".into(),
            ),
        ]
    }

    fn graphs(&self) -> Vec<Graph> {
        let g = |title: &str, metrics: Vec<Metric>, period| Graph {
            title: title.into(),
            metrics,
            period,
        };
        vec![
            g(
                "Workflow runs",
                vec![
                    self.executions("ExecutionsStarted"),
                    self.executions("ExecutionsSucceeded"),
                    self.executions("ExecutionsFailed"),
                    self.executions("ExecutionsTimedOut"),
                    self.executions("ExecutionsAborted"),
                ],
                300,
            ),
            g(
                "Workflow run time (ms)",
                vec![
                    Metric::new("AWS/States", "ExecutionTime", Statistic::Average)
                        .dim("StateMachineArn", &self.machine),
                ],
                300,
            ),
            g(
                "Approval requests not yet taken, and the oldest (s)",
                vec![
                    self.queue(
                        "ApproximateNumberOfMessagesVisible",
                        &self.approvals,
                        Statistic::Maximum,
                    ),
                    self.queue(
                        "ApproximateAgeOfOldestMessage",
                        &self.approvals,
                        Statistic::Maximum,
                    ),
                ],
                300,
            ),
            g(
                "Dead letters",
                vec![
                    self.queue(
                        "ApproximateNumberOfMessagesVisible",
                        &self.approvals_dlq,
                        Statistic::Maximum,
                    ),
                    self.queue(
                        "ApproximateNumberOfMessagesVisible",
                        &self.events_dlq,
                        Statistic::Maximum,
                    ),
                ],
                300,
            ),
            g(
                "Dashboard service CPU and memory (%)",
                vec![
                    self.service("CPUUtilization", Statistic::Average),
                    self.service("MemoryUtilization", Statistic::Average),
                ],
                60,
            ),
            g(
                "Load balancer: requests and server errors",
                vec![
                    self.alb("RequestCount", Statistic::Sum),
                    self.alb("HTTPCode_Target_5XX_Count", Statistic::Sum),
                ],
                60,
            ),
            g(
                "Dashboard targets: healthy and unhealthy",
                vec![
                    self.target_group("HealthyHostCount", Statistic::Maximum),
                    self.target_group("UnHealthyHostCount", Statistic::Maximum),
                ],
                60,
            ),
            g(
                "Agents' errors and expired approvals",
                vec![
                    self.agent_errors(),
                    Metric::new(
                        self.namespace.clone(),
                        APPROVALS_EXPIRED_METRIC,
                        Statistic::Sum,
                    ),
                ],
                300,
            ),
        ]
    }
}

#[cfg(test)]
mod tests;
