//! What agents act with: MCP tools, through one client interface ([`Tools`]), whether the
//! server is in the same process (embedded), across the network (ECS) or a test's fake; and
//! the lane gate every call passes ([`Gated`]).

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::lane::{Lane, LaneRefusal, ToolHints, admits};

/// A tool as its server lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolInfo {
    pub name: String,
    pub hints: ToolHints,
    pub description: String,
}

impl ToolInfo {
    /// A tool as an MCP server lists it: its name, description and annotations.
    pub fn of(t: &rmcp::model::Tool) -> Self {
        let a = t.annotations.clone().unwrap_or_default();
        ToolInfo {
            description: t.description.as_deref().unwrap_or_default().to_string(),
            name: t.name.to_string(),
            hints: ToolHints {
                read_only: a.read_only_hint,
                destructive: a.destructive_hint,
                idempotent: a.idempotent_hint,
                open_world: a.open_world_hint,
                preview: false,
            },
        }
    }
}

/// Why a tool call did not give a result.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool ran and said no (its `isError` result, or an invalid-params answer).
    #[error("{tool}: {message}")]
    Refused { tool: String, message: String },
    /// The lane does not admit the tool.
    #[error(transparent)]
    Lane(#[from] LaneRefusal),
    /// The server could not be reached or answered nonsense.
    #[error("the tool server failed: {0}")]
    Transport(String),
}

/// An MCP server's tools, as an agent calls them.
#[async_trait]
pub trait Tools: Send + Sync {
    async fn list(&self) -> Result<Vec<ToolInfo>, ToolError>;
    /// The tool's structured result.
    async fn call(&self, tool: &str, arguments: Value) -> Result<Value, ToolError>;
}

/// Between a registered external server's name and its tool's: the agents see tool `t` of
/// server `s` as `s__t`, called through the workspace's `tools_call`.
pub const EXTERNAL_SEPARATOR: &str = "__";

/// The memory collection (large tier) that holds one document per run: its retrospective,
/// under the run's id.
pub const RUNS_COLLECTION: &str = "runs";

/// Tools behind a lane: a call runs only when the lane admits the tool (by its annotations),
/// except the run's own records, which an agent keeps in any lane: artifacts under
/// `runs/{run_id}/`, scratch KV entries under `runs/{run_id}/`, timeline records, and the
/// run's document in the memory collection [`RUNS_COLLECTION`].
pub struct Gated<'a> {
    inner: &'a dyn Tools,
    lane: Lane,
    run_id: String,
    approved: Vec<String>,
    hints: HashMap<String, ToolHints>,
    listed: Vec<ToolInfo>,
}

impl<'a> Gated<'a> {
    /// Lists the tools once to learn their annotations.
    pub async fn new(
        inner: &'a dyn Tools,
        lane: Lane,
        run_id: &str,
        approved: Vec<String>,
    ) -> Result<Gated<'a>, ToolError> {
        let mut listed = inner.list().await?;
        // The tenant's registered external servers: their tools, with their own annotations.
        if listed.iter().any(|t| t.name == "tools_list") {
            let servers = inner.call("tools_list", serde_json::json!({})).await?;
            for s in servers["servers"].as_array().into_iter().flatten() {
                let server = s["name"].as_str().unwrap_or_default();
                for t in s["tools"].as_array().into_iter().flatten() {
                    let flag = |k: &str| t[k].as_bool();
                    listed.push(ToolInfo {
                        name: format!(
                            "{server}{EXTERNAL_SEPARATOR}{}",
                            t["name"].as_str().unwrap_or_default()
                        ),
                        description: t["description"].as_str().unwrap_or_default().to_string(),
                        hints: ToolHints {
                            read_only: flag("read_only"),
                            destructive: flag("destructive"),
                            idempotent: flag("idempotent"),
                            open_world: flag("open_world"),
                            preview: false,
                        },
                    });
                }
            }
        }
        let hints = listed
            .iter()
            .map(|t| (t.name.clone(), t.hints.clone()))
            .collect();
        Ok(Gated {
            inner,
            lane,
            run_id: run_id.to_string(),
            approved,
            hints,
            listed,
        })
    }

    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// Whether the server offers `tool`.
    pub fn has(&self, tool: &str) -> bool {
        self.hints.contains_key(tool)
    }

    pub fn hints(&self, tool: &str) -> Option<&ToolHints> {
        self.hints.get(tool)
    }

    /// Every tool the server offers.
    pub fn listed(&self) -> &[ToolInfo] {
        &self.listed
    }

    /// A call to the run's own records.
    fn own_record(&self, tool: &str, arguments: &Value) -> bool {
        let prefix = format!("runs/{}/", self.run_id);
        let key = arguments.get("key").and_then(Value::as_str);
        match tool {
            "timeline_append" => true,
            "artifacts_put" | "kv_set" | "kv_delete" => key.is_some_and(|k| k.starts_with(&prefix)),
            // The run's own memory: its document in the runs collection (the retrospective).
            "memory_put" => {
                arguments.get("collection").and_then(Value::as_str) == Some(RUNS_COLLECTION)
                    && arguments
                        .get("documents")
                        .and_then(Value::as_array)
                        .is_some_and(|d| {
                            !d.is_empty()
                                && d.iter().all(|d| {
                                    d.get("id").and_then(Value::as_str) == Some(&self.run_id)
                                })
                        })
            }
            _ => false,
        }
    }

    pub async fn call(&self, tool: &str, arguments: Value) -> Result<Value, ToolError> {
        if !self.own_record(tool, &arguments) {
            let hints = self.hints.get(tool).cloned().unwrap_or_default();
            admits(self.lane, tool, &hints, &self.approved)?;
        }
        match tool.split_once(EXTERNAL_SEPARATOR) {
            Some((server, name)) if self.hints.contains_key(tool) => {
                let out = self
                    .inner
                    .call(
                        "tools_call",
                        serde_json::json!({"server": server, "tool": name, "arguments": arguments}),
                    )
                    .await?;
                // Its structured result when it gave one, else its text.
                Ok(match out.get("structured") {
                    Some(v) if !v.is_null() => v.clone(),
                    _ => serde_json::json!({"text": out["text"]}),
                })
            }
            _ => self.inner.call(tool, arguments).await,
        }
    }
}

/// An MCP server's tools through an rmcp client: in process (embedded), or over Streamable
/// HTTP with a bearer token (the agents on ECS).
pub struct McpClient(pub rmcp::service::RunningService<rmcp::RoleClient, ()>);

#[async_trait]
impl Tools for McpClient {
    async fn list(&self) -> Result<Vec<ToolInfo>, ToolError> {
        let tools = self
            .0
            .list_all_tools()
            .await
            .map_err(|e| ToolError::Transport(e.to_string()))?;
        Ok(tools.iter().map(ToolInfo::of).collect())
    }

    async fn call(&self, tool: &str, arguments: Value) -> Result<Value, ToolError> {
        let arguments = match arguments {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => {
                return Err(ToolError::Refused {
                    tool: tool.to_string(),
                    message: format!("arguments must be an object, not {other}"),
                });
            }
        };
        let params =
            rmcp::model::CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        match self.0.call_tool(params).await {
            Ok(r) if r.is_error == Some(true) => Err(ToolError::Refused {
                tool: tool.to_string(),
                message: r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect::<Vec<_>>()
                    .join(" "),
            }),
            Ok(r) => Ok(r.structured_content.unwrap_or(Value::Null)),
            Err(rmcp::ServiceError::McpError(e)) => Err(ToolError::Refused {
                tool: tool.to_string(),
                message: e.message.to_string(),
            }),
            Err(e) => Err(ToolError::Transport(e.to_string())),
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory tool server for the agents' tests: a KV store, artifacts and a timeline,
    //! with the annotations agentbus's own tools carry.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    #[derive(Default)]
    pub struct Fake {
        pub kv: Mutex<BTreeMap<String, String>>,
        pub artifacts: Mutex<BTreeMap<String, String>>,
        pub timeline: Mutex<Vec<Value>>,
        pub calls: Mutex<Vec<String>>,
    }

    fn hints(read_only: bool) -> ToolHints {
        ToolHints {
            read_only: Some(read_only),
            ..ToolHints::default()
        }
    }

    #[async_trait]
    impl Tools for Fake {
        async fn list(&self) -> Result<Vec<ToolInfo>, ToolError> {
            Ok([
                ("kv_get", true),
                ("kv_list", true),
                ("kv_set", false),
                ("kv_delete", false),
                ("artifacts_get", true),
                ("artifacts_list", true),
                ("artifacts_put", false),
                ("timeline_append", false),
                ("timeline_query", true),
                ("secrets_delete", false),
            ]
            .into_iter()
            .map(|(n, ro)| ToolInfo {
                description: format!("the fake {n}"),
                name: n.into(),
                hints: hints(ro),
            })
            .collect())
        }

        async fn call(&self, tool: &str, a: Value) -> Result<Value, ToolError> {
            self.calls.lock().unwrap().push(tool.to_string());
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            Ok(match tool {
                "kv_get" => match self.kv.lock().unwrap().get(&s("key")) {
                    Some(v) => json!({"found": true, "key": s("key"), "value": v}),
                    None => json!({"found": false, "key": s("key")}),
                },
                "kv_set" => {
                    self.kv.lock().unwrap().insert(s("key"), s("value"));
                    json!({"key": s("key"), "version": 1})
                }
                "kv_delete" => {
                    json!({"deleted": self.kv.lock().unwrap().remove(&s("key")).is_some()})
                }
                "kv_list" => {
                    let p = s("prefix");
                    let entries: Vec<Value> = self
                        .kv
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(k, _)| k.starts_with(&p))
                        .map(|(k, v)| json!({"key": k, "size": v.len()}))
                        .collect();
                    json!({"entries": entries, "next_cursor": null})
                }
                "memory_put" => json!({"stored": 1, "model": "fake"}),
                "artifacts_put" => {
                    self.artifacts
                        .lock()
                        .unwrap()
                        .insert(s("key"), s("content"));
                    json!({"key": s("key"), "size": s("content").len()})
                }
                "artifacts_get" => match self.artifacts.lock().unwrap().get(&s("key")) {
                    Some(c) => {
                        json!({"found": true, "key": s("key"), "encoding": "utf8", "content": c})
                    }
                    None => json!({"found": false, "key": s("key")}),
                },
                "artifacts_list" => {
                    let p = s("prefix");
                    let items: Vec<Value> = self
                        .artifacts
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(k, _)| k.starts_with(&p))
                        .map(|(k, c)| json!({"key": k, "size": c.len()}))
                        .collect();
                    json!({"artifacts": items, "next_cursor": null})
                }
                "timeline_append" => {
                    self.timeline.lock().unwrap().push(a.clone());
                    json!({"id": "t1", "ts": "2026-12-01T00:00:00.000Z"})
                }
                "timeline_query" => {
                    json!({"records": self.timeline.lock().unwrap().clone(), "next_cursor": null})
                }
                other => {
                    return Err(ToolError::Refused {
                        tool: other.into(),
                        message: "not in the fake".into(),
                    });
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::fake::Fake;
    use super::*;

    /// A workspace with one registered external server, `weather`: `forecast` only reads,
    /// `report` writes.
    struct WithExternal {
        calls: std::sync::Mutex<Vec<Value>>,
    }

    #[async_trait]
    impl Tools for WithExternal {
        async fn list(&self) -> Result<Vec<ToolInfo>, ToolError> {
            Ok(["tools_list", "tools_call"]
                .into_iter()
                .map(|n| ToolInfo {
                    name: n.into(),
                    description: String::new(),
                    hints: ToolHints {
                        read_only: Some(n == "tools_list"),
                        ..ToolHints::default()
                    },
                })
                .collect())
        }

        async fn call(&self, tool: &str, a: Value) -> Result<Value, ToolError> {
            match tool {
                "tools_list" => Ok(json!({"servers": [{"name": "weather", "tools": [
                    {"name": "forecast", "description": "", "read_only": true},
                    {"name": "report", "description": "", "read_only": false},
                ]}]})),
                _ => {
                    self.calls
                        .lock()
                        .unwrap()
                        .push(json!({"tool": tool, "args": a}));
                    Ok(json!({"structured": null, "text": "done"}))
                }
            }
        }
    }

    #[tokio::test]
    async fn an_external_server_s_tools_are_gated_by_their_own_annotations() {
        let w = WithExternal {
            calls: Default::default(),
        };
        let ro = Gated::new(&w, Lane::ReadOnly, "r1", Vec::new())
            .await
            .unwrap();
        assert!(ro.has("weather__forecast") && ro.has("weather__report"));
        let out = ro
            .call("weather__forecast", json!({"city": "Oslo"}))
            .await
            .unwrap();
        assert_eq!(out, json!({"text": "done"}));
        assert_eq!(
            w.calls.lock().unwrap()[0],
            json!({"tool": "tools_call", "args": {"server": "weather", "tool": "forecast", "arguments": {"city": "Oslo"}}})
        );
        let e = ro.call("weather__report", json!({})).await.unwrap_err();
        assert!(
            matches!(e, ToolError::Lane(LaneRefusal::NotReadOnly { .. })),
            "{e}"
        );
        // In execute, only as an approved subtask.
        let ex = Gated::new(&w, Lane::Execute, "r1", vec!["weather__report".into()])
            .await
            .unwrap();
        assert!(
            ex.call("weather__report", json!({"text": "x"}))
                .await
                .is_ok()
        );
        assert_eq!(w.calls.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_lane_refuses_what_its_tools_annotations_do_not_allow() {
        let f = Fake::default();
        let ro = Gated::new(&f, Lane::ReadOnly, "r1", Vec::new())
            .await
            .unwrap();
        assert!(ro.call("kv_get", json!({"key": "a"})).await.is_ok());
        let e = ro
            .call("kv_set", json!({"key": "a", "value": "1"}))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ToolError::Lane(LaneRefusal::NotReadOnly { .. })),
            "{e}"
        );
        // A tool the server does not list is judged by the cautious defaults.
        assert!(ro.call("made_up", json!({})).await.is_err());
        assert!(f.kv.lock().unwrap().is_empty(), "nothing was written");
    }

    #[tokio::test]
    async fn the_run_s_own_records_are_kept_in_any_lane_and_nothing_else_is() {
        let f = Fake::default();
        let ro = Gated::new(&f, Lane::ReadOnly, "r1", Vec::new())
            .await
            .unwrap();
        ro.call(
            "artifacts_put",
            json!({"key": "runs/r1/plan.md", "content": "x"}),
        )
        .await
        .unwrap();
        ro.call("kv_set", json!({"key": "runs/r1/scratch", "value": "x"}))
            .await
            .unwrap();
        ro.call("timeline_append", json!({"agent": "sweeper"}))
            .await
            .unwrap();
        // Another run's records, or a prefix look-alike, are not its own.
        for key in ["runs/r2/plan.md", "runs/r1x/plan.md", "plan.md"] {
            assert!(
                ro.call("artifacts_put", json!({"key": key, "content": "x"}))
                    .await
                    .is_err(),
                "{key}"
            );
        }
        // Its document in the memory collection of runs, and nothing else there.
        let doc = |id: &str| json!({"id": id, "text": "retrospective"});
        ro.call(
            "memory_put",
            json!({"collection": RUNS_COLLECTION, "documents": [doc("r1")]}),
        )
        .await
        .unwrap();
        for args in [
            json!({"collection": RUNS_COLLECTION, "documents": [doc("r1"), doc("r2")]}),
            json!({"collection": RUNS_COLLECTION, "documents": []}),
            json!({"collection": "notes", "documents": [doc("r1")]}),
        ] {
            assert!(ro.call("memory_put", args.clone()).await.is_err(), "{args}");
        }
    }

    #[tokio::test]
    async fn execute_runs_the_approved_tools_only() {
        let f = Fake::default();
        let ex = Gated::new(&f, Lane::Execute, "r1", vec!["kv_set".into()])
            .await
            .unwrap();
        ex.call("kv_set", json!({"key": "greeting", "value": "hi"}))
            .await
            .unwrap();
        assert!(
            ex.call("secrets_delete", json!({"name": "x"}))
                .await
                .is_err()
        );
        assert_eq!(
            f.kv.lock().unwrap().get("greeting").map(String::as_str),
            Some("hi")
        );
    }
}
