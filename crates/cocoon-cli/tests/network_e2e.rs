//! Real `cocoon` processes over attested loopback connections: a proxy killed in the
//! middle of a batch, and a devnet restarted from its directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{chat, mock_upstream, Proc, MODEL};

const COCOON: &str = env!("CARGO_BIN_EXE_cocoon");

fn spawn(args: &[&str], log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("log file");
    Proc(
        Command::new(COCOON)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn cocoon"),
    )
}

/// Reads stdout lines until one starts with `prefix` (30 s at most).
fn wait_line(proc: &mut Proc, prefix: &str) -> String {
    let stdout = proc.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with(&prefix) {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the process printed its ready line")
}

fn word_after<'a>(line: &'a str, marker: &str) -> &'a str {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    rest.split_whitespace().next().expect("word")
}

/// `usage.total_cost` of one chat request.
async fn chat_cost(http: &reqwest::Client, api: &str) -> u64 {
    let body: Value = http
        .post(format!("{api}/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("response")
        .json()
        .await
        .expect("json");
    body["usage"]["total_cost"].as_u64().expect("total_cost")
}

async fn wait_serving(http: &reqwest::Client, api: &str) {
    let start = Instant::now();
    while chat(http, api, 0).await != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "network did not come up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

fn proxy_toml(dir: &Path, clients: &str, workers: &str) -> String {
    format!(
        r#"owner_address = "0:1111111111111111111111111111111111111111111111111111111111111111"
client_listen = "{clients}"
worker_listen = "{workers}"
http_listen = ""
db_path = "{db}"
[attestation]
tee = "fake_tdx"
key_file = "{key}"
pow_difficulty = 12
[worker_policy]
kind = "fake_tdx"
"#,
        db = dir.join("ledger.sqlite").display(),
        key = dir.join("proxy_key.pem").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_killed_mid_batch_bills_every_completed_request_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let upstream = mock_upstream().await;

    write(
        &d.join("proxy.toml"),
        &proxy_toml(d, "127.0.0.1:0", "127.0.0.1:0"),
    );
    let mut proxy = spawn(
        &[
            "proxy",
            "--config",
            d.join("proxy.toml").to_str().expect("utf8"),
        ],
        &d.join("proxy.log"),
    );
    let ready = wait_line(&mut proxy, "proxy ready:");
    let clients = word_after(&ready, "clients ").to_owned();
    let workers = word_after(&ready, "workers ").to_owned();

    write(
        &d.join("worker.toml"),
        &format!(
            "owner_address = \"0:2222222222222222222222222222222222222222222222222222222222222222\"\nupstream = \"http://{upstream}\"\nproxies = [\"{workers}\"]\nhttp_listen = \"\"\n\
             [attestation]\ntee = \"fake_tdx\"\nkey_file = \"{}\"\n[proxy_policy]\nkind = \"fake_tdx\"\n",
            d.join("worker_key.pem").display()
        ),
    );
    let mut worker = spawn(
        &[
            "worker",
            "--config",
            d.join("worker.toml").to_str().expect("utf8"),
        ],
        &d.join("worker.log"),
    );
    wait_line(&mut worker, "worker ready:");
    write(
        &d.join("client.toml"),
        &format!(
            "owner_address = \"0:3333333333333333333333333333333333333333333333333333333333333333\"\nhttp_listen = \"127.0.0.1:0\"\nproxies = [\"{clients}\"]\n\
             [proxy_policy]\nkind = \"fake_tdx\"\n"
        ),
    );
    let mut client = spawn(
        &[
            "client",
            "--config",
            d.join("client.toml").to_str().expect("utf8"),
        ],
        &d.join("client.log"),
    );
    let ready = wait_line(&mut client, "client ready:");
    let api = word_after(&ready, "OpenAI API at ").to_owned();
    let http = reqwest::Client::new();
    wait_serving(&http, &api).await;

    // A batch of slow requests; the proxy is killed (SIGKILL) while they run.
    let batch = 24;
    let mut tasks = Vec::new();
    for i in 0..batch {
        let (http, api) = (http.clone(), api.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40 * i)).await;
            chat(&http, &api, 250).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(proxy); // kill -9
    let statuses: Vec<u16> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let ok_before = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert!(
        ok_before > 0,
        "some requests completed before the kill: {statuses:?}"
    );
    assert!(
        ok_before < batch,
        "some requests were cut by the kill: {statuses:?}"
    );

    // Restart on the same ports, key and ledger; worker and client reconnect.
    write(&d.join("proxy.toml"), &proxy_toml(d, &clients, &workers));
    let mut proxy = spawn(
        &[
            "proxy",
            "--config",
            d.join("proxy.toml").to_str().expect("utf8"),
        ],
        &d.join("proxy2.log"),
    );
    wait_line(&mut proxy, "proxy ready:");
    wait_serving(&http, &api).await;
    let after = 5;
    for _ in 0..after {
        assert_eq!(chat(&http, &api, 0).await, 200);
    }
    drop(proxy);
    drop(client);
    drop(worker);

    let key = cocoon_node::config::load_or_create_key(&d.join("proxy_key.pem")).expect("key");
    let ledger = cocoon_node::ledger::Ledger::open(&d.join("ledger.sqlite"), &key)
        .expect("ledger verifies after the crash");
    let booked = ledger.request_count().expect("count");
    // +1 for the readiness probe after the restart (and the one before the batch).
    let completed = ok_before + after + 2;
    let cut = batch - ok_before;
    assert!(
        booked >= completed,
        "every completed request is booked: {booked} < {completed}"
    );
    assert!(
        booked <= completed + cut,
        "nothing is booked twice: {booked} > {}",
        completed + cut
    );
    let (clients_total, workers_total) = ledger.grand_totals().expect("totals");
    assert_eq!(clients_total, booked * 134);
    assert_eq!(workers_total, booked * 134);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_restart_continues_the_balances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let upstream = mock_upstream().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let state = d.join("state");
    // The price is fixed at genesis; the second start asks for another one, which the
    // persisted root contract overrides.
    let args = |log: &str, price: &str| -> (Vec<String>, std::path::PathBuf) {
        (
            vec![
                "devnet".into(),
                "--price-per-token".into(),
                price.into(),
                "--upstream".into(),
                format!("http://{upstream}"),
                "--dir".into(),
                state.display().to_string(),
                "--workers".into(),
                "1".into(),
                "--http-port".into(),
                port.to_string(),
                "--proxy-client-port".into(),
                "0".into(),
                "--proxy-worker-port".into(),
                "0".into(),
                "--chain-api-port".into(),
                "0".into(),
                "--key-manager-port".into(),
                "0".into(),
            ],
            d.join(log),
        )
    };
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/v1");

    let (a, log) = args("devnet1.log", "3");
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut devnet = spawn(&argv, &log);
    wait_line(&mut devnet, "cocoon devnet is ready");
    let info: Value =
        serde_json::from_slice(&std::fs::read(state.join("devnet.json")).expect("devnet.json"))
            .expect("json");
    assert_eq!(info["client_api"], api);
    assert_eq!(info["models"][0], MODEL);
    let key_before = info["proxy_public_key"].clone();
    assert_eq!(info["chain"], "local-tvm");
    let root_before = info["root_address"].clone();
    assert!(root_before.as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(
        chat_cost(&http, &api).await,
        134 * 3,
        "price 3 from the root contract"
    );
    assert_eq!(chat(&http, &api, 0).await, 200);
    // Ctrl-C: a clean stop.
    let pid = devnet.0.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    let start = Instant::now();
    while devnet.0.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "devnet stops on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (a, log) = args("devnet2.log", "7");
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut devnet = spawn(&argv, &log);
    wait_line(&mut devnet, "cocoon devnet is ready");
    let info: Value =
        serde_json::from_slice(&std::fs::read(state.join("devnet.json")).expect("devnet.json"))
            .expect("json");
    assert_eq!(
        info["proxy_public_key"], key_before,
        "same proxy identity after restart"
    );
    assert_eq!(
        info["root_address"], root_before,
        "same chain after restart"
    );
    assert_eq!(
        chat_cost(&http, &api).await,
        134 * 3,
        "the persisted root keeps its price"
    );
    let stats: Value = http
        .get(format!("http://127.0.0.1:{port}/jsonstats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(
        stats["proxies"][0]["tokens_used_proxy_committed_to_db"],
        3 * 134,
        "the client's usage continues from before the restart: {stats}"
    );
}
