//! Amazon Bedrock: Titan Text Embeddings V2 (`amazon.titan-embed-text-v2:0`), one text per
//! `InvokeModel` call, normalized by the model.

use async_trait::async_trait;
use aws_smithy_types::Blob;
use serde_json::{Value, json};

use super::{EmbedError, Embedder, vector_of};

/// The sizes Titan Text Embeddings V2 produces.
pub const TITAN_V2_DIMENSIONS: [usize; 3] = [256, 512, 1024];

pub struct Titan {
    client: aws_sdk_bedrockruntime::Client,
    model: String,
    dimensions: usize,
}

impl Titan {
    pub fn new(
        client: aws_sdk_bedrockruntime::Client,
        model: &str,
        dimensions: Option<usize>,
    ) -> Result<Self, EmbedError> {
        let dimensions = dimensions.unwrap_or(1024);
        if !TITAN_V2_DIMENSIONS.contains(&dimensions) {
            return Err(EmbedError::Config(format!(
                "Titan Text Embeddings V2 makes 256, 512 or 1024 dimensions, not {dimensions}"
            )));
        }
        Ok(Titan {
            client,
            model: model.to_string(),
            dimensions,
        })
    }
}

#[async_trait]
impl Embedder for Titan {
    fn provider(&self) -> &'static str {
        "bedrock"
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn dimensions(&self) -> usize {
        self.dimensions
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            let body = json!({"inputText": text, "dimensions": self.dimensions, "normalize": true});
            let answer = self
                .client
                .invoke_model()
                .model_id(&self.model)
                .content_type("application/json")
                .accept("application/json")
                .body(Blob::new(body.to_string()))
                .send()
                .await
                .map_err(|e| EmbedError::Transport(tier_xs::aws::error_text(&e)))?;
            let answer: Value = serde_json::from_slice(answer.body().as_ref())
                .map_err(|e| EmbedError::Malformed(e.to_string()))?;
            let vector = vector_of(&answer["embedding"])?;
            if vector.len() != self.dimensions {
                return Err(EmbedError::Malformed(format!(
                    "{} dimensions, expected {}",
                    vector.len(),
                    self.dimensions
                )));
            }
            out.push(vector);
        }
        Ok(out)
    }
}
