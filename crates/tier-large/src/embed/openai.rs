//! Any OpenAI-compatible embeddings endpoint (`POST {base}/embeddings`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{EmbedError, Embedder, vector_of};

const TIMEOUT: Duration = Duration::from_secs(60);

pub struct OpenAi {
    client: reqwest::Client,
    url: String,
    model: String,
    key: Option<String>,
    dimensions: Option<usize>,
}

impl OpenAi {
    /// `dimensions`: asked of the endpoint when given (models that can shorten vectors);
    /// otherwise learned from the first answer ([`OpenAi::probe`]).
    pub fn new(
        base_url: String,
        model: &str,
        key: Option<String>,
        dimensions: Option<usize>,
    ) -> Result<Self, EmbedError> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| EmbedError::Config(format!("HTTP client: {e}")))?;
        Ok(OpenAi {
            client,
            url: format!("{}/embeddings", base_url.trim_end_matches('/')),
            model: model.to_string(),
            key,
            dimensions,
        })
    }

    /// Learns the dimensions from one embedding when they were not configured.
    pub async fn probe(mut self) -> Result<Self, EmbedError> {
        if self.dimensions.is_none() {
            let v = self.call(&["dimensions".to_string()]).await?;
            self.dimensions = v.first().map(Vec::len);
        }
        Ok(self)
    }

    async fn call(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut body = json!({"model": self.model, "input": texts, "encoding_format": "float"});
        if let Some(d) = self.dimensions {
            body["dimensions"] = json!(d);
        }
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| EmbedError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| EmbedError::Transport(e.to_string()))?;
        if !(200..300).contains(&status) {
            let body = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            return Err(EmbedError::Http { status, body });
        }
        let answer: Value =
            serde_json::from_slice(&bytes).map_err(|e| EmbedError::Malformed(e.to_string()))?;
        let data = answer["data"]
            .as_array()
            .ok_or_else(|| EmbedError::Malformed("no data list".into()))?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for (pos, item) in data.iter().enumerate() {
            let index = item["index"].as_u64().map_or(pos, |i| i as usize);
            let slot = out
                .get_mut(index)
                .ok_or_else(|| EmbedError::Malformed(format!("index {index} out of range")))?;
            *slot = Some(vector_of(&item["embedding"])?);
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| EmbedError::Malformed("fewer embeddings than texts".into())))
            .collect()
    }
}

#[async_trait]
impl Embedder for OpenAi {
    fn provider(&self) -> &'static str {
        "openai"
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn dimensions(&self) -> usize {
        self.dimensions.unwrap_or(0)
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let vectors = self.call(texts).await?;
        if let Some(d) = self.dimensions
            && let Some(v) = vectors.iter().find(|v| v.len() != d)
        {
            return Err(EmbedError::Malformed(format!(
                "{} dimensions, expected {d}",
                v.len()
            )));
        }
        Ok(vectors)
    }
}
