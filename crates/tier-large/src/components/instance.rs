//! An instance of the Aurora cluster: the writer (promotion tier 0) and a reader (tier 1) in
//! another availability zone, so a zone's failure fails over instead of stopping the
//! database. Serverless v2 (`db.serverless`): each scales within the cluster's ACU range.

use std::time::Duration;

use async_trait::async_trait;
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostContext, CostError, CostLine};
use tier_xs::engine::permissions::Permissions;
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, found, gone, made,
    output_or_unknown, own_tags, require_output, wait_until,
};
use tier_xs::workspace::Workspace;

use super::cluster::ENGINE;
use super::{RdsTags, rds_error};
use crate::aws::LargeAws;
use crate::rds::{
    InstanceQuery, NewInstance, instance_already_exists, instance_not_found, invalid_instance_state,
};

/// The class of a Serverless v2 instance.
pub const CLASS: &str = "db.serverless";

const WAIT: Duration = Duration::from_secs(45 * 60);

/// How Application Auto Scaling names the Aurora Replicas it adds to a cluster.
pub const AUTOSCALED_PREFIX: &str = "application-autoscaling-";

/// Deletes the readers Application Auto Scaling added to `cluster` and waits until they are
/// gone: it removes its readers only while it scales, so once its target is deregistered
/// (reader scaling turned off, or the tier removed) they would stay, and a cluster with
/// members cannot be deleted. Returns how many there were.
pub async fn delete_autoscaled_readers(
    aws: &AwsClients,
    meta: &Meta,
    cluster: &str,
) -> Result<usize, EngineError> {
    let added = || async {
        let out = found(
            aws.rds()
                .describe_db_instances(InstanceQuery::OfCluster(cluster))
                .await,
            instance_not_found,
            meta,
            "DescribeDBInstances",
        )?;
        Ok::<_, EngineError>(
            out.unwrap_or_default()
                .into_iter()
                .map(|i| i.identifier)
                .filter(|id| id.starts_with(AUTOSCALED_PREFIX))
                .collect::<Vec<_>>(),
        )
    };
    let readers = added().await?;
    for id in &readers {
        match aws.rds().delete_db_instance(id).await {
            Ok(()) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| instance_not_found(e) || invalid_instance_state(e)) => {}
            Err(e) => return Err(meta.fail("DeleteDBInstance", e)),
        }
    }
    if !readers.is_empty() {
        wait_until(&meta.name, WAIT, Duration::from_secs(10), || async {
            let left = added().await?;
            Ok(if left.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "the autoscaler's readers {} are still there",
                    left.join(", ")
                ))
            })
        })
        .await?;
    }
    Ok(readers.len())
}

pub struct DbInstance {
    pub meta: Meta,
    /// The cluster's logical id (its `name` output).
    pub cluster: &'static str,
    pub zone: String,
    /// 0: the writer, failed over to last; higher: readers.
    pub promotion_tier: i32,
    /// The cluster's minimum capacity: what this instance runs at when idle.
    pub min_acu: f64,
    /// The writer carries the load above the minimum.
    pub writer: bool,
}

impl DbInstance {
    async fn describe(
        &self,
        aws: &AwsClients,
    ) -> Result<Option<crate::rds::DbInstance>, EngineError> {
        let out = found(
            aws.rds()
                .describe_db_instances(InstanceQuery::Id(&self.meta.name))
                .await,
            instance_not_found,
            &self.meta,
            "DescribeDBInstances",
        )?;
        Ok(out.and_then(|o| o.into_iter().next()))
    }

    async fn settled(&self, aws: &AwsClients, gone_too: bool) -> Result<(), EngineError> {
        wait_until(&self.meta.name, WAIT, Duration::from_secs(10), || async {
            Ok(match self.describe(aws).await {
                Ok(None) if gone_too => Ok(()),
                Ok(Some(i)) if !gone_too && i.status == "available" => Ok(()),
                Ok(Some(i)) => Err(format!("status {}", i.status)),
                Ok(None) => Err("not found".into()),
                Err(e) => Err(rds_error(e).to_string()),
            })
        })
        .await
    }
}

#[async_trait]
impl Resource for DbInstance {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "aurora instance"
    }
    fn depends_on(&self) -> Vec<&'static str> {
        vec![self.cluster]
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let db = [ws.arn("rds", &format!("db:{}", self.meta.name))];
        let cluster = [ws.arn("rds", "cluster:*")];
        Permissions::new()
            .read(&["rds:DescribeDBInstances", "rds:ListTagsForResource"], &db)
            .write(
                &[
                    "rds:CreateDBInstance",
                    "rds:ModifyDBInstance",
                    "rds:DeleteDBInstance",
                    "rds:AddTagsToResource",
                    "rds:RemoveTagsFromResource",
                ],
                &db,
            )
            // CreateDBInstance names the cluster it joins.
            .write(&["rds:CreateDBInstance"], &cluster)
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&RdsTags)
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        Desired::new()
            .set_replace("cluster", output_or_unknown(outputs, self.cluster, "name"))
            .set("class", CLASS)
            .set_replace("zone", self.zone.clone())
            .set("promotion_tier", self.promotion_tier)
            .set("publicly_accessible", false)
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let Some(i) = self.describe(aws).await? else {
            return Ok(None);
        };
        if i.status == "deleting" {
            return Ok(None);
        }
        Ok(Some(
            Observed::default()
                .field("cluster", i.cluster)
                .field("class", i.class)
                .field("zone", i.zone)
                .field("promotion_tier", i.promotion_tier.unwrap_or(1))
                .field("publicly_accessible", i.publicly_accessible)
                // The describe answer carries the tags (TagList): no tag read needed.
                .field("tags", own_tags(i.tags))
                .output("arn", i.arn)
                .output("name", self.meta.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut existing = self.describe(aws).await?;
        // One of the same name on its way out (a downgrade just before): let it go first.
        if existing.as_ref().is_some_and(|i| i.status == "deleting") {
            self.settled(aws, true).await?;
            existing = None;
        }
        if existing.is_none() {
            // A retried create whose first answer was lost: "already exists" means made.
            let cluster = require_output(outputs, &m.name, self.cluster, "name")?;
            let created = aws
                .rds()
                .create_db_instance(&NewInstance {
                    identifier: &m.name,
                    cluster: &cluster,
                    engine: ENGINE,
                    class: CLASS,
                    zone: &self.zone,
                    promotion_tier: self.promotion_tier,
                    tags: &m.tags,
                })
                .await;
            made(created, instance_already_exists, m, "CreateDBInstance")?;
        }
        self.settled(aws, false).await
    }
    async fn update(&self, aws: &AwsClients, _c: &Edit<'_>) -> Result<(), EngineError> {
        let m = &self.meta;
        aws.rds()
            .modify_db_instance(&m.name, CLASS, self.promotion_tier)
            .await
            .map_err(|e| m.fail("ModifyDBInstance", e))?;
        self.settled(aws, false).await
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.rds().delete_db_instance(&self.meta.name).await,
            instance_not_found,
            &self.meta,
            "DeleteDBInstance",
        )?;
        self.settled(aws, true).await
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let p = crate::cost::PRICES.region(ctx.region)?;
        let u: crate::cost::LargeUsage = ctx.usage.part()?;
        let acu = self.min_acu + if self.writer { u.db_acu_above_min } else { 0.0 };
        Ok(vec![CostLine::new(
            self.meta.id,
            if self.writer {
                "Serverless v2 capacity (writer)"
            } else {
                "Serverless v2 capacity (reader, another zone)"
            },
            acu * ctx.hours,
            "ACU-hours",
            p.aurora_acu_hour,
        )])
    }
}
