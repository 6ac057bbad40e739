//! Prometheus text exposition for the roles' `/metrics` endpoints, without a metrics
//! framework: counters and gauges are rendered from the roles' own atomics, latencies go
//! through [`Histogram`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency bucket bounds in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation in seconds.
    pub fn observe(&self, secs: f64) {
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Builds one exposition text.
#[derive(Debug, Default)]
pub struct MetricsText {
    out: String,
}

fn labels_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl MetricsText {
    /// Starts an empty text.
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A counter with one or more labelled values.
    pub fn counter(&mut self, name: &str, help: &str, values: &[(&[(&str, &str)], u64)]) {
        self.header(name, help, "counter");
        for (labels, v) in values {
            let _ = writeln!(self.out, "{name}{} {v}", labels_text(labels));
        }
    }

    /// A gauge with one or more labelled values.
    pub fn gauge(&mut self, name: &str, help: &str, values: &[(&[(&str, &str)], f64)]) {
        self.header(name, help, "gauge");
        for (labels, v) in values {
            let _ = writeln!(self.out, "{name}{} {v}", labels_text(labels));
        }
    }

    /// A gauge with exact integer values (e.g. nanoTON).
    pub fn gauge_u64(&mut self, name: &str, help: &str, values: &[(&[(&str, &str)], u64)]) {
        self.header(name, help, "gauge");
        for (labels, v) in values {
            let _ = writeln!(self.out, "{name}{} {v}", labels_text(labels));
        }
    }

    /// A histogram.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, help, "histogram");
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&h.counts) {
            let _ = writeln!(
                self.out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            self.out,
            "{name}_sum {}",
            h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(self.out, "{name}_count {count}");
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let h = Histogram::default();
        h.observe(0.003);
        h.observe(2.0);
        let mut m = MetricsText::new();
        m.counter(
            "cocoon_requests_total",
            "Requests.",
            &[(&[("outcome", "ok")], 3)],
        );
        m.histogram("cocoon_latency_seconds", "Latency.", &h);
        let text = m.finish();
        assert!(text.contains(
            "# TYPE cocoon_requests_total counter\ncocoon_requests_total{outcome=\"ok\"} 3\n"
        ));
        assert!(text.contains("cocoon_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("cocoon_latency_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("cocoon_latency_seconds_count 2\n"));
        assert!(text.contains("cocoon_latency_seconds_sum 2.003\n"));
    }
}
