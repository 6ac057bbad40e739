//! The toncenter backend (`cocoon_ton::toncenter`, features `toncenter` and
//! `toncenter-server`):
//!
//! * [`TonCenter`] against recorded toncenter v2 answers
//!   (`tests/data/toncenter/`, see the README there), served by a small local
//!   server: exact account states, transactions read from their raw BOCs (and
//!   from the JSON fields without them), stack values, retries on 429/5xx,
//!   `ok: false` errors, refused externals, the rate limiter, hostile answers;
//! * a [`LocalChain`] served by `toncenter::server::router` and read through
//!   `TonCenter` as `Arc<dyn ChainBackend>`: the same states, get-methods,
//!   externals and followed transactions as the chain reports directly.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use cocoon_ton::address::parse_addr;
use cocoon_ton::chain::{
    AccountStatus, ChainBackend, ChainError, StackValue, Transaction, TxFollower, TxId,
};
use cocoon_ton::local::{codes, Clock, GenesisConfig, GenesisRoot, GenesisWallet, LocalChain};
use cocoon_ton::root::ONE_TON;
use cocoon_ton::toncenter::{server, TonCenter};
use cocoon_ton::tycho_types::cell::CellFamily;
use cocoon_ton::wallet::{cocoon_send_mode, CocoonWallet, ExternalMessage, InternalMessage};
use cocoon_ton::{Cell, StdAddr};
use common::*;

// ---------------------------------------------------------------- a scripted server

/// One scripted answer: HTTP status and body.
type Reply = (u16, String);

/// What the fixture server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    query: String,
    body: String,
    api_key: Option<String>,
}

#[derive(Default)]
struct Script {
    /// Answers per method, in order; the last one repeats.
    replies: HashMap<String, VecDeque<Reply>>,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<Script>>;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(data_path(&format!("toncenter/{name}"))).expect("fixture")
}

fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).expect("fixture JSON")
}

async fn scripted(
    State(script): State<Shared>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut s = script.lock().unwrap();
    s.seen.push(Seen {
        method: method.clone(),
        query: query.unwrap_or_default(),
        body,
        api_key: headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let reply = match s.replies.get_mut(&method) {
        Some(q) if q.len() > 1 => q.pop_front(),
        Some(q) => q.front().cloned(),
        None => None,
    };
    match reply {
        Some((status, body)) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such method").into_response(),
    }
}

struct FixtureServer {
    base: String,
    script: Shared,
}

impl FixtureServer {
    async fn start() -> Self {
        let script: Shared = Arc::default();
        let app = Router::new()
            .route("/api/v2/{method}", axum::routing::any(scripted))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/v2", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FixtureServer { base, script }
    }

    /// Answers `method` with these replies, in order (the last one repeats).
    fn reply(&self, method: &str, replies: Vec<Reply>) {
        self.script
            .lock()
            .unwrap()
            .replies
            .insert(method.to_string(), replies.into());
    }

    fn ok(&self, method: &str, file: &str) {
        self.reply(method, vec![(200, fixture(file))]);
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    /// A client without rate limit and with fast retries.
    fn client(&self) -> TonCenter {
        TonCenter::new(&self.base, Some("test-key".into()))
            .unwrap()
            .with_requests_per_second(0.0)
            .with_retries(5, Duration::from_millis(1))
    }
}

fn b64(s: &str) -> [u8; 32] {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap()
        .try_into()
        .unwrap()
}

fn cell_b64(s: &str) -> Cell {
    use base64::Engine as _;
    cocoon_ton::cells::from_boc(&base64::engine::general_purpose::STANDARD.decode(s).unwrap())
        .unwrap()
}

// ---------------------------------------------------------------- recorded answers

/// Code hash of wallet v3r2, the contract of the recorded active account.
const WALLET_V3R2_CODE_HASH: &str =
    "84dafa449f98a6987789ba232358072bc0f76dc4524002a5d0918b9a75d2d599";

#[tokio::test]
async fn recorded_account_states_parse_exactly() {
    let srv = FixtureServer::start().await;
    let tc = srv.client();
    let chain: &dyn ChainBackend = &tc;

    // A mainnet wallet v3r2 (getblock.io's toncenter-compatible API, 2023-06-21).
    srv.ok("getAddressInformation", "getAddressInformation.active.json");
    let addr = parse_addr("EQAFPsHznqgqPUZQVyUBmWxpNwReAIuepKo_BjLiS-C05XB_").unwrap();
    let st = chain.account_state(&addr).await.unwrap();
    assert_eq!(st.status, AccountStatus::Active);
    assert!(st.is_active());
    assert_eq!(st.balance, 809_401_535_972);
    assert_eq!(st.sync_utime, 1_687_338_490);
    assert_eq!(
        st.last_tx,
        Some(TxId {
            lt: 34_789_408_000_007,
            hash: b64("R7vI2AxqgpQQYxQaxZsQwtZXHxE6rw6mDNtKJ3LtPVM="),
        })
    );
    assert_eq!(
        hex::encode(st.code.as_ref().unwrap().repr_hash().0),
        WALLET_V3R2_CODE_HASH
    );
    // The data: seqno 6 and wallet id 698983191, as the same service's
    // getExtendedAddressInformation reported for this account at that time.
    let data = st.data.as_ref().unwrap();
    let mut s = data.as_slice().unwrap();
    assert_eq!(s.load_u32().unwrap(), 6);
    assert_eq!(s.load_u32().unwrap(), 698_983_191);

    // The request: raw address, API key header.
    let seen = srv.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "getAddressInformation");
    assert_eq!(
        seen[0].query,
        format!("address=0%3A{}", hex::encode(addr.address.0))
    );
    assert_eq!(seen[0].api_key.as_deref(), Some("test-key"));

    srv.ok("getAddressInformation", "getAddressInformation.uninit.json");
    let st = chain.account_state(&addr).await.unwrap();
    assert_eq!(st.status, AccountStatus::Uninit);
    assert_eq!(st.balance, ONE_TON);
    assert_eq!((st.code, st.data), (None, None));
    assert_eq!(st.last_tx.unwrap().lt, 38_656_162_000_002);

    // toncenter's answer for an account that never existed (balance clamped to 0).
    srv.ok(
        "getAddressInformation",
        "getAddressInformation.nonexist.json",
    );
    let st = chain.account_state(&addr).await.unwrap();
    assert_eq!(st.status, AccountStatus::NonExist);
    assert_eq!((st.balance, st.last_tx), (0, None));
    // Chain time is the sync_utime of such an answer.
    assert_eq!(chain.now().await.unwrap(), 1_687_338_490);
}

/// The mainnet transaction recorded in getblock.io's docs: an external message
/// to a wallet that sends 0.64 TON on.
fn check_mainnet_tx(tx: &Transaction) {
    assert_eq!(
        tx.id,
        TxId {
            lt: 38_656_162_000_001,
            hash: b64("g1DNZDyxC6lil8O0lHMWG00TmdPOpYA7FlxnHrppxI8="),
        }
    );
    assert_eq!(tx.utime, 1_687_332_511);
    let wallet = parse_addr("EQDXZ2c5LnA12Eum-DlguTmfYkMOvNeFCh4rBD0tgmwjcFI-").unwrap();
    let inm = tx.in_msg.as_ref().unwrap();
    assert_eq!(inm.source, None);
    assert_eq!(inm.dest, Some(wallet.clone()));
    assert_eq!(inm.value, 0);
    assert_eq!(
        inm.body_hash(),
        b64("w/DuzE0gSARe6PVn5EXhIPHeeH7P20RZ8h3OOjC9mp4=")
    );
    assert_eq!(tx.out_msgs.len(), 1);
    let out = &tx.out_msgs[0];
    assert_eq!(out.source, Some(wallet));
    assert_eq!(
        out.dest,
        Some(parse_addr("EQCgm88MSNrDa5FEWZ3IF60qTOztUebIkVtLNSPBkiOeJXB9").unwrap())
    );
    assert_eq!(out.value, 640_000_000);
    assert_eq!(
        out.body_hash(),
        b64("hvYWYf6TJDOM6eJKTvnOltIzvi3Wn6SOFvZzNfgwTE0=")
    );
    // A jetton transfer (op 0x0f8a7ea5).
    assert_eq!(
        out.body.as_slice().unwrap().load_u32().unwrap(),
        0x0f8a_7ea5
    );
    assert!(tx.success);
}

#[tokio::test]
async fn recorded_transactions_are_read_from_their_raw_boc() {
    let srv = FixtureServer::start().await;
    let tc = srv.client();
    let chain: &dyn ChainBackend = &tc;

    srv.ok("getTransactions", "getTransactions.mainnet.json");
    let wallet = parse_addr("EQDXZ2c5LnA12Eum-DlguTmfYkMOvNeFCh4rBD0tgmwjcFI-").unwrap();
    let page = chain.transactions(&wallet, None, 10).await.unwrap();
    assert_eq!(page.transactions.len(), 1);
    assert!(!page.more);
    assert_eq!(page.cursor, Some(page.transactions[0].id));
    check_mainnet_tx(&page.transactions[0]);
    let q = &srv.seen()[0].query;
    assert!(
        q.contains("limit=100") && q.contains("to_lt=0") && q.contains("archival=true"),
        "{q}"
    );

    // The raw transaction itself, through the same call.
    let id = page.transactions[0].id;
    let cell = chain.transaction_cell(&wallet, id).await.unwrap().unwrap();
    assert_eq!(cell.repr_hash().0, id.hash);
    let q = &srv.seen()[1].query;
    assert!(
        q.contains(&format!("lt={}", id.lt))
            && q.contains(&format!("hash={}", hex::encode(id.hash))),
        "{q}"
    );

    // After the cursor: nothing (the server honoured to_lt... here it answers
    // the same page, which the client filters).
    let page2 = chain.transactions(&wallet, page.cursor, 10).await.unwrap();
    assert!(page2.transactions.is_empty());
    assert_eq!(page2.cursor, page.cursor);

    // TON docs' example: 3.3 TON in from a wallet, 3.2987924 TON back with an
    // 0xffffffff body.
    srv.ok("getTransactions", "getTransactions.ton-docs.json");
    let acc = parse_addr("EQDcN89ChMLQe4G-p5Tqk5qhH_PpY9lbhRjXNagmCGsg_9l1").unwrap();
    let from = parse_addr("EQCK-9kEngK6l9VW0eIEO6-kpeedDRee0eIq-BQv0iDQu_Rb").unwrap();
    let with_data = chain
        .transactions(&acc, None, 10)
        .await
        .unwrap()
        .transactions;
    assert_eq!(with_data.len(), 1);
    let tx = &with_data[0];
    assert_eq!(tx.id.lt, 52_863_169_000_074);
    assert_eq!(
        tx.id.hash,
        b64("mkma+u5TOi12BSu6m6YhZaatY2b2ozdabOdBnVuWmWM=")
    );
    assert_eq!(tx.utime, 1_736_738_146);
    let inm = tx.in_msg.as_ref().unwrap();
    assert_eq!(
        (inm.source.as_ref(), inm.value),
        (Some(&from), 3_300_000_000)
    );
    assert_eq!(inm.body, Cell::empty_cell());
    assert_eq!(tx.out_msgs.len(), 1);
    assert_eq!(tx.out_msgs[0].dest.as_ref(), Some(&from));
    assert_eq!(tx.out_msgs[0].value, 3_298_792_400);
    assert_eq!(
        tx.out_msgs[0].body.as_slice().unwrap().load_u32().unwrap(),
        0xffff_ffff
    );
    // It is a bounce (the 0xffffffff body): not a success, as the raw
    // transaction says.
    assert!(!tx.success);

    // Without `data`, the JSON fields give the same messages.
    srv.ok("getTransactions", "getTransactions.ton-docs.no-data.json");
    let without = chain
        .transactions(&acc, None, 10)
        .await
        .unwrap()
        .transactions;
    assert_eq!(without.len(), 1);
    assert_eq!(without[0].id, tx.id);
    assert_eq!(without[0].utime, tx.utime);
    assert_eq!(without[0].in_msg, tx.in_msg);
    assert_eq!(without[0].out_msgs, tx.out_msgs);
    // `raw.transaction` JSON carries no outcome: without `data` a transaction
    // reads as a success (the documented fallback), which this one was not.
    assert!(without[0].success);
}

#[tokio::test]
async fn recorded_stacks_decode_exactly() {
    let srv = FixtureServer::start().await;
    let tc = srv.client();
    let chain: &dyn ChainBackend = &tc;
    let item = parse_addr("EQB43-VCmf17O7YMd51fAvOjcMkCw46N_3JMCoegH_ZDo40e").unwrap();

    // TON docs' get_nft_data of foundation.ton (mainnet, 2023-03-23).
    srv.ok("runGetMethod", "runGetMethod.get_nft_data.json");
    let r = chain
        .run_get_method(
            &item,
            "get_nft_data",
            vec![
                StackValue::Int(-5),
                StackValue::Uint256([0xab; 32]),
                StackValue::Slice(Cell::empty_cell()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stack.len(), 5);
    assert_eq!(r.stack[0], StackValue::Int(-1));
    let mut index = [0u8; 32];
    index.copy_from_slice(
        &hex::decode("9c7d56cc115e7cf6c25e126bea77cbc3cb15d55106f2e397562591059963faa3").unwrap(),
    );
    assert_eq!(r.stack[1], StackValue::Uint256(index));
    let raw = fixture_json("runGetMethod.get_nft_data.json");
    for i in 2..5 {
        let bytes = raw["result"]["stack"][i][1]["bytes"].as_str().unwrap();
        assert_eq!(r.stack[i], StackValue::Cell(cell_b64(bytes)));
    }
    // The collection and the owner are addresses.
    for i in [2, 3] {
        let StackValue::Cell(c) = &r.stack[i] else {
            panic!()
        };
        cocoon_ton::cells::load_address(&mut c.as_slice().unwrap()).unwrap();
    }
    // The request as toncenter takes it.
    let seen = srv.seen();
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["address"], cocoon_ton::address::to_raw(&item));
    assert_eq!(body["method"], "get_nft_data");
    assert_eq!(body["stack"][0], serde_json::json!(["num", "-5"]));
    assert_eq!(
        body["stack"][1],
        serde_json::json!(["num", format!("0x{}", "ab".repeat(32))])
    );
    assert_eq!(body["stack"][2][0], "tvm.Slice");
    // Tuples and nulls cannot be get-method arguments on toncenter.
    assert!(matches!(
        chain
            .run_get_method(&item, "x", vec![StackValue::Null])
            .await,
        Err(ChainError::Unsupported(_))
    ));

    // Tuples, lists (pairs ending in null), null and the empty tuple, in tonlib's form.
    srv.ok("runGetMethod", "runGetMethod.tuple.json");
    let r = chain.run_get_method(&item, "x", vec![]).await.unwrap();
    let pair = |a, b| StackValue::Tuple(vec![a, b]);
    assert_eq!(
        r.stack,
        vec![
            StackValue::Int(100_000_000_000_000),
            StackValue::Int(-1),
            StackValue::Tuple(vec![
                StackValue::Int(42),
                StackValue::Cell(Cell::empty_cell()),
                StackValue::Tuple(vec![StackValue::Int(-7), StackValue::Null]),
            ]),
            pair(
                StackValue::Int(1),
                pair(StackValue::Uint256([0xff; 32]), StackValue::Null)
            ),
            StackValue::Null,
            StackValue::Tuple(vec![]),
        ]
    );

    // A get-method that throws: toncenter answers ok with its exit code.
    srv.ok("runGetMethod", "runGetMethod.exit11.json");
    match chain.run_get_method(&item, "nope", vec![]).await {
        Err(ChainError::GetMethodFailed { method, exit_code }) => {
            assert_eq!((method.as_str(), exit_code), ("nope", 11))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn rate_limited_and_failing_requests_are_retried() {
    let srv = FixtureServer::start().await;
    let tc = srv.client();
    let addr = addr(0x42);

    // 429, a 502 from a proxy in front, then the answer.
    srv.reply(
        "getAddressInformation",
        vec![
            (429, fixture("ratelimit.json")),
            (502, "<html>Bad gateway</html>".into()),
            (200, fixture("getAddressInformation.active.json")),
        ],
    );
    let st = tc.account_state(&addr).await.unwrap();
    assert_eq!(st.balance, 809_401_535_972);
    assert_eq!(srv.seen().len(), 3);

    // Rate limited for good: the error says so, after the allowed attempts.
    srv.reply(
        "getAddressInformation",
        vec![(429, fixture("ratelimit.json"))],
    );
    let tc2 = srv.client().with_retries(3, Duration::from_millis(1));
    match tc2.account_state(&addr).await {
        Err(ChainError::Transport(m)) => assert_eq!(
            m,
            "toncenter getAddressInformation: Ratelimit exceed (code 429), after 3 attempts"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.seen().len(), 6);

    // Nobody listening: a transport error, retried, with the cause.
    let dead = TonCenter::new("http://127.0.0.1:1/api/v2", None)
        .unwrap()
        .with_requests_per_second(0.0)
        .with_retries(2, Duration::from_millis(1));
    match dead.account_state(&addr).await {
        Err(ChainError::Transport(m)) => {
            assert!(
                m.starts_with("toncenter getAddressInformation: request failed"),
                "{m}"
            );
            assert!(m.ends_with("after 2 attempts"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn ok_false_is_a_clear_error() {
    let srv = FixtureServer::start().await;
    let tc = srv.client();
    srv.reply(
        "getAddressInformation",
        vec![(416, fixture("okfalse.json"))],
    );
    match tc.account_state(&addr(1)).await {
        Err(ChainError::Transport(m)) => {
            assert_eq!(
                m,
                "toncenter getAddressInformation: Incorrect address (code 416)"
            )
        }
        other => panic!("{other:?}"),
    }
    // Not retried.
    assert_eq!(srv.seen().len(), 1);
    // ok:false with HTTP 200 is an error too.
    srv.reply(
        "getAddressInformation",
        vec![(
            200,
            r#"{"ok":false,"error":"something broke","code":418}"#.into(),
        )],
    );
    match tc.account_state(&addr(1)).await {
        Err(ChainError::Transport(m)) => {
            assert_eq!(
                m,
                "toncenter getAddressInformation: something broke (code 418)"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn externals_are_sent_and_refusals_are_rejected_at_once() {
    let srv = FixtureServer::start().await;
    let tc = srv.client();
    let ext = ExternalMessage {
        dest: addr(0x11),
        state_init: None,
        body: Cell::empty_cell(),
    }
    .to_boc()
    .unwrap();
    let hash = cocoon_ton::cells::from_boc(&ext).unwrap().repr_hash().0;
    srv.reply(
        "sendBocReturnHash",
        vec![(
            200,
            serde_json::json!({"ok": true, "result": {"@type": "raw.extMessageInfo", "hash": base64_std(&hash)}})
                .to_string(),
        )],
    );
    assert_eq!(tc.send_external(ext.clone()).await.unwrap(), hash);
    let body: serde_json::Value = serde_json::from_str(&srv.seen()[0].body).unwrap();
    assert_eq!(body["boc"], base64_std(&ext));

    srv.reply(
        "sendBocReturnHash",
        vec![(500, fixture("sendBocReturnHash.refused.json"))],
    );
    match tc.send_external(ext).await {
        Err(ChainError::Rejected(m)) => {
            assert!(m.starts_with("toncenter sendBocReturnHash: LITE_SERVER_UNKNOWN: cannot apply external message"), "{m}");
            assert!(m.contains("exitcode=33"), "{m}");
            assert!(m.ends_with("(code 500)"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // Refused once, not retried.
    assert_eq!(srv.seen().len(), 2);
    // A malformed BOC never leaves.
    assert!(matches!(
        tc.send_external(b"not a boc".to_vec()).await,
        Err(ChainError::Ton(_))
    ));
    assert_eq!(srv.seen().len(), 2);
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn the_rate_limiter_spaces_requests() {
    let srv = FixtureServer::start().await;
    srv.ok("getAddressInformation", "getAddressInformation.active.json");
    let tc = srv.client().with_requests_per_second(20.0);
    let t0 = Instant::now();
    for _ in 0..5 {
        tc.account_state(&addr(1)).await.unwrap();
    }
    // 5 requests at 20 per second: the last one at >= 200 ms.
    assert!(
        t0.elapsed() >= Duration::from_millis(195),
        "{:?}",
        t0.elapsed()
    );
    // Without a key the default is 1 per second, with one 10 (checked through Debug).
    let dbg = format!("{:?}", TonCenter::new(&srv.base, None).unwrap());
    assert!(dbg.contains("interval: Some(1s)"), "{dbg}");
    let dbg = format!("{:?}", TonCenter::new(&srv.base, Some("k".into())).unwrap());
    assert!(
        dbg.contains("interval: Some(100ms)") && !dbg.contains("\"k\""),
        "{dbg}"
    );
}

#[tokio::test]
async fn hostile_answers_are_errors_not_panics() {
    let srv = FixtureServer::start().await;
    let tc = srv.client().with_retries(1, Duration::from_millis(1));
    let wallet = parse_addr("EQDXZ2c5LnA12Eum-DlguTmfYkMOvNeFCh4rBD0tgmwjcFI-").unwrap();

    // A transaction of another account than the one asked for.
    srv.ok("getTransactions", "getTransactions.mainnet.json");
    let err = tc.transactions(&addr(7), None, 10).await.unwrap_err();
    assert!(err.to_string().contains("is a transaction of"), "{err}");

    // `data` that does not hash to the transaction id.
    let mut v = fixture_json("getTransactions.mainnet.json");
    v["result"][0]["transaction_id"]["hash"] =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    srv.reply("getTransactions", vec![(200, v.to_string())]);
    let err = tc.transactions(&wallet, None, 10).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("not the one named by transaction_id"),
        "{err}"
    );

    // Without data, a body that does not match its body_hash.
    let mut v = fixture_json("getTransactions.ton-docs.no-data.json");
    v["result"][0]["in_msg"]["body_hash"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    srv.reply("getTransactions", vec![(200, v.to_string())]);
    let acc = parse_addr("EQDcN89ChMLQe4G-p5Tqk5qhH_PpY9lbhRjXNagmCGsg_9l1").unwrap();
    let err = tc.transactions(&acc, None, 10).await.unwrap_err();
    assert!(err.to_string().contains("body_hash"), "{err}");

    for (method, body) in [
        ("getAddressInformation", "{"),
        ("getAddressInformation", r#"{"ok":true}"#),
        (
            "getAddressInformation",
            r#"{"ok":true,"result":{"balance":"x"}}"#,
        ),
        (
            "getAddressInformation",
            r#"{"ok":true,"result":{"balance":"1","code":"!!","state":"active"}}"#,
        ),
        (
            "getAddressInformation",
            r#"{"ok":true,"result":{"balance":"1","state":"weird"}}"#,
        ),
        (
            "getAddressInformation",
            r#"{"ok":true,"result":{"balance":"1","last_transaction_id":{"lt":"5","hash":"AAAA"}}}"#,
        ),
        ("getTransactions", r#"{"ok":true,"result":{}}"#),
        (
            "getTransactions",
            r#"{"ok":true,"result":[{"transaction_id":{"lt":"1"}}]}"#,
        ),
        (
            "getTransactions",
            r#"{"ok":true,"result":[{"transaction_id":{"lt":"1","hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},"data":"te6cc"}]}"#,
        ),
        ("runGetMethod", r#"{"ok":true,"result":{"stack":[]}}"#),
        (
            "runGetMethod",
            r#"{"ok":true,"result":{"exit_code":0,"stack":[["num","0x1g"]]}}"#,
        ),
        (
            "runGetMethod",
            r#"{"ok":true,"result":{"exit_code":99999999999,"stack":[]}}"#,
        ),
        (
            "runGetMethod",
            r#"{"ok":true,"result":{"exit_code":0,"stack":[["tuple",{"@type":"tvm.tuple","elements":[{"@type":"tvm.stackEntryUnsupported"}]}]]}}"#,
        ),
    ] {
        srv.reply(method, vec![(200, body.into())]);
        let r = match method {
            "getAddressInformation" => tc.account_state(&wallet).await.map(|_| ()),
            "getTransactions" => tc.transactions(&wallet, None, 10).await.map(|_| ()),
            _ => tc.run_get_method(&wallet, "m", vec![]).await.map(|_| ()),
        };
        match r {
            Err(ChainError::Transport(m)) => {
                assert!(m.starts_with(&format!("toncenter {method}")), "{m}")
            }
            other => panic!("{method} {body}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- the server over LocalChain

const T0: u32 = 1_800_000_000;

fn wallet(k: u8, owner: StdAddr) -> CocoonWallet {
    CocoonWallet::new(key(k), owner, &codes::wallet_code().unwrap()).unwrap()
}

struct Devnet {
    base: String,
    chain: Arc<LocalChain>,
    http: Arc<dyn ChainBackend>,
    root: StdAddr,
    admin: CocoonWallet,
    proxy_wallet: CocoonWallet,
    funded: StdAddr,
}

async fn devnet() -> Devnet {
    let admin = wallet(9, addr(0x99));
    let proxy_wallet = wallet(1, addr(0x11));
    let funded = addr(0x12);
    let groot = GenesisRoot::devnet(admin.address().clone()).unwrap();
    let root = groot.contract().unwrap().address;
    let chain = Arc::new(
        LocalChain::genesis(GenesisConfig {
            root: Some(groot),
            wallets: [&admin, &proxy_wallet]
                .into_iter()
                .map(|w| GenesisWallet::new(w.public_key(), w.owner().clone(), 100 * ONE_TON))
                .collect(),
            funded: vec![(funded.clone(), ONE_TON)],
            clock: Clock::Fixed(T0),
            config: None,
        })
        .unwrap(),
    );
    let app = Router::new().nest("/api/v2", server::router(chain.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http: Arc<dyn ChainBackend> = Arc::new(
        TonCenter::new(&base, None)
            .unwrap()
            .with_requests_per_second(0.0)
            .with_retries(2, Duration::from_millis(1))
            // Small pages, so that following reads back over several requests.
            .with_page_size(2),
    );
    Devnet {
        base,
        chain,
        http,
        root,
        admin,
        proxy_wallet,
        funded,
    }
}

fn seqno(chain: &LocalChain, w: &CocoonWallet) -> u32 {
    match chain
        .get_method(w.address(), "seqno", vec![])
        .unwrap()
        .stack
        .as_slice()
    {
        [StackValue::Int(s)] => u32::try_from(*s).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// A signed wallet request sending `value` to `to` with a small body.
fn transfer(chain: &LocalChain, w: &CocoonWallet, to: &StdAddr, value: u64, tag: u32) -> Vec<u8> {
    let mut b = cocoon_ton::tycho_types::cell::CellBuilder::new();
    b.store_u32(tag).unwrap();
    let msg = InternalMessage {
        dest: to.clone(),
        value,
        bounce: false,
        state_init: None,
        body: Some(b.build().unwrap()),
    };
    w.external_message(
        seqno(chain, w),
        chain.time() + 3600,
        &[(cocoon_send_mode(value), msg)],
    )
    .unwrap()
    .to_boc()
    .unwrap()
}

#[tokio::test]
async fn a_local_chain_through_the_server_reads_as_the_chain_itself() {
    let d = devnet().await;
    let direct: &dyn ChainBackend = d.chain.as_ref();
    let http = d.http.as_ref();

    // Account states: deployed root and wallet, funded uninit account, nobody.
    for a in [
        d.root.clone(),
        d.admin.address().clone(),
        d.funded.clone(),
        addr(0x77),
    ] {
        assert_eq!(
            http.account_state(&a).await.unwrap(),
            direct.account_state(&a).await.unwrap(),
            "{a}"
        );
    }
    assert_eq!(
        http.account_state(&addr(0x77)).await.unwrap().status,
        AccountStatus::NonExist
    );
    assert_eq!(http.now().await.unwrap(), T0);

    // Get-methods: integers, 256-bit values, slices, arguments, failures.
    for (a, m, args) in [
        (d.admin.address(), "seqno", vec![]),
        (d.admin.address(), "get_public_key", vec![]),
        (d.admin.address(), "get_owner_address", vec![]),
        (&d.root, "get_cocoon_data", vec![]),
        (
            &d.root,
            "proxy_hash_is_valid",
            vec![StackValue::Uint256([7; 32])],
        ),
    ] {
        assert_eq!(
            http.run_get_method(a, m, args.clone()).await.unwrap(),
            direct.run_get_method(a, m, args).await.unwrap(),
            "{m}"
        );
    }
    assert!(matches!(
        http.run_get_method(&d.root, "no_such_method", vec![]).await,
        Err(ChainError::GetMethodFailed { exit_code: 11, .. })
    ));
    assert_eq!(
        http.run_get_method(d.admin.address(), "get_public_key", vec![])
            .await
            .unwrap()
            .stack,
        vec![StackValue::Uint256(d.admin.public_key())]
    );

    // Follow the admin wallet from now on, through HTTP and directly.
    let mut via_http = TxFollower::from_now(http, d.admin.address().clone())
        .await
        .unwrap();
    let mut via_chain = TxFollower::from_now(direct, d.admin.address().clone())
        .await
        .unwrap();
    assert_eq!(via_http, via_chain);
    // Five transfers sent through HTTP: each runs and is seen.
    for i in 0..5u32 {
        let ext = transfer(&d.chain, &d.admin, &d.funded, ONE_TON / 10, 0x7465_7300 + i);
        let hash = http.send_external(ext.clone()).await.unwrap();
        assert_eq!(
            hash,
            cocoon_ton::cells::from_boc(&ext).unwrap().repr_hash().0
        );
    }
    assert_eq!(seqno(&d.chain, &d.admin), 5);
    let seen_http = via_http.poll(http).await.unwrap();
    let seen_chain = via_chain.poll(direct).await.unwrap();
    assert_eq!(seen_http.len(), 5);
    assert_eq!(seen_http, seen_chain);
    assert_eq!(via_http, via_chain);
    for (i, tx) in seen_http.iter().enumerate() {
        assert!(tx.success);
        assert_eq!(tx.in_msg.as_ref().unwrap().source, None);
        let out = &tx.out_msgs[0];
        assert_eq!(out.dest.as_ref(), Some(&d.funded));
        // The value less the forwarding fee (the wallet's send mode).
        assert!(
            out.value > ONE_TON / 11 && out.value <= ONE_TON / 10,
            "{}",
            out.value
        );
        assert_eq!(
            out.body.as_slice().unwrap().load_u32().unwrap(),
            0x7465_7300 + i as u32
        );
        // The raw transaction, as the chain keeps it.
        assert_eq!(
            http.transaction_cell(d.admin.address(), tx.id)
                .await
                .unwrap(),
            direct
                .transaction_cell(d.admin.address(), tx.id)
                .await
                .unwrap()
        );
    }
    assert!(via_http.poll(http).await.unwrap().is_empty());

    // The funded account's whole history, in pages of 2 (read back over
    // several requests each), equals the chain's.
    let mut from_start_http = TxFollower::from_start(d.funded.clone());
    let mut from_start_chain = TxFollower::from_start(d.funded.clone());
    let all_http = from_start_http.poll(http).await.unwrap();
    assert_eq!(all_http.len(), 5);
    assert_eq!(all_http, from_start_chain.poll(direct).await.unwrap());
    let mut cursor = None;
    let mut paged = Vec::new();
    loop {
        let page = http.transactions(&d.funded, cursor, 2).await.unwrap();
        assert_eq!(
            page,
            direct.transactions(&d.funded, cursor, 2).await.unwrap()
        );
        paged.extend(page.transactions);
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(paged, all_http);

    // A refused external (an old seqno): rejected, with the wallet's exit code.
    let stale = d
        .proxy_wallet
        .external_message(7, T0 + 3600, &[])
        .unwrap()
        .to_boc()
        .unwrap();
    let before = d.chain.transaction_count();
    match http.send_external(stale).await {
        Err(ChainError::Rejected(m)) => {
            assert!(m.contains("cannot apply external message"), "{m}");
            assert!(m.contains("1032"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.chain.transaction_count(), before);
    d.chain.advance_time(60).unwrap();
    assert_eq!(http.now().await.unwrap(), T0 + 60);
}

#[tokio::test]
async fn the_server_speaks_toncenter_json() {
    let d = devnet().await;
    let base = d.base.clone();

    // Account JSON as toncenter writes it.
    let url = format!(
        "{base}/getAddressInformation?address={}",
        cocoon_ton::address::to_friendly(d.admin.address(), false)
    );
    let (status, v) = raw_http("GET", &url, None).await;
    assert_eq!(status, 200);
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"]["@type"], "raw.fullAccountState");
    assert_eq!(v["result"]["state"], "active");
    assert_eq!(v["result"]["balance"], (100 * ONE_TON).to_string());

    // Errors: bad address, unknown JSON-RPC method, bad limit.
    let (status, v) = raw_http(
        "GET",
        &format!("{base}/getAddressInformation?address=zzz"),
        None,
    )
    .await;
    assert_eq!(
        (status, &v["ok"], &v["code"]),
        (416, &false.into(), &416.into())
    );
    assert_eq!(v["error"], "Incorrect address");
    let (status, v) = raw_http(
        "POST",
        &format!("{base}/jsonRPC"),
        Some(serde_json::json!({"method": "nope", "params": {}, "id": "7", "jsonrpc": "2.0"})),
    )
    .await;
    assert_eq!(
        (status, &v["error"], &v["id"]),
        (422, &"Unknown method".into(), &"7".into())
    );
    let (status, _) = raw_http(
        "GET",
        &format!(
            "{base}/getTransactions?address={}&limit=101",
            cocoon_ton::address::to_raw(&d.root)
        ),
        None,
    )
    .await;
    assert_eq!(status, 422);

    // JSON-RPC runs the same methods.
    let (status, v) = raw_http(
        "POST",
        &format!("{base}/jsonRPC"),
        Some(serde_json::json!({
            "method": "runGetMethod", "id": 1, "jsonrpc": "2.0",
            "params": {"address": cocoon_ton::address::to_raw(d.admin.address()), "method": "seqno", "stack": []}
        })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["exit_code"], 0);
    assert_eq!(v["result"]["stack"], serde_json::json!([["num", "0x0"]]));

    // getTransactions: toncenter's paging (newest first, lt/hash inclusive, to_lt exclusive).
    for i in 0..3u32 {
        d.chain
            .execute_external(&transfer(&d.chain, &d.admin, &d.funded, ONE_TON, i))
            .unwrap();
    }
    let txs = d.chain.transactions_of(d.admin.address());
    assert_eq!(txs.len(), 3);
    let raw = cocoon_ton::address::to_raw(d.admin.address());
    let (_, v) = raw_http(
        "GET",
        &format!("{base}/getTransactions?address={raw}&limit=2"),
        None,
    )
    .await;
    let list = v["result"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[0]["transaction_id"]["lt"],
        txs[2].summary.id.lt.to_string()
    );
    assert_eq!(
        list[1]["transaction_id"]["lt"],
        txs[1].summary.id.lt.to_string()
    );
    assert_eq!(
        list[0]["data"],
        base64_std(&cocoon_ton::cells::to_boc(&txs[2].cell))
    );
    assert_eq!(list[0]["fee"], txs[2].total_fees.to_string());
    assert_eq!(
        list[0]["out_msgs"][0]["value"],
        txs[2].summary.out_msgs[0].value.to_string()
    );
    assert_eq!(list[0]["in_msg"]["source"], "");
    assert_eq!(
        list[0]["in_msg"]["destination"],
        cocoon_ton::address::to_friendly_with(
            d.admin.address(),
            cocoon_ton::address::AddressFlags {
                bounceable: true,
                testnet: false,
                url_safe: true
            }
        )
    );
    let id1 = txs[1].summary.id;
    let (_, v) = raw_http(
        "GET",
        &format!(
            "{base}/getTransactions?address={raw}&limit=5&lt={}&hash={}&to_lt={}",
            id1.lt,
            hex::encode(id1.hash),
            txs[0].summary.id.lt
        ),
        None,
    )
    .await;
    let list = v["result"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["transaction_id"]["lt"], id1.lt.to_string());
    // An unknown start transaction.
    let (status, _) = raw_http(
        "GET",
        &format!(
            "{base}/getTransactions?address={raw}&lt={}&hash={}",
            id1.lt,
            "00".repeat(32)
        ),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// A minimal HTTP/1.1 exchange (the tests need no HTTP client of their own).
async fn raw_http(
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((len, rest)) = s.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}
