//! What passes between the steps of a run: small records of references (artifact keys,
//! hashes), never the artifacts themselves.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lane::Lane;

/// The artifacts of run `run_id` live under this prefix, its scratch KV entries too.
pub fn run_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/")
}

/// The key of one of the run's artifacts (`runs/{run_id}/{name}`).
pub fn run_key(run_id: &str, name: &str) -> String {
    format!("{}{name}", run_prefix(run_id))
}

/// What a run is for: the goal artifact `runs/{run_id}/goal.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// The goal, in words.
    pub goal: String,
    /// Tool calls the run should make, when the starter knows them; without a model the
    /// conductor plans exactly these.
    #[serde(default)]
    pub subtasks: Vec<ProposedCall>,
}

/// One tool call, as proposed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposedCall {
    pub tool: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// Why, in a sentence.
    #[serde(default)]
    pub why: String,
}

/// One subtask of `subtasks.json`: the executable plan the approval's hash names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subtask {
    pub id: String,
    /// `read_only` for a tool that only reads, `execute` for one that changes something.
    pub lane: Lane,
    pub tool: String,
    pub arguments: Map<String, Value>,
    /// What it leaves behind.
    pub deliverables: Vec<String>,
    pub why: String,
}

/// A subtask as the workflow carries it (the map's items).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubtaskRef {
    pub id: String,
    pub tool: String,
}

/// The conductor's answer to the plan phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Planned {
    pub plan_ref: String,
    pub subtasks_ref: String,
    pub evidence_ref: String,
    /// SHA-256 of `subtasks.json`: what an approval names.
    pub plan_sha256: String,
    pub subtasks: Vec<SubtaskRef>,
    pub cost_delta_monthly: Option<f64>,
    /// What a model used to plan, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_usage: Option<crate::model::Usage>,
}

/// The critic's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reviewed {
    pub approved: bool,
    pub needs_human: bool,
    pub lane: Lane,
    pub verdict_ref: String,
    pub plan_sha256: String,
    /// What a model used to review, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_usage: Option<crate::model::Usage>,
}

/// An approval as the execute phase receives it: a human's decision, or the policy's
/// automatic one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Approved {
    Automatic {
        choice: String,
        automatic: bool,
        plan_sha256: String,
    },
    Human(crate::approval::Approval),
}

/// The conductor's answer for one executed subtask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Executed {
    pub id: String,
    pub tool: String,
    pub result_ref: String,
}

/// The sweeper's answer to the cleanup phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Swept {
    pub retrospective_ref: String,
    /// Scratch KV entries removed.
    pub compacted: u32,
    /// Whether the retrospective went to the workspace's memory (large tier).
    #[serde(default)]
    pub remembered: bool,
}
