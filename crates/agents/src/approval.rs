//! Approvals no one can fake: an approval names the SHA-256 of the exact plan artifact, the
//! lane and an expiry; it is given by an `admin` token (never the one that started the run,
//! when four-eyes is on); and the execute phase refuses a plan whose hash differs from the
//! approved one, or an approval that has expired.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lane::Lane;
use crate::policy::Policy;

/// The SHA-256 of a plan artifact's bytes, as lowercase hex.
pub fn plan_sha256(plan: &[u8]) -> String {
    hex::encode(Sha256::digest(plan))
}

/// A run waiting for a human.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Pending {
    pub run_id: String,
    /// The hash of the plan artifact the critic reviewed.
    pub plan_sha256: String,
    /// The lane the approval would grant.
    pub lane: Lane,
    /// The token that started the run.
    pub started_by: String,
    /// Epoch seconds.
    pub requested_at: u64,
    /// Epoch seconds after which the run stops waiting.
    pub expires_at: u64,
}

/// What a person decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    Approve,
    Reject,
}

/// Who decides, as the server authenticated them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decider {
    pub token_id: String,
    pub is_admin: bool,
}

/// A decision as recorded (on the run and on the timeline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Approval {
    pub run_id: String,
    pub choice: Choice,
    pub plan_sha256: String,
    pub lane: Lane,
    /// The deciding token's id.
    pub decided_by: String,
    pub reason: String,
    /// Epoch seconds.
    pub decided_at: u64,
    /// Epoch seconds after which an approval no longer lets execute start.
    pub expires_at: u64,
}

/// Why an approval, or an execute, is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("only an admin token can decide on a run")]
    NotAdmin,
    #[error("four-eyes: the token that started run {0} cannot approve it; another admin must")]
    OwnRun(String),
    #[error(
        "the approval names plan {given}, but the run waits on plan {expected}: review the current plan and approve its hash"
    )]
    WrongPlan { expected: String, given: String },
    #[error("run {0} stopped waiting for approval (its request expired)")]
    RequestExpired(String),
    #[error("the approval of run {0} has expired: approve it again")]
    Expired(String),
    #[error("run {0} was rejected: {1}")]
    Rejected(String, String),
    #[error("a decision needs a reason")]
    NoReason,
    #[error(
        "a decision's reason is at most {MAX_REASON_CHARS} characters (a sentence; details belong in an artifact)"
    )]
    LongReason,
    #[error("plan_sha256 must be 64 lowercase hex characters")]
    BadHash,
}

/// The longest reason a decision may give: the approval travels with the run's state, which
/// an agent on ECS receives in its task's overrides (8 KiB in all).
pub const MAX_REASON_CHARS: usize = 500;

/// A decision as asked for (by `approval_decide` or the dashboard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub who: Decider,
    pub choice: Choice,
    /// The plan the decider reviewed: it must be the one the run waits on.
    pub plan_sha256: String,
    pub reason: String,
}

/// Decides on a pending run at `now` (epoch seconds). A rejection needs no four-eyes: anyone
/// with the right may stop a run, the starter included.
pub fn decide(
    pending: &Pending,
    r: &Request,
    policy: &Policy,
    now: u64,
) -> Result<Approval, ApprovalError> {
    if !r.who.is_admin {
        return Err(ApprovalError::NotAdmin);
    }
    if r.reason.trim().is_empty() {
        return Err(ApprovalError::NoReason);
    }
    if r.reason.trim().chars().count() > MAX_REASON_CHARS {
        return Err(ApprovalError::LongReason);
    }
    let hash = r.plan_sha256.as_str();
    if hash.len() != 64
        || !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApprovalError::BadHash);
    }
    if now >= pending.expires_at {
        return Err(ApprovalError::RequestExpired(pending.run_id.clone()));
    }
    if hash != pending.plan_sha256 {
        return Err(ApprovalError::WrongPlan {
            expected: pending.plan_sha256.clone(),
            given: hash.to_string(),
        });
    }
    if r.choice == Choice::Approve && policy.four_eyes && r.who.token_id == pending.started_by {
        return Err(ApprovalError::OwnRun(pending.run_id.clone()));
    }
    Ok(Approval {
        run_id: pending.run_id.clone(),
        choice: r.choice,
        plan_sha256: hash.to_string(),
        lane: pending.lane,
        decided_by: r.who.token_id.clone(),
        reason: r.reason.trim().to_string(),
        decided_at: now,
        expires_at: now.saturating_add(policy.approval_ttl_seconds),
    })
}

/// The execute phase's check before it runs anything: the plan it is about to run is the one
/// approved, byte for byte, the approval is an approval, and it has not expired.
pub fn check_execute(approval: &Approval, plan: &[u8], now: u64) -> Result<(), ApprovalError> {
    if approval.choice == Choice::Reject {
        return Err(ApprovalError::Rejected(
            approval.run_id.clone(),
            approval.reason.clone(),
        ));
    }
    let actual = plan_sha256(plan);
    if actual != approval.plan_sha256 {
        return Err(ApprovalError::WrongPlan {
            expected: actual,
            given: approval.plan_sha256.clone(),
        });
    }
    if now >= approval.expires_at {
        return Err(ApprovalError::Expired(approval.run_id.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &[u8] = b"# plan\n1. kv_set notes/today\n";

    fn pending() -> Pending {
        Pending {
            run_id: "r1".into(),
            plan_sha256: plan_sha256(PLAN),
            lane: Lane::Execute,
            started_by: "tok-starter".into(),
            requested_at: 1_000,
            expires_at: 1_000 + 3_600,
        }
    }

    /// `token` (an admin unless it starts with `user`) decides `choice` on `hash`.
    fn ask(token: &str, choice: Choice, hash: &str, reason: &str) -> Request {
        Request {
            who: Decider {
                token_id: token.into(),
                is_admin: !token.starts_with("user"),
            },
            choice,
            plan_sha256: hash.into(),
            reason: reason.into(),
        }
    }

    fn approve(token: &str) -> Request {
        ask(token, Choice::Approve, &plan_sha256(PLAN), "looks right")
    }

    #[test]
    fn the_hash_is_sha256_of_the_exact_bytes() {
        assert_eq!(
            plan_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(
            plan_sha256(PLAN),
            plan_sha256(b"# plan\n1. kv_set notes/today \n")
        );
    }

    #[test]
    fn another_admin_approves_the_exact_plan_and_execute_accepts_it() {
        let a = decide(&pending(), &approve("tok-other"), &Policy::default(), 1_100).unwrap();
        assert_eq!(a.expires_at, 1_100 + 24 * 3600);
        assert_eq!((a.lane, a.reason.as_str()), (Lane::Execute, "looks right"));
        assert_eq!(check_execute(&a, PLAN, 1_200), Ok(()));
    }

    #[test]
    fn a_forged_or_stale_approval_is_refused() {
        let p = pending();
        let policy = Policy::default();
        let good = plan_sha256(PLAN);
        let other = plan_sha256(b"another plan");
        for (request, now, refused) in [
            (approve("user-1"), 1_100, ApprovalError::NotAdmin),
            (
                approve("tok-starter"),
                1_100,
                ApprovalError::OwnRun("r1".into()),
            ),
            (
                ask("tok-other", Choice::Approve, &other, "ok"),
                1_100,
                ApprovalError::WrongPlan {
                    expected: good.clone(),
                    given: other.clone(),
                },
            ),
            (
                ask("tok-other", Choice::Approve, "ABC", "ok"),
                1_100,
                ApprovalError::BadHash,
            ),
            (
                ask("tok-other", Choice::Approve, &good, " "),
                1_100,
                ApprovalError::NoReason,
            ),
            (
                ask(
                    "tok-other",
                    Choice::Approve,
                    &good,
                    &"x".repeat(MAX_REASON_CHARS + 1),
                ),
                1_100,
                ApprovalError::LongReason,
            ),
            (
                approve("tok-other"),
                4_600,
                ApprovalError::RequestExpired("r1".into()),
            ),
        ] {
            assert_eq!(decide(&p, &request, &policy, now), Err(refused));
        }
        // Without four-eyes the starter may approve its own run.
        let solo = Policy {
            four_eyes: false,
            ..Policy::default()
        };
        assert!(decide(&p, &approve("tok-starter"), &solo, 1_100).is_ok());
        // Anyone with the right may stop a run, the starter included.
        let stop = ask("tok-starter", Choice::Reject, &good, "no");
        assert!(decide(&p, &stop, &policy, 1_100).is_ok());
    }

    #[test]
    fn execute_refuses_a_changed_plan_an_expired_approval_and_a_rejection() {
        let p = pending();
        let policy = Policy::default();
        let a = decide(&p, &approve("tok-other"), &policy, 1_100).unwrap();
        assert!(matches!(
            check_execute(&a, b"# plan\n1. secrets_delete everything\n", 1_200),
            Err(ApprovalError::WrongPlan { .. })
        ));
        assert_eq!(
            check_execute(&a, PLAN, a.expires_at),
            Err(ApprovalError::Expired("r1".into()))
        );
        let no = ask("tok-other", Choice::Reject, &plan_sha256(PLAN), "too risky");
        let r = decide(&p, &no, &policy, 1_100).unwrap();
        assert_eq!(
            check_execute(&r, PLAN, 1_200),
            Err(ApprovalError::Rejected("r1".into(), "too risky".into()))
        );
    }
}
