//! Demand signals on one loopback network: the proxy counts, per model, requests routed
//! and refused (no worker, all busy, all above the client's price) with the prices clients
//! accepted, and serves them at `/demand`, in `/jsonstats` and in `/metrics`.

mod common;

use cocoon_node::protocol::Refusal;
use common::*;
use serde_json::json;

#[tokio::test]
async fn the_proxy_reports_what_it_could_not_serve_and_at_what_price() {
    let mut spec = WorkerSpec::new("w1", 2000);
    spec.max_active = 1;
    let net = start_network(&[spec]).await;
    net.wait_ready(1).await;
    let session = net.client(4).await;

    // Two requests willing to pay up to 1.5×: the only worker asks 2.0×.
    for _ in 0..2 {
        let r = collect(&session, chat_request(chat_body(false, json!({})), 1500)).await;
        let (code, message, _) = r.error.expect("refused");
        assert_eq!(Refusal::classify(code, &message), Refusal::PriceTooHigh);
    }
    // One runs (slowly) at 2.0×; the next finds the only worker full.
    let slow = {
        let session = session.clone();
        tokio::spawn(async move {
            collect(
                &session,
                chat_request(chat_body(false, json!({"delay_ms": 500})), 4000),
            )
            .await
        })
    };
    let upstream = net.upstream.clone();
    wait_until(move || upstream.requests.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
    let busy = collect(&session, chat_request(chat_body(false, json!({})), 4000)).await;
    assert!(busy.error.is_some(), "the only worker is full");
    // A model nobody serves.
    let mut unknown = chat_request(chat_body(false, json!({})), 1000);
    unknown.model = "nobody-serves-this".into();
    assert!(collect(&session, unknown).await.error.is_some());

    let report = net.proxy.demand();
    let ours = report.iter().find(|r| r.model == MODEL).expect("the model");
    assert_eq!(ours.supply.workers, 1);
    assert_eq!((ours.supply.running, ours.supply.max_running), (1, 1));
    assert_eq!(ours.supply.lowest_coefficient, Some(2000));
    assert_eq!(ours.recent.routed, 1);
    assert_eq!(ours.recent.refused_price, 2);
    assert_eq!(ours.recent.highest_refused_price, 1500);
    assert_eq!(ours.recent.refused_busy, 1);
    assert_eq!(ours.recent.paid_coefficient_sum, 2000);
    assert_eq!(ours.total, ours.recent);
    let nobody = report
        .iter()
        .find(|r| r.model == "nobody-serves-this")
        .expect("asked for");
    assert_eq!(
        (nobody.supply.workers, nobody.recent.refused_no_worker),
        (0, 1)
    );
    assert!(slow.await.expect("task").error.is_none());

    // Over HTTP: /demand (open, like /metrics), /jsonstats and /metrics.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(cocoon_node::http_server::serve(
        listener,
        cocoon_node::runner::proxy_admin_router(net.proxy.clone(), Default::default()),
    ));
    let http = reqwest::Client::new();
    let demand = get_json(&http, &format!("http://{addr}/demand")).await;
    assert_eq!(demand["recent_minutes"], 5);
    let m = demand["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["model"] == MODEL)
        .cloned()
        .expect("model");
    assert_eq!(m["recent"]["refused_price"], 2);
    assert_eq!(m["supply"]["workers"], 1);
    let stats = get_json(&http, &format!("http://{addr}/jsonstats")).await;
    assert!(
        stats["demand"].as_array().is_some_and(|a| a.len() == 2),
        "{stats}"
    );
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        format!(
            "cocoon_proxy_model_requests_refused_total{{model=\"{MODEL}\",reason=\"price\"}} 2"
        ),
        format!("cocoon_proxy_model_requests_refused_total{{model=\"{MODEL}\",reason=\"busy\"}} 1"),
        format!("cocoon_proxy_model_requests_routed_total{{model=\"{MODEL}\"}} 1"),
        format!("cocoon_proxy_model_max_requests{{model=\"{MODEL}\"}} 1"),
        format!(
            "cocoon_proxy_model_accepted_coefficient_bucket{{model=\"{MODEL}\",le=\"1500\"}} 2"
        ),
        format!(
            "cocoon_proxy_model_accepted_coefficient_bucket{{model=\"{MODEL}\",le=\"+Inf\"}} 4"
        ),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}
