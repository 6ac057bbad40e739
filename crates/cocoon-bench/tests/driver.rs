//! The driver against the in-process mock: a handful of requests on both "paths" (both
//! the mock here) produce a report with every row. No timing is asserted.

use cocoon_bench::driver::{self, Workload};
use cocoon_bench::report::{Aims, Report};
use cocoon_bench::{mock, run_plan, Plan, Watched};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_has_every_row() {
    let base = mock::spawn_local().await.expect("mock");
    let client = driver::http_client().expect("client");
    let plan = Plan {
        concurrency: vec![1, 4],
        requests: 8,
        stream_requests: 4,
        warmup: 2,
        chunks: 3,
        chunk_interval_us: 100,
    };
    let me = vec![Watched {
        name: "driver".into(),
        pid: std::process::id(),
    }];
    let mut seen = 0;
    let rows = run_plan(&client, &plan, &base, &base, &me, &me, |_| seen += 1).await;
    assert_eq!(seen, 4);
    let report = Report {
        setup: vec!["test".into()],
        rows,
        memory: Vec::new(),
    };
    for stream in [false, true] {
        for c in [1, 4] {
            let row = report.row(stream, c).expect("row");
            for p in [&row.direct, &row.network] {
                assert_eq!(p.errors, 0, "{:?}", p.first_error);
                assert!(p.p50_ms.is_some() && p.p99_ms.is_some() && p.rps > 0.0);
                if stream {
                    assert!(p.chunk_p50_ms.is_some() && p.first_chunk_p50_ms.is_some());
                }
            }
            assert!(row.ratio().is_some());
        }
    }
    let text = report.markdown(Aims {
        concurrency: 4,
        ..Aims::default()
    });
    assert_eq!(text.matches("| json | ").count(), 6, "{text}"); // latency + CPU tables
    assert_eq!(text.matches("| stream | ").count(), 6, "{text}");
    assert!(text.contains("added p50 at concurrency 4"), "{text}");
}

#[tokio::test]
async fn stream_counts_every_chunk() {
    let base = mock::spawn_local().await.expect("mock");
    let client = driver::http_client().expect("client");
    let run = driver::run(&client, &base, Workload::stream(5, 0), 2, 3).await;
    assert_eq!(run.errors, 0, "{:?}", run.first_error);
    assert_eq!(run.chunks, 15);
    assert_eq!(run.chunk_latencies.len(), 15);
    assert_eq!(run.latencies.len(), 3);
}
