//! Deterministic tiny (or full-size, for benchmarks) random-weight checkpoints with a
//! byte-level BPE tokenizer and a chat template, written in the same on-disk formats
//! real models use (safetensors directory, GGUF file). Used by the tests, the
//! benchmark and `scripts/reference_logits.py`; nothing is downloaded.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use crate::error::{EngineError, Result};
use crate::model::Architecture;

/// Shape of a generated checkpoint.
#[derive(Debug, Clone)]
pub struct TinyModelConfig {
    /// Model family.
    pub arch: Architecture,
    /// Hidden size.
    pub hidden: usize,
    /// Number of decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (GQA).
    pub kv_heads: usize,
    /// Head dimension (Llama requires `hidden / heads`).
    pub head_dim: usize,
    /// MLP intermediate size.
    pub intermediate: usize,
    /// Embedding rows; `None`: exactly the tokenizer's vocabulary.
    pub vocab_size: Option<usize>,
    /// Context window.
    pub max_position: usize,
    /// PRNG seed for the weights.
    pub seed: u64,
}

impl TinyModelConfig {
    /// A tiny model for tests: hidden 64, 2 layers, 4 heads (2 KV heads), head_dim 16.
    pub fn tiny(arch: Architecture) -> Self {
        Self {
            arch,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            intermediate: 128,
            vocab_size: None,
            max_position: 512,
            seed: 42,
        }
    }

    /// A tiny Whisper for tests and the devnet's stand-in: hidden 64, 1 layer each side,
    /// 2 heads (a small decoder keeps token-by-token decoding quick in debug builds).
    pub fn tiny_whisper() -> Self {
        Self {
            layers: 1,
            heads: 2,
            ..Self::tiny(Architecture::Whisper)
        }
    }

    /// The shape of Qwen3-0.6B (hidden 1024, 28 layers, 16/8 heads, head_dim 128,
    /// intermediate 3072, vocab 151936); `layers` can be reduced for quick runs.
    pub fn qwen3_0_6b(layers: usize) -> Self {
        Self {
            arch: Architecture::Qwen3,
            hidden: 1024,
            layers,
            heads: 16,
            kv_heads: 8,
            head_dim: 128,
            intermediate: 3072,
            vocab_size: Some(151_936),
            max_position: 4096,
            seed: 7,
        }
    }
}

/// SplitMix64: a tiny, portable PRNG so the weights are identical everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1) with 24-bit resolution (exactly representable in f32).
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) / (1u64 << 23) as f32 - 1.0
    }
}

/// Special tokens of the generated tokenizer, per family.
fn specials(arch: Architecture) -> Vec<(String, bool)> {
    let fixed: Vec<(&str, bool)> = match arch {
        Architecture::Qwen3 => vec![
            ("<|endoftext|>", true),
            ("<|im_start|>", true),
            ("<|im_end|>", true),
            ("<think>", false),
            ("</think>", false),
        ],
        Architecture::Llama => vec![
            ("<|begin_of_text|>", true),
            ("<|end_of_text|>", true),
            ("<|start_header_id|>", true),
            ("<|end_header_id|>", true),
            ("<|eot_id|>", true),
        ],
        Architecture::Whisper => vec![
            ("<|endoftext|>", true),
            ("<|startoftranscript|>", true),
            ("<|en|>", true),
            ("<|de|>", true),
            ("<|ru|>", true),
            ("<|translate|>", true),
            ("<|transcribe|>", true),
            ("<|startoflm|>", true),
            ("<|startofprev|>", true),
            ("<|nospeech|>", true),
            ("<|notimestamps|>", true),
        ],
    };
    let mut out: Vec<(String, bool)> = fixed.into_iter().map(|(t, s)| (t.to_owned(), s)).collect();
    if arch == Architecture::Whisper {
        // Timestamps <|0.00|> … <|30.00|>, one per 20 ms.
        out.extend((0..=1500).map(|i| (format!("<|{:.2}|>", i as f64 * 0.02), true)));
    }
    out
}

/// GPT-2 byte-to-unicode table used by byte-level BPE.
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        table[*b as usize] = char::from_u32(c).unwrap_or('?');
    }
    table
}

const MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("a", "n"),
    ("Ġ", "a"),
    ("o", "n"),
    ("r", "e"),
    ("Ġt", "he"),
    ("e", "n"),
    ("Ġ", "s"),
    ("o", "r"),
    ("Ġ", "w"),
    ("e", "s"),
    ("Ġ", "o"),
    ("l", "l"),
    ("Ġ", "h"),
    ("i", "s"),
    ("Ġ", "b"),
    ("a", "t"),
];

/// The tokenizer vocabulary size (bytes + merges + specials) for `arch`.
pub fn tokenizer_vocab_size(arch: Architecture) -> usize {
    256 + MERGES.len() + specials(arch).len()
}

/// Builds the `tokenizer.json` document (byte-level BPE like Qwen and Llama 3).
pub fn tokenizer_json(arch: Architecture) -> Value {
    let table = byte_chars();
    let mut vocab = serde_json::Map::new();
    for (i, c) in table.iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    let mut merges = Vec::new();
    for (i, (a, b)) in MERGES.iter().enumerate() {
        vocab.insert(format!("{a}{b}"), json!(256 + i));
        merges.push(json!(format!("{a} {b}")));
    }
    let base = 256 + MERGES.len();
    let added: Vec<Value> = specials(arch)
        .iter()
        .enumerate()
        .map(|(i, (t, special))| {
            json!({"id": base + i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": special})
        })
        .collect();
    let post = match arch {
        Architecture::Llama => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>",
                                "ids": [base], "tokens": ["<|begin_of_text|>"]}}
        }),
        Architecture::Qwen3 | Architecture::Whisper => Value::Null,
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                          "trim_offsets": true, "use_regex": true},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true,
                    "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

/// The official Qwen3 chat template (thinking switch, tool calls, reasoning content).
pub const QWEN3_CHAT_TEMPLATE: &str = include_str!("../tests/data/qwen3_chat_template.jinja");

/// A Llama 3 style chat template.
pub const LLAMA3_CHAT_TEMPLATE: &str = "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

fn tokenizer_config(arch: Architecture) -> Value {
    match arch {
        Architecture::Qwen3 => json!({
            "bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "model_max_length": 131072, "tokenizer_class": "Qwen2Tokenizer",
            "chat_template": QWEN3_CHAT_TEMPLATE,
        }),
        Architecture::Llama => json!({
            "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
            "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": LLAMA3_CHAT_TEMPLATE,
        }),
        Architecture::Whisper => json!({
            "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
            "model_max_length": 1024, "tokenizer_class": "WhisperTokenizer",
        }),
    }
}

fn vocab(cfg: &TinyModelConfig) -> usize {
    cfg.vocab_size
        .unwrap_or_else(|| tokenizer_vocab_size(cfg.arch))
}

/// The HF `config.json` for `cfg`.
pub fn config_json(cfg: &TinyModelConfig) -> Value {
    let base = 256 + MERGES.len();
    match cfg.arch {
        Architecture::Qwen3 => json!({
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
            "vocab_size": vocab(cfg), "hidden_size": cfg.hidden,
            "intermediate_size": cfg.intermediate, "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.kv_heads,
            "head_dim": cfg.head_dim, "attention_bias": false, "attention_dropout": 0.0,
            "hidden_act": "silu", "max_position_embeddings": cfg.max_position,
            "max_window_layers": cfg.layers, "sliding_window": null,
            "use_sliding_window": false, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
            "rope_scaling": null, "tie_word_embeddings": false, "torch_dtype": "float32",
            "use_cache": true, "bos_token_id": base, "eos_token_id": base + 2,
        }),
        Architecture::Llama => json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": vocab(cfg), "hidden_size": cfg.hidden,
            "intermediate_size": cfg.intermediate, "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.kv_heads,
            "hidden_act": "silu", "max_position_embeddings": cfg.max_position,
            "rms_norm_eps": 1e-5, "rope_theta": 500_000.0, "rope_scaling": null,
            "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": false,
            "torch_dtype": "float32", "use_cache": true,
            "bos_token_id": base, "eos_token_id": base + 4,
        }),
        Architecture::Whisper => json!({
            "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
            "num_mel_bins": 80, "max_source_positions": 1500, "d_model": cfg.hidden,
            "encoder_attention_heads": cfg.heads, "encoder_layers": cfg.layers,
            "decoder_attention_heads": cfg.heads, "decoder_layers": cfg.layers,
            "encoder_ffn_dim": 4 * cfg.hidden, "decoder_ffn_dim": 4 * cfg.hidden,
            "vocab_size": vocab(cfg), "max_target_positions": 448, "suppress_tokens": [],
            "bos_token_id": base, "eos_token_id": base, "pad_token_id": base,
            "decoder_start_token_id": base + 1,
        }),
    }
}

/// Generates the weights (HF tensor names) deterministically from `cfg.seed` (text
/// models; Whisper's come from [`write_whisper_model`]).
pub fn weights(cfg: &TinyModelConfig) -> Result<Vec<(String, Tensor)>> {
    if cfg.arch == Architecture::Whisper {
        return Err(EngineError::InvalidModel(
            "Whisper weights come from write_whisper_model".into(),
        ));
    }
    let mut rng = SplitMix(cfg.seed);
    let dev = Device::Cpu;
    let mut out = Vec::new();
    let mut mat = |name: String, shape: &[usize], scale: f32, offset: f32| -> Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| offset + scale * rng.uniform()).collect();
        out.push((name, Tensor::from_vec(data, shape, &dev)?));
        Ok(())
    };
    let (h, v, i) = (cfg.hidden, vocab(cfg), cfg.intermediate);
    let (q, kv) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
    let s = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    mat("model.embed_tokens.weight".into(), &[v, h], 1.0, 0.0)?;
    for l in 0..cfg.layers {
        let p = format!("model.layers.{l}");
        mat(format!("{p}.self_attn.q_proj.weight"), &[q, h], s(h), 0.0)?;
        mat(format!("{p}.self_attn.k_proj.weight"), &[kv, h], s(h), 0.0)?;
        mat(format!("{p}.self_attn.v_proj.weight"), &[kv, h], s(h), 0.0)?;
        mat(format!("{p}.self_attn.o_proj.weight"), &[h, q], s(q), 0.0)?;
        if cfg.arch == Architecture::Qwen3 {
            mat(
                format!("{p}.self_attn.q_norm.weight"),
                &[cfg.head_dim],
                0.2,
                1.0,
            )?;
            mat(
                format!("{p}.self_attn.k_norm.weight"),
                &[cfg.head_dim],
                0.2,
                1.0,
            )?;
        }
        mat(format!("{p}.input_layernorm.weight"), &[h], 0.2, 1.0)?;
        mat(
            format!("{p}.post_attention_layernorm.weight"),
            &[h],
            0.2,
            1.0,
        )?;
        mat(format!("{p}.mlp.gate_proj.weight"), &[i, h], s(h), 0.0)?;
        mat(format!("{p}.mlp.up_proj.weight"), &[i, h], s(h), 0.0)?;
        mat(format!("{p}.mlp.down_proj.weight"), &[h, i], s(i), 0.0)?;
    }
    mat("model.norm.weight".into(), &[h], 0.2, 1.0)?;
    mat("lm_head.weight".into(), &[v, h], s(h), 0.0)?;
    Ok(out)
}

fn write(path: &Path, v: &Value) -> Result<()> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| EngineError::InvalidModel(e.to_string()))?;
    fs::write(path, text).map_err(|e| EngineError::io(path, e))
}

/// Writes `tokenizer.json`, `tokenizer_config.json` and `generation_config.json`.
pub fn write_tokenizer_files(dir: &Path, arch: Architecture) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    write(&dir.join("tokenizer.json"), &tokenizer_json(arch))?;
    write(&dir.join("tokenizer_config.json"), &tokenizer_config(arch))?;
    write(
        &dir.join("generation_config.json"),
        &json!({"do_sample": true, "temperature": 0.6, "top_p": 0.95, "top_k": 20}),
    )
}

/// Writes a complete safetensors model directory (config, weights, tokenizer files).
pub fn write_safetensors_model(dir: &Path, cfg: &TinyModelConfig) -> Result<()> {
    write_tokenizer_files(dir, cfg.arch)?;
    write(&dir.join("config.json"), &config_json(cfg))?;
    let w: HashMap<String, Tensor> = weights(cfg)?.into_iter().collect();
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&w, &path)?;
    Ok(())
}

/// A 16-bit PCM WAV file of `samples` (mono) at `rate`, for tests and examples.
pub fn wav_bytes(samples: &[f32], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * i16::MAX as f32) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a Whisper model directory (config, random weights with the names candle's
/// Whisper loads, a byte-level tokenizer with Whisper's special and timestamp tokens): a
/// stand-in for a real checkpoint, which exercises decoding, not recognition.
pub fn write_whisper_model(dir: &Path, cfg: &TinyModelConfig) -> Result<()> {
    let cfg = TinyModelConfig {
        arch: Architecture::Whisper,
        ..cfg.clone()
    };
    write_tokenizer_files(dir, Architecture::Whisper)?;
    let config = config_json(&cfg);
    write(&dir.join("config.json"), &config)?;
    let wcfg: candle_transformers::models::whisper::Config =
        serde_json::from_value(config).map_err(|e| EngineError::InvalidModel(e.to_string()))?;
    // candle's loader names the tensors and their shapes; the values come from SplitMix
    // (identical on every machine, so that a reference computed elsewhere stays valid).
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    candle_transformers::models::whisper::model::Whisper::load(&vb, wcfg.clone())?;
    let mut shapes: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .map_err(|_| EngineError::InvalidModel("varmap lock poisoned".into()))?
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    shapes.sort();
    let mut rng = SplitMix(cfg.seed);
    let mut tensors = HashMap::new();
    for (name, shape) in shapes {
        let fan_in: usize = shape.iter().skip(1).product();
        let (scale, offset) = if name.contains("layer_norm") && name.ends_with("weight") {
            (0.2, 1.0)
        } else if name.ends_with("bias") || name.ends_with("embed_positions.weight") {
            (0.1, 0.0)
        } else if name.ends_with("embed_tokens.weight") {
            (1.0, 0.0)
        } else {
            (1.0 / (fan_in.max(1) as f32).sqrt(), 0.0)
        };
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| offset + scale * rng.uniform()).collect();
        tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
    }
    // Checkpoints carry the encoder's sinusoidal positions (candle computes them itself).
    tensors.insert(
        "model.encoder.embed_positions.weight".into(),
        sinusoids(wcfg.max_source_positions, wcfg.d_model)?,
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

/// Whisper's sinusoidal position table (`length` × `channels`: sines, then cosines).
fn sinusoids(length: usize, channels: usize) -> Result<Tensor> {
    let half = channels / 2;
    let increment = (10_000f64).ln() / (half.saturating_sub(1).max(1) as f64);
    let mut data = Vec::with_capacity(length * channels);
    for t in 0..length {
        let angle = |i: usize| t as f64 * (-increment * i as f64).exp();
        data.extend((0..half).map(|i| angle(i).sin() as f32));
        data.extend((0..half).map(|i| angle(i).cos() as f32));
    }
    Ok(Tensor::from_vec(data, (length, channels), &Device::Cpu)?)
}

/// [`write_whisper_model`] with its weights in one GGUF file instead of safetensors (2-D
/// weights whose rows fit Q8_0 blocks quantized, the rest F32), as candle's quantized
/// Whisper reads them; returns the GGUF's path.
pub fn write_whisper_gguf(dir: &Path, cfg: &TinyModelConfig) -> Result<PathBuf> {
    write_whisper_model(dir, cfg)?;
    let safetensors = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&safetensors, &Device::Cpu)?;
    let mut quantized = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let qtype = match t.dims() {
            [_, cols] if cols % 32 == 0 => GgmlDType::Q8_0,
            _ => GgmlDType::F32,
        };
        quantized.push((name, QTensor::quantize(&t, qtype)?));
    }
    let path = dir.join("model-q8_0.gguf");
    let mut f = fs::File::create(&path).map_err(|e| EngineError::io(&path, e))?;
    let t_refs: Vec<(&str, &QTensor)> = quantized.iter().map(|(a, b)| (a.as_str(), b)).collect();
    gguf_file::write(&mut f, &[], &t_refs)?;
    fs::remove_file(&safetensors).map_err(|e| EngineError::io(&safetensors, e))?;
    Ok(path)
}

/// Writes a sentence-transformers embedding model directory as Qwen3-Embedding ships one:
/// the base model's weights without the `model.` prefix and without an LM head, and
/// `1_Pooling/config.json` asking for last-token pooling.
pub fn write_embedding_model(dir: &Path, cfg: &TinyModelConfig) -> Result<()> {
    write_tokenizer_files(dir, cfg.arch)?;
    write(&dir.join("config.json"), &config_json(cfg))?;
    let w: HashMap<String, Tensor> = weights(cfg)?
        .into_iter()
        .filter(|(name, _)| !name.starts_with("lm_head"))
        .map(|(name, t)| (name.strip_prefix("model.").unwrap_or(&name).to_owned(), t))
        .collect();
    candle_core::safetensors::save(&w, dir.join("model.safetensors"))?;
    let pooling = dir.join("1_Pooling");
    std::fs::create_dir_all(&pooling).map_err(|e| EngineError::io(&pooling, e))?;
    write(
        &pooling.join("config.json"),
        &serde_json::json!({"word_embedding_dimension": cfg.hidden, "pooling_mode_lasttoken": true,
                            "pooling_mode_mean_tokens": false, "include_prompt": true}),
    )?;
    write(
        &dir.join("modules.json"),
        &serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]),
    )?;
    Ok(())
}

/// llama.cpp's q/k row permutation for Llama (interleaved RoPE in GGUF).
fn permute_qk(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    Ok(t.reshape((n_head, 2, rows / n_head / 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))?)
}

/// Writes `model-<qtype>.gguf` plus the tokenizer files into `dir` and returns the
/// GGUF path. 2-D weights use `qtype` (their row length must be a multiple of its
/// block size: 32 for Q8_0, 256 for K-quants); norms stay F32.
pub fn write_gguf_model(dir: &Path, cfg: &TinyModelConfig, qtype: GgmlDType) -> Result<PathBuf> {
    write_tokenizer_files(dir, cfg.arch)?;
    let arch = cfg.arch.as_str();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in weights(cfg)? {
        let gname = name
            .replace("model.embed_tokens", "token_embd")
            .replace("model.layers.", "blk.")
            .replace("self_attn.q_proj", "attn_q")
            .replace("self_attn.k_proj", "attn_k")
            .replace("self_attn.v_proj", "attn_v")
            .replace("self_attn.o_proj", "attn_output")
            .replace("self_attn.q_norm", "attn_q_norm")
            .replace("self_attn.k_norm", "attn_k_norm")
            .replace("input_layernorm", "attn_norm")
            .replace("post_attention_layernorm", "ffn_norm")
            .replace("mlp.gate_proj", "ffn_gate")
            .replace("mlp.up_proj", "ffn_up")
            .replace("mlp.down_proj", "ffn_down")
            .replace("model.norm", "output_norm")
            .replace("lm_head", "output");
        let t = match (
            cfg.arch,
            gname.contains("attn_q."),
            gname.contains("attn_k."),
        ) {
            (Architecture::Llama, true, _) => permute_qk(&t, cfg.heads)?,
            (Architecture::Llama, _, true) => permute_qk(&t, cfg.kv_heads)?,
            _ => t,
        };
        let q = if t.rank() == 1 {
            QTensor::quantize(&t, GgmlDType::F32)?
        } else {
            QTensor::quantize(&t.to_dtype(DType::F32)?, qtype)?
        };
        tensors.push((gname, q));
    }
    let base = (256 + MERGES.len()) as u32;
    // (Whisper never gets here: `weights` refuses it.)
    let eos = match cfg.arch {
        Architecture::Qwen3 | Architecture::Whisper => base + 2,
        Architecture::Llama => base + 4,
    };
    let template = match cfg.arch {
        Architecture::Qwen3 | Architecture::Whisper => QWEN3_CHAT_TEMPLATE,
        Architecture::Llama => LLAMA3_CHAT_TEMPLATE,
    };
    let u = |x: usize| gguf_file::Value::U32(x as u32);
    let k = |s: &str| format!("{arch}.{s}");
    let mut md: Vec<(String, gguf_file::Value)> = vec![
        (
            "general.architecture".into(),
            gguf_file::Value::String(arch.into()),
        ),
        (k("attention.head_count"), u(cfg.heads)),
        (k("attention.head_count_kv"), u(cfg.kv_heads)),
        (k("attention.key_length"), u(cfg.head_dim)),
        (k("attention.value_length"), u(cfg.head_dim)),
        (k("block_count"), u(cfg.layers)),
        (k("embedding_length"), u(cfg.hidden)),
        (k("feed_forward_length"), u(cfg.intermediate)),
        (k("context_length"), u(cfg.max_position)),
        (k("rope.dimension_count"), u(cfg.head_dim)),
        (
            "tokenizer.ggml.eos_token_id".into(),
            gguf_file::Value::U32(eos),
        ),
        (
            "tokenizer.chat_template".into(),
            gguf_file::Value::String(template.into()),
        ),
    ];
    let (eps, theta) = match cfg.arch {
        Architecture::Qwen3 | Architecture::Whisper => (1e-6f32, 1_000_000f32),
        Architecture::Llama => (1e-5, 500_000.0),
    };
    md.push((
        k("attention.layer_norm_rms_epsilon"),
        gguf_file::Value::F32(eps),
    ));
    md.push((k("rope.freq_base"), gguf_file::Value::F32(theta)));
    let path = dir.join(format!("model-{qtype:?}.gguf"));
    let mut f = fs::File::create(&path).map_err(|e| EngineError::io(&path, e))?;
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(a, b)| (a.as_str(), b)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(a, b)| (a.as_str(), b)).collect();
    gguf_file::write(&mut f, &md_refs, &t_refs)?;
    Ok(path)
}
