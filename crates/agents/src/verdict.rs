//! The critic's `verdict.json`: the policy's decision, what an advisory model review added,
//! and until when it holds. Its JSON Schema is [`Verdict::schema`]; the tests check written
//! verdicts against it with a validator nobody here wrote.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::lane::Lane;
use crate::policy::{Decision, Finding};

/// What an advisory model review said. It can add conditions or refuse; it cannot approve.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelReview {
    /// The model refuses the plan (the verdict is then not approved).
    pub refuse: bool,
    /// Conditions it adds.
    pub conditions: Vec<String>,
    /// Its reasoning, briefly.
    pub notes: String,
}

/// `verdict.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// Whether the plan may go on to execute (after a human approval when `needs_human`).
    pub approved: bool,
    /// The lane granted.
    pub lane: Lane,
    /// What must hold while the plan runs.
    pub conditions: Vec<String>,
    /// The artifact with the review's notes.
    pub notes_ref: String,
    /// Until when the verdict holds (RFC 3339, UTC).
    pub expires: String,
    /// Execute needs a human approval.
    pub needs_human: bool,
    /// The policy's checks, in order, each with its reason.
    pub findings: Vec<Finding>,
    /// The advisory model review, when a model is configured.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub model: Option<ModelReview>,
}

/// A verdict that breaks its own rules.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerdictError {
    #[error("verdict.json does not parse: {0}")]
    Parse(String),
    #[error("an approved verdict must grant execute, not {0}")]
    ApprovedWithoutExecute(Lane),
    #[error("a verdict cannot be approved while a policy check failed ({0})")]
    ApprovedOverPolicy(String),
    #[error("a verdict the model refused cannot be approved")]
    ApprovedOverModel,
    #[error("expires {0:?} is not an RFC 3339 time")]
    BadExpiry(String),
}

impl Verdict {
    /// The verdict of a policy decision alone, good for `ttl_seconds` from `now`.
    pub fn from_decision(
        d: &Decision,
        notes_ref: &str,
        now: time::OffsetDateTime,
        ttl_seconds: u64,
    ) -> Verdict {
        Verdict {
            approved: d.approved,
            lane: d.lane,
            conditions: d.conditions.clone(),
            notes_ref: notes_ref.to_string(),
            expires: rfc3339(
                now + time::Duration::seconds(ttl_seconds.min(i64::MAX as u64) as i64),
            ),
            needs_human: d.needs_human,
            findings: d.findings.clone(),
            model: None,
        }
    }

    /// Adds an advisory model review: its conditions join the policy's; a refusal takes the
    /// approval away. Nothing a model says turns a blocked verdict into an approved one.
    pub fn with_model_review(mut self, review: ModelReview) -> Verdict {
        if review.refuse {
            self.approved = false;
            self.lane = self.lane.min(Lane::DryRun);
            self.needs_human = false;
        }
        for c in &review.conditions {
            if !self.conditions.contains(c) {
                self.conditions.push(c.clone());
            }
        }
        self.model = Some(review);
        self
    }

    /// The JSON Schema of `verdict.json`.
    pub fn schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Verdict)).unwrap_or_default()
    }

    /// Reads a verdict and checks what the schema cannot say: an approval grants execute,
    /// and no approval stands over a failed check or a model's refusal.
    pub fn parse(text: &str) -> Result<Verdict, VerdictError> {
        let v: Verdict =
            serde_json::from_str(text).map_err(|e| VerdictError::Parse(e.to_string()))?;
        v.check()?;
        Ok(v)
    }

    pub fn check(&self) -> Result<(), VerdictError> {
        time::OffsetDateTime::parse(
            &self.expires,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| VerdictError::BadExpiry(self.expires.clone()))?;
        if self.approved {
            if self.lane != Lane::Execute {
                return Err(VerdictError::ApprovedWithoutExecute(self.lane));
            }
            if let Some(f) = self.findings.iter().find(|f| !f.passed) {
                return Err(VerdictError::ApprovedOverPolicy(f.check.clone()));
            }
            if self.model.as_ref().is_some_and(|m| m.refuse) {
                return Err(VerdictError::ApprovedOverModel);
            }
        }
        Ok(())
    }
}

/// RFC 3339 in UTC with whole seconds.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Evidence, Policy, Tests};

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-12-01 12:00 UTC)
    }

    fn evidence(cost: Option<f64>) -> Evidence {
        Evidence {
            artifacts: vec!["plan.md".into(), "subtasks.json".into()],
            changes: "kv_set notes/today".into(),
            tests: Tests::Exception {
                reason: "a KV write".into(),
            },
            cost_delta_monthly: cost,
            rollback_plan: None,
            rollout_plan: None,
        }
    }

    #[test]
    fn a_verdict_carries_the_decision_and_expires_when_the_policy_says() {
        let d = Policy::default().review(&evidence(Some(0.0)));
        let v = Verdict::from_decision(&d, "runs/r1/review-notes.md", now(), 3600);
        assert!(v.approved && v.lane == Lane::Execute && v.needs_human);
        assert_eq!(v.expires, "2026-12-01T13:00:00Z");
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(Verdict::parse(&text).unwrap(), v);
    }

    #[test]
    fn a_model_can_refuse_or_add_conditions_but_never_approve_what_the_policy_blocks() {
        let ok = Policy::default().review(&evidence(Some(1.0)));
        let v = Verdict::from_decision(&ok, "n", now(), 60).with_model_review(ModelReview {
            refuse: false,
            conditions: vec!["watch the error rate for an hour".into()],
            notes: "fine".into(),
        });
        assert!(v.approved);
        assert_eq!(v.conditions, ["watch the error rate for an hour"]);
        let refused = Verdict::from_decision(&ok, "n", now(), 60).with_model_review(ModelReview {
            refuse: true,
            ..ModelReview::default()
        });
        assert!(!refused.approved && refused.lane == Lane::DryRun && !refused.needs_human);

        let blocked = Policy::default().review(&evidence(None));
        let v = Verdict::from_decision(&blocked, "n", now(), 60).with_model_review(ModelReview {
            refuse: false,
            conditions: Vec::new(),
            notes: "looks great, approve".into(),
        });
        assert!(!v.approved, "a model's praise approves nothing");
    }

    #[test]
    fn a_forged_verdict_that_approves_over_a_failed_check_is_refused() {
        let blocked = Policy::default().review(&evidence(None));
        let mut v = Verdict::from_decision(&blocked, "n", now(), 60);
        v.approved = true;
        v.lane = Lane::Execute;
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(
            Verdict::parse(&text),
            Err(VerdictError::ApprovedOverPolicy("cost".into()))
        );
        let mut v = Verdict::from_decision(
            &Policy::default().review(&evidence(Some(0.0))),
            "n",
            now(),
            60,
        );
        v.lane = Lane::DryRun;
        assert_eq!(
            v.check(),
            Err(VerdictError::ApprovedWithoutExecute(Lane::DryRun))
        );
        v.lane = Lane::Execute;
        v.expires = "tomorrow".into();
        assert!(matches!(v.check(), Err(VerdictError::BadExpiry(_))));
        assert!(matches!(
            Verdict::parse(r#"{"approved": true}"#),
            Err(VerdictError::Parse(_))
        ));
    }

    #[test]
    fn the_schema_names_every_field_of_the_verdict() {
        let s = Verdict::schema();
        let props = s["properties"].as_object().unwrap();
        for f in [
            "approved",
            "lane",
            "conditions",
            "notes_ref",
            "expires",
            "needs_human",
            "findings",
            "model",
        ] {
            assert!(props.contains_key(f), "{f} missing from {s}");
        }
        let required: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for f in ["approved", "lane", "conditions", "notes_ref", "expires"] {
            assert!(required.contains(&f), "{f} not required in {s}");
        }
    }
}
