//! Faults, not only happy paths: deploys through an emulator that throttles, fails, answers
//! slowly and loses connections (tests/moto/fault_proxy.py), and deploys, tier moves and
//! destroys killed with SIGKILL at seeded points, each finished by the next run.
//!
//! What a run leaves is read back with raw SDK calls (the inventory below) and compared with
//! what the same steps leave when nothing goes wrong: nothing orphaned, nothing missing.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use tier_large::aws::LargeAws;
use tier_medium::aws::MediumAws;
use tier_small::aws::SmallAws;
use tier_xs::aws::AwsClients;

use crate::harness::{
    AGENT_IMAGE, IMAGE, Moto, Run, agentbus_command, clients_at, python, run, start_moto,
};
use crate::server::http;

/// tests/moto/fault_proxy.py in front of a moto of its own.
struct FaultProxy {
    port: u16,
    child: Child,
}

impl FaultProxy {
    fn start(moto: &Moto) -> FaultProxy {
        let upstream = moto.url.trim_start_matches("http://");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/moto/fault_proxy.py"
        );
        let mut child = Command::new(python())
            .args([script, "--upstream", upstream])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the fault proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("the fault proxy prints its port");
        let port = line.trim().parse().expect("a port number");
        FaultProxy { port, child }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, config: Value) {
        let (status, body) = http(
            self.port,
            "POST",
            "/__faults/config",
            None,
            Some(&config.to_string()),
        );
        assert_eq!(status, 200, "fault proxy config: {body}");
    }

    fn state(&self) -> Value {
        let (status, body) = http(self.port, "GET", "/__faults/state", None, None);
        assert_eq!(status, 200, "fault proxy state: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn calls(&self) -> u64 {
        self.state()["calls"].as_u64().unwrap()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_at(url: &str, args: &[&str]) -> Run {
    run(agentbus_command(url, args))
}

/// Runs `args` until it is not refused for a lock a killed run left behind (its lease
/// expires a few seconds after its last heartbeat), at most 30 s; fails the test unless it
/// then succeeds.
fn run_after_kill(url: &str, args: &[&str]) -> Run {
    let start = Instant::now();
    loop {
        let r = run_at(url, args);
        if r.code != 0
            && r.stderr.contains("is locked by")
            && start.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        assert_eq!(r.code, 0, "{args:?} after a killed run: {r:?}");
        return r;
    }
}

/// `deploy TIER` of workspace `env` as these tests run it (medium and large with the agents'
/// image).
fn deploy_args(tier: &str, env: &str) -> Vec<String> {
    let mut args = [
        "deploy",
        tier,
        "--env",
        env,
        "--image",
        IMAGE,
        "--yes",
        "--parallelism",
        "8",
        "--wait-timeout",
        "60",
    ]
    .map(String::from)
    .to_vec();
    if matches!(tier, "medium" | "large") {
        args.extend(["--agent-image".to_string(), AGENT_IMAGE.to_string()]);
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The steps of a workspace's life the kill test interrupts.
#[derive(Clone, Copy, Debug)]
enum Step {
    DeployXs,
    MoveToSmall,
    /// Medium's resources and large's own at once (the top of the ladder).
    MoveToLarge,
    MoveBackToXs,
    Destroy,
}

impl Step {
    const ALL: [Step; 5] = [
        Step::DeployXs,
        Step::MoveToSmall,
        Step::MoveToLarge,
        Step::MoveBackToXs,
        Step::Destroy,
    ];

    fn args(self, env: &str) -> Vec<String> {
        // A short lease: the run after a kill takes the lock over soon.
        let deploy = |tier: &str| {
            let mut args = deploy_args(tier, env);
            args.extend(["--lock-ttl".to_string(), "3".to_string()]);
            args
        };
        match self {
            Step::DeployXs | Step::MoveBackToXs => deploy("xs"),
            Step::MoveToSmall => deploy("small"),
            Step::MoveToLarge => deploy("large"),
            Step::Destroy => ["destroy", "--env", env, "--yes", "--lock-ttl", "3"]
                .map(String::from)
                .to_vec(),
        }
    }

    /// The tier a plan after this step is made for (`None`: nothing is deployed).
    fn tier(self) -> Option<&'static str> {
        match self {
            Step::DeployXs | Step::MoveBackToXs => Some("xs"),
            Step::MoveToSmall => Some("small"),
            Step::MoveToLarge => Some("large"),
            Step::Destroy => None,
        }
    }
}

/// Everything in the emulator that belongs to workspace `env`, read with raw SDK calls, the
/// env's name replaced by `ENV` so that two workspaces compare. Task definition revisions
/// count by family (their numbers differ), listeners and ingress rules by port.
async fn inventory(aws: &AwsClients, env: &str) -> BTreeSet<String> {
    let ws = format!("agentbus-{env}");
    let mut out = BTreeSet::new();
    let mut add = |kind: &str, name: String| {
        let name = name.replace(env, "ENV");
        let mut n = 0;
        while !out.insert(format!("{kind} {name} #{n}")) {
            n += 1;
        }
    };
    for t in aws
        .dynamodb()
        .list_tables()
        .send()
        .await
        .unwrap()
        .table_names()
    {
        if t.starts_with(&format!("{ws}-")) {
            add("dynamodb table", t.clone());
        }
    }
    let buses = aws
        .events()
        .list_event_buses()
        .name_prefix(&ws)
        .send()
        .await
        .unwrap();
    for b in buses.event_buses() {
        let name = b.name().unwrap_or_default().to_string();
        add("eventbridge bus", name.clone());
        let rules = aws
            .events()
            .list_rules()
            .event_bus_name(&name)
            .send()
            .await
            .unwrap();
        for r in rules.rules() {
            add("eventbridge rule", r.name().unwrap_or_default().to_string());
            let targets = aws
                .events()
                .list_targets_by_rule()
                .event_bus_name(&name)
                .rule(r.name().unwrap_or_default())
                .send()
                .await
                .unwrap();
            for t in targets.targets() {
                add("eventbridge target", t.id().to_string());
            }
        }
    }
    let secrets = aws
        .secrets()
        .list_secrets()
        .filters(
            aws_sdk_secretsmanager::types::Filter::builder()
                .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                .values(format!("agentbus/{env}/"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    for s in secrets.secret_list() {
        if s.deleted_date().is_none() {
            add("secret", s.name().unwrap_or_default().to_string());
        }
    }
    let clusters = aws
        .ecs()
        .describe_clusters()
        .clusters(&ws)
        .send()
        .await
        .unwrap();
    for c in clusters.clusters() {
        if c.status() == Some("ACTIVE") {
            add(
                "ecs cluster",
                c.cluster_name().unwrap_or_default().to_string(),
            );
            let services = aws.ecs().list_services().cluster(&ws).send().await.unwrap();
            for s in services.service_arns() {
                add("ecs service", s.rsplit('/').next().unwrap().to_string());
            }
        }
    }
    // ListTaskDefinitions' familyPrefix is a whole family name; the families' is a prefix.
    let families = aws
        .ecs()
        .list_task_definition_families()
        .family_prefix(&ws)
        .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active)
        .send()
        .await
        .unwrap();
    for family in families.families() {
        let tds = aws
            .ecs()
            .list_task_definitions()
            .family_prefix(family)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await
            .unwrap();
        for _ in tds.task_definition_arns() {
            add("ecs task definition", family.clone());
        }
    }
    // IAM and RDS through boto3 (the product's clients of both are its own), in one run.
    const IAM_AND_RDS: &str = "ws = sys.argv[1]\n\
        iam, rds, out = boto3.client('iam'), boto3.client('rds'), []\n\
        for page in iam.get_paginator('list_roles').paginate():\n\
        \x20   for r in page['Roles']:\n\
        \x20       n = r['RoleName']\n\
        \x20       if not n.startswith(ws + '-'): continue\n\
        \x20       out.append(['iam role', n])\n\
        \x20       out += [['iam role policy', n + '/' + p] for p in iam.list_role_policies(RoleName=n)['PolicyNames']]\n\
        \x20       out += [['iam attached policy', n + '/' + p['PolicyName']] for p in iam.list_attached_role_policies(RoleName=n)['AttachedPolicies']]\n\
        out += [['db subnet group', g['DBSubnetGroupName']] for g in rds.describe_db_subnet_groups()['DBSubnetGroups']]\n\
        out += [['db cluster', c['DBClusterIdentifier']] for c in rds.describe_db_clusters()['DBClusters']]\n\
        out += [['db instance', i['DBInstanceIdentifier']] for i in rds.describe_db_instances()['DBInstances']]\n\
        print(json.dumps([[k, n] for k, n in out if n.startswith(ws)]))";
    let found = crate::harness::boto_script(aws, IAM_AND_RDS, &[&ws]).await;
    for pair in found.as_array().into_iter().flatten() {
        add(
            pair[0].as_str().unwrap_or_default(),
            pair[1].as_str().unwrap_or_default().to_string(),
        );
    }
    let groups = aws.logs().describe_log_groups().send().await.unwrap();
    for g in groups.log_groups() {
        let name = g.log_group_name().unwrap_or_default();
        if name.contains(&ws) {
            add("log group", name.to_string());
        }
    }
    let policies = aws
        .logs()
        .describe_resource_policies()
        .send()
        .await
        .unwrap();
    for p in policies.resource_policies() {
        let name = p.policy_name().unwrap_or_default();
        if name.contains(&ws) {
            add("logs resource policy", name.to_string());
        }
    }
    let repos = aws.ecr().describe_repositories().send().await.unwrap();
    for r in repos.repositories() {
        let name = r.repository_name().unwrap_or_default();
        if name.contains(&ws) {
            add("ecr repository", name.to_string());
        }
    }
    let sgs = crate::harness::ec2(
        aws,
        "describe_security_groups",
        json!({"Filters": [{"Name": "tag:agentbus:workspace", "Values": [ws]}]}),
    )
    .await;
    for g in sgs["SecurityGroups"].as_array().unwrap() {
        let name = g["GroupName"].as_str().unwrap_or_default().to_string();
        add("security group", name.clone());
        for p in g["IpPermissions"].as_array().unwrap() {
            add(
                "security group ingress",
                format!("{name}:{:?}", p["FromPort"].as_i64()),
            );
        }
    }
    let budgets = aws
        .budgets()
        .describe_budgets()
        .account_id("123456789012")
        .send()
        .await;
    // moto answers NotFoundException when the account has no budget at all.
    if let Ok(b) = budgets {
        for b in b.budgets() {
            if b.budget_name().starts_with(&ws) {
                add("budget", b.budget_name().to_string());
            }
        }
    }
    let buckets = aws.s3().list_buckets().send().await.unwrap();
    for b in buckets.buckets() {
        let name = b.name().unwrap_or_default();
        if name.starts_with(&format!("{ws}-")) {
            add("s3 bucket", name.to_string());
        }
    }
    let lbs = aws.elb().describe_load_balancers().send().await.unwrap();
    for lb in lbs.load_balancers() {
        let name = lb.load_balancer_name().unwrap_or_default().to_string();
        if name.starts_with(&ws) {
            add("load balancer", name.clone());
            let listeners = aws
                .elb()
                .describe_listeners()
                .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
                .send()
                .await
                .unwrap();
            for l in listeners.listeners() {
                add("listener", format!("{name}:{:?}", l.port()));
            }
        }
    }
    let tgs = aws.elb().describe_target_groups().send().await.unwrap();
    for tg in tgs.target_groups() {
        let name = tg.target_group_name().unwrap_or_default();
        if name.starts_with(&ws) {
            add("target group", name.to_string());
        }
    }
    let queues = aws
        .sqs()
        .list_queues()
        .queue_name_prefix(&ws)
        .send()
        .await
        .unwrap();
    for q in queues.queue_urls() {
        add("sqs queue", q.rsplit('/').next().unwrap().to_string());
    }
    let machines = aws.sfn().list_state_machines().send().await.unwrap();
    for m in machines.state_machines() {
        if m.name().starts_with(&ws) {
            add("state machine", m.name().to_string());
        }
    }
    let topics = aws.sns().list_topics().send().await.unwrap();
    for t in topics.topics() {
        let name = t
            .topic_arn()
            .unwrap_or_default()
            .rsplit(':')
            .next()
            .unwrap();
        if name.starts_with(&ws) {
            add("sns topic", name.to_string());
        }
    }
    let alarms = aws
        .cloudwatch()
        .describe_alarms()
        .alarm_name_prefix(&ws)
        .send()
        .await
        .unwrap();
    for a in alarms.metric_alarms() {
        add("alarm", a.alarm_name().unwrap_or_default().to_string());
    }
    let dashboards = aws
        .cloudwatch()
        .list_dashboards()
        .dashboard_name_prefix(&ws)
        .send()
        .await
        .unwrap();
    for d in dashboards.dashboard_entries() {
        add(
            "dashboard",
            d.dashboard_name().unwrap_or_default().to_string(),
        );
    }
    let filters = aws.logs().describe_metric_filters().send().await.unwrap();
    for f in filters.metric_filters() {
        let name = f.filter_name().unwrap_or_default();
        if name.contains(&ws) {
            add("metric filter", name.to_string());
        }
    }
    // The large tier's autoscalers (its database is read by boto3 above, with IAM).
    for ns in [
        aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs,
        aws_sdk_applicationautoscaling::types::ServiceNamespace::Rds,
    ] {
        let targets = aws
            .autoscaling()
            .describe_scalable_targets()
            .service_namespace(ns.clone())
            .send()
            .await
            .unwrap();
        for t in targets.scalable_targets() {
            if t.resource_id().contains(&ws) {
                add("scalable target", t.resource_id().to_string());
            }
        }
        let policies = aws
            .autoscaling()
            .describe_scaling_policies()
            .service_namespace(ns)
            .send()
            .await
            .unwrap();
        for p in policies.scaling_policies() {
            if p.resource_id().contains(&ws) {
                add("scaling policy", p.policy_name().to_string());
            }
        }
    }
    out
}

/// The workspace's data as a test left it: a KV entry (the table is the xs tier's data).
async fn kv_entry(aws: &AwsClients, env: &str) -> Option<String> {
    let item = aws
        .dynamodb()
        .get_item()
        .table_name(format!("agentbus-{env}-kv"))
        .key("pk", AttributeValue::S("tenant-a#default".into()))
        .key("sk", AttributeValue::S("survivor".into()))
        .send()
        .await
        .ok()?;
    match item.item?.get("value")? {
        AttributeValue::S(s) => Some(s.clone()),
        _ => None,
    }
}

/// The plan for `tier` through the clean endpoint: exit 0 of `--detailed-exitcode` says
/// there is nothing to change.
fn assert_converged(url: &str, env: &str, tier: &str, why: &str) {
    let p = run_at(url, &["plan", tier, "--env", env, "--detailed-exitcode"]);
    assert_eq!(p.code, 0, "{why}: the next plan is not empty: {p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_through_throttling_500s_slow_answers_and_lost_connections_converges() {
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto);
    let aws = clients_at(&moto.url, "testing", "testing").await;
    let (env, clean) = ("faults", "faultref");
    // One in four calls fails once or twice (never more often than the SDK retries):
    // throttled, a 500, slow, refused before it reaches the emulator, or carried out with its
    // answer lost. And every call that changes something is carried out and its answer lost
    // the first time, so the SDK makes each change twice.
    let faults = json!({
        "seed": 17, "throttle": 0.06, "error": 0.05, "slow": 0.04, "slow_ms": 400,
        "drop_before": 0.05, "drop_after": 0.06, "max_faults_per_call": 2,
        "lose_first_answer": WRITES,
    });

    // Up to the top of the ladder (large holds medium's resources too).
    for tier in ["xs", "small", "large"] {
        let deploy = |env: &str, url: &str| {
            let r = run_at(url, &strs(&deploy_args(tier, env)));
            assert_eq!(r.code, 0, "deploy {tier} into {env}: {r:?}");
        };
        proxy.set(faults.clone());
        deploy(env, &proxy.url());
        proxy.set(json!({}));
        assert_converged(&moto.url, env, tier, "after a deploy through faults");
        deploy(clean, &moto.url);
        assert_eq!(
            inventory(&aws, env).await,
            inventory(&aws, clean).await,
            "{tier}: the deploy through faults left something the same deploy without them does not"
        );
    }
    // Every kind of fault happened, and lost answers of calls that change things among them.
    let state = proxy.state();
    for fault in ["throttle", "error", "slow", "drop_before", "drop_after"] {
        assert!(state["injected"][fault].as_u64().unwrap() >= 3, "{state}");
    }
    let lost: BTreeSet<&str> = state["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[2] == "drop_after")
        .map(|e| e[1].as_str().unwrap())
        .collect();
    for op in [
        "CreateTable",
        "CreateSecurityGroup",
        "RegisterTaskDefinition",
        "CreateService",
        "CreateRole",
        "CreateSecret",
        "CreateLoadBalancer",
        "CreateTargetGroup",
        "CreateListener",
        "CreateQueue",
        "CreateStateMachine",
        "CreateTopic",
        "PutMetricAlarm",
        "PutDashboard",
        "PutMetricFilter",
    ] {
        assert!(
            lost.iter().any(|l| l.ends_with(op)),
            "{op} never lost its answer: {lost:?}"
        );
    }
    // A destroy through the same faults, each deletion made twice, leaves nothing.
    proxy.set(faults);
    let r = run_at(
        &proxy.url(),
        &["destroy", "--env", env, "--yes", "--destroy-data"],
    );
    assert_eq!(r.code, 0, "destroy through faults: {r:?}");
    proxy.set(json!({}));
    assert!(
        inventory(&aws, env).await.is_empty(),
        "{:?}",
        inventory(&aws, env).await
    );
    let lost = proxy.state()["log"].to_string();
    for op in [
        "DeleteTable",
        "DeleteService",
        "DeleteRole",
        "DeleteLoadBalancer",
        "DeleteSecurityGroup",
    ] {
        assert!(lost.contains(op), "{op} never lost its answer");
    }
    let r = run_at(
        &moto.url,
        &["destroy", "--env", clean, "--yes", "--destroy-data"],
    );
    assert_eq!(r.code, 0, "{r:?}");
}

/// The operations that change something, by the verb their names begin with (after the JSON
/// protocols' `Service.` prefix), as the proxy's regular expression.
const WRITES: &str = r"(^|\.)(Create|Put|Register|Update|Delete|Deregister|Tag|Untag|Attach|Detach|Authorize|Revoke)";

/// A tiny seeded generator (SplitMix64): the kill points of a seed are the same on every
/// machine.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// Runs `args` through the proxy and kills it with SIGKILL when it makes its `at`-th call
/// (the proxy holds that call and every later one). Returns whether it was killed (a run
/// may end before it makes that many calls).
fn kill_at_call(proxy: &FaultProxy, args: &[String], at: u64) -> bool {
    let first = proxy.calls() + at;
    proxy.set(json!({ "hold_at": first }));
    let mut child = agentbus_command(&proxy.url(), &strs(args))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run agentbus");
    let start = Instant::now();
    let killed = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if proxy.state()["held"].as_u64().unwrap() > 0 {
            child.kill().unwrap();
            child.wait().unwrap();
            break true;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{args:?} neither ended nor reached call {at}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // The held calls are dropped: their client is gone.
    proxy.set(json!({}));
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_tier_moves_and_destroys_killed_at_seeded_points_are_finished_by_the_next_run() {
    let seed: u64 = std::env::var("AGENTBUS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let chains: usize = std::env::var("AGENTBUS_KILL_CHAINS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto);
    let aws = clients_at(&moto.url, "testing", "testing").await;

    // The oracle: each step run once without interruption, what it leaves and how many calls
    // it makes.
    let reference = "killref";
    let mut expected = Vec::new();
    let mut calls = Vec::new();
    for step in Step::ALL {
        let before = proxy.calls();
        let args = step.args(reference);
        let r = run_at(&proxy.url(), &strs(&args));
        assert_eq!(r.code, 0, "{step:?}: {r:?}");
        calls.push(proxy.calls() - before);
        expected.push(inventory(&aws, reference).await);
        if matches!(step, Step::DeployXs) {
            put_survivor(&aws, reference).await;
        }
    }
    let r = run_at(
        &moto.url,
        &["destroy", "--env", reference, "--yes", "--destroy-data"],
    );
    assert_eq!(r.code, 0, "{r:?}");

    // The kill points, drawn in order from the seed; then the chains run side by side, each
    // through a proxy of its own (a kill point counts that proxy's calls), since most of a
    // trial is waiting for the killed run's lease to expire.
    let mut rng = Seeded(seed);
    let points: Vec<Vec<u64>> = (0..chains)
        .map(|_| calls.iter().map(|&n| 1 + rng.below(n)).collect())
        .collect();
    let runtime = tokio::runtime::Handle::current();
    let trials: usize = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let chains: Vec<_> = points
                .iter()
                .enumerate()
                .map(|(chain, at)| {
                    let (moto, aws, calls, expected) = (&moto, &aws, &calls, &expected);
                    let runtime = runtime.clone();
                    s.spawn(move || {
                        let env = format!("kill{chain}");
                        runtime.block_on(kill_chain(moto, aws, &env, seed, at, calls, expected))
                    })
                })
                .collect();
            chains
                .into_iter()
                .map(|c| c.join().expect("a chain failed: its message is above"))
                .sum()
        })
    });
    let runs = Step::ALL.len() * chains;
    assert!(
        trials >= runs * 9 / 10,
        "only {trials} of {runs} runs were killed before they ended"
    );
}

/// One workspace through every step, each killed at its point `at[i]` (of `calls[i]`) and then
/// finished by a normal run, checked against the uninterrupted run's inventory; then
/// destroyed. Returns how many runs were killed before they ended.
async fn kill_chain(
    moto: &Moto,
    aws: &AwsClients,
    env: &str,
    seed: u64,
    at: &[u64],
    calls: &[u64],
    expected: &[BTreeSet<String>],
) -> usize {
    let proxy = FaultProxy::start(moto);
    let mut trials = 0;
    for (i, step) in Step::ALL.into_iter().enumerate() {
        let args = step.args(env);
        let why = format!(
            "seed {seed}, {env}: {step:?} killed at call {} of {}",
            at[i], calls[i]
        );
        if kill_at_call(&proxy, &args, at[i]) {
            trials += 1;
        }
        run_after_kill(&moto.url, &strs(&args));
        if let Some(tier) = step.tier() {
            assert_converged(&moto.url, env, tier, &why);
        }
        assert_eq!(inventory(aws, env).await, expected[i], "{why}");
        if matches!(step, Step::DeployXs) {
            put_survivor(aws, env).await;
        } else {
            assert_eq!(
                kv_entry(aws, env).await.as_deref(),
                Some("kept"),
                "{why}: the data survives"
            );
        }
    }
    let r = run_at(
        &moto.url,
        &["destroy", "--env", env, "--yes", "--destroy-data"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(inventory(aws, env).await.is_empty(), "{env}: left behind");
    trials
}

async fn put_survivor(aws: &AwsClients, env: &str) {
    aws.dynamodb()
        .put_item()
        .table_name(format!("agentbus-{env}-kv"))
        .item("pk", AttributeValue::S("tenant-a#default".into()))
        .item("sk", AttributeValue::S("survivor".into()))
        .item("value", AttributeValue::S("kept".into()))
        .send()
        .await
        .unwrap();
}

/// Ctrl-C during a deploy at parallelism 8, through the CLI: the calls in flight (held by the
/// proxy until after the signal) finish, nothing new starts, the apply is recorded as
/// interrupted and the lock released at once (not left to expire), and the next deploy
/// finishes the rest to exactly what an uninterrupted deploy leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_deploy_lets_calls_in_flight_finish_and_the_next_deploy_does_the_rest() {
    use std::io::Read;
    let moto = start_moto();
    let proxy = FaultProxy::start(&moto);
    let aws = clients_at(&moto.url, "testing", "testing").await;
    let deploy = |env: &str| deploy_args("xs", env);
    // An uninterrupted deploy: what it leaves and how many calls it makes. The last thirty
    // calls are well inside its apply (after it, only the record, the settings and the lock).
    let reference = deploy("ctrlref");
    let r = run_at(&proxy.url(), &strs(&reference));
    assert_eq!(r.code, 0, "{r:?}");
    let calls = proxy.calls();
    let expected = inventory(&aws, "ctrlref").await;

    let env = "ctrlc";
    let args = deploy(env);
    proxy.set(json!({ "hold_at": proxy.calls() + calls - 30 }));
    let mut child = agentbus_command(&proxy.url(), &strs(&args))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run agentbus");
    let start = Instant::now();
    while proxy.state()["held"].as_u64().unwrap() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the deploy never reached its apply"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the deploy ended before the hold"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sigint = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sigint.success());
    // The deploy says it was interrupted before the held calls go on.
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("interrupted: the changes in flight finish") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    proxy.set(json!({}));
    stderr.read_to_end(&mut seen).unwrap();
    let status = child.wait().unwrap();
    let stderr = String::from_utf8_lossy(&seen);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted: every change above that shows ✓ is complete"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not started"),
        "something was left for the next deploy: {stderr}"
    );
    // The calls in flight finished: no change failed or was cut off.
    assert!(!stderr.contains("FAILED"), "{stderr}");

    // The lock is released, not left to expire: the item has no lease.
    let item = crate::harness::lock_item(&aws, env).await.unwrap();
    assert!(!item.contains_key("lease_id"), "{item:?}");

    // The next deploy starts at once and finishes the rest.
    let r = run_at(&moto.url, &strs(&args));
    assert_eq!(r.code, 0, "{r:?}");
    assert_converged(&moto.url, env, "xs", "after the interrupted deploy");
    assert_eq!(inventory(&aws, env).await, expected);
    let status = run_at(&moto.url, &["status", "--env", env, "--json"]).json();
    let history = status["history"].as_array().unwrap();
    assert_eq!(
        (
            history[0]["succeeded"].clone(),
            history[1]["cancelled"].clone()
        ),
        (json!(true), json!(true)),
        "{status}"
    );
}
