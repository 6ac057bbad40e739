//! What a newcomer meets first (issue #11): errors without backtraces, every port
//! conflict at once with its flag, an unreachable upstream that says why and gives up,
//! embedded-engine errors that name the model, no colour in redirected logs, money-CLI
//! hints that name the devnet's `--dir`, the devnet proxy listed by `root show`, and the
//! worker owner's balance explained to the nanoTON.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, mock_upstream, Proc};

const COCOON: &str = env!("CARGO_BIN_EXE_cocoon");

/// Runs `cocoon args` to completion with `RUST_BACKTRACE=1` and stderr redirected.
fn run(args: &[&str]) -> Output {
    Command::new(COCOON)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("NO_COLOR")
        .env_remove("COCOON_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run cocoon")
}

/// The checks every user error passes: exit code 1, one `error: ` line with the
/// causes, no backtrace, and no ANSI colour (stderr is not a terminal here).
fn user_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "no `error: ` line: {err}"
    );
    assert!(
        !err.to_lowercase().contains("backtrace"),
        "a backtrace for a user error: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "ANSI codes in a redirected log: {err:?}"
    );
    err
}

#[test]
fn a_missing_devnet_names_the_dir_it_looked_in_without_a_backtrace() {
    let empty = tempfile::tempdir().expect("tempdir");
    let dir = empty.path().display().to_string();
    let out = run(&["client", "balance", "--dir", &dir]);
    let err = user_error(&out);
    assert!(err.contains("no devnet chain in"), "{err}");
    assert!(err.contains(&format!("--dir {dir}")), "{err}");
    assert!(err.contains("pass its --dir"), "{err}");
}

#[test]
fn every_port_conflict_is_reported_at_once_with_its_flag() {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let c = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port().to_string();
    let (http, proxy_client, chain_api) = (port(&a), port(&b), port(&c));
    let state = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    let out = run(&[
        "devnet",
        "--dir",
        &state.path().display().to_string(),
        "--upstream",
        "http://127.0.0.1:1",
        "--http-port",
        &http,
        "--proxy-client-port",
        &proxy_client,
        "--proxy-worker-port",
        "0",
        "--key-manager-port",
        "0",
        "--chain-api-port",
        &chain_api,
    ]);
    let err = user_error(&out);
    for (flag, p) in [
        ("--http-port", &http),
        ("--proxy-client-port", &proxy_client),
        ("--chain-api-port", &chain_api),
    ] {
        assert!(err.contains(&format!("{flag} {p}")), "{flag}: {err}");
    }
    assert!(
        !err.contains("--proxy-worker-port"),
        "port 0 conflicts: {err}"
    );
    assert!(err.contains("3 of its ports"), "{err}");
    // Checked before anything starts: no chain was created.
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(!state.path().join("chain").exists());
    drop((a, b, c));
}

#[test]
fn an_unreachable_upstream_says_why_and_gives_up_at_the_deadline() {
    let state = tempfile::tempdir().expect("tempdir");
    let nobody = free_port();
    let start = Instant::now();
    let out = run(&[
        "devnet",
        "--fake-ton",
        "--dir",
        &state.path().display().to_string(),
        "--upstream",
        &format!("http://127.0.0.1:{nobody}"),
        "--upstream-wait",
        "7",
        "--http-port",
        "0",
        "--proxy-client-port",
        "0",
        "--proxy-worker-port",
        "0",
        "--key-manager-port",
        "0",
        "--pow-difficulty",
        "8",
    ]);
    let elapsed = start.elapsed();
    let err = user_error(&out);
    assert!(
        elapsed >= Duration::from_secs(7),
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}: {err}");
    let waiting: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("waiting for the model server at"))
        .collect();
    // At the first failure and every 5 s after: why, how many tries, when it gives up.
    assert!(waiting.len() >= 2, "{err}");
    assert!(waiting[0].contains("try 1;"), "{err}");
    assert!(waiting[0].contains("giving up in"), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    let last = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .expect("error line");
    assert!(
        last.contains("did not answer GET /v1/models within 7 s"),
        "{last}"
    );
    assert!(last.contains("tries"), "{last}");
    assert!(last.contains(&format!("127.0.0.1:{nobody}")), "{last}");
}

#[test]
fn an_embedded_model_error_names_the_model_not_a_server() {
    let state = tempfile::tempdir().expect("tempdir");
    let model = state.path().join("no-such-model");
    let model = model.display().to_string();
    let out = run(&[
        "devnet",
        "--fake-ton",
        "--dir",
        &state.path().display().to_string(),
        "--model",
        &model,
        "--http-port",
        "0",
        "--proxy-client-port",
        "0",
        "--proxy-worker-port",
        "0",
        "--key-manager-port",
        "0",
    ]);
    let err = user_error(&out);
    assert!(err.contains("the embedded engine"), "{err}");
    assert!(err.contains(&model), "{err}");
    assert!(!err.contains("model server"), "{err}");
}

/// Starts a devnet in `dir` (not the default) on the mock `upstream`; returns it and the
/// lines of its ready banner.
fn devnet_with_banner(
    dir: &std::path::Path,
    upstream: std::net::SocketAddr,
    log: std::path::PathBuf,
) -> (Proc, Vec<String>) {
    let log = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(COCOON)
        .args(["devnet", "--dir"])
        .arg(dir)
        .args([
            "--upstream",
            &format!("http://{upstream}"),
            "--workers",
            "1",
        ])
        .args(["--http-port", "0", "--proxy-client-port", "0"])
        .args(["--proxy-worker-port", "0", "--chain-api-port", "0"])
        .args(["--key-manager-port", "0"])
        .args(["--pow-difficulty", "8"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn cocoon devnet");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut banner = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("Press Ctrl-C") => break,
            Ok(line) => banner.push(line),
            Err(_) => panic!("the devnet did not get ready: {banner:?}"),
        }
    }
    std::thread::spawn(move || while rx.recv().is_ok() {});
    (proc, banner)
}

fn nano(text: &str) -> u64 {
    let amount = text.trim().trim_end_matches("TON").trim();
    cocoon_ton::units::parse_ton(amount).expect("a TON amount")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devnet_in_another_dir_prints_its_dir_lists_its_proxy_and_explains_payouts() {
    let upstream = mock_upstream().await;
    let state = tempfile::tempdir().expect("tempdir");
    let dir = state.path().join("my-devnet");
    let (devnet, banner) = devnet_with_banner(&dir, upstream, state.path().join("devnet.log"));
    let canonical = dir.canonicalize().expect("dir");
    let dir_arg = format!("--dir {}", canonical.display());
    let hints: Vec<&String> = banner
        .iter()
        .filter(|l| {
            ["client", "worker", "proxy", "root", "wallet"]
                .iter()
                .any(|c| l.contains(&format!("cocoon {c} ")))
        })
        .collect();
    assert!(
        hints.iter().any(|l| l.contains("cocoon client balance")),
        "{banner:#?}"
    );
    for h in &hints {
        assert!(h.contains(&dir_arg), "hint without {dir_arg}: {h}");
    }
    let api = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("OpenAI API:"))
        .expect("API line")
        .trim()
        .to_owned();
    let dir_s = canonical.display().to_string();
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--dir", &dir_s]);
        let out = run(&all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "cocoon {all:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };

    // The devnet's proxy is registered in the root.
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(canonical.join("devnet.json")).expect("json"))
            .expect("devnet.json");
    let workers_at = info["proxy_worker_endpoint"].as_str().expect("endpoint");
    let clients_at = info["proxy_client_endpoint"].as_str().expect("endpoint");
    let show = cli(&["root", "show"]);
    assert!(
        show.contains(&format!("{workers_at} {clients_at}")),
        "root show does not list the proxy: {show}"
    );

    // Payouts in separate anchors, so the owner account pays storage between them.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut payouts = 0;
    while payouts < 3 {
        assert!(Instant::now() < deadline, "payouts did not come");
        assert_eq!(common::chat(&http, &api, 0).await, 200);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let out = cli(&["worker", "balance", "--wallet", "worker-0"]);
        payouts = out
            .lines()
            .find_map(|l| {
                let (_, rest) = l.split_once(" received in ")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .unwrap_or(0);
    }
    let out = cli(&["worker", "balance", "--wallet", "worker-0"]);
    let field = |prefix: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line: {out}"));
        let rest = line.trim_start().trim_start_matches(prefix);
        nano(rest.split(" TON").next().expect("amount"))
    };
    let balance = field("owner balance:");
    let received = field("= ");
    let fees = field("- ");
    assert!(out.contains("storage fees"), "{out}");
    assert_eq!(balance, received - fees, "{out}");
    assert!(!out.contains("other changes"), "{out}");
    // What was received is exactly the tokens paid × the worker fee.
    let tokens: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("tokens paid: "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .expect("tokens paid");
    assert_eq!(received, tokens, "worker fee 1 nanoTON: {out}");
    drop(devnet);
}
