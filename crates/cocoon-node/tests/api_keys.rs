//! API keys on the client gateway, on one loopback network: no key file or an empty one
//! leaves the API open; once a key exists every endpoint needs one; a key's spending is
//! what its requests cost (adjusted tokens × the root's price), batches included; keys
//! added, limited or revoked by another process take effect without a restart; a gateway
//! on a public address refuses to start without keys.

mod common;

use std::time::Duration;

use cocoon_node::client::batch::{BatchConfig, Batches};
use cocoon_node::client::gateway::GatewaySettings;
use cocoon_node::client::keys::{ApiKeys, KeyStore};
use common::*;
use serde_json::{json, Value};

async fn chat(http: &reqwest::Client, api: &str, key: Option<&str>) -> (u16, Value) {
    let mut r = http
        .post(format!("{api}/chat/completions"))
        .json(&chat_body(false, json!({})));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `f` holds (the gateway reads the key file again within a second).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 5 s");
}

#[tokio::test]
async fn keys_guard_every_endpoint_and_count_what_each_app_spends() {
    let net = start_network(&[WorkerSpec::new("w1", 1000)]).await;
    net.wait_ready(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.sqlite");
    let (_, node) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    node.set_api_keys(ApiKeys::open(&path).expect("keys"));
    let batches = Batches::start(
        BatchConfig::in_dir(dir.path().join("batches")),
        node.clone(),
    )
    .expect("batches");
    let api = serve_batch_gateway(&node, &batches).await;
    let http = reqwest::Client::new();

    // No key in the file: open, as before.
    assert_eq!(chat(&http, &api, None).await.0, 200);

    // Another process (the CLI) issues keys: from then on every endpoint needs one.
    let cli = KeyStore::open(&path).expect("cli");
    let app = cli.add("app", None, None).expect("add");
    let tight = cli.add("tight", Some(300), None).expect("add");
    eventually("keys required", async || {
        chat(&http, &api, None).await.0 == 401
    })
    .await;
    let (status, body) = chat(&http, &api, Some("sk-cocoon-unknown")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    for path in ["/models", "/files", "/batches", "/embeddings"] {
        let r = http.get(format!("{api}{path}")).send().await.expect("get");
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let metrics = http
        .get(format!("{api}/../metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status().as_u16(), 401);
    let (status, answer) = chat(&http, &api, Some(&app)).await;
    assert_eq!(status, 200, "{answer}");
    let cost = answer["usage"]["total_cost"].as_u64().expect("cost");
    assert!(cost > 0);

    // A key's spending is its requests' cost; over its limit it gets 402.
    assert_eq!(chat(&http, &api, Some(&tight)).await.0, 200);
    assert_eq!(
        chat(&http, &api, Some(&tight)).await.0,
        200,
        "{cost} × 1 < 300"
    );
    let (status, body) = chat(&http, &api, Some(&tight)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (402, Some("key_limit_reached")),
        "{body}"
    );
    let text = http
        .get(format!("{api}/../metrics"))
        .bearer_auth(&app)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(&format!(
            "cocoon_client_api_key_spent_nanoton_total{{key=\"tight\"}} {}",
            2 * cost
        )),
        "{text}"
    );

    // A batch created with a key is charged to it, line by line.
    let lines: Vec<String> = (0..3)
        .map(|i| {
            json!({"custom_id": format!("k{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": chat_body(false, json!({}))})
            .to_string()
        })
        .collect();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(lines.join("\n").into_bytes()).file_name("in.jsonl"),
        );
    let file: Value = http
        .post(format!("{api}/files"))
        .bearer_auth(&app)
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("file");
    let batch: Value = http
        .post(format!("{api}/batches"))
        .bearer_auth(&app)
        .json(&json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("batch");
    let id = batch["id"].as_str().expect("id").to_owned();
    eventually("batch completed", async || {
        let b: Value = http
            .get(format!("{api}/batches/{id}"))
            .bearer_auth(&app)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        b["status"] == "completed"
    })
    .await;
    let keys = node.api_keys().expect("keys");
    let usage = keys.usage();
    assert_eq!(
        usage[0],
        ("app".to_string(), 4 * cost, 4),
        "one request and three lines"
    );

    // Revoked in the file: 401 within a second, no restart; the spending stays in the file.
    cli.revoke("app").expect("revoke");
    eventually("revoked", async || {
        chat(&http, &api, Some(&app)).await.0 == 401
    })
    .await;
    // (Requests made before the gateway saw the revocation were answered and charged.)
    let spent = keys.usage()[0].1;
    assert_eq!(spent % cost, 0);
    eventually("spent in the file", async || {
        cli.list().expect("list")[0].spent_nanoton == spent
    })
    .await;
}

#[tokio::test]
async fn a_gateway_on_a_public_address_needs_keys_or_an_explicit_choice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = |extra: &str| {
        format!(
            "owner_address = \"{}\"\nhttp_listen = \"0.0.0.0:0\"\nproxies = [\"127.0.0.1:9\"]\n{extra}\n[proxy_policy]\nkind = \"any\"\n",
            party("client-1")
        )
    };
    let parse = |text: String| -> cocoon_node::config::ClientConfig {
        toml::from_str(&text).expect("config")
    };
    let err = cocoon_node::runner::start_client(&parse(toml("")), None)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("not a loopback address"), "{err}");
    let keys = dir.path().join("keys.sqlite");
    let with_file = format!("api_keys = \"{}\"", keys.display());
    let err = cocoon_node::runner::start_client(&parse(toml(&with_file)), None)
        .await
        .expect_err("an empty key file is no key");
    assert!(err.to_string().contains("public_without_keys"), "{err}");
    KeyStore::open(&keys)
        .expect("store")
        .add("app", None, None)
        .expect("add");
    let running = cocoon_node::runner::start_client(&parse(toml(&with_file)), None)
        .await
        .expect("starts with a key");
    assert!(!running.http_addr.ip().is_loopback());
    let running =
        cocoon_node::runner::start_client(&parse(toml("public_without_keys = true")), None)
            .await
            .expect("starts when told to");
    assert!(running.node.api_keys().is_none());
}
