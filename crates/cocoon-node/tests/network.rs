//! A proxy and workers on loopback, driven by protocol clients: metering, routing,
//! retries, failures, cancellation, limits, protocol versions and money.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cocoon_node::ledger::Ledger;
use cocoon_node::pricing::settle;
use common::*;
use serde_json::json;

#[tokio::test]
async fn json_answer_is_metered_costed_and_booked() {
    let net = start_network(&[WorkerSpec::new("worker-a", 1000)]).await;
    let client = net.client(3).await;
    let out = collect(&client, chat_request(chat_body(false, json!({})), 4000)).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let head = out.head.as_ref().expect("head");
    assert_eq!(head.status_code, 200);
    assert!(head
        .headers
        .iter()
        .any(|h| h.name == "X-Cocoon-Worker-Start"));
    assert!(head
        .headers
        .iter()
        .any(|h| h.name == "X-Cocoon-Proxy-Start"));
    let body = out.json();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(
        body["usage"]["total_cost"], 268,
        "134 adjusted tokens × price 2"
    );
    assert_eq!(out.done.as_ref().expect("done").tokens.total(), 134);
    // Unknown and vendor fields reached the upstream untouched.
    let seen = net
        .upstream
        .last_body
        .lock()
        .expect("lock")
        .clone()
        .expect("body");
    assert_eq!(seen["top_k"], 20);
    // Booked once, both sides, and the client was told.
    wait_until(|| client.payments().notices == 1).await;
    assert_eq!(client.payments().tokens_billed, 134);
    assert_eq!(
        net.proxy
            .ledger()
            .client_tokens(&party("client-1"))
            .expect("ledger"),
        134
    );
    assert_eq!(
        net.proxy
            .ledger()
            .worker_tokens(&party("worker-a"))
            .expect("ledger"),
        134
    );
}

#[tokio::test]
async fn sse_stream_is_metered_and_streamed() {
    let net = start_network(&[WorkerSpec::new("worker-a", 1500)]).await;
    let client = net.client(3).await;
    let out = collect(
        &client,
        chat_request(chat_body(true, json!({"chunks": 6})), 4000),
    )
    .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let text = out.body_text();
    assert_eq!(text.matches("t0 ").count(), 1);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        out.chunks >= 2,
        "the body arrived in several parts, not at the end"
    );
    // Coefficient 1.5×: 23,11,90,10 → 34,16,135,15 = 200 adjusted tokens.
    let tokens = out.done.as_ref().expect("done").tokens;
    assert_eq!(tokens.total(), 200);
    assert!(text.contains("\"total_cost\":400"), "{text}");
    // The worker asked the upstream for a usage chunk.
    let seen = net
        .upstream
        .last_body
        .lock()
        .expect("lock")
        .clone()
        .expect("body");
    assert_eq!(seen["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn routing_respects_max_coefficient() {
    let net = start_network(&[
        WorkerSpec::new("cheap", 1000),
        WorkerSpec::new("dear", 3000),
    ])
    .await;
    let client = net.client(3).await;
    for _ in 0..4 {
        let out = collect(&client, chat_request(chat_body(false, json!({})), 2000)).await;
        assert!(out.error.is_none(), "{:?}", out.error);
    }
    assert_eq!(
        net.proxy
            .ledger()
            .worker_tokens(&party("cheap"))
            .expect("ledger"),
        4 * 134
    );
    assert_eq!(
        net.proxy
            .ledger()
            .worker_tokens(&party("dear"))
            .expect("ledger"),
        0
    );
    let out = collect(&client, chat_request(chat_body(false, json!({})), 500)).await;
    let (code, message, _) = out.error.expect("refused");
    assert_eq!(code, 651);
    assert_eq!(
        message,
        "no worker within max_coefficient: can run this query with coefficient=1000"
    );
}

#[tokio::test]
async fn routing_spreads_load() {
    let net = start_network(&[WorkerSpec::new("w1", 1000), WorkerSpec::new("w2", 1000)]).await;
    let client = net.client(3).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            collect(
                &client,
                chat_request(chat_body(false, json!({"delay_ms": 200})), 4000),
            )
            .await
        }));
    }
    for t in tasks {
        assert!(t.await.expect("task").error.is_none());
    }
    let w1 = net
        .proxy
        .ledger()
        .worker_tokens(&party("w1"))
        .expect("ledger");
    let w2 = net
        .proxy
        .ledger()
        .worker_tokens(&party("w2"))
        .expect("ledger");
    assert_eq!(w1 + w2, 6 * 134);
    assert!(w1 > 0 && w2 > 0, "both workers got work: {w1} / {w2}");
}

#[tokio::test]
async fn unknown_model_and_low_balance_are_refused() {
    let mut settings = proxy_settings();
    settings.pseudo_client_tokens = 1500;
    let ledger = Arc::new(Ledger::open_in_memory(&settings.signing_key).expect("ledger"));
    let net = start_network_with(
        &[WorkerSpec::new("w", 1000)],
        settings,
        proxy_start(),
        ledger,
    )
    .await;
    let client = net.client(3).await;
    // A small reservation (max_coefficient 0.1×) passes the balance checks.
    let mut request = chat_request(chat_body(false, json!({})), 100);
    request.model = "no-such-model".into();
    let (code, message, _) = collect(&client, request).await.error.expect("refused");
    assert_eq!(
        (code, message.as_str()),
        (621, "unknown model: no-such-model")
    );
    // max_tokens above the balance.
    let mut request = chat_request(chat_body(false, json!({})), 4000);
    request.max_tokens = 2000;
    let (code, message, _) = collect(&client, request).await.error.expect("refused");
    assert_eq!(code, 602);
    assert!(
        message.starts_with("client balance is too low for max_tokens"),
        "{message}"
    );
    // Within max_tokens, but the reservation at 4.0× is not.
    let (code, message, _) = collect(&client, chat_request(chat_body(false, json!({})), 4000))
        .await
        .error
        .expect("refused");
    assert_eq!(code, 651);
    assert!(
        message.starts_with("client balance is too low for this request: it reserves"),
        "{message}"
    );
    assert_eq!(
        net.proxy.stats().requests_rejected.load(Ordering::Relaxed),
        3
    );
}

#[tokio::test]
async fn retries_on_another_worker_before_the_first_byte() {
    // The first worker's upstream is dead (nothing listens there), the second is fine.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let mut broken = WorkerSpec::new("broken", 1000);
    broken.upstream = Some(dead);
    let net = start_network(&[broken, WorkerSpec::new("healthy", 1000)]).await;
    let client = net.client(3).await;
    for _ in 0..3 {
        let out = collect(&client, chat_request(chat_body(false, json!({})), 4000)).await;
        assert!(out.error.is_none(), "{:?}", out.error);
    }
    assert_eq!(
        net.proxy
            .ledger()
            .worker_tokens(&party("healthy"))
            .expect("ledger"),
        3 * 134
    );
    assert!(net.proxy.stats().requests_retried.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn failure_mid_stream_ends_cleanly_and_bills_nothing_unreported() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let client = net.client(3).await;
    let out = collect(
        &client,
        chat_request(
            chat_body(true, json!({"chunks": 10, "die_after": 3, "delay_ms": 30})),
            4000,
        ),
    )
    .await;
    assert!(out.head.is_some(), "the answer had started");
    assert!(
        out.body_text().contains("t1 "),
        "the delivered part arrived: {:?}",
        out.body_text()
    );
    let (code, message, info) = out.error.expect("clean error after the head");
    assert_eq!(code, 651, "{message}");
    assert_eq!(
        info.tokens.total(),
        0,
        "no usage was reported before the failure"
    );
    assert_eq!(net.proxy.ledger().request_count().expect("ledger"), 0);
}

#[tokio::test]
async fn worker_disconnect_before_answer_is_retried() {
    let mut net = start_network(&[WorkerSpec::new("first", 1000)]).await;
    let client = net.client(3).await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            collect(
                &client,
                chat_request(chat_body(false, json!({"delay_ms": 1500})), 4000),
            )
            .await
        })
    };
    wait_until(|| net.proxy.running_requests() == 1).await;
    // A second worker joins, then the first one's link is cut while it still waits.
    net.add_worker(&WorkerSpec::new("second", 1000)).await;
    net.wait_ready(2).await;
    net.links[0].abort();
    net.workers[0].disconnect_proxies();
    let out = slow.await.expect("task");
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        net.proxy
            .ledger()
            .worker_tokens(&party("second"))
            .expect("ledger"),
        134
    );
    assert_eq!(
        net.proxy
            .ledger()
            .worker_tokens(&party("first"))
            .expect("ledger"),
        0
    );
}

#[tokio::test]
async fn client_disconnect_cancels_the_request_at_the_worker() {
    // Cancellation is a cocoon-rs extension, offered in the hellos of all three roles
    // whatever version they speak.
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let client = net.client(cocoon_node::client::MAX_PROTO).await;
    let (_, mut rx) = client
        .run_query(chat_request(
            chat_body(true, json!({"chunks": 100, "delay_ms": 50})),
            4000,
        ))
        .await
        .expect("sent");
    // Wait for the answer to start, then go away.
    loop {
        if let Some(cocoon_node::client::AnswerEvent::Chunk(_)) = rx.recv().await {
            break;
        }
    }
    client.close();
    wait_until(|| net.workers[0].active_requests() == 0).await;
    wait_until(|| net.upstream.streams_aborted.load(Ordering::SeqCst) == 1).await;
    wait_until(|| net.proxy.running_requests() == 0).await;
}

#[tokio::test]
async fn max_active_requests_is_enforced() {
    let mut spec = WorkerSpec::new("solo", 1000);
    spec.max_active = 1;
    let net = start_network(&[spec]).await;
    let client = net.client(3).await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            collect(
                &client,
                chat_request(chat_body(false, json!({"delay_ms": 500})), 4000),
            )
            .await
        })
    };
    wait_until(|| net.proxy.running_requests() == 1).await;
    let (code, message, _) = collect(&client, chat_request(chat_body(false, json!({})), 4000))
        .await
        .error
        .expect("no free worker");
    assert_eq!(
        (code, message.as_str()),
        (651, "no ready workers for this model")
    );
    assert!(slow.await.expect("task").error.is_none());
}

#[tokio::test]
async fn protocol_versions_zero_one_and_two() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    for proto in [0, 1, 2] {
        let client = net.client(proto).await;
        assert_eq!(client.proto().number(), proto);
        let out = collect(&client, chat_request(chat_body(false, json!({})), 4000)).await;
        assert!(out.error.is_none(), "proto {proto}: {:?}", out.error);
        let done = out.done.expect("done");
        assert_eq!(done.tokens.total(), 134, "proto {proto}");
        assert_eq!(
            done.timings.is_some(),
            proto >= 2,
            "timings only from protocol 2"
        );
        // Errors reach every protocol version (COCOON's proxy sends proto-0 errors that
        // its own client ignores).
        let mut request = chat_request(chat_body(false, json!({})), 4000);
        request.model = "missing".into();
        let (code, _, _) = collect(&client, request)
            .await
            .error
            .expect("error delivered");
        assert_eq!(code, 621);
    }
}

#[tokio::test]
async fn worker_reconnects_after_losing_the_proxy() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    net.workers[0].disconnect_proxies();
    wait_until(|| net.proxy.ready_workers().is_empty()).await;
    net.wait_ready(1).await;
    let client = net.client(3).await;
    assert!(
        collect(&client, chat_request(chat_body(false, json!({})), 4000))
            .await
            .error
            .is_none()
    );
}

#[tokio::test]
async fn worker_ahead_of_proxy_is_refused_and_proxy_keeps_running() {
    let net = start_network(&[WorkerSpec::new("honest", 1000)]).await;
    // A worker that claims tokens this proxy never booked.
    let liar = cocoon_node::worker::Worker::new(
        worker_settings(&WorkerSpec::new("liar", 1000)),
        Arc::new(
            cocoon_node::worker::backend::HttpUpstream::new(&net.upstream_url).expect("upstream"),
        ),
    )
    .expect("worker");
    liar.set_healthy(true);
    liar.restore_proxy_balance(
        &net.proxy.sc_address(),
        cocoon_node::worker::ProxyBalance {
            tokens_committed_to_blockchain: 1_000,
            ..Default::default()
        },
    );
    let stream = tokio::net::TcpStream::connect(net.worker_addr)
        .await
        .expect("connect");
    let conn = cocoon_net::RpcConnection::connect(stream, &Default::default(), "proxy")
        .await
        .expect("opening");
    let err = liar.serve_proxy(conn).await.expect_err("refused");
    assert_eq!(
        err.to_string(),
        "handshake with proxy failed: peer answered error 621: worker reports 1000 tokens committed, this proxy knows 0"
    );
    let client = net.client(3).await;
    assert!(
        collect(&client, chat_request(chat_body(false, json!({})), 4000))
            .await
            .error
            .is_none()
    );
    assert_eq!(net.proxy.ready_workers().get(MODEL), Some(&1));
}

#[tokio::test]
async fn money_adds_up_after_a_batch() {
    let net = start_network(&[WorkerSpec::new("a", 1000), WorkerSpec::new("b", 1500)]).await;
    let clients = [
        common::client_to(net.client_addr, 3, "alice").await,
        common::client_to(net.client_addr, 3, "bob").await,
    ];
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = clients[i % 2].clone();
        let stream = i % 3 == 0;
        tasks.push(tokio::spawn(async move {
            collect(
                &client,
                chat_request(chat_body(stream, json!({"chunks": 3})), 4000),
            )
            .await
        }));
    }
    let mut client_side_tokens = 0;
    for t in tasks {
        let out = t.await.expect("task");
        assert!(out.error.is_none(), "{:?}", out.error);
        client_side_tokens += out.done.expect("done").tokens.total();
    }
    let ledger = net.proxy.ledger();
    let (clients_total, workers_total) = ledger.grand_totals().expect("totals");
    assert_eq!(clients_total, client_side_tokens);
    assert_eq!(clients_total, workers_total);
    assert_eq!(ledger.request_count().expect("count"), 20);
    let s = settle(clients_total, &prices()).expect("no overflow");
    let worker_earnings = (ledger.worker_tokens(&party("a")).expect("a")
        + ledger.worker_tokens(&party("b")).expect("b"))
        * prices().worker_fee_per_token;
    assert_eq!(s.client_pays, worker_earnings + s.proxy_commission);
    // Each client was told exactly its share.
    wait_until(|| clients.iter().map(|c| c.payments().notices).sum::<u64>() == 20).await;
    let billed: u64 = clients.iter().map(|c| c.payments().tokens_billed).sum();
    assert_eq!(billed, clients_total);
    // Each party holds a valid proxy-signed voucher for exactly its booked total.
    for (client, name) in clients.iter().zip(["alice", "bob"]) {
        let p = client.payments();
        assert_eq!(
            p.voucher_tokens,
            ledger.client_tokens(&party(name)).expect("ledger"),
            "{name}"
        );
        assert_eq!(p.vouchers_refused, 0);
        assert!(p.voucher.is_some());
    }
    // The proxy's metrics report the same money, exactly.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stats_addr = listener.local_addr().expect("addr");
    let router = cocoon_node::runner::proxy_router(net.proxy.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let metrics = reqwest::get(format!("http://{stats_addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!(
            "cocoon_proxy_booked_nanoton{{account=\"clients\"}} {}",
            s.client_pays
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "cocoon_proxy_booked_nanoton{{account=\"commission\"}} {}",
        s.proxy_commission
    )));
    assert!(metrics.contains("cocoon_proxy_requests_total{outcome=\"success\"} 20"));
    assert!(metrics.contains("cocoon_proxy_request_latency_seconds_count 20"));
    let class_sum: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("cocoon_proxy_adjusted_tokens_total{class="))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .expect("value")
                .parse::<u64>()
                .expect("integer")
        })
        .sum();
    assert_eq!(
        class_sum, clients_total,
        "token classes add up to the booked total"
    );
    for (worker, name) in net.workers.iter().zip(["a", "b"]) {
        let balance = worker
            .proxy_balance(&net.proxy.sc_address())
            .expect("known proxy");
        assert_eq!(
            balance.voucher_tokens,
            ledger.worker_tokens(&party(name)).expect("ledger"),
            "{name}"
        );
        assert_eq!(balance.vouchers_refused, 0);
    }
}

/// Connects a hand-written worker named `owner` serving [`MODEL`] to the proxy, speaking as
/// COCOON 9060ce5's worker does (versions 3..=4, no cocoon-rs extensions): it answers every
/// `proxy.runQueryEx` with the messages `answer` makes for it, and records the constructor
/// id of every packet the proxy sends it.
async fn raw_worker(
    net: &Net,
    owner: &str,
    answer: impl Fn(&cocoon_tl::functions::proxy::RunQueryEx) -> Vec<cocoon_tl::enums::proxy::QueryAnswerEx>
        + Send
        + 'static,
) -> Arc<std::sync::Mutex<Vec<u32>>> {
    use cocoon_tl::functions::worker as worker_fn;
    use cocoon_tl::types::worker;
    let stream = tokio::net::TcpStream::connect(net.worker_addr)
        .await
        .expect("connect");
    let conn = cocoon_net::RpcConnection::connect(stream, &Default::default(), "proxy")
        .await
        .expect("opening");
    let handle = conn.handle();
    let hello = worker_fn::ConnectToProxy {
        params: worker::Params {
            flags: 3,
            worker_owner_address: party(owner),
            model: MODEL.into(),
            coefficient: 1000,
            is_test: Some(true),
            proxy_cnt: Some(1),
            max_active_requests: Some(10),
            min_proto_version: Some(3),
            max_proto_version: Some(4),
            machine_description_json: None,
        },
    };
    handle.query(&hello).await.expect("connected");
    handle
        .query(&worker_fn::CompareBalanceWithProxy {
            tokens_committed_to_blockchain: 0,
            tokens_committed_to_db: 0,
            max_tokens: 0,
        })
        .await
        .expect("compared");
    handle
        .query(&worker_fn::ProxyHandshakeComplete { is_disabled: false })
        .await
        .expect("complete");
    let (handle, mut incoming) = conn.split();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = received.clone();
    tokio::spawn(async move {
        while let Some(cocoon_net::Incoming::Packet(data)) = incoming.recv().await {
            if let Some(id) = cocoon_tl::peek_id(&data) {
                seen.lock().expect("lock").push(id);
            }
            let Ok(q) = cocoon_tl::from_bytes::<cocoon_tl::functions::proxy::RunQueryEx>(&data)
            else {
                continue;
            };
            for message in answer(&q) {
                let _ = handle.send_packet(&message).await;
            }
        }
    });
    net.wait_ready(1).await;
    received
}

/// A COCOON 9060ce5 worker joins our proxy at version 4, gets the protocol-3 key field (zero:
/// not encrypted), and is never sent a constructor it does not know: when the app goes away,
/// the proxy does not send it `cocoonrs.cancelQuery`, which only cocoon-rs workers offered.
#[tokio::test]
async fn an_official_worker_joins_at_version_4_and_never_sees_our_extensions() {
    use cocoon_tl::TlConstructor;
    let net = start_network(&[]).await;
    let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_keys = keys.clone();
    // Answers with a head only: the request stays open until the client leaves.
    let received = raw_worker(&net, "official", move |q| {
        seen_keys.lock().expect("lock").push(q.private_key);
        vec![cocoon_tl::types::proxy::QueryAnswerEx {
            request_id: q.request_id,
            answer: json_head(b"{".to_vec()),
            flags: 0,
            final_info: None,
        }
        .into()]
    })
    .await;
    let client = net.client(4).await;
    assert_eq!(client.proto().number(), 4);
    let (_, mut rx) = client
        .run_query(chat_request(chat_body(false, json!({})), 4000))
        .await
        .expect("sent");
    assert!(matches!(
        rx.recv().await,
        Some(cocoon_node::client::AnswerEvent::Head(_))
    ));
    assert_eq!(*keys.lock().expect("lock"), vec![Some([0; 32])]);
    client.close();
    // Give the proxy time to notice and (wrongly) tell the worker.
    wait_until(|| net.proxy.stats().client_connections.load(Ordering::SeqCst) == 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ids = received.lock().expect("lock").clone();
    assert!(
        ids.iter().all(|id| cocoon_tl::constructor_name(*id)
            .is_some_and(|name| !name.starts_with("cocoonrs."))),
        "the proxy sent a cocoon-rs constructor to an official worker: {ids:x?}"
    );
    assert!(ids.contains(&cocoon_tl::functions::proxy::RunQueryEx::ID));
}

/// An `http.response` head: 200, JSON, with `payload`.
fn json_head(payload: Vec<u8>) -> Vec<u8> {
    use cocoon_tl::types::http;
    cocoon_tl::to_bytes(&http::Response {
        http_version: "HTTP/1.1".into(),
        status_code: 200,
        reason: "OK".into(),
        headers: vec![http::Header {
            name: "Content-Type".into(),
            value: "application/json".into(),
        }],
        payload,
    })
}

fn final_info(
    tokens_used: cocoon_tl::types::TokensUsed,
) -> cocoon_tl::types::proxy::QueryFinalInfo {
    cocoon_tl::types::proxy::QueryFinalInfo {
        flags: 0,
        tokens_used,
        worker_debug: None,
        worker_start_time: None,
        worker_end_time: None,
    }
}

/// A worker that reports 2^62 completion tokens for a two-byte answer: the proxy books only
/// what the request could have produced, counts the report, and the ledger's two sides
/// still agree to the token.
#[tokio::test]
async fn a_worker_cannot_book_more_than_its_request_could_produce() {
    use cocoon_tl::types::{proxy, TokensUsed};
    let net = start_network(&[]).await;
    let _ = raw_worker(&net, "liar", |q| {
        let lie = TokensUsed {
            prompt_tokens_used: 10,
            cached_tokens_used: 0,
            completion_tokens_used: 1 << 62,
            reasoning_tokens_used: 0,
            total_tokens_used: (1 << 62) + 10,
        };
        vec![
            proxy::QueryAnswerEx {
                request_id: q.request_id,
                answer: json_head(Vec::new()),
                flags: 0,
                final_info: None,
            }
            .into(),
            proxy::QueryAnswerPartEx {
                request_id: q.request_id,
                answer: b"{}".to_vec(),
                flags: 1,
                final_info: Some(final_info(lie)),
            }
            .into(),
        ]
    })
    .await;

    let client = net.client(3).await;
    let mut request = chat_request(chat_body(false, json!({})), 1000);
    request.max_tokens = 100_000;
    let out = collect(&client, request).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let booked = out.done.expect("done").tokens;
    // Prompt within its bound, completion within the relayed bytes and the allowance.
    assert_eq!(booked.prompt, 10);
    assert!(
        booked.completion <= 200,
        "completion is bounded by what was relayed: {booked:?}"
    );
    let ledger = net.proxy.ledger();
    assert_eq!(
        ledger.client_tokens(&party("client-1")).expect("client"),
        booked.total()
    );
    assert_eq!(
        ledger.worker_tokens(&party("liar")).expect("worker"),
        booked.total()
    );
    let stats = net.proxy.stats();
    assert_eq!(stats.usage_reports_clipped.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.usage_tokens_refused.load(Ordering::Relaxed),
        (1u64 << 62) + 10 - booked.total()
    );
}

/// A worker whose whole 3 MiB answer comes in its head (as COCOON's C++ worker sends JSON
/// answers): the proxy relays the body as parts that fit the client's frames.
#[tokio::test]
async fn a_large_answer_in_the_head_reaches_the_client_in_parts() {
    use cocoon_tl::types::{proxy, TokensUsed};
    let net = start_network(&[]).await;
    let body = serde_json::to_vec(&json!({"content": "z".repeat(3 << 20)})).expect("json");
    let sent = body.clone();
    let _ = raw_worker(&net, "bulky", move |q| {
        let tokens = TokensUsed {
            prompt_tokens_used: 5,
            cached_tokens_used: 0,
            completion_tokens_used: 7,
            reasoning_tokens_used: 0,
            total_tokens_used: 12,
        };
        vec![proxy::QueryAnswerEx {
            request_id: q.request_id,
            answer: json_head(sent.clone()),
            flags: 1,
            final_info: Some(final_info(tokens)),
        }
        .into()]
    })
    .await;
    let client = net.client(3).await;
    let out = collect(&client, chat_request(chat_body(false, json!({})), 1000)).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.body, body, "the whole body arrives, in order");
    assert!(out.chunks >= 3, "relayed as parts: {}", out.chunks);
    assert_eq!(out.done.expect("done").tokens.total(), 12);
}

/// A request encrypted to a key the proxy does not hold is refused with 602 "unknown public
/// key" before it reaches a worker; at protocol 2 the client refuses to send one at all.
#[tokio::test]
async fn a_request_encrypted_to_an_unknown_key_is_refused() {
    let net = start_network(&[WorkerSpec::new("w", 1000)]).await;
    let client = net.client(4).await;
    let mut request = chat_request(chat_body(false, json!({})), 4000);
    request.encrypted_to = Some([0xab; 32]);
    let (code, message, _) = collect(&client, request.clone())
        .await
        .error
        .expect("refused");
    assert_eq!(code, 602);
    assert_eq!(message, format!("unknown public key: {}", "ab".repeat(32)));
    assert_eq!(
        net.workers[0]
            .stats()
            .requests_received
            .load(Ordering::SeqCst),
        0
    );
    let old = net.client(2).await;
    assert!(matches!(
        old.run_query(request).await,
        Err(cocoon_node::client::ClientError::CannotEncrypt(_))
    ));
    // A zero key is no encryption: the request runs.
    let mut plain = chat_request(chat_body(false, json!({})), 4000);
    plain.encrypted_to = Some([0; 32]);
    assert!(collect(&client, plain).await.error.is_none());
}

/// Our client opposite a proxy that speaks as COCOON 9060ce5's (protocol 4, no cocoon-rs
/// extensions in its hello answer): cancelling a request sends it nothing it does not
/// know; the constructors it receives are COCOON's only.
#[tokio::test]
async fn our_client_never_sends_an_official_proxy_our_extensions() {
    use cocoon_net::{ConnectionConfig, Incoming, RpcConnection};
    use cocoon_tl::functions::client as client_fn;
    use cocoon_tl::types::client;
    use cocoon_tl::TlConstructor;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let seen = received.clone();
    tokio::spawn(async move {
        let key = ed25519_dalek::SigningKey::from_bytes(&[78; 32]);
        let owner = cocoon_node::chain::devnet_address("official-proxy");
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(conn) = RpcConnection::accept(stream, &ConnectionConfig::default(), "client").await
        else {
            return;
        };
        let (handle, mut incoming) = conn.split();
        while let Some(item) = incoming.recv().await {
            match item {
                Incoming::Query(q) => match q.function_id() {
                    Some(client_fn::ConnectToProxy::ID) => {
                        let hello: client_fn::ConnectToProxy = q.decode().expect("hello");
                        let answer = proxy_hello_answer(&hello, &key, &owner, 3, 4); // as COCOON: base and versions, nothing else
                        let _ = q.answer(&answer).await;
                    }
                    Some(client_fn::AuthorizeWithProxyShort::ID) => {
                        let answer = proxy_authorized();
                        let _ = q.answer(&answer).await;
                    }
                    _ => {
                        let _ = q.error(651, "not served here").await;
                    }
                },
                Incoming::Packet(data) => {
                    if let Some(id) = cocoon_tl::peek_id(&data) {
                        seen.lock().expect("lock").push(id);
                    }
                    // Answers with a head only: the request stays open.
                    if let Ok(query) = cocoon_tl::from_bytes::<client_fn::RunQueryEx>(&data) {
                        let head: cocoon_tl::enums::client::QueryAnswerEx = client::QueryAnswerEx {
                            request_id: query.request_id,
                            answer: json_head(b"{".to_vec()),
                            flags: 0,
                            final_info: None,
                        }
                        .into();
                        let _ = handle.send_packet(&head).await;
                    }
                }
            }
        }
    });
    let client = client_to(addr, cocoon_node::client::MAX_PROTO, "client-1").await;
    assert_eq!(client.proto().number(), 4);
    let (request_id, mut rx) = client
        .run_query(chat_request(chat_body(false, json!({})), 4000))
        .await
        .expect("sent");
    assert!(matches!(
        rx.recv().await,
        Some(cocoon_node::client::AnswerEvent::Head(_))
    ));
    client.cancel(request_id).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ids = received.lock().expect("lock").clone();
    assert_eq!(
        ids,
        vec![cocoon_tl::functions::client::RunQueryEx::ID],
        "{ids:x?}"
    );
}
