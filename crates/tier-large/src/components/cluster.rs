//! The Aurora PostgreSQL cluster (Serverless v2): its storage holds the workspace's vector
//! memory. Encrypted; the master password managed by RDS in Secrets Manager (never seen by
//! agentbus: the server reads the secret at run time); backups kept 7 days (14 in prod);
//! PostgreSQL's log exported to CloudWatch Logs; deletion protection and a final snapshot in
//! prod.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostContext, CostError, CostLine};
use tier_xs::engine::permissions::Permissions;
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, found, gone, made,
    output_or_unknown, own_tags, require_output, wait_until,
};
use tier_xs::workspace::Workspace;

use super::{RdsTags, rds_error};
use crate::aws::LargeAws;
use crate::rds::{ClusterChange, NewCluster, cluster_already_exists, cluster_not_found};

/// The engine: Aurora PostgreSQL.
pub const ENGINE: &str = "aurora-postgresql";
/// A version whose pgvector is 0.8 (iterative index scans): Aurora PostgreSQL 16.6 ships
/// pgvector 0.8.0.
pub const ENGINE_VERSION: &str = "16.6";
/// The database and its master user.
pub const DATABASE: &str = "agentbus";
/// PostgreSQL's port.
pub const PORT: u16 = 5432;

/// How long a cluster may take to become available, or to go.
const WAIT: Duration = Duration::from_secs(45 * 60);

pub struct DbCluster {
    pub meta: Meta,
    /// The subnet group's logical id (its `name` output).
    pub subnet_group: &'static str,
    /// The database's security group's logical id (its `id` output).
    pub security_group: &'static str,
    /// Serverless v2 capacity range, in ACUs.
    pub min_acu: f64,
    pub max_acu: f64,
    pub backup_days: i32,
    /// Deletion protection and a final snapshot (prod).
    pub protect: bool,
}

impl DbCluster {
    fn arn(&self, ws: &Workspace) -> String {
        ws.arn("rds", &format!("cluster:{}", self.meta.name))
    }

    async fn describe(
        &self,
        aws: &AwsClients,
    ) -> Result<Option<crate::rds::DbCluster>, EngineError> {
        let out = found(
            aws.rds().describe_db_clusters(&self.meta.name).await,
            cluster_not_found,
            &self.meta,
            "DescribeDBClusters",
        )?;
        Ok(out.and_then(|o| o.into_iter().next()))
    }

    /// Waits until the cluster is no longer described (RDS takes minutes to delete one).
    async fn gone(&self, aws: &AwsClients) -> Result<(), EngineError> {
        wait_until(&self.meta.name, WAIT, Duration::from_secs(10), || async {
            Ok(match self.describe(aws).await {
                Ok(None) => Ok(()),
                Ok(Some(c)) => Err(format!("status {}", c.status)),
                Err(e) => Err(rds_error(e).to_string()),
            })
        })
        .await
    }

    /// Waits until the cluster is `available` (RDS takes minutes to create or change one).
    async fn available(&self, aws: &AwsClients) -> Result<(), EngineError> {
        wait_until(&self.meta.name, WAIT, Duration::from_secs(10), || async {
            Ok(match self.describe(aws).await? {
                Some(c) if c.status == "available" => Ok(()),
                Some(c) => Err(format!("status {}", c.status)),
                None => Err("not found".into()),
            })
        })
        .await
    }
}

#[async_trait]
impl Resource for DbCluster {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "aurora cluster"
    }
    fn depends_on(&self) -> Vec<&'static str> {
        vec![self.subnet_group, self.security_group]
    }
    fn data_bearing(&self) -> bool {
        true
    }
    fn protected(&self) -> Option<String> {
        self.protect.then(|| {
            format!(
                "{}: deletion protection is on (prod); it stays on. Turn it off yourself \
                 (aws rds modify-db-cluster --no-deletion-protection) if you really mean to delete it",
                self.meta.name
            )
        })
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let cluster = [self.arn(ws)];
        let snapshots = [ws.arn(
            "rds",
            &format!("cluster-snapshot:{}-final-*", self.meta.name),
        )];
        Permissions::new()
            .read(
                &["rds:DescribeDBClusters", "rds:ListTagsForResource"],
                &cluster,
            )
            .write(
                &[
                    "rds:CreateDBCluster",
                    "rds:ModifyDBCluster",
                    "rds:DeleteDBCluster",
                    "rds:AddTagsToResource",
                    "rds:RemoveTagsFromResource",
                ],
                &cluster,
            )
            .write(&["rds:CreateDBClusterSnapshot"], &snapshots)
            // Before the cluster goes, the readers its autoscaler added.
            .read(&["rds:DescribeDBInstances"], &[ws.arn("rds", "db:*")])
            .write(
                &["rds:DeleteDBInstance"],
                &[ws.arn(
                    "rds",
                    &format!("db:{}*", super::instance::AUTOSCALED_PREFIX),
                )],
            )
            // A managed master password: RDS creates and rotates the secret on the caller's
            // behalf (Aurora User Guide, "Password management with Secrets Manager").
            .write(
                &[
                    "secretsmanager:CreateSecret",
                    "secretsmanager:RotateSecret",
                    "secretsmanager:TagResource",
                ],
                &[ws.arn("secretsmanager", "secret:rds!cluster-*")],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&RdsTags)
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        Desired::new()
            .set_replace("engine", ENGINE)
            .set("engine_version", ENGINE_VERSION)
            .set_replace("storage_encrypted", true)
            .set_replace("database", DATABASE)
            .set_replace("master_username", DATABASE)
            .set("managed_password", true)
            .set_replace(
                "subnet_group",
                output_or_unknown(outputs, self.subnet_group, "name"),
            )
            .set(
                "security_groups",
                json!([output_or_unknown(outputs, self.security_group, "id")]),
            )
            .set("min_acu", self.min_acu)
            .set("max_acu", self.max_acu)
            .set("backup_days", self.backup_days)
            .set("deletion_protection", self.protect)
            .set("log_exports", json!(["postgresql"]))
            .set("copy_tags_to_snapshot", true)
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let Some(c) = self.describe(aws).await? else {
            return Ok(None);
        };
        // A cluster on its way out is as good as gone.
        if c.status == "deleting" {
            return Ok(None);
        }
        let acu = |v: Option<f64>| v.map_or(Value::Null, |v| json!(v));
        let secret = c.master_user_secret_arn.unwrap_or_default();
        Ok(Some(
            Observed::default()
                .field("engine", c.engine)
                .field("engine_version", c.engine_version)
                .field("storage_encrypted", c.storage_encrypted)
                .field("database", c.database_name.unwrap_or_default())
                .field("master_username", c.master_username)
                .field("managed_password", !secret.is_empty())
                .field("subnet_group", c.subnet_group)
                .field("security_groups", json!(c.security_groups))
                .field("min_acu", acu(c.min_acu))
                .field("max_acu", acu(c.max_acu))
                .field("backup_days", c.backup_days)
                .field("deletion_protection", c.deletion_protection)
                .field("log_exports", json!(c.log_exports))
                .field("copy_tags_to_snapshot", c.copy_tags_to_snapshot)
                // The describe answer carries the tags (TagList): no tag read needed.
                .field("tags", own_tags(c.tags))
                .output("arn", c.arn)
                .output("endpoint", c.endpoint)
                .output("reader_endpoint", c.reader_endpoint)
                .output("port", c.port.unwrap_or(i32::from(PORT)).to_string())
                .output("secret_arn", secret)
                .output("name", self.meta.name.clone()),
        ))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut existing = self.describe(aws).await?;
        // One of the same name on its way out (its replacement): let it go first.
        if existing.as_ref().is_some_and(|c| c.status == "deleting") {
            self.gone(aws).await?;
            existing = None;
        }
        if existing.is_none() {
            // A create whose answer was lost is sent again by the SDK's retry, and then
            // answered "already exists": it was made.
            let subnet_group = require_output(outputs, &m.name, self.subnet_group, "name")?;
            let new = NewCluster {
                identifier: &m.name,
                engine: ENGINE,
                engine_version: ENGINE_VERSION,
                database_name: DATABASE,
                master_username: DATABASE,
                subnet_group: &subnet_group,
                security_groups: vec![require_output(outputs, &m.name, self.security_group, "id")?],
                port: i32::from(PORT),
                min_acu: self.min_acu,
                max_acu: self.max_acu,
                backup_days: self.backup_days,
                deletion_protection: self.protect,
                log_exports: &["postgresql"],
                tags: &m.tags,
            };
            let created = aws.rds().create_db_cluster(&new).await;
            made(created, cluster_already_exists, m, "CreateDBCluster")?;
        }
        self.available(aws).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut change = ClusterChange::default();
        for f in c.fields {
            match f.as_str() {
                "engine_version" => change.engine_version = Some(ENGINE_VERSION),
                "managed_password" => change.manage_master_user_password = true,
                "security_groups" => {
                    change.security_groups = Some(vec![require_output(
                        c.outputs,
                        &m.name,
                        self.security_group,
                        "id",
                    )?])
                }
                "min_acu" | "max_acu" => change.acu = Some((self.min_acu, self.max_acu)),
                "backup_days" => change.backup_days = Some(self.backup_days),
                "deletion_protection" => change.deletion_protection = Some(self.protect),
                "log_exports" => change.enable_log_exports = &["postgresql"],
                "copy_tags_to_snapshot" => change.copy_tags_to_snapshot = Some(true),
                other => {
                    return Err(EngineError::Invalid(format!(
                        "{}: field {other} cannot be updated in place",
                        m.name
                    )));
                }
            }
        }
        aws.rds()
            .modify_db_cluster(&m.name, &change)
            .await
            .map_err(|e| m.fail("ModifyDBCluster", e))?;
        self.available(aws).await
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        let m = &self.meta;
        // Readers the autoscaler added are members too: a cluster with members stays.
        super::instance::delete_autoscaled_readers(aws, m, &m.name).await?;
        let snapshot = self.protect.then(|| {
            let stamp = tier_xs::engine::lock::iso(tier_xs::engine::lock::now_secs())
                .replace([':', '-'], "")
                .to_lowercase();
            format!("{}-final-{stamp}", m.name)
        });
        gone(
            aws.rds()
                .delete_db_cluster(&m.name, snapshot.as_deref())
                .await,
            cluster_not_found,
            m,
            "DeleteDBCluster",
        )?;
        self.gone(aws).await
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let p = crate::cost::PRICES.region(ctx.region)?;
        let u: crate::cost::LargeUsage = ctx.usage.part()?;
        Ok(vec![
            CostLine::new(
                self.meta.id,
                "Aurora storage",
                u.db_storage_gb,
                "GB-month",
                p.aurora_storage_gb_month,
            ),
            CostLine::new(
                self.meta.id,
                "Aurora I/O requests",
                u.db_io_million,
                "million requests",
                p.aurora_io_million,
            ),
        ])
    }
}
