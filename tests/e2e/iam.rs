//! The deployer's policy is enough, under IAM enforcement: a user holding exactly the
//! documents `agentbus iam-policy` prints deploys every tier, moves between them, manages
//! tokens and destroys, on a moto server of its own that checks every call's permission.
//!
//! Emulator limits, worked around here and nowhere else: moto computes the resource of a
//! request only for S3, SQS, IAM and STS, and checks every other call against `*`, so the
//! statements of the other services are widened to `*` (the actions stay exact: this is the
//! check that no call lacks its permission; the ARNs are checked by reading them against the
//! services' authorization references). moto evaluates no condition key but `sts:ExternalId`,
//! so conditions are dropped the same way.

use serde_json::{Value, json};

use crate::harness::{
    AGENT_IMAGE, IMAGE, agentbus, agentbus_env, boto, clients_at, start_moto, unique_env,
};

/// The services whose requests moto authorizes against their real resource.
const RESOURCE_AWARE: &[&str] = &["s3", "sqs", "iam", "sts"];

/// A statement as moto can check it (see the module's comment).
fn as_moto_checks(mut statement: Value) -> Value {
    let actions: Vec<&str> = statement["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let aware = actions.iter().all(|a| {
        RESOURCE_AWARE
            .iter()
            .any(|s| a.starts_with(&format!("{s}:")))
    });
    if !aware {
        statement["Resource"] = Value::from("*");
    }
    if let Some(s) = statement.as_object_mut() {
        s.remove("Condition");
    }
    statement
}

/// Tells moto to check every request from now on (its `reset-auth` with no free requests).
fn enforce_iam(url: &str) {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "POST /moto-api/reset-auth HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nConnection: close\r\n\r\n0"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_only_the_deployer_policy_deploys_every_tier_moves_between_them_and_destroys() {
    let moto = start_moto();
    let env = unique_env("iam");
    let policy = agentbus(&[
        "iam-policy",
        "--tier",
        "large",
        "--env",
        &env,
        "--account",
        "123456789012",
        "--region",
        "us-east-1",
    ]);
    assert_eq!(policy.code, 0, "{policy:?}");
    let documents = policy.json();

    // The deployer: a user with those documents as managed policies, and nothing else.
    let admin = clients_at(&moto.url, "testing", "testing").await;
    let user = format!("deployer-{env}");
    boto(&admin, "iam", "create_user", json!({"UserName": user})).await;
    for (i, doc) in documents.as_array().unwrap().iter().enumerate() {
        let mut doc = doc.clone();
        let statements: Vec<Value> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .cloned()
            .map(as_moto_checks)
            .collect();
        doc["Statement"] = Value::from(statements);
        let created = boto(
            &admin,
            "iam",
            "create_policy",
            json!({
                "PolicyName": format!("agentbus-deployer-{env}-{i}"),
                "PolicyDocument": doc.to_string(),
            }),
        )
        .await;
        let arn = &created["Policy"]["Arn"];
        boto(
            &admin,
            "iam",
            "attach_user_policy",
            json!({"UserName": user, "PolicyArn": arn}),
        )
        .await;
    }
    let key = boto(
        &admin,
        "iam",
        "create_access_key",
        json!({"UserName": user}),
    )
    .await["AccessKey"]
        .take();
    // From here on every request must be signed by a known key and allowed by its policies.
    enforce_iam(&moto.url);

    let (id, secret) = (
        key["AccessKeyId"].as_str().unwrap_or_default().to_string(),
        key["SecretAccessKey"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let as_deployer = |args: &[&str]| {
        agentbus_env(
            args,
            &[
                ("AWS_ENDPOINT_URL", &moto.url),
                ("AWS_ACCESS_KEY_ID", &id),
                ("AWS_SECRET_ACCESS_KEY", &secret),
            ],
        )
    };
    // The emulator refuses what the policy does not allow (so the runs below mean something).
    let stranger = agentbus_env(
        &["status", "--env", &env],
        &[("AWS_ENDPOINT_URL", &moto.url)],
    );
    assert_ne!(stranger.code, 0, "{stranger:?}");

    let wait = ["--yes", "--wait-timeout", "60"];
    let r = as_deployer(
        &[
            &["deploy", "xs", "--env", &env, "--image", IMAGE][..],
            &wait,
        ]
        .concat(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_deployer(&[
        "token", "create", "--env", &env, "--tenant", "acme", "--role", "admin",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_deployer(&[&["deploy", "small", "--env", &env][..], &wait].concat());
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_deployer(
        &[
            &[
                "deploy",
                "medium",
                "--env",
                &env,
                "--agent-image",
                AGENT_IMAGE,
            ][..],
            &wait,
        ]
        .concat(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_deployer(&["plan", "medium", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "converged: {r:?}");
    // The top of the ladder: the database and the dashboard's autoscaler.
    let r = as_deployer(&[&["deploy", "large", "--env", &env][..], &wait].concat());
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_deployer(&["plan", "large", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "converged: {r:?}");
    let r = as_deployer(&["status", "--env", &env]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_deployer(&[&["deploy", "xs", "--env", &env][..], &wait].concat());
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_deployer(&["destroy", "--env", &env, "--destroy-data", "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_deployer(&["status", "--env", &env, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
}
