//! Summaries of runs and the Markdown report.

use std::fmt::Write as _;

use crate::driver::{quantile_ms, RunResult, Workload};

/// One path (direct or through the network) at one concurrency, summarized.
#[derive(Debug, Clone, Default)]
pub struct PathSummary {
    /// Requests attempted.
    pub requests: usize,
    /// Median request latency (ms).
    pub p50_ms: Option<f64>,
    /// 99th percentile request latency (ms).
    pub p99_ms: Option<f64>,
    /// Successful requests per second.
    pub rps: f64,
    /// Failed requests.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Streams: median per-chunk latency, upstream production to arrival (ms).
    pub chunk_p50_ms: Option<f64>,
    /// Streams: 99th percentile per-chunk latency (ms).
    pub chunk_p99_ms: Option<f64>,
    /// Streams: median time to the first content chunk (ms).
    pub first_chunk_p50_ms: Option<f64>,
    /// CPU time per request of each watched process (name, µs), over this run.
    pub cpu_us_per_request: Vec<(String, f64)>,
}

impl PathSummary {
    /// Summarizes `run`; `cpu_ns` is the CPU each watched process used during it.
    pub fn from_run(mut run: RunResult, cpu_ns: Vec<(String, u64)>) -> Self {
        let n = run.requests.max(1) as f64;
        PathSummary {
            requests: run.requests,
            p50_ms: quantile_ms(&mut run.latencies, 0.50),
            p99_ms: quantile_ms(&mut run.latencies, 0.99),
            rps: run.throughput(),
            errors: run.errors,
            first_error: run.first_error.take(),
            chunk_p50_ms: quantile_ms(&mut run.chunk_latencies, 0.50),
            chunk_p99_ms: quantile_ms(&mut run.chunk_latencies, 0.99),
            first_chunk_p50_ms: quantile_ms(&mut run.first_chunk, 0.50),
            cpu_us_per_request: cpu_ns
                .into_iter()
                .map(|(name, ns)| (name, ns as f64 / 1e3 / n))
                .collect(),
        }
    }
}

/// Both paths at one workload and concurrency.
#[derive(Debug, Clone)]
pub struct Row {
    /// What each request asked for.
    pub workload: Workload,
    /// Requests in flight.
    pub concurrency: usize,
    /// Straight to the upstream.
    pub direct: PathSummary,
    /// Through client → proxy → worker.
    pub network: PathSummary,
}

impl Row {
    /// Added median latency (ms).
    pub fn added_p50(&self) -> Option<f64> {
        Some(self.network.p50_ms? - self.direct.p50_ms?)
    }

    /// Added 99th percentile latency (ms).
    pub fn added_p99(&self) -> Option<f64> {
        Some(self.network.p99_ms? - self.direct.p99_ms?)
    }

    /// Network throughput over direct throughput.
    pub fn ratio(&self) -> Option<f64> {
        (self.direct.rps > 0.0).then(|| self.network.rps / self.direct.rps)
    }
}

/// Memory of one process.
#[derive(Debug, Clone)]
pub struct MemoryRow {
    /// The process's role.
    pub name: String,
    /// RSS once started, before any load (KiB).
    pub idle_kib: u64,
    /// RSS after the whole run (KiB).
    pub end_kib: u64,
    /// Peak RSS (KiB).
    pub peak_kib: u64,
}

/// The aims of issue #5, checked on the JSON rows at concurrency 16.
#[derive(Debug, Clone, Copy)]
pub struct Aims {
    /// Highest acceptable added p50 (ms).
    pub added_p50_ms: f64,
    /// Highest acceptable added p99 (ms).
    pub added_p99_ms: f64,
    /// Lowest acceptable throughput ratio.
    pub ratio: f64,
    /// The concurrency the aims apply to.
    pub concurrency: usize,
}

impl Default for Aims {
    fn default() -> Self {
        Aims {
            added_p50_ms: 0.3,
            added_p99_ms: 1.0,
            ratio: 0.5,
            concurrency: 16,
        }
    }
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Description of the setup (machine, sizes), one line each.
    pub setup: Vec<String>,
    /// One row per workload and concurrency.
    pub rows: Vec<Row>,
    /// Memory per process.
    pub memory: Vec<MemoryRow>,
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.3}"),
        None => "—".into(),
    }
}

fn signed_ms(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:+.3}"),
        None => "—".into(),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

impl Report {
    /// The row for `workload` kind and `concurrency`, if measured.
    pub fn row(&self, stream: bool, concurrency: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.workload.stream == stream && r.concurrency == concurrency)
    }

    /// One line per aim: the measured value, the aim, met or missed (and by how much).
    pub fn aims(&self, aims: Aims) -> Vec<String> {
        let Some(row) = self.row(false, aims.concurrency) else {
            return vec![format!(
                "aims: no JSON row at concurrency {}",
                aims.concurrency
            )];
        };
        let mut out = Vec::new();
        let mut check = |what: &str, value: Option<f64>, aim: f64, upper: bool| {
            let line = match value {
                None => format!("{what}: not measured (aim {aim})"),
                Some(v) => {
                    let met = if upper { v <= aim } else { v >= aim };
                    let verdict = if met {
                        "met".to_owned()
                    } else if upper {
                        format!("missed by {:.3} ({:.1}× the aim)", v - aim, v / aim)
                    } else {
                        format!("missed by {:.3}", aim - v)
                    };
                    format!(
                        "{what}: {v:.3} (aim {} {aim}): {verdict}",
                        if upper { "≤" } else { "≥" }
                    )
                }
            };
            out.push(line);
        };
        let c = aims.concurrency;
        check(
            &format!("added p50 at concurrency {c}, ms"),
            row.added_p50(),
            aims.added_p50_ms,
            true,
        );
        check(
            &format!("added p99 at concurrency {c}, ms"),
            row.added_p99(),
            aims.added_p99_ms,
            true,
        );
        check(
            &format!("throughput ratio at concurrency {c}"),
            row.ratio(),
            aims.ratio,
            false,
        );
        out
    }

    /// The report as Markdown.
    pub fn markdown(&self, aims: Aims) -> String {
        let mut s = String::new();
        for line in &self.setup {
            let _ = writeln!(s, "- {line}");
        }
        if !self.setup.is_empty() {
            s.push('\n');
        }
        s.push_str("| request | concurrency | direct p50 / p99 ms | cocoon p50 / p99 ms | added p50 / p99 ms | direct req/s | cocoon req/s | ratio | errors |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} / {} | {} / {} | {} / {} | {:.0} | {:.0} | {} | {} |",
                r.workload.name(),
                r.concurrency,
                ms(r.direct.p50_ms),
                ms(r.direct.p99_ms),
                ms(r.network.p50_ms),
                ms(r.network.p99_ms),
                signed_ms(r.added_p50()),
                signed_ms(r.added_p99()),
                r.direct.rps,
                r.network.rps,
                r.ratio().map(|v| format!("{v:.2}")).unwrap_or("—".into()),
                r.direct.errors + r.network.errors,
            );
        }
        let streams: Vec<&Row> = self.rows.iter().filter(|r| r.workload.stream).collect();
        if !streams.is_empty() {
            s.push_str("\nStreams, per chunk (time from the upstream producing a chunk to the caller reading it):\n\n");
            s.push_str("| concurrency | direct p50 / p99 ms | cocoon p50 / p99 ms | added p50 / p99 ms | first chunk direct / cocoon p50 ms |\n");
            s.push_str("|---:|---:|---:|---:|---:|\n");
            for r in streams {
                let added = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
                let _ = writeln!(
                    s,
                    "| {} | {} / {} | {} / {} | {} / {} | {} / {} |",
                    r.concurrency,
                    ms(r.direct.chunk_p50_ms),
                    ms(r.direct.chunk_p99_ms),
                    ms(r.network.chunk_p50_ms),
                    ms(r.network.chunk_p99_ms),
                    signed_ms(added(r.network.chunk_p50_ms, r.direct.chunk_p50_ms)),
                    signed_ms(added(r.network.chunk_p99_ms, r.direct.chunk_p99_ms)),
                    ms(r.direct.first_chunk_p50_ms),
                    ms(r.network.first_chunk_p50_ms),
                );
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for r in &self.rows {
            for (n, _) in r
                .direct
                .cpu_us_per_request
                .iter()
                .chain(&r.network.cpu_us_per_request)
            {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        if !names.is_empty() {
            s.push_str("\nCPU time per request, µs (from /proc/PID/stat, 10 ms ticks):\n\n");
            let _ = writeln!(
                s,
                "| request | concurrency | path | {} |",
                names.join(" | ")
            );
            let _ = writeln!(s, "|---|---:|---|{}", "---:|".repeat(names.len()));
            for r in &self.rows {
                for (path, p) in [("direct", &r.direct), ("cocoon", &r.network)] {
                    let cells: Vec<String> = names
                        .iter()
                        .map(|n| {
                            p.cpu_us_per_request
                                .iter()
                                .find(|(m, _)| m == n)
                                .map(|(_, v)| format!("{v:.0}"))
                                .unwrap_or("—".into())
                        })
                        .collect();
                    let _ = writeln!(
                        s,
                        "| {} | {} | {path} | {} |",
                        r.workload.name(),
                        r.concurrency,
                        cells.join(" | ")
                    );
                }
            }
        }
        if !self.memory.is_empty() {
            s.push_str("\nMemory per process, MiB (VmRSS idle / after the run, VmHWM peak):\n\n");
            s.push_str("| process | RSS idle | RSS after | peak |\n|---|---:|---:|---:|\n");
            for m in &self.memory {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    m.name,
                    mib(m.idle_kib),
                    mib(m.end_kib),
                    mib(m.peak_kib)
                );
            }
        }
        let errors: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| {
                [("direct", &r.direct), ("cocoon", &r.network)]
                    .into_iter()
                    .filter_map(move |(path, p)| {
                        p.first_error.as_ref().map(|e| {
                            format!(
                                "{} c={} {path}: {} errors, first: {e}",
                                r.workload.name(),
                                r.concurrency,
                                p.errors
                            )
                        })
                    })
            })
            .collect();
        if !errors.is_empty() {
            s.push_str("\nErrors:\n\n");
            for e in errors {
                let _ = writeln!(s, "- {e}");
            }
        }
        s.push_str("\nAims (issue #5, JSON requests):\n\n");
        for line in self.aims(aims) {
            let _ = writeln!(s, "- {line}");
        }
        s
    }
}
