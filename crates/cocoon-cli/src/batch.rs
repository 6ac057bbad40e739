//! `cocoon batch`: datasets through a client gateway's Batch API (the OpenAI one, served
//! by `cocoon client` and the devnet) from a terminal: `run` uploads a JSONL file, follows
//! the batch with a progress bar (lines, tokens, TON, rate, ETA) and writes the answers;
//! `list`, `status`, `cancel` and `download` handle batches already submitted.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// The gateway when none is named, no devnet runs here and `OPENAI_BASE_URL` is unset.
const DEFAULT_API: &str = "http://127.0.0.1:10000/v1";
/// How often a running batch is looked at.
const POLL: Duration = Duration::from_millis(500);
/// How often progress is printed when stdout is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// `cocoon batch`.
#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Submit INPUT.jsonl, follow it to the end and write the answers to -o.
    Run(RunArgs),
    /// The gateway's batches, newest first.
    List(Gateway),
    /// One batch: status, counts, tokens and cost.
    Status(IdArgs),
    /// Stop a batch: no new lines start, running ones finish; the rest come back as
    /// errors (`batch_cancelled`).
    Cancel(IdArgs),
    /// Write a finished batch's answers (and errors) to files.
    Download(DownloadArgs),
}

/// Which gateway to talk to.
#[derive(Debug, Args)]
pub struct Gateway {
    /// The OpenAI base URL of a cocoon client gateway (default: the running devnet's, from
    /// DIR/devnet.json, else OPENAI_BASE_URL, else http://127.0.0.1:10000/v1).
    #[arg(long)]
    api: Option<String>,
    /// The devnet directory whose devnet.json names the gateway.
    #[arg(long, default_value = crate::devnet::DEFAULT_DIR)]
    dir: PathBuf,
}

/// `cocoon batch run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The requests: one JSON object per line, OpenAI's batch format
    /// (`{"custom_id", "method": "POST", "url", "body"}`).
    input: PathBuf,
    /// Where the answers go (one line per request answered, OpenAI's output format).
    #[arg(long, short)]
    output: PathBuf,
    /// Where the lines that failed go (default: OUTPUT with `.errors.jsonl`).
    #[arg(long)]
    errors: Option<PathBuf>,
    /// The endpoint of every line (default: the `url` of the input's first line).
    #[arg(long)]
    endpoint: Option<String>,
    /// Most lines in flight at once (default: the gateway's limit).
    #[arg(long)]
    concurrency: Option<u32>,
    /// Highest worker price coefficient for the lines (1000 = 1.0×; default: the
    /// gateway's).
    #[arg(long)]
    max_coefficient: Option<u32>,
    /// Time the batch may take, in hours (`24h`).
    #[arg(long, default_value = "24h")]
    completion_window: String,
    #[command(flatten)]
    gateway: Gateway,
}

/// A command on one batch.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The batch id (`batch_…`).
    id: String,
    #[command(flatten)]
    gateway: Gateway,
}

/// `cocoon batch download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The batch id (`batch_…`).
    id: String,
    /// Where the answers go.
    #[arg(long, short)]
    output: PathBuf,
    /// Where the failed lines go (default: OUTPUT with `.errors.jsonl`).
    #[arg(long)]
    errors: Option<PathBuf>,
    #[command(flatten)]
    gateway: Gateway,
}

/// Runs a `cocoon batch` command.
pub async fn run(command: BatchCommand) -> anyhow::Result<()> {
    match command {
        BatchCommand::Run(args) => run_batch(args).await,
        BatchCommand::List(g) => {
            let api = Api::new(&g)?;
            let list = api.get("batches?limit=100").await?;
            let batches = list["data"].as_array().cloned().unwrap_or_default();
            if batches.is_empty() {
                println!("no batches on {}", api.base);
            }
            for b in &batches {
                println!("{}", summary(b));
            }
            Ok(())
        }
        BatchCommand::Status(a) => {
            let api = Api::new(&a.gateway)?;
            let b = api.get(&format!("batches/{}", a.id)).await?;
            print_status(&b);
            Ok(())
        }
        BatchCommand::Cancel(a) => {
            let api = Api::new(&a.gateway)?;
            let b = api
                .post_json(&format!("batches/{}/cancel", a.id), &json!({}))
                .await?;
            println!("{}", summary(&b));
            println!(
                "running lines finish; `cocoon batch download {} -o FILE` when it has ended",
                a.id
            );
            Ok(())
        }
        BatchCommand::Download(a) => {
            let api = Api::new(&a.gateway)?;
            let b = api.get(&format!("batches/{}", a.id)).await?;
            if !is_final(&b) {
                bail!(
                    "batch {} is {}: nothing to download until it ends ({})",
                    a.id,
                    b["status"].as_str().unwrap_or("?"),
                    counts(&b)
                );
            }
            let errors = a.errors.unwrap_or_else(|| errors_path(&a.output));
            download(&api, &b, &a.output, &errors).await
        }
    }
}

/// A gateway's Batch API over HTTP.
struct Api {
    base: String,
    http: reqwest::Client,
    key: Option<String>,
}

impl Api {
    fn new(g: &Gateway) -> anyhow::Result<Self> {
        let base = g
            .api
            .clone()
            .or_else(|| crate::bot::devnet_api(&g.dir))
            .or_else(|| {
                std::env::var("OPENAI_BASE_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_API.to_owned());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            http,
            key: std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn answer(&self, r: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = self
            .auth(r)
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach the gateway at {}", self.base))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("{what}: the gateway's answer ({status}) is not JSON"))?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("(no message)");
            bail!("{what}: {status}: {message}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.answer(self.http.get(self.url(path)), &format!("GET {path}"))
            .await
    }

    async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.answer(
            self.http.post(self.url(path)).json(body),
            &format!("POST {path}"),
        )
        .await
    }

    /// Uploads `path` as batch input, streamed from disk.
    async fn upload(&self, path: &Path) -> anyhow::Result<Value> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata().await?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "input.jsonl".into());
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 16);
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
                .file_name(name)
                .mime_str("application/jsonl")?;
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", part);
        self.answer(
            self.http.post(self.url("files")).multipart(form),
            "uploading the input",
        )
        .await
    }

    /// Streams file `id`'s content into `to` (through a temporary file beside it);
    /// returns the lines written.
    async fn save(&self, id: &str, to: &Path) -> anyhow::Result<u64> {
        let response = self
            .auth(self.http.get(self.url(&format!("files/{id}/content"))))
            .send()
            .await
            .with_context(|| format!("downloading {id}"))?;
        if !response.status().is_success() {
            bail!("downloading {id}: {}", response.status());
        }
        let part = to.with_extension("part");
        let mut out = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("creating {}", part.display()))?;
        let mut lines = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("downloading {id}"))?;
            lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            out.write_all(&chunk).await?;
        }
        out.sync_all().await?;
        tokio::fs::rename(&part, to)
            .await
            .with_context(|| format!("writing {}", to.display()))?;
        Ok(lines)
    }
}

/// `OUTPUT.jsonl` → `OUTPUT.errors.jsonl`.
fn errors_path(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!("{stem}.errors.jsonl"))
}

fn is_final(b: &Value) -> bool {
    matches!(
        b["status"].as_str(),
        Some("completed" | "failed" | "expired" | "cancelled")
    )
}

fn n(b: &Value, path: &[&str]) -> u64 {
    let mut v = b;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or(0)
}

fn counts(b: &Value) -> String {
    format!(
        "{}/{} lines done, {} failed",
        n(b, &["request_counts", "completed"]) + n(b, &["request_counts", "failed"]),
        n(b, &["request_counts", "total"]),
        n(b, &["request_counts", "failed"]),
    )
}

fn summary(b: &Value) -> String {
    format!(
        "{}  {:<10}  {}  {} tokens  {}",
        b["id"].as_str().unwrap_or("?"),
        b["status"].as_str().unwrap_or("?"),
        counts(b),
        n(b, &["usage", "total_tokens"]),
        crate::money::ton(n(b, &["cost_nanoton"])),
    )
}

fn print_status(b: &Value) {
    println!("{}", summary(b));
    println!("  endpoint:     {}", b["endpoint"].as_str().unwrap_or("?"));
    println!(
        "  input file:   {}",
        b["input_file_id"].as_str().unwrap_or("?")
    );
    for (name, key) in [
        ("output file:", "output_file_id"),
        ("error file: ", "error_file_id"),
    ] {
        if let Some(id) = b[key].as_str() {
            println!("  {name}  {id}");
        }
    }
    println!(
        "  tokens:       {} in, {} out",
        n(b, &["usage", "input_tokens"]),
        n(b, &["usage", "output_tokens"])
    );
    println!(
        "  cost:         {} nanoTON ({})",
        n(b, &["cost_nanoton"]),
        crate::money::ton(n(b, &["cost_nanoton"]))
    );
    if let Some(errors) = b["errors"]["data"].as_array() {
        for e in errors {
            println!("  error:        {}", e["message"].as_str().unwrap_or("?"));
        }
    }
}

/// The endpoint of the input's first request line.
fn first_endpoint(input: &Path) -> anyhow::Result<String> {
    use std::io::BufRead;
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: the first line is not JSON", input.display()))?;
        return v["url"].as_str().map(str::to_owned).with_context(|| {
            format!(
                "{}: the first line has no \"url\"; give --endpoint",
                input.display()
            )
        });
    }
    bail!("{} holds no requests", input.display())
}

async fn run_batch(args: RunArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.gateway)?;
    let endpoint = match args.endpoint {
        Some(e) => e,
        None => first_endpoint(&args.input)?,
    };
    let errors_to = args
        .errors
        .clone()
        .unwrap_or_else(|| errors_path(&args.output));
    let tty = std::io::stdout().is_terminal();
    let spinner = tty.then(|| {
        let s = ProgressBar::new_spinner();
        s.set_message(format!("uploading {}", args.input.display()));
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
    let file = api.upload(&args.input).await?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let file_id = file["id"].as_str().context("the upload answer has no id")?;
    let mut create = json!({
        "input_file_id": file_id,
        "endpoint": endpoint,
        "completion_window": args.completion_window,
    });
    if let Some(c) = args.max_coefficient {
        create["max_coefficient"] = json!(c);
    }
    if let Some(c) = args.concurrency {
        create["concurrency"] = json!(c);
    }
    let batch = api.post_json("batches", &create).await?;
    let id = batch["id"]
        .as_str()
        .context("the batch answer has no id")?
        .to_owned();
    let total = n(&batch, &["request_counts", "total"]);
    println!(
        "batch {id}: {total} requests to {endpoint} on {} (Ctrl-C leaves it running)",
        api.base
    );
    let bar = tty.then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} lines  {per_sec}  ETA {eta}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let started = Instant::now();
    let mut last_plain = Instant::now();
    let path = format!("batches/{id}");
    let end = loop {
        let b = tokio::select! {
            b = api.get(&path) => b?,
            _ = tokio::signal::ctrl_c() => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                println!("batch {id} keeps running on the gateway:");
                println!("  cocoon batch status {id}");
                println!("  cocoon batch download {id} -o {}", args.output.display());
                println!("  cocoon batch cancel {id}");
                return Ok(());
            }
        };
        let done = n(&b, &["request_counts", "completed"]) + n(&b, &["request_counts", "failed"]);
        let message = format!(
            "{} failed  {} tokens  {}",
            n(&b, &["request_counts", "failed"]),
            n(&b, &["usage", "total_tokens"]),
            crate::money::ton(n(&b, &["cost_nanoton"])),
        );
        match &bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(message);
            }
            None if last_plain.elapsed() >= PLAIN_EVERY || is_final(&b) => {
                last_plain = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let rate = done as f64 / secs;
                let eta = if rate > 0.0 {
                    format!("{:.0} s", total.saturating_sub(done) as f64 / rate)
                } else {
                    "?".into()
                };
                println!("{done}/{total} lines  {message}  {rate:.1} lines/s  ETA {eta}");
            }
            None => {}
        }
        if is_final(&b) {
            break b;
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some(bar) = &bar {
        bar.finish();
    }
    download(&api, &end, &args.output, &errors_to).await?;
    let failed = n(&end, &["request_counts", "failed"]);
    if end["status"] != "completed" || failed > 0 {
        bail!(
            "batch {id} ended {} with {failed} failed lines (see {})",
            end["status"].as_str().unwrap_or("?"),
            errors_to.display()
        );
    }
    Ok(())
}

/// Writes a finished batch's output and error files.
async fn download(api: &Api, b: &Value, output: &Path, errors: &Path) -> anyhow::Result<()> {
    let mut answered = 0;
    if let Some(out) = b["output_file_id"].as_str() {
        answered = api.save(out, output).await?;
    } else {
        tokio::fs::write(output, b"")
            .await
            .with_context(|| format!("writing {}", output.display()))?;
    }
    println!("{}", summary(b));
    println!("  {answered} answers in {}", output.display());
    if let Some(err) = b["error_file_id"].as_str() {
        let failed = api.save(err, errors).await?;
        println!("  {failed} failed lines in {}", errors.display());
    }
    if let Some(e) = b["errors"]["data"][0]["message"].as_str() {
        println!("  the batch failed: {e}");
    }
    Ok(())
}
