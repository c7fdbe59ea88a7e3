//! RDS through its Query API (`tier_xs::query`), for the calls the large tier makes: the
//! Aurora cluster, its instances, their subnet group and their tags.
//!
//! Why not `aws-sdk-rds`: that crate compiles all of RDS's ~160 operations, the largest unit of
//! a clean build of the workspace, for these fifteen. What is RDS's own here: its `awsQuery`
//! form (lists named by their members: `VpcSecurityGroupIds.VpcSecurityGroupId.1`,
//! `Tags.Tag.1.Key`, `Filters.Filter.1.Values.Value.1`, as the SDK's serializers write them),
//! its regional endpoint rules (EC2's; checked against the SDK's endpoint tests below), and
//! the error codes its model declares for these calls, as the accessors below.

use tier_xs::aws::ClientParts;
use tier_xs::query::{
    Api, Endpoint, Node, Params, Protocol, QueryClient, QueryError, ServiceError, regional,
};

/// RDS's Query API.
pub static RDS: Api = Api {
    service_id: "RDS",
    signing_name: "rds",
    version: "2014-10-31",
    protocol: Protocol::AwsQuery,
    endpoint,
};

/// Where RDS answers: `rds[-fips].{region}.{the partition's DNS suffix}`, by the same rules as
/// EC2's.
pub fn endpoint(region: &str, fips: bool, dual_stack: bool) -> Endpoint {
    regional("rds", region, fips, dual_stack)
}

/// A failed RDS call (see [`QueryError`]).
pub type RdsError = QueryError;

/// `DBClusterNotFoundFault`.
pub fn cluster_not_found(e: &ServiceError) -> bool {
    e.is("DBClusterNotFoundFault")
}

/// `DBClusterAlreadyExistsFault`.
pub fn cluster_already_exists(e: &ServiceError) -> bool {
    e.is("DBClusterAlreadyExistsFault")
}

/// `DBInstanceNotFound` (the `DBInstanceNotFoundFault` shape's code).
pub fn instance_not_found(e: &ServiceError) -> bool {
    e.is("DBInstanceNotFound")
}

/// `DBInstanceAlreadyExists`.
pub fn instance_already_exists(e: &ServiceError) -> bool {
    e.is("DBInstanceAlreadyExists")
}

/// `InvalidDBInstanceState`: the instance is busy (being deleted already, say).
pub fn invalid_instance_state(e: &ServiceError) -> bool {
    e.is("InvalidDBInstanceState")
}

/// `DBSubnetGroupNotFoundFault`.
pub fn subnet_group_not_found(e: &ServiceError) -> bool {
    e.is("DBSubnetGroupNotFoundFault")
}

/// `DBSubnetGroupAlreadyExists`.
pub fn subnet_group_already_exists(e: &ServiceError) -> bool {
    e.is("DBSubnetGroupAlreadyExists")
}

/// A cluster as DescribeDBClusters answers it (the fields agentbus reads).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbCluster {
    pub identifier: String,
    pub arn: String,
    pub status: String,
    pub engine: String,
    pub engine_version: String,
    pub storage_encrypted: bool,
    pub database_name: Option<String>,
    pub master_username: String,
    /// The secret of a password RDS manages.
    pub master_user_secret_arn: Option<String>,
    pub subnet_group: String,
    pub security_groups: Vec<String>,
    pub min_acu: Option<f64>,
    pub max_acu: Option<f64>,
    pub backup_days: i32,
    pub deletion_protection: bool,
    pub log_exports: Vec<String>,
    pub copy_tags_to_snapshot: bool,
    pub tags: Vec<(String, String)>,
    pub endpoint: String,
    pub reader_endpoint: String,
    pub port: Option<i32>,
}

impl DbCluster {
    fn from_node(c: &Node) -> Self {
        let scaling = c.child("ServerlessV2ScalingConfiguration");
        DbCluster {
            identifier: c.string("DBClusterIdentifier"),
            arn: c.string("DBClusterArn"),
            status: c.string("Status"),
            engine: c.string("Engine"),
            engine_version: c.string("EngineVersion"),
            storage_encrypted: c.flag("StorageEncrypted").unwrap_or(false),
            database_name: c.text("DatabaseName").map(str::to_string),
            master_username: c.string("MasterUsername"),
            master_user_secret_arn: c
                .child("MasterUserSecret")
                .and_then(|s| s.text("SecretArn"))
                .map(str::to_string),
            subnet_group: c.string("DBSubnetGroup"),
            security_groups: c
                .list("VpcSecurityGroups")
                .iter()
                .map(|g| g.string("VpcSecurityGroupId"))
                .collect(),
            min_acu: scaling.and_then(|s| s.number("MinCapacity")),
            max_acu: scaling.and_then(|s| s.number("MaxCapacity")),
            backup_days: c.number("BackupRetentionPeriod").unwrap_or(0),
            deletion_protection: c.flag("DeletionProtection").unwrap_or(false),
            log_exports: c
                .list("EnabledCloudwatchLogsExports")
                .iter()
                .map(|l| l.text.clone())
                .collect(),
            copy_tags_to_snapshot: c.flag("CopyTagsToSnapshot").unwrap_or(false),
            tags: c.pairs("TagList"),
            endpoint: c.string("Endpoint"),
            reader_endpoint: c.string("ReaderEndpoint"),
            port: c.number("Port"),
        }
    }
}

/// An instance as DescribeDBInstances answers it (the fields agentbus reads).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbInstance {
    pub identifier: String,
    pub arn: String,
    pub status: String,
    pub cluster: String,
    pub class: String,
    pub zone: String,
    pub promotion_tier: Option<i32>,
    pub publicly_accessible: bool,
    pub tags: Vec<(String, String)>,
}

impl DbInstance {
    fn from_node(i: &Node) -> Self {
        DbInstance {
            identifier: i.string("DBInstanceIdentifier"),
            arn: i.string("DBInstanceArn"),
            status: i.string("DBInstanceStatus"),
            cluster: i.string("DBClusterIdentifier"),
            class: i.string("DBInstanceClass"),
            zone: i.string("AvailabilityZone"),
            promotion_tier: i.number("PromotionTier"),
            publicly_accessible: i.flag("PubliclyAccessible").unwrap_or(false),
            tags: i.pairs("TagList"),
        }
    }
}

/// A subnet group as DescribeDBSubnetGroups answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbSubnetGroup {
    pub arn: String,
    pub description: String,
    pub subnets: Vec<String>,
}

/// Which instances DescribeDBInstances reads.
#[derive(Clone, Copy, Debug)]
pub enum InstanceQuery<'a> {
    /// One, by identifier.
    Id(&'a str),
    /// The members of a cluster (the `db-cluster-id` filter).
    OfCluster(&'a str),
}

/// What CreateDBCluster sets.
#[derive(Clone, Debug, Default)]
pub struct NewCluster<'a> {
    pub identifier: &'a str,
    pub engine: &'a str,
    pub engine_version: &'a str,
    pub database_name: &'a str,
    pub master_username: &'a str,
    pub subnet_group: &'a str,
    pub security_groups: Vec<String>,
    pub port: i32,
    pub min_acu: f64,
    pub max_acu: f64,
    pub backup_days: i32,
    pub deletion_protection: bool,
    pub log_exports: &'a [&'a str],
    pub tags: &'a [(String, String)],
}

/// The changes ModifyDBCluster makes (applied immediately); `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct ClusterChange<'a> {
    pub engine_version: Option<&'a str>,
    pub manage_master_user_password: bool,
    pub security_groups: Option<Vec<String>>,
    pub acu: Option<(f64, f64)>,
    pub backup_days: Option<i32>,
    pub deletion_protection: Option<bool>,
    pub enable_log_exports: &'a [&'a str],
    pub copy_tags_to_snapshot: Option<bool>,
}

/// What CreateDBInstance sets: a member of a cluster.
#[derive(Clone, Debug, Default)]
pub struct NewInstance<'a> {
    pub identifier: &'a str,
    pub cluster: &'a str,
    pub engine: &'a str,
    pub class: &'a str,
    pub zone: &'a str,
    pub promotion_tier: i32,
    pub tags: &'a [(String, String)],
}

fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// RDS's client: one per [`tier_xs::aws::AwsClients`] (`aws.rds()`), cheap to clone.
#[derive(Clone)]
pub struct Rds(QueryClient);

impl Rds {
    /// The client of a registry's configuration.
    pub fn new(parts: ClientParts<'_>) -> Self {
        Rds(QueryClient::new(&RDS, parts))
    }

    fn tags(p: &mut Params, tags: &[(String, String)]) {
        p.tags(
            "Tags.Tag",
            tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        );
    }

    fn security_groups(p: &mut Params, ids: &[String]) {
        p.list(
            "VpcSecurityGroupIds.VpcSecurityGroupId",
            ids.iter().map(String::as_str),
        );
    }

    fn scaling(p: &mut Params, (min, max): (f64, f64)) {
        p.push(
            "ServerlessV2ScalingConfiguration.MinCapacity",
            &min.to_string(),
        );
        p.push(
            "ServerlessV2ScalingConfiguration.MaxCapacity",
            &max.to_string(),
        );
    }

    pub async fn describe_db_clusters(&self, identifier: &str) -> Result<Vec<DbCluster>, RdsError> {
        let p = Params::new().with("DBClusterIdentifier", identifier);
        self.0
            .collect("DescribeDBClusters", p, "DBClusters", DbCluster::from_node)
            .await
    }

    /// Creates a cluster with a master password RDS manages and encrypted storage.
    pub async fn create_db_cluster(&self, c: &NewCluster<'_>) -> Result<(), RdsError> {
        let mut p = Params::new()
            .with("DBClusterIdentifier", c.identifier)
            .with("Engine", c.engine)
            .with("EngineVersion", c.engine_version)
            .with("DatabaseName", c.database_name)
            .with("MasterUsername", c.master_username)
            .with("ManageMasterUserPassword", "true")
            .with("StorageEncrypted", "true")
            .with("DBSubnetGroupName", c.subnet_group)
            .with("Port", &c.port.to_string())
            .with("BackupRetentionPeriod", &c.backup_days.to_string())
            .with("DeletionProtection", bool_text(c.deletion_protection))
            .with("CopyTagsToSnapshot", "true");
        Self::security_groups(&mut p, &c.security_groups);
        Self::scaling(&mut p, (c.min_acu, c.max_acu));
        p.list(
            "EnableCloudwatchLogsExports.member",
            c.log_exports.iter().copied(),
        );
        Self::tags(&mut p, c.tags);
        self.0.call("CreateDBCluster", p).await.map(drop)
    }

    pub async fn modify_db_cluster(
        &self,
        identifier: &str,
        c: &ClusterChange<'_>,
    ) -> Result<(), RdsError> {
        let mut p = Params::new()
            .with("DBClusterIdentifier", identifier)
            .with("ApplyImmediately", "true");
        if let Some(v) = c.engine_version {
            p.push("EngineVersion", v);
        }
        if c.manage_master_user_password {
            p.push("ManageMasterUserPassword", "true");
        }
        if let Some(ids) = &c.security_groups {
            Self::security_groups(&mut p, ids);
        }
        if let Some(acu) = c.acu {
            Self::scaling(&mut p, acu);
        }
        if let Some(d) = c.backup_days {
            p.push("BackupRetentionPeriod", &d.to_string());
        }
        if let Some(d) = c.deletion_protection {
            p.push("DeletionProtection", bool_text(d));
        }
        p.list(
            "CloudwatchLogsExportConfiguration.EnableLogTypes.member",
            c.enable_log_exports.iter().copied(),
        );
        if let Some(t) = c.copy_tags_to_snapshot {
            p.push("CopyTagsToSnapshot", bool_text(t));
        }
        self.0.call("ModifyDBCluster", p).await.map(drop)
    }

    /// Deletes a cluster: with a final snapshot of this name, or without one.
    pub async fn delete_db_cluster(
        &self,
        identifier: &str,
        final_snapshot: Option<&str>,
    ) -> Result<(), RdsError> {
        let mut p = Params::new().with("DBClusterIdentifier", identifier);
        match final_snapshot {
            Some(s) => p.push("FinalDBSnapshotIdentifier", s),
            None => p.push("SkipFinalSnapshot", "true"),
        }
        self.0.call("DeleteDBCluster", p).await.map(drop)
    }

    pub async fn describe_db_instances(
        &self,
        query: InstanceQuery<'_>,
    ) -> Result<Vec<DbInstance>, RdsError> {
        let p = match query {
            InstanceQuery::Id(id) => Params::new().with("DBInstanceIdentifier", id),
            InstanceQuery::OfCluster(c) => Params::new()
                .with("Filters.Filter.1.Name", "db-cluster-id")
                .with("Filters.Filter.1.Values.Value.1", c),
        };
        self.0
            .collect(
                "DescribeDBInstances",
                p,
                "DBInstances",
                DbInstance::from_node,
            )
            .await
    }

    /// Creates a member of a cluster, not publicly accessible.
    pub async fn create_db_instance(&self, i: &NewInstance<'_>) -> Result<(), RdsError> {
        let mut p = Params::new()
            .with("DBInstanceIdentifier", i.identifier)
            .with("DBClusterIdentifier", i.cluster)
            .with("Engine", i.engine)
            .with("DBInstanceClass", i.class)
            .with("AvailabilityZone", i.zone)
            .with("PromotionTier", &i.promotion_tier.to_string())
            .with("PubliclyAccessible", "false");
        Self::tags(&mut p, i.tags);
        self.0.call("CreateDBInstance", p).await.map(drop)
    }

    /// Sets an instance's class and promotion tier (applied immediately), not publicly
    /// accessible.
    pub async fn modify_db_instance(
        &self,
        identifier: &str,
        class: &str,
        promotion_tier: i32,
    ) -> Result<(), RdsError> {
        let p = Params::new()
            .with("DBInstanceIdentifier", identifier)
            .with("DBInstanceClass", class)
            .with("PromotionTier", &promotion_tier.to_string())
            .with("PubliclyAccessible", "false")
            .with("ApplyImmediately", "true");
        self.0.call("ModifyDBInstance", p).await.map(drop)
    }

    pub async fn delete_db_instance(&self, identifier: &str) -> Result<(), RdsError> {
        let p = Params::new().with("DBInstanceIdentifier", identifier);
        self.0.call("DeleteDBInstance", p).await.map(drop)
    }

    pub async fn describe_db_subnet_groups(
        &self,
        name: &str,
    ) -> Result<Vec<DbSubnetGroup>, RdsError> {
        let p = Params::new().with("DBSubnetGroupName", name);
        self.0
            .collect("DescribeDBSubnetGroups", p, "DBSubnetGroups", |g| {
                DbSubnetGroup {
                    arn: g.string("DBSubnetGroupArn"),
                    description: g.string("DBSubnetGroupDescription"),
                    subnets: g
                        .list("Subnets")
                        .iter()
                        .map(|s| s.string("SubnetIdentifier"))
                        .collect(),
                }
            })
            .await
    }

    fn subnet_group(name: &str, description: &str, subnets: &[String]) -> Params {
        let mut p = Params::new()
            .with("DBSubnetGroupName", name)
            .with("DBSubnetGroupDescription", description);
        p.list(
            "SubnetIds.SubnetIdentifier",
            subnets.iter().map(String::as_str),
        );
        p
    }

    pub async fn create_db_subnet_group(
        &self,
        name: &str,
        description: &str,
        subnets: &[String],
        tags: &[(String, String)],
    ) -> Result<(), RdsError> {
        let mut p = Self::subnet_group(name, description, subnets);
        Self::tags(&mut p, tags);
        self.0.call("CreateDBSubnetGroup", p).await.map(drop)
    }

    pub async fn modify_db_subnet_group(
        &self,
        name: &str,
        description: &str,
        subnets: &[String],
    ) -> Result<(), RdsError> {
        let p = Self::subnet_group(name, description, subnets);
        self.0.call("ModifyDBSubnetGroup", p).await.map(drop)
    }

    pub async fn delete_db_subnet_group(&self, name: &str) -> Result<(), RdsError> {
        let p = Params::new().with("DBSubnetGroupName", name);
        self.0.call("DeleteDBSubnetGroup", p).await.map(drop)
    }

    /// A resource's tags, by its ARN.
    pub async fn list_tags_for_resource(
        &self,
        arn: &str,
    ) -> Result<Vec<(String, String)>, RdsError> {
        let p = Params::new().with("ResourceName", arn);
        Ok(self
            .0
            .call("ListTagsForResource", p)
            .await?
            .pairs("TagList"))
    }

    pub async fn add_tags_to_resource(
        &self,
        arn: &str,
        tags: &[(String, String)],
    ) -> Result<(), RdsError> {
        let mut p = Params::new().with("ResourceName", arn);
        Self::tags(&mut p, tags);
        self.0.call("AddTagsToResource", p).await.map(drop)
    }

    pub async fn remove_tags_from_resource(
        &self,
        arn: &str,
        keys: &[String],
    ) -> Result<(), RdsError> {
        let mut p = Params::new().with("ResourceName", arn);
        p.list("TagKeys.member", keys.iter().map(String::as_str));
        self.0.call("RemoveTagsFromResource", p).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_follows_rds_s_endpoint_rules() {
        // Cases from the endpoint tests of RDS's rules (as aws-sdk-rds 1.125 ships them).
        let cases = [
            (
                "us-east-1",
                false,
                false,
                "https://rds.us-east-1.amazonaws.com",
            ),
            (
                "us-east-1",
                true,
                false,
                "https://rds-fips.us-east-1.amazonaws.com",
            ),
            (
                "us-east-1",
                true,
                true,
                "https://rds-fips.us-east-1.api.aws",
            ),
            ("us-east-1", false, true, "https://rds.us-east-1.api.aws"),
            (
                "eu-west-1",
                false,
                false,
                "https://rds.eu-west-1.amazonaws.com",
            ),
            (
                "cn-north-1",
                false,
                false,
                "https://rds.cn-north-1.amazonaws.com.cn",
            ),
            (
                "cn-north-1",
                true,
                true,
                "https://rds-fips.cn-north-1.api.amazonwebservices.com.cn",
            ),
            (
                "cn-north-1",
                false,
                true,
                "https://rds.cn-north-1.api.amazonwebservices.com.cn",
            ),
            (
                "us-gov-east-1",
                true,
                false,
                "https://rds.us-gov-east-1.amazonaws.com",
            ),
            (
                "us-gov-east-1",
                true,
                true,
                "https://rds-fips.us-gov-east-1.api.aws",
            ),
            (
                "us-iso-east-1",
                true,
                false,
                "https://rds-fips.us-iso-east-1.c2s.ic.gov",
            ),
            (
                "us-isob-east-1",
                false,
                false,
                "https://rds.us-isob-east-1.sc2s.sgov.gov",
            ),
        ];
        for (region, fips, dual, url) in cases {
            assert_eq!(
                endpoint(region, fips, dual).url,
                url,
                "{region} fips={fips} dual-stack={dual}"
            );
        }
    }

    #[test]
    fn a_cluster_is_read_from_rds_s_answer_with_its_lists_named_by_their_members() {
        let xml = br#"<DescribeDBClustersResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><DescribeDBClustersResult><DBClusters><DBCluster>
<DBClusterIdentifier>agentbus-dev-db</DBClusterIdentifier><Status>available</Status><Engine>aurora-postgresql</Engine><EngineVersion>16.6</EngineVersion>
<StorageEncrypted>true</StorageEncrypted><DatabaseName>agentbus</DatabaseName><MasterUsername>agentbus</MasterUsername>
<MasterUserSecret><SecretArn>arn:aws:secretsmanager:us-east-1:1:secret:rds!cluster-1</SecretArn><SecretStatus>active</SecretStatus></MasterUserSecret>
<DBSubnetGroup>agentbus-dev-db</DBSubnetGroup>
<VpcSecurityGroups><VpcSecurityGroupMembership><VpcSecurityGroupId>sg-1</VpcSecurityGroupId><Status>active</Status></VpcSecurityGroupMembership></VpcSecurityGroups>
<ServerlessV2ScalingConfiguration><MinCapacity>0.5</MinCapacity><MaxCapacity>4.0</MaxCapacity></ServerlessV2ScalingConfiguration>
<BackupRetentionPeriod>7</BackupRetentionPeriod><DeletionProtection>false</DeletionProtection>
<EnabledCloudwatchLogsExports><member>postgresql</member></EnabledCloudwatchLogsExports><CopyTagsToSnapshot>true</CopyTagsToSnapshot>
<TagList><Tag><Key>agentbus:workspace</Key><Value>dev</Value></Tag></TagList>
<DBClusterArn>arn:aws:rds:us-east-1:1:cluster:agentbus-dev-db</DBClusterArn><Endpoint>w.example</Endpoint><ReaderEndpoint>r.example</ReaderEndpoint><Port>5432</Port>
<DBClusterMembers><DBClusterMember><DBInstanceIdentifier>i-1</DBInstanceIdentifier></DBClusterMember></DBClusterMembers>
</DBCluster></DBClusters></DescribeDBClustersResult></DescribeDBClustersResponse>"#;
        let root = tier_xs::query::parse(xml).expect("parses");
        let result = root.child("DescribeDBClustersResult").expect("the result");
        let c = DbCluster::from_node(&result.list("DBClusters")[0]);
        assert_eq!(
            c,
            DbCluster {
                identifier: "agentbus-dev-db".into(),
                arn: "arn:aws:rds:us-east-1:1:cluster:agentbus-dev-db".into(),
                status: "available".into(),
                engine: "aurora-postgresql".into(),
                engine_version: "16.6".into(),
                storage_encrypted: true,
                database_name: Some("agentbus".into()),
                master_username: "agentbus".into(),
                master_user_secret_arn: Some(
                    "arn:aws:secretsmanager:us-east-1:1:secret:rds!cluster-1".into()
                ),
                subnet_group: "agentbus-dev-db".into(),
                security_groups: vec!["sg-1".into()],
                min_acu: Some(0.5),
                max_acu: Some(4.0),
                backup_days: 7,
                deletion_protection: false,
                log_exports: vec!["postgresql".into()],
                copy_tags_to_snapshot: true,
                tags: vec![("agentbus:workspace".into(), "dev".into())],
                endpoint: "w.example".into(),
                reader_endpoint: "r.example".into(),
                port: Some(5432),
            }
        );
    }

    #[test]
    fn a_request_names_rds_s_list_members_as_the_sdk_writes_them() {
        let mut p = Rds::subnet_group("g", "d", &["subnet-1".into(), "subnet-2".into()]);
        Rds::tags(&mut p, &[("k".into(), "v".into())]);
        Rds::security_groups(&mut p, &["sg-1".into()]);
        Rds::scaling(&mut p, (0.5, 4.0));
        assert_eq!(
            p.encode("X", RDS.version),
            "Action=X&Version=2014-10-31&DBSubnetGroupName=g&DBSubnetGroupDescription=d\
             &SubnetIds.SubnetIdentifier.1=subnet-1&SubnetIds.SubnetIdentifier.2=subnet-2\
             &Tags.Tag.1.Key=k&Tags.Tag.1.Value=v\
             &VpcSecurityGroupIds.VpcSecurityGroupId.1=sg-1\
             &ServerlessV2ScalingConfiguration.MinCapacity=0.5\
             &ServerlessV2ScalingConfiguration.MaxCapacity=4"
        );
    }
}
