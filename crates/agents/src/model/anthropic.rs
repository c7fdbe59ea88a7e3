//! The Anthropic Messages API (`POST {base}/v1/messages`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{ChatRequest, ModelError, Provider, Reply, ToolCall, Usage, http, post_json};

/// The API version this client speaks.
const VERSION: &str = "2023-06-01";

pub struct Anthropic {
    base: String,
    model: String,
    key: String,
    client: reqwest::Client,
}

impl Anthropic {
    pub fn new(base: String, model: &str, key: String) -> Result<Self, ModelError> {
        Ok(Anthropic {
            base: base.trim_end_matches('/').to_string(),
            model: model.to_string(),
            key,
            client: http()?,
        })
    }
}

#[async_trait]
impl Provider for Anthropic {
    fn describe(&self) -> String {
        format!("anthropic:{}", self.model)
    }

    async fn send(&self, req: &ChatRequest, timeout: Duration) -> Result<Reply, ModelError> {
        let mut body = json!({
            "model": self.model,
            "max_tokens": req.max_tokens,
            "system": req.system,
            "messages": [{"role": "user", "content": req.prompt}],
        });
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
                .collect();
        }
        if let Some(name) = &req.force_tool {
            body["tool_choice"] = json!({"type": "tool", "name": name});
        }
        let headers = [
            ("x-api-key", self.key.clone()),
            ("anthropic-version", VERSION.to_string()),
        ];
        let out = post_json(
            &self.client,
            &format!("{}/v1/messages", self.base),
            &headers,
            &body,
            timeout,
        )
        .await?;
        let blocks = out["content"]
            .as_array()
            .ok_or_else(|| ModelError::Malformed(format!("no content in {out}")))?;
        let mut reply = Reply::default();
        for b in blocks {
            match b["type"].as_str() {
                Some("text") => reply.text.push_str(b["text"].as_str().unwrap_or_default()),
                Some("tool_use") => reply.tool_calls.push(ToolCall {
                    id: b["id"].as_str().unwrap_or_default().to_string(),
                    name: b["name"].as_str().unwrap_or_default().to_string(),
                    arguments: b["input"].clone(),
                }),
                _ => {}
            }
        }
        reply.usage = Usage {
            input_tokens: out["usage"]["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: out["usage"]["output_tokens"].as_u64().unwrap_or(0),
            ..Usage::default()
        };
        Ok(reply)
    }
}
