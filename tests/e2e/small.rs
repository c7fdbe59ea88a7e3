//! The small tier against moto: an extra-small workspace with data upgraded to small (only
//! additions and the dashboard's in-place changes; data intact), the new resources as
//! specified, and the downgrade back to extra-small keeping buckets and tables with their data.

use std::collections::BTreeMap;

use serde_json::Value;
use tier_small::config::SmallConfig;
use tier_small::monitoring;
use tier_small::runtime::artifacts::{ArtifactStore, S3Artifacts};
use tier_small::runtime::conformance::artifacts_suite;
use tier_xs::config::ServerConfig;
use tier_xs::runtime::Tenant;
use tier_xs::runtime::kv::{DynamoKv, KvStore, Ttl};
use tier_xs::runtime::secrets::{AwsSecrets, SecretStore};
use tier_xs::workspace::{Env, Tier, Workspace};

use crate::harness::{agentbus, clients, deploy_xs, unique_env};

/// `id -> action` of every change that is not a no-op.
fn actions(plan: &Value) -> BTreeMap<String, String> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

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

const SMALL_IDS: [&str; 5] = [
    "artifacts-bucket",
    "timeline-bucket",
    "events-table",
    "subscriptions-table",
    "event-rules-table",
];

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
    let kv = DynamoKv::new(aws.dynamodb.clone(), &cfg.kv_table);
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
    let secrets = AwsSecrets::new(aws.secrets.clone(), &ws);
    secrets.put(&acme, "api-key", "s3cr3t-value").await.unwrap();

    // The upgrade plan: the five small resources are created; the rest is in place.
    let p = agentbus(&["plan", "small", "--env", &env, "--json"]);
    assert_eq!(p.code, 0, "{p:?}");
    let a = actions(&p.json()["plan"]);
    for id in SMALL_IDS {
        assert_eq!(a.get(id).map(String::as_str), Some("create"), "{a:?}");
    }
    // In place: the dashboard task (new names, tier), its role (rights to the new
    // resources), the service (the new revision), and the budget, which follows the tier's
    // monthly target unless --budget-usd set one.
    for (id, action) in &a {
        if !SMALL_IDS.contains(&id.as_str()) {
            assert_eq!(
                action, "update",
                "{id}: only in-place changes to xs ({a:?})"
            );
            assert!(
                [
                    "dashboard-task-definition",
                    "dashboard-service",
                    "dashboard-task-role",
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
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let again = agentbus(&["plan", "small", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "converged: {again:?}");

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
    for (b, transitions) in [(&small.artifacts_bucket, 0), (&small.timeline_bucket, 2)] {
        let v = aws
            .s3
            .get_bucket_versioning()
            .bucket(b)
            .send()
            .await
            .unwrap();
        assert_eq!(v.status().unwrap().as_str(), "Enabled");
        let enc = aws
            .s3
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
            .s3
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
            .s3
            .get_bucket_lifecycle_configuration()
            .bucket(b)
            .send()
            .await
            .unwrap();
        let rule = &lc.rules()[0];
        assert_eq!(
            rule.abort_incomplete_multipart_upload()
                .unwrap()
                .days_after_initiation(),
            Some(7)
        );
        assert!(rule.noncurrent_version_expiration().is_some());
        assert_eq!(rule.transitions().len(), transitions);
        // moto is plain HTTP: the TLS-only policy is left out (and the plan says so).
        assert!(aws.s3.get_bucket_policy().bucket(b).send().await.is_err());
        let tags = aws.s3.get_bucket_tagging().bucket(b).send().await.unwrap();
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
        .dynamodb
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
        .dynamodb
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
            .dynamodb
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
    let artifacts = S3Artifacts::new(aws.s3.clone(), &small.artifacts_bucket);
    artifacts_suite(&artifacts, "s3").await;
    // Large artifacts go through a presigned URL: upload with it, read it back.
    let url = artifacts
        .presign(&acme, "big/blob.bin", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(url.method, "PUT");
    let body = vec![7u8; 300_000];
    assert_eq!(http_put(&url.url, &body), 200, "{url:?}");
    let (_, got) = artifacts.get(&acme, "big/blob.bin").await.unwrap().unwrap();
    assert_eq!(got, body);
    let down = artifacts
        .presign(&acme, "big/blob.bin", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(down.method, "GET");
    assert!(down.url.contains("tenants/acme/big/blob.bin"), "{down:?}");

    // The dashboard task now knows the names.
    let td = aws
        .ecs
        .describe_task_definition()
        .task_definition(format!("agentbus-{env}-dashboard"))
        .send()
        .await
        .unwrap();
    let c_env: Vec<(String, String)> = td.task_definition().unwrap().container_definitions()[0]
        .environment()
        .iter()
        .map(|kv| {
            (
                kv.name().unwrap().to_string(),
                kv.value().unwrap().to_string(),
            )
        })
        .collect();
    for pair in small.to_env() {
        assert!(c_env.contains(&pair), "{pair:?} in {c_env:?}");
    }

    // Data in the small resources, then the downgrade: they are kept, with their data.
    aws.s3
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
    let o = aws
        .s3
        .get_object()
        .bucket(&small.artifacts_bucket)
        .key("acme/report.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        o.body.collect().await.unwrap().into_bytes().as_ref(),
        b"hello"
    );
    assert!(
        aws.dynamodb
            .describe_table()
            .table_name(&small.events_table)
            .send()
            .await
            .is_ok()
    );
    let r = agentbus(&["plan", "xs", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "kept resources are not pending changes: {r:?}");
    // The extra-small data is still there too.
    assert_eq!(kv.get(&acme, "k0").await.unwrap().unwrap().value, "v0");

    // Destroy with the flag removes the buckets (objects and versions first) and tables.
    let r = agentbus(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        aws.s3
            .head_bucket()
            .bucket(&small.artifacts_bucket)
            .send()
            .await
            .is_err()
    );
}
