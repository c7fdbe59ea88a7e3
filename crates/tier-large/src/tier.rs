//! The large tier's own resources: Aurora PostgreSQL Serverless v2 in two availability zones
//! (its subnet group, its security group, the cluster, a writer and a reader), and what the
//! dashboard's server needs to reach it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tier_xs::components::iam::{statement, statement_when};
use tier_xs::components::logs::{LogGroup, LogSource};
use tier_xs::components::network::{Ingress, SecurityGroup, Source};
use tier_xs::engine::{Meta, Resource};
use tier_xs::ladder::{Chart, ChartMetric, DashboardSpec, LogChart, Problem, Scaling};
use tier_xs::workspace::{Tier, Workspace};
use tier_xs::xs::XsSettings;

use crate::components::cluster::{DbCluster, PORT};
use crate::components::instance::DbInstance;
use crate::components::scalable_target::{ScalableTarget, Scaled};
use crate::components::scaling_policy::{Tracked, TrackingPolicy};
use crate::components::subnet_group::DbSubnetGroup;
use crate::components::transaction_search::TransactionSearch;
use crate::cost::LargeUsage;

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
    pub const DASHBOARD_REQUESTS_POLICY: &str = "dashboard-requests-policy";
    pub const DB_CAPACITY_ALARM: &str = "db-capacity-alarm";
    pub const DASHBOARD_SATURATED_ALARM: &str = "dashboard-saturated-alarm";
    pub const DB_REPLICA_LAG_ALARM: &str = "db-replica-lag-alarm";
    pub const DB_CONNECTIONS_ALARM: &str = "db-connections-alarm";
    pub const DB_MEMORY_ALARM: &str = "db-memory-alarm";
    pub const EMBEDDING_ERRORS_ALARM: &str = "embedding-errors-alarm";
    pub const MEMORY_SEARCH_ALARM: &str = "memory-search-alarm";
    pub const SERVER_METRICS_LOG_GROUP: &str = "server-metrics-log-group";
    pub const DB_READER_SCALING_TARGET: &str = "db-reader-scaling-target";
    pub const DB_READER_SCALING_POLICY: &str = "db-reader-scaling-policy";
    pub const TRANSACTION_SEARCH: &str = "transaction-search";
}

/// Days the server's EMF documents are kept (CloudWatch has taken the metrics out of them
/// at ingestion; the documents stay for Logs Insights).
pub const METRICS_LOG_DAYS: i32 = 7;

/// The reader's lag behind the writer (ms) that, held for 15 minutes, raises its alarm:
/// searches on the reader would miss recent writes for that long.
pub const DB_REPLICA_LAG_MS: f64 = 1000.0;
/// The share of the database's most connections (at its most capacity) that raises the
/// connections alarm.
pub const DB_CONNECTIONS_SHARE: f64 = 0.8;
/// The share of the database's memory at its most capacity that, left free for 15 minutes
/// or less, raises the memory alarm.
pub const DB_FREE_MEMORY_SHARE: f64 = 0.1;
/// Failed embedding requests in five minutes, three times running, that raise an alarm.
pub const EMBEDDING_ERRORS: f64 = 5.0;
/// A memory search's average time (ms, the store's part) that, held for 15 minutes, raises
/// an alarm: the HNSW index no longer fits in memory, or a tenant's plan went wrong.
pub const MEMORY_SEARCH_MS: f64 = 250.0;

/// Bytes of memory per ACU (Aurora: about 2 GiB).
const ACU_BYTES: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0;

/// Aurora PostgreSQL's default `max_connections` at a capacity: LEAST(memory / 9,531,392, 5000).
fn max_connections(acu: f64) -> f64 {
    (acu * ACU_BYTES / 9_531_392.0).floor().min(5000.0)
}

/// The log group the server sends its metrics to.
pub fn metrics_log_group(ws: &Workspace) -> String {
    format!("/agentbus/{}/metrics", ws.id())
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
    /// The most readers the database's autoscaler may run (the deployed one included); 0:
    /// no reader scaling (the default).
    pub max_readers: u32,
    /// Turn CloudWatch Transaction Search on (account-wide) so the server's traces are kept.
    pub transaction_search: bool,
}

/// Two dashboard tasks at least, one in each of the two zones the service spans (ECS spreads
/// a service's tasks across zones), so one zone's outage leaves the dashboard up.
pub const DEFAULT_MIN_TASKS: u32 = 2;
pub const DEFAULT_MAX_TASKS: u32 = 6;
/// The average CPU the autoscaler keeps the dashboard at: headroom for a burst while a new
/// task starts (about a minute on Fargate).
pub const DASHBOARD_CPU_TARGET: f64 = 60.0;
/// The requests a minute each dashboard task gets from the load balancer that the autoscaler
/// keeps (500 a second). On AWS a tool call mostly waits on DynamoDB, S3 or the database, so
/// a task can be slow while its CPU is low; this bounds its latency by load instead. A 0.25
/// vCPU task serves about 1,000 calls a second of the server's own work (the MCP benchmark,
/// scaled to a quarter core): half of that leaves room for a burst while a task starts.
pub const DASHBOARD_REQUESTS_PER_TASK: f64 = 30_000.0;

/// The minimum: 1 ACU (about 2 GiB) holds the default memory quota's HNSW index in memory —
/// 100,000 vectors of 384 dimensions are about 150 MB with their graph — beside PostgreSQL's
/// own needs; 0.5 ACU (1 GiB) leaves the buffer cache too small and search latency doubles
/// when the index falls out of it (measured with pgvector's defaults at 128 MB of cache).
pub const DEFAULT_MIN_ACU: f64 = 1.0;
/// The readers' average CPU the database's autoscaler keeps, when it runs: a reader added at
/// 70 % takes minutes to start, so searches on the others have room meanwhile.
pub const DB_READER_CPU_TARGET: f64 = 70.0;
/// Readers Aurora takes in a cluster at most (15 Aurora Replicas).
pub const MOST_READERS: u32 = 15;
pub const DEFAULT_MAX_ACU: f64 = 8.0;

impl Default for LargeSettings {
    fn default() -> Self {
        LargeSettings {
            min_acu: DEFAULT_MIN_ACU,
            max_acu: DEFAULT_MAX_ACU,
            min_tasks: DEFAULT_MIN_TASKS,
            max_tasks: DEFAULT_MAX_TASKS,
            max_readers: 0,
            transaction_search: false,
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
            scaled: Scaled::EcsService {
                cluster: ws.id(),
                service,
                resource: tier_xs::xs::ids::DASHBOARD_SERVICE,
            },
            min: settings.min_tasks,
            max: settings.max_tasks,
            enabled: true,
        }));
        let policy =
            |id, target_id, name: &str, metric, target, out, enabled| -> Arc<dyn Resource> {
                Arc::new(TrackingPolicy {
                    meta: Meta::new(id, t, ws.name(name), Vec::new()),
                    target_id,
                    metric,
                    target,
                    scale_out_cooldown: out,
                    scale_in_cooldown: 300,
                    enabled,
                })
            };
        resources.push(policy(
            ids::DASHBOARD_SCALING_POLICY,
            ids::DASHBOARD_SCALING_TARGET,
            "dashboard-cpu",
            Tracked::ServiceCpu,
            DASHBOARD_CPU_TARGET,
            60,
            true,
        ));
        resources.push(policy(
            ids::DASHBOARD_REQUESTS_POLICY,
            ids::DASHBOARD_SCALING_TARGET,
            "dashboard-requests",
            Tracked::RequestsPerTarget {
                load_balancer_id: tier_small::tier::ids::LOAD_BALANCER,
                target_group_id: tier_small::tier::ids::TARGET_GROUP,
            },
            DASHBOARD_REQUESTS_PER_TASK,
            60,
            true,
        ));
        // Reader scaling, when asked for: the deployed reader counts, so the autoscaler keeps
        // at least that one and adds up to the most asked.
        if settings.max_readers == 1 || settings.max_readers > MOST_READERS {
            problems.push(Problem::new(format!(
                "--db-max-readers {}: 0 (no reader scaling) or 2 to {MOST_READERS} (the deployed reader and those the autoscaler may add)",
                settings.max_readers
            )));
        }
        // Always in the universe, so that turning it off removes it.
        let readers = settings.max_readers > 1;
        resources.push(Arc::new(ScalableTarget {
            meta: Meta::new(ids::DB_READER_SCALING_TARGET, t, name.clone(), tags("db")),
            scaled: Scaled::AuroraReaders {
                cluster: name.clone(),
                resource: ids::DB_READER,
            },
            min: 1,
            max: settings.max_readers.clamp(1, MOST_READERS),
            enabled: readers,
        }));
        // A reader takes minutes to start: no second one for five minutes.
        resources.push(policy(
            ids::DB_READER_SCALING_POLICY,
            ids::DB_READER_SCALING_TARGET,
            "db-readers-cpu",
            Tracked::ReaderCpu,
            DB_READER_CPU_TARGET,
            300,
            readers,
        ));
        resources.push(Arc::new(TransactionSearch {
            meta: Meta::new(
                ids::TRANSACTION_SEARCH,
                t,
                format!("account {} in {}", ws.account, ws.region),
                Vec::new(),
            ),
            enable: settings.transaction_search,
            policy: TransactionSearch::policy(ws).to_string(),
        }));
        resources.push(Arc::new(LogGroup {
            meta: Meta::new(
                ids::SERVER_METRICS_LOG_GROUP,
                t,
                metrics_log_group(ws),
                tags("dashboard"),
            ),
            source: LogSource::Emf(LargeUsage::server_metrics),
            retention_days: METRICS_LOG_DAYS,
            arn_prefix: ws.arn("logs", "log-group:"),
            // The metrics are in CloudWatch; the documents are kept only for queries.
            holds_data: false,
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
        spec.log_charts.extend(log_charts(ws));
        // The server's own metrics, as EMF documents in a log group of their own.
        let group = metrics_log_group(ws);
        spec.env.push((
            tier_xs::config::ENV_METRICS_LOG_GROUP.to_string(),
            group.clone(),
        ));
        spec.task_statements.push(statement(
            &["logs:CreateLogStream", "logs:PutLogEvents"],
            &[ws.arn("logs", &format!("log-group:{group}:*"))],
        ));
        // Its traces, to CloudWatch's OTLP endpoint when the account keeps them: the server
        // asks X-Ray where spans go, and sends them (authorized as PutTraceSegments). Neither
        // action takes a resource (Service Authorization Reference, AWS X-Ray).
        spec.task_statements.push(statement(
            &["xray:GetTraceSegmentDestination", "xray:PutTraceSegments"],
            &["*".to_string()],
        ));
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
/// capacity, connections or memory, its reader lagging; the dashboard busier than its
/// autoscaler can help; and the server's own metrics (embeddings failing, memory searches
/// slow). Each says what to do.
fn alarms(ws: &Workspace, cluster: &str, settings: &LargeSettings) -> Vec<Arc<dyn Resource>> {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
    use tier_medium::components::alarm::{Alarm, Metric};
    let t = Tier::Large;
    let above = || ComparisonOperator::GreaterThanOrEqualToThreshold;
    let alarm =
        |id, component: &str, metric, threshold, comparison, description| -> Arc<dyn Resource> {
            Arc::new(Alarm {
                meta: Meta::new(id, t, ws.name(component), ws.tags(t, "alerts")),
                metric,
                description,
                period_seconds: 300,
                evaluation_periods: 3,
                threshold,
                comparison,
                treat_missing_data: "notBreaching",
                topic_id: tier_medium::tier::ids::ALERTS_TOPIC,
            })
        };
    let near = settings.max_acu * DB_CAPACITY_ALARM_SHARE;
    let connections = (max_connections(settings.max_acu) * DB_CONNECTIONS_SHARE).floor();
    let free_bytes = settings.max_acu * ACU_BYTES * DB_FREE_MEMORY_SHARE;
    let own = |name: &'static str, statistic| {
        Metric::new(tier_xs::metrics::NAMESPACE, name, statistic)
            .dim(tier_xs::metrics::WORKSPACE_DIMENSION, ws.id())
    };
    vec![
        alarm(
            ids::DB_CAPACITY_ALARM,
            "db-capacity",
            Metric::new("AWS/RDS", "ServerlessDatabaseCapacity", Statistic::Average)
                .dim("DBClusterIdentifier", cluster),
            near,
            above(),
            format!(
                "The database has run at {near} ACU or more (of its most, {}) for 15 minutes: memory searches and writes slow down. Raise --db-max-acu (deploy large), or find the load in the database's CloudWatch metrics.",
                settings.max_acu
            ),
        ),
        alarm(
            ids::DB_CONNECTIONS_ALARM,
            "db-connections",
            Metric::new("AWS/RDS", "DatabaseConnections", Statistic::Maximum)
                .dim("DBClusterIdentifier", cluster),
            connections,
            above(),
            format!(
                "The database has held {connections} connections or more for 15 minutes, {} % of the most it takes at {} ACU: new connections will be refused. Look for a task leaking connections; Raise --db-max-acu (deploy large) for more.",
                DB_CONNECTIONS_SHARE * 100.0,
                settings.max_acu
            ),
        ),
        alarm(
            ids::DB_MEMORY_ALARM,
            "db-memory",
            Metric::new("AWS/RDS", "FreeableMemory", Statistic::Minimum)
                .dim("DBClusterIdentifier", cluster),
            free_bytes,
            ComparisonOperator::LessThanOrEqualToThreshold,
            format!(
                "The database has had {} % or less of its memory at {} ACU free for 15 minutes: the vector index may no longer stay in memory, and searches slow down. Raise --db-max-acu (deploy large).",
                DB_FREE_MEMORY_SHARE * 100.0,
                settings.max_acu
            ),
        ),
        alarm(
            ids::DB_REPLICA_LAG_ALARM,
            "db-replica-lag",
            Metric::new("AWS/RDS", "AuroraReplicaLagMaximum", Statistic::Maximum)
                .dim("DBClusterIdentifier", cluster),
            DB_REPLICA_LAG_MS,
            above(),
            format!(
                "The database's reader has lagged the writer by {DB_REPLICA_LAG_MS} ms or more for 15 minutes: a failover would lose that much, and reads there miss recent writes. The reader's minimum capacity may be too small for the writes (it follows the writer's minimum, --db-min-acu)."
            ),
        ),
        alarm(
            ids::DASHBOARD_SATURATED_ALARM,
            "dashboard-saturated",
            Metric::new("AWS/ECS", "CPUUtilization", Statistic::Average)
                .dim("ClusterName", ws.id())
                .dim("ServiceName", ws.name("dashboard")),
            DASHBOARD_SATURATED_CPU,
            above(),
            format!(
                "The dashboard's tasks have averaged {DASHBOARD_SATURATED_CPU} % CPU or more for 15 minutes although the autoscaler aims at {DASHBOARD_CPU_TARGET} %: it is at its most tasks ({}) or new tasks fail to start. Raise --dashboard-max-tasks (deploy large), or read the service's events.",
                settings.max_tasks
            ),
        ),
        alarm(
            ids::EMBEDDING_ERRORS_ALARM,
            "embedding-errors",
            own(crate::memory::names::EMBEDDING_ERRORS, Statistic::Sum),
            EMBEDDING_ERRORS,
            above(),
            format!(
                "{EMBEDDING_ERRORS} or more embedding requests a five minutes have failed for 15 minutes: memory_put and memory_search fail. The server's log names the provider's error (model access not granted in Bedrock, a quota, an endpoint down)."
            ),
        ),
        alarm(
            ids::MEMORY_SEARCH_ALARM,
            "memory-search-slow",
            own(
                crate::memory::names::MEMORY_SEARCH_LATENCY,
                Statistic::Average,
            ),
            MEMORY_SEARCH_MS,
            above(),
            format!(
                "Memory searches have taken {MEMORY_SEARCH_MS} ms or more on average for 15 minutes (the database's part): the vector index may have outgrown the database's memory. See the database alarms, or raise --db-min-acu (deploy large)."
            ),
        ),
    ]
}

/// What the large tier adds to the workspace's CloudWatch dashboard: the database (capacity,
/// connections, free memory, replica lag), the dashboard service's CPU and memory (what its
/// alarms watch), and the server's own metrics (tool calls, memory search, embeddings).
fn charts(ws: &Workspace, cluster: &str) -> Vec<Chart> {
    use crate::memory::names as memory;
    use tier_xs::metrics::{NAMESPACE, WORKSPACE_DIMENSION, names};
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
    let own = [(WORKSPACE_DIMENSION, ws.id())];
    let chart = |title: &str, metrics| Chart {
        title: title.into(),
        metrics,
        period: 300,
    };
    vec![
        chart(
            "Database capacity (ACU) and connections",
            vec![
                metric("AWS/RDS", "ServerlessDatabaseCapacity", &db, "Average"),
                metric("AWS/RDS", "DatabaseConnections", &db, "Maximum"),
            ],
        ),
        chart(
            "Database free memory (bytes) and replica lag (ms)",
            vec![
                metric("AWS/RDS", "FreeableMemory", &db, "Minimum"),
                metric("AWS/RDS", "AuroraReplicaLagMaximum", &db, "Maximum"),
            ],
        ),
        chart(
            "Dashboard tasks' CPU (%) and memory (%)",
            vec![
                metric("AWS/ECS", "CPUUtilization", &service, "Average"),
                metric("AWS/ECS", "MemoryUtilization", &service, "Average"),
            ],
        ),
        chart(
            "Tool calls: latency (ms, p50 and p99) and errors",
            vec![
                metric(NAMESPACE, names::TOOL_LATENCY, &own, "p50"),
                metric(NAMESPACE, names::TOOL_LATENCY, &own, "p99"),
                metric(NAMESPACE, names::TOOL_ERRORS, &own, "Sum"),
            ],
        ),
        chart(
            "Memory search and embeddings (ms, p99)",
            vec![
                metric(NAMESPACE, memory::MEMORY_SEARCH_LATENCY, &own, "p99"),
                metric(NAMESPACE, memory::EMBEDDING_LATENCY, &own, "p99"),
                metric(NAMESPACE, memory::POOL_WAIT, &own, "p99"),
            ],
        ),
        chart(
            "Memory search rows and embedding errors",
            vec![
                metric(NAMESPACE, memory::MEMORY_SEARCH_ROWS, &own, "Sum"),
                metric(NAMESPACE, memory::EMBEDDING_ERRORS, &own, "Sum"),
            ],
        ),
    ]
}

/// Logs Insights tables over the server's JSON log lines: its slow tool calls and its errors,
/// each with the trace id that finds every line of the request.
fn log_charts(ws: &Workspace) -> Vec<LogChart> {
    let server = vec![tier_xs::xs::dashboard_log_group(ws)];
    vec![
        LogChart {
            title: "Slow tool calls (1 s or more)".into(),
            log_groups: server.clone(),
            query: "fields @timestamp, tool, elapsed_ms, failed, trace_id | filter message = 'slow tool call' | sort elapsed_ms desc | limit 20".into(),
        },
        LogChart {
            title: "Server errors".into(),
            log_groups: server,
            query: "fields @timestamp, message, span.trace_id | filter level = 'ERROR' | sort @timestamp desc | limit 50".into(),
        },
    ]
}
