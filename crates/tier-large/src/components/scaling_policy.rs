//! A target-tracking scaling policy on a scalable target: Application Auto Scaling adds tasks
//! when the service's average CPU stays above the target and removes them when it stays
//! below (through CloudWatch alarms it makes and keeps itself).

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
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, gone, require_output,
};
use tier_xs::workspace::Workspace;

use crate::aws::LargeAws;

pub struct CpuScalingPolicy {
    /// Its name is the policy's name.
    pub meta: Meta,
    /// The scalable target it steers (its `resource_id` output).
    pub target_id: &'static str,
    /// The average CPU (percent) the autoscaler keeps the service at.
    pub cpu_percent: f64,
    /// Seconds between scaling out and the next scale out.
    pub scale_out_cooldown: i32,
    /// Seconds between a scale in and the next one: slow to give tasks back.
    pub scale_in_cooldown: i32,
}

impl CpuScalingPolicy {
    fn tracking(&self) -> Value {
        json!({
            "metric": "ECSServiceAverageCPUUtilization",
            "target_percent": self.cpu_percent,
            "scale_out_cooldown": self.scale_out_cooldown,
            "scale_in_cooldown": self.scale_in_cooldown,
        })
    }

    fn configuration(&self) -> Result<TargetTrackingScalingPolicyConfiguration, EngineError> {
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(MetricType::EcsServiceAverageCpuUtilization)
            .build()
            .map_err(|e| EngineError::Invalid(format!("{}: {e}", self.meta.name)))?;
        TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(self.cpu_percent)
            .predefined_metric_specification(metric)
            .scale_out_cooldown(self.scale_out_cooldown)
            .scale_in_cooldown(self.scale_in_cooldown)
            .build()
            .map_err(|e| EngineError::Invalid(format!("{}: {e}", self.meta.name)))
    }

    async fn put(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let resource = require_output(outputs, &self.meta.name, self.target_id, "resource_id")?;
        aws.autoscaling()
            .put_scaling_policy()
            .policy_name(&self.meta.name)
            .service_namespace(ServiceNamespace::Ecs)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .resource_id(resource)
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(self.configuration()?)
            .send()
            .await
            .map_err(|e| self.meta.fail("PutScalingPolicy", e))?;
        Ok(())
    }
}

#[async_trait]
impl Resource for CpuScalingPolicy {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "scaling policy"
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
        vec![self.target_id]
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set_replace("type", "TargetTrackingScaling")
            .set("tracking", self.tracking())
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = aws
            .autoscaling()
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Ecs)
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
            json!({
                "metric": c
                    .predefined_metric_specification()
                    .map(|m| m.predefined_metric_type().as_str()),
                "target_percent": c.target_value(),
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
