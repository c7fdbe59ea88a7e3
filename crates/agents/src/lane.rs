//! Lanes: how far an agent step may reach. `read_only` < `dry_run` < `execute`; the default
//! is `read_only`. A tool runs in a lane only when its MCP annotations allow it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How far a step may reach, in order.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Discovery: reads only.
    #[default]
    ReadOnly,
    /// Previews: reads, and tools that only say what they would do.
    DryRun,
    /// Changes: only the subtasks an approval names.
    Execute,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::ReadOnly => "read_only",
            Lane::DryRun => "dry_run",
            Lane::Execute => "execute",
        }
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Lane {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read_only" => Ok(Lane::ReadOnly),
            "dry_run" => Ok(Lane::DryRun),
            "execute" => Ok(Lane::Execute),
            other => Err(format!(
                "unknown lane {other:?}: read_only, dry_run or execute"
            )),
        }
    }
}

/// What a tool says about itself: the MCP tool annotations that matter to lanes, plus
/// whether it is a preview (it says what it would do, without a read-only annotation). An
/// absent hint is taken at its most cautious value, as the MCP specification's defaults are:
/// not read-only, destructive, not idempotent, open world. (`workspace_plan` changes nothing
/// and says so with `readOnlyHint`, so it runs in every lane.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolHints {
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub idempotent: Option<bool>,
    pub open_world: Option<bool>,
    /// A preview tool: admitted in `dry_run`.
    #[serde(default)]
    pub preview: bool,
}

/// Why a lane refuses a tool.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LaneRefusal {
    #[error(
        "{tool} is not read-only (its annotations do not say readOnlyHint: true), so it cannot run in read_only"
    )]
    NotReadOnly { tool: String },
    #[error("{tool} changes things and is not a preview, so it cannot run in dry_run")]
    NotPreview { tool: String },
    #[error("{tool} is not among the approved subtasks' tool calls, so execute does not run it")]
    NotApproved { tool: String },
}

/// Whether `tool` (with `hints`) may run in `lane`. In `execute` only the tools the approved
/// subtasks name run (`approved`), read-only ones always.
pub fn admits(
    lane: Lane,
    tool: &str,
    hints: &ToolHints,
    approved: &[String],
) -> Result<(), LaneRefusal> {
    let read_only = hints.read_only == Some(true);
    match lane {
        Lane::ReadOnly if read_only => Ok(()),
        Lane::ReadOnly => Err(LaneRefusal::NotReadOnly {
            tool: tool.to_string(),
        }),
        Lane::DryRun if read_only || hints.preview => Ok(()),
        Lane::DryRun => Err(LaneRefusal::NotPreview {
            tool: tool.to_string(),
        }),
        Lane::Execute if read_only || approved.iter().any(|a| a == tool) => Ok(()),
        Lane::Execute => Err(LaneRefusal::NotApproved {
            tool: tool.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ro() -> ToolHints {
        ToolHints {
            read_only: Some(true),
            ..ToolHints::default()
        }
    }

    #[test]
    fn lanes_are_ordered_and_read_only_is_the_default() {
        assert!(Lane::ReadOnly < Lane::DryRun && Lane::DryRun < Lane::Execute);
        assert_eq!(Lane::default(), Lane::ReadOnly);
        for l in [Lane::ReadOnly, Lane::DryRun, Lane::Execute] {
            assert_eq!(l.as_str().parse::<Lane>(), Ok(l));
            assert_eq!(serde_json::to_value(l).unwrap(), l.as_str());
        }
        assert!("Execute".parse::<Lane>().is_err());
    }

    #[test]
    fn read_only_admits_only_tools_that_say_they_are_read_only() {
        assert!(admits(Lane::ReadOnly, "kv_get", &ro(), &[]).is_ok());
        // No annotation at all is the cautious default: not read-only.
        assert_eq!(
            admits(Lane::ReadOnly, "mystery", &ToolHints::default(), &[]),
            Err(LaneRefusal::NotReadOnly {
                tool: "mystery".into()
            })
        );
        let preview = ToolHints {
            read_only: Some(false),
            preview: true,
            ..ToolHints::default()
        };
        assert!(admits(Lane::ReadOnly, "deploy_preview", &preview, &[]).is_err());
    }

    #[test]
    fn dry_run_adds_previews_but_never_a_change() {
        let preview = ToolHints {
            read_only: Some(false),
            preview: true,
            ..ToolHints::default()
        };
        assert!(admits(Lane::DryRun, "deploy_preview", &preview, &[]).is_ok());
        assert!(admits(Lane::DryRun, "kv_get", &ro(), &[]).is_ok());
        let write = ToolHints {
            read_only: Some(false),
            destructive: Some(false),
            ..ToolHints::default()
        };
        assert!(matches!(
            admits(Lane::DryRun, "kv_set", &write, &[]),
            Err(LaneRefusal::NotPreview { .. })
        ));
    }

    #[test]
    fn execute_runs_only_what_the_approved_subtasks_name() {
        let write = ToolHints {
            read_only: Some(false),
            ..ToolHints::default()
        };
        let approved = vec!["workspace_apply".to_string()];
        assert!(admits(Lane::Execute, "workspace_apply", &write, &approved).is_ok());
        assert!(admits(Lane::Execute, "kv_get", &ro(), &approved).is_ok());
        assert!(matches!(
            admits(Lane::Execute, "secrets_delete", &write, &approved),
            Err(LaneRefusal::NotApproved { .. })
        ));
    }
}
