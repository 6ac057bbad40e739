//! The batch benchmark (issue #17): a batch of N lines through a client gateway's Batch
//! API with 1, 2, 4… workers behind one proxy, against the mock upstream answering each
//! request after a fixed delay, beside two hand-written loops of plain requests in the same
//! run (one request at a time, and 16 at a time retrying refusals), with the gateway's CPU
//! and memory per line.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::mock::MODEL;
use crate::procs;

/// One measured configuration.
#[derive(Debug, Clone, Default)]
pub struct BatchRow {
    /// Workers behind the proxy.
    pub workers: usize,
    /// What the upstream allows: workers × their request limit ÷ the delay (lines/s).
    pub bound: f64,
    /// One request at a time (lines/s).
    pub sequential: f64,
    /// 16 requests at a time, refusals retried (lines/s).
    pub loop16: f64,
    /// The batch, from creation to completion (lines/s).
    pub batch: f64,
    /// Lines the batch answered (must be all of them).
    pub answered: u64,
    /// Gateway CPU per batch line (µs).
    pub gateway_cpu_us: f64,
    /// Gateway resident memory before the batch and its peak during it (KiB).
    pub gateway_rss_kib: (u64, u64),
}

/// The body of every request: a chat completion the mock answers after `delay_ms`.
pub fn body(delay_ms: u64) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}],
           "max_tokens": 100, "mock": {"delay_ms": delay_ms}})
}

/// Writes a batch input of `lines` requests to `path`.
pub fn write_input(path: &Path, lines: usize, delay_ms: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let body = body(delay_ms);
    for i in 0..lines {
        let line = json!({"custom_id": format!("line-{i}"), "method": "POST",
                          "url": "/v1/chat/completions", "body": body});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// `requests` plain requests, `concurrency` at a time, each refusal (429, 503) sent again
/// after 10 ms, as a careful hand-written loop does; lines/s of answered requests.
pub async fn plain_loop(
    http: &reqwest::Client,
    api: &str,
    delay_ms: u64,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<f64> {
    let url: Arc<str> = format!("{api}/chat/completions").into();
    let body = Arc::new(body(delay_ms).to_string());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (http, url, body, next) = (http.clone(), url.clone(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                loop {
                    let r = http
                        .post(&*url)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await?;
                    let status = r.status().as_u16();
                    let _ = r.bytes().await?;
                    match status {
                        200 => break,
                        429 | 503 => tokio::time::sleep(Duration::from_millis(10)).await,
                        other => anyhow::bail!("a plain request answered {other}"),
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("loop task")??;
    }
    Ok(requests as f64 / started.elapsed().as_secs_f64())
}

/// Runs the batch in `input` through the gateway at `api` (whose process is `gateway_pid`);
/// fills the batch columns of `row`.
pub async fn run_batch(
    http: &reqwest::Client,
    api: &str,
    input: &Path,
    gateway_pid: u32,
    row: &mut BatchRow,
) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(input).await?;
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("bench.jsonl"),
        );
    let file: Value = http
        .post(format!("{api}/files"))
        .multipart(form)
        .send()
        .await?
        .json()
        .await?;
    let file_id = file["id"].as_str().context("upload refused")?.to_owned();
    let before = procs::sample(gateway_pid).unwrap_or_default();
    let started = Instant::now();
    let created: Value = http
        .post(format!("{api}/batches"))
        .json(
            &json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"}),
        )
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().context("batch refused")?.to_owned();
    let mut peak = before.rss_kib;
    let end = loop {
        let b: Value = http
            .get(format!("{api}/batches/{id}"))
            .send()
            .await?
            .json()
            .await?;
        peak = peak.max(procs::sample(gateway_pid).map(|s| s.rss_kib).unwrap_or(0));
        match b["status"].as_str() {
            Some("completed") => break b,
            Some("failed" | "expired" | "cancelled") => bail!("the batch ended {b}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let after = procs::sample(gateway_pid).unwrap_or_default();
    let total = end["request_counts"]["total"].as_u64().unwrap_or(0);
    row.answered = end["request_counts"]["completed"].as_u64().unwrap_or(0);
    row.batch = total as f64 / elapsed;
    row.gateway_cpu_us =
        after.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1e3 / total.max(1) as f64;
    row.gateway_rss_kib = (before.rss_kib, peak.max(after.rss_kib));
    Ok(())
}

/// The Markdown report.
pub fn markdown(setup: &[String], rows: &[BatchRow]) -> String {
    let mut out = String::from("## Batch benchmark\n\n");
    for s in setup {
        out.push_str(&format!("- {s}\n"));
    }
    out.push_str(
        "\n| workers | upstream bound | sequential loop | 16-at-a-time loop | batch | batch ÷ best loop | batch ÷ bound | gateway CPU per line | gateway RSS before → peak |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let best = r.sequential.max(r.loop16);
        out.push_str(&format!(
            "| {} | {:.0}/s | {:.1}/s | {:.0}/s | {:.0}/s | {:.2}× | {:.2}× | {:.0} µs | {:.1} → {:.1} MiB |\n",
            r.workers,
            r.bound,
            r.sequential,
            r.loop16,
            r.batch,
            r.batch / best.max(f64::MIN_POSITIVE),
            r.batch / r.bound.max(f64::MIN_POSITIVE),
            r.gateway_cpu_us,
            r.gateway_rss_kib.0 as f64 / 1024.0,
            r.gateway_rss_kib.1 as f64 / 1024.0,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_is_one_batch_line_per_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.jsonl");
        write_input(&path, 3, 20).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["custom_id"], "line-2");
        assert_eq!(lines[0]["body"]["mock"]["delay_ms"], 20);
    }

    #[test]
    fn the_report_shows_ratios_to_the_best_loop_and_the_bound() {
        let row = BatchRow {
            workers: 2,
            bound: 400.0,
            sequential: 19.0,
            loop16: 300.0,
            batch: 330.0,
            answered: 10,
            gateway_cpu_us: 250.0,
            gateway_rss_kib: (10 * 1024, 12 * 1024),
        };
        let text = markdown(&["x".into()], &[row]);
        assert!(
            text.contains(
                "| 2 | 400/s | 19.0/s | 300/s | 330/s | 1.10× | 0.82× | 250 µs | 10.0 → 12.0 MiB |"
            ),
            "{text}"
        );
    }
}
