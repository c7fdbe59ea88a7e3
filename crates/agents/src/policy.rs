//! The governance policy: what the critic checks before a plan may reach the execute lane.
//!
//! The checks run in a fixed order — artifacts, blast radius, cost, tests — and every one of
//! them is reported, passed or not, with its reason, so a verdict explains itself. A model
//! may add conditions to what this decides, or refuse; it can never approve what this blocks
//! (see [`crate::verdict::Verdict::with_model_review`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::lane::Lane;

/// A workspace's governance settings. Every field has the default the prototype's rules
/// give; a workspace stores its own as JSON (unknown fields are refused by name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The largest monthly cost increase (USD) a change may bring.
    pub cost_delta_monthly_limit: f64,
    /// Words that mark a change with a large blast radius, matched as whole words of what the
    /// plan changes, case-insensitively.
    pub blast_radius_words: Vec<String>,
    /// Words that mark a production change (it then needs a rollout plan).
    pub production_words: Vec<String>,
    /// Artifacts every plan must come with before it can be promoted.
    pub required_artifacts: Vec<String>,
    /// When execute may start without a human: never by default.
    pub auto_approve: AutoApprove,
    /// A human approval must come from another token than the one that started the run.
    pub four_eyes: bool,
    /// How long an approval, or a verdict, stays good (seconds).
    pub approval_ttl_seconds: u64,
}

/// When a run may go to execute without a human approval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AutoApprove {
    pub enabled: bool,
    /// Only when the change adds at most this much a month (USD).
    pub max_cost_delta_monthly: f64,
}

impl Default for Policy {
    fn default() -> Self {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
        Policy {
            cost_delta_monthly_limit: 500.0,
            blast_radius_words: words(&[
                "prod",
                "production",
                "payment",
                "payments",
                "auth",
                "iam",
                "route53",
                "cloudfront",
            ]),
            production_words: words(&["prod", "production"]),
            required_artifacts: words(&["plan.md", "subtasks.json"]),
            auto_approve: AutoApprove::default(),
            four_eyes: true,
            approval_ttl_seconds: 24 * 3600,
        }
    }
}

/// How the change was tested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Tests {
    /// No test report.
    Missing,
    Passed {
        report: String,
    },
    Failed {
        report: String,
        failing: u32,
    },
    /// Tests do not apply, for a reason someone recorded (a workspace setting change, say).
    Exception {
        reason: String,
    },
}

/// What the critic looks at: the plan's artifacts and what it says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The artifact keys (file names) the plan phase wrote.
    pub artifacts: Vec<String>,
    /// What the plan changes, as text: the deploy plan, the subtasks' tool calls.
    pub changes: String,
    pub tests: Tests,
    /// The change's monthly cost delta in USD; `None` when unknown.
    pub cost_delta_monthly: Option<f64>,
    /// The artifact that says how to undo the change, if any.
    pub rollback_plan: Option<String>,
    /// The artifact that says how the change rolls out (stages, thresholds), if any.
    pub rollout_plan: Option<String>,
}

/// One check and what it found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// `artifacts`, `blast_radius`, `production`, `cost` or `tests`.
    pub check: String,
    pub passed: bool,
    pub explanation: String,
}

/// The policy's decision on a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Decision {
    /// Every check passed.
    pub approved: bool,
    /// The lane the plan may run in: `execute` when approved, else `dry_run`.
    pub lane: Lane,
    /// What must hold while it runs.
    pub conditions: Vec<String>,
    /// Every check, in the order they ran.
    pub findings: Vec<Finding>,
    /// Execute still needs a human approval (the policy allows no automatic one here).
    pub needs_human: bool,
    /// The blast-radius words the changes contain.
    pub blast_radius: Vec<String>,
}

impl Policy {
    /// Reads a workspace's policy; every field optional, unknown ones refused.
    pub fn from_json(text: &str) -> Result<Policy, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Decides on a plan. Deterministic: the same evidence always gets the same decision.
    pub fn review(&self, e: &Evidence) -> Decision {
        let mut findings = Vec::new();
        let mut conditions = Vec::new();
        let mut found = |check: &str, passed: bool, explanation: String| {
            findings.push(Finding {
                check: check.to_string(),
                passed,
                explanation,
            })
        };

        // 1. Artifact sanity.
        let missing: Vec<&String> = self
            .required_artifacts
            .iter()
            .filter(|r| !e.artifacts.iter().any(|a| names_file(a, r)))
            .collect();
        if e.artifacts.is_empty() {
            found(
                "artifacts",
                false,
                "the plan has no artifacts: promotion needs them".into(),
            );
        } else if !missing.is_empty() {
            found(
                "artifacts",
                false,
                format!("missing required artifact(s): {}", join(&missing)),
            );
        } else {
            found(
                "artifacts",
                true,
                format!(
                    "{} artifact(s), the required ones among them",
                    e.artifacts.len()
                ),
            );
        }

        // 2. Blast radius: words of what the plan changes.
        let blast = words_in(&e.changes, &self.blast_radius_words);
        if blast.is_empty() {
            found(
                "blast_radius",
                true,
                "the changes name nothing with a large blast radius".into(),
            );
        } else if e.rollback_plan.is_none() {
            found(
                "blast_radius",
                false,
                format!(
                    "the changes touch {} without a rollback plan",
                    blast.join(", ")
                ),
            );
        } else {
            found(
                "blast_radius",
                true,
                format!(
                    "the changes touch {}; the rollback plan is {}",
                    blast.join(", "),
                    e.rollback_plan.as_deref().unwrap_or_default()
                ),
            );
            conditions.push(format!(
                "keep the rollback plan ready while it runs ({})",
                blast.join(", ")
            ));
        }
        let production = words_in(&e.changes, &self.production_words);
        if !production.is_empty() {
            match &e.rollout_plan {
                None => found(
                    "production",
                    false,
                    "the changes touch production without a rollout plan".into(),
                ),
                Some(r) => {
                    found(
                        "production",
                        true,
                        format!("the changes touch production; the rollout plan is {r}"),
                    );
                    conditions.push("roll out as the rollout plan says, stage by stage".into());
                }
            }
        }

        // 3. Cost.
        match e.cost_delta_monthly {
            None => found(
                "cost",
                false,
                "the monthly cost delta is unknown: the plan must state it".into(),
            ),
            Some(c) if !c.is_finite() => found(
                "cost",
                false,
                "the monthly cost delta is not a number".into(),
            ),
            Some(c) if c > self.cost_delta_monthly_limit => found(
                "cost",
                false,
                format!(
                    "the change adds ${c:.2}/month, above the limit of ${:.2}",
                    self.cost_delta_monthly_limit
                ),
            ),
            Some(c) => found(
                "cost",
                true,
                format!(
                    "the change moves the monthly cost by {}${:.2}, within the limit of ${:.2}",
                    if c < 0.0 { "-" } else { "+" },
                    c.abs(),
                    self.cost_delta_monthly_limit
                ),
            ),
        }

        // 4. Tests.
        match &e.tests {
            Tests::Missing => found(
                "tests",
                false,
                "no test report, and no recorded exception".into(),
            ),
            Tests::Failed { report, failing } => found(
                "tests",
                false,
                format!("{failing} test(s) failing (report {report})"),
            ),
            Tests::Passed { report } => {
                found("tests", true, format!("tests pass (report {report})"))
            }
            Tests::Exception { reason } if reason.trim().is_empty() => {
                found("tests", false, "a test exception needs its reason".into())
            }
            Tests::Exception { reason } => {
                found("tests", true, format!("tests do not apply: {reason}"))
            }
        }

        let approved = findings.iter().all(|f| f.passed);
        let cost = e.cost_delta_monthly.unwrap_or(f64::INFINITY);
        let automatic = approved
            && self.auto_approve.enabled
            && blast.is_empty()
            && cost <= self.auto_approve.max_cost_delta_monthly;
        Decision {
            approved,
            lane: if approved {
                Lane::Execute
            } else {
                Lane::DryRun
            },
            conditions,
            findings,
            needs_human: approved && !automatic,
            blast_radius: blast,
        }
    }
}

/// Whether artifact key `key` is the file `name` (`runs/r1/plan.md` is `plan.md`).
fn names_file(key: &str, name: &str) -> bool {
    key == name || key.ends_with(&format!("/{name}"))
}

/// The words of `list` that occur in `text` as whole words, case-insensitively, each once,
/// in the list's order.
fn words_in(text: &str, list: &[String]) -> Vec<String> {
    let tokens: std::collections::HashSet<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let mut out = Vec::new();
    for w in list {
        let w = w.to_ascii_lowercase();
        if tokens.contains(&w) && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Evidence {
        Evidence {
            artifacts: vec![
                "runs/r1/plan.md".into(),
                "runs/r1/subtasks.json".into(),
                "runs/r1/deploy-plan.txt".into(),
            ],
            changes: "+ dynamodb table agentbus-dev-kv (create, xs)".into(),
            tests: Tests::Passed {
                report: "runs/r1/test_report.json".into(),
            },
            cost_delta_monthly: Some(7.81),
            rollback_plan: None,
            rollout_plan: None,
        }
    }

    fn failed(d: &Decision) -> Vec<&str> {
        d.findings
            .iter()
            .filter(|f| !f.passed)
            .map(|f| f.check.as_str())
            .collect()
    }

    #[test]
    fn a_complete_cheap_plan_is_approved_for_execute_but_still_needs_a_human() {
        let d = Policy::default().review(&good());
        assert!(d.approved, "{d:#?}");
        assert_eq!(d.lane, Lane::Execute);
        assert!(
            d.needs_human,
            "approval_required_for_execute is the default"
        );
        let checks: Vec<&str> = d.findings.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(checks, ["artifacts", "blast_radius", "cost", "tests"]);
        assert!(d.findings[2].explanation.contains("+$7.81"), "{d:#?}");
    }

    #[test]
    fn the_critic_blocks_a_plan_without_artifacts() {
        let mut e = good();
        e.artifacts.clear();
        let d = Policy::default().review(&e);
        assert!(!d.approved);
        assert_eq!(d.lane, Lane::DryRun);
        assert_eq!(failed(&d), ["artifacts"]);
        let mut e = good();
        e.artifacts.retain(|a| !a.ends_with("subtasks.json"));
        let d = Policy::default().review(&e);
        assert_eq!(failed(&d), ["artifacts"]);
        assert!(
            d.findings[0].explanation.contains("subtasks.json"),
            "{d:#?}"
        );
        // A name that merely ends like a required one is not it.
        let mut e = good();
        e.artifacts = vec!["runs/r1/myplan.md".into(), "runs/r1/subtasks.json".into()];
        assert_eq!(failed(&Policy::default().review(&e)), ["artifacts"]);
    }

    #[test]
    fn the_critic_blocks_missing_or_failing_tests_unless_an_exception_is_recorded() {
        for (tests, blocked) in [
            (Tests::Missing, true),
            (
                Tests::Failed {
                    report: "r.json".into(),
                    failing: 2,
                },
                true,
            ),
            (
                Tests::Exception {
                    reason: "  ".into(),
                },
                true,
            ),
            (
                Tests::Exception {
                    reason: "a budget setting: nothing to test".into(),
                },
                false,
            ),
        ] {
            let mut e = good();
            e.tests = tests.clone();
            let d = Policy::default().review(&e);
            assert_eq!(!d.approved, blocked, "{tests:?}: {d:#?}");
            if blocked {
                assert_eq!(failed(&d), ["tests"]);
            }
        }
    }

    #[test]
    fn the_critic_blocks_an_unknown_cost_and_one_above_the_limit_but_not_one_at_it() {
        let p = Policy::default();
        for (cost, blocked) in [
            (None, true),
            (Some(f64::NAN), true),
            (Some(500.01), true),
            (Some(500.0), false),
            (Some(-120.0), false),
        ] {
            let mut e = good();
            e.cost_delta_monthly = cost;
            let d = p.review(&e);
            assert_eq!(!d.approved, blocked, "{cost:?}: {d:#?}");
        }
        let mut e = good();
        e.cost_delta_monthly = Some(900.0);
        let d = Policy {
            cost_delta_monthly_limit: 1000.0,
            ..Policy::default()
        }
        .review(&e);
        assert!(d.approved, "the limit is the workspace's: {d:#?}");
    }

    #[test]
    fn blast_radius_words_need_a_rollback_plan_and_are_matched_as_whole_words() {
        let mut e = good();
        e.changes = "~ iam role agentbus-dev-dashboard-task (update in place)".into();
        let d = Policy::default().review(&e);
        assert_eq!(failed(&d), ["blast_radius"]);
        assert_eq!(d.blast_radius, ["iam"]);
        e.rollback_plan = Some("runs/r1/rollback.md".into());
        let d = Policy::default().review(&e);
        assert!(d.approved, "{d:#?}");
        assert!(
            d.conditions.iter().any(|c| c.contains("rollback")),
            "{d:#?}"
        );
        // Substrings are not words: "products", "authors", "iamb" touch nothing.
        let mut e = good();
        e.changes = "products for authors; iamb pentameter; PaymentsX".into();
        let d = Policy::default().review(&e);
        assert!(d.approved && d.blast_radius.is_empty(), "{d:#?}");
        // Case does not hide a word.
        e.changes = "update Route53 record".into();
        assert_eq!(Policy::default().review(&e).blast_radius, ["route53"]);
    }

    #[test]
    fn production_changes_need_a_rollout_plan_as_well() {
        let mut e = good();
        e.changes = "deploy small --env prod".into();
        e.rollback_plan = Some("rollback.md".into());
        let d = Policy::default().review(&e);
        assert_eq!(failed(&d), ["production"]);
        e.rollout_plan = Some("rollout.md".into());
        let d = Policy::default().review(&e);
        assert!(d.approved, "{d:#?}");
        assert_eq!(d.conditions.len(), 2, "{d:#?}");
    }

    #[test]
    fn every_failing_check_is_reported_not_just_the_first() {
        let e = Evidence {
            artifacts: Vec::new(),
            changes: "payment service in prod".into(),
            tests: Tests::Missing,
            cost_delta_monthly: None,
            rollback_plan: None,
            rollout_plan: None,
        };
        let d = Policy::default().review(&e);
        assert_eq!(
            failed(&d),
            ["artifacts", "blast_radius", "production", "cost", "tests"]
        );
        assert!(!d.needs_human, "nothing to approve when the policy blocks");
    }

    #[test]
    fn automatic_approval_only_where_the_workspace_allows_it_and_never_for_blast_radius() {
        let p = Policy {
            auto_approve: AutoApprove {
                enabled: true,
                max_cost_delta_monthly: 10.0,
            },
            ..Policy::default()
        };
        assert!(!p.review(&good()).needs_human);
        let mut pricier = good();
        pricier.cost_delta_monthly = Some(10.5);
        assert!(p.review(&pricier).needs_human);
        let mut risky = good();
        risky.changes = "attach an iam policy".into();
        risky.rollback_plan = Some("rollback.md".into());
        let d = p.review(&risky);
        assert!(d.approved && d.needs_human, "{d:#?}");
    }

    #[test]
    fn a_workspace_policy_is_json_with_defaults_and_unknown_fields_refused() {
        let p = Policy::from_json(r#"{"cost_delta_monthly_limit": 50}"#).unwrap();
        assert_eq!(p.cost_delta_monthly_limit, 50.0);
        assert_eq!(p.blast_radius_words, Policy::default().blast_radius_words);
        let e = Policy::from_json(r#"{"cost_limit": 50}"#).unwrap_err();
        assert!(e.to_string().contains("cost_limit"), "{e}");
    }
}
