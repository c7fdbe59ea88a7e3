//! Engine behaviour on in-memory resources: tier filtering, data protection, ordering,
//! failure propagation. (The same engine against the AWS emulator is in tests/e2e.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;

use super::apply::{ApplyOptions, Outcome, apply};
use super::plan::{Action, PlanRequest, plan};
use super::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Permissions, Resource, output_or_unknown,
};
use crate::aws::AwsClients;
use crate::workspace::{Tier, Workspace};

#[derive(Default)]
struct Cloud {
    values: Mutex<HashMap<&'static str, i64>>,
    log: Mutex<Vec<String>>,
    /// Observations under way, and the most there ever were at once.
    observing: std::sync::atomic::AtomicUsize,
    most_observing: std::sync::atomic::AtomicUsize,
}

struct Fake {
    meta: Meta,
    id: &'static str,
    value: i64,
    dep: Option<&'static str>,
    data: bool,
    fail_create: bool,
    /// An account's setting, wanted only when this is set (see [`Resource::account_setting`]).
    setting: Option<bool>,
    /// A new value can only be had by replacing the resource.
    replace_on_value: bool,
    /// Its observation takes a while (to see how many run at once).
    slow: bool,
    cloud: Arc<Cloud>,
}

impl Fake {
    fn new(cloud: &Arc<Cloud>, id: &'static str, tier: Tier) -> Self {
        Fake {
            meta: Meta::new(id, tier, id, Vec::new()),
            id,
            value: 1,
            dep: None,
            data: false,
            fail_create: false,
            setting: None,
            replace_on_value: false,
            slow: false,
            cloud: cloud.clone(),
        }
    }
    /// Writes the wanted value to the fake cloud, logging what did it.
    fn store(&self, what: &str) {
        self.log(what);
        self.cloud
            .values
            .lock()
            .unwrap()
            .insert(self.id, self.value);
    }
    fn log(&self, what: &str) {
        self.cloud
            .log
            .lock()
            .unwrap()
            .push(format!("{what} {}", self.id));
    }
}

#[async_trait]
impl Resource for Fake {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn permissions(&self, _ws: &Workspace) -> Permissions {
        Permissions::new()
    }
    fn depends_on(&self) -> Vec<&'static str> {
        self.dep.into_iter().collect()
    }
    fn data_bearing(&self) -> bool {
        self.data
    }
    fn wanted(&self) -> bool {
        self.setting != Some(false)
    }
    fn account_setting(&self) -> bool {
        self.setting.is_some()
    }
    fn note_when_absent(&self) -> Option<String> {
        self.setting.map(|_| {
            format!(
                "{} is off: pass --enable-{} to turn it on",
                self.id, self.id
            )
        })
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        let d = if self.replace_on_value {
            Desired::new().set_replace("value", self.value)
        } else {
            Desired::new().set("value", self.value)
        };
        match self.dep {
            Some(dep) => d.set("dep", output_or_unknown(outputs, dep, "arn")),
            None => d,
        }
    }
    async fn observe(&self, _aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        if self.slow {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.cloud.observing.fetch_add(1, SeqCst) + 1;
            self.cloud.most_observing.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            self.cloud.observing.fetch_sub(1, SeqCst);
        }
        let v = self.cloud.values.lock().unwrap().get(self.id).copied();
        Ok(v.map(|v| {
            let mut o = Observed::default()
                .field("value", v)
                .output("arn", format!("arn:{}", self.id));
            if let Some(dep) = self.dep {
                o = o.field("dep", format!("arn:{dep}"));
            }
            o
        }))
    }
    async fn create(&self, _aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        if let Some(dep) = self.dep {
            super::require_output(outputs, self.id, dep, "arn")?;
        }
        if self.fail_create {
            return Err(EngineError::Invalid(format!("{} refused", self.id)));
        }
        self.store("create");
        Ok(())
    }
    async fn update(&self, _aws: &AwsClients, _c: &Edit<'_>) -> Result<(), EngineError> {
        self.store("update");
        Ok(())
    }
    fn change_notes(&self, fields: &[String]) -> Vec<String> {
        fields
            .iter()
            .filter(|f| *f == "value")
            .map(|_| format!("{} takes a while to settle", self.id))
            .collect()
    }
    async fn delete(&self, _aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        self.log("delete");
        self.cloud.values.lock().unwrap().remove(self.id);
        Ok(())
    }
}

fn offline_clients() -> AwsClients {
    let cfg = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    AwsClients::from_sdk_config(&cfg)
}

fn req(universe: Vec<Arc<dyn Resource>>, target: Option<Tier>, destroy_data: bool) -> PlanRequest {
    PlanRequest {
        universe,
        target,
        destroy_data,
        parallelism: 4,
    }
}

#[tokio::test]
async fn a_downgrade_deletes_higher_tier_resources_but_keeps_their_data() {
    let cloud = Arc::new(Cloud::default());
    for id in ["base", "extra", "bucket"] {
        cloud.values.lock().unwrap().insert(id, 1);
    }
    let universe = || -> Vec<Arc<dyn Resource>> {
        vec![
            Arc::new(Fake::new(&cloud, "base", Tier::ExtraSmall)),
            Arc::new(Fake::new(&cloud, "extra", Tier::Small)),
            Arc::new(Fake {
                data: true,
                ..Fake::new(&cloud, "bucket", Tier::Small)
            }),
        ]
    };
    let aws = offline_clients();
    let p = plan(&aws, req(universe(), Some(Tier::ExtraSmall), false))
        .await
        .unwrap();
    assert_eq!(p.change("base").unwrap().action, Action::NoOp);
    assert_eq!(p.change("extra").unwrap().action, Action::Delete);
    assert_eq!(p.change("bucket").unwrap().action, Action::Keep);
    assert!(p.render(false).contains("--destroy-data"));
    let report = apply(&aws, &p, ApplyOptions::default()).await;
    assert!(report.succeeded());
    assert!(cloud.values.lock().unwrap().contains_key("bucket"));
    assert!(!cloud.values.lock().unwrap().contains_key("extra"));

    // With the flag, the data goes too; the plan says so loudly.
    let p = plan(&aws, req(universe(), Some(Tier::ExtraSmall), true))
        .await
        .unwrap();
    assert_eq!(p.change("bucket").unwrap().action, Action::Delete);
    assert!(p.render(false).contains("DATA WILL BE LOST"));
    // The upgrade plans only additions.
    let p = plan(&aws, req(universe(), Some(Tier::Small), false))
        .await
        .unwrap();
    assert_eq!(p.count(Action::Create), 1);
    assert_eq!(p.count(Action::Delete), 0);
}

#[tokio::test]
async fn an_account_setting_is_turned_on_when_asked_and_never_turned_off_or_shown_after() {
    let cloud = Arc::new(Cloud::default());
    let setting = |on: bool| -> Vec<Arc<dyn Resource>> {
        vec![
            Arc::new(Fake::new(&cloud, "base", Tier::ExtraSmall)),
            Arc::new(Fake {
                setting: Some(on),
                ..Fake::new(&cloud, "search", Tier::Large)
            }),
        ]
    };
    let aws = offline_clients();
    // Off and not asked for: the plan says what is missing, and changes nothing for it.
    let p = plan(&aws, req(setting(false), Some(Tier::Large), false))
        .await
        .unwrap();
    assert!(p.change("search").is_none());
    assert_eq!(
        p.notes,
        ["search is off: pass --enable-search to turn it on"]
    );
    // Below the tier that uses it, nothing is said.
    let p = plan(&aws, req(setting(false), Some(Tier::Medium), false))
        .await
        .unwrap();
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    // Asked for: turned on.
    let p = plan(&aws, req(setting(true), Some(Tier::Large), false))
        .await
        .unwrap();
    assert_eq!(p.change("search").unwrap().action, Action::Create);
    assert!(apply(&aws, &p, ApplyOptions::default()).await.succeeded());
    // Then neither a plan that no longer asks, nor a downgrade, nor a destroy with the data
    // flag turns it off or shows it.
    for (target, data) in [
        (Some(Tier::Large), false),
        (Some(Tier::Small), false),
        (None, true),
    ] {
        let p = plan(&aws, req(setting(false), target, data)).await.unwrap();
        assert!(p.change("search").is_none(), "{target:?}");
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        assert!(apply(&aws, &p, ApplyOptions::default()).await.succeeded());
    }
    assert!(cloud.values.lock().unwrap().contains_key("search"));
    assert!(!cloud.values.lock().unwrap().contains_key("base"));
}

#[tokio::test]
async fn apply_follows_dependencies_and_skips_dependents_of_a_failure() {
    let cloud = Arc::new(Cloud::default());
    let universe: Vec<Arc<dyn Resource>> = vec![
        Arc::new(Fake {
            dep: Some("role"),
            ..Fake::new(&cloud, "task", Tier::ExtraSmall)
        }),
        Arc::new(Fake {
            fail_create: true,
            ..Fake::new(&cloud, "role", Tier::ExtraSmall)
        }),
        Arc::new(Fake::new(&cloud, "table", Tier::ExtraSmall)),
    ];
    let aws = offline_clients();
    let p = plan(&aws, req(universe, Some(Tier::ExtraSmall), false))
        .await
        .unwrap();
    assert_eq!(p.count(Action::Create), 3);
    let task = p.change("task").unwrap();
    assert_eq!(
        task.fields.iter().find(|f| f.field == "dep").unwrap().after,
        Some(json!({"$unknown": "role.arn"}))
    );
    let report = apply(&aws, &p, ApplyOptions::default()).await;
    assert!(!report.succeeded());
    let outcome = |id: &str| {
        report
            .results
            .iter()
            .find(|r| r.id == id)
            .unwrap()
            .outcome
            .clone()
    };
    assert!(matches!(outcome("role"), Outcome::Failed(_)));
    assert!(matches!(outcome("task"), Outcome::Skipped(_)));
    assert_eq!(outcome("table"), Outcome::Done);
}

#[tokio::test]
async fn destroy_deletes_dependents_first_and_updates_only_what_differs() {
    let cloud = Arc::new(Cloud::default());
    let make = |value| -> Vec<Arc<dyn Resource>> {
        vec![
            Arc::new(Fake {
                value,
                ..Fake::new(&cloud, "cluster", Tier::ExtraSmall)
            }),
            Arc::new(Fake {
                dep: Some("cluster"),
                ..Fake::new(&cloud, "service", Tier::ExtraSmall)
            }),
        ]
    };
    let aws = offline_clients();
    let p = plan(&aws, req(make(1), Some(Tier::ExtraSmall), false))
        .await
        .unwrap();
    apply(
        &aws,
        &p,
        ApplyOptions {
            parallelism: 1,
            ..ApplyOptions::default()
        },
    )
    .await;
    assert_eq!(
        *cloud.log.lock().unwrap(),
        vec!["create cluster", "create service"]
    );

    let p = plan(&aws, req(make(2), Some(Tier::ExtraSmall), false))
        .await
        .unwrap();
    assert_eq!(p.change("cluster").unwrap().action, Action::Update);
    assert_eq!(p.change("service").unwrap().action, Action::NoOp);
    cloud.log.lock().unwrap().clear();
    apply(&aws, &p, ApplyOptions::default()).await;
    assert_eq!(*cloud.log.lock().unwrap(), vec!["update cluster"]);

    cloud.log.lock().unwrap().clear();
    let p = plan(&aws, req(make(2), None, false)).await.unwrap();
    let report = apply(&aws, &p, ApplyOptions::default()).await;
    assert!(report.succeeded());
    assert_eq!(
        *cloud.log.lock().unwrap(),
        vec!["delete service", "delete cluster"]
    );
}

/// A resource whose wishes and cloud state are given outright, to show every kind of change.
struct Scripted {
    meta: Meta,
    kind: &'static str,
    data: bool,
    deps: Vec<&'static str>,
    want: fn(&Outputs) -> Desired,
    have: Option<Observed>,
    /// AWS refuses to delete it while something uses it.
    held_by_users: bool,
}

#[async_trait]
impl Resource for Scripted {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn permissions(&self, _ws: &Workspace) -> Permissions {
        Permissions::new()
    }
    fn depends_on(&self) -> Vec<&'static str> {
        self.deps.clone()
    }
    fn data_bearing(&self) -> bool {
        self.data
    }
    fn delete_refused_while_used(&self) -> bool {
        self.held_by_users
    }
    fn desired(&self, outputs: &Outputs) -> Desired {
        (self.want)(outputs)
    }
    async fn observe(&self, _aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        Ok(self.have.clone())
    }
    async fn create(&self, _: &AwsClients, _: &Outputs) -> Result<(), EngineError> {
        Err(EngineError::Invalid(
            "a scripted resource is only planned".into(),
        ))
    }
    async fn update(&self, _: &AwsClients, _c: &Edit<'_>) -> Result<(), EngineError> {
        Err(EngineError::Invalid(
            "a scripted resource is only planned".into(),
        ))
    }
    async fn delete(&self, _: &AwsClients, _: &Observed) -> Result<(), EngineError> {
        Err(EngineError::Invalid(
            "a scripted resource is only planned".into(),
        ))
    }
}

#[tokio::test]
async fn the_plan_people_read_shows_every_kind_of_change() {
    let scripted = |id: &'static str, kind, tier, want, have| Scripted {
        meta: Meta::new(id, tier, format!("agentbus-demo-{id}"), Vec::new()),
        kind,
        data: false,
        deps: Vec::new(),
        want,
        have,
        held_by_users: false,
    };
    let universe: Vec<Arc<dyn Resource>> = vec![
        // Created, with a value known only after its dependency is applied.
        Arc::new(Scripted {
            deps: vec!["queue"],
            ..scripted(
                "rule",
                "eventbridge rule",
                Tier::Small,
                |o| {
                    Desired::new()
                        .set("pattern", json!({"source": [{"prefix": ""}]}))
                        .set("target", output_or_unknown(o, "queue", "arn"))
                        .set(
                            "tags",
                            json!({"agentbus:env": "demo", "agentbus:component": "events"}),
                        )
                },
                None,
            )
        }),
        Arc::new(scripted(
            "queue",
            "sqs queue",
            Tier::Small,
            |_| {
                Desired::new().set("retention_seconds", 345_600).set(
                    "tags",
                    json!({"agentbus:env": "demo", "agentbus:component": "feed"}),
                )
            },
            None,
        )),
        // Updated in place: a scalar and, in a large document, only the statement that changed.
        Arc::new(scripted(
            "task-role",
            "iam role",
            Tier::ExtraSmall,
            |_| {
                Desired::new().set("budget_usd", "20.00").set(
                    "policy",
                    json!({"Statement": [
                        {"Action": ["dynamodb:GetItem"], "Resource": ["arn:kv"]},
                        {"Action": ["s3:GetObject"], "Resource": ["arn:artifacts/*"]}
                    ]}),
                )
            },
            Some(Observed::default().field("budget_usd", "10.00").field(
                "policy",
                json!({"Statement": [
                    {"Action": ["dynamodb:GetItem"], "Resource": ["arn:kv"]}
                ]}),
            )),
        )),
        // Replaced: a field that cannot change in place.
        Arc::new(scripted(
            "cluster",
            "ecs cluster",
            Tier::ExtraSmall,
            |_| Desired::new().set_replace("name", "agentbus-demo-2"),
            Some(Observed::default().field("name", "agentbus-demo")),
        )),
        // Above the target tier: removed, or kept when it holds data.
        Arc::new(scripted(
            "database",
            "rds cluster",
            Tier::Large,
            |_| Desired::new().set("engine", "aurora-postgresql"),
            Some(Observed::default().field("engine", "aurora-postgresql")),
        )),
        Arc::new(Scripted {
            data: true,
            ..scripted(
                "vectors",
                "s3 bucket",
                Tier::Large,
                |_| Desired::new().set("versioning", true),
                Some(Observed::default().field("versioning", true)),
            )
        }),
        // Unchanged: not shown.
        Arc::new(scripted(
            "kv",
            "dynamodb table",
            Tier::ExtraSmall,
            |_| Desired::new().set("billing", "PAY_PER_REQUEST"),
            Some(Observed::default().field("billing", "PAY_PER_REQUEST")),
        )),
    ];
    let aws = offline_clients();
    let mut p = plan(&aws, req(universe, Some(Tier::Small), false))
        .await
        .unwrap();
    p.cost = Some(crate::cost::CostDelta {
        before: 7.81,
        after: 32.83,
        usage: "light".into(),
        region: "us-east-1".into(),
    });
    insta::assert_snapshot!(p.render(false));
    // A cost that moves by less than a cent reads as no change, never as "$-0.00".
    p.cost = Some(crate::cost::CostDelta {
        before: 7.81,
        after: 7.8099,
        usage: "light".into(),
        region: "us-east-1".into(),
    });
    let text = p.render(false);
    assert!(text.contains("$7.81 -> $7.81 (no change)"), "{text}");
    assert!(!text.contains("-0.00"), "{text}");
}

#[test]
fn tag_changes_sets_and_removes_only_own_keys() {
    let cur = json!({"agentbus:tier": "xs", "agentbus:old": "x", "owner": "me"});
    let want = json!({"agentbus:tier": "small", "agentbus:env": "dev"});
    let (mut set, remove) = super::tag_changes(Some(&cur), Some(&want));
    set.sort();
    assert_eq!(
        set,
        vec![
            ("agentbus:env".to_string(), "dev".to_string()),
            ("agentbus:tier".to_string(), "small".to_string())
        ]
    );
    assert_eq!(remove, vec!["agentbus:old".to_string()]);
}

/// A resource whose lookup leaves two reads: its own further read and its tags. Each waits
/// for the other at a barrier, so the observation only finishes when both run at once.
struct TwoReads {
    meta: Meta,
    met: Arc<tokio::sync::Barrier>,
}

struct BarrierTags(Arc<tokio::sync::Barrier>);

#[async_trait]
impl super::TagApi for BarrierTags {
    async fn read(
        &self,
        _aws: &AwsClients,
        _meta: &Meta,
        observed: &Observed,
    ) -> Result<Vec<(String, String)>, EngineError> {
        self.0.wait().await;
        Ok(vec![
            ("agentbus:env".into(), observed.out("arn").into()),
            ("cost-centre".into(), "not ours".into()),
        ])
    }
    async fn tag(
        &self,
        _aws: &AwsClients,
        _meta: &Meta,
        _observed: &Observed,
        _tags: &[(String, String)],
    ) -> Result<(), EngineError> {
        Ok(())
    }
    async fn untag(
        &self,
        _aws: &AwsClients,
        _meta: &Meta,
        _observed: &Observed,
        _keys: &[String],
    ) -> Result<(), EngineError> {
        Ok(())
    }
}

#[async_trait]
impl Resource for TwoReads {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "two reads"
    }
    fn tags(&self) -> Option<&dyn super::TagApi> {
        // Leaked once per test: the trait hands out a reference.
        Some(Box::leak(Box::new(BarrierTags(self.met.clone()))))
    }
    fn permissions(&self, _ws: &Workspace) -> Permissions {
        Permissions::new()
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new().set("size", 2)
    }
    async fn observe(&self, _aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        Ok(Some(Observed::default().output("arn", "arn:two")))
    }
    async fn observe_more(
        &self,
        _aws: &AwsClients,
        found: &Observed,
    ) -> Result<Observed, EngineError> {
        assert_eq!(
            found.out("arn"),
            "arn:two",
            "the lookup's outputs come first"
        );
        self.met.wait().await;
        Ok(Observed::default()
            .field("size", 2)
            .output("size_unit", "GiB"))
    }
    async fn create(&self, _aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        Ok(())
    }
    async fn update(&self, _aws: &AwsClients, _c: &Edit<'_>) -> Result<(), EngineError> {
        Ok(())
    }
    async fn delete(&self, _aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_resources_further_reads_run_alongside_its_tag_read_and_both_land_in_the_observation() {
    let r = TwoReads {
        meta: Meta::new("two", Tier::ExtraSmall, "two", Vec::new()),
        met: Arc::new(tokio::sync::Barrier::new(2)),
    };
    let observed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        super::observe(&r, &offline_clients()),
    )
    .await
    .expect("the two reads ran one after the other: each waited for the other forever")
    .unwrap()
    .unwrap();
    assert_eq!(observed.fields["size"], json!(2));
    assert_eq!(
        observed.fields["tags"],
        json!({"agentbus:env": "arn:two"}),
        "only the engine's own tags are kept"
    );
    assert_eq!(observed.out("size_unit"), "GiB");
    assert_eq!(observed.out("arn"), "arn:two");
}

#[tokio::test]
async fn with_one_slot_the_start_of_the_longest_chain_goes_before_what_nothing_waits_for() {
    let cloud = Arc::new(Cloud::default());
    // Listed first, waited on by nobody; the role heads role -> task -> service.
    let universe: Vec<Arc<dyn Resource>> = vec![
        Arc::new(Fake::new(&cloud, "log-group", Tier::ExtraSmall)),
        Arc::new(Fake::new(&cloud, "bucket", Tier::ExtraSmall)),
        Arc::new(Fake {
            dep: Some("task"),
            ..Fake::new(&cloud, "service", Tier::ExtraSmall)
        }),
        Arc::new(Fake {
            dep: Some("role"),
            ..Fake::new(&cloud, "task", Tier::ExtraSmall)
        }),
        Arc::new(Fake::new(&cloud, "role", Tier::ExtraSmall)),
    ];
    let aws = offline_clients();
    let p = plan(&aws, req(universe, Some(Tier::ExtraSmall), false))
        .await
        .unwrap();
    let report = apply(
        &aws,
        &p,
        ApplyOptions {
            parallelism: 1,
            ..ApplyOptions::default()
        },
    )
    .await;
    assert!(report.succeeded());
    let log = cloud.log.lock().unwrap().clone();
    assert_eq!(log[0], "create role", "{log:?}");
    assert_eq!(log.len(), 5, "{log:?}");
    let at = |what: &str| log.iter().position(|l| l == what).unwrap();
    assert!(at("create role") < at("create task") && at("create task") < at("create service"));
}

#[tokio::test]
async fn a_note_on_a_field_shows_when_a_create_or_an_update_sets_it_and_not_when_unchanged() {
    let cloud = Arc::new(Cloud::default());
    let aws = offline_clients();
    let notes =
        |p: &super::plan::Plan, id: &str| p.change(id).map(|c| c.notes.clone()).unwrap_or_default();
    let a = || Fake::new(&cloud, "a", Tier::ExtraSmall);
    let p = plan(
        &aws,
        req(vec![Arc::new(a())], Some(Tier::ExtraSmall), false),
    )
    .await
    .unwrap();
    assert_eq!(notes(&p, "a"), ["a takes a while to settle"]);
    apply(&aws, &p, ApplyOptions::default()).await;
    // Unchanged: no note.
    let p = plan(
        &aws,
        req(vec![Arc::new(a())], Some(Tier::ExtraSmall), false),
    )
    .await
    .unwrap();
    assert!(notes(&p, "a").is_empty(), "{:?}", notes(&p, "a"));
    // The field changes: the note again.
    let mut changed = a();
    changed.value = 2;
    let p = plan(
        &aws,
        req(vec![Arc::new(changed)], Some(Tier::ExtraSmall), false),
    )
    .await
    .unwrap();
    assert_eq!(p.change("a").unwrap().action, Action::Update);
    assert_eq!(notes(&p, "a"), ["a takes a while to settle"]);
}

#[tokio::test]
async fn a_replacement_aws_refuses_under_its_users_is_a_problem_before_anything_changes() {
    let group = |held_by_users| Scripted {
        meta: Meta::new("group", Tier::ExtraSmall, "agentbus-demo", Vec::new()),
        kind: "security group",
        data: false,
        deps: Vec::new(),
        want: |_| Desired::new().set_replace("vpc", "vpc-b"),
        have: Some(Observed::default().field("vpc", "vpc-a")),
        held_by_users,
    };
    let service = |exists: bool| Scripted {
        meta: Meta::new(
            "service",
            Tier::ExtraSmall,
            "agentbus-demo-dash",
            Vec::new(),
        ),
        kind: "ecs service",
        data: false,
        deps: vec!["group"],
        want: |_| Desired::new().set("count", 1),
        have: exists.then(|| Observed::default().field("count", 1)),
        held_by_users: false,
    };
    let aws = offline_clients();
    let problems = |g, s| {
        let universe: Vec<Arc<dyn Resource>> = vec![Arc::new(g), Arc::new(s)];
        let aws = aws.clone();
        async move {
            plan(&aws, req(universe, Some(Tier::ExtraSmall), false))
                .await
                .unwrap()
                .problems
        }
    };
    assert_eq!(
        problems(group(true), service(true)).await,
        [
            "security group agentbus-demo would be replaced (vpc \"vpc-a\" -> \"vpc-b\"), but AWS refuses to delete it while ecs service agentbus-demo-dash uses it, so the apply could not finish: remove what uses it first (`agentbus destroy` keeps the data), then deploy again"
        ]
    );
    // Nothing uses it yet, or AWS lets it go while used: replaced as planned.
    assert!(problems(group(true), service(false)).await.is_empty());
    assert!(problems(group(false), service(true)).await.is_empty());
}

#[test]
fn dependencies_come_first_each_resource_once_and_a_cycle_is_refused() {
    let cloud = Arc::new(Cloud::default());
    let with_dep = |id, dep| -> Arc<dyn Resource> {
        Arc::new(Fake {
            dep,
            ..Fake::new(&cloud, id, Tier::ExtraSmall)
        })
    };
    // Two resources need base, and top needs one of them: base comes first, once.
    let universe = vec![
        with_dep("top", Some("left")),
        with_dep("left", Some("base")),
        with_dep("right", Some("base")),
        with_dep("base", None),
    ];
    let order = super::plan::topo_order(&universe).unwrap();
    let ids: Vec<&str> = order.iter().map(|&i| universe[i].id()).collect();
    assert_eq!(ids, ["base", "left", "top", "right"]);
    let cycle = vec![with_dep("a", Some("b")), with_dep("b", Some("a"))];
    let e = super::plan::topo_order(&cycle).unwrap_err();
    assert_eq!(e.to_string(), "dependency cycle through a");
}

#[tokio::test]
async fn a_plan_observes_eight_resources_per_unit_of_parallelism_at_once() {
    use std::sync::atomic::Ordering::SeqCst;
    for (parallelism, most) in [(1, 8), (2, 16)] {
        let cloud = Arc::new(Cloud::default());
        let ids = [
            "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "r13",
            "r14", "r15", "r16", "r17", "r18", "r19", "r20", "r21", "r22", "r23",
        ];
        let universe: Vec<Arc<dyn Resource>> = ids
            .iter()
            .map(|id| -> Arc<dyn Resource> {
                Arc::new(Fake {
                    slow: true,
                    ..Fake::new(&cloud, id, Tier::ExtraSmall)
                })
            })
            .collect();
        let p = plan(
            &offline_clients(),
            PlanRequest {
                parallelism,
                ..req(universe, Some(Tier::ExtraSmall), false)
            },
        )
        .await
        .unwrap();
        assert_eq!(p.count(Action::Create), ids.len());
        assert_eq!(cloud.most_observing.load(SeqCst), most, "{parallelism}");
    }
}

#[tokio::test]
async fn a_new_resource_reads_what_an_unchanged_one_it_needs_already_has() {
    let cloud = Arc::new(Cloud::default());
    cloud.values.lock().unwrap().insert("cluster", 1);
    let universe: Vec<Arc<dyn Resource>> = vec![
        Arc::new(Fake::new(&cloud, "cluster", Tier::ExtraSmall)),
        Arc::new(Fake {
            dep: Some("cluster"),
            ..Fake::new(&cloud, "service", Tier::ExtraSmall)
        }),
        Arc::new(Fake {
            dep: Some("cluster"),
            ..Fake::new(&cloud, "worker", Tier::ExtraSmall)
        }),
    ];
    let aws = offline_clients();
    let p = plan(&aws, req(universe, Some(Tier::ExtraSmall), false))
        .await
        .unwrap();
    assert_eq!(p.change("cluster").unwrap().action, Action::NoOp);
    // Known now, not "known after apply": the cluster stays as it is (and creating the
    // service, planned between them, forgets only the service's own outputs).
    for id in ["service", "worker"] {
        let c = p.change(id).unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(
            c.fields.iter().find(|f| f.field == "dep").unwrap().after,
            Some(json!("arn:cluster")),
            "{id}"
        );
    }
    // And the apply hands it over.
    assert!(apply(&aws, &p, ApplyOptions::default()).await.succeeded());
    let mut log = cloud.log.lock().unwrap().clone();
    log.sort();
    assert_eq!(log, ["create service", "create worker"]);
}

#[tokio::test]
async fn a_replacement_that_would_lose_data_is_kept_unless_asked_and_notes_what_the_new_one_sets() {
    let cloud = Arc::new(Cloud::default());
    cloud.values.lock().unwrap().insert("table", 1);
    let table = |data| -> Vec<Arc<dyn Resource>> {
        vec![Arc::new(Fake {
            value: 2,
            data,
            replace_on_value: true,
            ..Fake::new(&cloud, "table", Tier::ExtraSmall)
        })]
    };
    let aws = offline_clients();
    let p = plan(&aws, req(table(true), Some(Tier::ExtraSmall), false))
        .await
        .unwrap();
    let c = p.change("table").unwrap();
    assert_eq!(c.action, Action::Keep);
    assert_eq!(
        c.reason.as_deref(),
        Some(
            "holds data: a replacement would lose it; kept as is (pass --destroy-data to replace)"
        )
    );
    for (data, destroy_data) in [(true, true), (false, false)] {
        let p = plan(&aws, req(table(data), Some(Tier::ExtraSmall), destroy_data))
            .await
            .unwrap();
        let c = p.change("table").unwrap();
        assert_eq!(c.action, Action::Replace, "{data} {destroy_data}");
        assert_eq!(c.notes, ["table takes a while to settle"]);
    }
}
