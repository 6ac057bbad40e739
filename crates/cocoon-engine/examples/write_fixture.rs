//! Writes the deterministic tiny test checkpoints (Qwen3 and Llama, safetensors) used
//! by `tests/reference.rs`, so `scripts/reference_logits.py` can load them with
//! transformers.
//!
//! `cargo run -p cocoon-engine --example write_fixture -- /tmp/cocoon-fixtures`

use cocoon_engine::testing::{write_safetensors_model, TinyModelConfig};
use cocoon_engine::Architecture;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/cocoon-fixtures".to_string());
    for arch in [Architecture::Qwen3, Architecture::Llama] {
        let dir = std::path::Path::new(&out).join(arch.as_str());
        write_safetensors_model(&dir, &TinyModelConfig::tiny(arch))?;
        println!("{}", dir.display());
    }
    Ok(())
}
