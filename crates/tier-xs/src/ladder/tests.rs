//! The ladder on a made-up layer above extra-small: what it adds reaches the dashboard only
//! when the target includes it, its problems count only then, and every layer's usage fields
//! are checked alike.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::*;
use crate::cost::UsagePart;
use crate::engine::{Desired, Outputs};
use crate::workspace::Env;
use crate::xs::ids;

/// A layer standing in for a higher tier.
struct Above {
    scaling: Option<Scaling>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct AboveUsage {
    agent_runs: f64,
}

impl UsagePart for AboveUsage {
    fn builtin(_profile: &str) -> Option<Self> {
        Some(AboveUsage { agent_runs: 10.0 })
    }
}

#[async_trait]
impl Layer for Above {
    fn tier(&self) -> Tier {
        Tier::Small
    }
    fn seed_target(&self) -> (f64, f64) {
        (15.0, 20.0)
    }
    fn shape_dashboard(&self, _ctx: &LayerContext<'_>, spec: &mut DashboardSpec) {
        spec.env.push(("AGENTBUS_ABOVE".into(), "yes".into()));
        spec.task_statements
            .push(json!({"Action": ["s3:GetObject"], "Effect": "Allow", "Resource": ["*"]}));
        spec.put_behind(Front {
            security_group_id: "front-sg",
            target_group_id: "front-tg",
            attached_by_id: "front-listener",
            subnets: vec!["subnet-2".into()],
        });
        if let Some(s) = self.scaling {
            spec.scale_with(s);
        }
    }
    fn build(&self, _ctx: &LayerContext<'_>, _dashboard: &DashboardSpec) -> Built {
        Built {
            problems: vec![Problem::new("the layer above is unhappy")],
            ..Built::default()
        }
    }
    fn price_source(&self, _region: &str) -> Result<PriceSource, CostError> {
        Ok(PriceSource {
            as_of: "2025-12-01".into(),
            source: "made up".into(),
        })
    }
    fn usage(&self, book: UsageBook) -> UsageBook {
        book.with::<AboveUsage>()
    }
}

fn universe_with(ladder: &Ladder, target: Option<Tier>, settings: &StoredSettings) -> Universe {
    let ws = Workspace::new(Env::new("demo").unwrap(), "123456789012", "us-east-1");
    let network = Network {
        vpc_id: "vpc-1".into(),
        subnet_ids: vec!["subnet-1".into(), "subnet-2".into()],
        zones: Default::default(),
    };
    ladder.universe(&LayerContext {
        ws: &ws,
        settings,
        network: &network,
        target,
        plain_http: false,
        service_wait: Duration::from_secs(60),
        budget_default: ladder.seed_target(target.unwrap_or(Tier::ExtraSmall)).1,
        estimate: None,
    })
}

fn universe(ladder: &Ladder, target: Option<Tier>) -> Universe {
    let mut settings = StoredSettings::default();
    settings
        .values
        .insert("image".into(), json!("example/agentbus:1"));
    settings
        .values
        .insert("allow_cidrs".into(), json!(["203.0.113.0/24"]));
    universe_with(ladder, target, &settings)
}

fn resource<'a>(u: &'a Universe, id: &str) -> &'a Arc<dyn Resource> {
    u.resources
        .iter()
        .find(|r| r.id() == id)
        .expect("the resource is in the universe")
}

fn desired(u: &Universe, id: &str) -> Desired {
    resource(u, id).desired(&Outputs::new())
}

fn task_env(u: &Universe) -> String {
    desired(u, ids::DASHBOARD_TASK_DEFINITION)
        .get("container")
        .map(|c| c["environment"].to_string())
        .unwrap_or_default()
}

#[test]
fn a_layer_shapes_the_dashboard_only_when_the_target_includes_it() {
    let ladder = crate::ladder().with(Above { scaling: None });
    assert_eq!(ladder.highest(), Tier::Small);

    let up = universe(&ladder, Some(Tier::Small));
    let env = task_env(&up);
    assert!(
        env.contains("AGENTBUS_ABOVE") && env.contains(r#"["AGENTBUS_TIER","small"]"#),
        "{env}"
    );
    let policy = desired(&up, ids::DASHBOARD_TASK_ROLE)
        .get("inline_policies")
        .map(|p| p.to_string())
        .unwrap_or_default();
    assert!(policy.contains("s3:GetObject"), "{policy}");
    // Behind the front, the dashboard admits only the front's group, not the CIDRs.
    let mut outputs = Outputs::new();
    outputs.insert("front-sg.id".into(), "sg-front".into());
    assert_eq!(
        resource(&up, ids::DASHBOARD_SECURITY_GROUP)
            .desired(&outputs)
            .get("ingress"),
        Some(&json!(["tcp/8080 from sg-front"]))
    );
    assert!(
        resource(&up, ids::DASHBOARD_SECURITY_GROUP)
            .depends_on()
            .contains(&"front-sg")
    );
    assert!(up.problems.iter().any(|p| p.message.contains("unhappy")));
    assert!(
        resource(&up, ids::DASHBOARD_SERVICE)
            .depends_on()
            .contains(&"front-listener")
    );
    assert_eq!(
        desired(&up, ids::DASHBOARD_SERVICE).get("desired_count"),
        Some(&json!(1))
    );

    // Targeting extra-small, the layer's wishes and problems are not there.
    let down = universe(&ladder, Some(Tier::ExtraSmall));
    let env = task_env(&down);
    assert!(
        !env.contains("AGENTBUS_ABOVE") && env.contains(r#"["AGENTBUS_TIER","xs"]"#),
        "{env}"
    );
    assert!(!down.problems.iter().any(|p| p.message.contains("unhappy")));
    assert_eq!(
        desired(&down, ids::DASHBOARD_SECURITY_GROUP).get("ingress"),
        Some(&json!(["tcp/8080 from 203.0.113.0/24"]))
    );
}

#[test]
fn a_destroy_deletes_the_dashboards_group_before_the_front_it_admits() {
    // What exists may be the highest tier's: the dashboard's group admits the front's, so the
    // destroy must delete it first.
    let ladder = crate::ladder().with(Above { scaling: None });
    let down = universe(&ladder, None);
    assert!(
        resource(&down, ids::DASHBOARD_SECURITY_GROUP)
            .depends_on()
            .contains(&"front-sg")
    );
    assert!(down.problems.is_empty());
}

#[test]
fn a_missing_image_blocks_only_a_change_of_the_task_definition() {
    let u = universe_with(
        &crate::ladder(),
        Some(Tier::ExtraSmall),
        &StoredSettings::default(),
    );
    let image = u
        .problems
        .iter()
        .find(|p| p.message.contains("--image"))
        .expect("a problem names --image");
    assert_eq!(image.only_if_changing, Some(ids::DASHBOARD_TASK_DEFINITION));
    assert!(u.images.is_empty());
    let with = universe(&crate::ladder(), Some(Tier::ExtraSmall));
    assert_eq!(
        with.images,
        vec![(
            ids::DASHBOARD_TASK_DEFINITION,
            "example/agentbus:1".to_string()
        )]
    );
}

#[test]
fn an_autoscaler_owns_the_running_count_and_the_plan_leaves_it_alone() {
    let ladder = crate::ladder().with(Above {
        scaling: Some(Scaling { min: 2, max: 6 }),
    });
    let u = universe(&ladder, Some(Tier::Small));
    assert_eq!(
        desired(&u, ids::DASHBOARD_SERVICE).get("desired_count"),
        None
    );
    let notes = resource(&u, ids::DASHBOARD_SERVICE).notes();
    assert!(
        notes.iter().any(|n| n.contains("autoscaler (2-6 tasks)")),
        "{notes:?}"
    );
}

#[test]
fn two_layers_cannot_both_own_the_front_or_the_count() {
    let mut spec = DashboardSpec::new(Tier::Small);
    let front = |tg| Front {
        security_group_id: "sg",
        target_group_id: tg,
        attached_by_id: "listener",
        subnets: Vec::new(),
    };
    spec.put_behind(front("a"));
    spec.put_behind(front("a"));
    assert!(spec.problems().is_empty());
    spec.put_behind(front("b"));
    spec.scale_with(Scaling { min: 1, max: 2 });
    spec.scale_with(Scaling { min: 1, max: 3 });
    spec.scale_with(Scaling { min: 4, max: 3 });
    assert_eq!(spec.problems().len(), 4, "{:?}", spec.problems());
    assert_eq!(spec.front().map(|f| f.target_group_id), Some("a"));
}

#[test]
fn every_layers_usage_fields_are_checked_alike() {
    let ladder = crate::ladder().with(Above { scaling: None });
    let book = ladder.usage_book();
    let light = book.builtin("light").unwrap();
    assert_eq!(light.amounts["agent_runs"], 10.0);
    assert!(light.amounts.contains_key("kv_reads"));

    let dir = std::env::temp_dir().join(format!("agentbus-ladder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("usage.json");
    let load = |doc: &serde_json::Value| {
        std::fs::write(&path, doc.to_string()).unwrap();
        book.load(path.to_str().unwrap())
    };
    let mut doc = serde_json::to_value(&light).unwrap();
    doc["agent_runs"] = json!(-5);
    let e = load(&doc).unwrap_err().to_string();
    assert!(
        e.contains("`agent_runs`") && e.contains("non-negative"),
        "{e}"
    );
    // A higher layer's fields may be left out; the extra-small ones may not.
    doc.as_object_mut().unwrap().remove("agent_runs");
    let u = load(&doc).unwrap();
    assert_eq!(u.part::<AboveUsage>().unwrap().agent_runs, 0.0);
    doc.as_object_mut().unwrap().remove("kv_reads");
    let e = load(&doc).unwrap_err().to_string();
    assert!(e.contains("kv_reads"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
