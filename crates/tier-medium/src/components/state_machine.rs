//! A Step Functions state machine as a resource: a Standard workflow whose definition is the
//! compiled workflow ([`agents::asl`]), its role, execution logging and X-Ray tracing.
//!
//! Step Functions answers a create whose name exists with an identical definition by
//! returning the existing machine, and with a different one by `StateMachineAlreadyExists`:
//! neither is taken for a fresh create (the engine observes first and updates what differs).
//! A deleted machine stays `DELETING` for a while; its name is free only afterwards.

use async_trait::async_trait;
use aws_sdk_sfn::error::SdkError;
use aws_sdk_sfn::operation::create_state_machine::CreateStateMachineError;
use aws_sdk_sfn::operation::delete_state_machine::DeleteStateMachineError;
use aws_sdk_sfn::operation::describe_state_machine::DescribeStateMachineError;
use aws_sdk_sfn::types::{
    CloudWatchLogsLogGroup, LogDestination, LogLevel, LoggingConfiguration, StateMachineStatus,
    StateMachineType, Tag, TracingConfiguration,
};
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::components::normalize_json;
use tier_xs::cost::{CostContext, CostError, CostLine};
use tier_xs::engine::permissions::{Permissions, any};
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, SETTLE_LIMIT, TagApi, found,
    gone, is_unknown, output_or_unknown, pair, require_output, settle, unmodeled,
};
use tier_xs::tag_api;
use tier_xs::workspace::Workspace;

use super::codes;
use crate::aws::MediumAws;
use crate::cost::RunPricing;

tag_api! {
    /// Step Functions' tags, by the machine's `arn` output.
    pub struct SfnTags;
    read(aws, meta, o): "ListTagsForResource" => aws.sfn().list_tags_for_resource().resource_arn(o.out("arn")),
        |out| out.tags().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "TagResource" => aws.sfn().tag_resource().resource_arn(o.out("arn"))
        .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()));
    untag(aws, meta, o, keys): "UntagResource" => aws.sfn().untag_resource().resource_arn(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

/// How much of each execution goes to its log group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionLogging {
    /// Failures only, without the states' input and output (the default: a state's input
    /// carries the task token an agent answers with).
    Errors,
    /// Every event, with the data (`--workflow-logs all`): for debugging, not for prod.
    All,
}

impl ExecutionLogging {
    fn level(self) -> LogLevel {
        match self {
            ExecutionLogging::Errors => LogLevel::Error,
            ExecutionLogging::All => LogLevel::All,
        }
    }
}

/// The definition, given the outputs known so far (a security group's id, say); it holds
/// unknown markers until they exist.
pub type Definition = Box<dyn Fn(&Outputs) -> Value + Send + Sync>;

pub struct StateMachine {
    pub meta: Meta,
    /// Its ARN (deterministic: partition, region, account and name).
    pub arn: String,
    /// The compiled definition (Amazon States Language).
    pub definition: Definition,
    /// Resources whose outputs the definition names.
    pub definition_needs: Vec<&'static str>,
    pub role_id: &'static str,
    pub log_group_id: &'static str,
    pub logging: ExecutionLogging,
    /// Prices the runs (state transitions, agent task time) from the usage profile.
    pub pricing: RunPricing,
}

impl StateMachine {
    fn logging(&self, outputs: &Outputs) -> Result<LoggingConfiguration, EngineError> {
        let group = require_output(outputs, &self.meta.name, self.log_group_id, "arn")?;
        Ok(LoggingConfiguration::builder()
            .level(self.logging.level())
            .include_execution_data(self.logging == ExecutionLogging::All)
            .destinations(
                LogDestination::builder()
                    .cloud_watch_logs_log_group(
                        CloudWatchLogsLogGroup::builder()
                            .log_group_arn(format!("{group}:*"))
                            .build(),
                    )
                    .build(),
            )
            .build())
    }

    fn definition_now(&self, outputs: &Outputs) -> Result<String, EngineError> {
        let d = (self.definition)(outputs);
        if has_unknown(&d) {
            return Err(EngineError::MissingOutput {
                resource: self.meta.name.clone(),
                output: "an output its definition names".into(),
            });
        }
        Ok(d.to_string())
    }

    fn tracing() -> TracingConfiguration {
        TracingConfiguration::builder().enabled(true).build()
    }
}

/// Whether a value holds an unknown marker anywhere.
fn has_unknown(v: &Value) -> bool {
    match v {
        Value::Object(m) => is_unknown(v) || m.values().any(has_unknown),
        Value::Array(a) => a.iter().any(has_unknown),
        _ => false,
    }
}

/// The log group ARN a logging destination names, without the `:*` suffix.
fn group_arn(arn: &str) -> &str {
    arn.strip_suffix(":*").unwrap_or(arn)
}

/// Step Functions' answers while AWS settles: the name of a machine being deleted is still
/// held, and a role created moments ago is not yet assumable by Step Functions ("Neither the
/// global service principal states.amazonaws.com, nor the regional one is authorized to
/// assume the provided role") or cannot yet write to the log group (IAM is eventually
/// consistent).
fn settling(e: &SdkError<CreateStateMachineError, impl std::fmt::Debug>) -> bool {
    e.as_service_error().is_some_and(|e| {
        e.is_state_machine_deleting()
            || e.is_invalid_logging_configuration()
            || unmodeled::<CreateStateMachineError>(codes::ACCESS_DENIED)(e)
    })
}

/// The CloudWatch Logs actions that configure a state machine's execution logging (its log
/// delivery); IAM scopes them to no resource (Step Functions developer guide, "IAM policies for
/// logging to CloudWatch Logs"). Whoever creates the state machine, and its role, need them.
pub const LOG_DELIVERY_ACTIONS: &[&str] = &[
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
];

#[async_trait]
impl Resource for StateMachine {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "step functions state machine"
    }
    fn permissions(&self, _ws: &Workspace) -> Permissions {
        let machine = [self.arn.clone()];
        Permissions::new()
            .read(
                &["states:DescribeStateMachine", "states:ListTagsForResource"],
                &machine,
            )
            .write(
                &[
                    "states:CreateStateMachine",
                    "states:UpdateStateMachine",
                    "states:DeleteStateMachine",
                    "states:TagResource",
                    "states:UntagResource",
                ],
                &machine,
            )
            // Execution logging: Step Functions' log delivery is configured through CloudWatch
            // Logs' vended-log actions, which take no resource.
            .write(LOG_DELIVERY_ACTIONS, &any())
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&SfnTags)
    }
    fn depends_on(&self) -> Vec<&'static str> {
        let mut d = vec![self.role_id, self.log_group_id];
        d.extend(self.definition_needs.iter().copied());
        d
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        let group = output_or_unknown(outputs, self.log_group_id, "arn");
        Desired::new()
            .set_replace("type", "STANDARD")
            .set("definition", (self.definition)(outputs))
            .set("role", output_or_unknown(outputs, self.role_id, "arn"))
            .set(
                "logging",
                json!({
                    "level": self.logging.level().as_str(),
                    "include_execution_data": self.logging == ExecutionLogging::All,
                    "log_group": group,
                }),
            )
            .set("tracing", true)
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let Some(d) = found(
            aws.sfn()
                .describe_state_machine()
                .state_machine_arn(&self.arn)
                .send()
                .await,
            DescribeStateMachineError::is_state_machine_does_not_exist,
            m,
            "DescribeStateMachine",
        )?
        else {
            return Ok(None);
        };
        // A machine being deleted is gone for the plan; a create waits until its name is free.
        if d.status() == Some(&StateMachineStatus::Deleting) {
            return Ok(None);
        }
        let logging = d.logging_configuration();
        let group = logging
            .and_then(|l| l.destinations().first())
            .and_then(|d| d.cloud_watch_logs_log_group())
            .and_then(|g| g.log_group_arn())
            .map(group_arn)
            .unwrap_or_default();
        Ok(Some(
            Observed::default()
                .field("type", d.r#type().as_str())
                .field("definition", normalize_json(d.definition()))
                .field("role", d.role_arn())
                .field(
                    "logging",
                    json!({
                        "level": logging.and_then(|l| l.level()).map(|l| l.as_str()).unwrap_or("OFF"),
                        "include_execution_data": logging.is_some_and(|l| l.include_execution_data()),
                        "log_group": group,
                    }),
                )
                .field(
                    "tracing",
                    d.tracing_configuration().is_some_and(|t| t.enabled()),
                )
                .output("arn", d.state_machine_arn())
                .output("name", m.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let role = require_output(outputs, &m.name, self.role_id, "arn")?;
        let req = aws
            .sfn()
            .create_state_machine()
            .name(&m.name)
            .r#type(StateMachineType::Standard)
            .definition(self.definition_now(outputs)?)
            .role_arn(role)
            .logging_configuration(self.logging(outputs)?)
            .tracing_configuration(Self::tracing())
            .set_tags(Some(
                m.tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ));
        settle(SETTLE_LIMIT, settling, || req.clone().send())
            .await
            .map_err(|e| m.fail("CreateStateMachine", e))?;
        Ok(())
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut req = aws
            .sfn()
            .update_state_machine()
            .state_machine_arn(c.current.out("arn"));
        for f in c.fields {
            req = match f.as_str() {
                "definition" => req.definition(self.definition_now(c.outputs)?),
                "role" => req.role_arn(require_output(c.outputs, &m.name, self.role_id, "arn")?),
                "logging" => req.logging_configuration(self.logging(c.outputs)?),
                "tracing" => req.tracing_configuration(Self::tracing()),
                _ => req,
            };
        }
        req.send()
            .await
            .map_err(|e| m.fail("UpdateStateMachine", e))?;
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.sfn()
                .delete_state_machine()
                .state_machine_arn(current.out("arn"))
                .send()
                .await,
            unmodeled::<DeleteStateMachineError>(codes::STATE_MACHINE_NOT_FOUND),
            &self.meta,
            "DeleteStateMachine",
        )
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        self.pricing.lines(self.meta.id, ctx)
    }
}
