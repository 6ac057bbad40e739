//! Hugging Face Hub downloads into the standard HF cache (`~/.cache/huggingface/hub`,
//! or `HF_HOME`/`HF_HUB_CACHE`), with a progress bar and resumable downloads
//! (hf-hub 0.4).

use std::path::PathBuf;

use hf_hub::api::tokio::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{EngineError, Result};

/// Options for resolving a Hugging Face model id.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// Cache directory; default: the standard HF cache (honours `HF_HOME`).
    pub cache_dir: Option<PathBuf>,
    /// Hub endpoint; default `https://huggingface.co` (or `HF_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Use only the local cache (also enabled by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Show a progress bar on stderr while downloading.
    pub progress: bool,
}

const OPTIONAL: &[&str] = &["tokenizer_config.json", "generation_config.json"];

/// Returns `true` if `s` looks like a Hub id (`org/name`) rather than a path.
pub(crate) fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p != &"."
                && p != &".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Downloads (or finds in the cache) the files of a safetensors model repository and
/// returns the local snapshot directory.
pub(crate) async fn resolve(
    repo_id: &str,
    revision: Option<&str>,
    opts: &HubOptions,
) -> Result<PathBuf> {
    let repo = Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        revision.unwrap_or("main").to_string(),
    );
    let dl_err = |reason: String| EngineError::Download {
        repo: repo_id.to_string(),
        reason,
    };
    let cache = match &opts.cache_dir {
        Some(d) => Cache::new(d.clone()),
        None => Cache::from_env(),
    };
    let offline = opts.offline
        || std::env::var("HF_HUB_OFFLINE")
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .unwrap_or(false);
    if offline {
        let c = cache.repo(repo.clone());
        let cfg = c
            .get("config.json")
            .ok_or_else(|| dl_err("offline mode and the model is not in the local cache".into()))?;
        c.get("tokenizer.json").ok_or_else(|| {
            dl_err("offline mode and tokenizer.json is not in the local cache".into())
        })?;
        return cfg
            .parent()
            .map(|p| p.to_path_buf())
            .ok_or_else(|| dl_err("bad cache layout".into()));
    }
    let mut builder = ApiBuilder::from_cache(cache).with_progress(opts.progress);
    if let Some(ep) = &opts.endpoint {
        builder = builder.with_endpoint(ep.clone());
    } else if let Ok(ep) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(ep);
    }
    let api = builder.build().map_err(|e| dl_err(e.to_string()))?;
    let api = api.repo(repo);
    let config = api
        .get("config.json")
        .await
        .map_err(|e| dl_err(e.to_string()))?;
    api.get("tokenizer.json")
        .await
        .map_err(|e| dl_err(e.to_string()))?;
    for f in OPTIONAL {
        // Absent optional files are fine (404); other errors are not.
        if let Err(e) = api.get(f).await {
            tracing::debug!(file = f, error = %e, "optional file not downloaded");
        }
    }
    let weights: Vec<String> = match api.get("model.safetensors.index.json").await {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| EngineError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| EngineError::InvalidModel(format!("safetensors index: {e}")))?;
            let mut files: Vec<String> = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.values()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            files.dedup();
            files
        }
        Err(_) => vec!["model.safetensors".to_string()],
    };
    for f in &weights {
        api.get(f).await.map_err(|e| dl_err(format!("{f}: {e}")))?;
    }
    config
        .parent()
        .map(|p| p.to_path_buf())
        .ok_or_else(|| dl_err("bad cache layout".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_id_detection() {
        assert!(looks_like_repo_id("Qwen/Qwen3-0.6B"));
        assert!(!looks_like_repo_id("/models/qwen"));
        assert!(!looks_like_repo_id("./qwen"));
        assert!(!looks_like_repo_id("a/b/c"));
    }
}
