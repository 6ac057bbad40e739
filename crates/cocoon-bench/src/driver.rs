//! The load driver: a fixed number of requests at a fixed concurrency against one base
//! URL, timing each request and, for streams, each chunk.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use crate::mock::{unix_nanos, MODEL};

/// What each request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// `true` for an SSE stream, `false` for one JSON answer.
    pub stream: bool,
    /// Content chunks per stream (ignored for JSON).
    pub chunks: u64,
    /// Microseconds between the mock's chunks (0 = as fast as read).
    pub interval_us: u64,
}

impl Workload {
    /// A non-streaming chat completion.
    pub fn json() -> Self {
        Workload {
            stream: false,
            chunks: 0,
            interval_us: 0,
        }
    }

    /// A streaming chat completion of `chunks` chunks, one every `interval_us` µs.
    pub fn stream(chunks: u64, interval_us: u64) -> Self {
        Workload {
            stream: true,
            chunks,
            interval_us,
        }
    }

    /// The short name used in reports: `json` or `stream`.
    pub fn name(&self) -> &'static str {
        if self.stream {
            "stream"
        } else {
            "json"
        }
    }

    /// The request body (an OpenAI chat completion with the mock's parameters).
    pub fn body(&self) -> Bytes {
        let body = json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Say hello in one short sentence."}
            ],
            "max_tokens": 100,
            "stream": self.stream,
            "mock": {"chunks": self.chunks, "interval_us": self.interval_us},
        });
        Bytes::from(body.to_string())
    }
}

/// The HTTP client the driver uses for every path (HTTP/1.1 keep-alive, no proxy).
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
}

/// What one run measured. Times are in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Requests attempted.
    pub requests: usize,
    /// Latency of each successful request (send to end of body).
    pub latencies: Vec<u64>,
    /// Streams: time from sending to the first content chunk, per request.
    pub first_chunk: Vec<u64>,
    /// Streams: for each content chunk, its arrival time minus the time the upstream
    /// produced it.
    pub chunk_latencies: Vec<u64>,
    /// Streams: content chunks received.
    pub chunks: u64,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Requests that failed.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

impl RunResult {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.latencies.len() as f64 / secs
        } else {
            0.0
        }
    }

    fn merge(&mut self, other: RunResult) {
        self.latencies.extend(other.latencies);
        self.first_chunk.extend(other.first_chunk);
        self.chunk_latencies.extend(other.chunk_latencies);
        self.chunks += other.chunks;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The `q` quantile (0..=1) of `values` in milliseconds (sorts in place); `None` if empty.
pub fn quantile_ms(values: &mut [u64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1] as f64 / 1e6)
}

/// Runs `requests` requests of `workload` against `base` (`http://host:port`), keeping
/// `concurrency` in flight.
pub async fn run(
    client: &reqwest::Client,
    base: &str,
    workload: Workload,
    concurrency: usize,
    requests: usize,
) -> RunResult {
    let url: Arc<str> = format!("{}/v1/chat/completions", base.trim_end_matches('/')).into();
    let body = workload.body();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let client = client.clone();
        let url = url.clone();
        let body = body.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = RunResult::default();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                match one_request(&client, &url, body.clone(), workload.stream, &mut out).await {
                    Ok(()) => {}
                    Err(e) => {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(e);
                        }
                    }
                }
            }
            out
        }));
    }
    let mut total = RunResult {
        requests,
        ..RunResult::default()
    };
    for task in tasks {
        match task.await {
            Ok(part) => total.merge(part),
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    total.wall = started.elapsed();
    total
}

/// Sends one request and records its timings into `out`.
async fn one_request(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    stream: bool,
    out: &mut RunResult,
) -> Result<(), String> {
    let start = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", text.trim()));
    }
    if !stream {
        let bytes = response.bytes().await.map_err(|e| format!("body: {e}"))?;
        let elapsed = start.elapsed();
        if !contains(&bytes, b"\"usage\"") {
            return Err("answer without usage".into());
        }
        out.latencies.push(duration_ns(elapsed));
        return Ok(());
    }
    let mut events = SseEvents::default();
    let mut first = None;
    let mut done = false;
    let mut body = response.bytes_stream();
    while let Some(frame) = body.next().await {
        let frame = frame.map_err(|e| format!("stream: {e}"))?;
        let now_unix = unix_nanos();
        let elapsed = start.elapsed();
        events.push(&frame, |event| {
            if let Some(ts) = chunk_timestamp(event) {
                first.get_or_insert(elapsed);
                out.chunks += 1;
                out.chunk_latencies.push(now_unix.saturating_sub(ts));
            } else if event.starts_with(b"data: [DONE]") {
                done = true;
            }
        });
    }
    let elapsed = start.elapsed();
    if !done {
        return Err("stream ended without [DONE]".into());
    }
    if let Some(first) = first {
        out.first_chunk.push(duration_ns(first));
    }
    out.latencies.push(duration_ns(elapsed));
    Ok(())
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Splits an SSE byte stream into events (separated by a blank line).
#[derive(Debug, Default)]
pub struct SseEvents {
    pending: Vec<u8>,
}

impl SseEvents {
    /// Adds `data` and calls `on_event` for every event completed by it.
    pub fn push(&mut self, data: &[u8], mut on_event: impl FnMut(&[u8])) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.pending[start..].windows(2).position(|w| w == b"\n\n") {
            let end = start + pos;
            let event = &self.pending[start..end];
            let event = event.strip_prefix(b"\n").unwrap_or(event);
            if !event.is_empty() {
                on_event(event);
            }
            start = end + 2;
        }
        self.pending.drain(..start);
    }
}

/// The production time the mock put into a chunk's id (`"id":"ts-NANOS"`).
pub fn chunk_timestamp(event: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"id\":\"ts-";
    let at = event.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = event[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&event[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_across_frames() {
        let mut sse = SseEvents::default();
        let mut seen = Vec::new();
        sse.push(b"data: {\"id\":\"ts-12\"}\n\nda", |e| seen.push(e.to_vec()));
        sse.push(b"ta: [DONE]\n", |e| seen.push(e.to_vec()));
        sse.push(b"\n", |e| seen.push(e.to_vec()));
        assert_eq!(
            seen,
            vec![
                b"data: {\"id\":\"ts-12\"}".to_vec(),
                b"data: [DONE]".to_vec()
            ]
        );
        assert_eq!(chunk_timestamp(&seen[0]), Some(12));
        assert_eq!(chunk_timestamp(&seen[1]), None);
    }

    #[test]
    fn quantiles() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        assert_eq!(quantile_ms(&mut v, 0.5), Some(50.0));
        assert_eq!(quantile_ms(&mut v, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&mut [], 0.5), None);
    }
}
