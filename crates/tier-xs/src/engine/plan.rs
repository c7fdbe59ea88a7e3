//! Plan: observe every resource of the tier universe by name, in parallel, and diff it field by
//! field against the desired tier.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::{Desired, EngineError, Observed, Outputs, Resource, is_unknown};
use crate::aws::AwsClients;
use crate::workspace::Tier;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    /// A data-bearing resource that would be deleted or replaced, kept because the
    /// explicit flag was not given.
    Keep,
    NoOp,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::Keep => "!",
            Action::NoOp => " ",
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update in place",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Keep => "kept",
            Action::NoOp => "no change",
        }
    }

    pub fn is_change(self) -> bool {
        matches!(
            self,
            Action::Create | Action::Update | Action::Replace | Action::Delete
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub forces_replace: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub id: &'static str,
    pub kind: &'static str,
    pub name: String,
    pub tier: Tier,
    pub action: Action,
    pub data_bearing: bool,
    pub fields: Vec<FieldChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Clone, Serialize)]
pub struct Plan {
    /// The tier being deployed; `None` for a destroy.
    pub target: Option<Tier>,
    pub changes: Vec<Change>,
    /// Blocking problems: a deploy refuses while there is any.
    pub problems: Vec<String>,
    /// Things the user should know that do not block.
    pub notes: Vec<String>,
    /// Monthly cost before and after the plan, when prices for the region are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::CostDelta>,
    #[serde(skip)]
    pub(crate) observed: HashMap<&'static str, Observed>,
    #[serde(skip)]
    pub(crate) resources: Vec<Arc<dyn Resource>>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("target", &self.target)
            .field("changes", &self.changes)
            .field("problems", &self.problems)
            .finish()
    }
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action.is_change())
    }

    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    pub fn change(&self, id: &str) -> Option<&Change> {
        self.changes.iter().find(|c| c.id == id)
    }

    /// Outputs of every resource as observed at plan time.
    pub fn observed_outputs(&self) -> Outputs {
        let mut out = Outputs::new();
        for (id, o) in &self.observed {
            for (k, v) in &o.outputs {
                out.insert(format!("{id}.{k}"), v.clone());
            }
        }
        out
    }

    pub fn summary(&self) -> String {
        format!(
            "{} to create, {} to update, {} to replace, {} to delete, {} kept",
            self.count(Action::Create),
            self.count(Action::Update),
            self.count(Action::Replace),
            self.count(Action::Delete),
            self.count(Action::Keep)
        )
    }

    /// The plan for a person: one block per changed resource, field by field.
    pub fn render(&self, color: bool) -> String {
        let paint = |code: &str, s: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        // The tags every new resource shares are said once, above the list.
        let shared = self.shared_new_tags();
        if !shared.is_empty() {
            let _ = writeln!(
                out,
                "every new resource is tagged {}\n",
                shared
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for c in &self.changes {
            if c.action == Action::NoOp {
                continue;
            }
            let code = match c.action {
                Action::Create => "32",
                Action::Update => "33",
                Action::Replace | Action::Delete => "31",
                Action::Keep => "35",
                Action::NoOp => "0",
            };
            let data = if c.data_bearing && matches!(c.action, Action::Delete | Action::Replace) {
                paint("1;31", "  DATA WILL BE LOST")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{} {} {} ({}, {}){}",
                paint(code, &format!("{:>3}", c.action.symbol())),
                c.kind,
                paint("1", &c.name),
                c.action.verb(),
                c.tier.short(),
                data
            );
            if let Some(r) = &c.reason {
                let _ = writeln!(out, "      {}", paint("35", r));
            }
            for f in &c.fields {
                let before = f.before.as_ref().map(show).unwrap_or_else(|| "-".into());
                let after = f.after.as_ref().map(show).unwrap_or_else(|| "-".into());
                let forces = if f.forces_replace {
                    paint("31", "  # forces replacement")
                } else {
                    String::new()
                };
                if c.action == Action::Create && f.field == "tags" && !shared.is_empty() {
                    let own = own_tags(f.after.as_ref(), &shared);
                    if !own.is_empty() {
                        let _ = writeln!(out, "      tags: {own} (and the shared ones)");
                    }
                } else if c.action == Action::Create {
                    let _ = writeln!(out, "      {}: {after}", f.field);
                } else if let (Some(b), Some(a)) = (&f.before, &f.after)
                    && (b.is_object() || b.is_array())
                    && (a.is_object() || a.is_array())
                    && !is_unknown(a)
                {
                    // Large documents (policies, container definitions): only what changed.
                    let mut lines = Vec::new();
                    describe(&f.field, b, a, &mut lines);
                    for (i, l) in lines.iter().enumerate() {
                        let tail = if i + 1 == lines.len() {
                            forces.as_str()
                        } else {
                            ""
                        };
                        let _ = writeln!(out, "      {l}{tail}");
                    }
                } else {
                    let _ = writeln!(out, "      {}: {before} -> {after}{forces}", f.field);
                }
            }
            for n in &c.notes {
                let _ = writeln!(out, "      note: {n}");
            }
        }
        if !self.has_changes() {
            let _ = writeln!(out, "No changes: the workspace matches the plan.");
        } else {
            let _ = writeln!(out, "\nPlan: {}.", self.summary());
        }
        if let Some(c) = &self.cost {
            let delta = c.after - c.before;
            let change = if delta.abs() < 0.005 {
                "no change".to_string()
            } else {
                format!("{}${:.2}", if delta > 0.0 { "+" } else { "-" }, delta.abs())
            };
            let _ = writeln!(
                out,
                "monthly cost: ${:.2} -> ${:.2} ({change}), usage profile {:?}, {}",
                c.before.max(0.0),
                c.after.max(0.0),
                c.usage,
                c.region
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "{} {n}", paint("36", "note:"));
        }
        for p in &self.problems {
            let _ = writeln!(out, "{} {p}", paint("1;31", "error:"));
        }
        out
    }
}

impl Plan {
    /// The tags (key, value) that every resource this plan creates carries; empty when fewer
    /// than two resources are created.
    fn shared_new_tags(&self) -> Vec<(String, String)> {
        let mut new_tags = self
            .changes
            .iter()
            .filter(|c| c.action == Action::Create)
            .map(|c| {
                c.fields
                    .iter()
                    .find(|f| f.field == "tags")
                    .and_then(|f| f.after.as_ref())
                    .and_then(Value::as_object)
            });
        let Some(Some(first)) = new_tags.next() else {
            return Vec::new();
        };
        let mut shared: Vec<(String, String)> = first
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let mut more_than_one = false;
        for tags in new_tags {
            more_than_one = true;
            let Some(tags) = tags else {
                return Vec::new();
            };
            shared.retain(|(k, v)| tags.get(k).and_then(Value::as_str) == Some(v.as_str()));
        }
        if more_than_one { shared } else { Vec::new() }
    }
}

/// The tags of `tags` not among `shared`, as `key=value, ...`.
fn own_tags(tags: Option<&Value>, shared: &[(String, String)]) -> String {
    let Some(tags) = tags.and_then(Value::as_object) else {
        return String::new();
    };
    tags.iter()
        .filter(|(k, v)| {
            !shared
                .iter()
                .any(|(sk, sv)| sk == *k && v.as_str() == Some(sv))
        })
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A JSON value for one line of a plan.
fn show(v: &Value) -> String {
    if let Some(what) = v.get("$unknown") {
        return format!("(known after apply: {})", what.as_str().unwrap_or("?"));
    }
    match v {
        Value::String(s) => format!("{s:?}"),
        other => readable(other).to_string(),
    }
}

/// A value with every nested "known after apply" marker spelled out.
fn readable(v: &Value) -> Value {
    if let Some(what) = v.get("$unknown") {
        return Value::String(format!(
            "(known after apply: {})",
            what.as_str().unwrap_or("?")
        ));
    }
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), readable(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(readable).collect()),
        other => other.clone(),
    }
}

/// How `before` became `after`, as lines under `path`: objects key by key, arrays by the
/// elements added (`+`) and removed (`-`), anything else as `before -> after`.
fn describe(path: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    match (before, after) {
        (_, a) if is_unknown(a) => out.push(format!("{path}: {} -> {}", show(before), show(a))),
        (Value::Object(b), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (b.get(k), a.get(k)) {
                    (Some(x), Some(y)) if x == y => {}
                    (Some(x), Some(y)) => describe(&p, x, y, out),
                    (None, Some(y)) => out.push(format!("{p}: + {}", show(y))),
                    (Some(x), None) => out.push(format!("{p}: - {}", show(x))),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            let start = out.len();
            for x in b.iter().filter(|x| !a.contains(x)) {
                out.push(format!("{path}: - {}", show(x)));
            }
            for y in a.iter().filter(|y| !b.contains(y)) {
                out.push(format!("{path}: + {}", show(y)));
            }
            if out.len() == start {
                out.push(format!("{path}: same elements, new order"));
            }
        }
        (b, a) => out.push(format!("{path}: {} -> {}", show(b), show(a))),
    }
}

/// Field-by-field difference between what is wanted and what is there.
pub fn diff(desired: &Desired, observed: &Observed) -> Vec<FieldChange> {
    desired
        .fields
        .iter()
        .filter_map(|(k, want)| {
            let have = observed.fields.get(k);
            let same = !is_unknown(&want.value) && have == Some(&want.value);
            (!same).then(|| FieldChange {
                field: k.clone(),
                before: have.cloned(),
                after: Some(want.value.clone()),
                forces_replace: want.forces_replace,
            })
        })
        .collect()
}

/// Topological order of resources by `depends_on`; dependencies outside the set are ignored.
pub fn topo_order(resources: &[Arc<dyn Resource>]) -> Result<Vec<usize>, EngineError> {
    let index: HashMap<&str, usize> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id(), i))
        .collect();
    let mut state = vec![0u8; resources.len()]; // 0 new, 1 visiting, 2 done
    let mut order = Vec::with_capacity(resources.len());
    fn visit(
        i: usize,
        resources: &[Arc<dyn Resource>],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
    ) -> Result<(), EngineError> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                return Err(EngineError::Invalid(format!(
                    "dependency cycle through {}",
                    resources[i].id()
                )));
            }
            _ => {}
        }
        state[i] = 1;
        for d in resources[i].depends_on() {
            if let Some(&j) = index.get(d) {
                visit(j, resources, index, state, order)?;
            }
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..resources.len() {
        visit(i, resources, &index, &mut state, &mut order)?;
    }
    Ok(order)
}

/// What to plan for.
pub struct PlanRequest {
    /// Every resource of every tier, built for the requested settings.
    pub universe: Vec<Arc<dyn Resource>>,
    /// The tier to converge to; `None` removes everything (destroy).
    pub target: Option<Tier>,
    /// Allows deleting or replacing tables, buckets and databases.
    pub destroy_data: bool,
    /// How many changes an apply makes at once; a plan observes [`READS_PER_CHANGE`] times as
    /// many resources at once.
    pub parallelism: usize,
}

/// Observations per unit of parallelism. A plan looks up every resource of every tier, most
/// of them absent (one read each), so reads far outnumber changes; they are also cheap for
/// the services, and the SDK's retries absorb a throttled one.
pub const READS_PER_CHANGE: usize = 8;

async fn observe_at(
    i: usize,
    r: &dyn Resource,
    aws: &AwsClients,
) -> (usize, Result<Option<Observed>, EngineError>) {
    (i, super::observe(r, aws).await)
}

/// Observes every resource of the universe in parallel and diffs it against the target tier.
pub async fn plan(aws: &AwsClients, req: PlanRequest) -> Result<Plan, EngineError> {
    let order = topo_order(&req.universe)?;
    let parallelism = req.parallelism.max(1) * READS_PER_CHANGE;

    let observations: Vec<(usize, Result<Option<Observed>, EngineError>)> =
        // The futures are made before they are streamed: a closure in the stream would keep
        // the plan's future from being `Send` (a caller that spawns the plan needs that).
        futures::stream::iter(
            req.universe
                .iter()
                .enumerate()
                .map(|(i, r)| observe_at(i, r.as_ref(), aws))
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(parallelism)
            .collect()
            .await;
    let mut observed: Vec<Option<Observed>> = vec![None; req.universe.len()];
    for (i, res) in observations {
        observed[i] = res?;
    }

    // Outputs as they will be once the plan is applied: what exists now, minus what
    // creation, replacement or an output-changing update will produce anew.
    let mut outputs = Outputs::new();
    for (i, o) in observed.iter().enumerate() {
        if let Some(o) = o {
            for (k, v) in &o.outputs {
                outputs.insert(format!("{}.{k}", req.universe[i].id()), v.clone());
            }
        }
    }

    let mut by_index: BTreeMap<usize, Change> = BTreeMap::new();
    let mut notes = Vec::new();
    for &i in &order {
        let r = &req.universe[i];
        let in_target = req.target.is_some_and(|t| r.tier() <= t);
        let wanted = in_target && r.wanted();
        let mut change = Change {
            id: r.id(),
            kind: r.kind(),
            name: r.name(),
            tier: r.tier(),
            action: Action::NoOp,
            data_bearing: r.data_bearing(),
            fields: Vec::new(),
            reason: None,
            notes: Vec::new(),
        };
        match (&observed[i], wanted) {
            (None, false) => {
                if in_target && let Some(n) = r.note_when_absent() {
                    notes.push(n);
                }
                continue;
            }
            // An account's setting is left as it is once no plan asks for it.
            (Some(_), false) if r.account_setting() => continue,
            (None, true) => {
                change.action = Action::Create;
                change.fields = diff(
                    &super::desired_of(r.as_ref(), &outputs),
                    &Observed::default(),
                );
                change.notes = r.notes();
                change
                    .notes
                    .extend(r.change_notes(&field_names(&change.fields)));
            }
            (Some(_), false) => {
                if let Some(why) = r.protected() {
                    change.action = Action::Keep;
                    change.reason = Some(why);
                } else if r.data_bearing() && !req.destroy_data {
                    change.action = Action::Keep;
                    change.reason = Some(
                        "holds data: kept; pass --destroy-data to delete it and everything in it"
                            .into(),
                    );
                } else {
                    change.action = Action::Delete;
                }
            }
            (Some(o), true) => {
                change.fields = diff(&super::desired_of(r.as_ref(), &outputs), o);
                change.notes = r.notes();
                if change.fields.is_empty() {
                    change.action = Action::NoOp;
                } else if change.fields.iter().any(|f| f.forces_replace) {
                    if r.data_bearing() && !req.destroy_data {
                        change.action = Action::Keep;
                        change.reason = Some(
                            "holds data: a replacement would lose it; kept as is (pass --destroy-data to replace)"
                                .into(),
                        );
                    } else {
                        change.action = Action::Replace;
                    }
                } else {
                    change.action = Action::Update;
                }
                let set = match change.action {
                    Action::Update => field_names(&change.fields),
                    // A replacement sets every field of the new one.
                    Action::Replace => field_names(&diff(
                        &super::desired_of(r.as_ref(), &outputs),
                        &Observed::default(),
                    )),
                    _ => Vec::new(),
                };
                if !set.is_empty() {
                    change.notes.extend(r.change_notes(&set));
                }
            }
        }
        let invalidates = match change.action {
            Action::Create | Action::Replace | Action::Delete => true,
            Action::Update => !r.outputs_stable_on_update(),
            Action::Keep | Action::NoOp => false,
        };
        if invalidates {
            let prefix = format!("{}.", r.id());
            outputs.retain(|k, _| !k.starts_with(&prefix));
        }
        by_index.insert(i, change);
    }

    // Present in the universe's declared order (tier by tier), not the topological one.
    let problems = replacements_refused_while_used(&req.universe, &observed, &by_index);
    let changes = by_index.into_values().collect();
    let observed_map = req
        .universe
        .iter()
        .zip(observed)
        .filter_map(|(r, o)| o.map(|o| (r.id(), o)))
        .collect();
    Ok(Plan {
        target: req.target,
        changes,
        problems,
        notes,
        cost: None,
        observed: observed_map,
        resources: req.universe,
    })
}

/// A replacement deletes the old resource before it creates the new one; AWS refuses that
/// delete for a kind that is still in use (a security group attached to network interfaces,
/// a target group a listener forwards to), so the apply could never finish. Each such
/// replacement with an existing user that stays is a problem, found before anything changes.
fn replacements_refused_while_used(
    universe: &[Arc<dyn Resource>],
    observed: &[Option<Observed>],
    changes: &BTreeMap<usize, Change>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (&i, c) in changes {
        let r = &universe[i];
        if c.action != Action::Replace || !r.delete_refused_while_used() {
            continue;
        }
        let users: Vec<String> = universe
            .iter()
            .enumerate()
            .filter(|(j, u)| {
                u.depends_on().contains(&r.id())
                    && observed[*j].is_some()
                    && changes.get(j).is_none_or(|c| c.action != Action::Delete)
            })
            .map(|(_, u)| format!("{} {}", u.kind(), u.name()))
            .collect();
        if users.is_empty() {
            continue;
        }
        let why: Vec<String> = c
            .fields
            .iter()
            .filter(|f| f.forces_replace)
            .map(|f| {
                let shown = |v: &Option<Value>| v.as_ref().map(show).unwrap_or_else(|| "-".into());
                format!("{} {} -> {}", f.field, shown(&f.before), shown(&f.after))
            })
            .collect();
        problems.push(format!(
            "{} {} would be replaced ({}), but AWS refuses to delete it while {} uses it, so the apply could not finish: remove what uses it first (`agentbus destroy` keeps the data), then deploy again",
            r.kind(),
            r.name(),
            why.join(", "),
            users.join(" and ")
        ));
    }
    problems
}

/// The names of the fields a diff sets.
fn field_names(fields: &[FieldChange]) -> Vec<String> {
    fields.iter().map(|f| f.field.clone()).collect()
}

#[cfg(test)]
mod describe_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_show_only_what_changed() {
        let before =
            json!({"p": {"Statement": [{"Action": "a"}], "Version": "1"}, "env": [["A", "1"]]});
        let after = json!({"p": {"Statement": [{"Action": "a"}, {"Action": "b"}], "Version": "1"}, "env": [["A", "2"]], "lb": {"$unknown": "tg.arn"}});
        let mut lines = Vec::new();
        describe("doc", &before, &after, &mut lines);
        assert_eq!(
            lines,
            [
                r#"doc.env: - ["A","1"]"#,
                r#"doc.env: + ["A","2"]"#,
                "doc.lb: + (known after apply: tg.arn)",
                r#"doc.p.Statement: + {"Action":"b"}"#,
            ]
        );
        assert_eq!(
            show(&json!({"forward": {"$unknown": "tg.arn"}})),
            r#"{"forward":"(known after apply: tg.arn)"}"#
        );
        let mut lines = Vec::new();
        describe("l", &json!([1, 2]), &json!([2, 1]), &mut lines);
        assert_eq!(lines, ["l: same elements, new order"]);
    }

    #[test]
    fn a_document_that_becomes_unknown_is_one_line_not_its_keys() {
        let mut lines = Vec::new();
        describe(
            "doc",
            &json!({"lb": {"arn": "a", "port": 80}}),
            &json!({"lb": {"$unknown": "tg.arn"}}),
            &mut lines,
        );
        assert_eq!(
            lines,
            [r#"doc.lb: {"arn":"a","port":80} -> (known after apply: tg.arn)"#]
        );
    }

    fn change(id: &'static str, action: Action, fields: Vec<FieldChange>) -> Change {
        Change {
            id,
            kind: "fake",
            name: id.to_string(),
            tier: Tier::ExtraSmall,
            action,
            data_bearing: false,
            fields,
            reason: None,
            notes: Vec::new(),
        }
    }

    fn field(name: &str, before: Option<Value>, after: Value, forces_replace: bool) -> FieldChange {
        FieldChange {
            field: name.into(),
            before,
            after: Some(after),
            forces_replace,
        }
    }

    fn plan_of(changes: Vec<Change>) -> Plan {
        Plan {
            target: Some(Tier::ExtraSmall),
            changes,
            problems: Vec::new(),
            notes: Vec::new(),
            cost: None,
            observed: HashMap::new(),
            resources: Vec::new(),
        }
    }

    #[test]
    fn tags_every_new_resource_shares_are_said_once_and_each_keeps_its_own() {
        let tags = |role: &str| json!({"app": "agentbus", "env": "dev", "role": role});
        let p = plan_of(vec![
            change(
                "a",
                Action::Create,
                vec![field("tags", None, tags("dev"), false)],
            ),
            change(
                "b",
                Action::Create,
                vec![field("tags", None, tags("web"), false)],
            ),
            change(
                "c",
                Action::Create,
                vec![field("tags", None, tags("dev"), false)],
            ),
        ]);
        assert_eq!(
            p.render(false),
            "every new resource is tagged app=agentbus, env=dev\n\n  \
             + fake a (create, xs)\n      tags: role=dev (and the shared ones)\n  \
             + fake b (create, xs)\n      tags: role=web (and the shared ones)\n  \
             + fake c (create, xs)\n      tags: role=dev (and the shared ones)\n\n\
             Plan: 3 to create, 0 to update, 0 to replace, 0 to delete, 0 kept.\n"
        );
        // One new resource: its tags are its own.
        let one = plan_of(vec![change(
            "a",
            Action::Create,
            vec![field("tags", None, tags("dev"), false)],
        )]);
        assert!(one.shared_new_tags().is_empty());
    }

    #[test]
    fn a_replacement_forced_by_a_document_says_so_on_its_last_line_only() {
        let p = plan_of(vec![change(
            "t",
            Action::Replace,
            vec![field(
                "key_schema",
                Some(json!({"hash": "pk", "range": "sk", "ttl": "a"})),
                json!({"hash": "id", "range": "ts", "ttl": "a"}),
                true,
            )],
        )]);
        assert_eq!(
            p.render(false),
            "-/+ fake t (replace, xs)\n      key_schema.hash: \"pk\" -> \"id\"\n      \
             key_schema.range: \"sk\" -> \"ts\"  # forces replacement\n\n\
             Plan: 0 to create, 0 to update, 1 to replace, 0 to delete, 0 kept.\n"
        );
    }

    #[test]
    fn a_plan_without_changes_says_so_and_shows_nothing_kept_as_a_change() {
        let mut kept = change("bucket", Action::Keep, Vec::new());
        kept.reason = Some("holds data: kept".into());
        let p = plan_of(vec![change("a", Action::NoOp, Vec::new()), kept]);
        assert!(!p.has_changes());
        assert_eq!(
            p.render(false),
            "  ! fake bucket (kept, xs)\n      holds data: kept\nNo changes: the workspace matches the plan.\n"
        );
        assert!(format!("{p:?}").contains("changes: [Change { id: \"a\""));
        for a in [Action::Keep, Action::NoOp] {
            assert!(!a.is_change(), "{a:?}");
        }
        for a in [
            Action::Create,
            Action::Update,
            Action::Replace,
            Action::Delete,
        ] {
            assert!(a.is_change(), "{a:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_reports_only_changed_fields() {
        let want = Desired::new()
            .set("retention", 7)
            .set_replace("hash_key", "pk")
            .set("tags", json!({"a": "1"}));
        let have = Observed::default()
            .field("retention", 30)
            .field("hash_key", "pk")
            .field("tags", json!({"a": "1"}));
        let d = diff(&want, &have);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].field, "retention");
        assert_eq!(d[0].before, Some(json!(30)));
        assert_eq!(d[0].after, Some(json!(7)));
        assert!(!d[0].forces_replace);
    }

    #[test]
    fn diff_marks_replacement_and_unknowns() {
        let want = Desired::new()
            .set_replace("hash_key", "id")
            .set("role", super::super::unknown("role.arn"));
        let have = Observed::default()
            .field("hash_key", "pk")
            .field("role", "arn:x");
        let d = diff(&want, &have);
        assert_eq!(d.len(), 2);
        assert!(d.iter().any(|f| f.field == "hash_key" && f.forces_replace));
        assert!(d.iter().any(|f| f.field == "role"));
    }

    #[test]
    fn missing_field_is_a_change() {
        let want = Desired::new().set("pitr", true);
        let d = diff(&want, &Observed::default());
        assert_eq!(d[0].before, None);
    }
}
