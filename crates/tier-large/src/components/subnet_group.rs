//! The database's subnet group: the subnets of the workspace's VPC an Aurora cluster may
//! place instances in (at least two availability zones).

use async_trait::async_trait;
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::engine::permissions::Permissions;
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, found, gone, made,
};
use tier_xs::workspace::Workspace;

use super::RdsTags;
use crate::aws::LargeAws;
use crate::rds::{subnet_group_already_exists, subnet_group_not_found};

pub struct DbSubnetGroup {
    pub meta: Meta,
    pub description: String,
    pub subnet_ids: Vec<String>,
}

impl DbSubnetGroup {
    fn subnets(&self) -> Value {
        let mut s = self.subnet_ids.clone();
        s.sort();
        json!(s)
    }
}

#[async_trait]
impl Resource for DbSubnetGroup {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "db subnet group"
    }
    /// Kept as long as the database placed in it.
    fn data_bearing(&self) -> bool {
        true
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let group = [ws.arn("rds", &format!("subgrp:{}", self.meta.name))];
        Permissions::new()
            .read(
                &["rds:DescribeDBSubnetGroups", "rds:ListTagsForResource"],
                &group,
            )
            .write(
                &[
                    "rds:CreateDBSubnetGroup",
                    "rds:ModifyDBSubnetGroup",
                    "rds:DeleteDBSubnetGroup",
                    "rds:AddTagsToResource",
                    "rds:RemoveTagsFromResource",
                ],
                &group,
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&RdsTags)
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set("description", self.description.clone())
            .set("subnets", self.subnets())
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = found(
            aws.rds().describe_db_subnet_groups(&self.meta.name).await,
            subnet_group_not_found,
            &self.meta,
            "DescribeDBSubnetGroups",
        )?;
        let Some(mut g) = out.and_then(|o| o.into_iter().next()) else {
            return Ok(None);
        };
        g.subnets.sort();
        Ok(Some(
            Observed::default()
                .field("description", g.description)
                .field("subnets", json!(g.subnets))
                .output("arn", g.arn)
                .output("name", self.meta.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        // "Already exists" after a retried create whose first answer was lost: made.
        let created = aws
            .rds()
            .create_db_subnet_group(&m.name, &self.description, &self.subnet_ids, &m.tags)
            .await;
        made(
            created,
            subnet_group_already_exists,
            m,
            "CreateDBSubnetGroup",
        )
    }
    async fn update(&self, aws: &AwsClients, _c: &Edit<'_>) -> Result<(), EngineError> {
        let m = &self.meta;
        aws.rds()
            .modify_db_subnet_group(&m.name, &self.description, &self.subnet_ids)
            .await
            .map_err(|e| m.fail("ModifyDBSubnetGroup", e))
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.rds().delete_db_subnet_group(&self.meta.name).await,
            subnet_group_not_found,
            &self.meta,
            "DeleteDBSubnetGroup",
        )
    }
}
