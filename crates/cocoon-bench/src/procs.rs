//! Child processes (the mock upstream and the `cocoon` roles) and what `/proc` says about
//! them: resident memory and CPU time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Memory and CPU of one process, from `/proc/PID/status` and `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// Resident set size now (KiB).
    pub rss_kib: u64,
    /// Peak resident set size (KiB).
    pub hwm_kib: u64,
    /// User + system CPU time of all its threads, dead ones included (nanoseconds, at
    /// the kernel's clock-tick resolution, 10 ms).
    pub cpu_ns: u64,
}

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

/// Reads `/proc/PID/status` and `/proc/PID/stat`; `None` if the process is gone or this is
/// not Linux.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: indexes 11 and 12 here.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_ns: (ticks(11) + ticks(12)) * (1_000_000_000 / USER_HZ),
    })
}

/// A child process whose stdout announced readiness; killed when dropped.
#[derive(Debug)]
pub struct Spawned {
    /// Its name in reports.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// The line it announced readiness with.
    pub ready_line: String,
    child: Child,
}

impl Spawned {
    /// Starts `program args…`, with stderr to `log`, and waits up to `within` for a
    /// stdout line containing `marker`.
    pub async fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
        marker: &str,
        within: Duration,
    ) -> anyhow::Result<Spawned> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{name}: no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains(marker) {
                    return Ok::<_, std::io::Error>(Some(line));
                }
            }
            Ok(None)
        };
        let ready_line = match tokio::time::timeout(within, wait).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => bail!(
                "{name} exited before it was ready; its log: {}\n{}",
                log.display(),
                tail(log)
            ),
            Err(_) => bail!(
                "{name} not ready within {within:?}; its log: {}\n{}",
                log.display(),
                tail(log)
            ),
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Spawned {
            name: name.to_owned(),
            pid,
            ready_line,
            child,
        })
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Escapes `s` as a TOML basic string (with the quotes).
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `proxy.toml` (owner addresses are the testnet ones of `configs/`): ports on any free loopback port, fake TDX, low PoW difficulty, key in
/// `dir` and ledger in `ledger_dir`.
pub fn proxy_config(dir: &Path, ledger_dir: &Path, pow: u32) -> String {
    format!(
        r#"owner_address = "0QALGf46sDg_oXSBokexBeMbrENwDjTJOWJrlxxxzfhIfrR0"
client_listen = "127.0.0.1:0"
worker_listen = "127.0.0.1:0"
http_listen = ""
db_path = {db}
is_test = true
max_attempts = 3

[attestation]
tee = "fake_tdx"
key_file = {key}
pow_difficulty = {pow}

[client_policy]
kind = "any"

[worker_policy]
kind = "fake_tdx"
"#,
        db = toml_str(&ledger_dir.join("proxy-ledger.sqlite").display().to_string()),
        key = toml_str(&dir.join("proxy_key.pem").display().to_string()),
    )
}

/// `worker.toml` for the upstream at `upstream` and the proxy's worker port `proxy`.
pub fn worker_config(dir: &Path, upstream: &str, proxy: &str, pow: u32) -> String {
    worker_config_n(dir, upstream, proxy, pow, 0, 1024)
}

/// `worker.toml` of worker number `index` (its own key file) taking at most `max_active`
/// requests at once.
pub fn worker_config_n(
    dir: &Path,
    upstream: &str,
    proxy: &str,
    pow: u32,
    index: usize,
    max_active: u32,
) -> String {
    let key = if index == 0 {
        dir.join("worker_key.pem")
    } else {
        dir.join(format!("worker_key_{index}.pem"))
    };
    format!(
        r#"owner_address = "0QBxQlHch0VEgyMl9AKLKpUzfRrNTU5oLOSGFYQYBHigiQab"
upstream = {upstream}
max_active_requests = {max_active}
proxies = [{proxy}]
http_listen = ""
is_test = true

[attestation]
tee = "fake_tdx"
key_file = {key}
pow_difficulty = {pow}

[proxy_policy]
kind = "fake_tdx"
"#,
        upstream = toml_str(upstream),
        proxy = toml_str(proxy),
        key = toml_str(&key.display().to_string()),
    )
}

/// `client.toml` for the proxy's client port `proxy`, API on any free loopback port.
pub fn client_config(proxy: &str, pow: u32) -> String {
    client_config_with(proxy, pow, None)
}

/// [`client_config`] with the Batch API's files and state in `batch_dir`.
pub fn client_config_with(proxy: &str, pow: u32, batch_dir: Option<&Path>) -> String {
    let batch = match batch_dir {
        Some(d) => format!("\n[batch]\ndir = {}\n", toml_str(&d.display().to_string())),
        None => String::new(),
    };
    format!(
        r#"owner_address = "0QDxg3MCjJ_hBqU5laTYfFm2dOpc316VbsFA2snOydUkNTZz"
http_listen = "127.0.0.1:0"
proxies = [{proxy}]
is_test = true

[attestation]
tee = "none"
pow_difficulty = {pow}

[proxy_policy]
kind = "fake_tdx"
{batch}"#,
        proxy = toml_str(proxy),
    )
}

/// The word after `key` in `line` (e.g. the address after `clients`).
pub fn word_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    words.next()
}

/// Where to find the `cocoon` binary: `explicit`, else next to this executable.
pub fn cocoon_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let me = std::env::current_exe().context("locating this executable")?;
    let dir = me
        .parent()
        .ok_or_else(|| anyhow!("this executable has no directory"))?;
    let candidate = dir.join("cocoon");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "no cocoon binary at {}: build it with `cargo build --release -p cocoon` or pass --cocoon PATH",
        candidate.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_toml_and_words_are_found() {
        let dir = Path::new("/tmp/x \"y\"");
        for text in [
            proxy_config(dir, dir, 16),
            worker_config(dir, "http://127.0.0.1:1", "127.0.0.1:2", 16),
            client_config("127.0.0.1:3", 16),
        ] {
            toml::from_str::<toml::Table>(&text).expect("valid TOML");
        }
        let line = "proxy ready: clients 127.0.0.1:5 workers 127.0.0.1:6 public key ab";
        assert_eq!(word_after(line, "clients"), Some("127.0.0.1:5"));
        assert_eq!(word_after(line, "workers"), Some("127.0.0.1:6"));
        assert_eq!(word_after(line, "nothing"), None);
    }

    #[test]
    fn own_process_can_be_sampled() {
        if cfg!(target_os = "linux") {
            let s = sample(std::process::id()).expect("/proc");
            assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        }
    }
}
