#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};

use serde_json::json;
use tier_xs::components::network::Network;
use tier_xs::cost::CostReport;
use tier_xs::workspace::Env;

use super::*;

fn ws(env: &str) -> Workspace {
    Workspace::new(
        Env::new(env).unwrap(),
        "123456789012",
        "us-east-1".to_string(),
    )
}

fn xs_settings() -> XsSettings {
    let mut s = XsSettings::new(Network {
        vpc_id: "vpc-1".into(),
        subnet_ids: vec!["subnet-1".into(), "subnet-2".into()],
        zones: Default::default(),
    });
    s.allow_cidrs = vec!["203.0.113.0/24".into()];
    s.image = Some("example/agentbus:1".into());
    s.alert_email = Some("ops@example.com".into());
    s
}

fn settings() -> MediumSettings {
    MediumSettings {
        agent_image: Some("example/agentbus-agent:1".into()),
        agent_architecture: Default::default(),
        logging: ExecutionLogging::Errors,
        dispatch: AgentDispatch::Ecs,
    }
}

fn medium(env: &str) -> Medium {
    Medium::new(
        &ws(env),
        &xs_settings(),
        &SmallSettings::default(),
        &settings(),
    )
}

fn report(usage: &str, resources: &[Arc<dyn Resource>]) -> CostReport {
    let ladder = crate::ladder();
    let usage = ladder.usage_book().load(usage).unwrap();
    ladder
        .cost_report(Tier::Medium, "us-east-1", &usage, resources)
        .unwrap()
}

/// The state machine's definition once its security group exists.
fn definition(m: &Medium) -> Value {
    let machine = m
        .own
        .resources
        .iter()
        .find(|r| r.id() == ids::STATE_MACHINE)
        .unwrap();
    let outputs: Outputs = [(
        format!("{}.id", ids::AGENTS_SECURITY_GROUP),
        "sg-agents".to_string(),
    )]
    .into_iter()
    .collect();
    machine
        .desired(&outputs)
        .get("definition")
        .cloned()
        .unwrap()
}

fn policy_of(m: &Medium, id: &str) -> Value {
    let r = m.own.resources.iter().find(|r| r.id() == id).unwrap();
    r.desired(&Outputs::new())
        .get("inline_policies")
        .unwrap()
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone()
}

fn actions(policy: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in policy["Statement"].as_array().unwrap() {
        for a in s["Action"].as_array().unwrap() {
            out.entry(a.as_str().unwrap().to_string())
                .or_default()
                .extend(
                    s["Resource"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap().to_string()),
                );
        }
    }
    out
}

#[test]
fn medium_is_every_small_resource_plus_its_own() {
    let m = medium("dev");
    let small: Vec<&str> = m.small.resources().iter().map(|r| r.id()).collect();
    let all: Vec<&str> = m.resources().iter().map(|r| r.id()).collect();
    assert!(small.iter().all(|id| all.contains(id)));
    assert_eq!(all.len(), small.len() + 38);
    let unique: HashSet<&str> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "ids are unique across tiers");
    let mut kept: Vec<&str> = m
        .own
        .resources
        .iter()
        .filter(|r| r.data_bearing())
        .map(|r| r.id())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            ids::AGENT_TASKS_DEAD_LETTER_QUEUE,
            ids::APPROVALS_DEAD_LETTER_QUEUE,
            ids::CONDUCTOR_LOG_GROUP,
            ids::CRITIC_LOG_GROUP,
            ids::RUNS_TABLE,
            ids::SWEEPER_LOG_GROUP,
            ids::WORKFLOW_LOG_GROUP,
        ],
        "a downgrade keeps the runs, the logs and the dead letters"
    );
    assert!(m.problems().is_empty(), "{:?}", m.problems());
}

#[test]
fn each_step_runs_its_agent_in_its_lanes_role_and_prod_runs_on_demand() {
    let dev = definition(&medium("dev"));
    let plan = &dev["States"]["Plan"]["Parameters"];
    assert_eq!(plan["TaskDefinition"], "agentbus-dev-conductor");
    assert_eq!(
        plan["Overrides"]["TaskRoleArn"],
        "arn:aws:iam::123456789012:role/agentbus-dev-agent-read-only"
    );
    assert_eq!(
        plan["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"],
        json!(["sg-agents"])
    );
    assert_eq!(
        plan["CapacityProviderStrategy"][0]["CapacityProvider"],
        "FARGATE_SPOT"
    );
    let prod = definition(&medium("prod"));
    assert_eq!(
        prod["States"]["Plan"]["Parameters"]["CapacityProviderStrategy"][0]["CapacityProvider"],
        "FARGATE"
    );
    // Until the security group exists the definition is unknown, not wrong.
    let m = medium("dev");
    let machine = m
        .own
        .resources
        .iter()
        .find(|r| r.id() == ids::STATE_MACHINE)
        .unwrap();
    assert!(tier_xs::engine::is_unknown(
        machine.desired(&Outputs::new()).get("definition").unwrap()
    ));
}

#[test]
fn the_lanes_roles_really_differ_and_only_execute_writes() {
    let m = medium("dev");
    let read_only = actions(&policy_of(&m, ids::READ_ONLY_ROLE));
    let dry_run = actions(&policy_of(&m, ids::DRY_RUN_ROLE));
    let execute = actions(&policy_of(&m, ids::EXECUTE_ROLE));
    for write in [
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "s3:DeleteObject",
        "events:PutEvents",
    ] {
        assert!(!read_only.contains_key(write), "{write}");
        assert!(!dry_run.contains_key(write), "{write}");
        assert!(execute.contains_key(write), "{write}");
    }
    assert!(!read_only.contains_key("budgets:ViewBudget"));
    assert!(dry_run.contains_key("budgets:ViewBudget"));
    // A read-only step may write only its own records: a run's files and the timeline.
    assert_eq!(
        read_only["s3:PutObject"],
        [
            "arn:aws:s3:::agentbus-dev-artifacts-123456789012-us-east-1/*/runs/*",
            "arn:aws:s3:::agentbus-dev-timeline-123456789012-us-east-1/*"
        ]
    );
    for (action, resources) in &execute {
        if action.starts_with("dynamodb:") || action.starts_with("s3:") {
            assert!(
                resources.iter().all(|r| r.contains("agentbus-dev-")),
                "{action}: {resources:?}"
            );
        }
    }
    // The state machine passes exactly these roles, and only to ECS tasks.
    let machine = policy_of(&m, ids::WORKFLOW_ROLE);
    let pass = machine["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == json!(["iam:PassRole"]))
        .unwrap();
    assert_eq!(pass["Resource"].as_array().unwrap().len(), 4);
    assert_eq!(
        pass["Condition"]["StringEquals"]["iam:PassedToService"],
        "ecs-tasks.amazonaws.com"
    );
}

#[test]
fn every_alarm_says_what_to_do_and_the_dashboard_draws_what_they_watch() {
    let m = medium("dev");
    assert_eq!(m.own.alarms.len(), 13);
    let mut watched = HashSet::new();
    for a in &m.own.alarms {
        assert!(a.description.len() > 60, "{}", a.meta.name);
        assert_eq!(a.topic_id, ids::ALERTS_TOPIC);
        watched.insert((a.metric.namespace.clone(), a.metric.name));
    }
    let drawn: HashSet<(String, &str)> = m
        .own
        .dashboard
        .metrics()
        .map(|m| (m.namespace.clone(), m.name))
        .collect();
    let missing: Vec<_> = watched.difference(&drawn).collect();
    assert!(missing.is_empty(), "alarms without a graph: {missing:?}");
}

#[test]
fn a_missing_agent_image_blocks_only_a_change_of_the_agents_task_definitions() {
    let mut s = settings();
    s.agent_image = None;
    let m = MediumOwn::new(&ws("dev"), &xs_settings(), &s);
    assert!(!m.problems.is_empty());
    assert!(m.problems.iter().all(|p| {
        [
            ids::CONDUCTOR_TASK_DEFINITION,
            ids::CRITIC_TASK_DEFINITION,
            ids::SWEEPER_TASK_DEFINITION,
        ]
        .contains(&p.only_if_changing.unwrap_or_default())
    }));
    assert!(m.images.is_empty());
    assert_eq!(medium("dev").own.images.len(), 3);
}

#[test]
fn the_server_gets_the_names_and_rights_of_the_workflow() {
    let m = medium("dev");
    let mut spec = DashboardSpec::new(Tier::Medium);
    m.own.shape_dashboard(&ws("dev"), &mut spec);
    assert!(spec.env.contains(&(
        crate::config::ENV_STATE_MACHINE_ARN.to_string(),
        "arn:aws:states:us-east-1:123456789012:stateMachine:agentbus-dev-lanes".to_string()
    )));
    let granted: Vec<String> = spec
        .task_statements
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().clone())
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    for a in [
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "states:SendTaskSuccess",
        "sqs:ReceiveMessage",
    ] {
        assert!(granted.iter().any(|g| g == a), "{a}");
    }
}

#[test]
fn the_cost_of_medium_reads_line_by_line() {
    let r = report("light", &medium("demo").resources());
    insta::assert_snapshot!(r.render_on(time::macros::date!(2026 - 01 - 01)));
}

#[test]
fn with_agents_of_your_own_steps_wait_in_a_queue_and_no_agent_image_is_needed() {
    let mut s = settings();
    s.dispatch = AgentDispatch::Queue;
    s.agent_image = None;
    let m = Medium::new(&ws("dev"), &xs_settings(), &SmallSettings::default(), &s);
    assert!(m.problems().is_empty(), "{:?}", m.problems());
    assert!(
        m.own
            .notes
            .iter()
            .any(|n| n.contains("agentbus agent --queue"))
    );
    let def = definition(&m);
    assert_eq!(
        def["States"]["Plan"]["Resource"],
        "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
    );
    assert_eq!(
        def["States"]["Plan"]["Parameters"]["QueueUrl"],
        "https://sqs.us-east-1.amazonaws.com/123456789012/agentbus-dev-agent-tasks"
    );
    let wanted = |id: &str| {
        m.own
            .resources
            .iter()
            .find(|r| r.id() == id)
            .unwrap()
            .wanted()
    };
    assert!(wanted(ids::AGENT_TASKS_QUEUE) && wanted(ids::AGENT_TASKS_DEAD_LETTER_QUEUE));
    assert!(
        !wanted(ids::CONDUCTOR_TASK_DEFINITION),
        "no task runs on ECS"
    );
    let sends = actions(&policy_of(&m, ids::WORKFLOW_ROLE));
    assert!(
        sends["sqs:SendMessage"]
            .iter()
            .any(|q| q.ends_with(":agentbus-dev-agent-tasks"))
    );
    // The default keeps the queue away and runs agents on ECS.
    let ecs = medium("dev");
    let wanted = |id: &str| {
        ecs.own
            .resources
            .iter()
            .find(|r| r.id() == id)
            .unwrap()
            .wanted()
    };
    assert!(!wanted(ids::AGENT_TASKS_QUEUE));
    assert!(wanted(ids::CONDUCTOR_TASK_DEFINITION));
    // Agents elsewhere cost nothing here: only the state transitions are priced.
    let lines = report("team", &m.resources()).lines;
    assert!(
        lines
            .iter()
            .filter(|l| l.resource == ids::STATE_MACHINE)
            .all(|l| l.item == "state transitions")
    );
}

#[test]
fn the_deployed_agents_find_the_dashboard_inside_the_vpc_and_prove_their_lane_without_a_token() {
    let m = medium("dev");
    let conductor = m
        .own
        .resources
        .iter()
        .find(|r| r.id() == ids::CONDUCTOR_TASK_DEFINITION)
        .unwrap()
        .desired(&Outputs::new());
    let env = format!("{conductor:?}");
    assert!(
        env.contains("ecs://agentbus-dev/agentbus-dev-dashboard:8080/mcp"),
        "{env}"
    );
    assert!(
        env.contains("arn:aws:states:us-east-1:123456789012:stateMachine:agentbus-dev-lanes"),
        "the audience its proofs name: {env}"
    );
    assert!(!env.contains("AGENTBUS_MCP_TOKEN"), "{env}");
    // The dashboard admits the agents' security group on its port; the agents' roles may
    // look up its tasks in the workspace's cluster only.
    let rules = &m.small.xs.security_group.rules;
    assert!(rules.contains(&Ingress {
        port: 8080,
        source: Source::Group(ids::AGENTS_SECURITY_GROUP)
    }));
    for lane_role in [ids::READ_ONLY_ROLE, ids::DRY_RUN_ROLE, ids::EXECUTE_ROLE] {
        let p = policy_of(&m, lane_role);
        let list = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Action"] == json!(["ecs:ListTasks"]))
            .unwrap();
        assert_eq!(
            list["Condition"]["ArnEquals"]["ecs:cluster"],
            "arn:aws:ecs:us-east-1:123456789012:cluster/agentbus-dev"
        );
    }
    // The server learns the roles whose proofs it takes.
    let mut spec = DashboardSpec::new(Tier::Medium);
    m.own.shape_dashboard(&ws("dev"), &mut spec);
    let roles = spec
        .env
        .iter()
        .find(|(k, _)| k == crate::config::ENV_AGENT_ROLES)
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(
        roles,
        "read_only=arn:aws:iam::123456789012:role/agentbus-dev-agent-read-only,\
         dry_run=arn:aws:iam::123456789012:role/agentbus-dev-agent-dry-run,\
         execute=arn:aws:iam::123456789012:role/agentbus-dev-agent-execute"
    );

    // Agents of your own reach the dashboard however you run them: no VPC rule for them.
    let mut s = settings();
    s.dispatch = AgentDispatch::Queue;
    let q = Medium::new(&ws("dev"), &xs_settings(), &SmallSettings::default(), &s);
    assert!(
        !q.small
            .xs
            .security_group
            .rules
            .iter()
            .any(|r| r.source == Source::Group(ids::AGENTS_SECURITY_GROUP))
    );
}

#[test]
fn the_agents_run_on_the_architecture_of_their_image_and_the_dashboard_on_its_own() {
    let mut xs = xs_settings();
    xs.architecture = CpuArchitecture::X86_64;
    let mut s = settings();
    s.agent_architecture = CpuArchitecture::Arm64;
    let m = Medium::new(&ws("dev"), &xs, &SmallSettings::default(), &s);
    let arch = |id: &str| {
        m.small
            .xs
            .resources()
            .into_iter()
            .chain(m.own.resources.iter().cloned())
            .find(|r| r.id() == id)
            .unwrap()
            .desired(&Outputs::new())
            .get("cpu_architecture")
            .cloned()
    };
    for id in [
        ids::CONDUCTOR_TASK_DEFINITION,
        ids::CRITIC_TASK_DEFINITION,
        ids::SWEEPER_TASK_DEFINITION,
    ] {
        assert_eq!(arch(id), Some(json!("ARM64")), "{id}");
    }
    assert_eq!(
        arch(tier_xs::xs::ids::DASHBOARD_TASK_DEFINITION),
        Some(json!("X86_64"))
    );
}
