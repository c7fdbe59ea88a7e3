//! An Application Auto Scaling scalable target: the dashboard service's desired count, handed
//! to the autoscaler between a least and a most number of tasks. Registering it also makes
//! the service-linked role Application Auto Scaling acts through for ECS, when the account
//! has none yet.

use async_trait::async_trait;
use aws_sdk_applicationautoscaling::operation::deregister_scalable_target::DeregisterScalableTargetError;
use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use tier_xs::aws::AwsClients;
use tier_xs::engine::permissions::{Permissions, any};
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, gone, pair,
};
use tier_xs::tag_api;
use tier_xs::workspace::Workspace;

use crate::aws::LargeAws;

/// The role Application Auto Scaling makes for itself on the first ECS target of an account.
pub const ECS_SCALING_SERVICE: &str = "ecs.application-autoscaling.amazonaws.com";

pub struct ScalableTarget {
    /// Its name is the service's, for the plan; AWS names it by `resource_id`.
    pub meta: Meta,
    pub cluster: String,
    pub service: String,
    /// The ECS service resource whose count this is.
    pub service_id: &'static str,
    pub min: u32,
    pub max: u32,
}

impl ScalableTarget {
    /// Application Auto Scaling's id of an ECS service: `service/CLUSTER/SERVICE`.
    pub fn resource_id(&self) -> String {
        format!("service/{}/{}", self.cluster, self.service)
    }

    /// Registers the target with its bounds (an existing one is updated, so a repeated call
    /// does no harm); `tagged`: with the workspace's tags, which only a new target takes.
    async fn register(&self, aws: &AwsClients, tagged: bool) -> Result<(), EngineError> {
        let mut req = aws
            .autoscaling()
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .resource_id(self.resource_id())
            .min_capacity(self.min as i32)
            .max_capacity(self.max as i32);
        if tagged {
            for (k, v) in &self.meta.tags {
                req = req.tags(k, v);
            }
        }
        req.send()
            .await
            .map_err(|e| self.meta.fail("RegisterScalableTarget", e))?;
        Ok(())
    }
}

tag_api! {
    /// Application Auto Scaling's tags, by the scalable target's `arn` output.
    pub struct ScalingTags;
    read(aws, meta, o): "ListTagsForResource" => aws.autoscaling().list_tags_for_resource().resource_arn(o.out("arn")),
        |out| out.tags().into_iter().flatten().map(|(k, v)| pair(k.as_str(), v.as_str())).collect();
    tag(aws, meta, o, tags): "TagResource" => aws.autoscaling().tag_resource().resource_arn(o.out("arn"))
        .set_tags(Some(tags.iter().cloned().collect()));
    untag(aws, meta, o, keys): "UntagResource" => aws.autoscaling().untag_resource().resource_arn(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

#[async_trait]
impl Resource for ScalableTarget {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "scalable target"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        // A scalable target's ARN ends in an id AWS picks.
        let target = ws.arn("application-autoscaling", "scalable-target/*");
        let service = ws.arn("ecs", &format!("service/{}/{}", self.cluster, self.service));
        let linked = ws.iam_arn(&format!(
            "role/aws-service-role/{ECS_SCALING_SERVICE}/AWSServiceRoleForApplicationAutoScaling_ECSService"
        ));
        Permissions::new()
            // Describe calls take no resource.
            .read(&["application-autoscaling:DescribeScalableTargets"], &any())
            .read(&["application-autoscaling:ListTagsForResource"], &[&target])
            .write(
                &[
                    "application-autoscaling:RegisterScalableTarget",
                    "application-autoscaling:DeregisterScalableTarget",
                    "application-autoscaling:TagResource",
                    "application-autoscaling:UntagResource",
                ],
                std::slice::from_ref(&target),
            )
            // What registering an ECS service's count calls on the caller's behalf
            // (Application Auto Scaling User Guide, "Permissions required for API actions").
            .write(&["ecs:DescribeServices", "ecs:UpdateService"], &[service])
            .write_when(
                &["iam:CreateServiceLinkedRole"],
                &[linked],
                serde_json::json!({"StringLike": {"iam:AWSServiceName": ECS_SCALING_SERVICE}}),
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&ScalingTags)
    }
    fn depends_on(&self) -> Vec<&'static str> {
        vec![self.service_id]
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set_replace("resource", self.resource_id())
            .set("min_tasks", self.min)
            .set("max_tasks", self.max)
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = aws
            .autoscaling()
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .resource_ids(self.resource_id())
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeScalableTargets", e))?;
        Ok(out.scalable_targets().first().map(|t| {
            Observed::default()
                .field("resource", t.resource_id())
                .field("min_tasks", t.min_capacity())
                .field("max_tasks", t.max_capacity())
                .output("arn", t.scalable_target_arn().unwrap_or_default())
                .output("resource_id", t.resource_id())
        }))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        self.register(aws, true).await
    }
    async fn update(&self, aws: &AwsClients, _c: &Edit<'_>) -> Result<(), EngineError> {
        // Tags of an existing target change through the tag API, not here.
        self.register(aws, false).await
    }
    /// Deregistering a target also deletes its scaling policies; the count stays where the
    /// autoscaler left it until the deploy sets it.
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.autoscaling()
                .deregister_scalable_target()
                .service_namespace(ServiceNamespace::Ecs)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .resource_id(self.resource_id())
                .send()
                .await,
            DeregisterScalableTargetError::is_object_not_found_exception,
            &self.meta,
            "DeregisterScalableTarget",
        )
    }
}
