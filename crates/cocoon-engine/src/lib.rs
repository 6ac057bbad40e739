//! # cocoon-engine
//!
//! An embedded LLM inference engine for COCOON workers, built on
//! [candle](https://github.com/huggingface/candle): Qwen3 and Llama from safetensors
//! directories, GGUF files (Q4_K_M, Q8_0, F16, …) or Hugging Face ids, on CPU (or
//! CUDA with `--features cuda`). It answers OpenAI `/v1/chat/completions`,
//! `/v1/completions` and `/v1/models` in the same JSON and SSE shapes as vLLM, so a
//! COCOON worker can use it in place of an HTTP inference server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cocoon_engine::EngineError> {
//! use cocoon_engine::{Engine, EngineResponse, EngineSpec};
//!
//! let engine = Engine::load(EngineSpec::new("/models/Qwen3-0.6B")).await?;
//! let body = br#"{"model":"/models/Qwen3-0.6B","messages":[{"role":"user","content":"hi"}]}"#;
//! match engine.handle("/v1/chat/completions", body).await {
//!     EngineResponse::Json { status, body } => println!("{status} {body:?}"),
//!     EngineResponse::Stream(_sse) => unreachable!("not a streaming request"),
//! }
//! // Or serve it: axum::serve(listener, cocoon_engine::router(engine)).
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod audio;
mod embed;
mod engine;
mod error;
mod generate;
mod hub;
mod mel;
mod model;
mod openai;
mod sampling;
mod server;
mod template;
pub mod testing;
mod tools;
mod whisper;
mod whisper_decoder;

pub use engine::{DeviceChoice, Engine, EngineResponse, EngineSpec, ModelInfo, SseStream};
pub use error::{ApiError, EngineError, Result};
pub use generate::FinishReason;
pub use hub::HubOptions;
pub use model::{Architecture, WeightDType};
pub use openai::Usage;
pub use sampling::SamplingParams;
pub use server::{into_http, router};
pub use whisper::SpeechProbe;

/// Re-exported so callers can pick GGUF quantization types without depending on
/// candle directly (used by [`testing::write_gguf_model`]).
pub use candle_core::quantized::GgmlDType;
