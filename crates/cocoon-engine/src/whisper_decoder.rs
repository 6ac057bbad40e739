//! Whisper's text decoder with a key/value cache: each step runs only the new tokens
//! through the layers, attending to the cached keys and values of the earlier ones and to
//! the audio's cross-attention keys and values, computed once per window. (candle's
//! decoder caches only the cross-attention and runs the whole sequence again at every
//! step.) The arithmetic is the same as candle's and transformers': pre-norm blocks of
//! self-attention, cross-attention and a GELU MLP, a final norm, and logits from the token
//! embedding. Weights come from safetensors or, dequantized where needed, from a GGUF.

use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_nn::LayerNorm;
use candle_transformers::models::whisper::Config;
use candle_transformers::{quantized_nn, quantized_var_builder};

use crate::error::Result;

type Linear = Box<dyn Module + Send + Sync>;

/// Where the decoder's weights come from.
pub(crate) enum Source<'a> {
    /// Full precision (safetensors), prefix `model.decoder`.
    Full(candle_nn::VarBuilder<'a>),
    /// A GGUF, prefix `model.decoder`.
    Quantized(quantized_var_builder::VarBuilder),
}

impl Source<'_> {
    fn pp(&self, name: &str) -> Self {
        match self {
            Source::Full(vb) => Source::Full(vb.pp(name)),
            Source::Quantized(vb) => Source::Quantized(vb.pp(name)),
        }
    }

    fn linear(&self, inputs: usize, outputs: usize, bias: bool) -> Result<Linear> {
        Ok(match self {
            Source::Full(vb) => {
                let weight = vb.get((outputs, inputs), "weight")?;
                let bias = bias.then(|| vb.get(outputs, "bias")).transpose()?;
                Box::new(candle_nn::Linear::new(weight, bias))
            }
            Source::Quantized(vb) => {
                Box::new(quantized_nn::linear_b(inputs, outputs, bias, vb.clone())?)
            }
        })
    }

    fn layer_norm(&self, size: usize) -> Result<LayerNorm> {
        Ok(match self {
            Source::Full(vb) => {
                LayerNorm::new(vb.get(size, "weight")?, vb.get(size, "bias")?, 1e-5)
            }
            Source::Quantized(vb) => quantized_nn::layer_norm(size, 1e-5, vb.clone())?,
        })
    }

    fn tensor(&self, shape: (usize, usize), name: &str, device: &Device) -> Result<Tensor> {
        Ok(match self {
            Source::Full(vb) => vb.get(shape, name)?,
            Source::Quantized(vb) => vb.get(shape, name)?.dequantize(device)?,
        })
    }
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
}

impl Attention {
    fn load(d: usize, src: &Source) -> Result<Self> {
        Ok(Attention {
            query: src.pp("q_proj").linear(d, d, true)?,
            key: src.pp("k_proj").linear(d, d, false)?,
            value: src.pp("v_proj").linear(d, d, true)?,
            out: src.pp("out_proj").linear(d, d, true)?,
        })
    }
}

struct Block {
    attn: Attention,
    attn_ln: LayerNorm,
    cross: Attention,
    cross_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    mlp_ln: LayerNorm,
}

/// The decoder's weights (shared by every transcription).
pub(crate) struct TextDecoder {
    embedding: Tensor,
    positions: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
    heads: usize,
}

/// One window's decoding state: the cross-attention keys and values of its audio, and the
/// self-attention keys and values of the tokens so far, per layer.
pub(crate) struct Cache {
    cross: Vec<(Tensor, Tensor)>,
    past: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl TextDecoder {
    /// Loads the decoder of `config` from `src` (prefix `model.decoder` applied here).
    pub(crate) fn load(src: Source, config: &Config, device: &Device) -> Result<Self> {
        let src = src.pp("model.decoder");
        let d = config.d_model;
        let mlp = d * 4;
        let blocks = (0..config.decoder_layers)
            .map(|i| {
                let b = src.pp(&format!("layers.{i}"));
                Ok(Block {
                    attn: Attention::load(d, &b.pp("self_attn"))?,
                    attn_ln: b.pp("self_attn_layer_norm").layer_norm(d)?,
                    cross: Attention::load(d, &b.pp("encoder_attn"))?,
                    cross_ln: b.pp("encoder_attn_layer_norm").layer_norm(d)?,
                    fc1: b.pp("fc1").linear(d, mlp, true)?,
                    fc2: b.pp("fc2").linear(mlp, d, true)?,
                    mlp_ln: b.pp("final_layer_norm").layer_norm(d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TextDecoder {
            embedding: src.tensor((config.vocab_size, d), "embed_tokens.weight", device)?,
            positions: src.tensor(
                (config.max_target_positions, d),
                "embed_positions.weight",
                device,
            )?,
            blocks,
            ln: src.pp("layer_norm").layer_norm(d)?,
            heads: config.decoder_attention_heads,
        })
    }

    /// A fresh cache for the audio `features` (the encoder's output, `(1, frames, d)`).
    pub(crate) fn cache(&self, features: &Tensor) -> Result<Cache> {
        let cross = self
            .blocks
            .iter()
            .map(|b| {
                Ok((
                    self.heads_of(&b.cross.key.forward(features)?)?,
                    self.heads_of(&b.cross.value.forward(features)?)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Cache {
            past: vec![None; self.blocks.len()],
            cross,
            len: 0,
        })
    }

    /// `(1, n, d)` → `(1, heads, n, d / heads)`.
    fn heads_of(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        x.reshape((b, n, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn attend(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let head = q.dim(D::Minus1)?;
        let scores = (q.matmul(&k.t()?)? / (head as f64).sqrt())?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let w = candle_nn::ops::softmax_last_dim(&scores)?;
        // (1, heads, n, head) → (1, n, d)
        w.matmul(v)?.transpose(1, 2)?.flatten_from(2)
    }

    /// Runs `tokens` (the ones after those already in `cache`) through the decoder and
    /// returns their final hidden states, `(n, d)`; the cache grows by them.
    pub(crate) fn forward(&self, tokens: &[u32], cache: &mut Cache) -> Result<Tensor> {
        let device = self.embedding.device();
        let n = tokens.len();
        let start = cache.len;
        let ids = Tensor::new(tokens, device)?;
        let mut x = self
            .embedding
            .index_select(&ids, 0)?
            .add(&self.positions.narrow(0, start, n)?)?
            .unsqueeze(0)?;
        // Token i (of the new ones) sees the cached tokens and new tokens up to itself.
        let mask = if n > 1 {
            let m: Vec<f32> = (0..n)
                .flat_map(|i| {
                    (0..start + n).map(move |j| {
                        if j > start + i {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            Some(Tensor::from_vec(m, (n, start + n), device)?)
        } else {
            None
        };
        for (i, b) in self.blocks.iter().enumerate() {
            let h = b.attn_ln.forward(&x)?;
            let q = self.heads_of(&b.attn.query.forward(&h)?)?;
            let k = self.heads_of(&b.attn.key.forward(&h)?)?;
            let v = self.heads_of(&b.attn.value.forward(&h)?)?;
            let (k, v) = match cache.past[i].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            let a = Self::attend(&q, &k, &v, mask.as_ref())?;
            cache.past[i] = Some((k, v));
            x = (x + b.attn.out.forward(&a)?)?;

            let h = b.cross_ln.forward(&x)?;
            let q = self.heads_of(&b.cross.query.forward(&h)?)?;
            let (ck, cv) = &cache.cross[i];
            let a = Self::attend(&q, ck, cv, None)?;
            x = (x + b.cross.out.forward(&a)?)?;

            let h = b.mlp_ln.forward(&x)?;
            // candle's Whisper GELU (the tanh form), so that both paths agree.
            let h = b.fc2.forward(&b.fc1.forward(&h)?.gelu()?)?;
            x = (x + h)?;
        }
        cache.len += n;
        Ok(self.ln.forward(&x)?.i(0)?)
    }

    /// The next-token logits of hidden states `(n, d)`: `(n, vocab)`, f32.
    pub(crate) fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(hidden.matmul(&self.embedding.t()?)?.to_dtype(DType::F32)?)
    }

    /// The logits after the last of `tokens`, as a vector.
    pub(crate) fn step(&self, tokens: &[u32], cache: &mut Cache) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(crate::error::EngineError::InvalidModel(
                "a decoder step without tokens".into(),
            ));
        }
        let hidden = self.forward(tokens, cache)?;
        let last = hidden.narrow(0, tokens.len() - 1, 1)?;
        Ok(self.logits(&last)?.i(0)?.to_vec1::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{write_whisper_model, TinyModelConfig};

    #[test]
    fn token_by_token_through_the_cache_equals_one_pass() {
        let dir = tempfile::tempdir().expect("tmp");
        write_whisper_model(dir.path(), &TinyModelConfig::tiny_whisper()).expect("fixture");
        let config: Config =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).expect("config"))
                .expect("parse");
        let device = Device::Cpu;
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                &[dir.path().join("model.safetensors")],
                DType::F32,
                &device,
            )
        }
        .expect("weights");
        let decoder = TextDecoder::load(Source::Full(vb), &config, &device).expect("decoder");
        let features = Tensor::randn(0f32, 1.0, (1, 30, config.d_model), &device).expect("audio");
        let tokens = [277u32, 278, 300, 40, 41, 42, 43];

        let mut cache = decoder.cache(&features).expect("cache");
        let hidden = decoder.forward(&tokens, &mut cache).expect("one pass");
        let all = decoder.logits(&hidden).expect("logits");

        let mut cache = decoder.cache(&features).expect("cache");
        let mut rows = vec![decoder.step(&tokens[..3], &mut cache).expect("prefix")];
        for t in &tokens[3..] {
            rows.push(decoder.step(&[*t], &mut cache).expect("step"));
        }
        for (row, position) in rows.iter().zip(2..tokens.len()) {
            let want = all.i(position).expect("row").to_vec1::<f32>().expect("vec");
            let diff = row
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-4, "position {position}: max diff {diff}");
        }
        assert!(decoder.step(&[], &mut cache).is_err(), "no tokens, no step");
    }
}
