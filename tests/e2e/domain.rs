//! `deploy xs --domain`: the server keeps its name's A record pointing at its task and serves
//! a certificate an ACME authority issued for the name by DNS-01. The authority is pebble
//! (Debian's package; tests/acme/acme_fixture.py), whose DNS-01 checks read moto's Route 53
//! through a small DNS server: it validates what the server wrote, nothing else.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_route53::types::RrType;

use crate::harness::{agentbus, clients, dashboard_task_env, python, unique_env};
use crate::server::{Guard, serve_on_aws, temp_dir};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/acme/acme_fixture.py"
);

/// pebble and its DNS server, until dropped.
struct Acme {
    _process: Guard,
    directory: String,
    /// Signs pebble's API certificate.
    api_ca: String,
    /// The root pebble's certificates chain up to.
    issuing_root: String,
}

/// Starts pebble with certificates valid for `validity` seconds.
fn acme(dir: &std::path::Path, validity: u64) -> Acme {
    let mut child = Command::new(python())
        .arg(FIXTURE)
        .args(["--endpoint", &crate::harness::moto().url, "--dir"])
        .arg(dir)
        .args(["--cert-validity", &validity.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python runs tests/acme/acme_fixture.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the ACME fixture did not start ({e}): {line:?}"));
    let text = |k: &str| ready[k].as_str().unwrap().to_string();
    Acme {
        _process: Guard(child),
        directory: text("directory"),
        api_ca: text("ca_file"),
        issuing_root: text("root_file"),
    }
}

/// ECS's task metadata endpoint as a task's container sees it (v4, its own container's
/// document), naming `private_ip` as the task's address, on 127.0.0.1.
fn task_metadata(private_ip: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = serde_json::json!({
        "Name": "dashboard",
        "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [private_ip]}],
    })
    .to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}/v4/dashboard")
}

/// The SHA-256 fingerprint of the certificate the server at `port` answers `name` with, if
/// openssl verifies it against `root` for that name (SNI and host name check).
fn verified_fingerprint(port: u16, name: &str, root: &str) -> Option<String> {
    let cmd = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername {name} -verify_hostname {name} -CAfile {root} -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    );
    let out = Command::new("sh").args(["-c", &cmd]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit_once('=')
        .map(|(_, f)| f.to_string())
        .filter(|f| !f.is_empty())
}

fn wait_for_fingerprint(
    port: u16,
    name: &str,
    root: &str,
    limit: Duration,
    unlike: Option<&str>,
) -> String {
    let start = Instant::now();
    loop {
        if let Some(f) = verified_fingerprint(port, name, root)
            && Some(f.as_str()) != unlike
        {
            return f;
        }
        assert!(
            start.elapsed() < limit,
            "no certificate for {name} that verifies against the ACME root after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The values of `name`'s records of `kind` in `zone`, as Route 53 answers them.
async fn records(
    aws: &tier_xs::aws::AwsClients,
    zone: &str,
    name: &str,
    kind: RrType,
) -> Vec<String> {
    let out = aws
        .route53()
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap();
    out.resource_record_sets()
        .iter()
        .filter(|r| r.name().trim_end_matches('.') == name && r.r#type() == &kind)
        .flat_map(|r| r.resource_records().iter().map(|v| v.value().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_gets_an_acme_certificate_by_dns_01_and_an_a_record_that_follows_the_task() {
    let env = unique_env("dom");
    let aws = clients().await;
    let parent = format!("{env}.example.test");
    let name = format!("mcp.{parent}");
    let zone = aws
        .route53()
        .create_hosted_zone()
        .name(&parent)
        .caller_reference(&env)
        .send()
        .await
        .unwrap()
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_string();
    let dir = temp_dir(&format!("acme-{env}"));
    std::fs::create_dir_all(&dir).unwrap();
    // Certificates of 90 seconds: renewed with a third of their life left, during the test.
    let pebble = acme(&dir, 90);

    // Bad input is refused before anything is read.
    let bad = agentbus(&["plan", "xs", "--env", &env, "--domain", "*.example.test"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("no wildcard"), "{bad:?}");
    let bad = agentbus(&[
        "plan",
        "xs",
        "--env",
        &env,
        "--acme-directory",
        "http://127.0.0.1/dir",
    ]);
    assert_eq!(bad.code, 2, "{bad:?}");

    // A name no hosted zone of the account holds stops the plan, with what to do.
    let nozone = agentbus(&[
        "plan",
        "xs",
        "--env",
        &env,
        "--image",
        crate::harness::IMAGE,
        "--domain",
        &format!("mcp.elsewhere-{env}.test"),
    ]);
    assert_ne!(nozone.code, 0, "{nozone:?}");
    assert!(
        nozone
            .stderr
            .contains("no public hosted zone in this account holds"),
        "{nozone:?}"
    );

    let r = agentbus(&[
        "deploy",
        "xs",
        "--env",
        &env,
        "--image",
        crate::harness::IMAGE,
        "--domain",
        &name,
        "--acme-directory",
        &pebble.directory,
        "--yes",
        "--wait-timeout",
        "60",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("https://{name}:8080/ with a certificate from")),
        "{r:?}"
    );

    // The task role may change exactly the name's A record and its challenge's TXT record.
    let role = format!("agentbus-{env}-dashboard-task");
    let policy = crate::harness::boto(
        &aws,
        "iam",
        "get_role_policy",
        serde_json::json!({"RoleName": role, "PolicyName": role}),
    )
    .await["PolicyDocument"]
        .take();
    let change = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == serde_json::json!(["route53:ChangeResourceRecordSets"]))
        .expect("the task role may change records");
    assert_eq!(
        change["Condition"]["ForAllValues:StringEquals"]["route53:ChangeResourceRecordSetsNormalizedRecordNames"],
        serde_json::json!([name.clone(), format!("_acme-challenge.{name}")])
    );
    assert_eq!(
        change["Condition"]["ForAllValues:StringEquals"]["route53:ChangeResourceRecordSetsRecordTypes"],
        serde_json::json!(["A", "TXT"])
    );
    let secret = format!("agentbus/{env}/domain-certificate");
    let token_secret = format!("agentbus/{env}/server");
    for s in policy["Statement"].as_array().unwrap() {
        let writes = s["Action"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "secretsmanager:PutSecretValue");
        let on_token_secret = s["Resource"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains(&format!("{token_secret}-")));
        assert!(
            !(writes && on_token_secret),
            "the task role may write the token secret: {s}"
        );
    }
    aws.secrets()
        .describe_secret()
        .secret_id(&secret)
        .send()
        .await
        .expect("the deploy made the certificate's secret");

    // The task's network interface, with a public address (moto runs no tasks: the test makes
    // the interface the task would have).
    let subnets = crate::harness::ec2(&aws, "describe_subnets", serde_json::json!({})).await;
    let subnet = subnets["Subnets"][0]["SubnetId"].clone();
    let nic = crate::harness::ec2(
        &aws,
        "create_network_interface",
        serde_json::json!({"SubnetId": subnet}),
    )
    .await["NetworkInterface"]
        .clone();
    let eip = crate::harness::ec2(
        &aws,
        "allocate_address",
        serde_json::json!({"Domain": "vpc"}),
    )
    .await;
    crate::harness::ec2(
        &aws,
        "associate_address",
        serde_json::json!({"AllocationId": eip["AllocationId"], "NetworkInterfaceId": nic["NetworkInterfaceId"]}),
    )
    .await;
    let public_ip = eip["PublicIp"].as_str().unwrap().to_string();

    let mut task_env = dashboard_task_env(&aws, &env).await;
    task_env.push((
        "ECS_CONTAINER_METADATA_URI_V4".into(),
        task_metadata(nic["PrivateIpAddress"].as_str().unwrap()),
    ));
    // pebble's API has a test CA of its own; Let's Encrypt's is in the system's store.
    task_env.push(("SSL_CERT_FILE".into(), pebble.api_ca.clone()));
    task_env.push(("AGENTBUS_CERTIFICATE_FOLLOW_SECONDS".into(), "1".into()));
    let (mut server, port) = serve_on_aws(task_env.clone());

    // The certificate pebble issued after reading the challenge's TXT record from Route 53.
    let first = wait_for_fingerprint(
        port,
        &name,
        &pebble.issuing_root,
        Duration::from_secs(60),
        None,
    );
    assert_eq!(
        records(&aws, &zone, &name, RrType::A).await,
        vec![public_ip.clone()]
    );
    assert!(
        records(&aws, &zone, &format!("_acme-challenge.{name}"), RrType::Txt)
            .await
            .is_empty(),
        "the challenge's record is removed after the check"
    );
    let stored = aws
        .secrets()
        .get_secret_value()
        .secret_id(&secret)
        .send()
        .await
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(stored.secret_string().unwrap()).unwrap();
    assert_eq!(stored["certificate"]["name"], name.as_str());
    assert!(stored["account"]["credentials"].is_object(), "{stored:#}");
    // A handshake that names nothing (a client reaching the server by its address) still
    // gets the workspace certificate, which `agentbus connect --env --url https://ADDRESS`
    // pins: the Python SDK's client through it.
    let workspace = aws
        .secrets()
        .get_secret_value()
        .secret_id(format!("agentbus/{env}/server"))
        .send()
        .await
        .unwrap();
    let workspace: serde_json::Value =
        serde_json::from_str(workspace.secret_string().unwrap()).unwrap();
    let pem = dir.join("workspace.pem");
    std::fs::write(&pem, workspace["tls"]["certificate"].as_str().unwrap()).unwrap();
    let fingerprint = |cmd: String| {
        let out = Command::new("sh").args(["-c", &cmd]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let expected = fingerprint(format!(
        "openssl x509 -noout -fingerprint -sha256 -in {}",
        pem.display()
    ));
    assert!(expected.contains('='), "{expected}");
    assert_eq!(
        fingerprint(format!(
            "openssl s_client -connect 127.0.0.1:{port} -noservername </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        )),
        expected
    );
    assert_ne!(expected.rsplit('=').next(), Some(first.as_str()));

    // A rotated workspace certificate is served without a restart (this server reads the
    // secret every second instead of every 5 minutes), and the bridge pins the new one.
    let rotated = agentbus(&["certificate", "rotate", "--env", &env, "--json"]);
    assert_eq!(rotated.code, 0, "{rotated:?}");
    let rotated = rotated.json();
    assert_eq!(
        Some(rotated["previous"].as_str().unwrap()),
        expected.rsplit('=').next()
    );
    let new = rotated["certificate"].as_str().unwrap().to_string();
    assert_ne!(rotated["previous"], rotated["certificate"]);
    let start = Instant::now();
    while fingerprint(format!(
        "openssl s_client -connect 127.0.0.1:{port} -noservername </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    ))
    .rsplit('=')
    .next()
        != Some(new.as_str())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the rotated certificate is not served after 20 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    crate::server::bridged_python_client(&env, port);

    // Status names the dashboard by its domain (verified as any public site, not pinned).
    let status = agentbus(&["status", "--env", &env, "--json"]);
    assert_eq!(
        status.json()["dashboard_url"],
        format!("https://{name}:8080/").as_str(),
        "{status:?}"
    );

    // Renewed with a third of its 90 seconds left, by another DNS-01 check.
    let renewed = wait_for_fingerprint(
        port,
        &name,
        &pebble.issuing_root,
        Duration::from_secs(90),
        Some(&first),
    );

    // Stopped, the server lets go of the record; started again, it serves the stored
    // certificate at once, without asking the authority.
    assert_eq!(crate::server::sigterm(&mut server.0).code(), Some(0));
    assert!(records(&aws, &zone, &name, RrType::A).await.is_empty());
    let (again, port) = serve_on_aws(task_env);
    assert_eq!(
        wait_for_fingerprint(
            port,
            &name,
            &pebble.issuing_root,
            Duration::from_secs(20),
            None
        ),
        renewed
    );
    assert_eq!(
        records(&aws, &zone, &name, RrType::A).await,
        vec![public_ip]
    );
    drop(again);

    crate::harness::destroy_all(&env);
    let gone = aws
        .secrets()
        .describe_secret()
        .secret_id(&secret)
        .send()
        .await;
    assert!(
        gone.is_err() || gone.unwrap().deleted_date().is_some(),
        "destroy removes the certificate's secret"
    );
    drop(pebble);
    let _ = std::fs::remove_dir_all(&dir);
}
