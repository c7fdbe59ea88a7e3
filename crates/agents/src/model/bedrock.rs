//! Amazon Bedrock's Converse API, with the AWS credential chain (the task role on ECS).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, InferenceConfiguration, Message,
    SpecificToolChoice, SystemContentBlock, Tool, ToolChoice, ToolConfiguration, ToolInputSchema,
    ToolSpecification,
};
use aws_smithy_types::{Document, Number};
use serde_json::Value;

use super::{ChatRequest, ModelError, Provider, Reply, ToolCall, Usage};

pub struct Bedrock {
    model: String,
    client: aws_sdk_bedrockruntime::Client,
}

impl Bedrock {
    pub fn new(model: &str, client: aws_sdk_bedrockruntime::Client) -> Bedrock {
        Bedrock {
            model: model.to_string(),
            client,
        }
    }

    /// A client from the standard AWS chain (region and credentials); `endpoint` overrides the
    /// service's address (a compatible endpoint, or a test server on 127.0.0.1).
    pub async fn from_env(model: &str, endpoint: Option<String>) -> Bedrock {
        let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let mut b = aws_sdk_bedrockruntime::config::Builder::from(&cfg);
        if let Some(url) = endpoint {
            b = b.endpoint_url(url);
        }
        Bedrock {
            model: model.to_string(),
            client: aws_sdk_bedrockruntime::Client::from_conf(b.build()),
        }
    }
}

fn to_document(v: &Value) -> Document {
    match v {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Number::PosInt(u),
            (None, Some(i), _) => Number::NegInt(i),
            (_, _, f) => Number::Float(f.unwrap_or(0.0)),
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(a) => Document::Array(a.iter().map(to_document).collect()),
        Value::Object(o) => Document::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), to_document(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

fn to_value(d: &Document) -> Value {
    match d {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => Value::from(*f),
        Document::String(s) => Value::String(s.clone()),
        Document::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        Document::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
        }
    }
}

fn bad(e: impl std::fmt::Display) -> ModelError {
    ModelError::Config(e.to_string())
}

#[async_trait]
impl Provider for Bedrock {
    fn describe(&self) -> String {
        format!("bedrock:{}", self.model)
    }

    async fn send(&self, req: &ChatRequest, _timeout: Duration) -> Result<Reply, ModelError> {
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(req.prompt.clone()))
            .build()
            .map_err(bad)?;
        let mut call = self
            .client
            .converse()
            .model_id(&self.model)
            .system(SystemContentBlock::Text(req.system.clone()))
            .messages(message)
            .inference_config(
                InferenceConfiguration::builder()
                    .max_tokens(i32::try_from(req.max_tokens).unwrap_or(i32::MAX))
                    .build(),
            );
        if !req.tools.is_empty() {
            let mut tc = ToolConfiguration::builder();
            for t in &req.tools {
                tc = tc.tools(Tool::ToolSpec(
                    ToolSpecification::builder()
                        .name(&t.name)
                        .description(&t.description)
                        .input_schema(ToolInputSchema::Json(to_document(&t.input_schema)))
                        .build()
                        .map_err(bad)?,
                ));
            }
            if let Some(name) = &req.force_tool {
                tc = tc.tool_choice(ToolChoice::Tool(
                    SpecificToolChoice::builder()
                        .name(name)
                        .build()
                        .map_err(bad)?,
                ));
            }
            call = call.tool_config(tc.build().map_err(bad)?);
        }
        let out =
            call.send()
                .await
                .map_err(|e| match e.raw_response().map(|r| r.status().as_u16()) {
                    Some(status) => ModelError::Http {
                        status,
                        body: tier_error(&e),
                    },
                    None => ModelError::Transport(tier_error(&e)),
                })?;
        let mut reply = Reply::default();
        if let Some(ConverseOutput::Message(m)) = out.output() {
            for block in m.content() {
                match block {
                    ContentBlock::Text(t) => reply.text.push_str(t),
                    ContentBlock::ToolUse(u) => reply.tool_calls.push(ToolCall {
                        id: u.tool_use_id().to_string(),
                        name: u.name().to_string(),
                        arguments: to_value(u.input()),
                    }),
                    _ => {}
                }
            }
        } else {
            return Err(ModelError::Malformed(
                "no message in the Converse answer".into(),
            ));
        }
        if let Some(u) = out.usage() {
            reply.usage = Usage {
                input_tokens: u.input_tokens().max(0) as u64,
                output_tokens: u.output_tokens().max(0) as u64,
                ..Usage::default()
            };
        }
        Ok(reply)
    }
}

/// An SDK error with its source chain, briefly.
fn tier_error(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s.chars().take(500).collect()
}
