//! A target-tracking scaling policy on a scalable target: Application Auto Scaling adds tasks
//! when the tracked metric (the service's average CPU, or the requests each target of its
//! load balancer gets) stays above the target and removes them when it stays below (through
//! CloudWatch alarms it makes and keeps itself). With several policies on one target it
//! scales out when any asks and in only when all allow.

use async_trait::async_trait;
use aws_sdk_applicationautoscaling::operation::delete_scaling_policy::DeleteScalingPolicyError;
use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::engine::permissions::{Permissions, any};
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, gone, is_unknown,
    output_or_unknown, require_output, unknown,
};
use tier_xs::workspace::Workspace;

use crate::aws::LargeAws;

/// What a target-tracking policy keeps at its target.
#[derive(Clone, Debug)]
pub enum Tracked {
    /// The service's average CPU, in percent.
    ServiceCpu,
    /// Requests a minute each registered target gets from the load balancer (its target
    /// group and load balancer by logical id, their `arn` outputs).
    RequestsPerTarget {
        load_balancer_id: &'static str,
        target_group_id: &'static str,
    },
    /// The average CPU of an Aurora cluster's readers, in percent.
    ReaderCpu,
}

pub struct TrackingPolicy {
    /// Its name is the policy's name.
    pub meta: Meta,
    /// The scalable target it steers (its `resource_id` output).
    pub target_id: &'static str,
    pub metric: Tracked,
    /// The value the autoscaler keeps the metric at.
    pub target: f64,
    /// Seconds between scaling out and the next scale out.
    pub scale_out_cooldown: i32,
    /// Seconds between a scale in and the next one: slow to give tasks back.
    pub scale_in_cooldown: i32,
    /// The settings ask for it (its target's); one not asked for is removed.
    pub enabled: bool,
}

/// ALBRequestCountPerTarget's resource label: `app/{lb name}/{lb id}/targetgroup/{tg name}/{tg
/// id}`, the final parts of the two ARNs (PredefinedMetricSpecification, API reference).
pub fn resource_label(load_balancer_arn: &str, target_group_arn: &str) -> Option<String> {
    let lb = load_balancer_arn.split_once(":loadbalancer/")?.1;
    let tg = target_group_arn.split_once(":targetgroup/")?.1;
    lb.starts_with("app/")
        .then(|| format!("{lb}/targetgroup/{tg}"))
}

impl TrackingPolicy {
    fn metric_type(&self) -> MetricType {
        match self.metric {
            Tracked::ServiceCpu => MetricType::EcsServiceAverageCpuUtilization,
            Tracked::RequestsPerTarget { .. } => MetricType::AlbRequestCountPerTarget,
            Tracked::ReaderCpu => MetricType::RdsReaderAverageCpuUtilization,
        }
    }

    /// The service and count the metric steers: a service's tasks, or a cluster's readers.
    fn scaled(&self) -> (ServiceNamespace, ScalableDimension) {
        match self.metric {
            Tracked::ServiceCpu | Tracked::RequestsPerTarget { .. } => (
                ServiceNamespace::Ecs,
                ScalableDimension::EcsServiceDesiredCount,
            ),
            Tracked::ReaderCpu => (
                ServiceNamespace::Rds,
                ScalableDimension::RdsClusterReadReplicaCount,
            ),
        }
    }

    /// The resource label the metric needs (requests per target only): unknown until the
    /// load balancer and the target group exist.
    fn label(&self, outputs: &Outputs) -> Value {
        let Tracked::RequestsPerTarget {
            load_balancer_id,
            target_group_id,
        } = self.metric
        else {
            return Value::Null;
        };
        let lb = output_or_unknown(outputs, load_balancer_id, "arn");
        let tg = output_or_unknown(outputs, target_group_id, "arn");
        match (lb.as_str(), tg.as_str()) {
            (Some(lb), Some(tg)) => resource_label(lb, tg).map_or(Value::Null, Value::String),
            _ => unknown("resource label"),
        }
    }

    fn tracking(&self, outputs: &Outputs) -> Value {
        let label = self.label(outputs);
        if is_unknown(&label) {
            return label;
        }
        json!({
            "metric": self.metric_type().as_str(),
            "resource_label": label,
            "target": self.target,
            "scale_out_cooldown": self.scale_out_cooldown,
            "scale_in_cooldown": self.scale_in_cooldown,
        })
    }

    fn configuration(
        &self,
        outputs: &Outputs,
    ) -> Result<TargetTrackingScalingPolicyConfiguration, EngineError> {
        let invalid = |e: aws_sdk_applicationautoscaling::error::BuildError| {
            EngineError::Invalid(format!("{}: {e}", self.meta.name))
        };
        let label = match self.label(outputs) {
            Value::String(l) => Some(l),
            Value::Null => None,
            _ => {
                return Err(EngineError::Invalid(format!(
                    "{}: the load balancer's and target group's ARNs are not known",
                    self.meta.name
                )));
            }
        };
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(self.metric_type())
            .set_resource_label(label)
            .build()
            .map_err(invalid)?;
        TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(self.target)
            .predefined_metric_specification(metric)
            .scale_out_cooldown(self.scale_out_cooldown)
            .scale_in_cooldown(self.scale_in_cooldown)
            .build()
            .map_err(invalid)
    }

    async fn put(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let resource = require_output(outputs, &self.meta.name, self.target_id, "resource_id")?;
        aws.autoscaling()
            .put_scaling_policy()
            .policy_name(&self.meta.name)
            .service_namespace(self.scaled().0)
            .scalable_dimension(self.scaled().1)
            .resource_id(resource)
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(self.configuration(outputs)?)
            .send()
            .await
            .map_err(|e| self.meta.fail("PutScalingPolicy", e))?;
        Ok(())
    }
}

#[async_trait]
impl Resource for TrackingPolicy {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "scaling policy"
    }
    fn wanted(&self) -> bool {
        self.enabled
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let target = ws.arn("application-autoscaling", "scalable-target/*");
        Permissions::new()
            .read(&["application-autoscaling:DescribeScalingPolicies"], &any())
            .write(
                &[
                    "application-autoscaling:PutScalingPolicy",
                    "application-autoscaling:DeleteScalingPolicy",
                ],
                &[target],
            )
            // The alarms a target-tracking policy is carried out by are made, read and
            // removed with the caller's rights (Application Auto Scaling User Guide,
            // "Permissions required for API actions").
            .write(
                &[
                    "cloudwatch:DescribeAlarms",
                    "cloudwatch:PutMetricAlarm",
                    "cloudwatch:DeleteAlarms",
                ],
                &[ws.arn("cloudwatch", "alarm:TargetTracking-*")],
            )
    }
    fn depends_on(&self) -> Vec<&'static str> {
        match self.metric {
            Tracked::ServiceCpu | Tracked::ReaderCpu => vec![self.target_id],
            Tracked::RequestsPerTarget {
                load_balancer_id,
                target_group_id,
            } => vec![self.target_id, load_balancer_id, target_group_id],
        }
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        Desired::new()
            .set_replace("type", "TargetTrackingScaling")
            .set("tracking", self.tracking(outputs))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = aws
            .autoscaling()
            .describe_scaling_policies()
            .service_namespace(self.scaled().0)
            .policy_names(&self.meta.name)
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeScalingPolicies", e))?;
        let Some(p) = out
            .scaling_policies()
            .iter()
            .find(|p| p.policy_name() == self.meta.name)
        else {
            return Ok(None);
        };
        let tracking = p.target_tracking_scaling_policy_configuration().map(|c| {
            let metric = c.predefined_metric_specification();
            json!({
                "metric": metric.map(|m| m.predefined_metric_type().as_str()),
                "resource_label": metric.and_then(|m| m.resource_label()),
                "target": c.target_value(),
                "scale_out_cooldown": c.scale_out_cooldown(),
                "scale_in_cooldown": c.scale_in_cooldown(),
            })
        });
        Ok(Some(
            Observed::default()
                .field("type", p.policy_type().as_str())
                .field("tracking", tracking.unwrap_or(Value::Null))
                .output("resource_id", p.resource_id()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        // PutScalingPolicy creates or replaces the policy of that name.
        self.put(aws, outputs).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        self.put(aws, c.outputs).await
    }
    async fn delete(&self, aws: &AwsClients, current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.autoscaling()
                .delete_scaling_policy()
                .policy_name(&self.meta.name)
                .service_namespace(ServiceNamespace::Ecs)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .resource_id(current.out("resource_id"))
                .send()
                .await,
            DeleteScalingPolicyError::is_object_not_found_exception,
            &self.meta,
            "DeleteScalingPolicy",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::resource_label;

    #[test]
    fn the_requests_metric_names_the_load_balancer_and_target_group_by_their_arns_ends() {
        assert_eq!(
            resource_label(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/agentbus-dev-dash/50dc6c495c0c9188",
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/agentbus-dev-dash/943f017f100becff",
            )
            .as_deref(),
            Some("app/agentbus-dev-dash/50dc6c495c0c9188/targetgroup/agentbus-dev-dash/943f017f100becff")
        );
        // A network load balancer has no requests to count.
        assert_eq!(
            resource_label(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/n/1",
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/t/2",
            ),
            None
        );
    }
}
