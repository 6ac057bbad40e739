//! The engine: model + chat template + a bounded request queue served by worker
//! threads, answering OpenAI request bodies with JSON or SSE bytes.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use candle_core::Device;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::Instrument;

use crate::error::{ApiError, EngineError, Result};
use crate::generate::{generate, GenContext, GenOutcome, GenRequest, ThinkTokens};
use crate::hub::{self, HubOptions};
use crate::model::{
    load_model, Architecture, LoadOptions, LoadedModel, SequenceState, WeightDType,
};
use crate::openai::{
    parse_request, sse, sse_done, ChoiceResult, Endpoint, ParsedRequest, PromptInput,
    ResponseFormatter, Usage,
};
use crate::sampling::SamplingParams;
use crate::template::ChatTemplate;
use crate::tools::{Piece, ToolCallParser};
use crate::whisper::SpeechProbe;

/// Where to run the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when built with `--features cuda` and a GPU is present, else CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// The given CUDA device (needs `--features cuda`).
    Cuda(usize),
}

/// What to load and how to serve it.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    /// A local model directory (safetensors + `config.json` + `tokenizer.json`), a
    /// `.gguf` file (with `tokenizer.json` beside it or in `tokenizer`), or a Hugging
    /// Face id such as `Qwen/Qwen3-0.6B`.
    pub model: String,
    /// Name clients must send as `model`; default: `model` verbatim (as vLLM does).
    pub served_model_name: Option<String>,
    /// Explicit `tokenizer.json` (or a directory holding it); mainly for GGUF files.
    pub tokenizer: Option<PathBuf>,
    /// Hub revision for Hugging Face ids (default `main`).
    pub revision: Option<String>,
    /// Device selection.
    pub device: DeviceChoice,
    /// Weight dtype for safetensors models (default F32 on CPU, BF16 on CUDA).
    pub dtype: Option<WeightDType>,
    /// Number of sequences generated concurrently (one worker thread and KV cache
    /// each). Default 1: on CPU one sequence already uses every core for matmuls.
    pub workers: usize,
    /// Requests that may wait for a worker; beyond that requests get HTTP 429.
    pub queue_capacity: usize,
    /// Prompt tokens each worker keeps in its prefix cache (KV states of recent
    /// prompts, reused when a new prompt starts with one; reported as
    /// `usage.prompt_tokens_details.cached_tokens`). 0 disables it.
    pub prefix_cache_tokens: usize,
    /// Hugging Face download options.
    pub hub: HubOptions,
}

impl EngineSpec {
    /// A spec with defaults for `model`.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            served_model_name: None,
            tokenizer: None,
            revision: None,
            device: DeviceChoice::Auto,
            dtype: None,
            workers: 1,
            queue_capacity: 64,
            prefix_cache_tokens: 4096,
            hub: HubOptions {
                progress: true,
                ..Default::default()
            },
        }
    }
}

/// Facts about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Served model name.
    pub name: String,
    /// Model family.
    pub architecture: Architecture,
    /// Weight format, e.g. `safetensors/f32` or `gguf/Q8_0`.
    pub format: String,
    /// Context window in tokens.
    pub max_context: usize,
    /// Device in words (`cpu`, `cuda:0`).
    pub device: String,
}

/// A response to [`Engine::handle`].
pub enum EngineResponse {
    /// A complete JSON body (success or OpenAI error) with its HTTP status.
    Json {
        /// HTTP status code.
        status: u16,
        /// JSON bytes.
        body: Bytes,
    },
    /// A `text/event-stream` body (status 200): `data: {chunk}\n\n` frames ending
    /// with `data: [DONE]\n\n`.
    Stream(SseStream),
}

/// A stream of SSE frames.
pub type SseStream = Pin<Box<dyn Stream<Item = Bytes> + Send + 'static>>;

impl EngineResponse {
    fn json(status: u16, v: &Value) -> Self {
        Self::Json {
            status,
            body: Bytes::from(v.to_string()),
        }
    }

    fn error(e: &ApiError) -> Self {
        Self::json(e.status, &e.to_json())
    }

    /// HTTP status of this response.
    pub fn status(&self) -> u16 {
        match self {
            Self::Json { status, .. } => *status,
            Self::Stream(_) => 200,
        }
    }

    /// Collects the whole body (for tests and non-streaming callers).
    pub async fn into_bytes(self) -> Bytes {
        match self {
            Self::Json { body, .. } => body,
            Self::Stream(s) => {
                let parts: Vec<Bytes> = s.collect().await;
                Bytes::from(parts.concat())
            }
        }
    }
}

/// Events from a worker thread to the request's response task.
enum Event {
    Start(usize),
    Text(usize, String),
    End(usize, GenOutcome),
    Error(String),
    Done,
}

struct Job {
    seqs: Vec<(usize, GenRequest)>,
    events: UnboundedSender<Event>,
    span: tracing::Span,
}

/// Tokenized sequences of a request: `(choice index, request)`, per-choice echo text
/// and the prompt token count.
struct Prepared {
    seqs: Vec<(usize, GenRequest)>,
    echo: Vec<String>,
    prompt_tokens: usize,
}

struct Inner {
    info: ModelInfo,
    created: u64,
    model: Arc<LoadedModel>,
    template: Option<ChatTemplate>,
    queue: SyncSender<Job>,
    /// Session reused by [`Engine::score`].
    scorer: Mutex<Option<SequenceState>>,
}

/// The embedded inference engine. Cheap to clone; all clones share the model and
/// queue. Worker threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn pick_device(choice: DeviceChoice) -> Result<Device> {
    Ok(match choice {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda(i) => Device::new_cuda(i)?,
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda") {
                Device::cuda_if_available(0)?
            } else {
                Device::Cpu
            }
        }
    })
}

fn think_tokens(model: &LoadedModel) -> ThinkTokens {
    ThinkTokens {
        start: model.tokenizer.token_to_id("<think>"),
        end: model.tokenizer.token_to_id("</think>"),
    }
}

impl Engine {
    /// Loads the model named by `spec` (downloading a Hugging Face id into the HF
    /// cache if needed) and starts the worker threads.
    pub async fn load(spec: EngineSpec) -> Result<Engine> {
        let path = PathBuf::from(&spec.model);
        let local = if path.exists() {
            path
        } else if hub::looks_like_repo_id(&spec.model) {
            hub::resolve(&spec.model, spec.revision.as_deref(), &spec.hub).await?
        } else {
            return Err(EngineError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        };
        tokio::task::spawn_blocking(move || Self::load_local(spec, local))
            .await
            .map_err(|e| EngineError::InvalidModel(format!("loader panicked: {e}")))?
    }

    /// Loads a local model directory or GGUF file synchronously (no download).
    pub fn load_blocking(spec: EngineSpec) -> Result<Engine> {
        let local = PathBuf::from(&spec.model);
        Self::load_local(spec, local)
    }

    fn load_local(spec: EngineSpec, local: PathBuf) -> Result<Engine> {
        let device = pick_device(spec.device)?;
        let _span = tracing::info_span!("load_model", model = %spec.model).entered();
        let opts = LoadOptions {
            device: device.clone(),
            dtype: spec.dtype,
            tokenizer: spec.tokenizer.clone(),
        };
        let model = Arc::new(load_model(&local, &opts)?);
        let template = model
            .chat_template
            .as_deref()
            .map(ChatTemplate::new)
            .transpose()?;
        let name = spec.served_model_name.clone().unwrap_or(spec.model.clone());
        let info = ModelInfo {
            name,
            architecture: model.arch,
            format: model.format.clone(),
            max_context: model.max_context,
            device: match &device {
                Device::Cpu => "cpu".to_string(),
                d => format!("{:?}", d.location()).to_lowercase(),
            },
        };
        tracing::info!(?info, "model loaded");
        let (tx, rx) = sync_channel::<Job>(spec.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..spec.workers.max(1) {
            let rx = rx.clone();
            let model = model.clone();
            let prefix = spec.prefix_cache_tokens;
            std::thread::Builder::new()
                .name(format!("cocoon-engine-{i}"))
                .spawn(move || worker_loop(model, rx, prefix))
                .map_err(|e| EngineError::io("worker thread", e))?;
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                info,
                created: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                model,
                template,
                queue: tx,
                scorer: Mutex::new(None),
            }),
        })
    }

    /// Facts about the loaded model.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// The served model name.
    pub fn model_name(&self) -> &str {
        &self.inner.info.name
    }

    /// Tokenizes `text` without special tokens (e.g. for tests and token counting).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, false)
    }

    fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .model
            .tokenizer
            .encode(text, special)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// Renders the chat template for `messages` (a JSON array) with
    /// `chat_template_kwargs`; returns the prompt text.
    pub fn render_chat(
        &self,
        messages: &[Value],
        kwargs: &serde_json::Map<String, Value>,
    ) -> std::result::Result<String, ApiError> {
        let t = self.inner.template.as_ref().ok_or_else(|| {
            ApiError::bad_request("this model has no chat template; use /v1/completions")
        })?;
        let m = &self.inner.model;
        t.render(
            messages,
            kwargs,
            m.bos_token.as_deref(),
            m.eos_token.as_deref(),
        )
        .map_err(ApiError::bad_request)
    }

    /// Diagnostic scoring on the caller's thread: prefills `prompt`, then feeds
    /// `continuation` one token at a time through the KV cache. Returns the logits
    /// after the prompt and after each continuation token (`1 + continuation.len()`
    /// rows), i.e. the next-token logits at positions `prompt.len() - 1 ..`.
    pub fn score(&self, prompt: &[u32], continuation: &[u32]) -> Result<Vec<Vec<f32>>> {
        if prompt.is_empty() || prompt.len() + continuation.len() > self.inner.info.max_context {
            return Err(EngineError::InvalidModel(
                "score: empty prompt or sequence longer than the context".into(),
            ));
        }
        let mut guard = self
            .inner
            .scorer
            .lock()
            .map_err(|_| EngineError::InvalidModel("scorer lock poisoned".into()))?;
        let state = guard.get_or_insert_with(|| SequenceState::new(self.inner.model.session(), 0));
        state.reset();
        let mut out = vec![state.forward(prompt, 0)?];
        for (i, &t) in continuation.iter().enumerate() {
            out.push(state.forward(&[t], prompt.len() + i)?);
        }
        Ok(out)
    }

    /// Diagnostic for speech models, on the caller's thread: the mel spectrogram, encoder
    /// output and decoder logits for the first 30 s of `samples` (16 kHz mono) with the
    /// decoder fed `tokens` (e.g. `<|startoftranscript|><|en|><|transcribe|>…`).
    pub fn speech_probe(&self, samples: &[f32], tokens: &[u32]) -> Result<SpeechProbe> {
        let speech =
            self.inner.model.speech().ok_or_else(|| {
                EngineError::InvalidModel("speech_probe: not a speech model".into())
            })?;
        if tokens.is_empty() {
            return Err(EngineError::InvalidModel("speech_probe: no tokens".into()));
        }
        speech.probe(samples, tokens)
    }

    /// The `/v1/models` body.
    pub fn models_json(&self) -> Value {
        let i = &self.inner.info;
        json!({
            "object": "list",
            "data": [{
                "id": i.name,
                "object": "model",
                "created": self.inner.created,
                "owned_by": "cocoon",
                "root": i.name,
                "parent": null,
                "max_model_len": i.max_context,
                "permission": [],
            }]
        })
    }

    /// Whether the loaded model is an embedding model (it serves `/v1/embeddings` only).
    pub fn embeds(&self) -> bool {
        self.inner.model.session().embeds()
    }

    /// Serves the audio endpoints with Whisper: the form's `file` decoded and resampled,
    /// transcribed (or translated) window by window; `json` or `verbose_json` (segments
    /// with their times), usage as the audio's duration.
    async fn transcription(
        &self,
        task: crate::whisper::Task,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::result::Result<Value, ApiError> {
        let form = crate::whisper::read_form(content_type.unwrap_or(""), body).await?;
        let name = &self.inner.info.name;
        if let Some(m) = form.model.as_deref().filter(|m| m != name) {
            return Err(ApiError::model_not_found(m));
        }
        let verbose = match form.response_format.as_deref() {
            None | Some("json") => false,
            Some("verbose_json") => true,
            Some(other) => {
                return Err(ApiError::bad_param(
                    "response_format",
                    format!(
                        "the embedded engine answers json or verbose_json, not {other:?} \
                         (a cocoon worker renders text, srt and vtt from verbose_json)"
                    ),
                ))
            }
        };
        let options = crate::whisper::Options {
            task,
            language: form.language.clone(),
            prompt: form.prompt.clone(),
            temperature: form.temperature,
            timestamps: verbose,
            max_tokens: form.max_tokens,
        };
        let model = self.inner.model.clone();
        let transcript = tokio::task::spawn_blocking(move || {
            let samples = crate::audio::decode(&form.file, form.extension.as_deref())
                .map_err(|e| ApiError::bad_param("file", e.to_string()))?;
            let speech = model
                .speech()
                .ok_or_else(|| ApiError::internal("not a speech model"))?;
            speech
                .transcribe(&samples, &options)
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .await
        .map_err(|e| ApiError::internal(format!("transcription task failed: {e}")))??;
        Ok(crate::whisper::response(&transcript, task, verbose))
    }

    /// Serves `/v1/embeddings`: each input tokenized (or taken as token ids), run through
    /// the model on a blocking thread, pooled and normalised.
    async fn embeddings(&self, body: &[u8]) -> std::result::Result<Value, ApiError> {
        let req = crate::embed::parse(body)?;
        let name = &self.inner.info.name;
        if let Some(m) = req.model.as_deref().filter(|m| m != name) {
            return Err(ApiError::model_not_found(m));
        }
        let vocab = self.inner.model.tokenizer.get_vocab_size(true) as u32;
        let max = self.inner.info.max_context;
        let mut seqs = Vec::with_capacity(req.inputs.len());
        for input in &req.inputs {
            let ids = match input {
                crate::embed::Input::Text(t) => self
                    .encode(t, true)
                    .map_err(|e| ApiError::bad_param("input", e.to_string()))?,
                crate::embed::Input::Tokens(ids) => {
                    if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
                        return Err(ApiError::bad_param(
                            "input",
                            format!("token id {bad} is out of vocabulary"),
                        ));
                    }
                    ids.clone()
                }
            };
            if ids.is_empty() || ids.len() > max {
                return Err(ApiError::bad_param(
                    "input",
                    format!(
                        "an input is {} tokens; between 1 and {max} are accepted",
                        ids.len()
                    ),
                ));
            }
            seqs.push(ids);
        }
        let prompt_tokens = seqs.iter().map(Vec::len).sum();
        let session = self.inner.model.session();
        let dimensions = req.dimensions;
        let hidden = tokio::task::spawn_blocking(move || {
            seqs.iter()
                .map(|ids| session.embed(ids))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| ApiError::internal(format!("embedding task failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
        if let (Some(d), Some(first)) = (dimensions, hidden.first()) {
            if d > first.len() {
                return Err(ApiError::bad_param(
                    "dimensions",
                    format!("this model's embeddings have {} dimensions", first.len()),
                ));
            }
        }
        let vectors: Vec<Vec<f32>> = hidden
            .into_iter()
            .map(|h| crate::embed::pooled(h, dimensions))
            .collect();
        Ok(crate::embed::response(
            name,
            &vectors,
            req.base64,
            prompt_tokens,
        ))
    }

    /// Answers one OpenAI HTTP request: `path` is the request path (a query string is
    /// ignored), `body` the raw JSON body (ignored for `GET /v1/models`).
    pub async fn handle(&self, path: &str, body: &[u8]) -> EngineResponse {
        self.handle_with_type(path, None, body).await
    }

    /// Whether chat requests may offer `tools`: the model's chat template presents them
    /// (Qwen3's does; answers' `<tool_call>` blocks become `tool_calls`).
    pub fn calls_tools(&self) -> bool {
        self.inner
            .template
            .as_ref()
            .is_some_and(|t| t.takes_tools())
    }

    /// Whether the loaded model transcribes speech (Whisper): it serves the audio
    /// endpoints (and `/v1/models`) only.
    pub fn transcribes(&self) -> bool {
        self.inner.model.speech().is_some()
    }

    /// [`Engine::handle`] with the request's `Content-Type`, which audio requests (a
    /// `multipart/form-data` form) need.
    pub async fn handle_with_type(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> EngineResponse {
        let path = path.split('?').next().unwrap_or_default();
        if self.transcribes() {
            let task = match path {
                "/v1/models" => return EngineResponse::json(200, &self.models_json()),
                "/v1/audio/transcriptions" => crate::whisper::Task::Transcribe,
                "/v1/audio/translations" => crate::whisper::Task::Translate,
                _ => {
                    return EngineResponse::error(&ApiError::bad_request(format!(
                        "{} is a speech recognition model: it serves /v1/audio/transcriptions \
                         and /v1/audio/translations, not `{path}`",
                        self.inner.info.name
                    )))
                }
            };
            return match self.transcription(task, content_type, body).await {
                Ok(v) => EngineResponse::json(200, &v),
                Err(e) => EngineResponse::error(&e),
            };
        }
        if self.embeds() && matches!(path, "/v1/chat/completions" | "/v1/completions") {
            return EngineResponse::error(&ApiError::bad_request(format!(
                "{} is an embedding model: it serves /v1/embeddings, not `{path}`",
                self.inner.info.name
            )));
        }
        let endpoint = match path {
            "/v1/chat/completions" => Endpoint::Chat,
            "/v1/completions" => Endpoint::Completions,
            "/v1/models" => return EngineResponse::json(200, &self.models_json()),
            "/v1/embeddings" if self.embeds() => {
                return match self.embeddings(body).await {
                    Ok(v) => EngineResponse::json(200, &v),
                    Err(e) => EngineResponse::error(&e),
                }
            }
            "/v1/audio/transcriptions" | "/v1/audio/translations" | "/v1/embeddings" => {
                let model = &self.inner.info.name;
                return EngineResponse::error(&ApiError::unsupported_endpoint(path, model));
            }
            _ => return EngineResponse::error(&ApiError::not_found(path)),
        };
        let span = tracing::info_span!("request", path, id = tracing::field::Empty);
        match self
            .run(endpoint, body, span.clone())
            .instrument(span)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(status = e.status, error = %e.message, "request rejected");
                EngineResponse::error(&e)
            }
        }
    }

    fn build_seqs(&self, req: &ParsedRequest) -> std::result::Result<Prepared, ApiError> {
        let m = &self.inner.model;
        let prompts: Vec<(Vec<u32>, String)> = match req.endpoint {
            Endpoint::Chat => {
                let mut kwargs = req.chat_template_kwargs.clone();
                if let Some(tools) = &req.tools {
                    if !self.calls_tools() {
                        return Err(ApiError::bad_param(
                            "tools",
                            "this model's chat template has no tool-call format",
                        ));
                    }
                    kwargs.insert("tools".into(), Value::Array(tools.clone()));
                }
                let text = self.render_chat(&req.messages, &kwargs)?;
                let ids = self
                    .encode(&text, false)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                vec![(ids, text)]
            }
            Endpoint::Completions => req
                .prompts
                .iter()
                .map(|p| match p {
                    PromptInput::Text(t) => self
                        .encode(t, true)
                        .map(|ids| (ids, t.clone()))
                        .map_err(|e| ApiError::bad_request(e.to_string())),
                    PromptInput::Tokens(ids) => {
                        let vocab = m.tokenizer.get_vocab_size(true) as u32;
                        if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
                            return Err(ApiError::bad_param(
                                "prompt",
                                format!("token id {bad} is out of vocabulary"),
                            ));
                        }
                        let text = m.tokenizer.decode(ids, false).unwrap_or_default();
                        Ok((ids.clone(), text))
                    }
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        let defaults = &m.generation_defaults;
        let temperature = req.temperature.or(defaults.temperature).unwrap_or(1.0);
        let top_p = req.top_p.or(defaults.top_p).unwrap_or(1.0);
        let top_k = req
            .top_k
            .or(defaults.top_k)
            .filter(|&k| k > 0)
            .map(|k| k as usize);
        let mut seqs = Vec::new();
        let mut echo_texts = Vec::new();
        let mut prompt_tokens = 0;
        for (pi, (ids, text)) in prompts.into_iter().enumerate() {
            if ids.is_empty() {
                return Err(ApiError::bad_param("prompt", "the prompt is empty"));
            }
            let max_ctx = m.max_context;
            if ids.len() >= max_ctx {
                return Err(ApiError::bad_request(format!(
                    "This model's maximum context length is {max_ctx} tokens. However, your prompt has {} tokens.",
                    ids.len()
                )));
            }
            let max_tokens = match req.max_tokens {
                Some(mt) if ids.len() + mt > max_ctx => {
                    return Err(ApiError::bad_request(format!(
                        "This model's maximum context length is {max_ctx} tokens. However, you requested {} tokens ({} in the prompt, {mt} in the completion). Please reduce the length of the prompt or completion.",
                        ids.len() + mt,
                        ids.len()
                    )))
                }
                Some(mt) => mt,
                None => max_ctx - ids.len(),
            };
            prompt_tokens += ids.len();
            for c in 0..req.n {
                let index = pi * req.n + c;
                seqs.push((
                    index,
                    GenRequest {
                        prompt_tokens: ids.clone(),
                        max_tokens,
                        stop: req.stop.clone(),
                        sampling: SamplingParams {
                            temperature,
                            top_p,
                            top_k,
                            seed: req.seed.map(|s| s.wrapping_add(index as u64)),
                            presence_penalty: req.presence_penalty,
                            frequency_penalty: req.frequency_penalty,
                        },
                        ignore_eos: req.ignore_eos,
                        skip_special_tokens: req.skip_special_tokens,
                        report_cached: c == 0,
                    },
                ));
                echo_texts.push(if req.echo {
                    text.clone()
                } else {
                    String::new()
                });
            }
        }
        Ok(Prepared {
            seqs,
            echo: echo_texts,
            prompt_tokens,
        })
    }

    async fn run(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        span: tracing::Span,
    ) -> std::result::Result<EngineResponse, ApiError> {
        let req = parse_request(endpoint, body)?;
        if let Some(m) = &req.model {
            if m != &self.inner.info.name {
                return Err(ApiError::model_not_found(m));
            }
        }
        let Prepared {
            seqs,
            echo,
            prompt_tokens,
        } = self.build_seqs(&req)?;
        let fmt = ResponseFormatter::new(endpoint, self.inner.info.name.clone());
        span.record("id", fmt.id.as_str());
        tracing::info!(
            prompt_tokens,
            choices = seqs.len(),
            stream = req.stream,
            "request accepted"
        );
        let (tx, rx) = unbounded_channel();
        let job = Job {
            seqs,
            events: tx,
            span: span.clone(),
        };
        match self.inner.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ApiError::overloaded()),
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::internal(EngineError::ShutDown.to_string()))
            }
        }
        let usage = Usage {
            prompt_tokens,
            ..Default::default()
        };
        // With tools, `<tool_call>` blocks in the text become calls.
        let tools = req.tools.as_ref().map(|_| ToolMode {
            parallel: req.parallel_tool_calls,
        });
        if req.stream {
            Ok(EngineResponse::Stream(sse_stream(
                rx,
                fmt,
                echo,
                usage,
                req.include_usage,
                tools,
            )))
        } else {
            collect_full(rx, fmt, echo, usage, tools).await
        }
    }
}

/// How an answer with tools reads calls out of its text.
#[derive(Debug, Clone, Copy)]
struct ToolMode {
    /// Several calls per answer (`parallel_tool_calls`); else the first only.
    parallel: bool,
}

async fn collect_full(
    mut rx: UnboundedReceiver<Event>,
    fmt: ResponseFormatter,
    echo: Vec<String>,
    mut usage: Usage,
    tools: Option<ToolMode>,
) -> std::result::Result<EngineResponse, ApiError> {
    let mut texts: Vec<String> = echo;
    let mut choices = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Start(_) => {}
            Event::Text(i, t) => {
                if let Some(s) = texts.get_mut(i) {
                    s.push_str(&t);
                }
            }
            Event::End(i, o) => {
                usage.completion_tokens += o.completion_tokens;
                usage.reasoning_tokens += o.reasoning_tokens;
                usage.cached_tokens += o.cached_tokens;
                let text = texts.get_mut(i).map(std::mem::take).unwrap_or_default();
                let (text, tool_calls) = match tools {
                    Some(mode) => crate::tools::split(&text, mode.parallel),
                    None => (text, Vec::new()),
                };
                choices.push(ChoiceResult {
                    index: i,
                    text,
                    outcome: o,
                    tool_calls,
                });
            }
            Event::Error(e) => return Err(ApiError::internal(e)),
            Event::Done => {
                return Ok(EngineResponse::json(200, &fmt.full(choices, &usage)));
            }
        }
    }
    Err(ApiError::internal(EngineError::ShutDown.to_string()))
}

fn sse_stream(
    rx: UnboundedReceiver<Event>,
    fmt: ResponseFormatter,
    echo: Vec<String>,
    usage: Usage,
    include_usage: bool,
    tools: Option<ToolMode>,
) -> SseStream {
    struct St {
        rx: UnboundedReceiver<Event>,
        fmt: ResponseFormatter,
        echo: Vec<String>,
        usage: Usage,
        include_usage: bool,
        finished: bool,
        tools: Option<ToolMode>,
        /// Per choice: its tool-call parser and the calls given out so far.
        parsers: std::collections::HashMap<usize, (ToolCallParser, usize)>,
    }
    impl St {
        /// The SSE chunks for `pieces` of choice `i`.
        fn pieces(&mut self, i: usize, pieces: Vec<Piece>) -> Vec<u8> {
            let parallel = self.tools.is_some_and(|m| m.parallel);
            let mut out = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Text(t) => out.extend_from_slice(&sse(&self.fmt.chunk_text(i, &t))),
                    Piece::Call(call) => {
                        let entry = self.parsers.entry(i).or_default();
                        if parallel || entry.1 == 0 {
                            out.extend_from_slice(&sse(&self
                                .fmt
                                .chunk_tool_call(i, entry.1, &call)));
                            entry.1 += 1;
                        }
                    }
                }
            }
            out
        }
    }
    let st = St {
        rx,
        fmt,
        echo,
        usage,
        include_usage,
        finished: false,
        tools,
        parsers: std::collections::HashMap::new(),
    };
    Box::pin(futures::stream::unfold(st, |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            let Some(ev) = st.rx.recv().await else {
                st.finished = true;
                let err = ApiError::internal(EngineError::ShutDown.to_string());
                let out = [sse(&err.to_json()), sse_done()].concat();
                return Some((Bytes::from(out), st));
            };
            let out: Vec<u8> = match ev {
                Event::Start(i) => {
                    let mut out = Vec::new();
                    if let Some(v) = st.fmt.chunk_start(i) {
                        out.extend_from_slice(&sse(&v));
                    }
                    if let Some(e) = st.echo.get(i).filter(|e| !e.is_empty()) {
                        out.extend_from_slice(&sse(&st.fmt.chunk_text(i, e)));
                    }
                    out
                }
                Event::Text(i, t) if st.tools.is_some() => {
                    let pieces = st.parsers.entry(i).or_default().0.push(&t);
                    st.pieces(i, pieces)
                }
                Event::Text(i, t) => sse(&st.fmt.chunk_text(i, &t)).to_vec(),
                Event::End(i, o) => {
                    st.usage.completion_tokens += o.completion_tokens;
                    st.usage.reasoning_tokens += o.reasoning_tokens;
                    st.usage.cached_tokens += o.cached_tokens;
                    let rest = st.parsers.entry(i).or_default().0.finish();
                    let mut out = st.pieces(i, rest);
                    let called = st.parsers.get(&i).is_some_and(|p| p.1 > 0);
                    out.extend_from_slice(&sse(&st.fmt.chunk_finish(i, &o, called)));
                    out
                }
                Event::Error(e) => {
                    st.finished = true;
                    [sse(&ApiError::internal(e).to_json()), sse_done()].concat()
                }
                Event::Done => {
                    st.finished = true;
                    let mut out = Vec::new();
                    if st.include_usage {
                        out.extend_from_slice(&sse(&st.fmt.chunk_usage(&st.usage)));
                    }
                    out.extend_from_slice(&sse_done());
                    out
                }
            };
            if !out.is_empty() {
                return Some((Bytes::from(out), st));
            }
        }
    }))
}

fn worker_loop(model: Arc<LoadedModel>, rx: Arc<Mutex<Receiver<Job>>>, prefix: usize) {
    let mut state = SequenceState::new(model.session(), prefix);
    let think = think_tokens(&model);
    let ctx = GenContext {
        tokenizer: &model.tokenizer,
        eos_token_ids: &model.eos_token_ids,
        think,
        max_context: model.max_context,
    };
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let span = job.span.clone();
        span.in_scope(|| run_job(&mut state, &ctx, job));
    }
}

fn run_job(state: &mut SequenceState, ctx: &GenContext<'_>, job: Job) {
    let started = std::time::Instant::now();
    let tx = job.events;
    let mut generated = 0;
    for (index, req) in job.seqs {
        if tx.send(Event::Start(index)).is_err() {
            tracing::info!("client went away before generation");
            return;
        }
        let mut on_text = |t: &str| tx.send(Event::Text(index, t.to_string())).is_ok();
        match generate(state, ctx, &req, &mut on_text) {
            Ok(Some(o)) => {
                generated += o.completion_tokens;
                if tx.send(Event::End(index, o)).is_err() {
                    return;
                }
            }
            Ok(None) => {
                tracing::info!("client went away; generation aborted");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "generation failed");
                let _ = tx.send(Event::Error(e.to_string()));
                return;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        generated,
        seconds = secs,
        tokens_per_s = generated as f64 / secs.max(1e-9),
        "request done"
    );
    let _ = tx.send(Event::Done);
}

#[cfg(test)]
mod tool_call_tests {
    use super::*;
    use crate::generate::{FinishReason, GenOutcome};
    use crate::openai::Endpoint;

    const CALLED: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Dubai\"}}\n</tool_call>";

    fn outcome() -> GenOutcome {
        GenOutcome {
            completion_tokens: 20,
            reasoning_tokens: 0,
            finish_reason: FinishReason::Stop,
            stop_string: None,
            stop_token: Some(2),
            cached_tokens: 0,
        }
    }

    /// The events of one choice generating `pieces`.
    fn events(pieces: &[&str]) -> UnboundedReceiver<Event> {
        let (tx, rx) = unbounded_channel();
        let _ = tx.send(Event::Start(0));
        for p in pieces {
            let _ = tx.send(Event::Text(0, (*p).to_owned()));
        }
        let _ = tx.send(Event::End(0, outcome()));
        let _ = tx.send(Event::Done);
        rx
    }

    fn fmt() -> ResponseFormatter {
        ResponseFormatter::new(Endpoint::Chat, "m".into())
    }

    #[tokio::test]
    async fn a_generated_call_becomes_tool_calls() {
        let tools = Some(ToolMode { parallel: true });
        let EngineResponse::Json { body, .. } = collect_full(
            events(&[CALLED]),
            fmt(),
            vec![String::new()],
            Usage::default(),
            tools,
        )
        .await
        .expect("answer") else {
            panic!("JSON expected")
        };
        let v: Value = serde_json::from_slice(&body).expect("json");
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], r#"{"city":"Dubai"}"#);

        // Without tools the same text is plain content.
        let EngineResponse::Json { body, .. } = collect_full(
            events(&[CALLED]),
            fmt(),
            vec![String::new()],
            Usage::default(),
            None,
        )
        .await
        .expect("answer") else {
            panic!("JSON expected")
        };
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["choices"][0]["message"]["content"], CALLED);
    }

    #[tokio::test]
    async fn streamed_calls_come_as_one_delta_each() {
        use futures::StreamExt;
        let tools = Some(ToolMode { parallel: true });
        let (head, tail) = CALLED.split_at(20);
        let stream = sse_stream(
            events(&["Checking. ", head, tail]),
            fmt(),
            vec![String::new()],
            Usage::default(),
            false,
            tools,
        );
        let text: Vec<u8> = stream.map(|b| b.to_vec()).concat().await;
        let chunks: Vec<Value> = String::from_utf8(text)
            .expect("utf-8")
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("json"))
            .collect();
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Checking. ");
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
            .collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0][0]["index"], 0);
        assert_eq!(calls[0][0]["function"]["arguments"], r#"{"city":"Dubai"}"#);
        let last = chunks.last().expect("chunks");
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    }
}
