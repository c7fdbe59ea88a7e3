//! A sentence-transformers BERT encoder (all-MiniLM-L6-v2) run from its files in safe Rust:
//! the weights from `model.safetensors`, the tokenizer from `tokenizer.json`, the encoder's
//! forward pass, mean pooling over the tokens and L2 normalization — what
//! sentence-transformers computes, without a tensor library: its matrix products are
//! ndarray's (`matrixmultiply`'s kernels). One text is one sequence (no padding), so attention
//! needs no mask.
//!
//! Checked in the tests against an implementation nobody here wrote (the int8 ONNX export of
//! the same model run by ONNX Runtime, and Hugging Face's tokenizer).

use std::collections::HashMap;
use std::path::Path;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

use super::EmbedError;
use super::wordpiece::WordPiece;

/// Tokens per text, `[CLS]` and `[SEP]` included (sentence-transformers' `max_seq_length`);
/// the rest of a longer text is not embedded.
pub const MAX_TOKENS: usize = 256;
/// LayerNorm's epsilon in BERT.
const EPS: f32 = 1e-12;

/// A linear layer: `weight` is `[out][in]`, as PyTorch stores it.
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Block {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// The encoder with its weights in memory (~90 MB for MiniLM-L6).
pub struct Bert {
    tokenizer: WordPiece,
    words: Vec<f32>,
    positions: Vec<f32>,
    token_type: Vec<f32>,
    embeddings_norm: Norm,
    blocks: Vec<Block>,
    hidden: usize,
    heads: usize,
    max_positions: usize,
}

/// The tensors of a safetensors file, as f32.
struct Tensors {
    map: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Tensors {
    fn read(path: &Path) -> Result<Self, EmbedError> {
        let bytes = std::fs::read(path)
            .map_err(|e| EmbedError::Config(format!("cannot read {}: {e}", path.display())))?;
        let bad = |why: &str| EmbedError::Config(format!("{}: {why}", path.display()));
        let header_len = bytes
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("not a safetensors file"))?;
        let header = bytes
            .get(8..8 + header_len)
            .ok_or_else(|| bad("truncated header"))?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| bad(&format!("header: {e}")))?;
        let data = &bytes[8 + header_len..];
        let mut map = HashMap::new();
        for (name, info) in header {
            if name == "__metadata__" || info["dtype"] != "F32" {
                continue;
            }
            let shape: Vec<usize> = info["shape"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_u64()).map(|d| d as usize))
                .ok_or_else(|| bad("a tensor without a shape"))?
                .collect();
            let offsets = info["data_offsets"]
                .as_array()
                .filter(|o| o.len() == 2)
                .ok_or_else(|| bad("a tensor without offsets"))?;
            let (from, to) = (
                offsets[0].as_u64().unwrap_or(u64::MAX) as usize,
                offsets[1].as_u64().unwrap_or(0) as usize,
            );
            let raw = data
                .get(from..to)
                .filter(|r| r.len() == shape.iter().product::<usize>() * 4)
                .ok_or_else(|| bad(&format!("{name}: offsets do not fit its shape")))?;
            let values = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            map.insert(name, (shape, values));
        }
        Ok(Tensors { map })
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        match self.map.remove(name) {
            Some((s, v)) if s == shape => Ok(v),
            Some((s, _)) => Err(EmbedError::Config(format!(
                "model tensor {name} has shape {s:?}, expected {shape:?}"
            ))),
            None => Err(EmbedError::Config(format!(
                "model tensor {name} is missing"
            ))),
        }
    }

    fn linear(&mut self, name: &str, inputs: usize, outputs: usize) -> Result<Linear, EmbedError> {
        Ok(Linear {
            weight: self.take(&format!("{name}.weight"), &[outputs, inputs])?,
            bias: self.take(&format!("{name}.bias"), &[outputs])?,
            inputs,
            outputs,
        })
    }

    fn norm(&mut self, name: &str, size: usize) -> Result<Norm, EmbedError> {
        Ok(Norm {
            weight: self.take(&format!("{name}.weight"), &[size])?,
            bias: self.take(&format!("{name}.bias"), &[size])?,
        })
    }
}

impl Bert {
    /// Loads a sentence-transformers model directory: `config.json` (optional; MiniLM-L6's
    /// shape otherwise), `model.safetensors`, `tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let config: serde_json::Value = match std::fs::read(dir.join("config.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| EmbedError::Config(format!("config.json: {e}")))?,
            Err(_) => serde_json::json!({}),
        };
        let get =
            |k: &str, default: usize| config[k].as_u64().map(|v| v as usize).unwrap_or(default);
        let (hidden, heads, layers, intermediate, vocab, max_positions) = (
            get("hidden_size", 384),
            get("num_attention_heads", 12),
            get("num_hidden_layers", 6),
            get("intermediate_size", 1536),
            get("vocab_size", 30522),
            get("max_position_embeddings", 512),
        );
        if heads == 0 || hidden % heads != 0 {
            return Err(EmbedError::Config(format!(
                "hidden size {hidden} does not split into {heads} heads"
            )));
        }
        let tokenizer_text = std::fs::read_to_string(dir.join("tokenizer.json")).map_err(|e| {
            EmbedError::Config(format!(
                "cannot read {}: {e}",
                dir.join("tokenizer.json").display()
            ))
        })?;
        let tokenizer = WordPiece::from_tokenizer_json(&tokenizer_text)?;
        let mut t = Tensors::read(&dir.join("model.safetensors"))?;
        // Checkpoints saved from BertModel have no `bert.` prefix; those from a task head do.
        if t.map.keys().all(|k| k.starts_with("bert.")) {
            t.map = t
                .map
                .drain()
                .map(|(k, v)| (k.trim_start_matches("bert.").to_string(), v))
                .collect();
        }
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let p = format!("encoder.layer.{i}");
            blocks.push(Block {
                query: t.linear(&format!("{p}.attention.self.query"), hidden, hidden)?,
                key: t.linear(&format!("{p}.attention.self.key"), hidden, hidden)?,
                value: t.linear(&format!("{p}.attention.self.value"), hidden, hidden)?,
                attention_out: t.linear(&format!("{p}.attention.output.dense"), hidden, hidden)?,
                attention_norm: t.norm(&format!("{p}.attention.output.LayerNorm"), hidden)?,
                intermediate: t.linear(&format!("{p}.intermediate.dense"), hidden, intermediate)?,
                output: t.linear(&format!("{p}.output.dense"), intermediate, hidden)?,
                output_norm: t.norm(&format!("{p}.output.LayerNorm"), hidden)?,
            });
        }
        Ok(Bert {
            tokenizer,
            words: t.take("embeddings.word_embeddings.weight", &[vocab, hidden])?,
            positions: t.take(
                "embeddings.position_embeddings.weight",
                &[max_positions, hidden],
            )?,
            token_type: t
                .map
                .remove("embeddings.token_type_embeddings.weight")
                .map(|(_, v)| v)
                .filter(|v| v.len() >= hidden)
                .ok_or_else(|| EmbedError::Config("token type embeddings are missing".into()))?,
            embeddings_norm: t.norm("embeddings.LayerNorm", hidden)?,
            blocks,
            hidden,
            heads,
            max_positions,
        })
    }

    pub fn dimensions(&self) -> usize {
        self.hidden
    }

    /// The token ids of `text` as the model sees them.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode(text, MAX_TOKENS.min(self.max_positions))
    }

    /// The sentence embedding of `text`: unit length, `dimensions()` values.
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let ids = self.tokens(text);
        let (n, h) = (ids.len(), self.hidden);
        let vocab = self.words.len() / h;
        let mut x = vec![0f32; n * h];
        for (i, &id) in ids.iter().enumerate() {
            let id = (id as usize).min(vocab - 1);
            let row = &mut x[i * h..(i + 1) * h];
            let word = &self.words[id * h..(id + 1) * h];
            let pos = &self.positions[i * h..(i + 1) * h];
            for j in 0..h {
                row[j] = word[j] + pos[j] + self.token_type[j];
            }
        }
        layer_norm(&mut x, &self.embeddings_norm, h);
        for block in &self.blocks {
            x = self.block(block, x, n);
        }
        // Mean over the tokens, then unit length.
        let mut pooled = vec![0f32; h];
        for row in x.chunks_exact(h) {
            for (p, v) in pooled.iter_mut().zip(row) {
                *p += v;
            }
        }
        let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        pooled.iter_mut().for_each(|v| *v /= norm);
        pooled
    }

    fn block(&self, b: &Block, x: Vec<f32>, n: usize) -> Vec<f32> {
        let h = self.hidden;
        let d = h / self.heads;
        let q = linear(&x, &b.query, n);
        let k = linear(&x, &b.key, n);
        let v = linear(&x, &b.value, n);
        let scale = 1.0 / (d as f32).sqrt();
        let mut context = vec![0f32; n * h];
        let mut scores = vec![0f32; n * n];
        for head in 0..self.heads {
            // This head's columns of q, k and v: rows `h` apart.
            let off = head * d;
            let (qh, kh, vh) = (
                view(&q[off..], n, d, h),
                view(&k[off..], n, d, h),
                view(&v[off..], n, d, h),
            );
            general_mat_mul(
                scale,
                &qh,
                &kh.t(),
                0.0,
                &mut view_mut(&mut scores, n, n, n),
            );
            for row in scores.chunks_exact_mut(n) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
                let mut sum = 0.0;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                row.iter_mut().for_each(|s| *s /= sum);
            }
            general_mat_mul(
                1.0,
                &view(&scores, n, n, n),
                &vh,
                0.0,
                &mut view_mut(&mut context[off..], n, d, h),
            );
        }
        let mut attended = linear(&context, &b.attention_out, n);
        attended.iter_mut().zip(&x).for_each(|(a, r)| *a += r);
        layer_norm(&mut attended, &b.attention_norm, h);
        let mut inner = linear(&attended, &b.intermediate, n);
        inner.iter_mut().for_each(|v| *v = gelu(*v));
        let mut out = linear(&inner, &b.output, n);
        out.iter_mut().zip(&attended).for_each(|(o, r)| *o += r);
        layer_norm(&mut out, &b.output_norm, h);
        out
    }
}

/// `x · Wᵀ + b` for `n` rows.
fn linear(x: &[f32], l: &Linear, n: usize) -> Vec<f32> {
    // Every row starts as the bias.
    let mut y: Vec<f32> = l.bias.iter().copied().cycle().take(n * l.outputs).collect();
    let w = view(&l.weight, l.outputs, l.inputs, l.inputs);
    general_mat_mul(
        1.0,
        &view(x, n, l.inputs, l.inputs),
        &w.t(),
        1.0,
        &mut view_mut(&mut y, n, l.outputs, l.outputs),
    );
    y
}

/// `data` as a `rows × cols` matrix whose rows start `stride` apart. The products above run
/// in `matrixmultiply`'s kernels (through ndarray's safe interface), which the build
/// optimizes even in debug builds, so that this crate need not be.
fn view(data: &[f32], rows: usize, cols: usize, stride: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((rows, cols).strides((stride, 1)), data)
        .expect("a matrix of the model's own shapes fits its data")
}

fn view_mut(data: &mut [f32], rows: usize, cols: usize, stride: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((rows, cols).strides((stride, 1)), data)
        .expect("a matrix of the model's own shapes fits its data")
}

/// A dot product in eight lanes, which the compiler vectorizes.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

fn layer_norm(x: &mut [f32], norm: &Norm, h: usize) {
    for row in x.chunks_exact_mut(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + EPS).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

/// BERT's GELU, `x·Φ(x)` with the error function.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// The error function by Abramowitz and Stegun 7.1.26 (absolute error ≤ 1.5e-7: below f32's
/// precision where it matters).
fn erf(x: f32) -> f32 {
    let x = f64::from(x);
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    (if x >= 0.0 { y } else { -y }) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_function_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!((erf(x) - want).abs() < 3e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn dot_products_cover_the_remainder() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..19).map(|i| (i * i) as f32).sum::<f32>());
    }
}
