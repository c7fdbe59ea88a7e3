//! The large tier's own resources: Aurora PostgreSQL Serverless v2 in two availability zones
//! (its subnet group, its security group, the cluster, a writer and a reader), and what the
//! dashboard's server needs to reach it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tier_xs::components::iam::{statement, statement_when};
use tier_xs::components::network::{Ingress, SecurityGroup, Source};
use tier_xs::engine::{Meta, Resource};
use tier_xs::ladder::{Chart, ChartMetric, DashboardSpec, Problem, Scaling};
use tier_xs::workspace::{Tier, Workspace};
use tier_xs::xs::XsSettings;

use crate::components::cluster::{DbCluster, PORT};
use crate::components::instance::DbInstance;
use crate::components::scalable_target::ScalableTarget;
use crate::components::scaling_policy::CpuScalingPolicy;
use crate::components::subnet_group::DbSubnetGroup;

/// The variable naming the workspace's Aurora cluster: the server finds its endpoint and its
/// managed secret by it.
pub const DATABASE_CLUSTER_ENV: &str = "AGENTBUS_DATABASE_CLUSTER";

/// Logical ids of the large tier's resources.
pub mod ids {
    pub const DB_SUBNET_GROUP: &str = "db-subnet-group";
    pub const DB_SECURITY_GROUP: &str = "db-security-group";
    pub const DB_CLUSTER: &str = "db-cluster";
    pub const DB_WRITER: &str = "db-writer";
    pub const DB_READER: &str = "db-reader";
    pub const DASHBOARD_SCALING_TARGET: &str = "dashboard-scaling-target";
    pub const DASHBOARD_SCALING_POLICY: &str = "dashboard-scaling-policy";
    pub const DB_CAPACITY_ALARM: &str = "db-capacity-alarm";
    pub const DASHBOARD_SATURATED_ALARM: &str = "dashboard-saturated-alarm";
}

/// The share of the database's most capacity that, held for 15 minutes, raises its alarm.
pub const DB_CAPACITY_ALARM_SHARE: f64 = 0.9;
/// The dashboard's average CPU that, held for 15 minutes while the autoscaler aims at
/// [`DASHBOARD_CPU_TARGET`], means it cannot add tasks (at its most, or they fail to start).
pub const DASHBOARD_SATURATED_CPU: f64 = 85.0;

/// The database's capacity, in Aurora capacity units (about 2 GiB of memory each).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LargeSettings {
    pub min_acu: f64,
    pub max_acu: f64,
    /// The dashboard's task count, which the autoscaler keeps between these.
    pub min_tasks: u32,
    pub max_tasks: u32,
}

/// Two dashboard tasks at least, one in each of the two zones the service spans (ECS spreads
/// a service's tasks across zones), so one zone's outage leaves the dashboard up.
pub const DEFAULT_MIN_TASKS: u32 = 2;
pub const DEFAULT_MAX_TASKS: u32 = 6;
/// The average CPU the autoscaler keeps the dashboard at: headroom for a burst while a new
/// task starts (about a minute on Fargate).
pub const DASHBOARD_CPU_TARGET: f64 = 60.0;

/// The minimum: 1 ACU (about 2 GiB) holds the default memory quota's HNSW index in memory —
/// 100,000 vectors of 384 dimensions are about 150 MB with their graph — beside PostgreSQL's
/// own needs; 0.5 ACU (1 GiB) leaves the buffer cache too small and search latency doubles
/// when the index falls out of it (measured with pgvector's defaults at 128 MB of cache).
pub const DEFAULT_MIN_ACU: f64 = 1.0;
pub const DEFAULT_MAX_ACU: f64 = 8.0;

impl Default for LargeSettings {
    fn default() -> Self {
        LargeSettings {
            min_acu: DEFAULT_MIN_ACU,
            max_acu: DEFAULT_MAX_ACU,
            min_tasks: DEFAULT_MIN_TASKS,
            max_tasks: DEFAULT_MAX_TASKS,
        }
    }
}

/// The large tier's own resources (without the lower tiers').
pub struct LargeOwn {
    pub resources: Vec<Arc<dyn Resource>>,
    pub problems: Vec<Problem>,
    cluster: String,
    /// The dashboard's task count bounds, handed to the autoscaler.
    scaling: Scaling,
}

/// The subnets' zones, the first two (in zone order), each with its first subnet.
fn two_zones(subnets: &[String], zones: &BTreeMap<String, String>) -> Vec<String> {
    tier_small::tier::alb_subnets(subnets, zones)
        .iter()
        .filter_map(|s| zones.get(s).cloned())
        .collect()
}

impl LargeOwn {
    pub fn new(ws: &Workspace, xs: &XsSettings, settings: &LargeSettings) -> Self {
        let t = Tier::Large;
        let tags = |c: &str| ws.tags(t, c);
        let name = ws.name("db");
        let mut problems = Vec::new();
        if settings.min_acu < 0.5 || settings.max_acu > 256.0 || settings.min_acu > settings.max_acu
        {
            problems.push(Problem::new(format!(
                "the database's capacity {}-{} ACU is not a range Aurora Serverless v2 takes: 0.5 to 256, the minimum not above the maximum",
                settings.min_acu, settings.max_acu
            )));
        }
        let zones = two_zones(&xs.network.subnet_ids, &xs.network.zones);
        if zones.len() < 2 && !xs.network.zones.is_empty() {
            problems.push(Problem::when_changing(
                ids::DB_SUBNET_GROUP,
                "the large tier's database runs in two availability zones: the workspace's subnets are in one (pass --subnet in a second zone)",
            ));
        }
        let zone = |i: usize| zones.get(i).cloned().unwrap_or_default();
        let prod = ws.env.is_prod();
        let mut resources: Vec<Arc<dyn Resource>> = vec![
            Arc::new(DbSubnetGroup {
                meta: Meta::new(ids::DB_SUBNET_GROUP, t, name.clone(), tags("db")),
                description: format!("agentbus {} database", ws.env),
                subnet_ids: xs.network.subnet_ids.clone(),
            }),
            Arc::new(SecurityGroup {
                meta: Meta::new(ids::DB_SECURITY_GROUP, t, name.clone(), tags("db")),
                description: format!(
                    "agentbus {} database: PostgreSQL from the server and the agents only",
                    ws.env
                ),
                vpc_id: xs.network.vpc_id.clone(),
                rules: vec![
                    Ingress {
                        port: PORT,
                        source: Source::Group(tier_xs::xs::ids::DASHBOARD_SECURITY_GROUP),
                    },
                    Ingress {
                        port: PORT,
                        source: Source::Group(tier_medium::tier::ids::AGENTS_SECURITY_GROUP),
                    },
                ],
                outbound_only: None,
                holds_data: true,
            }),
            Arc::new(DbCluster {
                meta: Meta::new(ids::DB_CLUSTER, t, name.clone(), tags("db")),
                subnet_group: ids::DB_SUBNET_GROUP,
                security_group: ids::DB_SECURITY_GROUP,
                min_acu: settings.min_acu,
                max_acu: settings.max_acu,
                backup_days: if prod { 14 } else { 7 },
                protect: prod,
            }),
            Arc::new(DbInstance {
                meta: Meta::new(ids::DB_WRITER, t, format!("{name}-1"), tags("db")),
                cluster: ids::DB_CLUSTER,
                zone: zone(0),
                promotion_tier: 0,
                min_acu: settings.min_acu,
                writer: true,
            }),
            Arc::new(DbInstance {
                meta: Meta::new(ids::DB_READER, t, format!("{name}-2"), tags("db")),
                cluster: ids::DB_CLUSTER,
                zone: zone(1),
                promotion_tier: 1,
                min_acu: settings.min_acu,
                writer: false,
            }),
        ];
        if settings.min_tasks < 1 || settings.min_tasks > settings.max_tasks {
            problems.push(Problem::new(format!(
                "the dashboard's task count {}-{} is not a range: at least 1, the minimum not above the maximum",
                settings.min_tasks, settings.max_tasks
            )));
        }
        let service = ws.name("dashboard");
        resources.push(Arc::new(ScalableTarget {
            meta: Meta::new(
                ids::DASHBOARD_SCALING_TARGET,
                t,
                service.clone(),
                tags("dashboard"),
            ),
            cluster: ws.id(),
            service,
            service_id: tier_xs::xs::ids::DASHBOARD_SERVICE,
            min: settings.min_tasks,
            max: settings.max_tasks,
        }));
        resources.push(Arc::new(CpuScalingPolicy {
            meta: Meta::new(
                ids::DASHBOARD_SCALING_POLICY,
                t,
                ws.name("dashboard-cpu"),
                Vec::new(),
            ),
            target_id: ids::DASHBOARD_SCALING_TARGET,
            cpu_percent: DASHBOARD_CPU_TARGET,
            scale_out_cooldown: 60,
            scale_in_cooldown: 300,
        }));
        resources.extend(alarms(ws, &name, settings));
        LargeOwn {
            resources,
            problems,
            cluster: name,
            scaling: Scaling {
                min: settings.min_tasks,
                max: settings.max_tasks,
            },
        }
    }

    /// What the server needs: the cluster's name, and the rights to look it up and read the
    /// password RDS manages for it (that secret, found by the tag RDS gives it).
    pub fn shape_dashboard(&self, ws: &Workspace, spec: &mut DashboardSpec) {
        // The autoscaler owns the running count: the deploy starts the minimum and leaves it.
        spec.scale_with(self.scaling);
        spec.charts.extend(charts(ws, &self.cluster));
        spec.env
            .push((DATABASE_CLUSTER_ENV.to_string(), self.cluster.clone()));
        let cluster = ws.arn("rds", &format!("cluster:{}", self.cluster));
        spec.task_statements.push(statement(
            &["rds:DescribeDBClusters"],
            std::slice::from_ref(&cluster),
        ));
        spec.task_statements.push(statement_when(
            &["secretsmanager:GetSecretValue"],
            &[ws.arn("secretsmanager", "secret:rds!cluster-*")],
            serde_json::json!({"StringEquals": {"secretsmanager:ResourceTag/aws:rds:primaryDBClusterArn": cluster}}),
        ));
    }
}

/// The large tier's own alarms, to the workspace's alerts topic: the database near its most
/// capacity, and the dashboard busier than its autoscaler can help.
fn alarms(ws: &Workspace, cluster: &str, settings: &LargeSettings) -> Vec<Arc<dyn Resource>> {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
    use tier_medium::components::alarm::{Alarm, Metric};
    let t = Tier::Large;
    let alarm = |id, component: &str, metric, threshold, description| -> Arc<dyn Resource> {
        Arc::new(Alarm {
            meta: Meta::new(id, t, ws.name(component), ws.tags(t, "alerts")),
            metric,
            description,
            period_seconds: 300,
            evaluation_periods: 3,
            threshold,
            comparison: ComparisonOperator::GreaterThanOrEqualToThreshold,
            treat_missing_data: "notBreaching",
            topic_id: tier_medium::tier::ids::ALERTS_TOPIC,
        })
    };
    let near = settings.max_acu * DB_CAPACITY_ALARM_SHARE;
    vec![
        alarm(
            ids::DB_CAPACITY_ALARM,
            "db-capacity",
            Metric::new("AWS/RDS", "ServerlessDatabaseCapacity", Statistic::Average)
                .dim("DBClusterIdentifier", cluster),
            near,
            format!(
                "The database has run at {near} ACU or more (of its most, {}) for 15 minutes: memory searches and writes slow down. Raise --db-max-acu (deploy large), or find the load in the database's CloudWatch metrics.",
                settings.max_acu
            ),
        ),
        alarm(
            ids::DASHBOARD_SATURATED_ALARM,
            "dashboard-saturated",
            Metric::new("AWS/ECS", "CPUUtilization", Statistic::Average)
                .dim("ClusterName", ws.id())
                .dim("ServiceName", ws.name("dashboard")),
            DASHBOARD_SATURATED_CPU,
            format!(
                "The dashboard's tasks have averaged {DASHBOARD_SATURATED_CPU} % CPU or more for 15 minutes although the autoscaler aims at {DASHBOARD_CPU_TARGET} %: it is at its most tasks ({}) or new tasks fail to start. Raise --dashboard-max-tasks (deploy large), or read the service's events.",
                settings.max_tasks
            ),
        ),
    ]
}

/// What the large tier adds to the workspace's CloudWatch dashboard: the database's capacity
/// and connections, and the dashboard service's CPU and memory (what its alarms watch).
fn charts(ws: &Workspace, cluster: &str) -> Vec<Chart> {
    let metric =
        |namespace: &str, name: &str, dimensions: &[(&str, String)], statistic: &str| ChartMetric {
            namespace: namespace.into(),
            name: name.into(),
            dimensions: dimensions
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            statistic: statistic.into(),
        };
    let db = [("DBClusterIdentifier", cluster.to_string())];
    let service = [
        ("ClusterName", ws.id()),
        ("ServiceName", ws.name("dashboard")),
    ];
    vec![
        Chart {
            title: "Database capacity (ACU) and connections".into(),
            metrics: vec![
                metric("AWS/RDS", "ServerlessDatabaseCapacity", &db, "Average"),
                metric("AWS/RDS", "DatabaseConnections", &db, "Maximum"),
            ],
            period: 300,
        },
        Chart {
            title: "Dashboard tasks' CPU (%) and memory (%)".into(),
            metrics: vec![
                metric("AWS/ECS", "CPUUtilization", &service, "Average"),
                metric("AWS/ECS", "MemoryUtilization", &service, "Average"),
            ],
            period: 300,
        },
    ]
}
