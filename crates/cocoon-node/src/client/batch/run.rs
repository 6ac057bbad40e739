//! Running a batch: its input read from disk line by line, each line sent through the
//! gateway's own API with its own request id, the results recorded in groups, and the
//! output files written at the end.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch, Notify};
use tower::ServiceExt;
use tracing::{info, warn, Instrument};

use super::jsonl::{is_blank, parse};
use super::limiter::Window;
use super::store::{BatchRow, FileRow, LineResult, Status};
use super::{new_id, now, BatchError, Batches};
use crate::client::gateway::AnswerOnce;

/// Lines marked as possibly sent ahead of the sending, per store write.
const DISPATCH_CHUNK: u64 = 256;
/// Results recorded per transaction at most.
const RECORD_GROUP: usize = 256;
/// How often results are recorded and the clock is looked at.
const TICK: Duration = Duration::from_millis(100);
/// Largest answer body read for a line.
const MAX_ANSWER: usize = 64 << 20;

/// What a line's task reports.
enum Event {
    /// The line ended (answered or failed for good).
    Done(LineResult),
    /// The network had no room for it; it will be sent again.
    Refused,
}

/// Runs batch `id` to its end (or until the gateway stops); a batch that cannot run is
/// marked failed with the reason.
pub(super) async fn run_batch(b: Arc<Batches>, id: String, wake: Arc<Notify>) {
    let span = tracing::info_span!("batch", batch = %id);
    async {
        if let Err(e) = drive(&b, &id, &wake).await {
            warn!(error = %e, "batch failed");
            if let Err(e) = b.store.fail(&id, &e.to_string(), now()) {
                warn!(error = %e, "cannot record the failure");
            }
        }
    }
    .instrument(span)
    .await
}

async fn drive(b: &Arc<Batches>, id: &str, wake: &Notify) -> Result<(), BatchError> {
    let Some(batch) = b.store.batch(id)? else {
        return Ok(());
    };
    let end = match batch.status {
        Status::Validating | Status::InProgress => {
            if batch.status == Status::Validating {
                b.store.set_status(id, Status::InProgress, now())?;
            }
            run_lines(b, &batch, wake).await?
        }
        Status::Cancelling => Status::Cancelled,
        Status::Finalizing => Status::Completed,
        _ => return Ok(()),
    };
    let end = match (end, b.store.batch(id)?.map(|r| r.status)) {
        (Status::Completed, Some(Status::Cancelling)) => Status::Cancelled,
        (end, _) => end,
    };
    if end != Status::Completed {
        close_unrun(b, &batch, end).await?;
    } else {
        b.store.set_status(id, Status::Finalizing, now())?;
    }
    let this = b.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || write_outputs(&this, &id, end))
        .await
        .map_err(|e| BatchError::Io(std::io::Error::other(e.to_string())))?
}

/// The request id of line `index` of a batch: fixed, so that the line sent again after a
/// restart is the same request to the proxy.
pub fn line_request_id(secret: &[u8; 32], index: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cocoon-rs batch line\0");
    h.update(secret);
    h.update(index.to_le_bytes());
    h.finalize().into()
}

/// Sends every line without a result; returns how the batch ended: `Completed` (every
/// line has a result), `Cancelled` or `Expired`.
async fn run_lines(
    b: &Arc<Batches>,
    batch: &BatchRow,
    wake: &Notify,
) -> Result<Status, BatchError> {
    let id = batch.id.as_str();
    let total = usize::try_from(batch.total).unwrap_or(usize::MAX);
    let mut done = vec![false; total];
    let mut already = 0u64;
    for line in b.store.done_lines(id)? {
        if let Some(d) = usize::try_from(line).ok().and_then(|i| done.get_mut(i)) {
            *d = true;
            already += 1;
        }
    }
    if already > 0 || batch.dispatched > 0 {
        info!(
            done = already,
            total = batch.total,
            "resuming where the batch stopped"
        );
    }
    let file = tokio::fs::File::open(b.file_path(&batch.input_file_id))
        .await
        .map_err(|e| {
            BatchError::Io(std::io::Error::new(
                e.kind(),
                format!("input file {}: {e}", batch.input_file_id),
            ))
        })?;
    let mut reader = tokio::io::BufReader::with_capacity(1 << 16, file);
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let (stopping, stop_rx) = watch::channel(None);
    let most = match batch.concurrency {
        Some(c) => b.config.max_concurrency.min(c as usize),
        None => b.config.max_concurrency,
    };
    let mut window = Window::new(most);
    let mut in_flight = 0usize;
    let mut pending: Vec<LineResult> = Vec::new();
    let mut dispatched = batch.dispatched;
    let mut index = 0u64;
    let mut eof = false;
    let mut stop: Option<Status> = None;
    let mut buf = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        while stop.is_none() && !eof && in_flight < window.limit() {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).await? == 0 {
                eof = true;
                break;
            }
            if is_blank(&buf) {
                continue;
            }
            let i = index;
            index += 1;
            if usize::try_from(i).ok().and_then(|i| done.get(i)).copied() != Some(false) {
                continue;
            }
            if now() >= batch.expires_at {
                stop = Some(Status::Expired);
                break;
            }
            if i >= dispatched {
                dispatched = (i + DISPATCH_CHUNK).min(batch.total);
                b.store.set_dispatched(id, dispatched)?;
            }
            let permit = b
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| BatchError::Conflict("the gateway is stopping".into()))?;
            let line = Arc::new(std::mem::take(&mut buf));
            let task = LineTask {
                key: batch
                    .api_key
                    .as_deref()
                    .and_then(|name| b.node.api_keys()?.by_name(name)),
                b: b.clone(),
                batch_secret: batch.secret,
                max_coefficient: batch.max_coefficient,
                index: i,
                may_have_run: i < batch.dispatched,
                events: tx.clone(),
                stop: stop_rx.clone(),
            };
            in_flight += 1;
            tokio::spawn(async move {
                task.run(&line).await;
                drop(permit);
            });
        }
        if stop.is_some() && stopping.borrow().is_none() {
            stopping.send_replace(stop);
        }
        if in_flight == 0 && (eof || stop.is_some()) {
            break;
        }
        tokio::select! {
            event = rx.recv() => match event {
                Some(Event::Done(result)) => {
                    in_flight -= 1;
                    if result.ok {
                        window.answered();
                    }
                    pending.push(result);
                    if pending.len() >= RECORD_GROUP {
                        b.store.record(id, &std::mem::take(&mut pending))?;
                    }
                }
                Some(Event::Refused) => window.refused(in_flight),
                None => break,
            },
            () = wake.notified() => {
                if b.store.batch(id)?.is_some_and(|r| r.status == Status::Cancelling) {
                    info!("cancelled: no new lines start; running ones finish");
                    stop = Some(Status::Cancelled);
                }
            }
            _ = tick.tick() => {
                if !pending.is_empty() {
                    b.store.record(id, &std::mem::take(&mut pending))?;
                }
                if stop.is_none() && now() >= batch.expires_at {
                    stop = Some(Status::Expired);
                }
            }
        }
    }
    if !pending.is_empty() {
        b.store.record(id, &pending)?;
    }
    Ok(stop.unwrap_or(Status::Completed))
}

/// One line on its way through the network.
struct LineTask {
    b: Arc<Batches>,
    /// The API key the batch was created with: the line is charged to it (and refused
    /// once it is revoked or over its limit).
    key: Option<Arc<crate::client::keys::Key>>,
    batch_secret: [u8; 32],
    max_coefficient: Option<u32>,
    index: u64,
    /// The line was (perhaps) sent before the gateway restarted.
    may_have_run: bool,
    events: mpsc::UnboundedSender<Event>,
    /// Set when the batch stops (cancelled, expired): a line still waiting for room gives
    /// up; one on its way finishes.
    stop: watch::Receiver<Option<Status>>,
}

/// How a line's request ended.
enum Answer {
    /// An HTTP answer (the body as received).
    Http(StatusCode, Vec<u8>),
    /// No answer to write: an error code and message for the error file.
    None(&'static str, String),
}

impl LineTask {
    async fn run(self, raw: &[u8]) {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let key = line_request_id(&self.batch_secret, self.index);
        let (custom_id, answer) = match parse(raw) {
            // Checked at upload: only a file changed on disk since gets here.
            Err(e) => (Value::Null, Answer::None("invalid_line", e)),
            Ok(line) => {
                let custom_id = Value::String(line.custom_id.clone());
                let mut body = line.body;
                if let Some(c) = self.max_coefficient {
                    body.entry("max_coefficient").or_insert(json!(c));
                }
                let body = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
                (custom_id, self.send(&line.url, body, key).await)
            }
        };
        let result = record(self.index, &key, custom_id, answer);
        let _ = self.events.send(Event::Done(result));
    }

    /// Sends the line until it is answered or fails for good: refused for lack of room
    /// (429), it waits and goes again for as long as the batch runs; after another
    /// transient failure (502, 503, 504) it goes again up to `attempts` times.
    async fn send(&self, url: &str, body: Vec<u8>, key: [u8; 32]) -> Answer {
        if self.may_have_run && !self.network_answers_once().await {
            return Answer::None(
                "in_doubt",
                "this line was running when the gateway stopped, and the proxy cannot answer a \
                 request once (it is not cocoon-rs): it was not sent again so that it is not \
                 paid twice"
                    .into(),
            );
        }
        let attempts = self.b.config.attempts.max(1);
        let mut failures = 0;
        let mut backoff = Duration::from_millis(250);
        let mut no_room = NO_ROOM_FIRST_WAIT;
        loop {
            if let Some(stopped) = *self.stop.borrow() {
                return stopped_answer(stopped);
            }
            let mut request = Request::builder()
                .method("POST")
                .uri(url)
                .header(header::CONTENT_TYPE, "application/json")
                .extension(AnswerOnce(key));
            if let Some(k) = &self.key {
                request = request.extension(k.clone());
            }
            let request = request.body(Body::from(body.clone()));
            let request = match request {
                Ok(r) => r,
                Err(e) => return Answer::None("invalid_line", e.to_string()),
            };
            let response = match self.b.api.clone().oneshot(request).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let status = response.status();
            let bytes = match axum::body::to_bytes(response.into_body(), MAX_ANSWER).await {
                Ok(b) => b.to_vec(),
                Err(e) => return Answer::None("answer_unreadable", e.to_string()),
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                // No room in the network now: not a failure of the line.
                let _ = self.events.send(Event::Refused);
                let jitter = no_room.mul_f64(rand::random::<f64>() * 0.5);
                tokio::time::sleep(no_room + jitter).await;
                no_room = (no_room * 2).min(NO_ROOM_LAST_WAIT);
                continue;
            }
            if !is_transient(status) {
                return Answer::Http(status, bytes);
            }
            failures += 1;
            if failures >= attempts {
                return Answer::Http(status, bytes);
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Whether every open proxy session answers a request once (waits up to 30 s for a
    /// session while the gateway connects).
    async fn network_answers_once(&self) -> bool {
        for _ in 0..300 {
            let sessions = self.b.node.open_sessions();
            if !sessions.is_empty() {
                return sessions.iter().all(|s| s.answers_once());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// A failure worth sending the line again for: the way or the model unavailable (502,
/// 503), or a time out (504).
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// A line refused for lack of room waits this long first, then twice as long each time,
/// up to [`NO_ROOM_LAST_WAIT`].
const NO_ROOM_FIRST_WAIT: Duration = Duration::from_millis(10);
/// See [`NO_ROOM_FIRST_WAIT`].
const NO_ROOM_LAST_WAIT: Duration = Duration::from_secs(1);

/// The answer of a line that was waiting for room when its batch stopped.
fn stopped_answer(stopped: Status) -> Answer {
    match stopped {
        Status::Expired => Answer::None(
            "batch_expired",
            "this request could not be run before the batch's completion window ended".into(),
        ),
        _ => Answer::None(
            "batch_cancelled",
            "the batch was cancelled before this request ran".into(),
        ),
    }
}

/// The output or error line of a finished line, in OpenAI's format, with its cost.
fn record(index: u64, key: &[u8; 32], custom_id: Value, answer: Answer) -> LineResult {
    let id = format!("batch_req_{}", hex::encode(&key[..12]));
    let (ok, line, cost, input_tokens, output_tokens) = match answer {
        Answer::Http(status, body) => {
            let parsed: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let usage = &parsed["usage"];
            let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
            let ok = status == StatusCode::OK;
            let (cost, input, output) = if ok {
                (n("total_cost"), n("prompt_tokens"), n("completion_tokens"))
            } else {
                (0, 0, 0)
            };
            let line = json!({
                "id": id,
                "custom_id": custom_id,
                "response": {
                    "status_code": status.as_u16(),
                    "request_id": hex::encode(key),
                    "body": parsed,
                },
                "error": null,
            });
            (ok, line, cost, input, output)
        }
        Answer::None(code, message) => (
            false,
            json!({
                "id": id,
                "custom_id": custom_id,
                "response": null,
                "error": {"code": code, "message": message},
            }),
            0,
            0,
            0,
        ),
    };
    LineResult {
        line: index,
        ok,
        record: serde_json::to_vec(&line).unwrap_or_default(),
        cost,
        input_tokens,
        output_tokens,
    }
}

/// A cancelled or expired batch: every line that did not run gets an error line, so that
/// each `custom_id` comes back exactly once.
async fn close_unrun(b: &Arc<Batches>, batch: &BatchRow, end: Status) -> Result<(), BatchError> {
    let (code, message) = match end {
        Status::Expired => (
            "batch_expired",
            "this request could not be run before the batch's completion window ended",
        ),
        _ => (
            "batch_cancelled",
            "the batch was cancelled before this request ran",
        ),
    };
    let total = usize::try_from(batch.total).unwrap_or(usize::MAX);
    let mut done = vec![false; total];
    for line in b.store.done_lines(&batch.id)? {
        if let Some(d) = usize::try_from(line).ok().and_then(|i| done.get_mut(i)) {
            *d = true;
        }
    }
    let file = tokio::fs::File::open(b.file_path(&batch.input_file_id)).await?;
    let mut reader = tokio::io::BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut index = 0u64;
    let mut group = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).await? == 0 {
            break;
        }
        if is_blank(&buf) {
            continue;
        }
        let i = index;
        index += 1;
        if usize::try_from(i).ok().and_then(|i| done.get(i)).copied() != Some(false) {
            continue;
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let custom_id = parse(text.strip_suffix(b"\r").unwrap_or(text))
            .map(|l| Value::String(l.custom_id))
            .unwrap_or(Value::Null);
        let key = line_request_id(&batch.secret, i);
        group.push(record(
            i,
            &key,
            custom_id,
            Answer::None(code, message.into()),
        ));
        if group.len() >= RECORD_GROUP {
            b.store.record(&batch.id, &std::mem::take(&mut group))?;
        }
    }
    b.store.record(&batch.id, &group)?;
    Ok(())
}

/// Writes the output and error files from the recorded results (line order), then records
/// them and the batch's end in one transaction.
fn write_outputs(b: &Batches, id: &str, end: Status) -> Result<(), BatchError> {
    struct Out {
        id: String,
        path: std::path::PathBuf,
        file: Option<std::io::BufWriter<std::fs::File>>,
        lines: u64,
        bytes: u64,
    }
    let open = |b: &Batches| {
        let id = new_id("file-");
        let path = b.file_path(&id).with_extension("part");
        Out {
            id,
            path,
            file: None,
            lines: 0,
            bytes: 0,
        }
    };
    let (mut ok_out, mut err_out) = (open(b), open(b));
    b.store.each_result(id, |ok, record| {
        let out = if ok { &mut ok_out } else { &mut err_out };
        if out.file.is_none() {
            out.file = Some(std::io::BufWriter::new(std::fs::File::create(&out.path)?));
        }
        if let Some(f) = &mut out.file {
            f.write_all(record)?;
            f.write_all(b"\n")?;
        }
        out.lines += 1;
        out.bytes += record.len() as u64 + 1;
        Ok(())
    })?;
    let mut rows = Vec::new();
    for (out, name) in [(&mut ok_out, "output"), (&mut err_out, "errors")] {
        let Some(f) = out.file.take() else {
            rows.push(None);
            continue;
        };
        let f = f.into_inner().map_err(|e| BatchError::Io(e.into_error()))?;
        f.sync_all()?;
        std::fs::rename(&out.path, b.file_path(&out.id))?;
        rows.push(Some(FileRow {
            id: out.id.clone(),
            filename: format!("{id}_{name}.jsonl"),
            purpose: "batch_output".into(),
            bytes: out.bytes,
            created_at: now(),
            lines: out.lines,
            urls: Vec::new(),
        }));
    }
    b.store
        .finish(id, end, rows[0].as_ref(), rows[1].as_ref(), now())?;
    info!(
        status = end.as_str(),
        answered = ok_out.lines,
        failed = err_out.lines,
        "batch ended"
    );
    Ok(())
}
