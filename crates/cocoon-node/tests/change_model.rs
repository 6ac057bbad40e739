//! Worker model switching (`worker.changeModel`, COCOON 9060ce5 §2.10) through the
//! proxy's `POST /request/change_worker_model`, on a network on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cocoon_node::chain::{ChainView, RootWatch};
use cocoon_node::protocol::Refusal;
use cocoon_node::worker::ModelChangeSettings;
use common::*;
use serde_json::{json, Value};

const NEW_MODEL: &str = "other-model";
const NEW_MODEL_ID: &str = "other-model@c2:h2";

/// A change script in `dir` that runs `body` (`$1` is the new model id).
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn with_script(path: Option<PathBuf>) -> WorkerSpec {
    let mut spec = WorkerSpec::new("w", 1000);
    spec.change_model = ModelChangeSettings {
        script: path,
        ..ModelChangeSettings::default()
    };
    spec
}

/// Serves the proxy's admin router on loopback; returns its base URL.
async fn admin(net: &Net, access_hash: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = cocoon_node::runner::proxy_admin_router(
        net.proxy.clone(),
        cocoon_node::admin::AdminAccess {
            access_hash: access_hash.map(str::to_owned),
        },
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// Posts COCOON's form; the status and the JSON answer.
async fn change(base: &str, form: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/request/change_worker_model"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// The worker connections `/jsonstats` lists.
async fn workers(base: &str) -> Vec<Value> {
    let stats: Value = reqwest::get(format!("{base}/jsonstats"))
        .await
        .expect("jsonstats")
        .json()
        .await
        .expect("JSON");
    stats["workers"].as_array().expect("workers").clone()
}

fn request_for(model: &str, body: Value) -> cocoon_node::client::QueryRequest {
    let mut body = body;
    body["model"] = json!(model);
    let mut request = chat_request(body, 4000);
    request.model = model.into();
    request
}

#[tokio::test]
async fn a_worker_switches_model_through_the_proxy_and_serves_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = dir.path().join("asked");
    let path = script(
        dir.path(),
        "change.sh",
        &format!("printf '%s' \"$1\" > '{}'", seen.display()),
    );
    let net = start_network(&[with_script(Some(path))]).await;
    let base = admin(&net, None).await;
    let listed = workers(&base).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["model"], format!("{MODEL}@commit:hash"));
    assert_eq!(listed[0]["ready"], true);
    let old_id = listed[0]["connection_id"].as_u64().expect("id");

    // A long streamed request is running when the model changes: it finishes.
    let session = net.client(4).await;
    let streaming = {
        let session = session.clone();
        let body = chat_body(true, json!({"chunks": 100, "delay_ms": 50}));
        tokio::spawn(async move { collect(&session, request_for(MODEL, body)).await })
    };
    wait_until(|| net.proxy.running_requests() == 1).await;

    let (status, answer) = change(
        &base,
        &format!("connection_id={old_id}&new_model_name=other-model%40c2%3Ah2"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["new_model_name"], NEW_MODEL_ID);
    assert_eq!(
        std::fs::read_to_string(&seen).expect("the script ran"),
        NEW_MODEL_ID
    );
    assert_eq!(net.workers[0].model(), NEW_MODEL_ID);
    // The request of the old model still runs on the old link (5 s of stream against a
    // script that only writes a file).
    assert_eq!(net.proxy.running_requests(), 1);
    let streamed = streaming.await.expect("task");
    assert!(streamed.error.is_none(), "{:?}", streamed.error);
    assert!(streamed.done.is_some());
    let text = streamed.body_text();
    assert!(
        text.contains("t99 ") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );

    // The link reconnected announcing the new model, under a new connection id.
    wait_until(|| net.proxy.ready_workers().get(NEW_MODEL) == Some(&1)).await;
    assert_eq!(net.proxy.ready_workers().get(MODEL), None);
    let listed = workers(&base).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["model"], NEW_MODEL_ID);
    assert_eq!(listed[0]["base_model"], NEW_MODEL);
    assert_ne!(listed[0]["connection_id"].as_u64(), Some(old_id));

    // The new model is served; the old one is refused.
    let session = net.client(4).await;
    let served = collect(
        &session,
        request_for(NEW_MODEL, chat_body(false, json!({}))),
    )
    .await;
    assert!(served.error.is_none(), "{:?}", served.error);
    assert_eq!(served.json()["usage"]["total_cost"], 268);
    let refused = collect(&session, request_for(MODEL, chat_body(false, json!({})))).await;
    let (code, message, _) = refused.error.expect("the old model is refused");
    assert_eq!(
        Refusal::classify(code, &message),
        Refusal::UnknownModel,
        "{message}"
    );
}

/// Asks the only worker connection of `net` to change to `model`; the status and answer.
async fn ask(net: &Net, base: &str, model: &str) -> (u16, Value) {
    let id = workers(base).await[0]["connection_id"]
        .as_u64()
        .expect("id");
    let form = format!("connection_id={id}&new_model_name={model}");
    let answer = change(base, &form).await;
    // A refused change leaves the worker where it was.
    assert_eq!(net.workers[0].model(), format!("{MODEL}@commit:hash"));
    answer
}

fn assert_refused(answer: &(u16, Value), text: &str) {
    let (status, body) = answer;
    assert_eq!(*status, 422, "{body}");
    assert_eq!(body["worker_error_code"], 602, "{body}");
    let message = body["worker_error"].as_str().expect("worker_error");
    assert!(message.starts_with(text), "{message}");
}

#[tokio::test]
async fn a_worker_without_script_or_with_a_failing_one_refuses_and_keeps_serving() {
    let net = start_network(&[with_script(None)]).await;
    let base = admin(&net, None).await;
    let answer = ask(&net, &base, NEW_MODEL_ID).await;
    assert_refused(&answer, "cannot change model: no script in config");

    let dir = tempfile::tempdir().expect("tempdir");
    let failing = script(dir.path(), "fail.sh", "exit 3");
    let mut net = start_network(&[]).await;
    net.add_worker(&with_script(Some(failing))).await;
    net.wait_ready(1).await;
    let base = admin(&net, None).await;
    let id = workers(&base).await[0]["connection_id"].clone();
    let answer = ask(&net, &base, NEW_MODEL_ID).await;
    assert_refused(
        &answer,
        "cannot change model: model change script failed (exit status: 3)",
    );
    // Still the same connection, still serving the old model.
    assert_eq!(workers(&base).await[0]["connection_id"], id);
    let session = net.client(4).await;
    let served = collect(&session, request_for(MODEL, chat_body(false, json!({})))).await;
    assert!(served.error.is_none(), "{:?}", served.error);
}

#[tokio::test]
async fn under_hash_checks_only_models_the_root_lists_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = script(dir.path(), "ok.sh", "exit 0");
    let mut net = start_network(&[]).await;
    let mut spec = with_script(Some(ok));
    spec.change_model.check_model_hashes = true;
    let mut settings = worker_settings(&spec);
    // The root lists the new model's full id only.
    use sha2::Digest;
    let listed: [u8; 32] = sha2::Sha256::digest(NEW_MODEL_ID.as_bytes()).into();
    settings.chain = RootWatch::new(ChainView {
        context: chain(),
        prices: prices(),
        settlement: None,
        model_hashes: vec![listed],
    });
    let url = net.upstream_url.clone();
    net.add_worker_with(settings, &url).await;
    net.wait_ready(1).await;
    let base = admin(&net, None).await;
    // Same name, other commit: not the listed id.
    let answer = ask(&net, &base, "other-model@c3:h3").await;
    assert_refused(&answer, "cannot change model: unknown model");
    let answer = ask(&net, &base, "other-model").await;
    assert_refused(&answer, "cannot change model: unknown model");

    let id = workers(&base).await[0]["connection_id"]
        .as_u64()
        .expect("id");
    let (status, body) = change(
        &base,
        &format!("connection_id={id}&new_model_name={NEW_MODEL_ID}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_until(|| net.proxy.ready_workers().get(NEW_MODEL) == Some(&1)).await;
}

#[tokio::test]
async fn the_endpoint_refuses_what_it_cannot_do_with_clear_statuses() {
    let net = start_network(&[with_script(None)]).await;
    let base = admin(&net, None).await;
    let id = workers(&base).await[0]["connection_id"]
        .as_u64()
        .expect("id");
    let (status, body) = change(&base, "connection_id=abc&new_model_name=m").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("connection_id is not an integer"))
    );
    let (status, body) = change(&base, &format!("connection_id={id}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("new_model_name is missing"))
    );
    let (status, body) = change(&base, "connection_id=999999&new_model_name=m").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("connection 999999 not found"))
    );
    // JSON works as the form does.
    let response = reqwest::Client::new()
        .post(format!("{base}/request/change_worker_model"))
        .json(&json!({"connection_id": 999999, "new_model_name": "m"}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status().as_u16(), 404);
    // Only POST.
    let response = reqwest::get(format!("{base}/request/change_worker_model"))
        .await
        .expect("response");
    assert_eq!(response.status().as_u16(), 405);
    // A browser's POST (it always sends Origin) is refused.
    let response = reqwest::Client::new()
        .post(format!("{base}/request/change_worker_model"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("connection_id={id}&new_model_name=m"))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status().as_u16(), 403);

    // A connection whose handshake is not complete is not ready.
    let stream = tokio::net::TcpStream::connect(net.worker_addr)
        .await
        .expect("connect");
    let conn = cocoon_net::RpcConnection::connect(
        stream,
        &cocoon_net::ConnectionConfig::default(),
        "proxy",
    )
    .await
    .expect("opening");
    let hello = cocoon_tl::functions::worker::ConnectToProxy {
        params: cocoon_tl::types::worker::Params {
            flags: 3,
            worker_owner_address: party("half-open"),
            model: format!("{MODEL}@commit:hash"),
            coefficient: 1000,
            is_test: Some(true),
            proxy_cnt: Some(1),
            max_active_requests: Some(1),
            min_proto_version: Some(1),
            max_proto_version: Some(4),
            machine_description_json: None,
        },
    };
    conn.handle()
        .query_with_timeout(&hello, Duration::from_secs(10))
        .await
        .expect("hello answered");
    let half_open = workers(&base)
        .await
        .into_iter()
        .find(|w| w["ready"] == false)
        .expect("the half-open connection is listed");
    let (status, body) = change(
        &base,
        &format!(
            "connection_id={}&new_model_name=m",
            half_open["connection_id"]
        ),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // With an access hash, the actions and the stats need it; /metrics does not.
    let guarded = admin(&net, Some("s3cret")).await;
    let (status, _) = change(&guarded, "connection_id=999999&new_model_name=m").await;
    assert_eq!(status, 403);
    let response = reqwest::Client::new()
        .post(format!(
            "{guarded}/request/change_worker_model?access_hash=s3cret"
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("connection_id=999999&new_model_name=m")
        .send()
        .await
        .expect("response");
    assert_eq!(response.status().as_u16(), 404);
    let status =
        |url: String| async move { reqwest::get(url).await.expect("response").status().as_u16() };
    assert_eq!(status(format!("{guarded}/jsonstats")).await, 403);
    assert_eq!(
        status(format!("{guarded}/jsonstats?access_hash=s3cret")).await,
        200
    );
    assert_eq!(status(format!("{guarded}/metrics")).await, 200);
}
