//! The medium tier against moto: a small workspace with data upgraded to medium (only
//! additions and the dashboard's in-place changes), the configuration as AWS describes it
//! (the state machine and its role, one role per lane, the agents' task definitions, alarms
//! with their actions, a dashboard whose widgets name what is deployed), drift repaired, and
//! medium → small → medium keeping the data.
//!
//! Read back with the SDKs' own calls, and the deployed definition checked by asl-validator.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tier_medium::aws::MediumAws;
use tier_small::aws::SmallAws;
use tier_small::config::SmallConfig;
use tier_small::runtime::artifacts::{ArtifactStore, S3Artifacts};
use tier_xs::aws::AwsClients;
use tier_xs::config::ServerConfig;
use tier_xs::runtime::Tenant;
use tier_xs::runtime::kv::{DynamoKv, KvStore, Ttl};
use tier_xs::workspace::{Env, Tier, Workspace};

use crate::harness::{AGENT_IMAGE, actions, agentbus, clients, deploy_xs, unique_env};

/// What the medium tier adds, and which of it a downgrade keeps (logs and dead letters).
const MEDIUM_IDS: [&str; 40] = [
    "agents-security-group",
    "agents-execution-role",
    "agent-read-only-role",
    "agent-dry-run-role",
    "agent-execute-role",
    "conductor-log-group",
    "critic-log-group",
    "sweeper-log-group",
    "conductor-task-definition",
    "critic-task-definition",
    "sweeper-task-definition",
    "conductor-errors-filter",
    "critic-errors-filter",
    "sweeper-errors-filter",
    "workflow-log-group",
    "workflow-role",
    "state-machine",
    "approvals-queue",
    "approvals-dead-letter-queue",
    "alerts-topic",
    "cloudwatch-dashboard",
    "workflow-failed-alarm",
    "workflow-timed-out-alarm",
    "workflow-aborted-alarm",
    "approvals-expired-alarm",
    "approvals-untaken-alarm",
    "approvals-expired-filter",
    "runs-table",
    "approvals-dead-letters-alarm",
    "events-dead-letters-alarm",
    "dashboard-down-alarm",
    "dashboard-cpu-alarm",
    "dashboard-memory-alarm",
    "load-balancer-5xx-alarm",
    "unhealthy-targets-alarm",
    "agent-errors-alarm",
    // Not medium's own, but changed in place for it.
    "dashboard-task-definition",
    "dashboard-task-role",
    "dashboard-service",
    // The agents' tasks reach the dashboard inside the VPC.
    "dashboard-security-group",
];
const KEPT_IDS: [&str; 6] = [
    "runs-table",
    "conductor-log-group",
    "critic-log-group",
    "sweeper-log-group",
    "workflow-log-group",
    "approvals-dead-letter-queue",
];

const AGENTS: [&str; 3] = ["conductor", "critic", "sweeper"];

#[tokio::test]
async fn small_upgrades_to_medium_and_back_keeping_its_data() {
    let env = unique_env("md");
    deploy_xs(&env);
    let cidr = ["--allow-cidr", "203.0.113.0/24"];
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
    let aws = clients().await;
    let ws = Workspace::new(Env::new(&env).unwrap(), "123456789012", "us-east-1");
    let acme = Tenant::new("acme").unwrap();
    let kv = DynamoKv::new(
        aws.dynamodb(),
        &ServerConfig::for_workspace(&ws, Tier::Small).kv_table,
    );
    kv.set(&acme, "kept", "through medium", Ttl::Never)
        .await
        .unwrap();
    let artifacts = S3Artifacts::new(aws.s3(), &SmallConfig::for_workspace(&ws).artifacts_bucket);
    artifacts
        .put(&acme, "notes/kept.txt", b"kept", "text/plain")
        .await
        .unwrap();

    // The upgrade: the medium resources are created; of the rest only the dashboard changes
    // in place (its names, its rights, its service's revision) and the budget follows the
    // tier's estimate.
    let medium = [
        "--agent-image",
        AGENT_IMAGE,
        "--alert-email",
        "ops@example.com",
    ];
    let p = agentbus(&[&["plan", "medium", "--env", &env, "--json"][..], &medium].concat());
    assert_eq!(p.code, 0, "{p:?}");
    let a = actions(&p.json()["plan"]);
    for (id, action) in &a {
        if MEDIUM_IDS[..36].contains(&id.as_str()) {
            assert_eq!(action, "create", "{id}: {a:?}");
        } else {
            assert_eq!(action, "update", "{id}: {a:?}");
            assert!(
                MEDIUM_IDS.contains(&id.as_str()) || id == "budget",
                "{id} should not change: {a:?}"
            );
        }
    }
    assert_eq!(a.len(), 41, "{a:?}");
    let r = agentbus(
        &[
            &[
                "deploy",
                "medium",
                "--env",
                &env,
                "--yes",
                "--wait-timeout",
                "60",
            ][..],
            &medium,
        ]
        .concat(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let again = agentbus(&["plan", "medium", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "converged: {again:?}");

    check_state_machine(&aws, &ws).await;
    check_lanes(&aws, &ws).await;
    check_agents(&aws, &ws).await;
    check_alarms_and_dashboard(&aws, &ws).await;
    check_dashboard_service(&aws, &ws).await;

    // Drift: an alarm's threshold, and the machine's logging turned up to every event with its
    // data (task tokens in the logs), both changed by hand, are put back.
    let alarm = format!("agentbus-{env}-workflow-failed");
    let before = aws
        .cloudwatch()
        .describe_alarms()
        .alarm_names(&alarm)
        .send()
        .await
        .unwrap()
        .metric_alarms()[0]
        .clone();
    aws.cloudwatch()
        .put_metric_alarm()
        .alarm_name(&alarm)
        .namespace(before.namespace().unwrap())
        .metric_name(before.metric_name().unwrap())
        .statistic(before.statistic().unwrap().clone())
        .set_dimensions(Some(before.dimensions().to_vec()))
        .period(300)
        .evaluation_periods(1)
        .threshold(50.0)
        .comparison_operator(before.comparison_operator().unwrap().clone())
        .send()
        .await
        .unwrap();
    let machine = machine_arn(&ws);
    aws.sfn()
        .update_state_machine()
        .state_machine_arn(&machine)
        .logging_configuration(
            aws_sdk_sfn::types::LoggingConfiguration::builder()
                .level(aws_sdk_sfn::types::LogLevel::All)
                .include_execution_data(true)
                .set_destinations(Some(
                    aws.sfn()
                        .describe_state_machine()
                        .state_machine_arn(&machine)
                        .send()
                        .await
                        .unwrap()
                        .logging_configuration()
                        .unwrap()
                        .destinations()
                        .to_vec(),
                ))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let drift = agentbus(&["plan", "medium", "--env", &env, "--json"]);
    let a = actions(&drift.json()["plan"]);
    assert_eq!(
        a,
        BTreeMap::from([
            ("state-machine".to_string(), "update".to_string()),
            ("workflow-failed-alarm".to_string(), "update".to_string()),
        ]),
        "{drift:?}"
    );
    let r = agentbus(&["deploy", "medium", "--env", &env, "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    let again = agentbus(&["plan", "medium", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "drift repaired: {again:?}");

    // Down to small: the workflow, agents and alarms go; their logs and dead letters stay.
    let p = agentbus(&["plan", "small", "--env", &env, "--json"]);
    let a = actions(&p.json()["plan"]);
    for id in &MEDIUM_IDS[..36] {
        let want = if KEPT_IDS.contains(id) {
            "keep"
        } else {
            "delete"
        };
        assert_eq!(a.get(*id).map(String::as_str), Some(want), "{id}: {a:?}");
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
    crate::harness::assert_absent(
        aws.sfn()
            .describe_state_machine()
            .state_machine_arn(&machine)
            .send()
            .await,
        aws_sdk_sfn::operation::describe_state_machine::DescribeStateMachineError::is_state_machine_does_not_exist,
        "the state machine",
    );
    let left = aws
        .cloudwatch()
        .describe_alarms()
        .alarm_name_prefix(format!("agentbus-{env}-"))
        .send()
        .await
        .unwrap();
    assert!(left.metric_alarms().is_empty(), "{left:?}");
    for agent in AGENTS {
        assert_eq!(
            retention(&aws, &format!("/ecs/agentbus-{env}-{agent}")).await,
            Some(30)
        );
    }
    let again = agentbus(&["plan", "small", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "small converged: {again:?}");

    // And back up: the remembered settings bring the same medium tier.
    let r = agentbus(&[
        "deploy",
        "medium",
        "--env",
        &env,
        "--yes",
        "--wait-timeout",
        "60",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let again = agentbus(&["plan", "medium", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "converged after the round trip: {again:?}");
    check_state_machine(&aws, &ws).await;

    // The data came through both moves.
    assert_eq!(
        kv.get(&acme, "kept").await.unwrap().unwrap().value,
        "through medium"
    );
    let (_, body) = artifacts
        .get(&acme, "notes/kept.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body, b"kept");
    crate::harness::destroy_all(&env);
}

fn machine_arn(ws: &Workspace) -> String {
    format!(
        "arn:aws:states:us-east-1:123456789012:stateMachine:agentbus-{}-lanes",
        ws.env
    )
}

fn role_arn(ws: &Workspace, name: &str) -> String {
    format!("arn:aws:iam::123456789012:role/agentbus-{}-{name}", ws.env)
}

async fn retention(aws: &AwsClients, group: &str) -> Option<i32> {
    aws.logs()
        .describe_log_groups()
        .log_group_name_prefix(group)
        .send()
        .await
        .unwrap()
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(group))
        .and_then(|g| g.retention_in_days())
}

pub(crate) async fn inline_policy(aws: &AwsClients, role: &str) -> Value {
    crate::harness::boto(
        aws,
        "iam",
        "get_role_policy",
        serde_json::json!({"RoleName": role, "PolicyName": role}),
    )
    .await["PolicyDocument"]
        .take()
}

/// Every action a policy allows, with the resources it names.
fn allowed(policy: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in policy["Statement"].as_array().unwrap() {
        let actions: Vec<String> = match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            v => serde_json::from_value(v.clone()).unwrap(),
        };
        let resources: Vec<String> = match &s["Resource"] {
            Value::String(r) => vec![r.clone()],
            v => serde_json::from_value(v.clone()).unwrap(),
        };
        for a in actions {
            out.entry(a).or_default().extend(resources.iter().cloned());
        }
    }
    out
}

/// npm's `asl-validator` (installed by scripts/test.sh) on a definition.
fn asl_validator(definition: &str) -> (bool, String) {
    let bin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/workflow/node_modules/.bin/asl-validator"
    );
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: run scripts/test.sh"
    );
    let file = std::env::temp_dir().join(format!("agentbus-e2e-asl-{}.json", std::process::id()));
    std::fs::write(&file, definition).unwrap();
    let out = std::process::Command::new(bin)
        .arg("--json-path")
        .arg(&file)
        .output()
        .expect("run asl-validator");
    let _ = std::fs::remove_file(&file);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn check_state_machine(aws: &AwsClients, ws: &Workspace) {
    let env = &ws.env;
    let d = aws
        .sfn()
        .describe_state_machine()
        .state_machine_arn(machine_arn(ws))
        .send()
        .await
        .unwrap();
    assert_eq!(d.r#type().as_str(), "STANDARD");
    assert_eq!(d.role_arn(), role_arn(ws, "workflow"));
    let logging = d.logging_configuration().unwrap();
    assert_eq!(logging.level().unwrap().as_str(), "ERROR");
    assert!(
        !logging.include_execution_data(),
        "task tokens stay out of the logs"
    );
    assert_eq!(
        logging.destinations()[0]
            .cloud_watch_logs_log_group()
            .unwrap()
            .log_group_arn()
            .unwrap(),
        format!(
            "arn:aws:logs:us-east-1:123456789012:log-group:/aws/vendedlogs/states/agentbus-{env}-lanes:*"
        )
    );
    assert!(d.tracing_configuration().unwrap().enabled());
    let (ok, why) = asl_validator(d.definition());
    assert!(ok, "the deployed definition is valid ASL: {why}");
    let def: Value = serde_json::from_str(d.definition()).unwrap();
    let sg = crate::harness::security_groups_named(aws, &format!("agentbus-{env}-agents")).await[0]
        ["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    // Each step runs its agent's task definition under its lane's role.
    for (path, agent, lane) in [
        (&def["States"]["Plan"], "conductor", "agent-read-only"),
        (&def["States"]["Review"], "critic", "agent-dry-run"),
        (
            &def["States"]["Execute"]["ItemProcessor"]["States"]["ExecuteSubtask"],
            "conductor",
            "agent-execute",
        ),
    ] {
        assert_eq!(
            path["Resource"],
            "arn:aws:states:::ecs:runTask.waitForTaskToken"
        );
        let p = &path["Parameters"];
        assert_eq!(p["Cluster"], format!("agentbus-{env}"));
        assert_eq!(p["TaskDefinition"], format!("agentbus-{env}-{agent}"));
        assert_eq!(p["Overrides"]["TaskRoleArn"], role_arn(ws, lane));
        assert_eq!(
            p["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"][0],
            sg.as_str()
        );
        assert_eq!(
            p["CapacityProviderStrategy"][0]["CapacityProvider"],
            "FARGATE_SPOT"
        );
    }
    assert_eq!(
        def["States"]["AwaitApproval"]["Parameters"]["QueueUrl"],
        format!("https://sqs.us-east-1.amazonaws.com/123456789012/agentbus-{env}-approvals")
    );

    // Its role: RunTask on exactly the agents' task definitions, PassRole on exactly their
    // roles (to ECS only), the approvals queue, and log delivery.
    let role = inline_policy(aws, &format!("agentbus-{env}-workflow")).await;
    let a = allowed(&role);
    let families: BTreeSet<String> = AGENTS
        .iter()
        .map(|g| format!("arn:aws:ecs:us-east-1:123456789012:task-definition/agentbus-{env}-{g}:*"))
        .collect();
    assert_eq!(a["ecs:RunTask"], families);
    let pass: BTreeSet<String> = [
        "agent-read-only",
        "agent-dry-run",
        "agent-execute",
        "agents-execution",
    ]
    .iter()
    .map(|r| role_arn(ws, r))
    .collect();
    assert_eq!(a["iam:PassRole"], pass);
    let pass_statement = role["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"][0] == "iam:PassRole")
        .unwrap();
    assert_eq!(
        pass_statement["Condition"]["StringEquals"]["iam:PassedToService"],
        "ecs-tasks.amazonaws.com"
    );
    assert_eq!(
        a["sqs:SendMessage"],
        BTreeSet::from([format!(
            "arn:aws:sqs:us-east-1:123456789012:agentbus-{env}-approvals"
        )])
    );
    assert!(a.contains_key("logs:CreateLogDelivery"), "{a:?}");
    assert!(a.contains_key("xray:PutTraceSegments"), "{a:?}");
    let role = format!("agentbus-{env}-workflow");
    let trust = crate::harness::boto(
        aws,
        "iam",
        "get_role",
        serde_json::json!({"RoleName": role}),
    )
    .await["Role"]["AssumeRolePolicyDocument"]
        .take();
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "states.amazonaws.com"
    );
}

async fn check_lanes(aws: &AwsClients, ws: &Workspace) {
    let env = &ws.env;
    let mut lanes = Vec::new();
    for lane in ["read-only", "dry-run", "execute"] {
        lanes.push(allowed(
            &inline_policy(aws, &format!("agentbus-{env}-agent-{lane}")).await,
        ));
    }
    let [read_only, dry_run, execute] = &lanes[..] else {
        unreachable!()
    };
    let kv = format!("arn:aws:dynamodb:us-east-1:123456789012:table/agentbus-{env}-kv");
    for (name, lane) in [
        ("read-only", read_only),
        ("dry-run", dry_run),
        ("execute", execute),
    ] {
        assert!(
            lane["dynamodb:GetItem"].contains(&kv),
            "{name} reads the KV"
        );
        assert!(
            lane.contains_key("states:SendTaskSuccess"),
            "{name} answers its task token"
        );
    }
    assert!(!read_only.contains_key("dynamodb:PutItem"), "{read_only:?}");
    assert!(!read_only.contains_key("budgets:ViewBudget"));
    assert!(!dry_run.contains_key("dynamodb:PutItem"), "{dry_run:?}");
    assert!(dry_run.contains_key("budgets:ViewBudget"));
    assert!(execute["dynamodb:PutItem"].contains(&kv), "{execute:?}");
    assert!(execute.contains_key("events:PutEvents"));
    // Writes are scoped to the workspace's own resources.
    for resources in execute
        .iter()
        .filter(|(a, _)| a.ends_with("PutItem") || a.ends_with("DeleteObject"))
        .flat_map(|(_, r)| r)
    {
        assert!(
            resources.contains(&format!("agentbus-{env}-")),
            "{resources}"
        );
    }
}

async fn check_agents(aws: &AwsClients, ws: &Workspace) {
    let env = &ws.env;
    for agent in AGENTS {
        let td = aws
            .ecs()
            .describe_task_definition()
            .task_definition(format!("agentbus-{env}-{agent}"))
            .send()
            .await
            .unwrap();
        let td = td.task_definition().unwrap();
        assert_eq!(
            td.task_role_arn(),
            Some(role_arn(ws, "agent-read-only").as_str())
        );
        assert_eq!(
            td.execution_role_arn(),
            Some(role_arn(ws, "agents-execution").as_str())
        );
        let c = &td.container_definitions()[0];
        assert_eq!(c.name(), Some("agent"));
        assert_eq!(c.image(), Some(AGENT_IMAGE));
        assert!(c.port_mappings().is_empty(), "agents listen on nothing");
        let group = format!("/ecs/agentbus-{env}-{agent}");
        assert_eq!(
            c.log_configuration().unwrap().options().unwrap()["awslogs-group"],
            group
        );
        assert_eq!(retention(aws, &group).await, Some(30));
        let filters = aws
            .logs()
            .describe_metric_filters()
            .log_group_name(&group)
            .send()
            .await
            .unwrap();
        let t = &filters.metric_filters()[0].metric_transformations()[0];
        assert_eq!(
            (t.metric_namespace(), t.metric_name()),
            (format!("agentbus/{env}").as_str(), "AgentErrors")
        );
    }
    let sg = crate::harness::security_groups_named(aws, &format!("agentbus-{env}-agents")).await;
    assert_eq!(
        sg[0]["IpPermissions"],
        serde_json::json!([]),
        "nothing reaches the agents"
    );
}

/// Whether a metric's dimension names a deployed resource (each kind read back its own way).
async fn names_deployed(aws: &AwsClients, ws: &Workspace, name: &str, value: &str) -> bool {
    let env = &ws.env;
    match name {
        "StateMachineArn" => aws
            .sfn()
            .describe_state_machine()
            .state_machine_arn(value)
            .send()
            .await
            .is_ok(),
        "QueueName" => aws
            .sqs()
            .get_queue_url()
            .queue_name(value)
            .send()
            .await
            .is_ok(),
        "ClusterName" => value == format!("agentbus-{env}"),
        "ServiceName" => {
            let s = aws
                .ecs()
                .describe_services()
                .cluster(format!("agentbus-{env}"))
                .services(value)
                .send()
                .await
                .unwrap();
            s.services().iter().any(|s| s.status() == Some("ACTIVE"))
        }
        "LoadBalancer" => {
            let lb = aws
                .elb()
                .describe_load_balancers()
                .names(format!("agentbus-{env}-dash"))
                .send()
                .await
                .unwrap();
            lb.load_balancers()[0]
                .load_balancer_arn()
                .unwrap()
                .ends_with(&format!(":loadbalancer/{value}"))
        }
        "TargetGroup" => {
            let tg = aws
                .elb()
                .describe_target_groups()
                .names(format!("agentbus-{env}-dash"))
                .send()
                .await
                .unwrap();
            tg.target_groups()[0]
                .target_group_arn()
                .unwrap()
                .ends_with(&format!(":{value}"))
        }
        _ => false,
    }
}

async fn check_alarms_and_dashboard(aws: &AwsClients, ws: &Workspace) {
    let env = &ws.env;
    let topic = format!("arn:aws:sns:us-east-1:123456789012:agentbus-{env}-alerts");
    let subs = aws
        .sns()
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    assert_eq!(
        subs.subscriptions()
            .iter()
            .map(|s| (s.protocol().unwrap(), s.endpoint().unwrap()))
            .collect::<Vec<_>>(),
        vec![("email", "ops@example.com")]
    );
    let alarms = aws
        .cloudwatch()
        .describe_alarms()
        .alarm_name_prefix(format!("agentbus-{env}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(alarms.metric_alarms().len(), 13);
    for a in alarms.metric_alarms() {
        let name = a.alarm_name().unwrap();
        assert_eq!(a.alarm_actions(), std::slice::from_ref(&topic), "{name}");
        assert_eq!(a.ok_actions(), std::slice::from_ref(&topic), "{name}");
        assert!(
            a.alarm_description().is_some_and(|d| d.len() > 40),
            "{name} says what to do"
        );
        if a.namespace() == Some(&format!("agentbus/{env}")) {
            assert!(
                ["AgentErrors", "ApprovalsExpired"].contains(&a.metric_name().unwrap()),
                "{name}: a metric a filter of the workspace makes"
            );
        }
        for d in a.dimensions() {
            assert!(
                names_deployed(aws, ws, d.name().unwrap(), d.value().unwrap()).await,
                "{name}: {d:?} names nothing deployed"
            );
        }
    }

    let body = crate::harness::dashboard_body(aws, env.as_str()).await;
    let widgets = body["widgets"].as_array().unwrap();
    let mut metrics = 0;
    for w in widgets {
        match w["type"].as_str().unwrap() {
            "metric" => {
                for m in w["properties"]["metrics"].as_array().unwrap() {
                    let row = m.as_array().unwrap();
                    let names: Vec<&str> = row.iter().filter_map(Value::as_str).collect();
                    for pair in names[2..].chunks(2) {
                        assert!(
                            names_deployed(aws, ws, pair[0], pair[1]).await,
                            "widget {}: {pair:?} names nothing deployed",
                            w["properties"]["title"]
                        );
                    }
                    metrics += 1;
                }
            }
            "log" => {
                let q = w["properties"]["query"].as_str().unwrap();
                for agent in AGENTS {
                    assert!(
                        q.contains(&format!("SOURCE '/ecs/agentbus-{env}-{agent}'")),
                        "{q}"
                    );
                }
            }
            other => panic!("unexpected widget {other}"),
        }
    }
    assert!(metrics >= 15, "{body}");
}

async fn check_dashboard_service(aws: &AwsClients, ws: &Workspace) {
    let env = &ws.env;
    let td = aws
        .ecs()
        .describe_task_definition()
        .task_definition(format!("agentbus-{env}-dashboard"))
        .send()
        .await
        .unwrap();
    let envs: BTreeMap<&str, &str> = td.task_definition().unwrap().container_definitions()[0]
        .environment()
        .iter()
        .map(|k| (k.name().unwrap(), k.value().unwrap()))
        .collect();
    assert_eq!(envs["AGENTBUS_TIER"], "medium");
    assert_eq!(envs["AGENTBUS_STATE_MACHINE_ARN"], machine_arn(ws));
    assert_eq!(
        envs["AGENTBUS_APPROVALS_QUEUE"],
        format!("agentbus-{env}-approvals")
    );
    let a = allowed(&inline_policy(aws, &format!("agentbus-{env}-dashboard-task")).await);
    assert_eq!(
        a["states:StartExecution"],
        BTreeSet::from([machine_arn(ws)])
    );
    assert!(
        a["states:StopExecution"]
            .iter()
            .all(|r| r.contains(&format!(":execution:agentbus-{env}-lanes:")))
    );
}

/// The workflow tools on the deployed configuration: `deploy medium --agents queue` on moto
/// (its Step Functions interpreter on), the server as the dashboard task would run it (the
/// task definition's environment), and the agents as `agentbus agent --queue` runs them on a
/// machine of your own, answering the state machine's task tokens. The official Python MCP
/// SDK then runs the same checks as against `agentbus up medium`: plan, review, four-eyes, a
/// forged hash refused, another tenant kept out, approval, execute, the timeline, cancel.
///
/// What only real AWS exercises: the ECS dispatch (`ecs:runTask.waitForTaskToken`, a Fargate
/// task per step in its lane's role), which moto cannot run; its definition is checked above
/// by asl-validator and field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_end_to_end_through_the_deployed_configuration() {
    crate::workflow::interpreter_on();
    let env = unique_env("mr");
    deploy_xs(&env);
    let r = agentbus(&[
        "deploy",
        "medium",
        "--env",
        &env,
        "--agents",
        "queue",
        "--allow-cidr",
        "203.0.113.0/24",
        "--yes",
        "--wait-timeout",
        "60",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("agentbus agent --queue") || r.stderr.contains("agentbus agent --queue"),
        "the plan says who runs the agents: {r:?}"
    );
    let again = agentbus(&["plan", "medium", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "converged: {again:?}");
    let aws = clients().await;
    let ws = Workspace::new(Env::new(&env).unwrap(), "123456789012", "us-east-1");
    let def: Value = serde_json::from_str(
        aws.sfn()
            .describe_state_machine()
            .state_machine_arn(machine_arn(&ws))
            .send()
            .await
            .unwrap()
            .definition(),
    )
    .unwrap();
    assert_eq!(
        def["States"]["Plan"]["Resource"],
        "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
    );
    // `agentbus workflow asl` prints what the deploy created, offline.
    let printed = agentbus(&[
        "workflow",
        "asl",
        "--env",
        &env,
        "--account",
        "123456789012",
        "--region",
        "us-east-1",
        "--agents",
        "queue",
    ]);
    assert_eq!(printed.code, 0, "{printed:?}");
    assert_eq!(serde_json::from_str::<Value>(&printed.stdout).unwrap(), def);
    let agent_queue = aws
        .sqs()
        .get_queue_url()
        .queue_name(format!("agentbus-{env}-agent-tasks"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();

    let task_env = crate::harness::dashboard_task_env(&aws, &env).await;
    let (server, port) = crate::server::serve_on_aws(task_env);
    let token = |tenant: &str, role: &str| crate::harness::env_token(&env, tenant, role);
    let (starter, other_admin, user, other_tenant, agent) = (
        token("default", "admin"),
        token("default", "admin"),
        token("default", "user"),
        token("tenant-b", "admin"),
        token("default", "user"),
    );
    let mcp_url = format!("http://127.0.0.1:{port}/mcp");
    let _worker = crate::server::Guard(
        std::process::Command::new(env!("CARGO_BIN_EXE_agentbus"))
            .args([
                "agent",
                "--queue",
                &agent_queue,
                "--mcp-url",
                &mcp_url,
                "--heartbeat",
                "5",
            ])
            .env("AGENTBUS_MCP_TOKEN", &agent)
            .envs(crate::harness::aws_env())
            .env_remove("AGENTBUS_MODEL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the agents"),
    );

    let dir = std::env::temp_dir().join(format!("agentbus-e2e-mr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    crate::server::medium_client(
        &mcp_url,
        [&starter, &other_admin, &user, &other_tenant],
        &dir,
    );

    // Read back with the SDKs: each run is an execution named by its id, and an item of the
    // runs table that holds no task token once it stopped waiting.
    let items = aws
        .dynamodb()
        .query()
        .table_name(format!("agentbus-{env}-runs"))
        .key_condition_expression("tenant = :t")
        .expression_attribute_values(
            ":t",
            aws_sdk_dynamodb::types::AttributeValue::S("default".into()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(items.items().len(), 3, "{items:?}");
    let mut statuses = BTreeSet::new();
    for item in items.items() {
        let run_id = item["run_id"].as_s().unwrap();
        let status = item["status"].as_s().unwrap().clone();
        assert!(!item.contains_key("task_token"), "{run_id} {status}");
        let d = aws
            .sfn()
            .describe_execution()
            .execution_arn(format!(
                "arn:aws:states:us-east-1:123456789012:execution:agentbus-{env}-lanes:{run_id}"
            ))
            .send()
            .await
            .unwrap();
        let want = match status.as_str() {
            "succeeded" => "SUCCEEDED",
            "failed" => "FAILED",
            "cancelled" => "ABORTED",
            other => panic!("{run_id} ended {other}"),
        };
        assert_eq!(d.status().as_str(), want, "{run_id}");
        statuses.insert(status);
    }
    assert_eq!(
        statuses,
        BTreeSet::from(["cancelled".into(), "failed".into(), "succeeded".into()])
    );

    // A run in flight holds the tier: leaving medium refuses until it ends, is cancelled, or
    // the deploy is told to stop it.
    let tools = agents::worker::connect(&mcp_url, &starter).await.unwrap();
    let started = agents::tools::Tools::call(
        &tools,
        "workflow_start",
        serde_json::json!({"goal": "hold the tier", "subtasks": [{"tool": "kv_get", "arguments": {"key": "x"}}]}),
    )
    .await
    .unwrap();
    let run_id = started["run_id"].as_str().unwrap().to_string();
    deployed_agents_prove_their_lane(&aws, &env, &mcp_url, &run_id).await;
    let p = agentbus(&["plan", "small", "--env", &env]);
    assert_eq!(p.code, 1, "{p:?}");
    assert!(
        p.stdout.contains("1 workflow run(s) in flight") && p.stdout.contains(&run_id),
        "{p:?}"
    );
    // The layer stops what is in flight (as a deploy does before removing the tier) ...
    use tier_xs::ladder::Layer;
    tier_medium::layer::MediumLayer
        .stop_in_flight(&aws, &ws)
        .await
        .unwrap();
    let d = aws
        .sfn()
        .describe_execution()
        .execution_arn(format!(
            "arn:aws:states:us-east-1:123456789012:execution:agentbus-{env}-lanes:{run_id}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(d.status().as_str(), "ABORTED", "{d:?}");
    // ... and a deploy told to stop them says which it stops, then leaves the tier.
    let held = agents::tools::Tools::call(
        &tools,
        "workflow_start",
        serde_json::json!({"goal": "hold it again", "subtasks": [{"tool": "kv_get", "arguments": {"key": "x"}}]}),
    )
    .await
    .unwrap();
    let r = agentbus(&[
        "deploy",
        "small",
        "--env",
        &env,
        "--stop-in-flight",
        "--yes",
        "--wait-timeout",
        "60",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(held["run_id"].as_str().unwrap())
            && r.stdout.contains("stopped before the tier goes"),
        "{r:?}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An agent's credentials as ECS gives them to a task: the lane role's, from STS AssumeRole
/// (moto records which role each key belongs to, as AWS does).
async fn lane_credentials(aws: &AwsClients, env: &str, role: &str) -> aws_config::SdkConfig {
    let assumed = aws
        .sts()
        .assume_role()
        .role_arn(format!(
            "arn:aws:iam::123456789012:role/agentbus-{env}-{role}"
        ))
        .role_session_name("ecs-task")
        .send()
        .await
        .unwrap();
    let c = assumed.credentials().unwrap();
    let creds = aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "assumed",
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(crate::harness::moto().url.clone())
        .credentials_provider(creds)
        .load()
        .await
}

/// The deployed agents hold no token: each proves, with a signed STS GetCallerIdentity, the
/// role its task runs under, and the server lets that lane act for the run it names — the
/// read-only lanes write only the run's own records. (On AWS the role is ECS's TaskRoleArn
/// override; here it comes from AssumeRole.)
async fn deployed_agents_prove_their_lane(
    aws: &AwsClients,
    env: &str,
    mcp_url: &str,
    run_id: &str,
) {
    use agents::proof::{Claim, prove};
    use agents::tools::Tools;
    let audience =
        format!("arn:aws:states:us-east-1:123456789012:stateMachine:agentbus-{env}-lanes");
    let claim = Claim {
        tenant: "default".into(),
        run_id: run_id.into(),
    };
    let read_only = lane_credentials(aws, env, "agent-read-only").await;
    let proof = prove(&read_only, &claim, &audience).await.unwrap();
    let reader = agents::worker::connect(mcp_url, &proof).await.unwrap();
    let own = format!("runs/{run_id}/notes.md");
    let put = |key: &str| serde_json::json!({"key": key, "content": "seen"});
    reader.call("artifacts_put", put(&own)).await.unwrap();
    let elsewhere = reader.call("artifacts_put", put("reports/q3.md")).await;
    assert!(
        elsewhere
            .as_ref()
            .is_err_and(|e| e.to_string().contains("only reads")),
        "{elsewhere:?}"
    );
    let kv = reader
        .call("kv_set", serde_json::json!({"key": "flag", "value": "x"}))
        .await;
    assert!(
        kv.as_ref()
            .is_err_and(|e| e.to_string().contains("only reads")),
        "{kv:?}"
    );
    reader
        .call("kv_get", serde_json::json!({"key": "flag"}))
        .await
        .unwrap();

    // The execute lane writes the tenant's data.
    let execute = lane_credentials(aws, env, "agent-execute").await;
    let writer =
        agents::worker::connect(mcp_url, &prove(&execute, &claim, &audience).await.unwrap())
            .await
            .unwrap();
    writer
        .call("kv_set", serde_json::json!({"key": "flag", "value": "x"}))
        .await
        .unwrap();

    // Refused: another workspace's audience, a run of another tenant, and credentials that
    // are no lane's (the deployer's own).
    let refused =
        |proof: String| async move { agents::worker::connect(mcp_url, &proof).await.is_err() };
    assert!(
        refused(
            prove(
                &execute,
                &claim,
                "arn:aws:states:us-east-1:123456789012:stateMachine:other"
            )
            .await
            .unwrap()
        )
        .await
    );
    let other_tenant = Claim {
        tenant: "tenant-b".into(),
        run_id: run_id.into(),
    };
    assert!(refused(prove(&execute, &other_tenant, &audience).await.unwrap()).await);
    let deployer = aws.sdk_config().clone();
    assert!(refused(prove(&deployer, &claim, &audience).await.unwrap()).await);
}

/// A local `agentbus up medium` that governs a workspace on moto: the Python SDK previews the
/// change, is refused what it may not do, starts a run whose deploy plan another admin
/// approves (tests/mcp/workspace_client.py); then the SDK's own reads find the tier deployed,
/// and the deploy history names the apply.
#[tokio::test(flavor = "multi_thread")]
async fn an_approved_run_deploys_the_workspace_change_it_planned_and_nothing_else() {
    use crate::server::{free_port, temp_dir, token, up_with_env};
    // A moto of its own: a deploy adds a logs resource policy, of which an account has at
    // most ten per region, and the shared moto's are taken by the other deploy tests.
    let moto = crate::harness::start_moto();
    let env = unique_env("govern");
    let dir = temp_dir("govern");
    let port = free_port();
    let aws_env = crate::harness::aws_env_at(&moto.url);
    let vars: Vec<(&str, &str)> = aws_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = up_with_env(&dir, port, &["medium", "--workspace-env", &env], &vars);
    let starter = server.first_admin();
    let other_admin = token(&dir, "default", "admin");
    let user = token(&dir, "default", "user");
    let other_tenant = token(&dir, "tenant-b", "admin");
    let url = format!("http://127.0.0.1:{port}/mcp");
    crate::harness::python_script(
        "tests/mcp/workspace_client.py",
        &[
            &url,
            &starter,
            &other_admin,
            &user,
            &other_tenant,
            &env,
            crate::harness::IMAGE,
        ],
        "workspace",
    );
    drop(server);

    // Read back with the SDK: the extra-small tier is there.
    let aws = crate::harness::clients_at(&moto.url, "testing", "testing").await;
    let ws = format!("agentbus-{env}");
    let kv = aws
        .dynamodb()
        .describe_table()
        .table_name(format!("{ws}-kv"))
        .send()
        .await
        .unwrap();
    assert!(kv.table.is_some());
    let bus = aws
        .events()
        .describe_event_bus()
        .name(&ws)
        .send()
        .await
        .unwrap();
    assert_eq!(bus.name(), Some(ws.as_str()));
    let s = crate::harness::agentbus_env(&["status", "--env", &env, "--json"], &vars);
    assert_eq!(s.code, 0, "{s:?}");
    let s = s.json();
    assert_eq!(s["deployed_tier"], "extra-small");
    assert_eq!(s["in_sync"], true);
    let applies: Vec<&Value> = s["history"].as_array().unwrap().iter().collect();
    assert_eq!(applies.len(), 1, "one apply, the approved one: {s}");
    assert_eq!(applies[0]["succeeded"], true);
    std::fs::remove_dir_all(&dir).unwrap();
}
