//! A 1,000-line batch through `cocoon devnet` (embedded TVM chain, mock upstream that
//! records every call) with the whole devnet killed (`kill -9`) in the middle and started
//! again: the batch resumes by itself and ends with every line answered once in the output
//! and billed once in the proxy's ledger; the batch's cost is the sum of its lines' costs
//! and what the client contract was charged on chain. Then `cocoon batch` itself: `run`
//! (plain progress when stdout is not a terminal), `status`, `list`, `download`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cocoon_ton::local::LocalChain;
use serde_json::{json, Value};

mod common;
use common::{free_port, mock_upstream, stop, Proc, MODEL};

const COCOON: &str = env!("CARGO_BIN_EXE_cocoon");
const PRICE: u64 = 3;
const FEE: u64 = 2;
const LINES: usize = 1000;

fn start_devnet(state: &Path, upstream: SocketAddr, port: u16, log: PathBuf) -> Proc {
    common::start_devnet(COCOON, state, upstream, port, log, PRICE, FEE, &[])
}

fn input_line(i: usize) -> String {
    json!({"custom_id": format!("line-{i}"), "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": MODEL, "messages": [{"role": "user", "content": format!("question {i}")}],
                    "mock": {"delay_ms": 25}}})
    .to_string()
}

/// How often the mock upstream was asked each question.
fn calls_per_line() -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for body in common::chat_requests() {
        if let Some(q) = body["messages"][0]["content"].as_str() {
            *calls.entry(q.to_owned()).or_default() += 1;
        }
    }
    calls
}

async fn batch(http: &reqwest::Client, api: &str, id: &str) -> Option<Value> {
    let r = http
        .get(format!("{api}/batches/{id}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(COCOON)
        .args(args)
        .output()
        .expect("cocoon batch");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_kill_9_with_every_line_answered_and_billed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let upstream = mock_upstream().await;
    let port = free_port();
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/v1");
    let input = dir.path().join("input.jsonl");
    let text: Vec<String> = (0..LINES).map(input_line).collect();
    std::fs::write(&input, text.join("\n") + "\n").expect("input");

    let devnet = start_devnet(&state, upstream, port, dir.path().join("devnet1.log"));
    let id = common::submit_batch(&http, &api, &text).await;

    // Kill the whole devnet (proxy, workers, gateway, chain) once a third is answered.
    let start = Instant::now();
    let at_kill = loop {
        let done = batch(&http, &api, &id)
            .await
            .and_then(|b| b["request_counts"]["completed"].as_u64())
            .unwrap_or(0);
        if done >= (LINES / 3) as u64 {
            break done;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the batch progresses"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::task::spawn_blocking(move || stop(devnet, "-KILL"))
        .await
        .expect("killed");
    assert!(
        (at_kill as usize) < LINES,
        "killed in the middle ({at_kill} done)"
    );

    // Started again, the gateway resumes the batch by itself.
    let devnet = start_devnet(&state, upstream, port, dir.path().join("devnet2.log"));
    let start = Instant::now();
    let end = loop {
        if let Some(b) = batch(&http, &api, &id).await {
            if b["status"] == "completed" {
                break b;
            }
            assert!(
                !matches!(
                    b["status"].as_str(),
                    Some("failed" | "expired" | "cancelled")
                ),
                "{b}"
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the batch completes after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        end["request_counts"],
        json!({"total": LINES, "completed": LINES, "failed": 0}),
        "{end}"
    );

    // `cocoon batch download` writes every answer; each custom_id exactly once.
    let out = dir.path().join("out.jsonl");
    let (ok, text) = cli(&[
        "batch",
        "download",
        &id,
        "-o",
        out.to_str().expect("utf8"),
        "--api",
        &api,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("{LINES} answers")), "{text}");
    let answers: Vec<Value> = std::fs::read_to_string(&out)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(answers.len(), LINES);
    let mut seen = std::collections::BTreeSet::new();
    let mut cost = 0;
    for a in &answers {
        assert_eq!(a["response"]["status_code"], 200, "{a}");
        assert!(
            seen.insert(a["custom_id"].as_str().expect("id").to_owned()),
            "{a}"
        );
        cost += a["response"]["body"]["usage"]["total_cost"]
            .as_u64()
            .expect("cost");
    }
    assert_eq!(
        end["cost_nanoton"], cost,
        "the batch's cost is the sum of its lines'"
    );

    // The model server: every line asked at least once; only lines that were running at
    // the kill can have been asked twice (their work was lost with the process).
    let calls = calls_per_line();
    assert_eq!(calls.len(), LINES, "every line reached the model");
    let twice = calls.values().filter(|&&n| n > 1).count();
    eprintln!("killed with {at_kill} of {LINES} lines answered; {twice} lines asked twice");
    assert!(
        twice <= 64,
        "{twice} lines asked twice: no more than were in flight"
    );
    assert!(calls.values().all(|&n| n <= 2));

    // `cocoon batch run` on a small file, then status and list.
    let small = dir.path().join("small.jsonl");
    let small_lines: Vec<String> = (0..20).map(|i| input_line(LINES + i)).collect();
    std::fs::write(&small, small_lines.join("\n")).expect("small");
    let small_out = dir.path().join("small-out.jsonl");
    let (ok, text) = cli(&[
        "batch",
        "run",
        small.to_str().expect("utf8"),
        "-o",
        small_out.to_str().expect("utf8"),
        "--dir",
        state.to_str().expect("utf8"),
        "--concurrency",
        "4",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("20/20 lines"), "plain progress: {text}");
    assert!(text.contains("20 answers in"), "{text}");
    let small_answers = std::fs::read_to_string(&small_out).expect("small output");
    assert_eq!(small_answers.lines().count(), 20);
    let (ok, text) = cli(&["batch", "status", &id, "--api", &api]);
    assert!(
        ok && text.contains("completed") && text.contains(&format!("{cost} nanoTON")),
        "{text}"
    );
    let (ok, text) = cli(&["batch", "list", "--api", &api]);
    assert!(ok && text.contains(&id), "{text}");
    // The proxy's demand, as a GPU owner reads it: the model served, lines routed.
    let (ok, text) = cli(&["worker", "demand", "--dir", state.to_str().expect("utf8")]);
    assert!(
        ok && text.contains(&format!("{MODEL}: served: 2 workers")),
        "{text}"
    );
    let (ok, text) = cli(&[
        "worker",
        "demand",
        "--json",
        "--dir",
        state.to_str().expect("utf8"),
    ]);
    let demand: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    assert!(
        ok && demand["models"][0]["recent"]["routed"].as_u64() >= Some(20),
        "{demand}"
    );
    let (ok, text) = cli(&["batch", "cancel", &id, "--api", &api]);
    assert!(!ok && text.contains("can no longer be cancelled"), "{text}");
    let small_cost: u64 = small_answers
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("line");
            v["response"]["body"]["usage"]["total_cost"]
                .as_u64()
                .expect("cost")
        })
        .sum();

    tokio::task::spawn_blocking(move || stop(devnet, "-INT"))
        .await
        .expect("stopped");

    // Billed once: the ledger holds one booking per answered line, and the client contract
    // was charged on chain exactly what the batches cost.
    let proxy_key = cocoon_node::config::load_or_create_key(&state.join("keys/proxy_key.pem"))
        .expect("proxy key");
    let ledger = cocoon_node::ledger::Ledger::open(&state.join("proxy-ledger.sqlite"), &proxy_key)
        .expect("ledger opens and verifies");
    assert_eq!(ledger.request_count().expect("count"), (LINES + 20) as u64);
    let chain = LocalChain::open(state.join("chain")).expect("chain");
    let (_, client) = common::client_contract(&state, &chain).await;
    assert_eq!(
        client.tokens_used * PRICE,
        cost + small_cost,
        "charged on chain = what the batches cost"
    );
    drop(chain);
    common::assert_money_balances(&state, PRICE, FEE).await;
}
