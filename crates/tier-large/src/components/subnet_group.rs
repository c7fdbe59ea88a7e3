//! The database's subnet group: the subnets of the workspace's VPC an Aurora cluster may
//! place instances in (at least two availability zones).

use async_trait::async_trait;
use aws_sdk_rds::operation::create_db_subnet_group::CreateDBSubnetGroupError;
use aws_sdk_rds::operation::delete_db_subnet_group::DeleteDBSubnetGroupError;
use aws_sdk_rds::operation::describe_db_subnet_groups::DescribeDBSubnetGroupsError;
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::engine::permissions::Permissions;
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, found, gone, made,
};
use tier_xs::workspace::Workspace;

use super::{RdsTags, rds_tags};
use crate::aws::LargeAws;

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
            aws.rds()
                .describe_db_subnet_groups()
                .db_subnet_group_name(&self.meta.name)
                .send()
                .await,
            DescribeDBSubnetGroupsError::is_db_subnet_group_not_found_fault,
            &self.meta,
            "DescribeDBSubnetGroups",
        )?;
        let Some(g) = out.and_then(|o| o.db_subnet_groups().first().cloned()) else {
            return Ok(None);
        };
        let mut subnets: Vec<String> = g
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_identifier().map(str::to_string))
            .collect();
        subnets.sort();
        Ok(Some(
            Observed::default()
                .field(
                    "description",
                    g.db_subnet_group_description().unwrap_or_default(),
                )
                .field("subnets", json!(subnets))
                .output("arn", g.db_subnet_group_arn().unwrap_or_default())
                .output("name", self.meta.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        // "Already exists" after a retried create whose first answer was lost: made.
        let created = aws
            .rds()
            .create_db_subnet_group()
            .db_subnet_group_name(&m.name)
            .db_subnet_group_description(&self.description)
            .set_subnet_ids(Some(self.subnet_ids.clone()))
            .set_tags(Some(rds_tags(&m.tags)))
            .send()
            .await;
        made(
            created,
            CreateDBSubnetGroupError::is_db_subnet_group_already_exists_fault,
            m,
            "CreateDBSubnetGroup",
        )
    }
    async fn update(&self, aws: &AwsClients, _c: &Edit<'_>) -> Result<(), EngineError> {
        let m = &self.meta;
        aws.rds()
            .modify_db_subnet_group()
            .db_subnet_group_name(&m.name)
            .db_subnet_group_description(&self.description)
            .set_subnet_ids(Some(self.subnet_ids.clone()))
            .send()
            .await
            .map_err(|e| m.fail("ModifyDBSubnetGroup", e))?;
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        gone(
            aws.rds()
                .delete_db_subnet_group()
                .db_subnet_group_name(&self.meta.name)
                .send()
                .await,
            DeleteDBSubnetGroupError::is_db_subnet_group_not_found_fault,
            &self.meta,
            "DeleteDBSubnetGroup",
        )
    }
}
