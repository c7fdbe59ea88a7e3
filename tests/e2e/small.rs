//! The small tier against moto: an extra-small workspace with data upgraded to small (only
//! additions and the dashboard's in-place changes; data intact), the new resources as
//! specified, and the downgrade back to extra-small keeping buckets and tables with their data.

use tier_small::aws::SmallAws;

use serde_json::Value;
use tier_small::config::{ENV_WEBHOOKS_ANYWHERE, SmallConfig};
use tier_small::monitoring;
use tier_small::runtime::artifacts::{
    ArtifactStore, MAX_INLINE_BYTES, MAX_UPLOAD_BYTES, S3Artifacts, Transfer,
};
use tier_small::runtime::conformance::monitor_suite;
use tier_small::runtime::conformance::{artifacts_suite, timeline_suite};
use tier_small::runtime::monitor::dynamo::DynamoEventStore;
use tier_small::runtime::monitor::{EventQuery, Monitor};
use tier_small::runtime::timeline::S3Timeline;
use tier_xs::config::ServerConfig;
use tier_xs::runtime::kv::{DynamoKv, KvStore, Ttl};
use tier_xs::runtime::secrets::{AwsSecrets, SecretStore};
use tier_xs::runtime::{RuntimeError, Tenant};
use tier_xs::workspace::{Env, Tier, Workspace};

use crate::harness::{actions, agentbus, assert_absent, clients, deploy_xs, unique_env};
use crate::server::{serve_on_aws, serve_on_aws_logging, small_client};

/// A plain HTTP/1.1 PUT to a URL on 127.0.0.1 (a presigned URL of the emulator); the status.
fn http_put(url: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let head = format!(
        "PUT /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The load balancer's resources (the HTTPS listener only with a certificate).
const ALB_IDS: [&str; 4] = [
    "alb-security-group",
    "load-balancer",
    "target-group",
    "http-listener",
];

/// The small tier's data: kept by a downgrade.
const SMALL_IDS: [&str; 6] = [
    "artifacts-bucket",
    "timeline-bucket",
    "events-table",
    "subscriptions-table",
    "event-rules-table",
    "events-dead-letter-queue",
];

/// What feeds the monitor: removed by a downgrade (nothing would drain the queue).
const FEED_IDS: [&str; 2] = ["events-queue", "monitor-rule"];

#[tokio::test]
async fn xs_upgrades_to_small_and_back_without_losing_data() {
    let env = unique_env("sm");
    deploy_xs(&env);
    let aws = clients().await;
    let ws = Workspace::new(Env::new(&env).unwrap(), "123456789012", "us-east-1");
    let cfg = ServerConfig::for_workspace(&ws, Tier::ExtraSmall);
    let small = SmallConfig::for_workspace(&ws);
    let acme = Tenant::new("acme").unwrap();

    // Data in the extra-small workspace: KV entries and a tenant secret.
    let kv = DynamoKv::new(aws.dynamodb(), &cfg.kv_table);
    for i in 0..3 {
        kv.set(
            &acme,
            &format!("k{i}"),
            &format!("v{i}"),
            Ttl::Seconds(86_400),
        )
        .await
        .unwrap();
    }
    let secrets = AwsSecrets::new(aws.secrets(), &ws);
    secrets.put(&acme, "api-key", "s3cr3t-value").await.unwrap();

    // The upgrade plan: the small resources are created; the rest is in place.
    let cidr = ["--allow-cidr", "203.0.113.0/24"];
    let p = agentbus(&[&["plan", "small", "--env", &env, "--json"][..], &cidr].concat());
    assert_eq!(p.code, 0, "{p:?}");
    let a = actions(&p.json()["plan"]);
    for id in SMALL_IDS.iter().chain(&ALB_IDS).chain(&FEED_IDS) {
        assert_eq!(a.get(*id).map(String::as_str), Some("create"), "{a:?}");
    }
    assert!(
        !a.contains_key("https-listener"),
        "no certificate, no HTTPS: {a:?}"
    );
    // Without a certificate the plan warns that tokens would cross the internet in clear text.
    let notes = p.json()["plan"]["notes"].to_string();
    assert!(
        notes.contains("WARNING: no --certificate-arn: the load balancer serves plain HTTP"),
        "{notes}"
    );
    // Creating the buckets turns their versioning on, which S3 takes a while to settle.
    for bucket in ["artifacts-bucket", "timeline-bucket"] {
        let change = p.json()["plan"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == bucket)
            .unwrap()
            .clone();
        let settles = serde_json::json!(tier_small::components::bucket::VERSIONING_SETTLES);
        assert!(
            change["notes"].as_array().unwrap().contains(&settles),
            "{change}"
        );
    }
    // In place: the dashboard task (new names, tier), its role (rights to the new
    // resources), the service (the new revision, the target group), its security group
    // (now only the load balancer), and the budget, which follows the tier's monthly target
    // unless --budget-usd set one.
    for (id, action) in &a {
        if !SMALL_IDS.contains(&id.as_str())
            && !ALB_IDS.contains(&id.as_str())
            && !FEED_IDS.contains(&id.as_str())
        {
            assert_eq!(
                action, "update",
                "{id}: only in-place changes to xs ({a:?})"
            );
            assert!(
                [
                    "dashboard-task-definition",
                    "dashboard-service",
                    "dashboard-task-role",
                    "dashboard-security-group",
                    "budget"
                ]
                .contains(&id.as_str()),
                "{id} should not change: {a:?}"
            );
        }
    }
    let r = agentbus(&[
        "deploy",
        "small",
        "--env",
        &env,
        "--yes",
        "--wait-timeout",
        "60",
        cidr[0],
        cidr[1],
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let again = agentbus(&["plan", "small", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "converged: {again:?}");
    // The dashboard's task definition got a new revision; the old one is not kept.
    let family = format!("agentbus-{env}-dashboard");
    for status in [
        aws_sdk_ecs::types::TaskDefinitionStatus::Active,
        aws_sdk_ecs::types::TaskDefinitionStatus::Inactive,
    ] {
        let listed = aws
            .ecs()
            .list_task_definitions()
            .family_prefix(&family)
            .status(status.clone())
            .send()
            .await
            .unwrap();
        let n = listed
            .task_definition_arns()
            .iter()
            .filter(|a| a.contains(&format!("/{family}:")))
            .count();
        let want = usize::from(status == aws_sdk_ecs::types::TaskDefinitionStatus::Active);
        assert_eq!(n, want, "{status:?} revisions: {listed:?}");
    }

    check_load_balancer(&aws, &env).await;
    // status says where the dashboard answers: the load balancer.
    let st = agentbus(&["status", "--env", &env, "--json"]).json();
    let dns = dashboard_balancer(&aws, &env)
        .await
        .dns_name()
        .unwrap()
        .to_string();
    assert_eq!(st["dashboard_url"], format!("http://{dns}/"), "{st}");
    check_https(&aws, &env).await;

    // The data came through.
    for i in 0..3 {
        let e = kv.get(&acme, &format!("k{i}")).await.unwrap().unwrap();
        assert_eq!(e.value, format!("v{i}"));
    }
    assert_eq!(
        secrets.read(&acme, "api-key").await.unwrap().as_deref(),
        Some("s3cr3t-value")
    );

    // The buckets as specified.
    // Lifecycles as the README states them, read back from S3: old versions go after 90
    // days (artifacts) or 30 (timeline); timeline records move to Standard-IA after 30 days
    // and Glacier Instant Retrieval after 180.
    type Transitions = &'static [(i32, &'static str)];
    let lifecycles: [(&String, i32, Transitions); 2] = [
        (&small.artifacts_bucket, 90, &[]),
        (
            &small.timeline_bucket,
            30,
            &[(30, "STANDARD_IA"), (180, "GLACIER_IR")],
        ),
    ];
    for (b, noncurrent_days, transitions) in lifecycles {
        let v = aws
            .s3()
            .get_bucket_versioning()
            .bucket(b)
            .send()
            .await
            .unwrap();
        assert_eq!(v.status().unwrap().as_str(), "Enabled");
        let enc = aws
            .s3()
            .get_bucket_encryption()
            .bucket(b)
            .send()
            .await
            .unwrap();
        let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
        assert_eq!(
            rule.apply_server_side_encryption_by_default()
                .unwrap()
                .sse_algorithm()
                .as_str(),
            "AES256"
        );
        let pab = aws
            .s3()
            .get_public_access_block()
            .bucket(b)
            .send()
            .await
            .unwrap();
        let c = pab.public_access_block_configuration().unwrap();
        assert_eq!(
            (
                c.block_public_acls(),
                c.ignore_public_acls(),
                c.block_public_policy(),
                c.restrict_public_buckets()
            ),
            (Some(true), Some(true), Some(true), Some(true))
        );
        let lc = aws
            .s3()
            .get_bucket_lifecycle_configuration()
            .bucket(b)
            .send()
            .await
            .unwrap();
        assert_eq!(lc.rules().len(), 1, "{b}: {lc:?}");
        let rule = &lc.rules()[0];
        assert_eq!(rule.status().as_str(), "Enabled");
        assert_eq!(
            rule.abort_incomplete_multipart_upload()
                .unwrap()
                .days_after_initiation(),
            Some(7)
        );
        assert_eq!(
            rule.noncurrent_version_expiration()
                .and_then(|e| e.noncurrent_days()),
            Some(noncurrent_days),
            "{b}"
        );
        let read: Vec<(i32, &str)> = rule
            .transitions()
            .iter()
            .map(|t| {
                (
                    t.days().unwrap_or(-1),
                    t.storage_class().map_or("", |c| c.as_str()),
                )
            })
            .collect();
        assert_eq!(read, transitions, "{b}");
        // moto is plain HTTP: the TLS-only policy is left out (and the plan says so).
        assert_absent(
            aws.s3().get_bucket_policy().bucket(b).send().await,
            // S3 does not model NoSuchBucketPolicy.
            |e| e.meta().code() == Some("NoSuchBucketPolicy"),
            "the bucket policy",
        );
        let tags = aws
            .s3()
            .get_bucket_tagging()
            .bucket(b)
            .send()
            .await
            .unwrap();
        assert!(
            tags.tag_set()
                .iter()
                .any(|t| t.key() == "agentbus:tier" && t.value() == "small")
        );
    }
    assert!(
        p.stderr.contains("no TLS-only bucket policy")
            || p.stdout.contains("no TLS-only bucket policy"),
        "{p:?}"
    );

    // The events table: the shared key schema, index names and TTL.
    let t = aws
        .dynamodb()
        .describe_table()
        .table_name(&small.events_table)
        .send()
        .await
        .unwrap();
    let t = t.table().unwrap();
    assert_eq!(
        t.key_schema()[0].attribute_name(),
        monitoring::events::EVENT_ID
    );
    let mut names: Vec<&str> = t
        .global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name())
        .collect();
    names.sort();
    let mut want: Vec<&str> = monitoring::events::INDEXES.iter().map(|g| g.name).collect();
    want.sort();
    assert_eq!(names, want);
    let ttl = aws
        .dynamodb()
        .describe_time_to_live()
        .table_name(&small.events_table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description().unwrap().attribute_name(),
        Some(monitoring::events::EXPIRES_AT)
    );
    for name in [&small.subscriptions_table, &small.rules_table] {
        let t = aws
            .dynamodb()
            .describe_table()
            .table_name(name)
            .send()
            .await
            .unwrap();
        assert_eq!(
            t.table().unwrap().key_schema()[0].attribute_name(),
            "tenant"
        );
    }

    // The artifacts store on S3 passes the same suite as the embedded one.
    let artifacts = S3Artifacts::new(aws.s3(), &small.artifacts_bucket);
    artifacts_suite(&artifacts, "s3").await;
    // Large artifacts go through a presigned URL: upload with it, read it back.
    let body = vec![7u8; 300_000];
    let url = artifacts
        .presign(&acme, "big/blob.bin", Transfer::Upload { size: 300_000 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(url.method, "PUT");
    // The size is signed (moto does not check signatures; S3 refuses any other size).
    let signed = url
        .url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("X-Amz-SignedHeaders="))
        .unwrap_or_default()
        .to_string();
    assert!(
        signed.split("%3B").any(|h| h == "content-length"),
        "{url:?}"
    );
    assert_eq!(
        url.headers.get("content-length").map(String::as_str),
        Some("300000")
    );
    assert_eq!(http_put(&url.url, &body), 200, "{url:?}");
    let (_, got) = artifacts.get(&acme, "big/blob.bin").await.unwrap().unwrap();
    assert_eq!(got, body);
    let e = artifacts
        .presign(
            &acme,
            "huge.bin",
            Transfer::Upload {
                size: MAX_UPLOAD_BYTES + 1,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::TooLarge { .. }), "{e}");
    // An object larger than a tool returns (put there by a presigned upload): refused,
    // without reading it into memory.
    aws.s3()
        .put_object()
        .bucket(&small.artifacts_bucket)
        .key("tenants/acme/big/video.bin")
        .body(vec![1u8; MAX_INLINE_BYTES + 1].into())
        .send()
        .await
        .unwrap();
    let e = artifacts.get(&acme, "big/video.bin").await.unwrap_err();
    assert!(e.to_string().contains("artifacts_url"), "{e}");
    let down = artifacts
        .presign(&acme, "big/blob.bin", Transfer::Download)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(down.method, "GET");
    assert!(down.url.contains("tenants/acme/big/blob.bin"), "{down:?}");

    // The timeline on S3 passes the embedded one's suite too.
    timeline_suite(&S3Timeline::new(aws.s3(), &small.timeline_bucket), "s3").await;

    // The dashboard task now knows the names, and the server it runs serves the small
    // tier's tools on the workspace's buckets.
    let task_env = crate::harness::dashboard_task_env(&aws, &env).await;
    for pair in small.to_env() {
        assert!(task_env.contains(&pair), "{pair:?} in {task_env:?}");
    }
    let token = |tenant: &str, role: &str| crate::harness::env_token(&env, tenant, role);
    let (ta, tb, tv) = (
        token("tenant-a", "user"),
        token("tenant-b", "user"),
        token("tenant-a", "viewer"),
    );
    check_monitor_feed(&aws, &env, &small).await;
    // The monitor's store on DynamoDB passes the same suite as the embedded one.
    monitor_suite(
        std::sync::Arc::new(DynamoEventStore::new(aws.dynamodb(), &small)),
        "ddb",
    )
    .await;
    // The server, with webhooks allowed anywhere: the test's receiver is on this machine.
    let mut anywhere = task_env.clone();
    anywhere.push((ENV_WEBHOOKS_ANYWHERE.into(), "true".into()));
    let log_path = std::env::temp_dir().join(format!("agentbus-e2e-{env}-server.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let (server, port) = serve_on_aws_logging(anywhere, log.into());
    small_client(port, &ta, &tb, &tv, "aws");
    another_producers_event_is_recorded_once(&aws, &cfg.event_bus, &small).await;
    what_is_not_an_event_goes_to_the_dead_letter_queue(&aws, &cfg.event_bus, &small, &log_path)
        .await;
    // The console shows admins the dead-letter queue's depth (the two just sent, being read
    // or waiting), and no one else.
    let admin = token("tenant-a", "admin");
    let (status, body) =
        crate::server::http(port, "GET", "/api/monitor/dead-letters", Some(&admin), None);
    assert_eq!((status, body.as_str()), (200, r#"{"depth":2}"#));
    let (status, _) =
        crate::server::http(port, "GET", "/api/monitor/dead-letters", Some(&ta), None);
    assert_eq!(status, 403);
    drop(server);
    std::fs::remove_file(&log_path).ok();
    // Then exactly as the task runs it: its webhooks reach only public HTTPS. (After the
    // events: a server killed in a long poll of the feed would hide a message from the next
    // one until its visibility timeout.)
    let (server, port) = serve_on_aws(task_env);
    crate::harness::python_script(
        "tests/mcp/webhook_policy_client.py",
        &[&format!("http://127.0.0.1:{port}/mcp"), &ta],
        "the deployed webhook policy",
    );
    drop(server);
    assert_eq!(
        object(
            &aws,
            &small.artifacts_bucket,
            "tenants/tenant-a/plans/plan.md"
        )
        .await,
        b"# plan\n"
    );

    // Data in the small resources, then the downgrade: they are kept, with their data.
    aws.s3()
        .put_object()
        .bucket(&small.artifacts_bucket)
        .key("acme/report.txt")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .unwrap();
    let p = agentbus(&["plan", "xs", "--env", &env, "--json"]);
    let a = actions(&p.json()["plan"]);
    for id in SMALL_IDS {
        assert_eq!(a.get(id).map(String::as_str), Some("keep"), "{a:?}");
    }
    for id in ALB_IDS.iter().chain(&FEED_IDS) {
        assert_eq!(a.get(*id).map(String::as_str), Some("delete"), "{a:?}");
    }
    let r = agentbus(&[
        "deploy",
        "xs",
        "--env",
        &env,
        "--yes",
        "--wait-timeout",
        "60",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        object(&aws, &small.artifacts_bucket, "acme/report.txt").await,
        b"hello"
    );
    assert!(
        aws.dynamodb()
            .describe_table()
            .table_name(&small.events_table)
            .send()
            .await
            .is_ok()
    );
    let r = agentbus(&["plan", "xs", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "kept resources are not pending changes: {r:?}");
    // The dashboard is reachable from the CIDRs again, and off the (deleted) balancer.
    let ws_name = format!("agentbus-{env}");
    let svc = aws
        .ecs()
        .describe_services()
        .cluster(&ws_name)
        .services(format!("{ws_name}-dashboard"))
        .send()
        .await
        .unwrap();
    assert!(svc.services()[0].load_balancers().is_empty());
    assert_eq!(
        ingress_of(&aws, &format!("{ws_name}-dashboard")).await,
        vec!["8080 from 203.0.113.0/24".to_string()]
    );
    assert_absent(
        aws.elb()
            .describe_load_balancers()
            .names(format!("{ws_name}-dash"))
            .send()
            .await,
        aws_sdk_elasticloadbalancingv2::operation::describe_load_balancers::DescribeLoadBalancersError::is_load_balancer_not_found_exception,
        "the load balancer",
    );
    // The extra-small data is still there too.
    assert_eq!(kv.get(&acme, "k0").await.unwrap().unwrap().value, "v0");

    // Destroy with the flag removes every data-bearing resource of the small tier: both
    // buckets (objects and versions first), the three tables and the dead-letter queue.
    let r = agentbus(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    for bucket in [&small.artifacts_bucket, &small.timeline_bucket] {
        assert_absent(
            aws.s3().head_bucket().bucket(bucket).send().await,
            aws_sdk_s3::operation::head_bucket::HeadBucketError::is_not_found,
            bucket,
        );
    }
    for table in [
        &small.events_table,
        &small.subscriptions_table,
        &small.rules_table,
    ] {
        assert_absent(
            aws.dynamodb().describe_table().table_name(table).send().await,
            aws_sdk_dynamodb::operation::describe_table::DescribeTableError::is_resource_not_found_exception,
            table,
        );
    }
    for queue in [
        small.events_queue.clone(),
        format!("{}-dlq", small.events_queue),
    ] {
        assert_absent(
            aws.sqs().get_queue_url().queue_name(&queue).send().await,
            aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError::is_queue_does_not_exist,
            &queue,
        );
    }
}

/// `"{port} from {source}"` for every inbound rule of a security group, by name.
async fn ingress_of(aws: &tier_xs::aws::AwsClients, name: &str) -> Vec<String> {
    let out = crate::harness::security_groups_named(aws, name).await;
    let mut v = Vec::new();
    for p in out[0]["IpPermissions"].as_array().unwrap() {
        let port = p["FromPort"].as_i64().unwrap_or_default();
        for r in p["IpRanges"].as_array().into_iter().flatten() {
            v.push(format!(
                "{port} from {}",
                r["CidrIp"].as_str().unwrap_or_default()
            ));
        }
        for g in p["UserIdGroupPairs"].as_array().into_iter().flatten() {
            v.push(format!(
                "{port} from {}",
                g["GroupId"].as_str().unwrap_or_default()
            ));
        }
    }
    v.sort();
    v
}

/// The load balancer as specified, the service registered in it, and the dashboard's
/// security group admitting only the balancer's.
async fn check_load_balancer(aws: &tier_xs::aws::AwsClients, env: &str) {
    let ws = format!("agentbus-{env}");
    let lb = dashboard_balancer(aws, env).await;
    assert_eq!(lb.scheme().unwrap().as_str(), "internet-facing");
    assert_eq!(lb.r#type().unwrap().as_str(), "application");
    // Two zones, the fewest AWS takes (each costs an address), and the dashboard's tasks in
    // exactly the balancer's subnets: a target in a zone the balancer does not use would get
    // no traffic.
    let mut lb_subnets: Vec<String> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id().map(str::to_string))
        .collect();
    lb_subnets.sort();
    assert_eq!(lb_subnets.len(), tier_small::tier::ALB_ZONES, "{lb:?}");
    let zones: std::collections::BTreeSet<&str> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name())
        .collect();
    assert_eq!(zones.len(), lb_subnets.len(), "one subnet per zone: {lb:?}");
    let services = aws
        .ecs()
        .describe_services()
        .cluster(&ws)
        .services(format!("{ws}-dashboard"))
        .send()
        .await
        .unwrap();
    let mut task_subnets = services.services()[0]
        .network_configuration()
        .and_then(|n| n.awsvpc_configuration())
        .map(|a| a.subnets().to_vec())
        .unwrap();
    task_subnets.sort();
    assert_eq!(task_subnets, lb_subnets);
    let alb_sg =
        crate::harness::security_groups_named(aws, &format!("{ws}-alb")).await[0]["GroupId"]
            .as_str()
            .unwrap()
            .to_string();
    assert_eq!(lb.security_groups(), std::slice::from_ref(&alb_sg));
    assert_eq!(
        ingress_of(aws, &format!("{ws}-alb")).await,
        vec!["80 from 203.0.113.0/24".to_string()]
    );
    assert_eq!(
        ingress_of(aws, &format!("{ws}-dashboard")).await,
        vec![format!("8080 from {alb_sg}")],
        "the dashboard admits only the load balancer"
    );

    let tgs = aws
        .elb()
        .describe_target_groups()
        .names(format!("{ws}-dash"))
        .send()
        .await
        .unwrap();
    let tg = &tgs.target_groups()[0];
    assert_eq!(tg.port(), Some(8080));
    assert_eq!(tg.target_type().unwrap().as_str(), "ip");
    assert_eq!(tg.health_check_path(), Some("/health"));
    assert_eq!(tg.matcher().and_then(|m| m.http_code()), Some("200"));
    let tg_arn = tg.target_group_arn().unwrap();
    // A deregistered task drains for 30 s (AWS's default 300 s would make every rolling deploy
    // wait five minutes); the balancer drops requests whose header names are not valid HTTP.
    let attrs = aws
        .elb()
        .describe_target_group_attributes()
        .target_group_arn(tg_arn)
        .send()
        .await
        .unwrap();
    assert!(
        attrs
            .attributes()
            .iter()
            .any(|a| a.key() == Some("deregistration_delay.timeout_seconds")
                && a.value() == Some("30")),
        "{attrs:?}"
    );
    let attrs = aws
        .elb()
        .describe_load_balancer_attributes()
        .load_balancer_arn(lb.load_balancer_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        attrs.attributes().iter().any(|a| a.key()
            == Some("routing.http.drop_invalid_header_fields.enabled")
            && a.value() == Some("true")),
        "{attrs:?}"
    );

    let listeners = aws
        .elb()
        .describe_listeners()
        .load_balancer_arn(lb.load_balancer_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(listeners.listeners().len(), 1);
    let l = &listeners.listeners()[0];
    assert_eq!(l.port(), Some(80));
    assert_eq!(l.default_actions()[0].target_group_arn(), Some(tg_arn));

    let svc = aws
        .ecs()
        .describe_services()
        .cluster(&ws)
        .services(format!("{ws}-dashboard"))
        .send()
        .await
        .unwrap();
    let reg = &svc.services()[0].load_balancers()[0];
    assert_eq!(reg.target_group_arn(), Some(tg_arn));
    assert_eq!(reg.container_port(), Some(8080));
}

/// With a certificate: HTTPS on 443 (TLS 1.3/1.2 policy), 80 redirects, the balancer's group
/// opens 443; without it again, back to plain forwarding. (moto checks an ACM certificate
/// exists; an IAM server certificate ARN it takes as given.)
async fn check_https(aws: &tier_xs::aws::AwsClients, env: &str) {
    let ws = format!("agentbus-{env}");
    let cert = "arn:aws:iam::123456789012:server-certificate/agentbus-e2e";
    let p = agentbus(&[
        "plan",
        "small",
        "--env",
        env,
        "--certificate-arn",
        cert,
        "--json",
    ]);
    let a = actions(&p.json()["plan"]);
    assert_eq!(
        a.get("https-listener").map(String::as_str),
        Some("create"),
        "{a:?}"
    );
    assert_eq!(
        a.get("http-listener").map(String::as_str),
        Some("update"),
        "{a:?}"
    );
    assert_eq!(
        a.get("alb-security-group").map(String::as_str),
        Some("update"),
        "{a:?}"
    );
    let r = agentbus(&[
        "deploy",
        "small",
        "--env",
        env,
        "--certificate-arn",
        cert,
        "--yes",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let lb_arn = dashboard_balancer(aws, env)
        .await
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let listeners = aws
        .elb()
        .describe_listeners()
        .load_balancer_arn(&lb_arn)
        .send()
        .await
        .unwrap();
    let by_port = |port: i32| {
        listeners
            .listeners()
            .iter()
            .find(|l| l.port() == Some(port))
            .unwrap()
            .clone()
    };
    let https = by_port(443);
    assert_eq!(https.protocol().unwrap().as_str(), "HTTPS");
    assert_eq!(
        https.ssl_policy(),
        Some(tier_small::components::alb::SSL_POLICY)
    );
    assert_eq!(https.certificates()[0].certificate_arn(), Some(cert));
    let redirect = by_port(80).default_actions()[0]
        .redirect_config()
        .unwrap()
        .clone();
    assert_eq!(
        (redirect.protocol(), redirect.port()),
        (Some("HTTPS"), Some("443"))
    );
    assert_eq!(
        ingress_of(aws, &format!("{ws}-alb")).await,
        vec![
            "443 from 203.0.113.0/24".to_string(),
            "80 from 203.0.113.0/24".to_string()
        ]
    );
    let r = agentbus(&["plan", "small", "--env", env, "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "the certificate is remembered: {r:?}");

    let r = agentbus(&[
        "deploy",
        "small",
        "--env",
        env,
        "--certificate-arn",
        "none",
        "--yes",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let listeners = aws
        .elb()
        .describe_listeners()
        .load_balancer_arn(&lb_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(listeners.listeners().len(), 1);
    assert!(
        listeners.listeners()[0].default_actions()[0]
            .target_group_arn()
            .is_some()
    );
}

/// The bus rule sends every event into the monitor's queue, which hands what fails five
/// times to its dead-letter queue; only the rule may send.
async fn check_monitor_feed(aws: &tier_xs::aws::AwsClients, env: &str, small: &SmallConfig) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let ws = format!("agentbus-{env}");
    let attrs = |name: String| async move {
        let url = queue_url(aws, &name).await;
        aws.sqs()
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()
    };
    let q = attrs(small.events_queue.clone()).await;
    let dlq = attrs(format!("{ws}-events-feed-dlq")).await;
    assert_eq!(q[&A::MessageRetentionPeriod], "345600");
    assert_eq!(q[&A::VisibilityTimeout], "120");
    assert_eq!(q[&A::ReceiveMessageWaitTimeSeconds], "20");
    assert_eq!(q[&A::SqsManagedSseEnabled], "true");
    assert_eq!(dlq[&A::MessageRetentionPeriod], "1209600");
    let redrive: Value = serde_json::from_str(&q[&A::RedrivePolicy]).unwrap();
    assert_eq!(redrive["deadLetterTargetArn"], dlq[&A::QueueArn].as_str());
    assert_eq!(redrive["maxReceiveCount"], 5);
    let policy: Value = serde_json::from_str(&q[&A::Policy]).unwrap();
    let rule_arn = format!("arn:aws:events:us-east-1:123456789012:rule/{ws}/{ws}-monitor");
    assert_eq!(
        policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
        rule_arn.as_str()
    );
    let rule = aws
        .events()
        .describe_rule()
        .name(format!("{ws}-monitor"))
        .event_bus_name(&ws)
        .send()
        .await
        .unwrap();
    assert_eq!(rule.arn(), Some(rule_arn.as_str()));
    let pattern: Value = serde_json::from_str(rule.event_pattern().unwrap()).unwrap();
    assert_eq!(pattern, monitoring::all_events_pattern());
    let targets = aws
        .events()
        .list_targets_by_rule()
        .rule(format!("{ws}-monitor"))
        .event_bus_name(&ws)
        .send()
        .await
        .unwrap();
    assert_eq!(targets.targets()[0].arn(), q[&A::QueueArn].as_str());
}

/// An event another producer puts straight on the bus (its own source, no agentbus
/// envelope) is recorded once, under the tenant its detail names, and the queue drains.
async fn another_producers_event_is_recorded_once(
    aws: &tier_xs::aws::AwsClients,
    bus: &str,
    small: &SmallConfig,
) {
    let put = aws
        .events()
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source("ci.github")
                .detail_type("push")
                .detail(r#"{"tenant":"tenant-a","ref":"main","priority":"warning"}"#)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.failed_entry_count, 0);
    let id = put.entries()[0].event_id().unwrap().to_string();
    let store = DynamoEventStore::new(aws.dynamodb(), small);
    let monitor = Monitor::new(
        std::sync::Arc::new(store),
        tier_small::runtime::monitor::webhook::Webhooks::new(
            tier_small::runtime::monitor::webhook::Reach::PublicHttps,
        )
        .unwrap(),
    );
    let a = Tenant::new("tenant-a").unwrap();
    let q = EventQuery {
        source: Some("ci.github".into()),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let found = loop {
        let page = monitor.query(&a, &q).await.unwrap();
        if !page.events.is_empty() {
            break page.events;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(45),
            "the bus event never reached the events table"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].event_id, id);
    assert_eq!(found[0].priority, "warning");
    assert_eq!(found[0].detail["ref"], "main");
    // Every message was deleted once recorded: nothing waits, nothing went to the DLQ.
    for name in [small.events_queue.clone(), format!("{bus}-events-feed-dlq")] {
        let url = queue_url(aws, &name).await;
        let start = std::time::Instant::now();
        loop {
            let at = queue_depth(aws, &url).await;
            if at == ("0".to_string(), "0".to_string()) {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "{url}: {at:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
}

/// A message on the feed that is not an event (a producer writing to the queue directly, a
/// truncated body) can never be recorded: it reaches the dead-letter queue within seconds,
/// unchanged, and the server says why; nothing else goes there.
async fn what_is_not_an_event_goes_to_the_dead_letter_queue(
    aws: &tier_xs::aws::AwsClients,
    bus: &str,
    small: &SmallConfig,
    server_log: &std::path::Path,
) {
    let feed = queue_url(aws, &small.events_queue).await;
    let dlq = queue_url(aws, &format!("{bus}-events-feed-dlq")).await;
    let mut bodies = vec![r#"{"detail-type": "cut sho"#, r#"{"detail-type": 7}"#];
    for body in &bodies {
        aws.sqs()
            .send_message()
            .queue_url(&feed)
            .message_body(*body)
            .send()
            .await
            .unwrap();
    }
    // Five receives each (the redrive policy's count) at the server's pace, not five
    // visibility timeouts of 120 s.
    let start = std::time::Instant::now();
    let mut dead: Vec<String> = Vec::new();
    while dead.len() < bodies.len() {
        let got = aws
            .sqs()
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            dead.push(m.body().unwrap().to_string());
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "in the dead-letter queue after 60 s: {dead:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    dead.sort();
    bodies.sort();
    assert_eq!(dead, bodies);
    assert_eq!(
        queue_depth(aws, &feed).await,
        ("0".to_string(), "0".to_string()),
        "the feed drained"
    );
    let said = std::fs::read_to_string(server_log).unwrap();
    let why: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("not an event, on its way to the dead-letter queue"))
        .collect();
    // One line per receive before the move: as many as the redrive policy allows.
    assert_eq!(
        why.len(),
        bodies.len() * tier_small::components::queue::MAX_RECEIVES as usize,
        "{said}"
    );
}

/// A queue's messages waiting and in flight (SQS's approximate counts).
async fn queue_depth(aws: &tier_xs::aws::AwsClients, url: &str) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let at = aws
        .sqs()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    (
        at[&A::ApproximateNumberOfMessages].clone(),
        at[&A::ApproximateNumberOfMessagesNotVisible].clone(),
    )
}

async fn queue_url(aws: &tier_xs::aws::AwsClients, name: &str) -> String {
    aws.sqs()
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// The content of an S3 object.
async fn object(aws: &tier_xs::aws::AwsClients, bucket: &str, key: &str) -> Vec<u8> {
    let o = aws
        .s3()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    o.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The workspace's load balancer (it must exist).
async fn dashboard_balancer(
    aws: &tier_xs::aws::AwsClients,
    env: &str,
) -> aws_sdk_elasticloadbalancingv2::types::LoadBalancer {
    aws.elb()
        .describe_load_balancers()
        .names(format!("agentbus-{env}-dash"))
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .clone()
}

#[tokio::test]
async fn a_queue_name_held_after_its_deletion_is_waited_for_not_failed() {
    use tier_small::components::queue::Queue;
    use tier_xs::engine::{self, Meta, Outputs, Resource};
    let aws = clients().await;
    let env = unique_env("qreuse");
    let name = format!("agentbus-{env}-reuse");
    let q = Queue {
        arn: format!("arn:aws:sqs:us-east-1:123456789012:{name}"),
        meta: Meta::new("reuse-queue", Tier::Small, name, Vec::new()),
        retention_seconds: 4 * 86_400,
        visibility_timeout_seconds: 120,
        receive_wait_seconds: 20,
        dead_letter_id: None,
        policy: None,
        holds_data: false,
        polls_per_month: 0.0,
        requests_per_event: 0.0,
        wanted: true,
    };
    let none = Outputs::new();
    let made = engine::create(&q, &aws, &none).await.unwrap();
    q.delete(&aws, &made).await.unwrap();
    // SQS holds a deleted queue's name for a while (QueueDeletedRecently): a quick downgrade
    // and upgrade waits it out instead of failing.
    let again = engine::create(&q, &aws, &none).await.unwrap();
    assert_eq!(again.out("url"), made.out("url"));
}

/// CreateLoadBalancer wants subnets in two zones: subnets named with --subnet that share
/// one zone are refused by the plan, before AWS would refuse the load balancer (the test
/// emulator refuses it as AWS does).
#[tokio::test]
async fn subnets_in_one_zone_are_refused_before_the_load_balancer_is() {
    let aws = clients().await;
    let vpcs = crate::harness::ec2(
        &aws,
        "describe_vpcs",
        serde_json::json!({"Filters": [{"Name": "is-default", "Values": ["true"]}]}),
    )
    .await;
    let vpc = vpcs["Vpcs"][0]["VpcId"].as_str().unwrap().to_string();
    // Two small subnets of the default VPC in one zone (outside its default /20s).
    let base = 200 + (std::process::id() % 50) as u8;
    let mut subnets = Vec::new();
    for i in 0..2u8 {
        let s = crate::harness::ec2(
            &aws,
            "create_subnet",
            serde_json::json!({"VpcId": vpc, "AvailabilityZone": "us-east-1a",
                "CidrBlock": format!("172.31.{base}.{}/28", i * 16)}),
        )
        .await;
        subnets.push(s["Subnet"]["SubnetId"].as_str().unwrap().to_string());
    }
    let env = unique_env("sz");
    let p = agentbus(&[
        "plan",
        "small",
        "--env",
        &env,
        "--subnet",
        &subnets[0],
        "--subnet",
        &subnets[1],
        "--allow-cidr",
        "203.0.113.0/24",
    ]);
    assert_eq!(p.code, 1, "{p:?}");
    let said = format!("{}{}", p.stdout, p.stderr);
    assert!(
        said.contains("two availability zones") && said.contains("us-east-1a"),
        "{p:?}"
    );
}

/// A small workspace deployed when the events table's indexes copied whole items (each
/// event's write cost its size once per index): the next deploy rebuilds them in place to copy
/// keys and the listed fields, one index at a time, and the events stay listable with their
/// details (read from the table).
#[tokio::test]
async fn events_indexes_that_copied_whole_items_are_rebuilt_in_place_and_keep_their_events() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    use monitoring::events as ev;
    let env = unique_env("gsi");
    let aws = clients().await;
    let ws = Workspace::new(Env::new(&env).unwrap(), "123456789012", "us-east-1");
    let small = SmallConfig::for_workspace(&ws);
    let key = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .unwrap()
    };
    let mut create = aws
        .dynamodb()
        .create_table()
        .table_name(&small.events_table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(ev::EVENT_ID, KeyType::Hash));
    for a in [
        ev::EVENT_ID,
        ev::TENANT,
        ev::TIME_ID,
        ev::TENANT_SOURCE,
        ev::TENANT_TYPE,
        ev::TENANT_PRIORITY,
    ] {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        );
    }
    for g in ev::INDEXES {
        create = create.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(g.name)
                .key_schema(key(g.hash, KeyType::Hash))
                .key_schema(key(g.range.unwrap(), KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        );
    }
    create.send().await.unwrap();
    let store = DynamoEventStore::new(aws.dynamodb(), &small);
    let event = tier_small::runtime::monitor::MonitoredEvent::from_bus(&serde_json::json!({
        "id": "old-1", "source": "ci.github", "detail-type": "push",
        "detail": {"tenant": "tenant-a", "ref": "main", "priority": "warning"},
    }))
    .unwrap();
    use tier_small::runtime::monitor::EventStore;
    store.record(&event, true).await.unwrap();

    deploy_xs(&env);
    let plan = agentbus(&["plan", "small", "--env", &env, "--json"]).json();
    let change = plan["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "events-table")
        .unwrap()
        .clone();
    assert_eq!(change["action"], "update", "{change}");
    assert!(
        change
            .to_string()
            .contains("keys + detail_type, priority, source, tenant, time"),
        "{change}"
    );
    let r = agentbus(&[
        "deploy",
        "small",
        "--env",
        &env,
        "--yes",
        "--wait-timeout",
        "60",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let p = agentbus(&["plan", "small", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(p.code, 0, "{p:?}");

    // Read back: every index copies the keys and exactly the listed fields.
    let table = aws
        .dynamodb()
        .describe_table()
        .table_name(&small.events_table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let indexes = table.global_secondary_indexes();
    assert_eq!(indexes.len(), 4);
    for i in indexes {
        let p = i.projection().unwrap();
        assert_eq!(p.projection_type(), Some(&ProjectionType::Include), "{i:?}");
        let mut attrs = p.non_key_attributes().to_vec();
        attrs.sort();
        assert_eq!(
            attrs,
            ["detail_type", "priority", "source", "tenant", "time"]
        );
    }
    // The event recorded before is listed with its detail, by each index.
    let monitor = Monitor::new(
        std::sync::Arc::new(DynamoEventStore::new(aws.dynamodb(), &small)),
        tier_small::runtime::monitor::webhook::Webhooks::new(
            tier_small::runtime::monitor::webhook::Reach::PublicHttps,
        )
        .unwrap(),
    );
    let a = Tenant::new("tenant-a").unwrap();
    for q in [
        EventQuery::default(),
        EventQuery {
            source: Some("ci.github".into()),
            ..Default::default()
        },
        EventQuery {
            detail_type: Some("push".into()),
            ..Default::default()
        },
        EventQuery {
            priority: Some("warning".into()),
            ..Default::default()
        },
    ] {
        let page = monitor.query(&a, &q).await.unwrap();
        assert_eq!(page.events.len(), 1, "{q:?}: {page:?}");
        assert_eq!(page.events[0].event_id, "old-1");
        assert_eq!(page.events[0].detail["ref"], "main", "{q:?}");
    }
    let r = agentbus(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
}
