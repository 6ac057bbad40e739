//! `cocoon encrypt` / `cocoon decrypt`: end-to-end encryption of request and answer bodies
//! for apps (COCOON 9060ce5 §2.8, the counterpart of upstream's `encrypt-message` tool).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use cocoon_e2e::{keys, open, seal, Direction};
use serde_json::Value;

/// `cocoon encrypt`: seal JSON request bodies to a key manager's public key.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Our Ed25519 key: 32 raw bytes, 64 hex characters, or a PEM key (`cocoon wallet new`).
    #[arg(long, short)]
    key: PathBuf,
    /// The key manager's public key (hex or base64), as the root registers it.
    #[arg(long)]
    to: String,
}

/// `cocoon decrypt`: open answer bodies a worker sealed to us.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Our Ed25519 key (as for `encrypt`).
    #[arg(long, short)]
    key: PathBuf,
    /// The key the request was encrypted to: answers from any other sender are refused.
    #[arg(long)]
    from: String,
}

fn read_seed(path: &Path) -> anyhow::Result<[u8; 32]> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(seed);
    }
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("PRIVATE KEY") {
        let key = cocoon_attest::cert::load_key_pem(&bytes)
            .with_context(|| format!("{}: not an Ed25519 PEM key", path.display()))?;
        return Ok(key.to_bytes());
    }
    let decoded = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    decoded.with_context(|| {
        format!(
            "{}: a key file holds 32 raw bytes, 64 hex characters or a PEM key",
            path.display()
        )
    })
}

fn peer_key(text: &str) -> anyhow::Result<[u8; 32]> {
    keys::parse_public_key(text.trim().as_bytes()).with_context(|| format!("public key {text:?}"))
}

/// The JSON values on stdin: concatenated or one per line, SSE `data:` lines included.
fn values(input: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    if input.trim_start().starts_with("data:") {
        for line in input.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data.is_empty() || data == "[DONE]" {
                continue;
            }
            out.push(serde_json::from_str(data).context("an SSE data line is not JSON")?);
        }
        return Ok(out);
    }
    for value in serde_json::Deserializer::from_str(input).into_iter::<Value>() {
        out.push(value.context("stdin is not a stream of JSON values")?);
    }
    Ok(out)
}

fn stdin() -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading stdin")?;
    Ok(input)
}

/// Seals every JSON value on stdin; prints one compact JSON per line.
pub fn encrypt(args: EncryptArgs) -> anyhow::Result<()> {
    let seed = read_seed(&args.key)?;
    let to = peer_key(&args.to)?;
    let mut out = std::io::stdout().lock();
    for value in values(&stdin()?)? {
        let sealed = seal(&value, &seed, &to, Direction::ToWorker)?;
        writeln!(out, "{sealed}")?;
    }
    Ok(())
}

/// Opens every sealed answer on stdin; prints one compact JSON per line.
pub fn decrypt(args: DecryptArgs) -> anyhow::Result<()> {
    let seed = read_seed(&args.key)?;
    let from = peer_key(&args.from)?;
    let mut out = std::io::stdout().lock();
    for value in values(&stdin()?)? {
        let opened = open(&value, &seed, Direction::ToApp, Some(&from))?;
        writeln!(out, "{}", opened.body)?;
    }
    Ok(())
}
