//! Two real `cocoon` processes (`attest listen` and `attest dial`) establish the attested
//! link in every allowed combination of policy and TEE mode, and refuse every forbidden
//! one with the verifying side's reason.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cocoon");

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn finish(mut child: Child, first_lines: String, limit: Duration) -> Outcome {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = first_lines;
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut stdout).unwrap();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).unwrap();
    }
    Outcome {
        ok: status.success(),
        stdout,
        stderr,
    }
}

fn run_pair(
    server_policy: &str,
    server_tdx: &str,
    client_policy: &str,
    client_tdx: &str,
) -> (Outcome, Outcome) {
    run_pair_with(&["--policy", server_policy, "--tdx", server_tdx], |_| {
        vec![
            "--policy".into(),
            client_policy.into(),
            "--tdx".into(),
            client_tdx.into(),
        ]
    })
}

/// Starts `listen --once` with `server_args`, then `dial` with the arguments built from
/// the listening address; returns (server, client).
fn run_pair_with(
    server_args: &[&str],
    client_args: impl Fn(&str) -> Vec<String>,
) -> (Outcome, Outcome) {
    let mut server = Command::new(BIN)
        .args([
            "attest",
            "listen",
            "--port",
            "0",
            "--once",
            "--difficulty",
            "4",
        ])
        .args(server_args)
        .env("COCOON_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["event"], "listening");
    let addr = v["addr"].as_str().unwrap().to_string();
    let client = Command::new(BIN)
        .args(["attest", "dial", &addr])
        .args(client_args(&addr))
        .env("COCOON_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let c = finish(client, String::new(), Duration::from_secs(60));
    // Hand the rest of the server's stdout back to `finish`.
    let mut rest = first;
    out.read_to_string(&mut rest).unwrap();
    let s = finish(server, rest, Duration::from_secs(60));
    (s, c)
}

/// Whether a peer with evidence `tdx` passes `policy` on this (TDX-less) machine, and
/// if not, the reason the verifier gives.
fn verdict(policy: &str, tdx: &str) -> Result<(), String> {
    match (policy, tdx) {
        ("any", _) | ("fake_tee", "fake_tdx") => Ok(()),
        (p, "none") => Err(format!(
            "peer certificate carries no TEE evidence (TDX quote or SEV-SNP report), but policy {p} requires it"
        )),
        ("tee", "fake_tdx") => Err("fake TDX quote is not accepted by policy tee".into()),
        other => unreachable!("{other:?}"),
    }
}

#[test]
fn every_combination_of_policy_and_tee() {
    let policies = ["any", "fake_tee", "tee"];
    let tees = ["none", "fake_tdx"];
    let mut checked = 0;
    for sp in policies {
        for st in tees {
            for cp in policies {
                for ct in tees {
                    let (s, c) = run_pair(sp, st, cp, ct);
                    let ctx = format!(
                        "server {sp}/{st} client {cp}/{ct}\nserver out: {}\nserver err: {}\nclient out: {}\nclient err: {}",
                        s.stdout, s.stderr, c.stdout, c.stderr
                    );
                    // TLS 1.3: the client checks the server first; if it accepts, the
                    // server then checks the client.
                    match (verdict(cp, st), verdict(sp, ct)) {
                        (Ok(()), Ok(())) => {
                            assert!(s.ok && c.ok, "expected success: {ctx}");
                            let line = c
                                .stdout
                                .lines()
                                .find(|l| l.contains("connected"))
                                .expect(&ctx);
                            let v: serde_json::Value = serde_json::from_str(line).unwrap();
                            let want = if cp == "any" { "none" } else { st };
                            assert_eq!(v["peer"]["tee"], want, "{ctx}");
                            assert_eq!(
                                v["peer"]["public_key"].as_str().unwrap().len(),
                                64,
                                "{ctx}"
                            );
                            let line = s
                                .stdout
                                .lines()
                                .find(|l| l.contains("accepted"))
                                .expect(&ctx);
                            let v: serde_json::Value = serde_json::from_str(line).unwrap();
                            let want = if sp == "any" { "none" } else { ct };
                            assert_eq!(v["peer"]["tee"], want, "{ctx}");
                        }
                        (Err(reason), _) => {
                            assert!(!c.ok, "client must refuse: {ctx}");
                            assert!(
                                c.stderr.contains(&reason),
                                "client reason {reason:?}: {ctx}"
                            );
                            assert!(!s.ok, "server must not report success: {ctx}");
                        }
                        (Ok(()), Err(reason)) => {
                            assert!(!s.ok, "server must refuse: {ctx}");
                            assert!(
                                s.stdout.contains(&reason),
                                "server reason {reason:?}: {ctx}"
                            );
                            assert!(!c.ok, "client must see the refusal: {ctx}");
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 36);
}

#[test]
fn gen_cert_writes_cocoon_files_and_inspect_reads_them() {
    let dir = std::env::temp_dir().join(format!("cocoon-gen-cert-{}", std::process::id()));
    let out = Command::new(BIN)
        .args([
            "attest", "gen-cert", "--tdx", "fake_tdx", "--name", "worker", "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["worker_cert.pem", "worker_key.pem", "worker_image_hash.b64"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let b64 = std::fs::read_to_string(dir.join("worker_image_hash.b64")).unwrap();
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    assert_eq!(
        hex::encode(hash),
        "5c55c8f4db4010ba9203d83536d0609856af8c847ac039e37e7dde8fbd574b61"
    );
    let out = Command::new(BIN)
        .args(["attest", "inspect"])
        .arg(dir.join("worker_cert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tee_type"], "fake_tdx");
    assert_eq!(v["rtmr"].as_array().unwrap().len(), 4);
    assert_eq!(v["certificate"]["report_data_matches_key"], true);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_prints_the_spec_quote() {
    let out = Command::new(BIN)
        .args([
            "attest",
            "inspect",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../cocoon-attest/tests/data/tdx-quote-v4.dat"
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 4);
    assert_eq!(v["tee_type"], "tdx");
    assert_eq!(v["mrtd"], "7357a10d2e2724dffe68813e3cc4cfcde6814d749f2fb62e3953e54f6e0b50a219786afe2cd478f684b52c61837e1114");
    assert_eq!(v["rtmr"][3], "00".repeat(48));
    assert_eq!(v["report_data"].as_str().unwrap().len(), 128);
    assert_eq!(
        v["image_hash"],
        "04b3afd931d28680af91a15b09d672c40ad6b141f7f9089a8d67d595220f7436"
    );
}

#[test]
fn self_check_explains_itself() {
    let out = Command::new(BIN).args(["attest", "self"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let can = v["can_produce"].as_str().unwrap();
    assert!(can == "tdx" || can == "none");
    assert!(!v["reason"].as_str().unwrap().is_empty());
}

#[test]
fn seal_key_prints_cocoons_keys_or_says_why_not() {
    let seal = |args: &[&str]| {
        Command::new(BIN)
            .args(["attest", "seal-key"])
            .args(args)
            .output()
            .unwrap()
    };
    // Without a TEE: COCOON's debug-image key, as its debug images' APP_KEY.
    let out = seal(&["--name", "app", "--tee", "fake_tee", "--base64"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Y29jb2Nvb25jb2NvY29vbmNvY29jb29uY29jb2Nvb24="
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("debug-image key"));
    // TDX has no sealing of its own; an SEV key needs an SNP guest.
    let out = seal(&["--name", "app", "--tee", "tdx"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not available on TDX"));
    if !std::path::Path::new("/dev/sev-guest").exists() {
        let out = seal(&["--name", "disk_encryption", "--tee", "sev"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("/dev/sev-guest is missing"),
            "{out:?}"
        );
    }
}

#[test]
fn policies_come_from_a_toml_file_per_port_and_per_connection() {
    let dir = std::env::temp_dir().join(format!("cocoon-policy-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake_hash = "5c55c8f4db4010ba9203d83536d0609856af8c847ac039e37e7dde8fbd574b61";
    let server_ok = dir.join("server-ok.toml");
    std::fs::write(
        &server_ok,
        format!("[listen.\"0\"]\nkind = \"fake_tdx\"\nallowed_image_hashes = [\"{fake_hash}\"]\n"),
    )
    .unwrap();
    let server_bad = dir.join("server-bad.toml");
    std::fs::write(
        &server_bad,
        format!(
            "[listen.\"0\"]\nkind = \"fake_tdx\"\nallowed_image_hashes = [\"{}\"]\n",
            "42".repeat(32)
        ),
    )
    .unwrap();
    let client_file = |addr: &str| {
        let p = dir.join(format!("client-{}.toml", addr.replace([':', '.'], "_")));
        std::fs::write(&p, format!("[connect.\"{addr}\"]\nkind = \"fake_tdx\"\n")).unwrap();
        vec![
            "--policy-file".to_string(),
            p.to_string_lossy().into_owned(),
            "--tdx".into(),
            "fake_tdx".into(),
        ]
    };

    let (s, c) = run_pair_with(
        &[
            "--policy-file",
            server_ok.to_str().unwrap(),
            "--tdx",
            "fake_tdx",
        ],
        client_file,
    );
    assert!(
        s.ok && c.ok,
        "server: {} {}\nclient: {} {}",
        s.stdout,
        s.stderr,
        c.stdout,
        c.stderr
    );
    assert!(c.stdout.contains("\"tee\":\"fake_tdx\""), "{}", c.stdout);

    let (s, c) = run_pair_with(
        &[
            "--policy-file",
            server_bad.to_str().unwrap(),
            "--tdx",
            "fake_tdx",
        ],
        client_file,
    );
    assert!(!s.ok && !c.ok);
    assert!(
        s.stdout
            .contains(&format!("image hash {fake_hash} is not allowed by policy")),
        "{}",
        s.stdout
    );

    // A file without an entry for the port is a clear error.
    let out = Command::new(BIN)
        .args([
            "attest",
            "listen",
            "--port",
            "1",
            "--policy-file",
            server_ok.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no [listen.\"1\"] policy"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_reads_an_snp_report_and_checks_it_with_its_vcek() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cocoon-attest/tests/data/sev-snp");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(BIN)
            .args(["attest", "inspect"])
            .args(args)
            .output()
            .expect("cocoon attest inspect");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let report = data.join("report_milan.hex");
    let vcek = data.join("vcek_milan.der");
    let chain = data.join("cert_chain_milan");
    let (ok, out, err) = run(&[report.as_os_str()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["tee"], "sev-snp");
    assert_eq!(v["vmpl"], 0);
    assert_eq!(v["policy"], "0x30000");
    assert_eq!(v["measurement"].as_str().map(str::len), Some(96));
    assert_eq!(v["chip_id"].as_str().map(str::len), Some(128));
    assert!(v.get("signature").is_none(), "no VCEK, no verdict");
    let (ok, out, err) = run(&[
        report.as_os_str(),
        "--vcek".as_ref(),
        vcek.as_os_str(),
        "--chain".as_ref(),
        chain.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["signature"], "valid", "{out}");
    // A real VCEK with a stepping suffix: COCOON's remote check would refuse it.
    assert_eq!(v["vcek"]["product_name"], "Milan-B0");

    // The same report in binary with one measurement byte changed: parsed, not valid.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut raw = hex::decode(
        std::fs::read_to_string(&report)
            .expect("hex")
            .split_whitespace()
            .collect::<String>(),
    )
    .expect("hex");
    raw[0x90] ^= 1;
    let tampered = dir.path().join("report.bin");
    std::fs::write(&tampered, &raw).expect("write");
    let (ok, out, err) = run(&[tampered.as_os_str(), "--vcek".as_ref(), vcek.as_os_str()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        v["signature"], "the report's signature does not verify under the VCEK",
        "{out}"
    );
    // --vcek with something that is not a report is a clear error.
    let (ok, _, err) = run(&[vcek.as_os_str(), "--vcek".as_ref(), vcek.as_os_str()]);
    assert!(!ok);
    assert!(err.contains("not one"), "{err}");
}

#[test]
fn inspect_takes_the_vcek_and_chain_from_a_kds_cache_offline() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cocoon-attest/tests/data/sev-snp");
    let report = data.join("report_milan.hex");
    let cache = tempfile::tempdir().expect("tempdir");
    let run = |cache: &std::path::Path| {
        let out = std::process::Command::new(BIN)
            .args(["attest", "inspect"])
            .arg(&report)
            .args(["--kds", "files", "--kds-cache"])
            .arg(cache)
            .output()
            .expect("cocoon attest inspect");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Empty cache, files only: a clear error naming the missing file.
    let (ok, _, err) = run(cache.path());
    assert!(!ok);
    assert!(err.contains("not in the collateral cache"), "{err}");
    // Filled as an operator would (the layout README "Attestation" documents).
    let hex_text: String = std::fs::read_to_string(&report)
        .expect("hex")
        .split_whitespace()
        .collect();
    let raw = hex::decode(hex_text).expect("hex");
    let chip = hex::encode(&raw[0x1A0..0x1E0]);
    let dir = cache.path().join("vcek/Milan");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(
        data.join("vcek_milan.der"),
        dir.join(format!("{chip}-0-3-0-8-115.der")),
    )
    .expect("vcek");
    std::fs::copy(
        data.join("cert_chain_milan"),
        cache.path().join("Milan.cert_chain.pem"),
    )
    .expect("chain");
    let (ok, out, err) = run(cache.path());
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["signature"], "valid", "{out}");
    // No CRL in the cache: said, not silently skipped.
    assert!(
        v["crl"]
            .as_str()
            .is_some_and(|c| c.starts_with("not checked")),
        "{out}"
    );
}
