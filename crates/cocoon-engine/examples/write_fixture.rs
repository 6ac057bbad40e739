//! Writes the deterministic tiny test checkpoints used by `tests/reference.rs`, so that
//! the scripts in `scripts/` can load them with transformers and sentence-transformers:
//! Qwen3 and Llama (safetensors), a Whisper, and a Qwen3-Embedding-style model.
//!
//! `cargo run -p cocoon-engine --example write_fixture -- /tmp/cocoon-fixtures`

use cocoon_engine::testing::{
    write_embedding_model, write_safetensors_model, write_whisper_model, TinyModelConfig,
};
use cocoon_engine::Architecture;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/cocoon-fixtures".to_string());
    let out = std::path::Path::new(&out);
    for arch in [Architecture::Qwen3, Architecture::Llama] {
        let dir = out.join(arch.as_str());
        write_safetensors_model(&dir, &TinyModelConfig::tiny(arch))?;
        println!("{}", dir.display());
    }
    let dir = out.join("whisper");
    write_whisper_model(&dir, &TinyModelConfig::tiny_whisper())?;
    println!("{}", dir.display());
    let dir = out.join("qwen3-embedding");
    write_embedding_model(&dir, &TinyModelConfig::tiny(Architecture::Qwen3))?;
    println!("{}", dir.display());
    Ok(())
}
