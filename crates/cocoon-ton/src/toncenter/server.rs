//! toncenter's HTTP API v2 served over any [`ChainBackend`] (feature
//! `toncenter-server`).
//!
//! [`router`] answers, under whatever prefix the caller nests it at (the
//! devnet serves it at `/api/v2`):
//!
//! | route | backend call |
//! |---|---|
//! | `GET /getAddressInformation?address=` | [`ChainBackend::account_state`] |
//! | `POST /runGetMethod {address, method, stack}` | [`ChainBackend::run_get_method`] |
//! | `POST /sendBoc {boc}`, `POST /sendBocReturnHash {boc}` | [`ChainBackend::send_external`] |
//! | `GET /getTransactions?address=&limit=&lt=&hash=&to_lt=` | [`ChainBackend::transactions`] (+ [`ChainBackend::transaction_cell`] for `data`) |
//! | `POST /jsonRPC {method, params, id}` | the same five methods |
//!
//! Answers have toncenter's shapes (`{"ok": true, "result": …}`, or
//! `{"ok": false, "error": …, "code": …}` with that HTTP status), so toncenter
//! clients, `cocoon_ton::toncenter::TonCenter` among them, can use a devnet as they use
//! toncenter. Differences, all because a backend has no blocks: `block_id` is
//! a placeholder (masterchain, seqno 0, zero hashes), `gas_used` is 0, and a
//! frozen account has no `frozen_hash`. Slices in get-method results are
//! labelled `slice` (toncenter says `cell`), which toncenter clients read.
//!
//! Errors: a bad address is 416 ("Incorrect address"), a bad parameter 422, a
//! refused external message 500 with the liteserver's words ("cannot apply
//! external message to current state : External message was not accepted",
//! then the backend's reason), a get-method that throws is `ok: true` with its
//! `exit_code`, other backend failures 500 (501 for what the backend does not
//! support).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tycho_types::models::StdAddr;

use super::wire;
use crate::address::parse_addr;
use crate::chain::{ChainBackend, ChainError, TxId};

/// Backend transactions read per [`ChainBackend::transactions`] call while
/// answering `getTransactions`.
const SCAN_PAGE: usize = 256;

type Chain = Arc<dyn ChainBackend>;

/// An error answer: HTTP status (also toncenter's `code`) and text.
#[derive(Debug)]
struct ApiError {
    code: u16,
    message: String,
}

impl ApiError {
    fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    fn validation(message: impl std::fmt::Display) -> Self {
        ApiError::new(422, format!("Validation error: {message}"))
    }

    /// A backend error, as toncenter reports tonlib's.
    fn backend(e: ChainError) -> Self {
        match e {
            ChainError::Unsupported(m) => ApiError::new(501, m),
            ChainError::Rejected(m) => ApiError::new(
                500,
                format!(
                    "LITE_SERVER_UNKNOWN: cannot apply external message to current state : External message was not accepted\n{m}"
                ),
            ),
            other => ApiError::new(500, other.to_string()),
        }
    }

    fn body(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("ok".into(), json!(false));
        m.insert("error".into(), json!(self.message));
        m.insert("code".into(), json!(self.code));
        m
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

fn answer(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(result) => Json(json!({"ok": true, "result": result})).into_response(),
        Err(e) => (e.status(), Json(Value::Object(e.body()))).into_response(),
    }
}

/// The router of the API subset, over `chain`.
pub fn router(chain: Arc<dyn ChainBackend>) -> Router {
    Router::new()
        .route("/getAddressInformation", get(rest_get_address_information))
        .route("/getTransactions", get(rest_get_transactions))
        .route("/runGetMethod", post(rest_run_get_method))
        .route("/sendBoc", post(rest_send_boc))
        .route("/sendBocReturnHash", post(rest_send_boc_return_hash))
        .route("/jsonRPC", post(json_rpc))
        .with_state(chain)
}

type Params = Map<String, Value>;

fn query_params(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Params, ApiError> {
    let Query(q) = q.map_err(ApiError::validation)?;
    Ok(q.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
}

fn body_params(b: Result<Json<Value>, JsonRejection>) -> Result<Params, ApiError> {
    let Json(v) = b.map_err(ApiError::validation)?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::validation(format!(
            "the body is not an object: {}",
            wire::short(&other)
        ))),
    }
}

async fn rest_get_address_information(
    State(chain): State<Chain>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    answer(async { get_address_information(&chain, &query_params(q)?).await }.await)
}

async fn rest_get_transactions(
    State(chain): State<Chain>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    answer(async { get_transactions(&chain, &query_params(q)?).await }.await)
}

async fn rest_run_get_method(
    State(chain): State<Chain>,
    b: Result<Json<Value>, JsonRejection>,
) -> Response {
    answer(async { run_get_method(&chain, &body_params(b)?).await }.await)
}

async fn rest_send_boc(
    State(chain): State<Chain>,
    b: Result<Json<Value>, JsonRejection>,
) -> Response {
    answer(async { send_boc(&chain, &body_params(b)?, false).await }.await)
}

async fn rest_send_boc_return_hash(
    State(chain): State<Chain>,
    b: Result<Json<Value>, JsonRejection>,
) -> Response {
    answer(async { send_boc(&chain, &body_params(b)?, true).await }.await)
}

/// `POST /jsonRPC`: `{"method": …, "params": {…}, "id": …}`.
async fn json_rpc(State(chain): State<Chain>, b: Result<Json<Value>, JsonRejection>) -> Response {
    let req = match body_params(b) {
        Ok(r) => r,
        Err(e) => return answer(Err(e)),
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let params = match req.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return rpc_answer(
                id,
                Err(ApiError::validation(format!(
                    "params is not an object: {}",
                    wire::short(other)
                ))),
            )
        }
    };
    let result = match req.get("method").and_then(Value::as_str) {
        Some("getAddressInformation") => get_address_information(&chain, &params).await,
        Some("getTransactions") => get_transactions(&chain, &params).await,
        Some("runGetMethod") => run_get_method(&chain, &params).await,
        Some("sendBoc") => send_boc(&chain, &params, false).await,
        Some("sendBocReturnHash") => send_boc(&chain, &params, true).await,
        _ => Err(ApiError::new(422, "Unknown method")),
    };
    rpc_answer(id, result)
}

fn rpc_answer(id: Value, r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(result) => {
            Json(json!({"ok": true, "result": result, "jsonrpc": "2.0", "id": id})).into_response()
        }
        Err(e) => {
            let mut body = e.body();
            body.insert("jsonrpc".into(), json!("2.0"));
            body.insert("id".into(), id);
            (e.status(), Json(Value::Object(body))).into_response()
        }
    }
}

// ---------------------------------------------------------------- parameters

fn param<'a>(p: &'a Params, name: &str) -> Option<&'a Value> {
    p.get(name).filter(|v| !v.is_null())
}

fn address_param(p: &Params) -> Result<StdAddr, ApiError> {
    let s = match param(p, "address") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ApiError::new(416, "Incorrect address")),
        None => return Err(ApiError::validation("address is required")),
    };
    parse_addr(s).map_err(|_| ApiError::new(416, "Incorrect address"))
}

fn u64_param(p: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    param(p, name)
        .map(|v| wire::u64_value(v, name).map_err(ApiError::validation))
        .transpose()
}

// ---------------------------------------------------------------- methods

async fn get_address_information(chain: &Chain, p: &Params) -> Result<Value, ApiError> {
    let address = address_param(p)?;
    let st = chain
        .account_state(&address)
        .await
        .map_err(ApiError::backend)?;
    Ok(wire::encode_account(&st))
}

async fn run_get_method(chain: &Chain, p: &Params) -> Result<Value, ApiError> {
    let address = address_param(p)?;
    let method = match param(p, "method") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(_)) => {
            return Err(ApiError::validation(
                "method ids are not supported here; pass the method name",
            ))
        }
        _ => return Err(ApiError::validation("method is required")),
    };
    let args = wire::decode_stack(param(p, "stack").unwrap_or(&Value::Null))
        .map_err(ApiError::validation)?;
    let (exit_code, stack) = match chain.run_get_method(&address, &method, args).await {
        Ok(r) => (r.exit_code, r.stack),
        // toncenter reports a get-method that throws as a result with its exit code.
        Err(ChainError::GetMethodFailed { exit_code, .. }) => (exit_code, Vec::new()),
        Err(e) => return Err(ApiError::backend(e)),
    };
    Ok(json!({
        "@type": "smc.runResult",
        "gas_used": 0,
        "stack": wire::encode_stack(&stack),
        "exit_code": exit_code,
        "block_id": wire::placeholder_block_id(),
    }))
}

async fn send_boc(chain: &Chain, p: &Params, return_hash: bool) -> Result<Value, ApiError> {
    let boc = match param(p, "boc") {
        Some(Value::String(s)) => wire::b64_bytes(s, "boc").map_err(ApiError::validation)?,
        _ => return Err(ApiError::validation("boc is required")),
    };
    let hash = match chain.send_external(boc).await {
        Ok(h) => h,
        Err(ChainError::Ton(e)) => {
            return Err(ApiError::new(
                500,
                format!("LITE_SERVER_UNKNOWN: cannot apply external message to current state : failed to parse external message {e}"),
            ))
        }
        Err(e) => return Err(ApiError::backend(e)),
    };
    Ok(if return_hash {
        json!({"@type": "raw.extMessageInfo", "hash": wire::b64(&hash)})
    } else {
        json!({"@type": "ok"})
    })
}

/// toncenter's `getTransactions`: up to `limit` (1..=100, default 10)
/// transactions of `address` with `to_lt < lt <= start`, newest first, where
/// the start is the transaction `lt`/`hash` (inclusive) or the newest one.
async fn get_transactions(chain: &Chain, p: &Params) -> Result<Value, ApiError> {
    let address = address_param(p)?;
    let limit = u64_param(p, "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::validation("limit must be between 1 and 100"));
    }
    let limit = limit as usize;
    let start_lt = u64_param(p, "lt")?;
    let start_hash = match param(p, "hash") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            Some(wire::hash32(s, "hash").map_err(ApiError::validation)?)
        }
        Some(Value::String(_)) | None => None,
        Some(_) => return Err(ApiError::validation("hash must be a string")),
    };
    if start_hash.is_some() && start_lt.is_none() {
        return Err(ApiError::validation("hash must be sent with lt"));
    }
    let to_lt = u64_param(p, "to_lt")?.unwrap_or(0);

    // The backends page forward from a cursor; keep the newest `limit` seen.
    let mut window = VecDeque::with_capacity(limit);
    let mut cursor = (to_lt > 0).then_some(TxId {
        lt: to_lt,
        hash: [0; 32],
    });
    'scan: loop {
        let page = chain
            .transactions(&address, cursor, SCAN_PAGE)
            .await
            .map_err(ApiError::backend)?;
        for tx in page.transactions {
            if start_lt.is_some_and(|s| tx.id.lt > s) {
                break 'scan;
            }
            if tx.id.lt <= to_lt {
                continue;
            }
            if window.len() == limit {
                window.pop_front();
            }
            window.push_back(tx);
        }
        if !page.more || page.cursor == cursor {
            break;
        }
        cursor = page.cursor;
    }
    if let Some(lt) = start_lt {
        let found = window
            .back()
            .is_some_and(|t| t.id.lt == lt && start_hash.is_none_or(|h| h == t.id.hash));
        if !found {
            return Err(ApiError::new(
                404,
                format!(
                    "transaction {lt} of {} not found",
                    crate::address::to_raw(&address)
                ),
            ));
        }
    }
    let mut out = Vec::with_capacity(window.len());
    for tx in window.iter().rev() {
        let cell = chain
            .transaction_cell(&address, tx.id)
            .await
            .map_err(ApiError::backend)?;
        out.push(wire::encode_transaction(&address, tx, cell.as_ref()));
    }
    Ok(Value::Array(out))
}
