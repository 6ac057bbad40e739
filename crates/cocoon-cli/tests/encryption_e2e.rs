//! End-to-end encryption through a whole devnet (COCOON protocol 3): the devnet's key
//! manager issues a key and registers it on the root; an app seals its request to it
//! (`cocoon_e2e`, what `cocoon encrypt` runs); the client gateway and the proxy pass it on
//! without reading it; the worker opens it with the key the proxy took from the key
//! manager and seals the answer, JSON and streamed alike, to the app. At the end the money
//! of encrypted requests balances like any other.

use std::time::Duration;

use cocoon_e2e::{open, public_key, seal, Direction};
use serde_json::{json, Value};

mod common;
use common::{free_port, mock_upstream, stop, MODEL};

const COCOON: &str = env!("CARGO_BIN_EXE_cocoon");
const PRICE: u64 = 3;
const FEE: u64 = 2;
const APP: [u8; 32] = [0x42; 32];

async fn post(http: &reqwest::Client, api: &str, body: &Value) -> (u16, String) {
    let r = http
        .post(format!("{api}/chat/completions"))
        .json(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("an answer");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

/// Opens one sealed answer value with the app's key, checking it came from `km`.
fn opened(value: &Value, km: &[u8; 32]) -> Value {
    open(value, &APP, Direction::ToApp, Some(km))
        .expect("the app opens the answer")
        .body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_talks_to_a_worker_that_only_it_and_the_worker_can_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let upstream = mock_upstream().await;
    let port = free_port();
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/v1");
    let devnet = common::start_devnet(
        COCOON,
        &state,
        upstream,
        port,
        dir.path().join("devnet.log"),
        PRICE,
        FEE,
        &[],
    );
    let info: Value =
        serde_json::from_slice(&std::fs::read(state.join("devnet.json")).expect("devnet.json"))
            .expect("json");
    let key_hex = info["encryption_keys"][0]
        .as_str()
        .expect("the devnet names a key to encrypt to");
    let km: [u8; 32] = hex::decode(key_hex)
        .expect("hex")
        .try_into()
        .expect("32 bytes");

    // The key manager registers the key on the root (a wallet transaction): apps can
    // check a key there before trusting it.
    let mut registered = false;
    for _ in 0..100 {
        let out = std::process::Command::new(COCOON)
            .args(["root", "show", "--dir"])
            .arg(&state)
            .output()
            .expect("cocoon root show");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(&format!("  {key_hex} type 1 ")) {
            assert!(text.contains("(valid)"), "{text}");
            assert!(
                !text.contains("key manager address: (none)"),
                "the root names the key manager: {text}"
            );
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(registered, "the root lists the key manager's key {key_hex}");

    // JSON: the request is sealed; only `model` (routing) and the envelope are readable.
    let request =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "my secret prompt"}]});
    let sealed = seal(&request, &APP, &km, Direction::ToWorker).expect("sealed");
    assert!(!sealed.to_string().contains("my secret prompt"));
    let (status, body) = post(&http, &api, &sealed).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("\"ok\""),
        "the answer is not readable on the way: {body}"
    );
    let values: Vec<Value> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("one JSON value per line"))
        .collect();
    assert_eq!(values.len(), 1, "{body}");
    let answer = opened(&values[0], &km);
    assert_eq!(answer["choices"][0]["message"]["content"], "ok");
    assert_eq!(answer["usage"]["total_tokens"], 134);

    // Streamed: still SSE, each event sealed on its own, readable as it arrives.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let sealed = seal(&streamed, &APP, &km, Direction::ToWorker).expect("sealed");
    let (status, body) = post(&http, &api, &sealed).await;
    assert_eq!(status, 200, "{body}");
    let mut text = String::new();
    let mut events = 0;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let value: Value = serde_json::from_str(data).expect("JSON event");
        assert!(
            cocoon_e2e::is_encrypted(&value),
            "every event is sealed: {data}"
        );
        let event = opened(&value, &km);
        if let Some(t) = event["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        events += 1;
    }
    assert_eq!(text, "ok", "{body}");
    assert!(events >= 3, "{body}");
    assert!(body.contains("data: [DONE]"), "{body}");

    // Sealed to a key the key manager never issued: a clear refusal, nothing served.
    let stranger = public_key(&[0x13; 32]);
    let sealed = seal(&request, &APP, &stranger, Direction::ToWorker).expect("sealed");
    let (status, body) = post(&http, &api, &sealed).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown public key"), "{body}");

    // The money of encrypted requests balances to the nanoTON like any other.
    tokio::task::spawn_blocking(move || stop(devnet, "-INT"))
        .await
        .expect("stopped");
    let tokens = common::assert_money_balances(&state, PRICE, FEE).await;
    // The proxy kept the root configuration it ran on, as COCOON's does (configV7).
    let proxy_key = cocoon_node::config::load_or_create_key(&state.join("keys/proxy_key.pem"))
        .expect("proxy key");
    let ledger = cocoon_node::ledger::Ledger::open(&state.join("proxy-ledger.sqlite"), &proxy_key)
        .expect("ledger");
    let stored = ledger
        .root_config()
        .expect("verified")
        .expect("a stored root configuration");
    assert_eq!(stored.struct_version, 5);
    assert!(!stored.key_manager_address.is_empty());
    let root = cocoon_node::chain::config_v7::from_config_v7(&stored).expect("reads back");
    assert_eq!(root.params.price_per_token, PRICE);
    assert_eq!(
        tokens,
        2 * 134,
        "both encrypted answers were billed, the refusal not"
    );
}
