//! Switching the served model when a proxy asks (`worker.changeModel`, COCOON 9060ce5,
//! cocoon-protocol-9060ce5.md §2.10).
//!
//! The worker checks the new model id, runs the operator's script (`change_model_script`)
//! with the id as its only argument, and answers `worker.changedModel` when the script
//! exits with status 0; every refusal is a 602 error whose message starts with COCOON's
//! text (`cannot change model: …`).
//!
//! Two things differ from COCOON on purpose (its §11.10):
//! - the script runs as a child process the worker awaits (with a time limit), so the
//!   worker keeps serving its proxies while it runs, where COCOON's runner blocks;
//! - after a change the worker really serves the new model. COCOON keeps announcing and
//!   validating the old name. Here the model lives in a watch channel
//!   ([`ServedModel`]): requests are validated against the current one, and every proxy
//!   link, on seeing a new model, tells its proxy it is disabled, refuses new requests
//!   with a retryable refusal, lets its running requests finish, then closes. The link
//!   reconnects at once and announces the new model in its hello (the protocol has no
//!   message to change a model on a live connection, and the proxy routes by what the
//!   hello said). Reconnecting rather than patching the proxy's table keeps one source
//!   of truth for what a connection serves: the hello.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use cocoon_net::{ErrorCode, IncomingQuery};
use cocoon_tl::functions::worker as worker_fn;
use cocoon_tl::types::worker;
use tracing::{info, info_span, warn, Instrument};

use super::Worker;
use crate::chain::ChainError;
use crate::limits::MAX_MODEL_NAME;
use crate::protocol::http::base_model_name;

/// How long a change script may run by default before it is stopped (loading a model's
/// weights can take minutes).
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

/// How a worker switches models on a proxy's `worker.changeModel`.
#[derive(Debug, Clone)]
pub struct ModelChangeSettings {
    /// The script run with the new full model id as its only argument (COCOON's
    /// `change_model_script`); it reconfigures or restarts the model server. `None`
    /// refuses every change.
    pub script: Option<PathBuf>,
    /// Refuse a model whose `sha256(NAME@COMMIT:HASH)` is not among the root's
    /// `model_hashes` (COCOON does this when it checks image hashes).
    pub check_model_hashes: bool,
    /// How long the script may run; past it the script is killed and the change refused.
    pub timeout: Duration,
}

impl Default for ModelChangeSettings {
    fn default() -> Self {
        ModelChangeSettings {
            script: None,
            check_model_hashes: false,
            timeout: DEFAULT_SCRIPT_TIMEOUT,
        }
    }
}

/// The model a worker serves now: the full id it announces in its hello and the base
/// name requests are validated against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    /// The full id `NAME@COMMIT:HASH`.
    pub full: String,
    /// The part before `@`, what clients ask for.
    pub base: String,
}

impl ServedModel {
    /// The model with full id `full`.
    pub fn new(full: &str) -> Self {
        ServedModel {
            full: full.to_owned(),
            base: base_model_name(full).to_owned(),
        }
    }
}

/// Why a model change was refused. The message (what the proxy receives, with code 602)
/// starts with COCOON's text for the same refusal where COCOON has one.
#[derive(Debug, thiserror::Error)]
pub enum ChangeModelError {
    /// No `change_model_script` is configured.
    #[error("cannot change model: no script in config")]
    NoScript,
    /// The id cannot be a model id (empty, too long, control characters, or a leading
    /// `-` that a script would read as an option).
    #[error("cannot change model: invalid model name ({0})")]
    InvalidName(&'static str),
    /// The root does not list the model's hash.
    #[error("cannot change model: unknown model")]
    UnknownModel,
    /// The root's model hashes could not be read.
    #[error("cannot change model: cannot read the root's model hashes: {0}")]
    Root(#[from] ChainError),
    /// Another change is running.
    #[error("cannot change model: another model change is running")]
    Busy,
    /// The script did not succeed.
    #[error("cannot change model: model change script failed ({0})")]
    ScriptFailed(#[from] ScriptFailure),
}

/// How a change script failed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptFailure {
    /// It could not be started.
    #[error("cannot start it: {0}")]
    Spawn(#[source] std::io::Error),
    /// Waiting for it failed.
    #[error("cannot wait for it: {0}")]
    Wait(#[source] std::io::Error),
    /// It exited with a status other than 0 (or was killed by a signal).
    #[error("{0}")]
    Exit(ExitStatus),
    /// It ran past the time limit and was killed.
    #[error("still running after {0:?}, killed")]
    TimedOut(Duration),
}

/// Checks that `name` can be a model id handed to a script.
pub fn check_model_name(name: &str) -> Result<(), ChangeModelError> {
    if name.is_empty() {
        Err(ChangeModelError::InvalidName("empty"))
    } else if name.len() > MAX_MODEL_NAME {
        Err(ChangeModelError::InvalidName("too long"))
    } else if name.chars().any(char::is_control) {
        Err(ChangeModelError::InvalidName("control characters"))
    } else if name.starts_with('-') {
        Err(ChangeModelError::InvalidName("starts with '-'"))
    } else {
        Ok(())
    }
}

/// Runs `script model` as a child process and waits for it, at most `timeout` (then it
/// is killed). Its output goes to the worker's own stdout and stderr. Succeeds when it
/// exits with status 0.
pub async fn run_change_script(
    script: &Path,
    model: &str,
    timeout: Duration,
) -> Result<(), ScriptFailure> {
    let mut child = tokio::process::Command::new(script)
        .arg(model)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(ScriptFailure::Spawn)?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(ScriptFailure::Exit(status)),
        Ok(Err(e)) => Err(ScriptFailure::Wait(e)),
        Err(_) => {
            if let Err(e) = child.kill().await {
                warn!(error = %e, "cannot kill the model change script");
            }
            Err(ScriptFailure::TimedOut(timeout))
        }
    }
}

impl Worker {
    /// Serves one `worker.changeModel` from a ready proxy link in its own task, so that
    /// the link goes on serving while the script runs.
    pub(super) fn spawn_change_model(&self, query: IncomingQuery) {
        let worker = self.clone();
        tokio::spawn(async move {
            let request: worker_fn::ChangeModel = match query.decode() {
                Ok(r) => r,
                Err(e) => {
                    let message = format!("malformed worker.changeModel: {e}");
                    let _ = query
                        .error(ErrorCode::ProtocolViolation.code(), &message)
                        .await;
                    return;
                }
            };
            let new_model = request.new_model;
            // At most 128 characters of a peer's text in the log.
            let shown: String = new_model.chars().take(128).collect();
            let span = info_span!("change_model", new_model = %shown);
            async move {
                info!("the proxy asks to change the model");
                let changing = match worker.shared.changing.try_lock() {
                    Ok(guard) => Ok(guard),
                    Err(_) => Err(ChangeModelError::Busy),
                };
                let checked = match changing {
                    Ok(guard) => worker.try_change(&new_model).await.map(|()| guard),
                    Err(e) => Err(e),
                };
                match checked {
                    Ok(_guard) => {
                        // Answer before the links see the new model: a link that has
                        // nothing running closes at once, and the answer must be queued
                        // on it first.
                        if let Err(e) = query.answer(&worker::ChangedModel {}).await {
                            warn!(error = %e, "cannot answer worker.changeModel");
                        }
                        worker.adopt_model(&new_model);
                    }
                    Err(e) => {
                        warn!(error = %e, "model change refused");
                        let _ = query.error(ErrorCode::Error.code(), &e.to_string()).await;
                    }
                }
            }
            .instrument(span)
            .await
        });
    }

    /// The checks and the script of a change to `new_model`.
    async fn try_change(&self, new_model: &str) -> Result<(), ChangeModelError> {
        let settings = &self.shared.settings.change_model;
        let Some(script) = &settings.script else {
            return Err(ChangeModelError::NoScript);
        };
        check_model_name(new_model)?;
        if settings.check_model_hashes {
            let hashes = self.shared.settings.chain.model_hashes().await?;
            if !crate::chain::model_allowed(&hashes, new_model) {
                return Err(ChangeModelError::UnknownModel);
            }
        }
        info!(script = %script.display(), "running the model change script");
        match run_change_script(script, new_model, settings.timeout).await {
            Ok(()) => Ok(()),
            Err(failure) => {
                warn!(script = %script.display(), status = %failure, "the model change script failed");
                Err(failure.into())
            }
        }
    }

    /// Serves `full` from now on: new requests are validated against it, and every
    /// proxy link reconnects to announce it once its running requests finish.
    fn adopt_model(&self, full: &str) {
        let next = ServedModel::new(full);
        let changed = self.shared.model.send_if_modified(|current| {
            if **current == next {
                false
            } else {
                *current = std::sync::Arc::new(next.clone());
                true
            }
        });
        if changed {
            info!(model = %full, "model changed: proxy links reconnect with it");
        } else {
            info!(model = %full, "the script ran; the model is the one already served");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_handed_to_a_script_are_checked() {
        assert!(check_model_name("Qwen/Qwen3-8B@abc:def").is_ok());
        for bad in ["", "-rf", "a\nb", "a\0b"] {
            assert!(
                matches!(check_model_name(bad), Err(ChangeModelError::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(check_model_name(&"m".repeat(MAX_MODEL_NAME + 1)).is_err());
    }

    #[test]
    fn refusals_start_with_cocoon_texts() {
        assert_eq!(
            ChangeModelError::NoScript.to_string(),
            "cannot change model: no script in config"
        );
        assert_eq!(
            ChangeModelError::UnknownModel.to_string(),
            "cannot change model: unknown model"
        );
        let failed = ChangeModelError::from(ScriptFailure::TimedOut(Duration::from_secs(1)));
        assert!(failed
            .to_string()
            .starts_with("cannot change model: model change script failed"));
    }

    #[test]
    fn served_model_keeps_the_full_id_and_routes_on_the_base() {
        let m = ServedModel::new("Qwen/Qwen3-8B@abc:def");
        assert_eq!(m.full, "Qwen/Qwen3-8B@abc:def");
        assert_eq!(m.base, "Qwen/Qwen3-8B");
    }

    #[cfg(unix)]
    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("change.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_script_gets_the_model_as_its_only_argument() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("args");
        let path = script(
            dir.path(),
            &format!("printf '%s|' \"$#\" \"$@\" > '{}'", out.display()),
        );
        run_change_script(&path, "M@c:h x", DEFAULT_SCRIPT_TIMEOUT)
            .await
            .expect("runs");
        assert_eq!(std::fs::read_to_string(out).expect("read"), "1|M@c:h x|");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_failing_missing_or_stuck_script_is_a_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = script(dir.path(), "exit 3");
        match run_change_script(&path, "m", DEFAULT_SCRIPT_TIMEOUT).await {
            Err(ScriptFailure::Exit(status)) => assert_eq!(status.code(), Some(3)),
            other => panic!("{other:?}"),
        }
        let missing = dir.path().join("missing.sh");
        assert!(matches!(
            run_change_script(&missing, "m", DEFAULT_SCRIPT_TIMEOUT).await,
            Err(ScriptFailure::Spawn(_))
        ));
        // A script that never ends is stopped at the limit (it would sleep for an hour).
        let stuck = script(dir.path(), "exec sleep 3600");
        assert!(matches!(
            run_change_script(&stuck, "m", Duration::from_millis(100)).await,
            Err(ScriptFailure::TimedOut(_))
        ));
    }
}
