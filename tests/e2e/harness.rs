//! Test harness: one moto server per test process on 127.0.0.1, SDK clients pointed at it,
//! and a runner for the real `agentbus` binary with the same environment.
//!
//! Each test uses its own env name, so tests share the server without sharing resources.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use tier_xs::aws::AwsClients;

pub struct Moto {
    pub url: String,
    /// The watchdog shell; it ends with this process, taking moto with it.
    _watchdog: Option<std::sync::Mutex<std::process::Child>>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// The Python that has moto installed (the project's .venv unless overridden).
pub fn python() -> String {
    if let Ok(p) = std::env::var("AGENTBUS_TEST_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        return venv.to_string();
    }
    "python3".to_string()
}

/// Waits until something listens on 127.0.0.1:`port`, for at most `limit`.
pub fn wait_for_port(port: u16, limit: Duration, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < limit,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs one of the Python scripts under tests/ (`script` relative to the repository) with
/// `args`, and fails the test with its output unless it exits 0.
pub fn python_script(script: &str, args: &[&str], label: &str) {
    let path = format!("{}/../../{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        out.status.success(),
        "python MCP client ({label}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// moto's server with the APIs it lacks added (see tests/moto/server.py).
const MOTO_SHIM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/moto/server.py");

/// The moto server for this test process, started on first use. It is stopped by a
/// watchdog shell when the test process exits.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        if let Ok(url) = std::env::var("AGENTBUS_TEST_MOTO_URL") {
            seed_fixture_image(&url);
            return Moto {
                url,
                _watchdog: None,
            };
        }
        start_moto()
    })
}

/// A moto server of its own (the shim), with the fixture images in its ECR.
pub fn start_moto() -> Moto {
    let port = free_port();
    let bin = format!("{}\" \"{MOTO_SHIM}", python());
    // The watchdog: start moto, then wait for our process (the shell's parent) to go.
    let script = format!(
        "parent=$PPID; \"{bin}\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 $parent 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null"
    );
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        // moto never runs containers: let its ECS services report their tasks as running,
        // except those of the workspaces the steady-state tests name.
        .env("MOTO_ECS_SERVICE_RUNNING", "1")
        .env(
            "AGENTBUS_SHIM_NEVER_STEADY",
            format!("^agentbus-{NEVER_STEADY_ENV}"),
        )
        .env(
            "AGENTBUS_SHIM_ROLLOUT_FAILS",
            format!("^agentbus-{ROLLOUT_FAILS_ENV}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start moto_server ({bin}): {e}; run scripts/test.sh, which installs it")
        });
    let url = format!("http://127.0.0.1:{port}");
    wait_for_port(
        port,
        Duration::from_secs(60),
        &format!("moto_server ({bin}; scripts/test.sh installs it)"),
    );
    seed_fixture_image(&url);
    Moto {
        url,
        _watchdog: Some(std::sync::Mutex::new(watchdog)),
    }
}

/// Workspaces whose env starts with this get an ECS service that never becomes steady.
pub const NEVER_STEADY_ENV: &str = "unsteady";
/// Workspaces whose env starts with this get an ECS service whose rollout the circuit
/// breaker stops.
pub const ROLLOUT_FAILS_ENV: &str = "rollfail";

/// The ECR repository (in moto) holding the image most tests deploy.
pub const FIXTURE_REPOSITORY: &str = "e2e-fixtures/agentbus";

/// The ECR repository (in moto) holding the agents' image the medium tests deploy.
pub const AGENT_FIXTURE_REPOSITORY: &str = "e2e-fixtures/agentbus-agent";

/// Puts [`IMAGE`] and [`AGENT_IMAGE`] into moto's ECR, as a push would
/// (tests/moto/seed_image.py): deploy refuses images that are not in their registry. The
/// image-push tests use a real registry.
fn seed_fixture_image(url: &str) {
    for repo in [FIXTURE_REPOSITORY, AGENT_FIXTURE_REPOSITORY] {
        seed_image_at(url, repo, "test", &[]);
    }
}

/// Puts an image (its config and manifest) into ECR at the moto at `url` under
/// `repository:tag`, through the ECR API (tests/moto/seed_image.py); `platform` is the
/// config's `[architecture [os]]` (linux/amd64 when empty, `none` for no architecture).
pub fn seed_image_at(url: &str, repository: &str, tag: &str, platform: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/moto/seed_image.py"
    );
    let out = Command::new(python())
        .args([script, url, repository, tag])
        .args(platform)
        .output()
        .expect("run python to seed moto's ECR");
    assert!(
        out.status.success(),
        "seeding the image {repository}:{tag} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`seed_image_at`] the test process's moto; returns the image's reference.
pub fn seed_image(repository: &str, tag: &str, platform: &[&str]) -> String {
    seed_image_at(&moto().url, repository, tag, platform);
    format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/{repository}:{tag}")
}

/// The environment every AWS call of a test runs with: the emulator, test credentials,
/// and no instance-metadata lookups (no traffic leaves 127.0.0.1).
pub fn aws_env() -> Vec<(&'static str, String)> {
    aws_env_at(&moto().url)
}

/// [`aws_env`] for the moto at `url` (a test's own).
pub fn aws_env_at(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        (
            "AWS_CONFIG_FILE",
            "/nonexistent/agentbus-test-config".into(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/agentbus-test-credentials".into(),
        ),
    ]
}

pub async fn clients() -> AwsClients {
    clients_at(&moto().url, "testing", "testing").await
}

/// Clients of the emulator at `url` with these access keys.
pub async fn clients_at(url: &str, key: &str, secret: &str) -> AwsClients {
    let creds = aws_credential_types::Credentials::new(key, secret, None, None, "test");
    let cfg = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(creds)
        .load()
        .await;
    AwsClients::from_sdk_config(&cfg)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One call by boto3, the AWS SDK for Python (in the tests' venv, with moto), against the
/// emulator `aws` talks to and with its credentials: `boto(&aws, "iam", "get_role",
/// json!({"RoleName": name}))`, the answer as JSON (boto3's names: `Role`,
/// `AssumeRolePolicyDocument`, …; policy documents already decoded), or the error code the
/// service answered. The tests check what the product's own Query clients (`tier_xs::ec2`,
/// `tier_xs::iam`, `tier_large::rds`) did through an SDK nobody on the team wrote, and the
/// workspace builds no Rust SDK of those services for its tests alone.
pub async fn boto_result(
    aws: &AwsClients,
    service: &str,
    operation: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value, String> {
    const CALL: &str = "import botocore.exceptions\n\
        try:\n\
        \x20   answer = getattr(boto3.client(sys.argv[1]), sys.argv[2])(**json.loads(sys.argv[3]))\n\
        except botocore.exceptions.ClientError as e:\n\
        \x20   print(json.dumps({'error': e.response['Error']['Code']}))\n\
        \x20   sys.exit(0)\n\
        answer.pop('ResponseMetadata', None)\n\
        print(json.dumps({'answer': answer}, default=str))";
    let mut v = boto_script(aws, CALL, &[service, operation, &params.to_string()]).await;
    match v["error"].as_str() {
        Some(code) => Err(code.to_string()),
        None => Ok(v["answer"].take()),
    }
}

/// Runs `script` (Python, with `boto3`, `json` and `sys` imported; `sys.argv[1..]` are
/// `args`) against the emulator `aws` talks to, with its credentials; what it prints, as JSON.
pub async fn boto_script(aws: &AwsClients, script: &str, args: &[&str]) -> serde_json::Value {
    use aws_credential_types::provider::ProvideCredentials;
    let creds = aws
        .sdk_config()
        .credentials_provider()
        .expect("the tests' clients have credentials")
        .provide_credentials()
        .await
        .expect("the tests' credentials");
    let mut cmd = Command::new(python());
    cmd.args(["-c", &format!("import boto3, json, sys\n{script}")])
        .args(args)
        .envs(aws_env_at(
            aws.endpoint.as_deref().expect("the emulator's address"),
        ))
        .env("AWS_REGION", &aws.region)
        // boto3 reads its region from here.
        .env("AWS_DEFAULT_REGION", &aws.region)
        .env("AWS_ACCESS_KEY_ID", creds.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", creds.secret_access_key())
        .env_remove("AWS_PROFILE");
    match creds.session_token() {
        Some(t) => cmd.env("AWS_SESSION_TOKEN", t),
        None => cmd.env_remove("AWS_SESSION_TOKEN"),
    };
    let out = cmd.output().expect("run boto3");
    assert!(
        out.status.success(),
        "boto3: {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("boto3's answer as JSON")
}

/// The same, where the call must succeed.
pub async fn boto(
    aws: &AwsClients,
    service: &str,
    operation: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    match boto_result(aws, service, operation, params.clone()).await {
        Ok(v) => v,
        Err(code) => panic!("boto3: {service} {operation} {params} answered {code}"),
    }
}

/// One EC2 call by boto3 (see [`boto`]).
pub async fn ec2(
    aws: &AwsClients,
    operation: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    boto(aws, "ec2", operation, params).await
}

/// The security groups with this name (one per VPC; the tests use the default VPC), as boto3
/// reads them.
pub async fn security_groups_named(aws: &AwsClients, name: &str) -> Vec<serde_json::Value> {
    let out = ec2(
        aws,
        "describe_security_groups",
        serde_json::json!({"Filters": [{"Name": "group-name", "Values": [name]}]}),
    )
    .await;
    out["SecurityGroups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A fresh env name for one test: `t{pid}{n}`-style, within the 16-character limit.
pub fn unique_env(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id() % 100_000;
    let mut s = format!("{tag}-{pid}{n}");
    s.truncate(16);
    s.trim_end_matches('-').to_string()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the real `agentbus` binary against the emulator.
pub fn agentbus(args: &[&str]) -> Run {
    agentbus_env(args, &[])
}

pub fn agentbus_env(args: &[&str], extra: &[(&str, &str)]) -> Run {
    let mut cmd = agentbus_command(&moto().url, args);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    run(cmd)
}

/// The real `agentbus` binary with `args`, its AWS calls going to the endpoint at `url`.
pub fn agentbus_command(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentbus"));
    cmd.args(args)
        .env_remove("WS")
        .env_remove("ENV")
        .env_remove("AGENTBUS_ENV")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (k, v) in aws_env_at(url) {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `cmd` to its end.
pub fn run(mut cmd: Command) -> Run {
    let out: Output = cmd.output().expect("run agentbus");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `id -> action` of every change of a JSON plan that is not a no-op.
pub fn actions(plan: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
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

/// A new token of a deployed workspace (`agentbus token create --env`).
pub fn env_token(env: &str, tenant: &str, role: &str) -> String {
    let r = agentbus(&[
        "token", "create", "--env", env, "--tenant", tenant, "--role", role, "--json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    r.json()["token"].as_str().unwrap().to_string()
}

/// The environment of the deployed dashboard task's container: what the server on AWS gets.
pub async fn dashboard_task_env(
    aws: &tier_xs::aws::AwsClients,
    env: &str,
) -> Vec<(String, String)> {
    aws.ecs()
        .describe_task_definition()
        .task_definition(format!("agentbus-{env}-dashboard"))
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .container_definitions()[0]
        .environment()
        .iter()
        .map(|kv| {
            (
                kv.name().unwrap().to_string(),
                kv.value().unwrap().to_string(),
            )
        })
        .collect()
}

/// Deploys the extra-small tier into `env` and fails the test if that does not work.
pub fn deploy_xs(env: &str) {
    deploy_xs_with(env, IMAGE);
}

/// [`deploy_xs`] running `image`.
pub fn deploy_xs_with(env: &str, image: &str) {
    let r = agentbus(&[
        "deploy",
        "xs",
        "--env",
        env,
        "--image",
        image,
        "--yes",
        "--wait-timeout",
        "60",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// The workspace's CloudWatch dashboard body, as GetDashboard answers it.
pub async fn dashboard_body(aws: &AwsClients, env: &str) -> serde_json::Value {
    use tier_medium::aws::MediumAws;
    let d = aws
        .cloudwatch()
        .get_dashboard()
        .dashboard_name(format!("agentbus-{env}"))
        .send()
        .await
        .unwrap();
    serde_json::from_str(d.dashboard_body().unwrap()).unwrap()
}

/// Destroys a test's workspace, data and all: every workspace holds one of the region's ten
/// CloudWatch Logs resource policies, in the emulator as on AWS, so none is left behind.
pub fn destroy_all(env: &str) {
    let r = agentbus(&["destroy", "--env", env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// The image reference the tests deploy: in moto's ECR (see [`seed_fixture_image`]); never
/// pulled, as the emulator runs no containers.
pub const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/e2e-fixtures/agentbus:test";

/// The agents' image reference the medium tests deploy (in moto's ECR, never pulled).
pub const AGENT_IMAGE: &str =
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/e2e-fixtures/agentbus-agent:test";

/// A registry (Debian's docker-registry, the CNCF distribution server) on 127.0.0.1 for
/// this test process, started on first use and stopped by a watchdog when the process exits.
pub struct LocalRegistry {
    /// `127.0.0.1:PORT`
    pub host: String,
    _watchdog: std::sync::Mutex<std::process::Child>,
}

static REGISTRY: OnceLock<LocalRegistry> = OnceLock::new();
static REGISTRY_WITH_LOGIN: OnceLock<LocalRegistry> = OnceLock::new();

/// The user and password [`registry_with_login`] takes.
pub const REGISTRY_USER: &str = "e2e";
pub const REGISTRY_PASSWORD: &str = "e2e-registry-secret";
/// `REGISTRY_PASSWORD` bcrypt-hashed, as the registry's htpasswd file holds it.
const REGISTRY_PASSWORD_BCRYPT: &str =
    "$2b$05$kYNPyAYr2j09ci3qBJ05oetMu2oqt6dX54qkO01rloXFXUB8MIiBS";

pub fn registry() -> &'static LocalRegistry {
    REGISTRY.get_or_init(|| start_registry("", None))
}

/// A second local registry that answers only [`REGISTRY_USER`] with [`REGISTRY_PASSWORD`]
/// (HTTP basic authentication from an htpasswd file, as private registries ask for a login).
pub fn registry_with_login() -> &'static LocalRegistry {
    REGISTRY_WITH_LOGIN.get_or_init(|| {
        start_registry(
            "-login",
            Some(&format!("{REGISTRY_USER}:{REGISTRY_PASSWORD_BCRYPT}\n")),
        )
    })
}

fn start_registry(tag: &str, htpasswd: Option<&str>) -> LocalRegistry {
    let bin = std::env::var("AGENTBUS_TEST_REGISTRY")
        .unwrap_or_else(|_| "/usr/bin/docker-registry".into());
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("agentbus-registry{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("registry dir");
    let config = dir.join("config.yml");
    let auth = match htpasswd {
        Some(entries) => {
            let file = dir.join("htpasswd");
            std::fs::write(&file, entries).expect("htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: agentbus-e2e\n    path: {}\n",
                file.display()
            )
        }
        None => String::new(),
    };
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.join("data").display()
        ),
    )
    .expect("registry config");
    let script = format!(
        "parent=$PPID; \"{bin}\" serve \"{}\" >/dev/null 2>&1 & r=$!; \
         while kill -0 $parent 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 1; done; kill $r 2>/dev/null; rm -rf \"{}\"",
        config.display(),
        dir.display()
    );
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}; scripts/test.sh installs it"));
    wait_for_port(
        port,
        Duration::from_secs(30),
        &format!("{bin} (scripts/test.sh installs docker-registry)"),
    );
    LocalRegistry {
        host: format!("127.0.0.1:{port}"),
        _watchdog: std::sync::Mutex::new(watchdog),
    }
}

/// Asserts that an AWS read failed because the thing is not there: a service error that
/// `missing` recognises (the SDK's typed accessor where it models the error), not just any
/// error (a refused connection, an access denial or a throttle would pass `is_err()`).
pub fn assert_absent<T: std::fmt::Debug, E: std::fmt::Debug, R: std::fmt::Debug>(
    result: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
    missing: impl Fn(&E) -> bool,
    what: &str,
) {
    match result {
        Err(e) if e.as_service_error().is_some_and(&missing) => {}
        other => panic!("{what} should be gone, with a not-found answer: {other:?}"),
    }
}

/// The deploy lock's item of workspace `env`, read consistently with the SDK.
pub async fn lock_item(
    aws: &AwsClients,
    env: &str,
) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    aws.dynamodb()
        .get_item()
        .table_name(format!("agentbus-{env}-deploy"))
        .key("pk", AttributeValue::S("lock".into()))
        .key("sk", AttributeValue::S("lock".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}
