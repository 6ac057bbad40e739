//! Model loading (safetensors directories and GGUF files) and per-worker inference
//! sessions with their own KV cache.

use std::collections::BTreeSet;
use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_llama, quantized_qwen3, qwen3, whisper};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{EngineError, Result};

/// Model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Qwen3 dense models (0.6B … 32B).
    Qwen3,
    /// Llama 2/3 family.
    Llama,
    /// OpenAI's Whisper (speech to text).
    Whisper,
}

impl Architecture {
    /// Lower-case name as used in `config.json` `model_type` and GGUF metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qwen3 => "qwen3",
            Self::Llama => "llama",
            Self::Whisper => "whisper",
        }
    }
}

/// Floating-point type of unquantized (safetensors) weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDType {
    /// 32-bit float (CPU default).
    F32,
    /// bfloat16 (CUDA default).
    BF16,
    /// IEEE half precision.
    F16,
}

impl WeightDType {
    pub(crate) fn to_candle(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::BF16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }
}

/// The shareable (read-only) weights of a model.
#[derive(Clone)]
pub(crate) enum Weights {
    Qwen3(Box<qwen3::ModelForCausalLM>),
    Llama {
        model: Arc<llama::Llama>,
        fresh_cache: Box<llama::Cache>,
    },
    QuantQwen3(Box<quantized_qwen3::ModelWeights>),
    QuantLlama(Box<quantized_llama::ModelWeights>),
    /// A Qwen3 embedding model (sentence-transformers, last-token pooling, e.g.
    /// Qwen3-Embedding): the base model's final hidden states, no LM head. Kept with an
    /// empty KV cache; each embedding runs on a clone.
    Qwen3Embed(Box<qwen3::Model>),
    /// A Whisper speech model with its tokenizer and mel filters.
    Speech(Box<crate::whisper::SpeechModel>),
}

/// One inference context: a model instance plus its KV cache. Each engine worker
/// thread owns one; weights are shared between sessions (tensors are refcounted).
/// Cloning snapshots the KV cache (candle appends by concatenation, so later steps
/// never modify a snapshot's tensors).
#[derive(Clone)]
pub(crate) struct Session {
    weights: Weights,
    device: Device,
}

impl Session {
    /// Drops the KV cache so the next `forward` starts a new sequence at offset 0.
    pub(crate) fn reset(&mut self) {
        match &mut self.weights {
            Weights::Qwen3(m) => m.clear_kv_cache(),
            Weights::Llama { .. } => {}
            Weights::QuantQwen3(m) => m.clear_kv_cache(),
            Weights::QuantLlama(m) => m.clear_kv_cache(),
            Weights::Qwen3Embed(_) | Weights::Speech(_) => {}
        }
    }

    /// Whether this is an embedding model (it embeds, it does not generate).
    pub(crate) fn embeds(&self) -> bool {
        matches!(self.weights, Weights::Qwen3Embed(_))
    }

    /// The embedding of `tokens` (one sequence): the final hidden state of its last token,
    /// as f32, not normalised. Runs on a fresh copy of the model (an empty KV cache).
    pub(crate) fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let Weights::Qwen3Embed(model) = &self.weights else {
            return Err(EngineError::InvalidModel(
                "this model generates text; it has no embeddings".into(),
            ));
        };
        if tokens.is_empty() {
            return Err(EngineError::InvalidModel("nothing to embed".into()));
        }
        let mut model = (**model).clone();
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let hidden = model.forward(&input, 0)?;
        let last = hidden.narrow(1, tokens.len() - 1, 1)?;
        Ok(last.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    /// Feeds `tokens` at position `offset` (appending to the KV cache) and returns the
    /// logits of the last position as f32.
    pub(crate) fn forward(
        &mut self,
        tokens: &[u32],
        offset: usize,
        llama_cache: &mut Option<llama::Cache>,
    ) -> Result<Vec<f32>> {
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let logits = match &mut self.weights {
            Weights::Qwen3(m) => m.forward(&input, offset)?,
            Weights::Llama { model, fresh_cache } => {
                if offset == 0 || llama_cache.is_none() {
                    *llama_cache = Some((**fresh_cache).clone());
                }
                let cache = llama_cache
                    .as_mut()
                    .ok_or_else(|| EngineError::InvalidModel("llama cache missing".into()))?;
                model.forward(&input, offset, cache)?
            }
            Weights::QuantQwen3(m) => m.forward(&input, offset)?,
            Weights::QuantLlama(m) => m.forward(&input, offset)?,
            Weights::Qwen3Embed(_) | Weights::Speech(_) => {
                return Err(EngineError::InvalidModel(
                    "an embedding or speech model does not generate text".into(),
                ))
            }
        };
        Ok(logits
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?)
    }
}

/// A saved KV-cache state after prefilling `tokens`, with the logits of the last
/// prompt position.
struct Snapshot {
    tokens: Vec<u32>,
    session: Session,
    llama_cache: Option<llama::Cache>,
    logits: Vec<f32>,
    last_used: u64,
}

/// A per-sequence context: the session plus the Llama cache (Llama keeps its KV cache
/// outside the model), and a small prefix cache of prompt KV states.
pub(crate) struct SequenceState {
    pub(crate) session: Session,
    llama_cache: Option<llama::Cache>,
    prefix: Vec<Snapshot>,
    /// Total prompt tokens the prefix cache may hold (0 disables it).
    prefix_budget: usize,
    clock: u64,
}

impl SequenceState {
    pub(crate) fn new(session: Session, prefix_budget: usize) -> Self {
        // Snapshots clone the model state. candle's CPU quantized Qwen3 keeps a
        // preallocated raw KV buffer per layer, which would make each snapshot a copy
        // of hundreds of MB, so the prefix cache is off for it.
        let cheap_snapshots = !matches!(session.weights, Weights::QuantQwen3(_));
        Self {
            session,
            llama_cache: None,
            prefix: Vec::new(),
            prefix_budget: if cheap_snapshots { prefix_budget } else { 0 },
            clock: 0,
        }
    }

    /// Starts a new sequence.
    pub(crate) fn reset(&mut self) {
        self.session.reset();
        self.llama_cache = None;
    }

    /// See [`Session::forward`].
    pub(crate) fn forward(&mut self, tokens: &[u32], offset: usize) -> Result<Vec<f32>> {
        self.session.forward(tokens, offset, &mut self.llama_cache)
    }

    /// Starts a new sequence with `prompt`, reusing the longest cached prompt prefix.
    /// Returns the last position's logits and how many prompt tokens came from the
    /// prefix cache.
    pub(crate) fn prefill(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize)> {
        self.clock += 1;
        let best = self
            .prefix
            .iter_mut()
            .filter(|s| s.tokens.len() <= prompt.len() && prompt.starts_with(&s.tokens))
            .max_by_key(|s| s.tokens.len());
        let (logits, cached) = match best {
            Some(snap) => {
                snap.last_used = self.clock;
                let n = snap.tokens.len();
                self.session = snap.session.clone();
                self.llama_cache = snap.llama_cache.clone();
                let logits = if n == prompt.len() {
                    snap.logits.clone()
                } else {
                    self.forward(&prompt[n..], n)?
                };
                (logits, n)
            }
            None => {
                self.reset();
                (self.forward(prompt, 0)?, 0)
            }
        };
        if cached < prompt.len() && prompt.len() <= self.prefix_budget {
            self.prefix.push(Snapshot {
                tokens: prompt.to_vec(),
                session: self.session.clone(),
                llama_cache: self.llama_cache.clone(),
                logits: logits.clone(),
                last_used: self.clock,
            });
            while self.prefix.iter().map(|s| s.tokens.len()).sum::<usize>() > self.prefix_budget {
                let oldest = self
                    .prefix
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(i, _)| i);
                match oldest {
                    Some(i) => {
                        self.prefix.swap_remove(i);
                    }
                    None => break,
                }
            }
        }
        Ok((logits, cached))
    }
}

/// Everything loaded from disk for one model.
pub(crate) struct LoadedModel {
    pub(crate) weights: Weights,
    pub(crate) device: Device,
    pub(crate) arch: Architecture,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) chat_template: Option<String>,
    pub(crate) bos_token: Option<String>,
    pub(crate) eos_token: Option<String>,
    pub(crate) eos_token_ids: BTreeSet<u32>,
    pub(crate) max_context: usize,
    pub(crate) generation_defaults: GenerationDefaults,
    /// Human-readable weight format, e.g. `safetensors/f32` or `gguf/Q8_0`.
    pub(crate) format: String,
}

impl LoadedModel {
    /// The speech model, if this is Whisper.
    pub(crate) fn speech(&self) -> Option<&crate::whisper::SpeechModel> {
        match &self.weights {
            Weights::Speech(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn session(&self) -> Session {
        Session {
            weights: self.weights.clone(),
            device: self.device.clone(),
        }
    }
}

/// Sampling defaults from `generation_config.json` (vLLM applies these when a request
/// leaves the parameter out).
#[derive(Debug, Clone, Default)]
pub(crate) struct GenerationDefaults {
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) top_k: Option<i64>,
}

/// Options for [`load_model`].
#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    pub(crate) device: Device,
    pub(crate) dtype: Option<WeightDType>,
    pub(crate) tokenizer: Option<PathBuf>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| EngineError::InvalidModel(format!("{}: {e}", path.display())))
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Loads a model from a local directory (safetensors) or a `.gguf` file.
pub(crate) fn load_model(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let meta = fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
    if meta.is_dir() {
        // A directory holding a single .gguf and no safetensors is a GGUF model too.
        let has_safetensors = list_ext(path, "safetensors")?.next().is_some();
        if !has_safetensors {
            let ggufs: Vec<PathBuf> = list_ext(path, "gguf")?.collect();
            if ggufs.len() == 1 {
                if model_type(path).as_deref() == Some("whisper") {
                    return load_whisper_gguf(path, &ggufs[0], opts);
                }
                return load_gguf(&ggufs[0], opts);
            }
        }
        load_safetensors_dir(path, opts)
    } else {
        load_gguf(path, opts)
    }
}

fn list_ext<'a>(dir: &Path, ext: &'a str) -> Result<impl Iterator<Item = PathBuf> + 'a> {
    let rd = fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some(ext))
        .collect();
    v.sort();
    Ok(v.into_iter())
}

struct TokenizerFiles {
    tokenizer: Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn load_tokenizer_files(dir: &Path, tokenizer_override: Option<&Path>) -> Result<TokenizerFiles> {
    let tok_path = match tokenizer_override {
        Some(p) if p.is_dir() => p.join("tokenizer.json"),
        Some(p) => p.to_path_buf(),
        None => dir.join("tokenizer.json"),
    };
    if !tok_path.exists() {
        return Err(EngineError::InvalidModel(format!(
            "tokenizer not found at {} (pass --tokenizer PATH to name one)",
            tok_path.display()
        )));
    }
    let tokenizer = Tokenizer::from_file(&tok_path)
        .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
    let tok_dir = tok_path.parent().unwrap_or(dir);
    let tcfg = read_json_opt(&tok_dir.join("tokenizer_config.json"))?;
    let mut chat_template = None;
    if let Some(cfg) = &tcfg {
        chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default" (or the first one).
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        };
    }
    let jinja = tok_dir.join("chat_template.jinja");
    if chat_template.is_none() && jinja.exists() {
        chat_template = Some(fs::read_to_string(&jinja).map_err(|e| EngineError::io(&jinja, e))?);
    }
    Ok(TokenizerFiles {
        tokenizer,
        chat_template,
        bos_token: token_string(tcfg.as_ref().and_then(|c| c.get("bos_token"))),
        eos_token: token_string(tcfg.as_ref().and_then(|c| c.get("eos_token"))),
    })
}

fn collect_ids(v: Option<&Value>, out: &mut BTreeSet<u32>) {
    match v {
        Some(Value::Number(n)) => {
            if let Some(id) = n.as_u64().and_then(|x| u32::try_from(x).ok()) {
                out.insert(id);
            }
        }
        Some(Value::Array(a)) => {
            for x in a {
                collect_ids(Some(x), out);
            }
        }
        _ => {}
    }
}

fn generation_defaults(gen: Option<&Value>) -> GenerationDefaults {
    let Some(g) = gen else {
        return GenerationDefaults::default();
    };
    let do_sample = g.get("do_sample").and_then(|v| v.as_bool()).unwrap_or(true);
    if !do_sample {
        return GenerationDefaults {
            temperature: Some(0.0),
            ..Default::default()
        };
    }
    GenerationDefaults {
        temperature: g
            .get("temperature")
            .and_then(|v| v.as_f64())
            .map(|x| x as f32),
        top_p: g.get("top_p").and_then(|v| v.as_f64()).map(|x| x as f32),
        top_k: g.get("top_k").and_then(|v| v.as_i64()),
    }
}

fn finish_eos(tf: &TokenizerFiles, ids: &mut BTreeSet<u32>, arch: Architecture) {
    if let Some(eos) = &tf.eos_token {
        if let Some(id) = tf.tokenizer.token_to_id(eos) {
            ids.insert(id);
        }
    }
    // Chat models end turns with these even when the configs name another EOS.
    let extra: &[&str] = match arch {
        Architecture::Qwen3 => &["<|im_end|>", "<|endoftext|>"],
        Architecture::Llama => &["<|eot_id|>", "<|end_of_text|>", "</s>"],
        Architecture::Whisper => &["<|endoftext|>"],
    };
    for t in extra {
        if let Some(id) = tf.tokenizer.token_to_id(t) {
            ids.insert(id);
        }
    }
}

/// Whether `dir` holds a sentence-transformers embedding model (`1_Pooling/config.json`)
/// with last-token pooling, as Qwen3-Embedding is; other poolings are refused by name.
fn embedding_pooling(dir: &Path) -> Result<bool> {
    let Some(pooling) = read_json_opt(&dir.join("1_Pooling").join("config.json"))? else {
        return Ok(false);
    };
    if pooling["pooling_mode_lasttoken"].as_bool() == Some(true) {
        return Ok(true);
    }
    let mode = pooling
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, v)| k.starts_with("pooling_mode_") && v.as_bool() == Some(true))
        })
        .map_or("none", |(k, _)| k.as_str());
    Err(EngineError::InvalidModel(format!(
        "{}: embedding pooling {mode} is not supported (last-token pooling, as Qwen3-Embedding, is)",
        dir.display()
    )))
}

fn default_device_dtype(device: &Device, dtype: Option<WeightDType>) -> DType {
    match dtype {
        Some(d) => d.to_candle(),
        None if device.is_cpu() => DType::F32,
        None => DType::BF16,
    }
}

fn load_safetensors_dir(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let config = read_json(&dir.join("config.json"))?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let arch = match model_type.as_str() {
        "qwen3" => Architecture::Qwen3,
        "llama" => Architecture::Llama,
        "whisper" => Architecture::Whisper,
        other => return Err(EngineError::UnsupportedArchitecture(other.to_string())),
    };
    let files: Vec<PathBuf> = list_ext(dir, "safetensors")?.collect();
    if files.is_empty() {
        return Err(EngineError::InvalidModel(format!(
            "no *.safetensors files in {}",
            dir.display()
        )));
    }
    let dtype = default_device_dtype(&opts.device, opts.dtype);
    let tf = load_tokenizer_files(dir, opts.tokenizer.as_deref())?;
    let gen = read_json_opt(&dir.join("generation_config.json"))?;
    let mut eos_ids = BTreeSet::new();
    collect_ids(config.get("eos_token_id"), &mut eos_ids);
    collect_ids(
        gen.as_ref().and_then(|g| g.get("eos_token_id")),
        &mut eos_ids,
    );
    finish_eos(&tf, &mut eos_ids, arch);

    // SAFETY: the files are memory-mapped read-only; modifying them while the engine
    // runs is undefined behaviour, as with every mmap-based loader.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, &opts.device)? };
    let bad_cfg = |e: serde_json::Error| EngineError::InvalidModel(format!("config.json: {e}"));
    let (weights, max_context) = match arch {
        Architecture::Qwen3 => {
            let cfg: qwen3::Config = serde_json::from_value(config.clone()).map_err(bad_cfg)?;
            if embedding_pooling(dir)? {
                // Embedding checkpoints are saved as the base model: without `model.`.
                let vb = if vb.contains_tensor("model.embed_tokens.weight") {
                    vb
                } else {
                    vb.rename_f(|name| name.strip_prefix("model.").unwrap_or(name).to_owned())
                };
                let model = qwen3::Model::new(&cfg, vb)?;
                (
                    Weights::Qwen3Embed(Box::new(model)),
                    cfg.max_position_embeddings,
                )
            } else {
                let model = qwen3::ModelForCausalLM::new(&cfg, vb)?;
                (Weights::Qwen3(Box::new(model)), cfg.max_position_embeddings)
            }
        }
        Architecture::Whisper => {
            let cfg: whisper::Config = serde_json::from_value(config.clone()).map_err(bad_cfg)?;
            // candle's Whisper runs in f32.
            let vb = vb.set_dtype(whisper::DTYPE);
            let max = cfg.max_target_positions;
            let model = crate::whisper::WhisperWeights::full(&vb, cfg)?;
            let speech =
                crate::whisper::SpeechModel::new(model, tf.tokenizer.clone(), opts.device.clone())?;
            (Weights::Speech(Box::new(speech)), max)
        }
        Architecture::Llama => {
            let lcfg: llama::LlamaConfig =
                serde_json::from_value(config.clone()).map_err(bad_cfg)?;
            let cfg = lcfg.into_config(false);
            // candle's Llama::load unwraps per-layer errors: contain a panic on a bad file.
            let model = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                llama::Llama::load(vb, &cfg)
            }))
            .map_err(|_| {
                EngineError::InvalidModel(format!(
                    "{}: llama weights are missing or have the wrong shape",
                    dir.display()
                ))
            })??;
            let cache = llama::Cache::new(true, dtype, &cfg, &opts.device)?;
            (
                Weights::Llama {
                    model: Arc::new(model),
                    fresh_cache: Box::new(cache),
                },
                cfg.max_position_embeddings,
            )
        }
    };
    Ok(LoadedModel {
        weights,
        device: opts.device.clone(),
        arch,
        generation_defaults: generation_defaults(gen.as_ref()),
        chat_template: tf.chat_template.clone(),
        bos_token: tf.bos_token.clone(),
        eos_token: tf.eos_token.clone(),
        tokenizer: tf.tokenizer,
        eos_token_ids: eos_ids,
        max_context,
        format: format!("safetensors/{dtype:?}").to_lowercase(),
    })
}

/// `model_type` of the `config.json` in `dir`, if there is one.
fn model_type(dir: &Path) -> Option<String> {
    read_json_opt(&dir.join("config.json"))
        .ok()
        .flatten()
        .and_then(|c| {
            c.get("model_type")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
}

/// A quantized Whisper: `config.json` and `tokenizer.json` beside one `.gguf` holding the
/// weights under Hugging Face's names (as candle's Whisper conversions are).
fn load_whisper_gguf(dir: &Path, gguf: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let config = read_json(&dir.join("config.json"))?;
    let cfg: whisper::Config = serde_json::from_value(config)
        .map_err(|e| EngineError::InvalidModel(format!("config.json: {e}")))?;
    let tf = load_tokenizer_files(dir, opts.tokenizer.as_deref())?;
    let mut eos_ids = BTreeSet::new();
    finish_eos(&tf, &mut eos_ids, Architecture::Whisper);
    let vb = candle_transformers::quantized_var_builder::VarBuilder::from_gguf(gguf, &opts.device)?;
    let max_context = cfg.max_target_positions;
    let model = crate::whisper::WhisperWeights::quantized(&vb, cfg, &opts.device)?;
    let speech =
        crate::whisper::SpeechModel::new(model, tf.tokenizer.clone(), opts.device.clone())?;
    Ok(LoadedModel {
        weights: Weights::Speech(Box::new(speech)),
        device: opts.device.clone(),
        arch: Architecture::Whisper,
        generation_defaults: GenerationDefaults::default(),
        chat_template: None,
        bos_token: tf.bos_token.clone(),
        eos_token: tf.eos_token.clone(),
        tokenizer: tf.tokenizer,
        eos_token_ids: eos_ids,
        max_context,
        format: "gguf/whisper".into(),
    })
}

fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let file = fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut content = gguf_file::Content::read(&mut reader).map_err(|e| {
        EngineError::InvalidModel(format!("{}: not a GGUF file: {e}", path.display()))
    })?;
    // candle's quantized Qwen3 builds its RoPE tables in `general.dtype`, defaulting
    // to F16, which cannot represent positions above 2048 exactly. Ask for F32.
    content
        .metadata
        .entry("general.dtype".to_string())
        .or_insert(gguf_file::Value::U32(0));
    let md = &content.metadata;
    let arch_name = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let arch = match arch_name.as_str() {
        "qwen3" => Architecture::Qwen3,
        "llama" => Architecture::Llama,
        other => return Err(EngineError::UnsupportedArchitecture(other.to_string())),
    };
    let ctx_len = md
        .get(&format!("{arch_name}.context_length"))
        .and_then(|v| v.to_u32().ok())
        .map(|x| x as usize);
    let gguf_template = md
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    let mut eos_ids = BTreeSet::new();
    if let Some(id) = md
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok())
    {
        eos_ids.insert(id);
    }
    // The most common quantization among the weight matrices, for display.
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for info in content.tensor_infos.values() {
        if info.shape.rank() == 2 {
            *kinds.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
        }
    }
    let qtype = kinds
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(k, _)| k)
        .unwrap_or_default();

    let dir = path.parent().unwrap_or(Path::new("."));
    let tf = load_tokenizer_files(dir, opts.tokenizer.as_deref())?;
    finish_eos(&tf, &mut eos_ids, arch);
    let gen = read_json_opt(&dir.join("generation_config.json"))?;
    collect_ids(
        gen.as_ref().and_then(|g| g.get("eos_token_id")),
        &mut eos_ids,
    );

    let (weights, max_context) = match arch {
        Architecture::Qwen3 => {
            let m = quantized_qwen3::ModelWeights::from_gguf(content, &mut reader, &opts.device)?;
            (Weights::QuantQwen3(Box::new(m)), ctx_len.unwrap_or(32768))
        }
        Architecture::Llama => {
            let m = quantized_llama::ModelWeights::from_gguf(content, &mut reader, &opts.device)?;
            // candle's quantized Llama precomputes RoPE for MAX_SEQ_LEN positions only.
            let max = ctx_len
                .unwrap_or(quantized_llama::MAX_SEQ_LEN)
                .min(quantized_llama::MAX_SEQ_LEN);
            (Weights::QuantLlama(Box::new(m)), max)
        }
        Architecture::Whisper => return Err(EngineError::InvalidModel(
            "a Whisper GGUF loads from its directory (config.json and tokenizer.json beside it)"
                .into(),
        )),
    };
    Ok(LoadedModel {
        weights,
        device: opts.device.clone(),
        arch,
        generation_defaults: generation_defaults(gen.as_ref()),
        chat_template: tf.chat_template.clone().or(gguf_template),
        bos_token: tf.bos_token.clone(),
        eos_token: tf.eos_token.clone(),
        tokenizer: tf.tokenizer,
        eos_token_ids: eos_ids,
        max_context,
        format: format!("gguf/{qtype}"),
    })
}
