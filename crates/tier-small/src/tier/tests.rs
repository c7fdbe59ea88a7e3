#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use serde_json::json;
use tier_xs::components::network::Network;
use tier_xs::cost::{Usage, report};
use tier_xs::engine::Outputs;
use tier_xs::workspace::Env;

use super::*;

fn ws(env: &str, region: &str) -> Workspace {
    Workspace::new(Env::new(env).unwrap(), "123456789012", region.to_string())
}

fn xs_settings() -> XsSettings {
    let mut s = XsSettings::new(Network {
        vpc_id: "vpc-1".into(),
        subnet_ids: vec!["subnet-1".into()],
    });
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
    assert_eq!(all.len(), xs_ids.len() + 5);
    let unique: HashSet<&str> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "ids are unique across tiers");
    for r in s.own.resources() {
        assert_eq!(r.tier(), Tier::Small, "{}", r.id());
        assert!(r.data_bearing(), "{} holds data", r.id());
    }
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
    let plain = ExtraSmall::new(&ws("dev", "us-east-1"), &xs_settings());
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
        &SmallSettings { plain_http: true },
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
    let usage = Usage::load("light").unwrap();
    let xs = report(Tier::ExtraSmall, "us-east-1", &usage, &s.xs.resources()).unwrap();
    let sm = report(Tier::Small, "us-east-1", &usage, &s.resources()).unwrap();
    let by = sm.by_resource();
    assert!(by.contains_key("artifacts-bucket") && by.contains_key("events-table"));
    assert!(sm.total > xs.total, "{} vs {}", sm.total, xs.total);
}
