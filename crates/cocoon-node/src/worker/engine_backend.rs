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

/// Writes (once) a tiny Qwen3-shaped checkpoint with random weights into `dir` and
/// returns its path. **A stand-in for real weights**, which cannot be downloaded
/// everywhere: it exercises the real engine, metering and payment path end to end,
/// but its answers are noise.
pub fn ensure_tiny_model(dir: &Path) -> Result<std::path::PathBuf, EngineLoadError> {
    let path = dir.join(TINY_MODEL_NAME);
    if !path.join("model.safetensors").exists() {
        let cfg = cocoon_engine::testing::TinyModelConfig::tiny(cocoon_engine::Architecture::Qwen3);
        cocoon_engine::testing::write_safetensors_model(&path, &cfg).map_err(|e| {
            EngineLoadError {
                what: "write the tiny model to",
                model: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
    }
    Ok(path)
}
