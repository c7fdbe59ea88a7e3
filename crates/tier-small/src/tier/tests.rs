#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use serde_json::json;
use tier_xs::components::network::Network;
use tier_xs::cost::CostReport;
use tier_xs::engine::Outputs;
use tier_xs::workspace::Env;

use super::*;

fn ws(env: &str, region: &str) -> Workspace {
    Workspace::new(Env::new(env).unwrap(), "123456789012", region.to_string())
}

/// The dashboard as the extra-small tier alone shapes it.
fn alone() -> DashboardSpec {
    DashboardSpec::new(Tier::ExtraSmall)
}

/// Prices `resources` as the ladder of this crate does, for a built-in usage profile.
fn report(tier: Tier, region: &str, usage: &str, resources: &[Arc<dyn Resource>]) -> CostReport {
    let ladder = crate::ladder();
    let usage = ladder.usage_book().load(usage).unwrap();
    ladder.cost_report(tier, region, &usage, resources).unwrap()
}

fn xs_settings() -> XsSettings {
    let mut s = XsSettings::new(Network {
        vpc_id: "vpc-1".into(),
        subnet_ids: vec!["subnet-1".into(), "subnet-2".into()],
        zones: Default::default(),
    });
    s.allow_cidrs = vec!["203.0.113.0/24".into()];
    s.image = Some("example/agentbus:1".into());
    s
}

fn small(env: &str) -> Small {
    Small::new(
        &ws(env, "us-east-1"),
        &xs_settings(),
        &SmallSettings::default(),
    )
}

#[test]
fn small_is_every_extra_small_resource_plus_its_own() {
    let s = small("dev");
    let xs_ids: Vec<&str> = s.xs.resources().iter().map(|r| r.id()).collect();
    let all: Vec<&str> = s.resources().iter().map(|r| r.id()).collect();
    assert!(xs_ids.iter().all(|id| all.contains(id)));
    assert_eq!(all.len(), xs_ids.len() + 13);
    let unique: HashSet<&str> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "ids are unique across tiers");
    let data: Vec<&str> = s
        .own
        .resources()
        .iter()
        .filter(|r| r.data_bearing())
        .map(|r| r.id())
        .collect();
    assert_eq!(
        data,
        [
            "artifacts-bucket",
            "timeline-bucket",
            "events-table",
            "subscriptions-table",
            "event-rules-table",
            "events-dead-letter-queue"
        ]
    );
    for r in s.own.resources() {
        assert_eq!(r.tier(), Tier::Small, "{}", r.id());
    }
    assert!(s.problems().is_empty(), "{:?}", s.problems());
}

#[test]
fn bucket_names_are_global_and_fit_the_limit() {
    // The longest env and a long region still fit S3's 63 characters.
    let w = ws("abcdefghijklmnop", "ap-southeast-2");
    let c = SmallConfig::for_workspace(&w);
    for b in [&c.artifacts_bucket, &c.timeline_bucket] {
        assert!(b.len() <= 63, "{b} is {} characters", b.len());
        assert!(
            b.contains("123456789012") && b.ends_with("ap-southeast-2"),
            "{b}"
        );
        assert!(
            b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
    }
    assert_eq!(
        SmallConfig::for_workspace(&ws("dev", "us-east-1")).artifacts_bucket,
        "agentbus-dev-artifacts-123456789012-us-east-1"
    );
}

#[test]
fn the_dashboard_task_learns_the_names_and_gets_the_rights() {
    let s = small("dev");
    let env = &s.xs.task_definition.container.env;
    for (k, v) in s.own.config.to_env() {
        assert!(env.contains(&(k.clone(), v.clone())), "{k} missing");
    }
    assert!(env.contains(&("AGENTBUS_TIER".into(), "small".into())));
    let policy = s.xs.task_role.policy.to_string();
    assert!(policy.contains("arn:aws:s3:::agentbus-dev-artifacts-123456789012-us-east-1/*"));
    assert!(policy.contains("table/agentbus-dev-events/index/*"));
    // The extra-small tier on its own has none of it.
    let plain = ExtraSmall::new(&ws("dev", "us-east-1"), &xs_settings(), &alone());
    assert!(
        !plain
            .task_definition
            .container
            .env
            .iter()
            .any(|(k, _)| k.contains("ARTIFACTS"))
    );
    assert!(!plain.task_role.policy.to_string().contains("s3:"));
}

#[test]
fn the_events_table_uses_the_shared_index_names() {
    let s = small("dev");
    let d = s.own.events.desired(&Outputs::new());
    let gsis = d.get("global_indexes").unwrap().to_string();
    for g in monitoring::events::INDEXES {
        assert!(gsis.contains(g.name), "{gsis}");
    }
    // The indexes copy what lists filter on and counts count, never an event's detail.
    assert_eq!(
        gsis.matches("; keys + detail_type, priority, source, tenant, time")
            .count(),
        4,
        "{gsis}"
    );
    assert_eq!(
        d.get("ttl_attribute"),
        Some(&json!(monitoring::events::EXPIRES_AT)),
        "{d:?}"
    );
}

#[test]
fn buckets_are_locked_down_with_lifecycles() {
    let s = small("dev");
    let d = s.own.artifacts.desired(&Outputs::new());
    assert_eq!(d.get("versioning"), Some(&json!("Enabled")));
    assert_eq!(d.get("encryption"), Some(&json!("AES256")));
    let policy = d.get("policy").unwrap();
    assert_eq!(
        policy["Statement"][0]["Condition"]["Bool"]["aws:SecureTransport"],
        "false"
    );
    let life = d.get("lifecycle").unwrap();
    assert_eq!(life["noncurrent_versions_expire_after_days"], 90);
    assert_eq!(life["incomplete_uploads_aborted_after_days"], 7);
    let t = s.own.timeline.desired(&Outputs::new());
    assert_eq!(
        t.get("lifecycle").unwrap()["transitions"],
        json!(["STANDARD_IA after 30 days", "GLACIER_IR after 180 days"])
    );
    // Against a plain-HTTP endpoint the TLS-only policy would refuse every request.
    let plain = Small::new(
        &ws("dev", "us-east-1"),
        &xs_settings(),
        &SmallSettings {
            plain_http: true,
            certificate_arn: None,
        },
    );
    assert_eq!(
        plain.own.artifacts.desired(&Outputs::new()).get("policy"),
        Some(&serde_json::Value::Null)
    );
    assert!(plain.own.artifacts.notes()[0].contains("plain HTTP"));
}

#[test]
fn prod_keeps_buckets_and_tables() {
    let s = small("prod");
    assert!(s.own.artifacts.protected().is_some());
    assert!(s.own.events.protected().is_some());
    assert!(small("dev").own.artifacts.protected().is_none());
}

#[test]
fn small_costs_more_than_extra_small_by_its_own_lines() {
    let s = small("dev");
    let xs = report(Tier::ExtraSmall, "us-east-1", "light", &s.xs.resources());
    let sm = report(Tier::Small, "us-east-1", "light", &s.resources());
    let by = sm.by_resource();
    assert!(by.contains_key("artifacts-bucket") && by.contains_key("events-table"));
    assert!(sm.total > xs.total, "{} vs {}", sm.total, xs.total);
}

#[test]
fn the_dashboard_admits_only_the_load_balancer_which_admits_the_cidrs() {
    let s = small("dev");
    let mut out = Outputs::new();
    out.insert("alb-security-group.id".into(), "sg-alb".into());
    assert_eq!(
        s.xs.security_group.desired(&out).get("ingress"),
        Some(&json!(["tcp/8080 from sg-alb"]))
    );
    // Before the balancer's group exists, the rule is known after apply.
    let unknown = s.xs.security_group.desired(&Outputs::new());
    assert!(tier_xs::engine::is_unknown(unknown.get("ingress").unwrap()));
    assert!(
        s.xs.security_group
            .depends_on()
            .contains(&"alb-security-group")
    );
    assert_eq!(
        s.own.alb_security_group.desired(&out).get("ingress"),
        Some(&json!(["tcp/80 from 203.0.113.0/24"]))
    );
    // The service registers in the target group once the listener exists.
    let deps = s.xs.service.depends_on();
    assert!(
        deps.contains(&"target-group") && deps.contains(&"http-listener"),
        "{deps:?}"
    );
    // No certificate: HTTP forwards, and there is no HTTPS listener.
    assert!(!s.own.https_listener.wanted());
    out.insert("target-group.arn".into(), "arn:tg".into());
    assert_eq!(
        s.own.http_listener.desired(&out).get("action"),
        Some(&json!({"forward": "arn:tg"}))
    );
    // prod may open the balancer to everyone: the dashboard itself stays closed.
    let mut open = xs_settings();
    open.allow_cidrs = vec!["0.0.0.0/0".into()];
    let https = SmallSettings {
        certificate_arn: Some("arn:aws:acm:us-east-1:123456789012:certificate/abc".into()),
        ..SmallSettings::default()
    };
    let p = Small::new(&ws("prod", "us-east-1"), &open, &https);
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    // prod without a certificate would send every token in clear text: refused.
    let plain = Small::new(&ws("prod", "us-east-1"), &open, &SmallSettings::default());
    let problems: Vec<String> = plain.problems().into_iter().map(|p| p.message).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("prod needs HTTPS: pass --certificate-arn"),
        "{problems:?}"
    );
    let x = ExtraSmall::new(&ws("prod", "us-east-1"), &open, &alone());
    assert!(x.problems.iter().any(|p| p.message.contains("0.0.0.0/0")));
}

#[test]
fn a_certificate_adds_https_and_redirects_http() {
    let cert = "arn:aws:acm:us-east-1:123456789012:certificate/abc";
    let s = Small::new(
        &ws("dev", "us-east-1"),
        &xs_settings(),
        &SmallSettings {
            plain_http: false,
            certificate_arn: Some(cert.into()),
        },
    );
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    assert!(s.own.https_listener.wanted());
    // Only the HTTPS listener forwards, so the service waits for that one.
    let deps = s.xs.service.depends_on();
    assert!(
        deps.contains(&"https-listener") && !deps.contains(&"http-listener"),
        "{deps:?}"
    );
    let d = s.own.https_listener.desired(&Outputs::new());
    assert_eq!(d.get("certificate"), Some(&json!(cert)));
    assert_eq!(
        d.get("ssl_policy"),
        Some(&json!(crate::components::alb::SSL_POLICY))
    );
    assert_eq!(
        s.own.http_listener.desired(&Outputs::new()).get("action"),
        Some(&json!("redirect to HTTPS:443 (301)"))
    );
    assert_eq!(
        s.own
            .alb_security_group
            .desired(&Outputs::new())
            .get("ingress"),
        Some(&json!([
            "tcp/443 from 203.0.113.0/24",
            "tcp/80 from 203.0.113.0/24"
        ]))
    );
    let bad = Small::new(
        &ws("dev", "us-east-1"),
        &xs_settings(),
        &SmallSettings {
            plain_http: false,
            certificate_arn: Some("my-cert".into()),
        },
    );
    assert!(
        bad.problems()
            .iter()
            .any(|p| p.message.contains("--certificate-arn"))
    );
    assert!(valid_certificate_arn(
        "arn:aws:iam::123456789012:server-certificate/x"
    ));
}

#[test]
fn the_load_balancer_spans_two_zones_only() {
    let mut many = xs_settings();
    many.network.subnet_ids = (1..=6).rev().map(|i| format!("subnet-{i}")).collect();
    let s = Small::new(&ws("dev", "us-east-1"), &many, &SmallSettings::default());
    assert_eq!(s.own.load_balancer.subnets, ["subnet-1", "subnet-2"]);
}

#[test]
fn the_dashboard_runs_only_in_the_zones_its_load_balancer_spans() {
    // A target in a zone the load balancer does not span is never sent traffic.
    let mut many = xs_settings();
    many.network.subnet_ids = (1..=6).rev().map(|i| format!("subnet-{i}")).collect();
    let s = Small::new(&ws("dev", "us-east-1"), &many, &SmallSettings::default());
    assert_eq!(s.xs.service.subnets, s.own.load_balancer.subnets);
    // On its own, the extra-small dashboard may use every subnet.
    let x = ExtraSmall::new(&ws("dev", "us-east-1"), &many, &alone());
    assert_eq!(x.service.subnets.len(), 6);
}

#[test]
fn the_load_balancer_needs_two_zones() {
    let mut one = xs_settings();
    one.network.subnet_ids.truncate(1);
    let s = Small::new(&ws("dev", "us-east-1"), &one, &SmallSettings::default());
    assert!(
        s.problems()
            .iter()
            .any(|p| p.message.contains("two availability zones"))
    );
}

#[test]
fn the_load_balancer_is_priced_with_its_addresses() {
    let s = small("dev");
    let r = report(Tier::Small, "us-east-1", "idle", &s.resources());
    let lb: f64 = r
        .lines
        .iter()
        .filter(|l| l.resource == "load-balancer")
        .map(|l| l.monthly)
        .sum();
    // 730 h x $0.0225 + 2 addresses x 730 h x $0.005 + a sliver of LCU.
    assert!((lb - (16.425 + 7.3)).abs() < 0.05, "{lb}");
}

#[test]
fn every_bus_event_reaches_the_monitor_queue_and_only_from_its_rule() {
    let s = small("abcdefghijklmnop");
    let o = Outputs::new();
    let rule = s.own.monitor_rule.desired(&o);
    assert_eq!(
        rule.get("pattern"),
        Some(&crate::monitoring::all_events_pattern())
    );
    assert_eq!(s.own.monitor_rule.bus_name, "agentbus-abcdefghijklmnop");
    assert!(s.own.monitor_rule.meta.name.len() <= 64);
    assert_eq!(
        s.own.monitor_rule.depends_on(),
        ["event-bus", "events-queue"]
    );
    let q = s.own.events_queue.desired(&o);
    let policy = q.get("policy").unwrap();
    assert_eq!(
        policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
        "arn:aws:events:us-east-1:123456789012:rule/agentbus-abcdefghijklmnop/agentbus-abcdefghijklmnop-monitor"
    );
    assert_eq!(
        policy["Statement"][0]["Principal"]["Service"],
        "events.amazonaws.com"
    );
    assert_eq!(q.get("redrive").unwrap()["maxReceiveCount"], 5);
    assert_eq!(q.get("encrypted"), Some(&serde_json::Value::Bool(true)));
    assert!(
        s.own.events_queue.meta.name.len() <= 80 && s.own.dead_letter_queue.meta.name.len() <= 80
    );
    assert_eq!(
        s.own.events_queue.depends_on(),
        ["events-dead-letter-queue"]
    );
    // The dashboard task may drain the queue and read the dead-letter queue's depth, and
    // nothing else of SQS.
    let mut ext = DashboardSpec::new(Tier::Small);
    s.own
        .shape_dashboard(&ws("abcdefghijklmnop", "us-east-1"), &mut ext);
    let sqs: Vec<_> = ext
        .task_statements
        .iter()
        .filter(|st| st["Action"].to_string().contains("sqs:"))
        .collect();
    assert_eq!(sqs.len(), 2);
    assert_eq!(sqs[0]["Resource"][0], s.own.events_queue.arn);
    assert_eq!(
        sqs[1]["Action"],
        serde_json::json!(["sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
    );
    assert_eq!(
        sqs[1]["Resource"],
        serde_json::json!([s.own.dead_letter_queue.arn])
    );
    assert!(
        s.xs.resources()
            .iter()
            .any(|r| r.id() == "dashboard-task-definition")
    );
    assert!(
        crate::config::SmallConfig::for_workspace(&ws("dev", "us-east-1"))
            .to_env()
            .iter()
            .any(|(k, v)| k == crate::config::ENV_EVENTS_QUEUE && v == "agentbus-dev-events-feed")
    );
}

#[test]
fn the_cost_of_small_reads_line_by_line() {
    let r = report(
        Tier::Small,
        "us-east-1",
        "light",
        &small("demo").resources(),
    );
    insta::assert_snapshot!(r.render_on(time::macros::date!(2026 - 01 - 01)));
}

#[test]
fn the_budget_follows_the_tiers_own_estimate_and_a_lower_limit_is_called_out() {
    use tier_xs::engine::lock::StoredSettings;
    use tier_xs::ladder::LayerContext;
    let ladder = crate::ladder();
    let ws = ws("dev", "us-east-1");
    let network = xs_settings().network;
    let universe_with = |settings: &StoredSettings, usage: &str| {
        let usage = ladder.usage_book().load(usage).unwrap();
        let ctx = ladder.with_estimates(
            LayerContext {
                ws: &ws,
                settings,
                network: &network,
                target: Some(Tier::Small),
                plain_http: false,
                service_wait: std::time::Duration::from_secs(60),
                budget_default: 0.0,
                estimate: None,
            },
            &usage,
        );
        ladder.universe(&ctx)
    };
    let limit = |u: &tier_xs::ladder::Universe| {
        u.resources
            .iter()
            .find(|r| r.id() == tier_xs::xs::ids::BUDGET)
            .unwrap()
            .desired(&Outputs::new())
            .get("limit_usd")
            .cloned()
    };
    // light: $32.46 a month; with a quarter's headroom, $40.58: $41.
    let u = universe_with(&StoredSettings::default(), "light");
    assert_eq!(limit(&u), Some(json!("41.00")));
    assert!(
        !u.notes.iter().any(|n| n.contains("budget")),
        "{:?}",
        u.notes
    );
    // A chosen limit under the estimate stands, and the plan says why it will alert.
    let mut chosen = StoredSettings::default();
    chosen.values.insert("budget_usd".into(), json!(20.0));
    let u = universe_with(&chosen, "light");
    assert_eq!(limit(&u), Some(json!("20.00")));
    assert!(
        u.notes.iter().any(|n| n
            .contains("the budget's limit $20.00 is below this tier's estimate of $32.46 a month")),
        "{:?}",
        u.notes
    );
    // The default follows the light profile: a heavier profile does not move it, but is
    // called out when it would exceed it.
    let u = universe_with(&StoredSettings::default(), "team");
    assert_eq!(limit(&u), Some(json!("41.00")));
    assert!(u.notes.iter().any(|n| n.contains("usage profile \"team\"")));
}

#[test]
fn the_load_balancer_spans_two_zones_and_its_service_runs_only_in_them() {
    let zones: std::collections::BTreeMap<String, String> = [
        ("subnet-a1", "us-east-1a"),
        ("subnet-a2", "us-east-1a"),
        ("subnet-b1", "us-east-1b"),
        ("subnet-c1", "us-east-1c"),
    ]
    .into_iter()
    .map(|(s, z)| (s.to_string(), z.to_string()))
    .collect();
    let subnets: Vec<String> = zones.keys().cloned().collect();
    // One subnet of each of the first two zones, never two of one zone.
    assert_eq!(
        alb_subnets(&subnets, &zones),
        vec!["subnet-a1", "subnet-b1"]
    );

    let mut xs = xs_settings();
    xs.network.subnet_ids = subnets;
    xs.network.zones = zones.clone();
    let s = Small::new(&ws("dev", "us-east-1"), &xs, &SmallSettings::default());
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    assert_eq!(s.own.load_balancer.subnets, vec!["subnet-a1", "subnet-b1"]);

    // Two subnets of one zone: the plan says so before AWS refuses the load balancer.
    xs.network.subnet_ids = vec!["subnet-a1".into(), "subnet-a2".into()];
    let s = Small::new(&ws("dev", "us-east-1"), &xs, &SmallSettings::default());
    let problems: Vec<String> = s.problems().iter().map(|p| p.to_string()).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("two availability zones") && p.contains("us-east-1a")),
        "{problems:?}"
    );
}
