//! `cocoon-engine`: a standalone OpenAI-compatible server on the embedded engine.
//!
//! ```text
//! cocoon-engine --model /models/Qwen3-0.6B --listen 127.0.0.1:8000
//! cocoon-engine --model /models/qwen3-8b-q4_k_m.gguf --tokenizer /models/Qwen3-8B
//! cocoon-engine --model Qwen/Qwen3-0.6B        # downloads into the HF cache
//! ```

use std::path::PathBuf;

use clap::Parser;
use cocoon_engine::{router, DeviceChoice, Engine, EngineSpec, WeightDType};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Embedded Qwen3/Llama inference with an OpenAI-compatible HTTP API"
)]
struct Args {
    /// Model directory (safetensors), .gguf file, or Hugging Face id (org/name).
    #[arg(long, env = "COCOON_ENGINE_MODEL")]
    model: String,
    /// Name clients send as `model` (default: --model verbatim).
    #[arg(long)]
    served_model_name: Option<String>,
    /// tokenizer.json (or its directory) for GGUF files without one beside them.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Hugging Face revision.
    #[arg(long)]
    revision: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
    /// Concurrent sequences (worker threads).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Requests allowed to wait for a worker before HTTP 429.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Weight dtype for safetensors models: f32, bf16 or f16.
    #[arg(long)]
    dtype: Option<String>,
    /// Device: auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Never touch the network (use only the HF cache).
    #[arg(long)]
    offline: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let a = Args::parse();
    let mut spec = EngineSpec::new(a.model);
    spec.served_model_name = a.served_model_name;
    spec.tokenizer = a.tokenizer;
    spec.revision = a.revision;
    spec.workers = a.workers;
    spec.queue_capacity = a.queue;
    spec.hub.offline = a.offline;
    spec.dtype = match a.dtype.as_deref() {
        None => None,
        Some("f32") => Some(WeightDType::F32),
        Some("bf16") => Some(WeightDType::BF16),
        Some("f16") => Some(WeightDType::F16),
        Some(o) => return Err(format!("unknown --dtype {o} (f32, bf16, f16)").into()),
    };
    spec.device = match a.device.as_str() {
        "auto" => DeviceChoice::Auto,
        "cpu" => DeviceChoice::Cpu,
        d => match d.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => DeviceChoice::Cuda(n),
            None if d == "cuda" => DeviceChoice::Cuda(0),
            None => return Err(format!("unknown --device {d} (auto, cpu, cuda:N)").into()),
        },
    };
    let engine = Engine::load(spec).await?;
    let info = engine.info().clone();
    let listener = tokio::net::TcpListener::bind(&a.listen).await?;
    tracing::info!(
        model = %info.name, format = %info.format, device = %info.device,
        max_context = info.max_context, listen = %a.listen, "serving"
    );
    axum::serve(listener, router(engine)).await?;
    Ok(())
}
