//! `cocoon-bench`: the network benchmark of issue #5.
//!
//! Starts a mock OpenAI upstream (this binary, `cocoon-bench mock`) and the three
//! `cocoon` roles as separate processes on loopback, then sends the same requests straight
//! to the upstream and through client → proxy → worker, and prints a Markdown report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use cocoon_bench::procs::{self, Spawned};
use cocoon_bench::report::{Aims, MemoryRow, Report, Row};
use cocoon_bench::{driver, mock, run_plan, Plan, Watched};

/// Network benchmark: direct-to-upstream vs client → proxy → worker.
#[derive(Debug, Parser)]
#[command(name = "cocoon-bench")]
struct Cli {
    /// Measured JSON requests per path and concurrency.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Measured streams per path and concurrency (0 skips streams).
    #[arg(long, default_value_t = 200)]
    stream_requests: usize,
    /// Unmeasured requests per path before each measured run.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Concurrencies to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Content chunks per stream.
    #[arg(long, default_value_t = 16)]
    chunks: u64,
    /// Microseconds between the upstream's stream chunks (1000 = a 1000 tokens/s model).
    #[arg(long, default_value_t = 1000)]
    chunk_interval_us: u64,
    /// The `cocoon` binary (default: next to this one, e.g. target/release/cocoon).
    #[arg(long, global = true)]
    cocoon: Option<PathBuf>,
    /// Proof-of-work difficulty of the proxy's ports.
    #[arg(long, default_value_t = 16, global = true)]
    pow_difficulty: u32,
    /// Also write the Markdown report to this file.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Directory of the proxy's SQLite ledger (default: the working directory under
    /// $TMPDIR); e.g. /dev/shm to take the disk's fsync out of the measurement.
    #[arg(long)]
    ledger_dir: Option<PathBuf>,
    /// Keep the working directory (configs, role logs) instead of deleting it.
    #[arg(long, global = true)]
    keep_dir: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve only the mock upstream (the benchmark starts it this way).
    Mock {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// The batch benchmark: a batch through the Batch API with 1, 2, 4… workers, beside a
    /// sequential and a 16-at-a-time loop of plain requests, same run.
    Batch(BatchArgs),
}

#[derive(Debug, clap::Args)]
struct BatchArgs {
    /// Lines of the batch.
    #[arg(long, default_value_t = 10_000)]
    lines: usize,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// The upstream's time per answer (ms).
    #[arg(long, default_value_t = 50)]
    delay_ms: u64,
    /// Requests each worker takes at once (its max_active_requests).
    #[arg(long, default_value_t = 8)]
    max_active: u32,
    /// Requests of the sequential loop (its rate is the same at any length).
    #[arg(long, default_value_t = 200)]
    sequential_requests: usize,
    /// Requests of the 16-at-a-time loop.
    #[arg(long, default_value_t = 3000)]
    loop_requests: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &cli.command {
        Some(Command::Mock { listen }) => runtime.block_on(serve_mock(listen)),
        Some(Command::Batch(args)) => runtime.block_on(batch_bench(&cli, args)),
        None => runtime.block_on(bench(&cli)),
    }
}

async fn serve_mock(listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    println!("mock upstream listening on http://{addr}");
    mock::serve(listener).await?;
    Ok(())
}

const START_WITHIN: Duration = Duration::from_secs(60);

/// The processes of the network path.
struct Network {
    mock: Spawned,
    mock_url: String,
    proxy: Spawned,
    worker: Spawned,
    client: Spawned,
    client_base: String,
}

/// Starts the mock upstream (this binary, `mock`); it and its base URL.
async fn start_mock(dir: &Path) -> anyhow::Result<(Spawned, String)> {
    let me = std::env::current_exe().context("locating this executable")?;
    let mock = Spawned::start(
        "mock",
        &me,
        &["mock", "--listen", "127.0.0.1:0"],
        &dir.join("mock.log"),
        "listening on",
        START_WITHIN,
    )
    .await?;
    let url = mock
        .ready_line
        .split_whitespace()
        .last()
        .ok_or_else(|| anyhow!("mock printed no address"))?
        .to_owned();
    Ok((mock, url))
}

/// Writes `NAME.toml` with `config` in `dir` and starts `cocoon ROLE --config` on it,
/// waiting for its `ready` line (its log in `dir/NAME.log`).
async fn start_role(
    cocoon: &Path,
    dir: &Path,
    role: &str,
    name: &str,
    config: String,
) -> anyhow::Result<Spawned> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    let arg = path.display().to_string();
    Spawned::start(
        name,
        cocoon,
        &[role, "--config", &arg],
        &dir.join(format!("{name}.log")),
        &format!("{role} ready"),
        START_WITHIN,
    )
    .await
}

/// Starts a proxy with its ledger in `ledger_dir`; it and its client and worker ports.
async fn start_proxy(
    cocoon: &Path,
    dir: &Path,
    ledger_dir: &Path,
    pow: u32,
) -> anyhow::Result<(Spawned, String, String)> {
    let proxy = start_role(
        cocoon,
        dir,
        "proxy",
        "proxy",
        procs::proxy_config(dir, ledger_dir, pow),
    )
    .await?;
    let port = |key: &str| {
        procs::word_after(&proxy.ready_line, key)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("proxy printed no {key} port: {}", proxy.ready_line))
    };
    let (clients, workers) = (port("clients")?, port("workers")?);
    Ok((proxy, clients, workers))
}

/// Starts a client from `config`; it and its API base (`http://host:port`).
async fn start_client(
    cocoon: &Path,
    dir: &Path,
    config: String,
) -> anyhow::Result<(Spawned, String)> {
    let client = start_role(cocoon, dir, "client", "client", config).await?;
    let base = client
        .ready_line
        .split_whitespace()
        .last()
        .map(|u| u.trim_end_matches("/v1").to_owned())
        .ok_or_else(|| anyhow!("client printed no API address"))?;
    Ok((client, base))
}

async fn start_network(cli: &Cli, dir: &Path, ledger_dir: &Path) -> anyhow::Result<Network> {
    let cocoon = procs::cocoon_binary(cli.cocoon.clone())?;
    let (mock, mock_url) = start_mock(dir).await?;
    let (proxy, clients_addr, workers_addr) =
        start_proxy(&cocoon, dir, ledger_dir, cli.pow_difficulty).await?;
    let worker = start_role(
        &cocoon,
        dir,
        "worker",
        "worker",
        procs::worker_config(dir, &mock_url, &workers_addr, cli.pow_difficulty),
    )
    .await?;
    let (client, client_base) = start_client(
        &cocoon,
        dir,
        procs::client_config(&clients_addr, cli.pow_difficulty),
    )
    .await?;
    Ok(Network {
        mock,
        mock_url,
        proxy,
        worker,
        client,
        client_base,
    })
}

/// Waits until a request through the network succeeds (the worker has connected to the
/// proxy and the client holds a session).
async fn wait_routable(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_WITHIN;
    let mut last = String::new();
    while Instant::now() < deadline {
        let run = driver::run(client, base, driver::Workload::json(), 1, 1).await;
        if run.errors == 0 {
            return Ok(());
        }
        last = run.first_error.unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the network did not answer within {START_WITHIN:?}: {last}")
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs ({model}), {}", std::env::consts::OS)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn print_row(row: &Row) {
    let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or("—".into());
    eprintln!(
        "  {} c={}: direct p50 {} p99 {} ms {:.0} req/s | cocoon p50 {} p99 {} ms {:.0} req/s | errors {}",
        row.workload.name(),
        row.concurrency,
        f(row.direct.p50_ms),
        f(row.direct.p99_ms),
        row.direct.rps,
        f(row.network.p50_ms),
        f(row.network.p99_ms),
        row.network.rps,
        row.direct.errors + row.network.errors,
    );
}

/// Waits until the gateway at `base` lists `workers` workers of the model.
async fn wait_workers(http: &reqwest::Client, base: &str, workers: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_WITHIN;
    while Instant::now() < deadline {
        let listed: serde_json::Value = match http.get(format!("{base}/v1/models")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let n = listed["data"][0]["workers"].as_array().map_or(0, Vec::len);
        if n >= workers {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{workers} workers did not connect within {START_WITHIN:?}")
}

async fn batch_bench(cli: &Cli, args: &BatchArgs) -> anyhow::Result<()> {
    use cocoon_bench::batch;
    if args.workers.contains(&0) || args.delay_ms == 0 || args.lines == 0 {
        bail!("--workers, --delay-ms and --lines must be at least 1");
    }
    let tmp = tempfile::Builder::new()
        .prefix("cocoon-bench-batch-")
        .tempdir()
        .context("creating a working directory")?;
    let dir = tmp.path().to_owned();
    let cocoon = procs::cocoon_binary(cli.cocoon.clone())?;
    let (mock, mock_url) = start_mock(&dir).await?;
    let input = dir.join("batch.jsonl");
    batch::write_input(&input, args.lines, args.delay_ms)?;
    let http = driver::http_client().context("building the HTTP client")?;
    let load_before = load_average();
    let started = Instant::now();
    let mut rows = Vec::new();
    for &workers in &args.workers {
        let sub = dir.join(format!("workers-{workers}"));
        std::fs::create_dir_all(&sub)?;
        let (proxy, clients_addr, workers_addr) =
            start_proxy(&cocoon, &sub, &sub, cli.pow_difficulty).await?;
        let mut spawned = Vec::new();
        for i in 0..workers {
            let config = procs::worker_config_n(
                &sub,
                &mock_url,
                &workers_addr,
                cli.pow_difficulty,
                i,
                args.max_active,
            );
            spawned
                .push(start_role(&cocoon, &sub, "worker", &format!("worker-{i}"), config).await?);
        }
        let batches = sub.join("batches");
        let config = procs::client_config_with(&clients_addr, cli.pow_difficulty, Some(&batches));
        let (client, base) = start_client(&cocoon, &sub, config).await?;
        wait_routable(&http, &base).await?;
        wait_workers(&http, &base, workers).await?;
        let api = format!("{base}/v1");
        let mut row = batch::BatchRow {
            workers,
            bound: (workers as f64) * f64::from(args.max_active) * 1000.0 / args.delay_ms as f64,
            ..Default::default()
        };
        row.sequential =
            batch::plain_loop(&http, &api, args.delay_ms, 1, args.sequential_requests).await?;
        row.loop16 = batch::plain_loop(&http, &api, args.delay_ms, 16, args.loop_requests).await?;
        batch::run_batch(&http, &api, &input, client.pid, &mut row).await?;
        eprintln!(
            "  {workers} workers: sequential {:.1}/s, 16 at a time {:.0}/s, batch {:.0}/s ({} answered), bound {:.0}/s",
            row.sequential, row.loop16, row.batch, row.answered, row.bound
        );
        rows.push(row);
        client.stop().await;
        for w in spawned {
            w.stop().await;
        }
        proxy.stop().await;
    }
    mock.stop().await;
    let command: Vec<String> = std::env::args().skip(1).collect();
    let setup = vec![
        format!("command: `cargo run --release -p cocoon-bench -- {}`", command.join(" ")),
        format!(
            "machine: {}; load average (1/5/15 min) {load_before} before, {} after; run took {:.0} s",
            machine(),
            load_average(),
            started.elapsed().as_secs_f64()
        ),
        format!(
            "{} lines per batch; the mock answers each request after {} ms; each worker takes {} requests at once, \
             so the upstream bounds the rate at workers × {} ÷ {} ms",
            args.lines, args.delay_ms, args.max_active, args.max_active, args.delay_ms
        ),
        format!(
            "loops of plain requests through the same gateway, same run: {} one at a time, {} sixteen at a time \
             (a refusal sent again after 10 ms); the batch is timed from its creation to its completion",
            args.sequential_requests, args.loop_requests
        ),
        "processes: mock upstream, `cocoon proxy`, the workers and `cocoon client` with `[batch]` (separate \
         processes on 127.0.0.1, fake-TDX RA-TLS); gateway CPU and memory are the client process's"
            .into(),
    ];
    let text = batch::markdown(&setup, &rows);
    println!("{text}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    if cli.keep_dir {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
}

async fn bench(cli: &Cli) -> anyhow::Result<()> {
    if cli.concurrency.contains(&0) {
        bail!("--concurrency values must be at least 1");
    }
    let tmp = tempfile::Builder::new()
        .prefix("cocoon-bench-")
        .tempdir()
        .context("creating a working directory")?;
    let dir = tmp.path().to_owned();
    eprintln!(
        "starting the mock upstream and the roles (logs in {})",
        dir.display()
    );
    let ledger_tmp = match &cli.ledger_dir {
        Some(d) => Some(
            tempfile::Builder::new()
                .prefix("cocoon-bench-ledger-")
                .tempdir_in(d)
                .with_context(|| format!("creating a directory in {}", d.display()))?,
        ),
        None => None,
    };
    let ledger_dir = ledger_tmp
        .as_ref()
        .map(|t| t.path().to_owned())
        .unwrap_or_else(|| dir.clone());
    let net = start_network(cli, &dir, &ledger_dir).await?;
    let http = driver::http_client().context("building the HTTP client")?;
    wait_routable(&http, &net.client_base).await?;
    eprintln!(
        "ready: upstream {} · client API {}/v1",
        net.mock_url, net.client_base
    );

    let me = Watched {
        name: "driver".into(),
        pid: std::process::id(),
    };
    let watch = |s: &Spawned| Watched {
        name: s.name.clone(),
        pid: s.pid,
    };
    let direct_watched = vec![me.clone(), watch(&net.mock)];
    let network_watched = vec![
        me.clone(),
        watch(&net.mock),
        watch(&net.client),
        watch(&net.proxy),
        watch(&net.worker),
    ];
    let idle: Vec<(String, u64)> = network_watched
        .iter()
        .map(|w| {
            let s = procs::sample(w.pid).unwrap_or_default();
            (w.name.clone(), s.rss_kib)
        })
        .collect();

    let plan = Plan {
        concurrency: cli.concurrency.clone(),
        requests: cli.requests,
        stream_requests: cli.stream_requests,
        warmup: cli.warmup,
        chunks: cli.chunks,
        chunk_interval_us: cli.chunk_interval_us,
    };
    let load_before = load_average();
    let started = Instant::now();
    let rows = run_plan(
        &http,
        &plan,
        &net.mock_url,
        &net.client_base,
        &direct_watched,
        &network_watched,
        print_row,
    )
    .await;
    let elapsed = started.elapsed();

    let memory = network_watched
        .iter()
        .zip(idle)
        .map(|(w, (name, idle_kib))| {
            let end = procs::sample(w.pid).unwrap_or_default();
            MemoryRow {
                name,
                idle_kib,
                end_kib: end.rss_kib,
                peak_kib: end.hwm_kib,
            }
        })
        .collect();
    let command: Vec<String> = std::env::args().skip(1).collect();
    let report = Report {
        setup: vec![
            format!("command: `cargo run --release -p cocoon-bench --{}{}`",
                if command.is_empty() { "" } else { " " },
                command.join(" ")),
            format!(
                "machine: {}; load average (1/5/15 min) {load_before} before, {} after",
                machine(),
                load_average()
            ),
            format!(
                "proxy ledger (SQLite, WAL, synchronous=FULL) in {}",
                cli.ledger_dir
                    .as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "a temporary directory on the $TMPDIR file system".into())
            ),
            "processes: mock upstream (`cocoon-bench mock`, axum), `cocoon proxy`, `cocoon worker`, `cocoon client` \
             (separate \
         processes on 127.0.0.1, fake-TDX RA-TLS between roles, info logs to files), and this driver \
             (reqwest, HTTP/1.1 keep-alive); direct = driver → mock, cocoon = driver → client → proxy → worker → mock"
                .into(),
            format!(
                "per path and concurrency: {} JSON requests and {} streams ({} chunks, one every {} µs), after {} warm-up requests; run took {:.0} s",
                plan.requests, plan.stream_requests, plan.chunks, plan.chunk_interval_us, plan.warmup,
                elapsed.as_secs_f64()
            ),
        ],
        rows,
        memory,
    };
    let text = report.markdown(Aims::default());
    println!("{text}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }

    for p in [net.client, net.worker, net.proxy, net.mock] {
        p.stop().await;
    }
    if cli.keep_dir {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
}
