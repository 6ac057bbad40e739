//! Batches on one loopback network: the proxy answers a request sent to be answered once
//! at most once (the same id again gets the kept answer, billed nothing), and the gateway's
//! Batch API refuses bad input precisely, runs lines, fails lines alone, and cancels.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cocoon_node::client::batch::{BatchConfig, Batches};
use cocoon_node::client::gateway::GatewaySettings;
use cocoon_node::protocol::Refusal;
use common::*;
use serde_json::{json, Value};

fn once(body: Value, id: [u8; 32]) -> cocoon_node::client::QueryRequest {
    let mut r = chat_request(body, 4000);
    r.answer_once = Some(id);
    r
}

#[tokio::test]
async fn a_request_sent_to_be_answered_once_is_run_and_billed_once() {
    let net = start_network(&[WorkerSpec::new("w1", 1000)]).await;
    net.wait_ready(1).await;
    let session = net.client(4).await;
    assert!(
        session.answers_once(),
        "a cocoon-rs proxy accepts the extension"
    );
    let ledger = net.proxy.ledger().clone();

    let first = collect(&session, once(chat_body(false, json!({})), [7; 32])).await;
    assert!(first.error.is_none(), "{:?}", first.error);
    let tokens = first.done.as_ref().expect("done").tokens.total();
    assert!(tokens > 0);
    assert_eq!(net.upstream.requests.load(Ordering::SeqCst), 1);
    assert_eq!(ledger.request_count().expect("count"), 1);
    let billed = ledger.client_tokens(&party("client-1")).expect("tokens");

    // The same request again, on a new connection as after a crash of the client: the
    // same answer, byte for byte, from the ledger; the model is not asked, nothing billed.
    let again_session = net.client(4).await;
    let again = collect(&again_session, once(chat_body(false, json!({})), [7; 32])).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(again.body, first.body);
    assert_eq!(
        again.head.as_ref().map(|h| h.status_code),
        first.head.as_ref().map(|h| h.status_code)
    );
    assert_eq!(again.done.as_ref().expect("done").tokens.total(), tokens);
    assert_eq!(net.upstream.requests.load(Ordering::SeqCst), 1);
    assert_eq!(ledger.request_count().expect("count"), 1);
    assert_eq!(
        ledger.client_tokens(&party("client-1")).expect("tokens"),
        billed
    );
    assert_eq!(
        net.proxy.stats().requests_replayed.load(Ordering::Relaxed),
        1
    );

    // Another id, or another client with the same id, is another request.
    let other = collect(&session, once(chat_body(false, json!({})), [8; 32])).await;
    assert!(other.error.is_none());
    let stranger = client_to(net.client_addr, 4, "client-2").await;
    let theirs = collect(&stranger, once(chat_body(false, json!({})), [7; 32])).await;
    assert!(theirs.error.is_none());
    assert_eq!(net.upstream.requests.load(Ordering::SeqCst), 3);
    assert_eq!(ledger.request_count().expect("count"), 3);

    // Without the extension's id, the same body runs every time.
    for _ in 0..2 {
        let plain = collect(&session, chat_request(chat_body(false, json!({})), 4000)).await;
        assert!(plain.error.is_none());
    }
    assert_eq!(net.upstream.requests.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn the_same_id_while_it_runs_is_refused_and_a_failed_one_may_run_again() {
    let net = start_network(&[WorkerSpec::new("w1", 1000)]).await;
    net.wait_ready(1).await;
    let session = net.client(4).await;
    let slow = once(chat_body(false, json!({"delay_ms": 600})), [9; 32]);
    let running = {
        let session = session.clone();
        let slow = slow.clone();
        tokio::spawn(async move { collect(&session, slow).await })
    };
    let upstream = net.upstream.clone();
    wait_until(move || upstream.requests.load(Ordering::SeqCst) == 1).await;
    let twin = collect(&net.client(4).await, slow.clone()).await;
    let (code, message, _) = twin.error.expect("refused while running");
    assert_eq!(Refusal::classify(code, &message), Refusal::StillRunning);
    let first = running.await.expect("task");
    assert!(first.error.is_none());
    assert_eq!(net.upstream.requests.load(Ordering::SeqCst), 1);

    // A line the model server fails is not kept: sent again, it runs again.
    let failing = once(chat_body(false, json!({"status": 500})), [10; 32]);
    let a = collect(&session, failing.clone()).await;
    let b = collect(&session, failing).await;
    assert!(a.error.is_some() || a.head.as_ref().is_some_and(|h| h.status_code == 500));
    assert!(b.error.is_some() || b.head.as_ref().is_some_and(|h| h.status_code == 500));
    assert_eq!(net.upstream.requests.load(Ordering::SeqCst), 3);
}

/// A gateway with the Batch API in `dir`, on `net`; its base URL and the Batch API.
async fn batch_gateway(net: &Net, config: BatchConfig) -> (String, Arc<Batches>) {
    let (_, node) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let batches = Batches::start(config, node.clone()).expect("batch store");
    (serve_batch_gateway(&node, &batches).await, batches)
}

fn line(id: &str, body: Value) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions", "body": body})
        .to_string()
}

fn body(mock: Value) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "mock": mock})
}

async fn upload(http: &reqwest::Client, api: &str, text: String, purpose: &str) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .text("purpose", purpose.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::bytes(text.into_bytes()).file_name("input.jsonl"),
        );
    let r = http
        .post(format!("{api}/files"))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

async fn finished(http: &reqwest::Client, api: &str, id: &str) -> Value {
    for _ in 0..600 {
        let b = get_json(http, &format!("{api}/batches/{id}")).await;
        if matches!(
            b["status"].as_str(),
            Some("completed" | "failed" | "expired" | "cancelled")
        ) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("batch {id} did not end within 30 s");
}

async fn lines_of(http: &reqwest::Client, api: &str, file: &Value) -> Vec<Value> {
    let Some(id) = file.as_str() else {
        return Vec::new();
    };
    let text = http
        .get(format!("{api}/files/{id}/content"))
        .send()
        .await
        .expect("content")
        .text()
        .await
        .expect("text");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn bad_batch_input_is_refused_with_what_is_wrong() {
    let net = start_network(&[WorkerSpec::new("w1", 1000)]).await;
    net.wait_ready(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BatchConfig::in_dir(dir.path().to_path_buf());
    config.max_file_bytes = 2000;
    config.max_lines = 5;
    let (api, _batches) = batch_gateway(&net, config).await;
    let http = reqwest::Client::new();
    let good = line("a", body(json!({})));

    let (status, v) = upload(&http, &api, format!("{good}\n{{\"custom_id\": \n"), "batch").await;
    assert_eq!(status, 400);
    assert!(message(&v).starts_with("line 2: not valid JSON"), "{v}");
    let (status, v) = upload(&http, &api, format!("{good}\n\n{good}\n"), "batch").await;
    assert_eq!(status, 400);
    assert!(
        message(&v).contains("line 3: 'custom_id' \"a\" appears more than once"),
        "{v}"
    );
    let speech = good.replace("/v1/chat/completions", "/v1/audio/speech");
    let (status, v) = upload(&http, &api, speech, "batch").await;
    assert_eq!(status, 400);
    assert!(
        message(&v).contains("not an endpoint batches can use"),
        "{v}"
    );
    let (status, v) = upload(&http, &api, "x".repeat(3000), "batch").await;
    assert_eq!(status, 413);
    assert!(message(&v).contains("larger than 2000 bytes"), "{v}");
    let six: Vec<String> = (0..6).map(|i| line(&format!("l{i}"), json!({}))).collect();
    let (status, v) = upload(&http, &api, six.join("\n"), "batch").await;
    assert_eq!(status, 400);
    assert!(message(&v).contains("more than 5 requests"), "{v}");
    let (status, v) = upload(&http, &api, good.clone(), "fine-tune").await;
    assert_eq!(status, 400);
    assert!(message(&v).contains("purpose \"fine-tune\""), "{v}");
    // Nothing of the refused uploads is kept.
    let files = get_json(&http, &format!("{api}/files")).await;
    assert_eq!(files["data"], json!([]));
    let leftovers = std::fs::read_dir(dir.path().join("files"))
        .expect("dir")
        .count();
    assert_eq!(leftovers, 0);

    let (status, file) = upload(&http, &api, good, "batch").await;
    assert_eq!(status, 200, "{file}");
    let create = |endpoint: &str, file: &str| json!({"input_file_id": file, "endpoint": endpoint, "completion_window": "24h"});
    let id = file["id"].as_str().expect("id");
    let (status, v) = post_json(
        &http,
        &format!("{api}/batches"),
        &create("/v1/audio/speech", id),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message(&v).contains("not one batches can use"), "{v}");
    let (status, v) = post_json(
        &http,
        &format!("{api}/batches"),
        &create("/v1/embeddings", id),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        message(&v).contains("every line must use the batch's endpoint"),
        "{v}"
    );
    let (status, v) = post_json(
        &http,
        &format!("{api}/batches"),
        &create("/v1/chat/completions", "file-nope"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message(&v).contains("is not a file here"), "{v}");
    let mut bad_window = create("/v1/chat/completions", id);
    bad_window["completion_window"] = json!("forever");
    let (status, v) = post_json(&http, &format!("{api}/batches"), &bad_window).await;
    assert_eq!(status, 400);
    assert!(message(&v).contains("completion_window"), "{v}");
    let r = http
        .get(format!("{api}/batches/batch_nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn a_batch_answers_every_line_once_and_adds_up_its_cost() {
    let net = start_network(&[WorkerSpec::new("w1", 1000), WorkerSpec::new("w2", 1000)]).await;
    net.wait_ready(2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (api, _batches) = batch_gateway(&net, BatchConfig::in_dir(dir.path().to_path_buf())).await;
    let http = reqwest::Client::new();
    let mut lines: Vec<String> = (0..40)
        .map(|i| line(&format!("q{i}"), body(json!({}))))
        .collect();
    lines[5] = line("q5", body(json!({"status": 400})));
    let mut unknown = body(json!({}));
    unknown["model"] = json!("no-such-model");
    lines[6] = line("q6", unknown);
    let (status, file) = upload(&http, &api, lines.join("\n") + "\n", "batch").await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["purpose"], "batch");
    let (status, batch) = post_json(
        &http,
        &format!("{api}/batches"),
        &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                "completion_window": "24h", "metadata": {"job": "test"}}),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["request_counts"]["total"], 40);
    let b = finished(&http, &api, batch["id"].as_str().expect("id")).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 40, "completed": 38, "failed": 2})
    );
    assert_eq!(b["metadata"], json!({"job": "test"}));
    let out = lines_of(&http, &api, &b["output_file_id"]).await;
    let errors = lines_of(&http, &api, &b["error_file_id"]).await;
    assert_eq!((out.len(), errors.len()), (38, 2));
    let mut ids: Vec<String> = out
        .iter()
        .chain(&errors)
        .map(|l| l["custom_id"].as_str().expect("custom_id").to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("q{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "every custom_id exactly once");
    let failed: Vec<(&str, u64)> = errors
        .iter()
        .map(|l| {
            (
                l["custom_id"].as_str().expect("id"),
                l["response"]["status_code"].as_u64().expect("status"),
            )
        })
        .collect();
    assert_eq!(failed, vec![("q5", 400), ("q6", 404)]);
    let cost: u64 = out
        .iter()
        .map(|l| {
            assert_eq!(l["response"]["status_code"], 200);
            l["response"]["body"]["usage"]["total_cost"]
                .as_u64()
                .expect("cost")
        })
        .sum();
    assert!(cost > 0);
    assert_eq!(
        b["cost_nanoton"], cost,
        "the batch's cost is the sum of its lines'"
    );
    // Each answered line was booked once: the ledger holds exactly them.
    assert_eq!(net.proxy.ledger().request_count().expect("count"), 38);
    assert_eq!(net.upstream.requests.load(Ordering::SeqCst), 39);

    // The input of a finished batch can be deleted; then it is gone.
    let del = http
        .delete(format!("{api}/files/{}", file["id"].as_str().expect("id")))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status().as_u16(), 200);
    let gone = http
        .get(format!("{api}/files/{}", file["id"].as_str().expect("id")))
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status().as_u16(), 404);
    let listed = get_json(&http, &format!("{api}/batches")).await;
    assert_eq!(listed["data"][0]["id"], b["id"]);
}

#[tokio::test]
async fn a_cancelled_batch_finishes_running_lines_and_returns_the_rest_as_errors() {
    let net = start_network(&[WorkerSpec::new("w1", 1000)]).await;
    net.wait_ready(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (api, _batches) = batch_gateway(&net, BatchConfig::in_dir(dir.path().to_path_buf())).await;
    let http = reqwest::Client::new();
    let lines: Vec<String> = (0..30)
        .map(|i| line(&format!("s{i}"), body(json!({"delay_ms": 150}))))
        .collect();
    let (_, file) = upload(&http, &api, lines.join("\n"), "batch").await;
    let (status, batch) = post_json(
        &http,
        &format!("{api}/batches"),
        &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                "completion_window": "24h", "concurrency": 2}),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["concurrency"], 2);
    let id = batch["id"].as_str().expect("id");
    for _ in 0..200 {
        let b = get_json(&http, &format!("{api}/batches/{id}")).await;
        if b["request_counts"]["completed"].as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, c) = post_json(&http, &format!("{api}/batches/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{c}");
    assert!(
        matches!(c["status"].as_str(), Some("cancelling" | "cancelled")),
        "{c}"
    );
    let b = finished(&http, &api, id).await;
    assert_eq!(b["status"], "cancelled");
    let done = b["request_counts"]["completed"]
        .as_u64()
        .expect("completed");
    assert!(
        done < 30,
        "cancellation stopped new lines ({done} answered)"
    );
    assert_eq!(b["request_counts"]["failed"].as_u64(), Some(30 - done));
    let out = lines_of(&http, &api, &b["output_file_id"]).await;
    let errors = lines_of(&http, &api, &b["error_file_id"]).await;
    assert_eq!(
        out.len() + errors.len(),
        30,
        "every custom_id comes back once"
    );
    assert!(errors
        .iter()
        .all(|l| l["error"]["code"] == "batch_cancelled" && l["response"].is_null()));
    // What ran is what was booked.
    assert_eq!(net.proxy.ledger().request_count().expect("count"), done);
    // A finished batch cannot be cancelled again.
    let (status, _) = post_json(&http, &format!("{api}/batches/{id}/cancel"), &json!({})).await;
    assert_eq!(
        status, 200,
        "cancelling a cancelled batch answers it as it is"
    );
}

#[tokio::test]
async fn batches_share_the_gateway_first_come_first_served() {
    let net = start_network(&[WorkerSpec::new("w1", 1000)]).await;
    net.wait_ready(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BatchConfig::in_dir(dir.path().to_path_buf());
    config.max_concurrency = 2;
    // A leftover of an upload cut short is cleared at start.
    std::fs::create_dir_all(dir.path().join("files")).expect("dir");
    std::fs::write(dir.path().join("files/file-x.part"), b"half").expect("part");
    let (api, _batches) = batch_gateway(&net, config).await;
    assert!(!dir.path().join("files/file-x.part").exists());
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let lines: Vec<String> = (0..20)
            .map(|i| line(&format!("{name}{i}"), body(json!({"delay_ms": 40}))))
            .collect();
        let (_, file) = upload(&http, &api, lines.join("\n"), "batch").await;
        let (status, batch) = post_json(
            &http,
            &format!("{api}/batches"),
            &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                    "completion_window": "24h"}),
        )
        .await;
        assert_eq!(status, 200, "{batch}");
        ids.push(batch["id"].as_str().expect("id").to_owned());
    }
    // While the first batch runs, the second makes progress too: the gateway's two line
    // slots alternate between them.
    let mut both_ran_before_the_first_ended = false;
    for _ in 0..400 {
        let a = get_json(&http, &format!("{api}/batches/{}", ids[0])).await;
        let b = get_json(&http, &format!("{api}/batches/{}", ids[1])).await;
        let done = |v: &Value| v["request_counts"]["completed"].as_u64().unwrap_or(0);
        if a["status"] == "completed" {
            break;
        }
        if done(&a) > 0 && done(&b) > 0 {
            both_ran_before_the_first_ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        both_ran_before_the_first_ended,
        "the second batch waited for the first"
    );
    for id in &ids {
        assert_eq!(finished(&http, &api, id).await["status"], "completed");
    }
}

/// A stand-in for COCOON 9060ce5's proxy (its hello carries no cocoon-rs extensions; the
/// real binaries' test is in cocoon-cli's interop tests): answers every
/// request at once with `{"ok": true}` and 10 prompt tokens; the `runQueryEx` flags it
/// received, in order.
async fn official_proxy() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<u32>>>) {
    use cocoon_net::{ConnectionConfig, Incoming, RpcConnection};
    use cocoon_tl::functions::client as client_fn;
    use cocoon_tl::types::{client, http, TokensUsed};
    use cocoon_tl::TlConstructor;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let flags = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = flags.clone();
    tokio::spawn(async move {
        let key = ed25519_dalek::SigningKey::from_bytes(&[79; 32]);
        let owner = cocoon_node::chain::devnet_address("official-proxy");
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(conn) =
                RpcConnection::accept(stream, &ConnectionConfig::default(), "client").await
            else {
                continue;
            };
            let (handle, mut incoming) = conn.split();
            let (key, owner, seen) = (key.clone(), owner.clone(), seen.clone());
            tokio::spawn(async move {
                while let Some(item) = incoming.recv().await {
                    match item {
                        Incoming::Query(q) => match q.function_id() {
                            Some(client_fn::ConnectToProxy::ID) => {
                                let hello: client_fn::ConnectToProxy = q.decode().expect("hello");
                                let _ = q
                                    .answer(&proxy_hello_answer(&hello, &key, &owner, 3, 3))
                                    .await;
                            }
                            Some(client_fn::AuthorizeWithProxyShort::ID) => {
                                let _ = q.answer(&proxy_authorized()).await;
                            }
                            _ => {
                                let _ = q.error(651, "not served here").await;
                            }
                        },
                        Incoming::Packet(data) => {
                            let Ok(query) = cocoon_tl::from_bytes::<client_fn::RunQueryEx>(&data)
                            else {
                                continue;
                            };
                            seen.lock().expect("lock").push(query.flags);
                            let body = br#"{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":0,"total_tokens":10}}"#;
                            let answer: cocoon_tl::enums::client::QueryAnswerEx =
                                client::QueryAnswerEx {
                                    request_id: query.request_id,
                                    answer: cocoon_tl::to_bytes(&http::Response {
                                        http_version: "HTTP/1.1".into(),
                                        status_code: 200,
                                        reason: "OK".into(),
                                        headers: vec![http::Header {
                                            name: "Content-Type".into(),
                                            value: "application/json".into(),
                                        }],
                                        payload: body.to_vec(),
                                    }),
                                    flags: 1,
                                    final_info: Some(client::QueryFinalInfo {
                                        flags: 0,
                                        tokens_used: TokensUsed {
                                            prompt_tokens_used: 10,
                                            cached_tokens_used: 0,
                                            completion_tokens_used: 0,
                                            reasoning_tokens_used: 0,
                                            total_tokens_used: 10,
                                        },
                                        worker_debug: None,
                                        proxy_debug: None,
                                        proxy_start_time: None,
                                        proxy_end_time: None,
                                        worker_start_time: None,
                                        worker_end_time: None,
                                    }),
                                }
                                .into();
                            let _ = handle.send_packet(&answer).await;
                        }
                    }
                }
            });
        }
    });
    (addr, flags)
}

#[tokio::test]
async fn behind_an_official_proxy_lines_that_may_have_run_are_not_sent_again() {
    use cocoon_node::client::batch::store::{BatchRow, FileRow, Status, Store};
    let (proxy, flags) = official_proxy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A batch of 6 lines as a gateway killed mid-batch left it: lines 0–2 may have been
    // sent (the durable mark), line 1 has its result.
    let lines: Vec<String> = (0..6)
        .map(|i| line(&format!("d{i}"), body(json!({}))))
        .collect();
    std::fs::create_dir_all(dir.path().join("files")).expect("dir");
    std::fs::write(dir.path().join("files/file-in.jsonl"), lines.join("\n")).expect("input");
    {
        let store = Store::open(&dir.path().join("batches.sqlite")).expect("store");
        store
            .add_file(&FileRow {
                id: "file-in".into(),
                filename: "in.jsonl".into(),
                purpose: "batch".into(),
                bytes: 1,
                created_at: 1,
                lines: 6,
                urls: vec!["/v1/chat/completions".into()],
            })
            .expect("file");
        store
            .add_batch(&BatchRow {
                id: "batch_x".into(),
                secret: [5; 32],
                input_file_id: "file-in".into(),
                endpoint: "/v1/chat/completions".into(),
                completion_window: "24h".into(),
                metadata: Value::Null,
                status: Status::InProgress,
                created_at: 1,
                in_progress_at: 1,
                finalizing_at: 0,
                completed_at: 0,
                failed_at: 0,
                expired_at: 0,
                cancelling_at: 0,
                cancelled_at: 0,
                expires_at: u64::MAX / 2,
                output_file_id: None,
                error_file_id: None,
                total: 6,
                completed: 0,
                failed: 0,
                cost_nanoton: 0,
                input_tokens: 0,
                output_tokens: 0,
                dispatched: 0,
                max_coefficient: None,
                concurrency: None,
                api_key: None,
                failure: None,
            })
            .expect("batch");
        store.set_dispatched("batch_x", 3).expect("mark");
        store
            .record(
                "batch_x",
                &[cocoon_node::client::batch::store::LineResult {
                    line: 1,
                    ok: true,
                    record: br#"{"custom_id":"d1","response":{"status_code":200}}"#.to_vec(),
                    cost: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                }],
            )
            .expect("result");
    }
    // The gateway starts again, behind the official proxy only.
    let (_, node) = start_gateway(&[proxy], GatewaySettings::default()).await;
    let batches =
        Batches::start(BatchConfig::in_dir(dir.path().to_path_buf()), node.clone()).expect("start");
    let api = serve_batch_gateway(&node, &batches).await;
    let http = reqwest::Client::new();
    let b = finished(&http, &api, "batch_x").await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 6, "completed": 4, "failed": 2})
    );
    let errors = lines_of(&http, &api, &b["error_file_id"]).await;
    let in_doubt: Vec<&str> = errors
        .iter()
        .map(|l| {
            assert_eq!(l["error"]["code"], "in_doubt", "{l}");
            l["custom_id"].as_str().expect("id")
        })
        .collect();
    assert_eq!(
        in_doubt,
        vec!["d0", "d2"],
        "the lines that may have run, never sent again"
    );
    let out = lines_of(&http, &api, &b["output_file_id"]).await;
    let answered: Vec<&str> = out
        .iter()
        .map(|l| l["custom_id"].as_str().expect("id"))
        .collect();
    assert_eq!(answered, vec!["d1", "d3", "d4", "d5"]);
    // The official proxy got the three new lines, never the answer-once flag.
    let flags = flags.lock().expect("lock").clone();
    assert_eq!(flags.len(), 3);
    assert!(
        flags
            .iter()
            .all(|f| f & cocoon_node::protocol::version::flags::QUERY_ANSWER_ONCE == 0),
        "{flags:?}"
    );
}
