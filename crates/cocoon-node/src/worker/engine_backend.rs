//! The embedded engine (`cocoon-engine`) as a worker backend: the model runs inside the
//! worker process instead of behind an HTTP server (feature `engine`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cocoon_engine::{Engine, EngineResponse, EngineSpec};
use futures::future::BoxFuture;
use futures::StreamExt;

use crate::worker::backend::{BackendError, BackendRequest, BackendResponse, InferenceBackend};

/// Why the embedded engine could not get a model ready. The embedded engine is no
/// server: its errors name the model and say "the embedded engine", never "model server".
#[derive(Debug, thiserror::Error)]
#[error("the embedded engine cannot {what} {model}: {reason}")]
pub struct EngineLoadError {
    /// What it was doing ("load the model", "write the tiny model to").
    pub what: &'static str,
    /// The model: its path, GGUF file or Hugging Face id.
    pub model: String,
    /// Why.
    pub reason: String,
}

/// A worker backend answering with the embedded engine, in exactly the OpenAI JSON and
/// SSE shapes an HTTP model server would use.
#[derive(Clone)]
pub struct EngineBackend {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for EngineBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBackend")
            .field("model", &self.engine.info().name)
            .finish()
    }
}

impl EngineBackend {
    /// Loads `model` (a model directory, a GGUF file or a Hugging Face id), served as
    /// `name` (default: `model` verbatim, as vLLM does).
    pub async fn load(model: &str, name: Option<&str>) -> Result<Self, EngineLoadError> {
        let mut spec = EngineSpec::new(model);
        spec.served_model_name = name.map(str::to_owned);
        let engine = Engine::load(spec).await.map_err(|e| EngineLoadError {
            what: "load the model",
            model: model.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self::new(Arc::new(engine)))
    }

    /// Wraps an already loaded engine (several workers may share one).
    pub fn new(engine: Arc<Engine>) -> Self {
        EngineBackend { engine }
    }

    /// The name clients must ask for.
    pub fn model_name(&self) -> String {
        self.engine.info().name.clone()
    }
}

impl InferenceBackend for EngineBackend {
    fn send(
        &self,
        request: BackendRequest,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<BackendResponse, BackendError>> {
        let engine = self.engine.clone();
        Box::pin(async move {
            let content_type = request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.as_str());
            let response = engine
                .handle_with_type(&request.path, content_type, &request.body)
                .await;
            Ok(match response {
                EngineResponse::Json { status, body } => BackendResponse {
                    status,
                    reason: String::new(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: futures::stream::once(async move { Ok::<Bytes, BackendError>(body) })
                        .boxed(),
                },
                EngineResponse::Stream(frames) => BackendResponse {
                    status: 200,
                    reason: "OK".into(),
                    headers: vec![("content-type".into(), "text/event-stream".into())],
                    body: frames.map(Ok).boxed(),
                },
            })
        })
    }

    fn endpoints(&self) -> crate::protocol::endpoint::Endpoints {
        use crate::protocol::endpoint::{Endpoint, Endpoints, Feature};
        if self.engine.transcribes() {
            Endpoints::of(&[Endpoint::AudioTranscriptions, Endpoint::AudioTranslations])
        } else if self.engine.embeds() {
            Endpoints::of(&[Endpoint::Embeddings])
        } else {
            let llm = Endpoints::of(&[Endpoint::ChatCompletions, Endpoint::Completions]);
            if self.engine.calls_tools() {
                llm.with(Feature::Tools)
            } else {
                llm
            }
        }
    }

    fn models(&self) -> BoxFuture<'static, Result<Vec<String>, BackendError>> {
        let name = self.model_name();
        Box::pin(async move { Ok(vec![name]) })
    }

    fn describe(&self) -> String {
        let info = self.engine.info();
        format!("the embedded engine (model {}, {})", info.name, info.format)
    }
}

/// Name of the generated stand-in model of `cocoon devnet`.
pub const TINY_MODEL_NAME: &str = "tiny-random-qwen3";

/// The stand-in models the devnet can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyModel {
    /// A Qwen3 chat model.
    Chat,
    /// A Whisper speech model.
    Speech,
    /// A Qwen3-Embedding-shaped embedding model.
    Embedding,
}

impl TinyModel {
    /// The name it is served under.
    pub fn name(self) -> &'static str {
        match self {
            TinyModel::Chat => TINY_MODEL_NAME,
            TinyModel::Speech => "tiny-random-whisper",
            TinyModel::Embedding => "tiny-random-qwen3-embedding",
        }
    }
}

/// Writes the tiny random-weight model of `kind` under `dir` (once) and returns its path.
/// **A stand-in for real weights**, which cannot be downloaded everywhere: it exercises the
/// real engine, metering and payment path end to end, but its answers are noise.
pub fn ensure_tiny(dir: &Path, kind: TinyModel) -> Result<std::path::PathBuf, EngineLoadError> {
    use cocoon_engine::testing::{
        write_embedding_model, write_safetensors_model, write_whisper_model, TinyModelConfig,
    };
    use cocoon_engine::Architecture;
    let path = dir.join(kind.name());
    if !path.join("model.safetensors").exists() {
        let written = match kind {
            TinyModel::Chat => {
                write_safetensors_model(&path, &TinyModelConfig::tiny(Architecture::Qwen3))
            }
            TinyModel::Embedding => {
                write_embedding_model(&path, &TinyModelConfig::tiny(Architecture::Qwen3))
            }
            TinyModel::Speech => write_whisper_model(&path, &TinyModelConfig::tiny_whisper()),
        };
        written.map_err(|e| EngineLoadError {
            what: "write the tiny model to",
            model: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(path)
}

/// [`ensure_tiny`] for the chat model (the devnet's default).
pub fn ensure_tiny_model(dir: &Path) -> Result<std::path::PathBuf, EngineLoadError> {
    ensure_tiny(dir, TinyModel::Chat)
}
