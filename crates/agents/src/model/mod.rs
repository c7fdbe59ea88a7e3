//! Models: a small provider interface with three real backends — Amazon Bedrock Converse
//! (IAM auth, the AWS default), any OpenAI-compatible endpoint, and the Anthropic Messages
//! API — chosen by configuration, with a timeout per call, retries with backoff, and token
//! (and, when priced, cost) accounting.
//!
//! Structured answers ([`Model::structured`]) are forced tool calls whose input schema is the
//! wanted JSON Schema: every provider supports that the same way.
//!
//! Configuration (environment):
//! - `AGENTBUS_MODEL`: `bedrock:MODEL_ID`, `openai:MODEL` or `anthropic:MODEL`; unset: no model.
//! - `AGENTBUS_MODEL_URL`: the OpenAI-compatible base URL (required for `openai`, e.g.
//!   `http://127.0.0.1:8000/v1`); for the others an endpoint override.
//! - `AGENTBUS_MODEL_KEY`: the API key (`openai`, `anthropic`; `ANTHROPIC_API_KEY` and
//!   `OPENAI_API_KEY` are read too). Bedrock uses the AWS credential chain.
//! - `AGENTBUS_MODEL_PRICE`: `INPUT,OUTPUT` in USD per million tokens, for cost accounting.
//! - `AGENTBUS_MODEL_TIMEOUT`: seconds per call (default 60).

pub mod anthropic;
pub mod bedrock;
pub mod openai;

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One question to a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub system: String,
    pub prompt: String,
    pub tools: Vec<ToolSpec>,
    /// Make the model call this tool (a structured answer).
    pub force_tool: Option<String>,
    pub max_tokens: u32,
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

/// A tool call the model made.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// The model's answer.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Reply {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

/// Tokens a model used (and their cost, when the model is priced).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub calls: u64,
    /// USD, when `AGENTBUS_MODEL_PRICE` says what tokens cost.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cost_usd: Option<f64>,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.calls += other.calls;
        self.cost_usd = match (self.cost_usd, other.cost_usd) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }
}

/// Why a model gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model configuration: {0}")]
    Config(String),
    #[error("the model endpoint answered {status}: {body}")]
    Http { status: u16, body: String },
    #[error("the model endpoint could not be reached: {0}")]
    Transport(String),
    #[error("no answer from the model in {0:?}")]
    Timeout(Duration),
    #[error("the model's answer does not parse: {0}")]
    Malformed(String),
    #[error("the model did not call {0} as asked")]
    NoStructuredAnswer(String),
}

impl ModelError {
    /// Worth another try: throttling, a server error, a lost connection, a timeout.
    pub fn retryable(&self) -> bool {
        match self {
            ModelError::Http { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            ModelError::Transport(_) | ModelError::Timeout(_) => true,
            _ => false,
        }
    }
}

/// One provider's wire format.
#[async_trait]
pub trait Provider: Send + Sync {
    /// `openai:gpt-4o-mini`, `bedrock:...`: what the run records.
    fn describe(&self) -> String;
    async fn send(&self, req: &ChatRequest, timeout: Duration) -> Result<Reply, ModelError>;
}

/// A configured model: a provider with timeouts, retries and accounting.
pub struct Model {
    provider: Box<dyn Provider>,
    timeout: Duration,
    retries: u32,
    /// USD per million input and output tokens.
    price: Option<(f64, f64)>,
    usage: Mutex<Usage>,
}

/// Reads one variable, treating empty as unset.
fn var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

impl Model {
    pub fn new(
        provider: Box<dyn Provider>,
        timeout: Duration,
        retries: u32,
        price: Option<(f64, f64)>,
    ) -> Model {
        Model {
            provider,
            timeout,
            retries,
            price,
            usage: Mutex::default(),
        }
    }

    /// The model `AGENTBUS_MODEL` names, or none.
    pub async fn from_env() -> Result<Option<Model>, ModelError> {
        Model::configured(var).await
    }

    /// The model the variables `get` reads name (see the module's documentation).
    pub async fn configured(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Model>, ModelError> {
        let Some(spec) = get("AGENTBUS_MODEL") else {
            return Ok(None);
        };
        let (kind, name) = spec.split_once(':').ok_or_else(|| {
            ModelError::Config(format!(
                "AGENTBUS_MODEL {spec:?}: use bedrock:MODEL_ID, openai:MODEL or anthropic:MODEL"
            ))
        })?;
        let url = get("AGENTBUS_MODEL_URL");
        let provider: Box<dyn Provider> = match kind {
            "openai" => Box::new(openai::OpenAi::new(
                url.ok_or_else(|| ModelError::Config("openai:MODEL needs AGENTBUS_MODEL_URL (the endpoint's base URL, e.g. http://127.0.0.1:8000/v1)".into()))?,
                name,
                get("AGENTBUS_MODEL_KEY").or_else(|| get("OPENAI_API_KEY")),
            )?),
            "anthropic" => Box::new(anthropic::Anthropic::new(
                url.unwrap_or_else(|| "https://api.anthropic.com".into()),
                name,
                get("AGENTBUS_MODEL_KEY")
                    .or_else(|| get("ANTHROPIC_API_KEY"))
                    .ok_or_else(|| ModelError::Config("anthropic:MODEL needs ANTHROPIC_API_KEY (or AGENTBUS_MODEL_KEY)".into()))?,
            )?),
            "bedrock" => Box::new(bedrock::Bedrock::from_env(name, url).await),
            other => {
                return Err(ModelError::Config(format!(
                    "AGENTBUS_MODEL provider {other:?}: use bedrock, openai or anthropic"
                )));
            }
        };
        let timeout = match get("AGENTBUS_MODEL_TIMEOUT") {
            Some(t) => Duration::from_secs(t.parse().map_err(|_| {
                ModelError::Config(format!(
                    "AGENTBUS_MODEL_TIMEOUT {t:?} is not a number of seconds"
                ))
            })?),
            None => Duration::from_secs(60),
        };
        let price = match get("AGENTBUS_MODEL_PRICE") {
            Some(p) => {
                let parts: Vec<Option<f64>> = p.split(',').map(|x| x.trim().parse().ok()).collect();
                match parts.as_slice() {
                    [Some(i), Some(o)] => Some((*i, *o)),
                    _ => {
                        return Err(ModelError::Config(format!(
                            "AGENTBUS_MODEL_PRICE {p:?}: use INPUT,OUTPUT in USD per million tokens"
                        )));
                    }
                }
            }
            None => None,
        };
        Ok(Some(Model::new(provider, timeout, 3, price)))
    }

    pub fn describe(&self) -> String {
        self.provider.describe()
    }

    /// Everything this model used so far.
    pub fn usage(&self) -> Usage {
        self.usage.lock().map(|u| *u).unwrap_or_default()
    }

    /// One question, with the timeout and the retries (exponential backoff from 0.5 s).
    pub async fn chat(&self, req: &ChatRequest) -> Result<Reply, ModelError> {
        let mut attempt = 0;
        loop {
            let r = match tokio::time::timeout(self.timeout, self.provider.send(req, self.timeout))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(ModelError::Timeout(self.timeout)),
            };
            match r {
                Ok(mut reply) => {
                    reply.usage.calls = 1;
                    reply.usage.cost_usd = self.price.map(|(i, o)| {
                        (reply.usage.input_tokens as f64 * i + reply.usage.output_tokens as f64 * o)
                            / 1e6
                    });
                    if let Ok(mut u) = self.usage.lock() {
                        u.add(&reply.usage);
                    }
                    return Ok(reply);
                }
                Err(e) if e.retryable() && attempt < self.retries => {
                    tracing::warn!("model {}: {e}; trying again", self.describe());
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A structured answer: the model must call `name` with arguments fitting `schema`.
    pub async fn structured(
        &self,
        system: &str,
        prompt: &str,
        name: &str,
        description: &str,
        schema: Value,
    ) -> Result<(Value, Usage), ModelError> {
        let req = ChatRequest {
            system: system.to_string(),
            prompt: prompt.to_string(),
            tools: vec![ToolSpec {
                name: name.to_string(),
                description: description.to_string(),
                input_schema: schema,
            }],
            force_tool: Some(name.to_string()),
            max_tokens: 1024,
        };
        let reply = self.chat(&req).await?;
        let call = reply
            .tool_calls
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ModelError::NoStructuredAnswer(name.to_string()))?;
        Ok((call.arguments, reply.usage))
    }
}

/// An HTTP client with the call's timeout.
fn http() -> Result<reqwest::Client, ModelError> {
    reqwest::Client::builder()
        .build()
        .map_err(|e| ModelError::Config(format!("HTTP client: {e}")))
}

/// POSTs JSON and reads JSON, turning HTTP errors into [`ModelError::Http`].
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: &Value,
    timeout: Duration,
) -> Result<Value, ModelError> {
    let mut req = client
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap_or_default());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            ModelError::Timeout(timeout)
        } else {
            ModelError::Transport(e.to_string())
        }
    })?;
    let status = resp.status().as_u16();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ModelError::Transport(e.to_string()))?;
    if !(200..300).contains(&status) {
        let body: String = String::from_utf8_lossy(&bytes).chars().take(500).collect();
        return Err(ModelError::Http { status, body });
    }
    serde_json::from_slice(&bytes).map_err(|e| ModelError::Malformed(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests;
