//! ECS on Fargate: the cluster (FARGATE and FARGATE_SPOT capacity providers), task
//! definitions and services. The dashboard service of every tier is built from these.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ecs::operation::create_service::CreateServiceError;
use aws_sdk_ecs::operation::delete_cluster::DeleteClusterError;
use aws_sdk_ecs::operation::delete_service::DeleteServiceError;
use aws_sdk_ecs::operation::describe_services::DescribeServicesError;
use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionError;
use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionError;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ClusterField,
    ClusterSetting, ClusterSettingName, Compatibility, ContainerDefinition,
    CpuArchitecture as EcsCpuArchitecture, HealthCheck, KeyValuePair, LogConfiguration, LogDriver,
    NetworkConfiguration, NetworkMode, OsFamily, PortMapping, PropagateTags, RuntimePlatform,
    ServiceField, Tag, TaskDefinitionField, TaskDefinitionStatus, TransportProtocol,
};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::cost::base::base_cost;
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::pair;
use crate::engine::permissions::{Permissions, any};
use crate::engine::{
    self, Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, SETTLE_LIMIT, TagApi,
    codes, error_text, found, gone, made, output_or_unknown, own_tags, require_output, settle,
    unmodeled, wait_until,
};
pub use crate::image::platform::CpuArchitecture;
use crate::tag_api;
use crate::workspace::Workspace;

/// Valid Fargate task sizes: CPU units and the memory (MiB) each allows.
pub fn validate_fargate_size(cpu: u32, memory: u32) -> Result<(), String> {
    let ok = match cpu {
        256 => [512, 1024, 2048].contains(&memory),
        512 => (1024..=4096).contains(&memory) && memory.is_multiple_of(1024),
        1024 => (2048..=8192).contains(&memory) && memory.is_multiple_of(1024),
        2048 => (4096..=16384).contains(&memory) && memory.is_multiple_of(1024),
        4096 => (8192..=30720).contains(&memory) && memory.is_multiple_of(1024),
        8192 => (16384..=61440).contains(&memory) && memory.is_multiple_of(4096),
        16384 => (32768..=122880).contains(&memory) && memory.is_multiple_of(8192),
        _ => {
            return Err(format!(
                "{cpu} CPU units is not a Fargate size: use 256, 512, 1024, 2048, 4096, 8192 or 16384"
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Fargate does not offer {cpu} CPU units with {memory} MiB; see the Fargate task size table"
        ))
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

tag_api! {
    /// ECS's tags, by the resource's `arn` output.
    pub struct EcsTags;
    read(aws, meta, o): "ListTagsForResource" => aws.ecs().list_tags_for_resource().resource_arn(o.out("arn")),
        |out| out.tags().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "TagResource" => aws.ecs().tag_resource().resource_arn(o.out("arn"))
        .set_tags(Some(tags.iter().map(|(k, v)| tag(k, v)).collect()));
    untag(aws, meta, o, keys): "UntagResource" => aws.ecs().untag_resource().resource_arn(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

fn observed_tags(tags: &[Tag]) -> Value {
    own_tags(tags.iter().map(|t| {
        (
            t.key.clone().unwrap_or_default(),
            t.value.clone().unwrap_or_default(),
        )
    }))
}

/// One capacity provider in a strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub provider: &'static str,
    pub weight: i32,
    pub base: i32,
}

fn strategy_value(s: &[Capacity]) -> Value {
    let mut v: Vec<Value> = s
        .iter()
        .map(|c| json!({"provider": c.provider, "weight": c.weight, "base": c.base}))
        .collect();
    v.sort_by_key(|x| x.to_string());
    Value::Array(v)
}

fn strategy_observed(items: &[CapacityProviderStrategyItem]) -> Value {
    let mut v: Vec<Value> = items
        .iter()
        .map(|c| json!({"provider": c.capacity_provider, "weight": c.weight, "base": c.base}))
        .collect();
    v.sort_by_key(|x| x.to_string());
    Value::Array(v)
}

fn strategy_items(s: &[Capacity]) -> Result<Vec<CapacityProviderStrategyItem>, EngineError> {
    s.iter()
        .map(|c| {
            CapacityProviderStrategyItem::builder()
                .capacity_provider(c.provider)
                .weight(c.weight)
                .base(c.base)
                .build()
                .map_err(|e| EngineError::Invalid(e.to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------

pub struct Cluster {
    pub meta: Meta,
    pub default_strategy: Vec<Capacity>,
    pub container_insights: bool,
}

impl Cluster {
    fn insights(&self) -> &'static str {
        if self.container_insights {
            "enabled"
        } else {
            "disabled"
        }
    }
}

#[async_trait]
impl Resource for Cluster {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "ecs cluster"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let cluster = ws.arn("ecs", &format!("cluster/{}", self.meta.name));
        let linked = ws.iam_arn("role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS");
        // GetRole by name: IAM names the role with its path once it exists, without it before.
        let by_name = ws.iam_arn("role/*AWSServiceRoleForECS");
        Permissions::new()
            .read(
                &["ecs:DescribeClusters", "ecs:ListTagsForResource"],
                &[&cluster],
            )
            .write(
                &[
                    "ecs:CreateCluster",
                    "ecs:PutClusterCapacityProviders",
                    "ecs:UpdateClusterSettings",
                    "ecs:DeleteCluster",
                    "ecs:TagResource",
                    "ecs:UntagResource",
                ],
                &[cluster],
            )
            // A fresh account's first cluster needs ECS's service-linked role.
            .write(&["iam:GetRole"], &[by_name])
            .write_when(
                &["iam:CreateServiceLinkedRole"],
                &[linked],
                json!({"StringEquals": {"iam:AWSServiceName": "ecs.amazonaws.com"}}),
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&EcsTags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set("capacity_providers", json!(["FARGATE", "FARGATE_SPOT"]))
            .set("default_strategy", strategy_value(&self.default_strategy))
            .set("container_insights", self.insights())
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = aws
            .ecs()
            .describe_clusters()
            .clusters(&self.meta.name)
            .include(ClusterField::Tags)
            .include(ClusterField::Settings)
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeClusters", e))?;
        let Some(c) = out
            .clusters()
            .iter()
            .find(|c| c.status.as_deref() == Some("ACTIVE"))
        else {
            return Ok(None);
        };
        let mut providers = c.capacity_providers().to_vec();
        providers.sort();
        let insights = c
            .settings()
            .iter()
            .find(|s| s.name == Some(ClusterSettingName::ContainerInsights))
            .and_then(|s| s.value.clone())
            .unwrap_or_else(|| "disabled".into());
        Ok(Some(
            Observed::default()
                .field("capacity_providers", json!(providers))
                .field(
                    "default_strategy",
                    strategy_observed(c.default_capacity_provider_strategy()),
                )
                .field("container_insights", insights)
                .field("tags", observed_tags(c.tags()))
                .output("arn", c.cluster_arn.clone().unwrap_or_default())
                .output("name", self.meta.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut req = aws
            .ecs()
            .create_cluster()
            .cluster_name(&m.name)
            .capacity_providers("FARGATE")
            .capacity_providers("FARGATE_SPOT")
            .set_default_capacity_provider_strategy(Some(strategy_items(&self.default_strategy)?))
            .settings(
                ClusterSetting::builder()
                    .name(ClusterSettingName::ContainerInsights)
                    .value(self.insights())
                    .build(),
            );
        for (k, v) in &m.tags {
            req = req.tags(tag(k, v));
        }
        // Capacity providers need ECS's service-linked role, which a fresh account does not
        // have until something creates it; once created it takes a moment to be assumable.
        ensure_ecs_service_linked_role(aws)
            .await
            .map_err(|e| m.fail("CreateServiceLinkedRole", e))?;
        settle(SETTLE_LIMIT, service_linked_role_not_ready, || {
            req.clone().send()
        })
        .await
        .map_err(|e| m.fail("CreateCluster", e))?;
        let obs = engine::observe(self, aws)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("{}: created but not found", m.name)))?;
        // Converge what the create call did not take (some endpoints ignore the strategy).
        let missing: Vec<String> =
            engine::plan::diff(&engine::desired_of(self, &Outputs::new()), &obs)
                .into_iter()
                .map(|c| c.field)
                .collect();
        if !missing.is_empty() {
            engine::update(self, aws, &Outputs::new(), &obs, &missing).await?;
        }
        Ok(())
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let changed = c.fields;
        if changed
            .iter()
            .any(|c| c == "capacity_providers" || c == "default_strategy")
        {
            aws.ecs()
                .put_cluster_capacity_providers()
                .cluster(&self.meta.name)
                .capacity_providers("FARGATE")
                .capacity_providers("FARGATE_SPOT")
                .set_default_capacity_provider_strategy(Some(strategy_items(
                    &self.default_strategy,
                )?))
                .send()
                .await
                .map_err(|e| self.meta.fail("PutClusterCapacityProviders", e))?;
        }
        if changed.iter().any(|c| c == "container_insights") {
            aws.ecs()
                .update_cluster_settings()
                .cluster(&self.meta.name)
                .settings(
                    ClusterSetting::builder()
                        .name(ClusterSettingName::ContainerInsights)
                        .value(self.insights())
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.meta.fail("UpdateClusterSettings", e))?;
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.ecs()
                .delete_cluster()
                .cluster(&self.meta.name)
                .send()
                .await,
            DeleteClusterError::is_cluster_not_found_exception,
            &self.meta,
            "DeleteCluster",
        )
    }
}

// ---------------------------------------------------------------------------------------------

/// The one container of a task.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub port: Option<u16>,
    pub env: Vec<(String, String)>,
    /// Health check command (exec form, without the leading "CMD").
    pub health_command: Option<Vec<String>>,
    pub log_group: String,
    pub region: String,
    /// Seconds ECS waits after SIGTERM before SIGKILL.
    pub stop_timeout: i32,
}

pub struct TaskDefinition {
    /// Its name is the task definition family.
    pub meta: Meta,
    pub cpu: u32,
    pub memory: u32,
    pub container: ContainerSpec,
    pub execution_role_id: &'static str,
    pub task_role_id: &'static str,
    pub log_group_id: &'static str,
    /// Resources the container reads as it starts (the workspace secret, for the server's
    /// certificate): a new revision is registered after them, so no task starts before.
    pub reads_at_start: Vec<&'static str>,
    /// What the image was built for: a task on another architecture cannot start it.
    pub cpu_architecture: CpuArchitecture,
    /// Whether the settings call for it (an existing unwanted one is deregistered).
    pub wanted: bool,
}

const HEALTH_INTERVAL: i32 = 30;
const HEALTH_TIMEOUT: i32 = 5;
const HEALTH_RETRIES: i32 = 3;
const HEALTH_START: i32 = 15;

impl TaskDefinition {
    fn container_value(&self) -> Value {
        let c = &self.container;
        let mut env: Vec<(String, String)> = c.env.clone();
        env.sort();
        json!({
            "name": c.name,
            "image": c.image,
            "essential": true,
            "port": c.port,
            "environment": env.into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "health_check": c.health_command.as_ref().map(|cmd| json!({
                "command": std::iter::once("CMD".to_string()).chain(cmd.iter().cloned()).collect::<Vec<_>>(),
                "interval": HEALTH_INTERVAL, "timeout": HEALTH_TIMEOUT,
                "retries": HEALTH_RETRIES, "start_period": HEALTH_START,
            })),
            "logs": {"driver": "awslogs", "group": c.log_group, "region": c.region, "prefix": "ecs"},
            "memory": self.memory,
            "stop_timeout": c.stop_timeout,
            "read_only_root": true,
        })
    }

    fn container_from(cd: &ContainerDefinition) -> Value {
        let mut env: Vec<(String, String)> = cd
            .environment()
            .iter()
            .map(|kv| {
                (
                    kv.name.clone().unwrap_or_default(),
                    kv.value.clone().unwrap_or_default(),
                )
            })
            .collect();
        env.sort();
        let logs = cd.log_configuration.as_ref().map(|l| {
            let o = l.options.clone().unwrap_or_default();
            json!({
                "driver": l.log_driver.as_str(),
                "group": o.get("awslogs-group"),
                "region": o.get("awslogs-region"),
                "prefix": o.get("awslogs-stream-prefix"),
            })
        });
        json!({
            "name": cd.name,
            "image": cd.image,
            "essential": cd.essential,
            "port": cd.port_mappings().first().and_then(|p| p.container_port),
            "environment": env.into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "health_check": cd.health_check.as_ref().map(|h| json!({
                "command": h.command(),
                "interval": h.interval, "timeout": h.timeout,
                "retries": h.retries, "start_period": h.start_period,
            })),
            "logs": logs,
            "memory": cd.memory,
            "stop_timeout": cd.stop_timeout,
            "read_only_root": cd.readonly_root_filesystem,
        })
    }

    fn container_definition(&self) -> Result<ContainerDefinition, EngineError> {
        let c = &self.container;
        let mut b = ContainerDefinition::builder()
            .name(&c.name)
            .image(&c.image)
            .essential(true)
            // Hard memory limit equal to the task's. (Also required by some emulators for
            // RunTask/CreateService to succeed.)
            .memory(self.memory as i32)
            .stop_timeout(c.stop_timeout)
            .readonly_root_filesystem(true)
            .log_configuration(
                LogConfiguration::builder()
                    .log_driver(LogDriver::Awslogs)
                    .options("awslogs-group", &c.log_group)
                    .options("awslogs-region", &c.region)
                    .options("awslogs-stream-prefix", "ecs")
                    .build()
                    .map_err(|e| EngineError::Invalid(format!("{}: {e}", self.meta.name)))?,
            );
        if let Some(p) = c.port {
            b = b.port_mappings(
                PortMapping::builder()
                    .container_port(i32::from(p))
                    .protocol(TransportProtocol::Tcp)
                    .build(),
            );
        }
        let mut env = c.env.clone();
        env.sort();
        for (k, v) in env {
            b = b.environment(KeyValuePair::builder().name(k).value(v).build());
        }
        if let Some(cmd) = &c.health_command {
            let mut full = vec!["CMD".to_string()];
            full.extend(cmd.iter().cloned());
            if let Ok(h) = HealthCheck::builder()
                .set_command(Some(full))
                .interval(HEALTH_INTERVAL)
                .timeout(HEALTH_TIMEOUT)
                .retries(HEALTH_RETRIES)
                .start_period(HEALTH_START)
                .build()
            {
                b = b.health_check(h);
            }
        }
        Ok(b.build())
    }

    async fn register(&self, aws: &AwsClients, outputs: &Outputs) -> Result<String, EngineError> {
        validate_fargate_size(self.cpu, self.memory).map_err(EngineError::Invalid)?;
        let m = &self.meta;
        let exec = require_output(outputs, &m.name, self.execution_role_id, "arn")?;
        let task = require_output(outputs, &m.name, self.task_role_id, "arn")?;
        let mut req = aws
            .ecs()
            .register_task_definition()
            .family(&m.name)
            .cpu(self.cpu.to_string())
            .memory(self.memory.to_string())
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .runtime_platform(
                RuntimePlatform::builder()
                    .cpu_architecture(EcsCpuArchitecture::from(self.cpu_architecture.as_str()))
                    .operating_system_family(OsFamily::Linux)
                    .build(),
            )
            .execution_role_arn(exec)
            .task_role_arn(task)
            .container_definitions(self.container_definition()?);
        for (k, v) in &m.tags {
            req = req.tags(tag(k, v));
        }
        // A role created moments ago is not usable by ECS until IAM has propagated it.
        let out = settle(SETTLE_LIMIT, role_not_yet_visible, || req.clone().send())
            .await
            .map_err(|e| m.fail("RegisterTaskDefinition", e))?;
        out.task_definition
            .and_then(|t| t.task_definition_arn)
            .ok_or_else(|| EngineError::Invalid(format!("{}: registered without an ARN", m.name)))
    }

    /// Registers a revision and retires every other ACTIVE one of the family.
    async fn register_alone(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let arn = self.register(aws, outputs).await?;
        let old: Vec<String> = self
            .active_revisions(aws)
            .await?
            .into_iter()
            .filter(|a| *a != arn)
            .collect();
        self.retire(aws, &old).await
    }

    /// Deregisters revisions and deletes them, so a family does not keep every revision it
    /// ever had (AWS keeps a deleted revision until no task or service uses it).
    async fn retire(&self, aws: &AwsClients, arns: &[String]) -> Result<(), EngineError> {
        for a in arns {
            aws.ecs()
                .deregister_task_definition()
                .task_definition(a)
                .send()
                .await
                .map_err(|e| self.meta.fail("DeregisterTaskDefinition", e))?;
        }
        for batch in arns.chunks(10) {
            let out = aws
                .ecs()
                .delete_task_definitions()
                .set_task_definitions(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| self.meta.fail("DeleteTaskDefinitions", e))?;
            for f in out.failures() {
                tracing::warn!(
                    "{}: revision {} not deleted: {}",
                    self.meta.name,
                    f.arn().unwrap_or_default(),
                    f.reason().unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    async fn active_revisions(&self, aws: &AwsClients) -> Result<Vec<String>, EngineError> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let out = aws
                .ecs()
                .list_task_definitions()
                .family_prefix(&self.meta.name)
                .status(TaskDefinitionStatus::Active)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.meta.fail("ListTaskDefinitions", e))?;
            // family_prefix matches prefixes: keep exactly this family.
            arns.extend(
                out.task_definition_arns()
                    .iter()
                    .filter(|a| {
                        a.rsplit_once(':')
                            .map(|(f, _)| f.ends_with(&format!("/{}", self.meta.name)))
                            .unwrap_or(false)
                    })
                    .cloned(),
            );
            token = out.next_token;
            if token.is_none() {
                break;
            }
        }
        Ok(arns)
    }
}

#[async_trait]
impl Resource for TaskDefinition {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "ecs task definition"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let family = ws.arn("ecs", &format!("task-definition/{}:*", self.meta.name));
        Permissions::new()
            // Listing and describing task definitions take no resource.
            .read(
                &["ecs:ListTaskDefinitions", "ecs:DescribeTaskDefinition"],
                &any(),
            )
            .read(&["ecs:ListTagsForResource"], &[&family])
            .write(
                &["ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition"],
                &any(),
            )
            .write(
                &[
                    "ecs:DeleteTaskDefinitions",
                    "ecs:TagResource",
                    "ecs:UntagResource",
                ],
                &[family],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&EcsTags)
    }
    fn depends_on(&self) -> Vec<&'static str> {
        [self.execution_role_id, self.task_role_id, self.log_group_id]
            .into_iter()
            .chain(self.reads_at_start.iter().copied())
            .collect()
    }
    fn wanted(&self) -> bool {
        self.wanted
    }
    fn outputs_stable_on_update(&self) -> bool {
        false
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        Desired::new()
            .set("cpu", self.cpu.to_string())
            .set("memory", self.memory.to_string())
            .set("network_mode", "awsvpc")
            .set("compatibilities", json!(["FARGATE"]))
            .set("cpu_architecture", self.cpu_architecture.as_str())
            .set(
                "execution_role",
                output_or_unknown(outputs, self.execution_role_id, "arn"),
            )
            .set(
                "task_role",
                output_or_unknown(outputs, self.task_role_id, "arn"),
            )
            .set("container", self.container_value())
            // Only the revision in use stays ACTIVE: a run stopped between registering a
            // revision and retiring the old one leaves two, which the next plan shows.
            .set("active_revisions", 1)
    }
    async fn observe_more(
        &self,
        aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        Ok(Observed::default().field("active_revisions", self.active_revisions(aws).await?.len()))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let Some(out) = found(
            aws.ecs()
                .describe_task_definition()
                .task_definition(&self.meta.name)
                .include(TaskDefinitionField::Tags)
                .send()
                .await,
            |e: &DescribeTaskDefinitionError| {
                e.is_client_exception()
                    || unmodeled::<DescribeTaskDefinitionError>(codes::NOT_FOUND)(e)
            },
            &self.meta,
            "DescribeTaskDefinition",
        )?
        else {
            return Ok(None);
        };
        let Some(td) = out.task_definition.as_ref() else {
            return Ok(None);
        };
        if td.status != Some(TaskDefinitionStatus::Active) {
            return Ok(None);
        }
        let container = td
            .container_definitions()
            .first()
            .map(Self::container_from)
            .unwrap_or(Value::Null);
        let compat: Vec<String> = td
            .requires_compatibilities()
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        Ok(Some(
            Observed::default()
                .field("cpu", td.cpu.clone().unwrap_or_default())
                .field("memory", td.memory.clone().unwrap_or_default())
                .field(
                    "network_mode",
                    td.network_mode
                        .as_ref()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default(),
                )
                .field("compatibilities", json!(compat))
                // ECS runs a task definition that names no platform on X86_64.
                .field(
                    "cpu_architecture",
                    td.runtime_platform()
                        .and_then(|p| p.cpu_architecture())
                        .map_or("X86_64", |a| a.as_str()),
                )
                .field(
                    "execution_role",
                    td.execution_role_arn.clone().unwrap_or_default(),
                )
                .field("task_role", td.task_role_arn.clone().unwrap_or_default())
                .field("container", container)
                .field("tags", observed_tags(out.tags()))
                .output("arn", td.task_definition_arn.clone().unwrap_or_default())
                .output("family", self.meta.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        // Not found means no ACTIVE revision, but a registration whose answer was lost (and
        // which the SDK sent again) leaves one: only the newest stays.
        self.register_alone(aws, outputs).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        if c.fields.iter().all(|f| f == "active_revisions") {
            // The newest revision is as wanted: only the others go.
            let newest = c.current.out("arn");
            let old: Vec<String> = self
                .active_revisions(aws)
                .await?
                .into_iter()
                .filter(|a| a != newest)
                .collect();
            return self.retire(aws, &old).await;
        }
        // A task definition is immutable: register a new revision, retire the old ones.
        self.register_alone(aws, c.outputs).await
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        let all = self.active_revisions(aws).await?;
        self.retire(aws, &all).await
    }
}

/// ECS's answer while IAM has not yet propagated a role created moments ago ("Role is not
/// valid", "unable to assume the role"): AWS documents that IAM changes take time to be
/// visible to other services.
/// Rolling deployments with ECS's circuit breaker: a rollout whose tasks keep failing stops
/// and goes back to the last good revision.
fn deployment_configuration() -> aws_sdk_ecs::types::DeploymentConfiguration {
    aws_sdk_ecs::types::DeploymentConfiguration::builder()
        .deployment_circuit_breaker(
            aws_sdk_ecs::types::DeploymentCircuitBreaker::builder()
                .enable(true)
                .rollback(true)
                .build(),
        )
        .build()
}

/// ECS's service-linked role (`AWSServiceRoleForECS`): created when missing. IAM answers
/// `InvalidInput` ("has been taken in this account") when it exists, which is success here;
/// a deployer who may read it but not create it goes on when it is there.
async fn ensure_ecs_service_linked_role(aws: &AwsClients) -> Result<(), crate::iam::IamError> {
    let iam = aws.iam();
    if iam.get_role(ECS_SERVICE_LINKED_ROLE).await.is_ok() {
        return Ok(());
    }
    match iam.create_service_linked_role("ecs.amazonaws.com").await {
        Ok(()) => Ok(()),
        Err(e)
            if e.as_service_error().is_some_and(|s| {
                crate::iam::invalid_input(s)
                    && s.message().is_some_and(|m| m.contains("has been taken"))
            }) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The name AWS gives ECS's service-linked role.
pub const ECS_SERVICE_LINKED_ROLE: &str = "AWSServiceRoleForECS";

/// CreateCluster before ECS can assume its (new) service-linked role.
fn service_linked_role_not_ready<R>(
    e: &SdkError<aws_sdk_ecs::operation::create_cluster::CreateClusterError, R>,
) -> bool {
    e.as_service_error().is_some_and(|e| {
        e.is_invalid_parameter_exception()
            && e.message()
                .is_some_and(|m| m.to_ascii_lowercase().contains("service linked role"))
    })
}

fn role_not_yet_visible<R>(e: &SdkError<RegisterTaskDefinitionError, R>) -> bool {
    e.as_service_error().is_some_and(|e| {
        e.is_client_exception()
            && e.message().is_some_and(|m| {
                let m = m.to_ascii_lowercase();
                m.contains("role is not valid") || m.contains("unable to assume")
            })
    })
}

// ---------------------------------------------------------------------------------------------

pub struct Service {
    pub meta: Meta,
    pub cluster_id: &'static str,
    pub cluster_name: String,
    pub task_definition_id: &'static str,
    pub security_group_id: &'static str,
    pub subnets: Vec<String>,
    pub public_ip: bool,
    /// How many tasks run, and who decides.
    pub count: TaskCount,
    /// Size of each task (CPU units, MiB), for pricing.
    pub task_cpu: u32,
    pub task_memory: u32,
    pub strategy: Vec<Capacity>,
    /// How long to wait for the service to reach a steady state.
    pub wait: Duration,
    /// The target group the service registers its tasks in (ECS's `loadBalancers`).
    pub target_group: Option<TargetGroupRegistration>,
}

/// How many tasks a service runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskCount {
    /// The deploy keeps exactly this many running.
    Fixed(i32),
    /// An autoscaler owns the running count within these bounds: the deploy starts `min`
    /// and never changes the count afterwards (the bounds are the autoscaler's resource).
    Scaled { min: i32, max: i32 },
}

impl TaskCount {
    /// The count a create starts with, and the one pricing assumes.
    pub fn baseline(self) -> i32 {
        match self {
            TaskCount::Fixed(n) => n,
            TaskCount::Scaled { min, .. } => min,
        }
    }
}

/// Registration of a service's tasks in a target group (ECS's `loadBalancers` parameter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroupRegistration {
    /// Logical id of the target group (its `arn` output).
    pub target_group_id: &'static str,
    /// Logical id of the resource that attaches the target group (ECS refuses a target group
    /// nothing uses yet).
    pub attached_by_id: &'static str,
    pub container_name: String,
    pub container_port: u16,
}

/// Seconds a task in a target group has before failed health checks count.
const GRACE_SECS: i32 = 60;

impl Service {
    fn target_group_value(&self, outputs: &Outputs) -> Value {
        match &self.target_group {
            None => Value::Null,
            Some(lb) => json!({
                "target_group": output_or_unknown(outputs, lb.target_group_id, "arn"),
                "container": format!("{}:{}", lb.container_name, lb.container_port),
            }),
        }
    }

    fn target_group_registrations(
        &self,
        outputs: &Outputs,
    ) -> Result<Vec<aws_sdk_ecs::types::LoadBalancer>, EngineError> {
        match &self.target_group {
            None => Ok(Vec::new()),
            Some(lb) => Ok(vec![
                aws_sdk_ecs::types::LoadBalancer::builder()
                    .target_group_arn(require_output(
                        outputs,
                        &self.meta.name,
                        lb.target_group_id,
                        "arn",
                    )?)
                    .container_name(&lb.container_name)
                    .container_port(i32::from(lb.container_port))
                    .build(),
            ]),
        }
    }

    fn network_value(&self, outputs: &Outputs) -> Value {
        let mut subnets = self.subnets.clone();
        subnets.sort();
        json!({
            "subnets": subnets,
            "security_groups": [output_or_unknown(outputs, self.security_group_id, "id")],
            "public_ip": self.public_ip,
        })
    }

    fn network_config(&self, outputs: &Outputs) -> Result<NetworkConfiguration, EngineError> {
        let sg = require_output(outputs, &self.meta.name, self.security_group_id, "id")?;
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.subnets.clone()))
            .security_groups(sg)
            .assign_public_ip(if self.public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        Ok(NetworkConfiguration::builder()
            .awsvpc_configuration(vpc)
            .build())
    }

    /// Waits until the service runs `task_definition` and nothing else: one deployment, the
    /// primary, of that revision, its rollout completed and its tasks running. Right after an
    /// UpdateService, DescribeServices can still show only the old deployment, complete: the
    /// revision tells it apart. A rollout the circuit breaker stopped fails at once.
    async fn wait_steady(
        &self,
        aws: &AwsClients,
        task_definition: &str,
    ) -> Result<(), EngineError> {
        let m = &self.meta;
        let name = m.name.clone();
        let cluster = self.cluster_name.clone();
        wait_until(
            &name,
            self.wait,
            Duration::from_secs(5).min(self.wait / 10 + Duration::from_millis(200)),
            || {
                let ecs = aws.ecs();
                let (name, cluster) = (name.clone(), cluster.clone());
                async move {
                    let out = ecs
                        .describe_services()
                        .cluster(&cluster)
                        .services(&name)
                        .send()
                        .await
                        .map_err(|e| m.fail("DescribeServices", e))?;
                    let Some(s) = out.services().first() else {
                        return Ok(Err("service not found yet".to_string()));
                    };
                    if let Some(d) = s
                        .deployments()
                        .iter()
                        .find(|d| d.rollout_state.as_ref().map(|r| r.as_str()) == Some("FAILED"))
                    {
                        return Err(EngineError::Invalid(format!(
                            "{name}: deployment failed: {}",
                            d.rollout_state_reason.clone().unwrap_or_default()
                        )));
                    }
                    let primary = s
                        .deployments()
                        .iter()
                        .find(|d| d.status() == Some("PRIMARY"));
                    let revision = primary
                        .and_then(|d| d.task_definition())
                        .unwrap_or_default();
                    let rolled_out = primary
                        .and_then(|d| d.rollout_state())
                        .is_none_or(|r| r.as_str() == "COMPLETED");
                    let steady = s.deployments().len() == 1
                        && revision == task_definition
                        && rolled_out
                        && s.running_count >= s.desired_count;
                    Ok(if steady {
                        Ok(())
                    } else {
                        Err(format!(
                            "{} of {} tasks running, {} deployment(s), the primary of {}",
                            s.running_count,
                            s.desired_count,
                            s.deployments().len(),
                            if revision.is_empty() {
                                "no revision"
                            } else {
                                revision
                            }
                        ))
                    })
                }
            },
        )
        .await
    }
}

#[async_trait]
impl Resource for Service {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "ecs service"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let service = ws.arn(
            "ecs",
            &format!("service/{}/{}", self.cluster_name, self.meta.name),
        );
        Permissions::new()
            .read(
                &["ecs:DescribeServices", "ecs:ListTagsForResource"],
                &[&service],
            )
            .write(
                &[
                    "ecs:CreateService",
                    "ecs:UpdateService",
                    "ecs:DeleteService",
                    "ecs:TagResource",
                    "ecs:UntagResource",
                ],
                &[service],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&EcsTags)
    }
    fn depends_on(&self) -> Vec<&'static str> {
        let mut d = vec![
            self.cluster_id,
            self.task_definition_id,
            self.security_group_id,
        ];
        if let Some(lb) = &self.target_group {
            d.push(lb.target_group_id);
            d.push(lb.attached_by_id);
        }
        d
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        let d = Desired::new()
            .set_replace("cluster", self.cluster_name.clone())
            .set(
                "task_definition",
                output_or_unknown(outputs, self.task_definition_id, "arn"),
            )
            .set("capacity_strategy", strategy_value(&self.strategy))
            .set("network", self.network_value(outputs))
            .set("target_group", self.target_group_value(outputs))
            // Tasks carry the service's tags (and ECS's own), so the budget's tag filter
            // counts the tier's largest lines.
            .set(
                "task_tags",
                json!({"propagate": "SERVICE", "ecs_managed": true}),
            )
            // A deployment whose tasks keep failing stops and rolls back, instead of ECS
            // relaunching them until the deploy's wait runs out.
            .set("circuit_breaker", json!({"enable": true, "rollback": true}));
        // A count an autoscaler owns is not the deploy's to compare or change.
        match self.count {
            TaskCount::Fixed(n) => d.set("desired_count", n),
            TaskCount::Scaled { .. } => d,
        }
    }

    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let Some(out) = found(
            aws.ecs()
                .describe_services()
                .cluster(&self.cluster_name)
                .services(&self.meta.name)
                .include(ServiceField::Tags)
                .send()
                .await,
            DescribeServicesError::is_cluster_not_found_exception,
            &self.meta,
            "DescribeServices",
        )?
        else {
            return Ok(None);
        };
        let Some(s) = out
            .services()
            .iter()
            .find(|s| s.status.as_deref() == Some("ACTIVE"))
        else {
            return Ok(None);
        };
        let net = s
            .network_configuration
            .as_ref()
            .and_then(|n| n.awsvpc_configuration.as_ref());
        let mut subnets = net.map(|n| n.subnets().to_vec()).unwrap_or_default();
        subnets.sort();
        let mut sgs = net
            .map(|n| n.security_groups().to_vec())
            .unwrap_or_default();
        sgs.sort();
        let public = net
            .and_then(|n| n.assign_public_ip.as_ref())
            .map(|p| *p == AssignPublicIp::Enabled)
            .unwrap_or(false);
        let cluster_name = s
            .cluster_arn
            .as_deref()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or(&self.cluster_name)
            .to_string();
        Ok(Some(
            Observed::default()
                .field("cluster", cluster_name)
                .field(
                    "task_definition",
                    s.task_definition.clone().unwrap_or_default(),
                )
                .field("desired_count", s.desired_count)
                .field(
                    "capacity_strategy",
                    strategy_observed(s.capacity_provider_strategy()),
                )
                .field(
                    "network",
                    json!({"subnets": subnets, "security_groups": sgs, "public_ip": public}),
                )
                .field(
                    "target_group",
                    s.load_balancers()
                        .first()
                        .map(|lb| {
                            json!({
                                "target_group": lb.target_group_arn.clone().unwrap_or_default(),
                                "container": format!(
                                    "{}:{}",
                                    lb.container_name.clone().unwrap_or_default(),
                                    lb.container_port.unwrap_or_default()
                                ),
                            })
                        })
                        .unwrap_or(Value::Null),
                )
                .field(
                    "circuit_breaker",
                    s.deployment_configuration()
                        .and_then(|d| d.deployment_circuit_breaker())
                        .map_or(
                            json!({"enable": false, "rollback": false}),
                            |c| json!({"enable": c.enable, "rollback": c.rollback}),
                        ),
                )
                .field(
                    "task_tags",
                    json!({
                        "propagate": s.propagate_tags().map(|p| p.as_str()).unwrap_or("NONE"),
                        "ecs_managed": s.enable_ecs_managed_tags(),
                    }),
                )
                .field("tags", observed_tags(s.tags()))
                .output("arn", s.service_arn.clone().unwrap_or_default())
                .output("name", self.meta.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let td = require_output(outputs, &m.name, self.task_definition_id, "arn")?;
        let mut req = aws
            .ecs()
            .create_service()
            .cluster(&self.cluster_name)
            .service_name(&m.name)
            .task_definition(&td)
            .desired_count(self.count.baseline())
            .set_capacity_provider_strategy(Some(strategy_items(&self.strategy)?))
            .network_configuration(self.network_config(outputs)?)
            .propagate_tags(PropagateTags::Service)
            .enable_ecs_managed_tags(true)
            .deployment_configuration(deployment_configuration());
        if self.target_group.is_some() {
            req = req
                .set_load_balancers(Some(self.target_group_registrations(outputs)?))
                .health_check_grace_period_seconds(GRACE_SECS);
        }
        for (k, v) in &m.tags {
            req = req.tags(tag(k, v));
        }
        made(
            req.send().await,
            // Left by an interrupted apply: converge on it below.
            |e: &CreateServiceError| {
                e.is_invalid_parameter_exception() && error_text(e).contains("idempotent")
            },
            m,
            "CreateService",
        )?;
        let obs = engine::observe(self, aws)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("{}: created but not found", m.name)))?;
        // Verify what the create call took and converge the rest (some endpoints drop the
        // capacity-provider strategy on CreateService; UpdateService sets it).
        let missing: Vec<String> = engine::plan::diff(&engine::desired_of(self, outputs), &obs)
            .into_iter()
            .map(|c| c.field)
            .collect();
        if !missing.is_empty() {
            // The update waits for the steady state itself.
            engine::update(self, aws, outputs, &obs, &missing).await?;
            return Ok(());
        }
        self.wait_steady(aws, &td).await?;
        Ok(())
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let (outputs, changed) = (c.outputs, c.fields);
        let service_fields = [
            "task_definition",
            "desired_count",
            "capacity_strategy",
            "network",
            "target_group",
            "task_tags",
            "circuit_breaker",
        ];
        let td = require_output(outputs, &self.meta.name, self.task_definition_id, "arn")?;
        if changed.iter().any(|c| service_fields.contains(&c.as_str())) {
            let strategy_changed = changed.iter().any(|c| c == "capacity_strategy");
            aws.ecs()
                .update_service()
                .cluster(&self.cluster_name)
                .service(&self.meta.name)
                .task_definition(&td)
                .set_desired_count(match self.count {
                    TaskCount::Fixed(n) => Some(n),
                    TaskCount::Scaled { .. } => None,
                })
                .set_capacity_provider_strategy(Some(strategy_items(&self.strategy)?))
                .network_configuration(self.network_config(outputs)?)
                // An empty list detaches the service from its target group (a downgrade).
                .set_load_balancers(Some(self.target_group_registrations(outputs)?))
                .set_health_check_grace_period_seconds(
                    self.target_group.as_ref().map(|_| GRACE_SECS),
                )
                .propagate_tags(PropagateTags::Service)
                .enable_ecs_managed_tags(true)
                .deployment_configuration(deployment_configuration())
                // Moving between capacity providers needs a new deployment.
                .force_new_deployment(strategy_changed)
                .send()
                .await
                .map_err(|e| self.meta.fail("UpdateService", e))?;
        }
        self.wait_steady(aws, &td).await?;
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        let m = &self.meta;
        let _ = aws
            .ecs()
            .update_service()
            .cluster(&self.cluster_name)
            .service(&m.name)
            .desired_count(0)
            .send()
            .await;
        let Some(_) = found(
            aws.ecs()
                .delete_service()
                .cluster(&self.cluster_name)
                .service(&m.name)
                .force(true)
                .send()
                .await,
            |e: &DeleteServiceError| {
                e.is_service_not_found_exception() || e.is_cluster_not_found_exception()
            },
            m,
            "DeleteService",
        )?
        else {
            return Ok(());
        };
        let (name, cluster) = (m.name.clone(), self.cluster_name.clone());
        wait_until(
            &name,
            self.wait,
            Duration::from_secs(5).min(self.wait / 10 + Duration::from_millis(200)),
            || {
                let ecs = aws.ecs();
                let (name, cluster) = (name.clone(), cluster.clone());
                async move {
                    let Some(out) = found(
                        ecs.describe_services()
                            .cluster(&cluster)
                            .services(&name)
                            .send()
                            .await,
                        DescribeServicesError::is_cluster_not_found_exception,
                        m,
                        "DescribeServices",
                    )?
                    else {
                        return Ok(Ok(()));
                    };
                    let gone = out
                        .services()
                        .iter()
                        .all(|s| s.status.as_deref() == Some("INACTIVE"));
                    Ok(if gone {
                        Ok(())
                    } else {
                        Err("service still draining".to_string())
                    })
                }
            },
        )
        .await
    }
    fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "waits up to {}s for a steady state",
            self.wait.as_secs()
        )];
        if let TaskCount::Scaled { min, max } = self.count {
            notes.push(format!(
                "running count owned by its autoscaler ({min}-{max} tasks); the deploy leaves it alone"
            ));
        }
        notes
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let (p, u) = base_cost(ctx)?;
        let (h, id) = (ctx.hours, self.meta.id);
        let (on_demand, spot) = split_tasks(self.count.baseline(), &self.strategy);
        let vcpu = f64::from(self.task_cpu) / 1024.0;
        let gb = f64::from(self.task_memory) / 1024.0;
        let mut lines = Vec::new();
        if spot > 0.0 {
            lines.push(CostLine::new(
                id,
                &format!("Fargate Spot vCPU ({spot} x {vcpu} vCPU)"),
                spot * vcpu * h,
                "vCPU-h",
                p.fargate_spot_vcpu_hour,
            ));
            lines.push(CostLine::new(
                id,
                &format!("Fargate Spot memory ({spot} x {gb} GB)"),
                spot * gb * h,
                "GB-h",
                p.fargate_spot_gb_hour,
            ));
        }
        if on_demand > 0.0 {
            lines.push(CostLine::new(
                id,
                &format!("Fargate vCPU ({on_demand} x {vcpu} vCPU)"),
                on_demand * vcpu * h,
                "vCPU-h",
                p.fargate_vcpu_hour,
            ));
            lines.push(CostLine::new(
                id,
                &format!("Fargate memory ({on_demand} x {gb} GB)"),
                on_demand * gb * h,
                "GB-h",
                p.fargate_gb_hour,
            ));
        }
        if self.public_ip {
            let n = f64::from(self.count.baseline().max(0));
            lines.push(CostLine::new(
                id,
                &format!("public IPv4 address ({n} task(s))"),
                n * h,
                "address-h",
                p.public_ipv4_hour,
            ));
        }
        let billable = (u.transfer_out_gb - p.transfer_out_free_gb).max(0.0);
        if billable > 0.0 {
            lines.push(CostLine::new(
                id,
                "data transfer out (beyond the free 100 GB)",
                billable,
                "GB",
                p.transfer_out_gb,
            ));
        }
        Ok(lines)
    }
}

/// Every task on Fargate Spot.
pub fn spot_only() -> Vec<Capacity> {
    vec![Capacity {
        provider: "FARGATE_SPOT",
        weight: 1,
        base: 0,
    }]
}

/// One on-demand task as the base, the rest on Spot: up through Spot interruptions.
///
/// The API reference says a provider of weight 0 places no tasks "when multiple capacity
/// providers are specified", which reads as if FARGATE's base would never be placed; the base
/// is placed first, before weights count, and AWS's own Copilot CLI writes this very strategy
/// (FARGATE base N weight 0, FARGATE_SPOT weight 1) for its `spot_from` setting.
pub fn on_demand_base_then_spot() -> Vec<Capacity> {
    let mut s = vec![Capacity {
        provider: "FARGATE",
        weight: 0,
        base: 1,
    }];
    s.extend(spot_only());
    s
}

/// Tasks on on-demand Fargate and on Fargate Spot for a count and a strategy: the
/// on-demand base first, the rest split by weight.
pub fn split_tasks(count: i32, strategy: &[Capacity]) -> (f64, f64) {
    let count = f64::from(count.max(0));
    let base: f64 = strategy
        .iter()
        .filter(|c| c.provider == "FARGATE")
        .map(|c| f64::from(c.base))
        .sum::<f64>()
        .min(count);
    let rest = count - base;
    let w = |p: &str| -> f64 {
        strategy
            .iter()
            .filter(|c| c.provider == p)
            .map(|c| f64::from(c.weight))
            .sum()
    };
    let (wo, ws) = (w("FARGATE"), w("FARGATE_SPOT"));
    let od_share = if wo + ws > 0.0 {
        rest * wo / (wo + ws)
    } else {
        0.0
    };
    (base + od_share, rest - od_share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_split_between_on_demand_and_spot() {
        let spot = spot_only();
        assert_eq!(split_tasks(1, &spot), (0.0, 1.0));
        let prod = on_demand_base_then_spot();
        assert_eq!(split_tasks(1, &prod), (1.0, 0.0));
        assert_eq!(split_tasks(3, &prod), (1.0, 2.0));
        let even = [
            Capacity {
                provider: "FARGATE",
                weight: 1,
                base: 0,
            },
            Capacity {
                provider: "FARGATE_SPOT",
                weight: 1,
                base: 0,
            },
        ];
        assert_eq!(split_tasks(4, &even), (2.0, 2.0));
    }

    #[test]
    fn fargate_sizes() {
        assert!(validate_fargate_size(256, 512).is_ok());
        assert!(validate_fargate_size(512, 1024).is_ok());
        assert!(validate_fargate_size(256, 4096).is_err());
        assert!(validate_fargate_size(768, 2048).is_err());
        assert!(validate_fargate_size(1024, 2500).is_err());
        assert!(validate_fargate_size(8192, 20480).is_ok());
        assert!(validate_fargate_size(8192, 17408).is_err());
    }
}
