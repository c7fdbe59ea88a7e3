//! An Application Auto Scaling scalable target: a count handed to the autoscaler between a
//! least and a most — the dashboard service's tasks, or the database's readers (Aurora
//! Replicas). Registering it also makes the service-linked role Application Auto Scaling
//! acts through for that service, when the account has none yet.

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

use super::instance::AUTOSCALED_PREFIX;
use crate::aws::LargeAws;

/// The role Application Auto Scaling makes for itself on the first ECS target of an account.
pub const ECS_SCALING_SERVICE: &str = "ecs.application-autoscaling.amazonaws.com";
/// The same for Aurora clusters.
pub const RDS_SCALING_SERVICE: &str = "rds.application-autoscaling.amazonaws.com";

/// What a scalable target counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scaled {
    /// An ECS service's tasks (its desired count).
    EcsService {
        cluster: String,
        service: String,
        /// The ECS service resource (logical id).
        resource: &'static str,
    },
    /// An Aurora cluster's readers: the autoscaler adds Aurora Replicas of its own
    /// (`application-autoscaling-…`) and removes only those.
    AuroraReaders {
        cluster: String,
        /// The cluster resource (logical id).
        resource: &'static str,
    },
}

impl Scaled {
    pub fn namespace(&self) -> ServiceNamespace {
        match self {
            Scaled::EcsService { .. } => ServiceNamespace::Ecs,
            Scaled::AuroraReaders { .. } => ServiceNamespace::Rds,
        }
    }

    pub fn dimension(&self) -> ScalableDimension {
        match self {
            Scaled::EcsService { .. } => ScalableDimension::EcsServiceDesiredCount,
            Scaled::AuroraReaders { .. } => ScalableDimension::RdsClusterReadReplicaCount,
        }
    }

    /// Application Auto Scaling's id of the resource: `service/CLUSTER/SERVICE`,
    /// `cluster:CLUSTER`.
    pub fn resource_id(&self) -> String {
        match self {
            Scaled::EcsService {
                cluster, service, ..
            } => format!("service/{cluster}/{service}"),
            Scaled::AuroraReaders { cluster, .. } => format!("cluster:{cluster}"),
        }
    }

    /// The plan's names of the bounds.
    fn fields(&self) -> (&'static str, &'static str) {
        match self {
            Scaled::EcsService { .. } => ("min_tasks", "max_tasks"),
            Scaled::AuroraReaders { .. } => ("min_readers", "max_readers"),
        }
    }
}

pub struct ScalableTarget {
    /// Its name is the scaled resource's, for the plan; AWS names it by its resource id.
    pub meta: Meta,
    pub scaled: Scaled,
    pub min: u32,
    pub max: u32,
    /// The settings ask for it (reader scaling is an option); one not asked for is removed.
    pub enabled: bool,
}

impl ScalableTarget {
    /// Registers the target with its bounds (an existing one is updated, so a repeated call
    /// does no harm); `tagged`: with the workspace's tags, which only a new target takes.
    async fn register(&self, aws: &AwsClients, tagged: bool) -> Result<(), EngineError> {
        let mut req = aws
            .autoscaling()
            .register_scalable_target()
            .service_namespace(self.scaled.namespace())
            .scalable_dimension(self.scaled.dimension())
            .resource_id(self.scaled.resource_id())
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
    fn wanted(&self) -> bool {
        self.enabled
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        // A scalable target's ARN ends in an id AWS picks.
        let target = ws.arn("application-autoscaling", "scalable-target/*");
        let p = Permissions::new()
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
            );
        // What registering the count calls on the caller's behalf (Application Auto Scaling
        // User Guide, "Permissions required for API actions"), and the service-linked role
        // it acts through.
        let linked = |service: &str, role: &str| {
            (
                vec![ws.iam_arn(&format!("role/aws-service-role/{service}/{role}"))],
                serde_json::json!({"StringLike": {"iam:AWSServiceName": service}}),
            )
        };
        match &self.scaled {
            Scaled::EcsService {
                cluster, service, ..
            } => {
                let (role, condition) = linked(
                    ECS_SCALING_SERVICE,
                    "AWSServiceRoleForApplicationAutoScaling_ECSService",
                );
                p.write(
                    &["ecs:DescribeServices", "ecs:UpdateService"],
                    &[ws.arn("ecs", &format!("service/{cluster}/{service}"))],
                )
                .write_when(&["iam:CreateServiceLinkedRole"], &role, condition)
            }
            Scaled::AuroraReaders { cluster, .. } => {
                let (role, condition) = linked(
                    RDS_SCALING_SERVICE,
                    "AWSServiceRoleForApplicationAutoScaling_RDSCluster",
                );
                p.write(
                    &["rds:DescribeDBClusters", "rds:DescribeDBInstances"],
                    &[
                        ws.arn("rds", &format!("cluster:{cluster}")),
                        ws.arn("rds", "db:*"),
                    ],
                )
                // Turning reader scaling off removes the readers it added.
                .write(
                    &["rds:DeleteDBInstance"],
                    &[ws.arn("rds", &format!("db:{AUTOSCALED_PREFIX}*"))],
                )
                .write_when(&["iam:CreateServiceLinkedRole"], &role, condition)
            }
        }
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&ScalingTags)
    }
    fn depends_on(&self) -> Vec<&'static str> {
        match &self.scaled {
            Scaled::EcsService { resource, .. } | Scaled::AuroraReaders { resource, .. } => {
                vec![resource]
            }
        }
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        let (min, max) = self.scaled.fields();
        Desired::new()
            .set_replace("resource", self.scaled.resource_id())
            .set(min, self.min)
            .set(max, self.max)
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = aws
            .autoscaling()
            .describe_scalable_targets()
            .service_namespace(self.scaled.namespace())
            .scalable_dimension(self.scaled.dimension())
            .resource_ids(self.scaled.resource_id())
            .send()
            .await
            .map_err(|e| self.meta.fail("DescribeScalableTargets", e))?;
        let (min, max) = self.scaled.fields();
        Ok(out.scalable_targets().first().map(|t| {
            Observed::default()
                .field("resource", t.resource_id())
                .field(min, t.min_capacity())
                .field(max, t.max_capacity())
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
    /// Deregistering a target also deletes its scaling policies. A service's count stays
    /// where the autoscaler left it until the deploy sets it; the readers the autoscaler added
    /// to a cluster stay (it removes them only while it scales), so they are deleted here.
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.autoscaling()
                .deregister_scalable_target()
                .service_namespace(self.scaled.namespace())
                .scalable_dimension(self.scaled.dimension())
                .resource_id(self.scaled.resource_id())
                .send()
                .await,
            DeregisterScalableTargetError::is_object_not_found_exception,
            &self.meta,
            "DeregisterScalableTarget",
        )?;
        if let Scaled::AuroraReaders { cluster, .. } = &self.scaled {
            super::instance::delete_autoscaled_readers(aws, &self.meta, cluster).await?;
        }
        Ok(())
    }
}
