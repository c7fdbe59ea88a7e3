//! Any OpenAI-compatible chat completions endpoint (`POST {base}/chat/completions`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{ChatRequest, ModelError, Provider, Reply, ToolCall, Usage, http, post_json};

pub struct OpenAi {
    base: String,
    model: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl OpenAi {
    pub fn new(base: String, model: &str, key: Option<String>) -> Result<Self, ModelError> {
        Ok(OpenAi {
            base: base.trim_end_matches('/').to_string(),
            model: model.to_string(),
            key,
            client: http()?,
        })
    }
}

#[async_trait]
impl Provider for OpenAi {
    fn describe(&self) -> String {
        format!("openai:{}", self.model)
    }

    async fn send(&self, req: &ChatRequest, timeout: Duration) -> Result<Reply, ModelError> {
        let mut body = json!({
            "model": self.model,
            "max_tokens": req.max_tokens,
            "messages": [
                {"role": "system", "content": req.system},
                {"role": "user", "content": req.prompt},
            ],
        });
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
                .collect();
        }
        if let Some(name) = &req.force_tool {
            body["tool_choice"] = json!({"type": "function", "function": {"name": name}});
        }
        let headers: Vec<(&str, String)> = self
            .key
            .iter()
            .map(|k| ("authorization", format!("Bearer {k}")))
            .collect();
        let out = post_json(
            &self.client,
            &format!("{}/chat/completions", self.base),
            &headers,
            &body,
            timeout,
        )
        .await?;
        let message = &out["choices"][0]["message"];
        if message.is_null() {
            return Err(ModelError::Malformed(format!("no choices in {out}")));
        }
        let mut tool_calls = Vec::new();
        for c in message["tool_calls"].as_array().into_iter().flatten() {
            let args = c["function"]["arguments"].as_str().unwrap_or("{}");
            tool_calls.push(ToolCall {
                id: c["id"].as_str().unwrap_or_default().to_string(),
                name: c["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                arguments: serde_json::from_str(args)
                    .map_err(|e| ModelError::Malformed(format!("tool arguments {args:?}: {e}")))?,
            });
        }
        Ok(Reply {
            text: message["content"].as_str().unwrap_or_default().to_string(),
            tool_calls,
            usage: Usage {
                input_tokens: out["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: out["usage"]["completion_tokens"].as_u64().unwrap_or(0),
                ..Usage::default()
            },
        })
    }
}
