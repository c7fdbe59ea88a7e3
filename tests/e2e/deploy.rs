//! Deploying the extra-small tier against the emulator: spec, convergence, drift, interruption,
//! locking, destroy and data protection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use tier_xs::engine::apply::{ApplyOptions, Outcome, Progress};
use tier_xs::engine::lock::LockSeen;
use tier_xs::engine::plan::Action;
use tier_xs::ops::{Deployer, Inputs};
use tier_xs::workspace::{Env, Tier};
use tokio_util::sync::CancellationToken;

use crate::harness::{IMAGE, agentbus, agentbus_env, assert_absent, clients, unique_env};
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;

fn deploy_args<'a>(env: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "deploy",
        "xs",
        "--env",
        env,
        "--yes",
        "--json",
        "--wait-timeout",
        "60",
    ];
    v.extend_from_slice(extra);
    v
}

/// The security groups named like the workspace's dashboard group.
async fn dashboard_groups(aws: &tier_xs::aws::AwsClients, ws: &str) -> Vec<Value> {
    crate::harness::security_groups_named(aws, &format!("{ws}-dashboard")).await
}

/// Resources whose plan entry is a change, with the fields that change.
fn changed_fields(plan: &Value) -> BTreeMap<String, Vec<String>> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["field"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn fresh_deploy_matches_the_spec_and_a_second_run_changes_nothing() {
    let env = unique_env("spec");
    // The plan of an empty account prices what it adds.
    let p = agentbus(&["plan", "xs", "--env", &env, "--image", IMAGE, "--json"]).json();
    let cost = &p["plan"]["cost"];
    assert_eq!(cost["before"], 0.0);
    assert!(cost["after"].as_f64().unwrap() > 5.0, "{cost}");
    assert_eq!(cost["usage"], "light");

    let r = agentbus(&deploy_args(
        &env,
        &[
            "--image",
            IMAGE,
            "--allow-cidr",
            "203.0.113.0/24",
            "--alert-email",
            "ops@example.com",
        ],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let out = r.json();
    assert_eq!(out["changed"], true);
    assert_eq!(out["report"]["results"].as_array().unwrap().len(), 15);
    // The deploy ends with where the dashboard is (moto's task has no address: null) and the
    // next step, not just "done.".
    assert!(
        out.as_object().unwrap().contains_key("dashboard_url"),
        "{out}"
    );
    assert!(
        out["next"]
            .as_str()
            .unwrap()
            .contains(&format!("agentbus token create --env {env} --tenant NAME")),
        "{out}"
    );
    // Under --json the answer is the JSON alone: no human summary beside it.
    assert!(!r.stderr.contains("resource(s) changed"), "{r:?}");

    let aws = clients().await;
    let ws = format!("agentbus-{env}");

    // KV table: on-demand, pk/sk strings, TTL, PITR, SSE, tags.
    let kv = format!("{ws}-kv");
    let t = aws
        .dynamodb()
        .describe_table()
        .table_name(&kv)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(
        t.billing_mode_summary
            .clone()
            .unwrap()
            .billing_mode
            .unwrap()
            .as_str(),
        "PAY_PER_REQUEST"
    );
    let keys: Vec<(String, String)> = t
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name.clone(), k.key_type.as_str().to_string()))
        .collect();
    assert_eq!(
        keys,
        vec![("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
    );
    assert!(
        t.attribute_definitions()
            .iter()
            .all(|a| a.attribute_type.as_str() == "S")
    );
    assert_eq!(
        t.sse_description.clone().unwrap().status.unwrap().as_str(),
        "ENABLED"
    );
    assert_eq!(t.deletion_protection_enabled, Some(false));
    let ttl = aws
        .dynamodb()
        .describe_time_to_live()
        .table_name(&kv)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description.unwrap();
    assert_eq!(ttl.attribute_name.as_deref(), Some("expires_at"));
    assert_eq!(ttl.time_to_live_status.unwrap().as_str(), "ENABLED");
    let pitr = aws
        .dynamodb()
        .describe_continuous_backups()
        .table_name(&kv)
        .send()
        .await
        .unwrap();
    assert_eq!(
        pitr.continuous_backups_description
            .unwrap()
            .point_in_time_recovery_description
            .unwrap()
            .point_in_time_recovery_status
            .unwrap()
            .as_str(),
        "ENABLED"
    );
    let tags = aws
        .dynamodb()
        .list_tags_of_resource()
        .resource_arn(t.table_arn.unwrap())
        .send()
        .await
        .unwrap();
    let tags: BTreeMap<String, String> = tags
        .tags()
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    assert_eq!(tags.get("agentbus:workspace"), Some(&ws));
    assert_eq!(tags.get("agentbus:tier").map(String::as_str), Some("xs"));
    assert_eq!(tags.get("agentbus:env"), Some(&env));
    assert_eq!(
        tags.get("agentbus:component").map(String::as_str),
        Some("kv")
    );

    // Event bus with a rule whose one target is the workspace's event log group.
    aws.events()
        .describe_event_bus()
        .name(&ws)
        .send()
        .await
        .unwrap();
    let targets = aws
        .events()
        .list_targets_by_rule()
        .rule(format!("{ws}-all-events"))
        .event_bus_name(&ws)
        .send()
        .await
        .unwrap();
    assert_eq!(targets.targets().len(), 1);
    assert!(
        targets.targets()[0]
            .arn
            .ends_with(&format!("log-group:/aws/events/{ws}")),
        "{:?}",
        targets.targets()
    );
    let rule = aws
        .events()
        .describe_rule()
        .name(format!("{ws}-all-events"))
        .event_bus_name(&ws)
        .send()
        .await
        .unwrap();
    // The pattern exactly: every event whose source is agentbus (a substring check would let
    // `anything-but` or a prefix through).
    let pattern: serde_json::Value =
        serde_json::from_str(rule.event_pattern.as_deref().unwrap_or("null")).unwrap();
    assert_eq!(pattern, serde_json::json!({"source": ["agentbus"]}));

    // Log groups: 7 days.
    for g in [format!("/aws/events/{ws}"), format!("/ecs/{ws}-dashboard")] {
        let lg = aws
            .logs()
            .describe_log_groups()
            .log_group_name_prefix(&g)
            .send()
            .await
            .unwrap();
        let lg = lg
            .log_groups()
            .iter()
            .find(|l| l.log_group_name.as_deref() == Some(g.as_str()))
            .unwrap();
        assert_eq!(lg.retention_in_days, Some(7), "{g}");
    }

    // The secret exists with a generated value that no output shows.
    let secret = aws
        .secrets()
        .get_secret_value()
        .secret_id(format!("agentbus/{env}/server"))
        .send()
        .await
        .unwrap();
    let value: Value = serde_json::from_str(secret.secret_string().unwrap()).unwrap();
    let key = value["session_key"].as_str().unwrap();
    assert_eq!(key.len(), 64);
    assert!(!r.stdout.contains(key) && !r.stderr.contains(key));

    // Cluster: FARGATE + FARGATE_SPOT, Spot by default.
    let c = aws
        .ecs()
        .describe_clusters()
        .clusters(&ws)
        .send()
        .await
        .unwrap();
    let c = &c.clusters()[0];
    let mut cps = c.capacity_providers().to_vec();
    cps.sort();
    assert_eq!(cps, vec!["FARGATE", "FARGATE_SPOT"]);
    assert_eq!(
        c.default_capacity_provider_strategy()[0].capacity_provider,
        "FARGATE_SPOT"
    );
    // The capacity providers needed ECS's service-linked role, which the deploy made (the
    // test emulator, like a fresh account, refuses the cluster without it).
    let slr = crate::harness::boto(
        &aws,
        "iam",
        "get_role",
        json!({"RoleName": "AWSServiceRoleForECS"}),
    )
    .await;
    assert!(
        slr["Role"]["Arn"]
            .as_str()
            .unwrap()
            .ends_with("role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS")
    );

    // Task definition: 256/512, port 8080, a health check without curl, names in the env.
    let td = aws
        .ecs()
        .describe_task_definition()
        .task_definition(format!("{ws}-dashboard"))
        .send()
        .await
        .unwrap()
        .task_definition
        .unwrap();
    assert_eq!(td.cpu.as_deref(), Some("256"));
    assert_eq!(td.memory.as_deref(), Some("512"));
    let cd = &td.container_definitions()[0];
    assert_eq!(cd.image.as_deref(), Some(IMAGE));
    assert_eq!(cd.port_mappings()[0].container_port, Some(8080));
    let hc = cd.health_check.as_ref().unwrap().command().join(" ");
    assert_eq!(hc, "CMD /usr/local/bin/agentbus healthcheck");
    let envs: BTreeMap<String, String> = cd
        .environment()
        .iter()
        .map(|kv| (kv.name.clone().unwrap(), kv.value.clone().unwrap()))
        .collect();
    assert_eq!(envs.get("AGENTBUS_KV_TABLE"), Some(&kv));
    assert_eq!(envs.get("AGENTBUS_EVENT_BUS"), Some(&ws));
    assert_eq!(envs.get("AGENTBUS_PORT").map(String::as_str), Some("8080"));
    let logs = cd
        .log_configuration
        .as_ref()
        .unwrap()
        .options
        .clone()
        .unwrap();
    assert_eq!(
        logs.get("awslogs-group"),
        Some(&format!("/ecs/{ws}-dashboard"))
    );

    // Roles: policies name the workspace's own ARNs; "*" only where IAM has no scope.
    for (role, must) in [
        (format!("{ws}-dashboard-task"), format!("table/{kv}")),
        (
            format!("{ws}-dashboard-execution"),
            format!("log-group:/ecs/{ws}-dashboard"),
        ),
    ] {
        let doc = crate::harness::boto(
            &aws,
            "iam",
            "get_role_policy",
            json!({"RoleName": role, "PolicyName": role}),
        )
        .await["PolicyDocument"]
            .take();
        assert!(doc.to_string().contains(&must), "{role}: {doc}");
        for st in doc["Statement"].as_array().unwrap() {
            if st["Resource"].to_string().contains("\"*\"") {
                let actions = st["Action"].to_string();
                assert!(
                    actions.contains("ListSecrets") || actions.contains("GetAuthorizationToken"),
                    "{role}: unscoped {st}"
                );
            }
        }
        let trust = crate::harness::boto(&aws, "iam", "get_role", json!({"RoleName": role})).await;
        assert!(
            trust["Role"]["AssumeRolePolicyDocument"]
                .to_string()
                .contains("ecs-tasks.amazonaws.com")
        );
    }

    // Security group: port 8080 from the allowed CIDR only.
    let sgs = dashboard_groups(&aws, &ws).await;
    let ingress: Vec<(Value, Value)> = sgs[0]["IpPermissions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["IpRanges"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| (p["FromPort"].clone(), r["CidrIp"].clone()))
        })
        .collect();
    assert_eq!(ingress, vec![(json!(8080), json!("203.0.113.0/24"))]);

    // Service: one task on Spot, public IP, in the group above.
    let svc = aws
        .ecs()
        .describe_services()
        .cluster(&ws)
        .services(format!("{ws}-dashboard"))
        .send()
        .await
        .unwrap();
    let svc = &svc.services()[0];
    assert_eq!(svc.desired_count, 1);
    assert_eq!(
        svc.capacity_provider_strategy()[0].capacity_provider,
        "FARGATE_SPOT"
    );
    // Its tasks carry the workspace's tags (the budget filters by them) and ECS's own.
    assert_eq!(
        svc.propagate_tags(),
        Some(&aws_sdk_ecs::types::PropagateTags::Service)
    );
    assert!(svc.enable_ecs_managed_tags());
    // A rollout whose tasks keep failing stops and rolls back.
    let breaker = svc
        .deployment_configuration()
        .and_then(|d| d.deployment_circuit_breaker())
        .unwrap();
    assert!(breaker.enable && breaker.rollback);
    // The deploy waited for the deployment of the revision it registered.
    assert_eq!(svc.deployments().len(), 1);
    assert_eq!(
        svc.deployments()[0].task_definition(),
        svc.task_definition()
    );
    let net = svc
        .network_configuration
        .as_ref()
        .unwrap()
        .awsvpc_configuration
        .as_ref()
        .unwrap();
    assert_eq!(net.assign_public_ip.as_ref().unwrap().as_str(), "ENABLED");
    assert_eq!(
        net.security_groups(),
        &[sgs[0]["GroupId"].as_str().unwrap().to_string()]
    );
    assert!(!net.subnets().is_empty());

    // A second plan has nothing to do; a second deploy writes nothing.
    let p = agentbus(&["plan", "xs", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(p.code, 0, "{p:?}");
    assert!(p.stdout.contains("No changes"), "{p:?}");
    let again = agentbus(&deploy_args(&env, &[]));
    assert_eq!(again.code, 0, "{again:?}");
    let again = again.json();
    assert_eq!(again["changed"], false);
    assert_eq!(again["write_calls"], serde_json::json!({}), "{again}");

    // status reads the apply record back.
    let s = agentbus(&["status", "--env", &env, "--json"]);
    assert_eq!(s.code, 0, "{s:?}");
    let s = s.json();
    assert_eq!(s["deployed_tier"], "extra-small");
    assert_eq!(s["in_sync"], true);
    let h = &s["history"][0];
    assert_eq!(h["succeeded"], true);
    assert!(h["caller"].as_str().unwrap().starts_with("arn:aws:"));
    assert_eq!(h["tool_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["changes"].as_array().unwrap().len(), 15);

    // The budget: the tier's target, alerts to the given address, counting the workspace's tag
    // (which AWS shows only when asked).
    let b = aws
        .budgets()
        .describe_budget()
        .account_id("123456789012")
        .budget_name(&ws)
        .show_filter_expression(true)
        .send()
        .await
        .unwrap()
        .budget
        .unwrap();
    assert_eq!(
        b.budget_limit.unwrap().amount().parse::<f64>().unwrap(),
        10.0
    );
    assert_eq!(b.time_unit.as_str(), "MONTHLY");
    let tag = b.filter_expression.unwrap().tags.unwrap();
    assert_eq!(
        (tag.key(), tag.values()),
        (Some("agentbus:workspace"), &[ws.clone()][..])
    );
    // The budget carries the workspace's tags like everything else it made.
    let tags = aws
        .budgets()
        .list_tags_for_resource()
        .resource_arn(format!("arn:aws:budgets::123456789012:budget/{ws}"))
        .send()
        .await
        .unwrap();
    let tags: std::collections::BTreeMap<&str, &str> = tags
        .resource_tags()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(
        tags,
        std::collections::BTreeMap::from([
            ("agentbus:component", "budget"),
            ("agentbus:env", env.as_str()),
            ("agentbus:tier", "xs"),
            ("agentbus:workspace", ws.as_str()),
        ])
    );
    // The alerts as the README states them, read back field by field with each one's
    // subscribers: actual spend over 80 % and forecast over 100 %, mailed to the address given.
    let n = aws
        .budgets()
        .describe_notifications_for_budget()
        .account_id("123456789012")
        .budget_name(&ws)
        .send()
        .await
        .unwrap();
    let mut alerts = Vec::new();
    for note in n.notifications() {
        let subscribers = aws
            .budgets()
            .describe_subscribers_for_notification()
            .account_id("123456789012")
            .budget_name(&ws)
            .notification(note.clone())
            .send()
            .await
            .unwrap();
        let to: Vec<String> = subscribers
            .subscribers()
            .iter()
            .map(|s| format!("{}:{}", s.subscription_type().as_str(), s.address()))
            .collect();
        alerts.push((
            note.notification_type().as_str().to_string(),
            note.comparison_operator().as_str().to_string(),
            note.threshold(),
            note.threshold_type().map(|t| t.as_str().to_string()),
            to,
        ));
    }
    alerts.sort_by(|a, b| a.0.cmp(&b.0));
    let mail = vec!["EMAIL:ops@example.com".to_string()];
    assert_eq!(
        alerts,
        [
            (
                "ACTUAL".to_string(),
                "GREATER_THAN".to_string(),
                80.0,
                Some("PERCENTAGE".to_string()),
                mail.clone()
            ),
            (
                "FORECASTED".to_string(),
                "GREATER_THAN".to_string(),
                100.0,
                Some("PERCENTAGE".to_string()),
                mail
            ),
        ]
    );
    // After the deploy, the plan's cost before and after are the same.
    let p = agentbus(&["plan", "xs", "--env", &env, "--json"]).json();
    assert_eq!(p["plan"]["cost"]["before"], p["plan"]["cost"]["after"]);
    crate::harness::destroy_all(&env);
}

#[tokio::test]
async fn changes_behind_the_tools_back_are_planned_exactly_and_repaired() {
    let env = unique_env("drift");
    let r = agentbus(&deploy_args(
        &env,
        &["--image", IMAGE, "--allow-cidr", "203.0.113.0/24"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let aws = clients().await;
    let ws = format!("agentbus-{env}");

    aws.logs()
        .put_retention_policy()
        .log_group_name(format!("/ecs/{ws}-dashboard"))
        .retention_in_days(30)
        .send()
        .await
        .unwrap();
    let arn = aws
        .dynamodb()
        .describe_table()
        .table_name(format!("{ws}-kv"))
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
        .table_arn
        .unwrap();
    aws.dynamodb()
        .tag_resource()
        .resource_arn(&arn)
        .tags(
            aws_sdk_dynamodb::types::Tag::builder()
                .key("agentbus:tier")
                .value("tampered")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let sg = dashboard_groups(&aws, &ws).await[0]["GroupId"].clone();
    crate::harness::ec2(
        &aws,
        "authorize_security_group_ingress",
        json!({"GroupId": sg, "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
            "IpRanges": [{"CidrIp": "198.51.100.0/24"}]}]}),
    )
    .await;

    // A workspace secret as a deploy from before the workspace certificate left it: tokens,
    // no certificate.
    crate::harness::env_token(&env, "tenant-a", "user");
    let secret_name = format!("agentbus/{env}/server");
    let secret_doc = || async {
        let v = aws
            .secrets()
            .get_secret_value()
            .secret_id(&secret_name)
            .send()
            .await
            .unwrap();
        serde_json::from_str::<Value>(v.secret_string().unwrap()).unwrap()
    };
    let mut doc = secret_doc().await;
    assert!(
        doc["tls"]["certificate"].is_string(),
        "made with its certificate"
    );
    doc.as_object_mut().unwrap().remove("tls");
    aws.secrets()
        .put_secret_value()
        .secret_id(&secret_name)
        .secret_string(doc.to_string())
        .send()
        .await
        .unwrap();

    let p = agentbus(&["plan", "xs", "--env", &env, "--detailed-exitcode", "--json"]);
    assert_eq!(p.code, 2, "{p:?}");
    let changed = changed_fields(&p.json()["plan"]);
    let expected: BTreeMap<String, Vec<String>> = [
        ("dashboard-log-group", vec!["retention_days"]),
        ("kv-table", vec!["tags"]),
        ("dashboard-security-group", vec!["ingress"]),
        ("server-secret", vec!["certificate"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(changed, expected, "{}", p.stderr);
    let p = agentbus(&["plan", "xs", "--env", &env]);
    assert!(p.stdout.contains("retention_days: 30 -> 7"), "{}", p.stdout);

    assert!(
        p.stdout
            .contains(r#"certificate: "none" -> "workspace certificate"#)
            && !p.stdout.contains("PRIVATE KEY"),
        "{}",
        p.stdout
    );

    let d = agentbus(&deploy_args(&env, &[]));
    assert_eq!(d.code, 0, "{d:?}");
    let p = agentbus(&["plan", "xs", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(p.code, 0, "{p:?}");
    // The certificate is back, and the tokens are as they were.
    let after = secret_doc().await;
    assert!(
        after["tls"]["private_key"].is_string(),
        "{}",
        after["tls"].is_object()
    );
    assert_eq!(after["tokens"], doc["tokens"]);
    assert_eq!(after["tokens"].as_array().unwrap().len(), 1);
    let perms =
        crate::harness::ec2(&aws, "describe_security_groups", json!({"GroupIds": [sg]})).await;
    let ports: Vec<&Value> = perms["SecurityGroups"][0]["IpPermissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["FromPort"])
        .collect();
    assert_eq!(ports, vec![&json!(8080)]);
    crate::harness::destroy_all(&env);
}

#[tokio::test]
async fn an_interrupted_apply_is_finished_by_the_next_one() {
    let env = unique_env("intr");
    let aws = clients().await;
    let d = Deployer::connect(aws.clone(), Env::new(&env).unwrap(), tier_xs::ladder())
        .await
        .unwrap();
    let inputs = Inputs {
        settings: [("image".to_string(), serde_json::json!(IMAGE))].into(),
        parallelism: 1,
        service_wait: Some(Duration::from_secs(60)),
        ..Inputs::default()
    };
    let planned = d.plan(Some(Tier::ExtraSmall), &inputs).await.unwrap();
    assert_eq!(planned.plan.count(Action::Create), 15);

    // Ctrl-C after the fifth resource: nothing new starts, the report says what is left.
    let lease = d.lock(Duration::from_secs(30)).await.unwrap();
    let cancel = CancellationToken::new();
    let done = Arc::new(AtomicUsize::new(0));
    let (c, n) = (cancel.clone(), done.clone());
    let report = d
        .apply(
            &planned,
            &lease,
            ApplyOptions {
                parallelism: 1,
                cancel,
                progress: Arc::new(move |p| {
                    if matches!(p, Progress::Done { .. })
                        && n.fetch_add(1, Ordering::SeqCst) + 1 == 5
                    {
                        c.cancel();
                    }
                }),
            },
        )
        .await
        .unwrap();
    lease.release().await.unwrap();
    assert!(report.cancelled);
    let finished = report
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::Done)
        .count();
    let not_started = report
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::NotStarted)
        .count();
    assert_eq!((finished, not_started), (5, 10), "{report:?}");

    // The next plan has exactly the rest; applying it converges.
    let again = d.plan(Some(Tier::ExtraSmall), &inputs).await.unwrap();
    assert_eq!(
        again.plan.count(Action::Create),
        10,
        "{}",
        again.plan.render(false)
    );
    assert_eq!(again.plan.count(Action::NoOp), 5);
    let lease = d.lock(Duration::from_secs(30)).await.unwrap();
    let report = d
        .apply(&again, &lease, ApplyOptions::default())
        .await
        .unwrap();
    lease.release().await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    let last = d.plan(Some(Tier::ExtraSmall), &inputs).await.unwrap();
    assert!(!last.plan.has_changes(), "{}", last.plan.render(false));

    // Nothing duplicated or orphaned.
    let ws = format!("agentbus-{env}");
    let sgs = dashboard_groups(&aws, &ws).await;
    assert_eq!(sgs.len(), 1);
    let tds = aws
        .ecs()
        .list_task_definitions()
        .family_prefix(format!("{ws}-dashboard"))
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .send()
        .await
        .unwrap();
    assert_eq!(tds.task_definition_arns().len(), 1);
    let services = aws.ecs().list_services().cluster(&ws).send().await.unwrap();
    assert_eq!(services.service_arns().len(), 1);
    // Both applies are on record, the interrupted one as cancelled.
    let history = d.table.history(10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[0].succeeded);
    assert!(history[1].cancelled);
}

// Multi-threaded: the lease's heartbeat must keep running while this thread waits for the
// `agentbus` processes (a 4 s lease would otherwise lapse during a slow deploy attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_and_unlock_waits_for_a_dead_holder() {
    let env = unique_env("lock");
    let aws = clients().await;
    let d = Deployer::connect(aws, Env::new(&env).unwrap(), tier_xs::ladder())
        .await
        .unwrap();
    let lease = d.lock(Duration::from_secs(4)).await.unwrap();

    let r = agentbus(&deploy_args(&env, &["--image", IMAGE]));
    assert_eq!(r.code, 1, "{r:?}");
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("is locked by"), "{r:?}");
    assert!(error.contains(&d.caller.arn), "{r:?}");
    assert!(error.contains("since"), "{r:?}");

    let u = agentbus(&["unlock", "--env", &env]);
    assert_eq!(u.code, 1, "{u:?}");
    assert!(u.stderr.contains("refusing to unlock"), "{u:?}");

    let s = agentbus(&["status", "--env", &env, "--json"]).json();
    assert_eq!(s["lock"]["holder"].as_str().unwrap(), d.holder());

    // The holder dies: its heartbeat stops and the lease runs out.
    drop(lease);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let u = agentbus(&["unlock", "--env", &env]);
    assert_eq!(u.code, 0, "{u:?}");
    assert!(u.stdout.contains("removed the stale lock"), "{u:?}");
    let r = agentbus(&deploy_args(&env, &["--image", IMAGE]));
    assert_eq!(r.code, 0, "{r:?}");
}

/// The deploy table vanishes under a held lease (any fault that makes every renewal fail):
/// the lease gives up, stopping the apply, while it still holds, not after another deploy
/// could have taken the lock over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_renewed_gives_up_before_it_runs_out() {
    let env = unique_env("lapse");
    let aws = clients().await;
    let d = Deployer::connect(aws, Env::new(&env).unwrap(), tier_xs::ladder())
        .await
        .unwrap();
    let ttl = Duration::from_secs(6);
    let lease = d.lock(ttl).await.unwrap();
    // Renewed at least once: the heartbeat works while the table is there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!lease.lost.is_cancelled());
    let renewed = d.table.read_lock().await.unwrap().unwrap();
    assert!(renewed.heartbeat_at > renewed.acquired_at, "{renewed:?}");
    d.table.delete().await.unwrap();
    let gone = std::time::Instant::now();
    tokio::time::timeout(ttl, lease.lost.cancelled())
        .await
        .expect("the lease gave up before its time ran out");
    assert!(gone.elapsed() < ttl, "{:?}", gone.elapsed());
}

/// `unlock` reads a lease that has run out; its holder renews it before the delete lands:
/// the holder keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_leaves_a_lease_its_holder_renewed_after_it_was_read() {
    let env = unique_env("back");
    let aws = clients().await;
    let d = Deployer::connect(aws.clone(), Env::new(&env).unwrap(), tier_xs::ladder())
        .await
        .unwrap();
    drop(d.lock(Duration::from_secs(3)).await.unwrap());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stale = d.table.read_lock().await.unwrap().unwrap();
    assert!(!stale.is_alive());
    // The holder comes back and renews, as its heartbeat does.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    aws.dynamodb()
        .update_item()
        .table_name(format!("agentbus-{env}-deploy"))
        .key("pk", AttributeValue::S("lock".into()))
        .key("sk", AttributeValue::S("lock".into()))
        .update_expression("SET heartbeat_at = :now, expires_at = :exp")
        .condition_expression("lease_id = :id")
        .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
        .expression_attribute_values(":exp", AttributeValue::N((now + 60).to_string()))
        .expression_attribute_values(":id", AttributeValue::S(stale.lease_id.clone()))
        .send()
        .await
        .unwrap();
    let e = d.table.remove_stale(&stale).await.unwrap_err();
    assert!(e.to_string().contains("renewed"), "{e}");
    let kept = d.table.read_lock().await.unwrap().unwrap();
    assert_eq!(kept.lease_id, stale.lease_id);
    assert!(kept.is_alive());
}

/// The lock counts its acquisitions and keeps the count when released. A plan made with the
/// lock free stands under the lock only when this deploy's acquisition is the very next one;
/// it is made again when another deploy held the lock in between, or held it while the plan
/// was being made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_stands_under_the_lock_only_when_no_other_deploy_held_it_since() {
    let env = unique_env("gen");
    let aws = clients().await;
    let d = Deployer::connect(aws.clone(), Env::new(&env).unwrap(), tier_xs::ladder())
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    // A workspace never deployed: no table, no lock; the first lock creates the table.
    let fresh = d.table.snapshot().await.unwrap();
    assert!(!fresh.exists);
    assert_eq!(fresh.lock, LockSeen::default());
    let lease = d.lock(ttl).await.unwrap();
    assert_eq!(lease.generation, 1);
    assert!(fresh.lock.unchanged_by(&lease));
    let during = d.table.snapshot().await.unwrap();
    assert!(during.exists);
    assert_eq!(
        during.lock,
        LockSeen {
            generation: 1,
            leased: true,
            counted: true
        }
    );
    lease.release().await.unwrap();

    // Released: the item keeps its count and loses its lease (read with the SDK).
    let item = crate::harness::lock_item(&aws, &env).await.unwrap();
    assert_eq!(item.get("generation"), Some(&AttributeValue::N("1".into())));
    for gone in ["lease_id", "holder", "expires_at"] {
        assert!(!item.contains_key(gone), "{gone} left in {item:?}");
    }
    assert!(d.table.read_lock().await.unwrap().is_none());

    // Planned while another deploy held the lock: made again, even as the next acquisition.
    let lease = d.lock(ttl).await.unwrap();
    assert_eq!(lease.generation, 2);
    assert!(!during.lock.unchanged_by(&lease));
    lease.release().await.unwrap();

    // Another deploy takes and releases the lock between this plan and this lock.
    let seen = d.table.snapshot().await.unwrap().lock;
    assert_eq!(
        seen,
        LockSeen {
            generation: 2,
            leased: false,
            counted: true
        }
    );
    d.lock(ttl).await.unwrap().release().await.unwrap();
    let lease = d.lock(ttl).await.unwrap();
    assert_eq!(lease.generation, 4);
    assert!(!seen.unchanged_by(&lease));
    lease.release().await.unwrap();

    // Nobody in between: the plan stands.
    let seen = d.table.snapshot().await.unwrap().lock;
    let lease = d.lock(ttl).await.unwrap();
    assert!(seen.unchanged_by(&lease));
    lease.release().await.unwrap();

    // A lock item without a count (versions before it wrote the item whole and deleted it
    // on release): nothing can be told, so the plan is made again.
    aws.dynamodb()
        .delete_item()
        .table_name(format!("agentbus-{env}-deploy"))
        .key("pk", AttributeValue::S("lock".into()))
        .key("sk", AttributeValue::S("lock".into()))
        .send()
        .await
        .unwrap();
    let seen = d.table.snapshot().await.unwrap().lock;
    assert!(!seen.counted, "{seen:?}");
    let lease = d.lock(ttl).await.unwrap();
    assert_eq!(lease.generation, 1);
    assert!(!seen.unchanged_by(&lease));
    lease.release().await.unwrap();
}

#[tokio::test]
async fn destroy_keeps_the_kv_table_unless_told_to_delete_data() {
    let env = unique_env("dstr");
    let r = agentbus(&deploy_args(&env, &["--image", IMAGE]));
    assert_eq!(r.code, 0, "{r:?}");
    let aws = clients().await;
    let ws = format!("agentbus-{env}");
    let kv = format!("{ws}-kv");
    aws.dynamodb()
        .put_item()
        .table_name(&kv)
        .item("pk", AttributeValue::S("tenant-a#default".into()))
        .item("sk", AttributeValue::S("greeting".into()))
        .item("value", AttributeValue::S("hello".into()))
        .send()
        .await
        .unwrap();

    // The budget follows its settings: a new limit and an alert address are updated in place.
    let budget = || async {
        let b = aws
            .budgets()
            .describe_budget()
            .account_id("123456789012")
            .budget_name(&ws)
            .send()
            .await
            .unwrap();
        let n = aws
            .budgets()
            .describe_notifications_for_budget()
            .account_id("123456789012")
            .budget_name(&ws)
            .send()
            .await
            .unwrap();
        (
            b.budget
                .unwrap()
                .budget_limit
                .unwrap()
                .amount()
                .parse::<f64>()
                .unwrap(),
            n.notifications().len(),
        )
    };
    assert_eq!(budget().await, (10.0, 0));
    let r = agentbus(&deploy_args(
        &env,
        &["--budget-usd", "25", "--alert-email", "team@example.com"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(budget().await, (25.0, 2));
    let p = agentbus(&["plan", "xs", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(p.code, 0, "{p:?}");

    // A tenant's secret, as `secrets_put` leaves it.
    let tenant_secret = format!("agentbus/{env}/tenants/tenant-a/api-key");
    aws.secrets()
        .create_secret()
        .name(&tenant_secret)
        .secret_string("s3cr3t")
        .send()
        .await
        .unwrap();

    let r = agentbus(&["destroy", "--env", &env, "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!("kept dynamodb table {kv}")),
        "{r:?}"
    );
    // The tokens and the tenants' secrets are data too: kept.
    assert!(
        r.stderr
            .contains(&format!("kept secret agentbus/{env}/server")),
        "{r:?}"
    );
    for name in [format!("agentbus/{env}/server"), tenant_secret.clone()] {
        let d = aws
            .secrets()
            .describe_secret()
            .secret_id(&name)
            .send()
            .await
            .unwrap();
        assert!(d.deleted_date.is_none(), "{name} is kept");
    }
    let item = aws
        .dynamodb()
        .get_item()
        .table_name(&kv)
        .key("pk", AttributeValue::S("tenant-a#default".into()))
        .key("sk", AttributeValue::S("greeting".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        item.item.unwrap()["value"],
        AttributeValue::S("hello".into())
    );
    // Everything else is gone.
    assert_absent(
        aws.events().describe_event_bus().name(&ws).send().await,
        aws_sdk_eventbridge::operation::describe_event_bus::DescribeEventBusError::is_resource_not_found_exception,
        "the event bus",
    );
    let role = format!("{ws}-dashboard-task");
    assert_eq!(
        crate::harness::boto_result(&aws, "iam", "get_role", json!({"RoleName": role})).await,
        Err("NoSuchEntity".into()),
        "the task role should be gone"
    );
    let c = aws
        .ecs()
        .describe_clusters()
        .clusters(&ws)
        .send()
        .await
        .unwrap();
    assert!(
        c.clusters()
            .iter()
            .all(|c| c.status.as_deref() != Some("ACTIVE"))
    );
    let sgs = dashboard_groups(&aws, &ws).await;
    assert!(sgs.is_empty());
    assert_absent(
        aws.budgets()
            .describe_budget()
            .account_id("123456789012")
            .budget_name(&ws)
            .send()
            .await,
        aws_sdk_budgets::operation::describe_budget::DescribeBudgetError::is_not_found_exception,
        "the budget (destroy removes it)",
    );
    // A re-deploy finds the table (and its data) and creates the rest around it.
    let p = agentbus(&["plan", "xs", "--env", &env, "--json"]).json();
    let changed = changed_fields(&p["plan"]);
    assert_eq!(changed.len(), 12);
    assert!(!changed.contains_key("kv-table"));
    assert!(!changed.contains_key("image-repository"));
    assert!(!changed.contains_key("server-secret"));

    let r = agentbus(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    // With the flag, the server's secret goes, and the tenants' secrets with it.
    for name in [format!("agentbus/{env}/server"), tenant_secret] {
        assert_absent(
            aws.secrets().describe_secret().secret_id(&name).send().await,
            aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError::is_resource_not_found_exception,
            &name,
        );
    }
    for table in [kv.clone(), format!("{ws}-deploy")] {
        assert_absent(
            aws.dynamodb()
                .describe_table()
                .table_name(&table)
                .send()
                .await,
            DescribeTableError::is_resource_not_found_exception,
            &table,
        );
    }
    // Deployed again at once: the secret's name is free only once its deletion has finished
    // (the test emulator refuses it meanwhile, as Secrets Manager does); the deploy waits.
    let r = agentbus(&deploy_args(&env, &["--image", IMAGE]));
    assert_eq!(r.code, 0, "{r:?}");
    let r = agentbus(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[tokio::test]
async fn prod_keeps_deletion_protection_and_recoverable_secrets() {
    let env = "prod";
    let r = agentbus(&deploy_args(
        env,
        &["--image", IMAGE, "--allow-cidr", "0.0.0.0/0"],
    ));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("prod refuses --allow-cidr 0.0.0.0/0"),
        "{r:?}"
    );

    let r = agentbus(&deploy_args(
        env,
        &["--image", IMAGE, "--allow-cidr", "198.51.100.0/24"],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let aws = clients().await;
    let t = aws
        .dynamodb()
        .describe_table()
        .table_name("agentbus-prod-kv")
        .send()
        .await
        .unwrap();
    assert_eq!(t.table.unwrap().deletion_protection_enabled, Some(true));
    let svc = aws
        .ecs()
        .describe_services()
        .cluster("agentbus-prod")
        .services("agentbus-prod-dashboard")
        .send()
        .await
        .unwrap();
    let strategy: Vec<(String, i32)> = svc.services()[0]
        .capacity_provider_strategy()
        .iter()
        .map(|c| (c.capacity_provider.clone(), c.base))
        .collect();
    assert!(
        strategy.contains(&("FARGATE".to_string(), 1)),
        "{strategy:?}"
    );

    // Even with --destroy-data, the protected table stays, and the secret stays recoverable.
    let r = agentbus(&["destroy", "--env", env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("deletion protection is on (prod)"),
        "{r:?}"
    );
    assert!(
        aws.dynamodb()
            .describe_table()
            .table_name("agentbus-prod-kv")
            .send()
            .await
            .is_ok()
    );
    let s = aws
        .secrets()
        .describe_secret()
        .secret_id("agentbus/prod/server")
        .send()
        .await
        .unwrap();
    // Scheduled for deletion in 30 days (the recovery window), not removed.
    let deleted = s
        .deleted_date
        .expect("prod secrets are scheduled for deletion, not removed")
        .secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = (deleted - now) as f64 / 86_400.0;
    assert!(
        (days - 30.0).abs() < 0.1,
        "a 30-day recovery window, not {days:.2} days"
    );

    // The next deploy restores the secret (settings are remembered from the last deploy).
    let r = agentbus(&deploy_args(env, &[]));
    assert_eq!(r.code, 0, "{r:?}");
    let s = aws
        .secrets()
        .describe_secret()
        .secret_id("agentbus/prod/server")
        .send()
        .await
        .unwrap();
    assert!(s.deleted_date.is_none());
}

#[tokio::test]
async fn the_cli_explains_bad_input() {
    // No credentials anywhere: a clear error that says how to provide them, first (no SDK
    // warnings before it).
    let r = agentbus_env(
        &["plan", "xs"],
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_PROFILE", ""),
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("error: no AWS credentials"), "{r:?}");
    assert!(r.stderr.contains("AWS_ACCESS_KEY_ID"), "{r:?}");
    // A profile that does not exist is named as such, wherever it came from.
    for (args, from) in [
        (
            vec!["plan", "xs", "--profile", "agentbus-test-none"],
            "--profile",
        ),
        (vec!["plan", "xs"], "AWS_PROFILE"),
    ] {
        let r = agentbus_env(&args, &[("AWS_PROFILE", "agentbus-test-none")]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.starts_with(&format!(
                "error: the AWS profile \"agentbus-test-none\" (from {from}) is not in"
            )),
            "{r:?}"
        );
    }

    // The large tier is priced: its database's capacity in two zones, storage and I/O.
    let r = agentbus(&["cost", "large"]);
    assert_eq!(r.code, 0, "{r:?}");
    for line in [
        "Serverless v2 capacity (writer)",
        "Serverless v2 capacity (reader, another zone)",
        "Aurora storage",
        "custom metrics extracted from EMF",
    ] {
        assert!(r.stdout.contains(line), "{line}: {r:?}");
    }
    // The medium tier's agents need their image, as the dashboard needs its own.
    let r = agentbus(&[
        "plan",
        "medium",
        "--env",
        &unique_env("med"),
        "--image",
        IMAGE,
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("pass --agent-image URI (`agentbus image push --agent`)"),
        "{r:?}"
    );
    let r = agentbus(&["plan", "huge"]);
    assert!(r.stderr.contains("unknown tier"), "{r:?}");
    let r = agentbus(&["plan", "xs", "--env", "Bad_Env"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("invalid env"), "{r:?}");
    let r = agentbus(&["plan"]);
    assert!(r.stderr.contains("name a tier"), "{r:?}");

    // The seed's WS/ENV variables name tier and env.
    let env = unique_env("seed");
    let r = agentbus_env(&["plan", "--json"], &[("WS", "extra-small"), ("ENV", &env)]);
    assert_eq!(r.json()["workspace"], format!("agentbus-{env}"));
    assert!(
        r.json()["plan"]["problems"].to_string().contains("--image"),
        "{r:?}"
    );
    // The shell's ENV (a startup file) is not an env name: it is passed over, not an error;
    // AGENTBUS_ENV wins over it and a bad value names where it came from; --env wins over all.
    let r = agentbus_env(
        &["cost", "xs", "--json"],
        &[("ENV", "/home/me/.shrc"), ("AGENTBUS_ENV", "")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = agentbus_env(&["cost", "xs"], &[("AGENTBUS_ENV", "Bad_Env")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("AGENTBUS_ENV \"Bad_Env\""), "{r:?}");
    let r = agentbus_env(
        &["plan", "--json", "--env", &env],
        &[
            ("WS", "extra-small"),
            ("AGENTBUS_ENV", "other"),
            ("ENV", "other"),
        ],
    );
    assert_eq!(r.json()["workspace"], format!("agentbus-{env}"));
    // `cost --profile` names an AWS profile, not a usage profile: an unknown argument, with
    // the right flag suggested; under --json the error is JSON too.
    let r = agentbus(&["cost", "xs", "--profile", "team"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--profile-usage"), "{r:?}");
    let r = agentbus(&["cost", "xs", "--profile", "team", "--json"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("--profile-usage"),
        "{r:?}"
    );
    let r = agentbus(&["status", "--env", "Bad_Env", "--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.json()["error"].as_str().unwrap().contains("invalid env"),
        "{r:?}"
    );

    // A deploy without an image says what is missing and changes nothing.
    let r = agentbus(&deploy_args(&env, &[]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("needs a container image: pass --image"),
        "{r:?}"
    );
    // A short image name would be pulled from Docker Hub: refused before anything asks DNS.
    let r = agentbus(&["plan", "xs", "--env", &env, "--image", "agentbus:latest"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("names no registry"), "{r:?}");
    assert!(r.stdout.contains("agentbus image push"), "{r:?}");
    assert!(!r.stdout.contains("dns error"), "{r:?}");
    // Tokens of an env that was never deployed: said so, not an SDK error.
    let r = agentbus(&["token", "list", "--env", &env]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("agentbus-{env} is not deployed")),
        "{r:?}"
    );
    let aws = clients().await;
    assert_absent(
        aws.dynamodb()
            .describe_table()
            .table_name(format!("agentbus-{env}-kv"))
            .send()
            .await,
        DescribeTableError::is_resource_not_found_exception,
        "the KV table",
    );
    // Without --yes and without a terminal, nothing is applied.
    let r = agentbus(&["deploy", "xs", "--env", &env, "--image", IMAGE]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("pass --yes"), "{r:?}");
}

#[test]
fn up_on_a_busy_port_says_so_and_leaves_no_data_directory() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let dir = std::env::temp_dir().join(format!("agentbus-busy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let r = agentbus(&["up", "--port", &port, "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(&format!("port {port} is busy")), "{r:?}");
    assert!(!dir.exists(), "no data directory is left behind");
}

#[test]
fn healthcheck_reports_the_local_server_state() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let server = std::thread::spawn(move || {
        for status in ["200 OK", "503 Service Unavailable"] {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /health HTTP/1.1"));
            write!(s, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").unwrap();
        }
    });
    let ok = agentbus(&["healthcheck", "--port", &port]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let bad = agentbus(&["healthcheck", "--port", &port]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("503"), "{bad:?}");
    server.join().unwrap();
    // Nothing listening at all.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port().to_string();
    drop(free);
    let none = agentbus(&["healthcheck", "--port", &port]);
    assert_eq!(none.code, 1, "{none:?}");
}

#[test]
fn cost_prices_the_tier_without_an_aws_account() {
    let r = agentbus_env(
        &[
            "cost",
            "xs",
            "--profile-usage",
            "idle",
            "--region",
            "us-east-1",
            "--json",
        ],
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let c = r.json();
    let items: Vec<String> = c["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["resource"].as_str().unwrap(),
                l["item"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "dashboard-service Fargate Spot vCPU",
        "dashboard-service Fargate Spot memory",
        "dashboard-service public IPv4 address",
        "server-secret secret",
        "kv-table on-demand writes",
        "event-bus custom events published",
        "dashboard-log-group log ingestion",
        "events-log-group log ingestion",
    ] {
        assert!(
            items.iter().any(|i| i.starts_with(want)),
            "{want} missing from {items:?}"
        );
    }
    let total = c["total"].as_f64().unwrap();
    assert!(total < 10.0, "xs idle costs {total}");
    assert_eq!(c["target_high"], 10.0);
    // Under --json the answer is the JSON alone; without it, the table for a person.
    assert!(
        !r.stderr.contains("within it") && !r.stdout.contains("within it"),
        "{r:?}"
    );
    let r = agentbus(&["cost", "xs", "--profile-usage", "idle"]);
    assert!(
        r.stdout
            .contains("the extra-small tier is designed to cost under $10 (within it)"),
        "{r:?}"
    );

    // Other regions and profiles; unknown ones are explained.
    let eu = agentbus(&["cost", "xs", "--region", "eu-west-1", "--json"]).json();
    assert_eq!(eu["region"], "eu-west-1");
    let team = agentbus(&["cost", "xs", "--profile-usage", "team", "--json"]).json();
    assert!(team["total"].as_f64().unwrap() > total);
    let bad = agentbus(&["cost", "xs", "--region", "mars-1"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.contains("no prices for region mars-1"),
        "{bad:?}"
    );
    let bad = agentbus(&["cost", "xs", "--profile-usage", "busy"]);
    assert!(bad.stderr.contains("unknown usage profile"), "{bad:?}");
}

/// The steady-state wait, on services that do not get there (the test emulator keeps these
/// workspaces' tasks pending, or stops their rollout as ECS's circuit breaker does): a deploy
/// whose tasks never run fails when `--wait-timeout` runs out, saying how far it got; a
/// rollout the circuit breaker stopped fails at once with ECS's reason, not after the wait.
/// Either way the service is as specified, so the next plan has nothing to change.
#[tokio::test]
async fn a_service_that_never_becomes_steady_fails_the_deploy_when_its_wait_runs_out() {
    use crate::harness::{NEVER_STEADY_ENV, ROLLOUT_FAILS_ENV};
    let deploy = |env: &str, wait: &str| {
        let start = std::time::Instant::now();
        let r = agentbus(&[
            "deploy",
            "xs",
            "--env",
            env,
            "--image",
            IMAGE,
            "--yes",
            "--wait-timeout",
            wait,
        ]);
        (r, start.elapsed())
    };
    let pending = unique_env(NEVER_STEADY_ENV);
    let (r, took) = deploy(&pending, "3");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "agentbus-{pending}-dashboard: not ready after 3s: 0 of 1 tasks running, 1 deployment(s)"
        )),
        "{r:?}"
    );
    assert!(took >= Duration::from_secs(3), "{took:?}");

    let failing = unique_env(ROLLOUT_FAILS_ENV);
    let (r, took) = deploy(&failing, "120");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "agentbus-{failing}-dashboard: deployment failed: ECS deployment circuit breaker: tasks failed to start."
        )),
        "{r:?}"
    );
    assert!(
        took < Duration::from_secs(60),
        "failed at once, not after the wait: {took:?}"
    );

    for env in [pending, failing] {
        let p = agentbus(&["plan", "xs", "--env", &env, "--detailed-exitcode"]);
        assert_eq!(p.code, 0, "{p:?}");
        let r = agentbus(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
        assert_eq!(r.code, 0, "{r:?}");
    }
}

/// Moving a deployed workspace to another VPC would replace its security group, which AWS
/// refuses to delete while the service's tasks use it: the plan says so before anything
/// changes, instead of an apply that fails halfway (moto would have let the delete through).
#[tokio::test]
async fn a_move_to_another_vpc_is_refused_before_anything_changes() {
    let aws = clients().await;
    let env = unique_env("vpc");
    crate::harness::deploy_xs(&env);
    let vpc =
        crate::harness::ec2(&aws, "create_vpc", json!({"CidrBlock": "10.77.0.0/16"})).await["Vpc"]
            ["VpcId"]
            .as_str()
            .unwrap()
            .to_string();
    for (zone, cidr) in [
        ("us-east-1a", "10.77.1.0/24"),
        ("us-east-1b", "10.77.2.0/24"),
    ] {
        crate::harness::ec2(
            &aws,
            "create_subnet",
            json!({"VpcId": vpc, "AvailabilityZone": zone, "CidrBlock": cidr}),
        )
        .await;
    }
    let group = format!("agentbus-{env}-dashboard");
    let before = crate::harness::security_groups_named(&aws, &group).await;
    for extra in [None, Some("--yes")] {
        let verb = if extra.is_some() { "deploy" } else { "plan" };
        let args: Vec<&str> = [verb, "xs", "--env", &env, "--vpc", &vpc]
            .into_iter()
            .chain(extra)
            .collect();
        let r = agentbus(&args);
        assert_eq!(r.code, 1, "{r:?}");
        let said = format!("{}{}", r.stdout, r.stderr);
        assert!(
            said.contains(&format!("security group {group} would be replaced (vpc "))
                && said.contains(&format!("while ecs service {group} uses it")),
            "{said}"
        );
    }
    // Nothing changed: the same group, in the same VPC; the deploy recorded no apply.
    let after = crate::harness::security_groups_named(&aws, &group).await;
    assert_eq!(after, before);
    let s = agentbus(&["status", "--env", &env, "--json"]).json();
    assert_eq!(s["history"].as_array().unwrap().len(), 1, "{s}");
    let r = agentbus(&["destroy", "--env", &env, "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// Each workspace holds one of the ten CloudWatch Logs resource policies AWS allows an
/// account per region: a deploy past them stops at that step and says which limit it met
/// and how to see the others (the emulator enforces the same ten), and the next deploy, once
/// one is gone, finishes the rest.
#[tokio::test]
async fn a_region_with_all_ten_logs_resource_policies_taken_is_said_so() {
    use crate::harness::{agentbus_command, clients_at, run, start_moto};
    let moto = start_moto();
    let aws = clients_at(&moto.url, "testing", "testing").await;
    for i in 0..10 {
        aws.logs()
            .put_resource_policy()
            .policy_name(format!("someone-else-{i}"))
            .policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
            .send()
            .await
            .unwrap();
    }
    let env = unique_env("tenth");
    let deploy = || {
        run(agentbus_command(
            &moto.url,
            &deploy_args(&env, &["--image", IMAGE]),
        ))
    };
    let r = deploy();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("this account already has 10 CloudWatch Logs resource policies in us-east-1")
            && r.stderr.contains("aws logs describe-resource-policies"),
        "{r:?}"
    );
    aws.logs()
        .delete_resource_policy()
        .policy_name("someone-else-0")
        .send()
        .await
        .unwrap();
    let r = deploy();
    assert_eq!(r.code, 0, "{r:?}");
    let names: Vec<String> = aws
        .logs()
        .describe_resource_policies()
        .send()
        .await
        .unwrap()
        .resource_policies()
        .iter()
        .filter_map(|p| p.policy_name().map(str::to_string))
        .collect();
    assert!(
        names.contains(&format!("agentbus-{env}-events-to-logs")),
        "{names:?}"
    );
}
