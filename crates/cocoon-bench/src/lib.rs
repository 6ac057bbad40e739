//! Network benchmark of cocoon-rs (issue #5): the same OpenAI requests sent straight to a
//! mock upstream and through client → proxy → worker, at several concurrencies, with the
//! added latency, the throughput ratio, the added per-chunk latency of streams, and the
//! memory and CPU of every process.
//!
//! The binary (`cargo run --release -p cocoon-bench`) starts the mock upstream and the
//! three `cocoon` roles as separate processes; this library holds the pieces: the mock
//! ([`mock`]), the load driver ([`driver`]), `/proc` sampling and role configs
//! ([`procs`]) and the report ([`report`]).

#![forbid(unsafe_code)]

pub mod batch;
pub mod driver;
pub mod mock;
pub mod procs;
pub mod report;

use driver::Workload;
use report::{PathSummary, Row};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrencies, each measured on both paths.
    pub concurrency: Vec<usize>,
    /// Measured JSON requests per path and concurrency.
    pub requests: usize,
    /// Measured streams per path and concurrency (0 skips streams).
    pub stream_requests: usize,
    /// Unmeasured requests per path before each measured run.
    pub warmup: usize,
    /// Content chunks per stream.
    pub chunks: u64,
    /// Microseconds between the upstream's chunks.
    pub chunk_interval_us: u64,
}

/// A process whose CPU time is charged to each run.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Its name in the report.
    pub name: String,
    /// Its process id.
    pub pid: u32,
}

fn cpu_now(watched: &[Watched]) -> Vec<u64> {
    watched
        .iter()
        .map(|w| procs::sample(w.pid).map(|s| s.cpu_ns).unwrap_or(0))
        .collect()
}

async fn measured(
    client: &reqwest::Client,
    base: &str,
    workload: Workload,
    concurrency: usize,
    requests: usize,
    watched: &[Watched],
) -> PathSummary {
    let before = cpu_now(watched);
    let run = driver::run(client, base, workload, concurrency, requests).await;
    let after = cpu_now(watched);
    let cpu = watched
        .iter()
        .zip(before.iter().zip(after))
        .map(|(w, (b, a))| (w.name.clone(), a.saturating_sub(*b)))
        .collect();
    PathSummary::from_run(run, cpu)
}

/// Runs `plan`: for JSON and then streams, for each concurrency, a warm-up on both paths,
/// then the measured run straight to `direct_base` and the one through `network_base`
/// (both `http://host:port`). `direct_watched` / `network_watched` are the processes whose
/// CPU is charged to the direct / network runs. `progress` gets one line per finished row.
pub async fn run_plan(
    client: &reqwest::Client,
    plan: &Plan,
    direct_base: &str,
    network_base: &str,
    direct_watched: &[Watched],
    network_watched: &[Watched],
    mut progress: impl FnMut(&Row),
) -> Vec<Row> {
    let mut workloads = vec![(Workload::json(), plan.requests)];
    if plan.stream_requests > 0 {
        workloads.push((
            Workload::stream(plan.chunks, plan.chunk_interval_us),
            plan.stream_requests,
        ));
    }
    let mut rows = Vec::new();
    for (workload, requests) in workloads {
        for &concurrency in &plan.concurrency {
            if plan.warmup > 0 {
                for base in [direct_base, network_base] {
                    driver::run(client, base, workload, concurrency, plan.warmup).await;
                }
            }
            let direct = measured(
                client,
                direct_base,
                workload,
                concurrency,
                requests,
                direct_watched,
            )
            .await;
            let network = measured(
                client,
                network_base,
                workload,
                concurrency,
                requests,
                network_watched,
            )
            .await;
            let row = Row {
                workload,
                concurrency,
                direct,
                network,
            };
            progress(&row);
            rows.push(row);
        }
    }
    rows
}
