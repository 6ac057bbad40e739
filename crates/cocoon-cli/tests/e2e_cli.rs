//! `cocoon encrypt` and `cocoon decrypt`: what an app runs to keep its prompts and answers
//! from every gateway and proxy on the way.

use std::io::Write;
use std::process::{Command, Stdio};

use cocoon_e2e::{open, public_key, seal, Direction};
use serde_json::{json, Value};

fn cocoon(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cocoon");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_app_encrypts_requests_and_decrypts_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, key_manager) = ([3u8; 32], [4u8; 32]);
    let app_key = dir.path().join("app.key");
    std::fs::write(&app_key, app).expect("key");
    let km_pub = hex::encode(public_key(&key_manager));
    let key = app_key.to_str().expect("path");

    // Two requests in, two sealed lines out; the worker (key manager's key) reads them.
    let requests = r#"{"model":"m","messages":[{"role":"user","content":"secret prompt"}]}
{"model":"m","prompt":"another"}"#;
    let (ok, out, err) = cocoon(&["encrypt", "--key", key, "--to", &km_pub], requests);
    assert!(ok, "{err}");
    let sealed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(sealed.len(), 2);
    assert!(!out.contains("secret prompt"), "{out}");
    assert_eq!(
        sealed[0]["model"], "m",
        "the model stays readable for routing"
    );
    let opened = open(&sealed[0], &key_manager, Direction::ToWorker, None).expect("opened");
    assert_eq!(opened.body["messages"][0]["content"], "secret prompt");
    assert_eq!(opened.sender, public_key(&app));

    // An answer the worker sealed to the app, streamed as SSE: decrypted line by line.
    let answer = seal(
        &json!({"choices": [{"delta": {"content": "secret answer"}}]}),
        &key_manager,
        &public_key(&app),
        Direction::ToApp,
    )
    .expect("sealed");
    let sse = format!("data: {answer}\n\ndata: [DONE]\n\n");
    let (ok, out, err) = cocoon(&["decrypt", "--key", key, "--from", &km_pub], &sse);
    assert!(ok, "{err}");
    let opened: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(opened["choices"][0]["delta"]["content"], "secret answer");

    // From another sender: refused with the reason, non-zero exit.
    let other = hex::encode(public_key(&[9; 32]));
    let (ok, _, err) = cocoon(&["decrypt", "--key", key, "--from", &other], &sse);
    assert!(!ok);
    assert!(err.contains("public key mismatch"), "{err}");
    // A key file of the wrong size is named.
    std::fs::write(&app_key, b"short").expect("key");
    let (ok, _, err) = cocoon(&["encrypt", "--key", key, "--to", &km_pub], "{}");
    assert!(!ok);
    assert!(err.contains("32 raw bytes"), "{err}");
}
