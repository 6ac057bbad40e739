//! The client: [`TonCenter`], a [`ChainBackend`] over toncenter's HTTP API v2.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::time::Instant;
use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;

use super::wire;
use crate::address::to_raw;
use crate::chain::{
    AccountState, BoxFuture, ChainBackend, ChainError, ChainResult, GetMethodResult, StackValue,
    Transaction, TxId, TxPage,
};

/// toncenter's mainnet API v2.
pub const MAINNET_URL: &str = "https://toncenter.com/api/v2";
/// toncenter's testnet API v2.
pub const TESTNET_URL: &str = "https://testnet.toncenter.com/api/v2";

/// Largest answer body read (a page of 100 transactions is far below).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// toncenter's largest `getTransactions` page.
const MAX_PAGE: usize = 100;
/// Most transactions [`TonCenter`] reads back to reach a cursor in one call.
pub const MAX_BACKLOG: usize = 100_000;
/// The account whose state [`ChainBackend::now`] reads (any address answers
/// with the time of the latest block; this one is the basechain zero account).
const CLOCK_ACCOUNT: &str = "0:0000000000000000000000000000000000000000000000000000000000000000";

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Spaces requests evenly: at most `rps` per second.
#[derive(Debug)]
struct RateLimiter {
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    fn new(rps: f64) -> Self {
        let interval = (rps.is_finite() && rps > 0.0).then(|| Duration::from_secs_f64(1.0 / rps));
        RateLimiter {
            interval,
            next: Mutex::new(None),
        }
    }

    async fn acquire(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Transactions already read back to a cursor, waiting to be returned by the
/// next [`ChainBackend::transactions`] calls of a follower (so that a long
/// backlog is read once, not once per page).
#[derive(Debug)]
struct Backlog {
    address: StdAddr,
    after: Option<TxId>,
    /// Oldest first.
    txs: VecDeque<Transaction>,
}

/// A failed request, before it becomes a [`ChainError`].
#[derive(Debug)]
struct CallError {
    /// HTTP status, when an answer came.
    status: Option<u16>,
    /// toncenter's `code`, when given.
    code: Option<i64>,
    /// toncenter's `error`, or what went wrong.
    message: String,
    /// Whether trying again may help.
    retryable: bool,
    /// Requests made.
    attempts: u32,
}

impl CallError {
    fn describe(&self, method: &str) -> String {
        let mut s = format!("toncenter {method}: {}", self.message);
        match (self.code, self.status) {
            (Some(c), _) => s.push_str(&format!(" (code {c})")),
            (None, Some(st)) => s.push_str(&format!(" (HTTP {st})")),
            (None, None) => {}
        }
        if self.attempts > 1 {
            s.push_str(&format!(", after {} attempts", self.attempts));
        }
        s
    }

    fn into_transport(self, method: &str) -> ChainError {
        ChainError::Transport(self.describe(method))
    }
}

/// Whether an HTTP status (or toncenter `code`) is worth another try.
fn retryable_status(s: i64) -> bool {
    s == 429 || s == 408 || ((500..=599).contains(&s) && s != 501 && s != 505)
}

/// Whether a toncenter error says the chain refused an external message
/// (liteserver: "cannot apply external message to current state …").
fn is_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("cannot apply external message") || m.contains("external message was not accepted")
}

enum Request {
    Get(Vec<(&'static str, String)>),
    Post(Value),
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A [`ChainBackend`] over toncenter's HTTP API v2 (or any server speaking
/// it, such as `cocoon_ton::toncenter::server::router`).
///
/// * `account_state` → `getAddressInformation`;
/// * `run_get_method` → `runGetMethod` (arguments: numbers, cells, slices);
/// * `send_external` → `sendBocReturnHash`;
/// * `transactions` → `getTransactions`, read back from the newest to the
///   cursor (toncenter pages newest first) and returned oldest first;
/// * `now` → the `sync_utime` of a `getAddressInformation` answer: the time of
///   the latest masterchain block the server's tonlib has synced, which is
///   what the C++ runners use as chain time (one request, where
///   `getMasterchainInfo` + `getBlockHeader` would take two).
///
/// Requests are spaced by a rate limiter (by default 1 per second without an
/// API key and 10 with one, toncenter's limits), retried with exponential
/// backoff on HTTP 429, 5xx and transport errors (5 attempts by default), and
/// each bounded by a timeout (20 s).
pub struct TonCenter {
    base: String,
    api_key: Option<String>,
    http: HttpClient,
    limiter: RateLimiter,
    timeout: Duration,
    max_attempts: u32,
    backoff: Duration,
    page: usize,
    backlog: Mutex<Option<Backlog>>,
}

impl std::fmt::Debug for TonCenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TonCenter")
            .field("base", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .field("interval", &self.limiter.interval)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl TonCenter {
    /// A client of the API at `base_url` (e.g. [`MAINNET_URL`], or
    /// `http://127.0.0.1:8081/api/v2` for a devnet), sending `api_key` as
    /// `X-API-Key` when given.
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, ChainError> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let uri: http::Uri = base
            .parse()
            .map_err(|e| ChainError::Transport(format!("bad toncenter URL {base_url:?}: {e}")))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(ChainError::Transport(format!(
                    "bad toncenter URL {base_url:?}: must start with http:// or https://"
                )))
            }
        }
        if uri.authority().is_none() || uri.query().is_some() {
            return Err(ChainError::Transport(format!(
                "bad toncenter URL {base_url:?}: expected scheme://host[:port][/path]"
            )));
        }
        if let Some(key) = &api_key {
            http::HeaderValue::from_str(key)
                .map_err(|_| ChainError::Transport("the API key is not a valid header".into()))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ChainError::Transport(format!("TLS setup: {e}")))?
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let rps = if api_key.is_some() { 10.0 } else { 1.0 };
        Ok(TonCenter {
            base,
            api_key,
            http,
            limiter: RateLimiter::new(rps),
            timeout: Duration::from_secs(20),
            max_attempts: 5,
            backoff: Duration::from_millis(500),
            page: MAX_PAGE,
            backlog: Mutex::new(None),
        })
    }

    /// At most `rps` requests per second (a non-positive or non-finite value
    /// turns the limiter off).
    pub fn with_requests_per_second(mut self, rps: f64) -> Self {
        self.limiter = RateLimiter::new(rps);
        self
    }

    /// Timeout of one request, connection included (default 20 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Tries each request up to `max_attempts` times (at least once), waiting
    /// `first_backoff`, then twice as long each time (at most 30 s), or what a
    /// `Retry-After` header asks, between them (default 5 and 500 ms).
    pub fn with_retries(mut self, max_attempts: u32, first_backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.backoff = first_backoff;
        self
    }

    /// Transactions asked per `getTransactions` request, 1 to 100 (default 100).
    pub fn with_page_size(mut self, page: usize) -> Self {
        self.page = page.clamp(1, MAX_PAGE);
        self
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(30))
    }

    /// One request: the `result` of an `ok: true` answer.
    async fn call(
        &self,
        method: &'static str,
        request: Request,
        refusal_is_final: bool,
    ) -> Result<Value, CallError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.limiter.acquire().await;
            let (result, retry_after) = match tokio::time::timeout(
                self.timeout,
                self.once(method, &request, refusal_is_final),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => (
                    Err(CallError {
                        status: None,
                        code: None,
                        message: format!("no answer within {:?}", self.timeout),
                        retryable: true,
                        attempts: 0,
                    }),
                    None,
                ),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(mut e) => {
                    e.attempts = attempt;
                    if !e.retryable || attempt >= self.max_attempts {
                        return Err(e);
                    }
                    let wait = retry_after
                        .map_or(self.backoff_for(attempt), |r| {
                            r.max(self.backoff_for(attempt))
                        })
                        .min(Duration::from_secs(60));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn once(
        &self,
        method: &'static str,
        request: &Request,
        refusal_is_final: bool,
    ) -> (Result<Value, CallError>, Option<Duration>) {
        let fail = |message: String, retryable: bool| CallError {
            status: None,
            code: None,
            message,
            retryable,
            attempts: 0,
        };
        let mut uri = format!("{}/{method}", self.base);
        let (http_method, body) = match request {
            Request::Get(params) => {
                for (i, (k, v)) in params.iter().enumerate() {
                    uri.push(if i == 0 { '?' } else { '&' });
                    uri.push_str(k);
                    uri.push('=');
                    uri.push_str(&encode_query_value(v));
                }
                (http::Method::GET, Bytes::new())
            }
            Request::Post(v) => (http::Method::POST, Bytes::from(v.to_string())),
        };
        let mut builder = http::Request::builder()
            .method(http_method)
            .uri(&uri)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "cocoon-rs");
        if matches!(request, Request::Post(_)) {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(key) = &self.api_key {
            builder = builder.header("X-API-Key", key.as_str());
        }
        let req = match builder.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return (Err(fail(format!("bad request {uri}: {e}"), false)), None),
        };
        let resp = match self.http.request(req).await {
            Ok(r) => r,
            Err(e) => {
                let mut msg = format!("request failed: {e}");
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                return (Err(fail(msg, true)), None);
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match Limited::new(resp.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return (
                    Err(CallError {
                        status: Some(status),
                        code: None,
                        message: format!("reading the answer failed: {e}"),
                        retryable: true,
                        attempts: 0,
                    }),
                    retry_after,
                )
            }
        };
        (Self::classify(status, &body, refusal_is_final), retry_after)
    }

    /// Turns an HTTP answer into toncenter's `result` or an error.
    fn classify(status: u16, body: &[u8], refusal_is_final: bool) -> Result<Value, CallError> {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let ok = parsed
            .as_ref()
            .and_then(|v| v.get("ok"))
            .and_then(Value::as_bool);
        if (200..300).contains(&status) && ok == Some(true) {
            let v = parsed.unwrap_or(Value::Null);
            return Ok(v.get("result").cloned().unwrap_or(Value::Null));
        }
        let (message, code) = match &parsed {
            Some(v) if v.is_object() => {
                let message = match v.get("error") {
                    Some(Value::String(s)) => s.trim_end().to_string(),
                    Some(other) if !other.is_null() => other.to_string(),
                    _ if ok == Some(false) => "ok: false without an error".to_string(),
                    _ => format!("unexpected answer: {}", wire::short(v)),
                };
                let code = v.get("code").and_then(|c| wire::i64_value(c, "code").ok());
                (message, code)
            }
            _ => {
                let text = String::from_utf8_lossy(body);
                let mut t: String = text.chars().take(200).collect();
                if text.chars().count() > 200 {
                    t.push('…');
                }
                (format!("non-JSON answer: {}", t.trim()), None)
            }
        };
        let retryable = !(refusal_is_final && is_refusal(&message))
            && (retryable_status(i64::from(status)) || code.is_some_and(retryable_status));
        Err(CallError {
            status: Some(status),
            code,
            message,
            retryable,
            attempts: 0,
        })
    }

    async fn get(
        &self,
        method: &'static str,
        params: Vec<(&'static str, String)>,
    ) -> ChainResult<Value> {
        self.call(method, Request::Get(params), false)
            .await
            .map_err(|e| e.into_transport(method))
    }

    async fn account(&self, address: &str) -> ChainResult<AccountState> {
        let v = self
            .get(
                "getAddressInformation",
                vec![("address", address.to_string())],
            )
            .await?;
        wire::decode_account(&v)
            .map_err(|e| ChainError::Transport(format!("toncenter getAddressInformation: {e}")))
    }

    /// One `getTransactions` page of `address`, newest first.
    async fn tx_page(
        &self,
        address: &StdAddr,
        limit: usize,
        start: Option<TxId>,
        to_lt: u64,
    ) -> ChainResult<Vec<(Transaction, Option<Cell>)>> {
        let mut params = vec![("address", to_raw(address)), ("limit", limit.to_string())];
        if let Some(s) = start {
            params.push(("lt", s.lt.to_string()));
            params.push(("hash", hex::encode(s.hash)));
        }
        params.push(("to_lt", to_lt.to_string()));
        params.push(("archival", "true".into()));
        let v = self.get("getTransactions", params).await?;
        let bad = |e: String| ChainError::Transport(format!("toncenter getTransactions: {e}"));
        let list = v
            .as_array()
            .ok_or_else(|| bad(format!("result is not a list: {}", wire::short(&v))))?;
        if list.len() > limit {
            return Err(bad(format!(
                "{} transactions for a limit of {limit}",
                list.len()
            )));
        }
        let mut out = Vec::with_capacity(list.len());
        for item in list {
            out.push(wire::decode_transaction(item, address).map_err(bad)?);
        }
        // Newest first, strictly.
        if out.windows(2).any(|w| w[0].0.id.lt <= w[1].0.id.lt) {
            return Err(bad("transactions are not newest first".into()));
        }
        Ok(out)
    }

    /// Every transaction of `address` newer than `after`, oldest first.
    async fn read_back(
        &self,
        address: &StdAddr,
        after: Option<TxId>,
    ) -> ChainResult<Vec<Transaction>> {
        let to_lt = after.map_or(0, |t| t.lt);
        let mut newest_first: Vec<Transaction> = Vec::new();
        let mut start: Option<TxId> = None;
        loop {
            let page = self.tx_page(address, self.page, start, to_lt).await?;
            let full = page.len() == self.page;
            let mut oldest = None;
            for (tx, _) in page {
                oldest = Some(tx.id);
                // The page starts with `start` itself (toncenter's `lt`/`hash`
                // are inclusive); anything not older than it was seen already.
                if start.is_some_and(|s| tx.id.lt >= s.lt) || tx.id.lt <= to_lt {
                    continue;
                }
                newest_first.push(tx);
            }
            if newest_first.len() > MAX_BACKLOG {
                return Err(ChainError::Transport(format!(
                    "toncenter getTransactions: more than {MAX_BACKLOG} transactions of {} are newer than the cursor",
                    to_raw(address)
                )));
            }
            match oldest {
                Some(o) if full && o.lt > to_lt && start != Some(o) => start = Some(o),
                _ => break,
            }
        }
        newest_first.reverse();
        Ok(newest_first)
    }
}

impl ChainBackend for TonCenter {
    fn account_state<'a>(
        &'a self,
        address: &'a StdAddr,
    ) -> BoxFuture<'a, ChainResult<AccountState>> {
        Box::pin(async move { self.account(&to_raw(address)).await })
    }

    fn run_get_method<'a>(
        &'a self,
        address: &'a StdAddr,
        method: &'a str,
        args: Vec<StackValue>,
    ) -> BoxFuture<'a, ChainResult<GetMethodResult>> {
        Box::pin(async move {
            let stack = wire::encode_args(&args).map_err(ChainError::Unsupported)?;
            let body = json!({"address": to_raw(address), "method": method, "stack": stack});
            let v = self
                .call("runGetMethod", Request::Post(body), false)
                .await
                .map_err(|e| e.into_transport("runGetMethod"))?;
            let bad =
                |e: String| ChainError::Transport(format!("toncenter runGetMethod {method}: {e}"));
            let exit_code =
                wire::i64_value(wire::field(&v, "exit_code").map_err(bad)?, "exit_code")
                    .map_err(bad)?;
            let exit_code = i32::try_from(exit_code)
                .map_err(|_| bad(format!("exit code {exit_code} out of range")))?;
            if exit_code != 0 && exit_code != 1 {
                return Err(ChainError::GetMethodFailed {
                    method: method.to_string(),
                    exit_code,
                });
            }
            let stack = wire::decode_stack(v.get("stack").unwrap_or(&Value::Null)).map_err(bad)?;
            Ok(GetMethodResult { exit_code, stack })
        })
    }

    fn send_external<'a>(&'a self, boc: Vec<u8>) -> BoxFuture<'a, ChainResult<[u8; 32]>> {
        Box::pin(async move {
            // Checked here as the chain would: a malformed BOC is not sent.
            let hash = crate::cells::from_boc(&boc)?.repr_hash().0;
            let body = json!({"boc": wire::b64(&boc)});
            match self
                .call("sendBocReturnHash", Request::Post(body), true)
                .await
            {
                Ok(_) => Ok(hash),
                Err(e) => {
                    let refused = is_refusal(&e.message)
                        || e.status.is_some_and(|s| {
                            (400..500).contains(&s) && !retryable_status(i64::from(s))
                        });
                    let text = e.describe("sendBocReturnHash");
                    Err(if refused {
                        ChainError::Rejected(text)
                    } else {
                        ChainError::Transport(text)
                    })
                }
            }
        })
    }

    fn transactions<'a>(
        &'a self,
        address: &'a StdAddr,
        after: Option<TxId>,
        limit: usize,
    ) -> BoxFuture<'a, ChainResult<TxPage>> {
        Box::pin(async move {
            // Continue a backlog read by an earlier call, if this call follows it.
            let cached = {
                let mut b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
                match b.take() {
                    Some(bl)
                        if &bl.address == address && bl.after == after && !bl.txs.is_empty() =>
                    {
                        Some(bl.txs)
                    }
                    _ => None,
                }
            };
            let mut txs: VecDeque<Transaction> = match cached {
                Some(t) => t,
                None if limit == 0 => {
                    // Only whether anything is newer.
                    let to_lt = after.map_or(0, |t| t.lt);
                    let page = self.tx_page(address, 1, None, to_lt).await?;
                    return Ok(TxPage {
                        transactions: Vec::new(),
                        cursor: after,
                        more: !page.is_empty(),
                    });
                }
                None => self.read_back(address, after).await?.into(),
            };
            let take = limit.min(txs.len());
            let transactions: Vec<Transaction> = txs.drain(..take).collect();
            let cursor = transactions.last().map(|t| t.id).or(after);
            let more = !txs.is_empty();
            if more {
                *self.backlog.lock().unwrap_or_else(|p| p.into_inner()) = Some(Backlog {
                    address: address.clone(),
                    after: cursor,
                    txs,
                });
            }
            Ok(TxPage {
                transactions,
                cursor,
                more,
            })
        })
    }

    fn now(&self) -> BoxFuture<'_, ChainResult<u32>> {
        Box::pin(async move {
            let st = self.account(CLOCK_ACCOUNT).await?;
            if st.sync_utime == 0 {
                return Err(ChainError::Transport(
                    "toncenter getAddressInformation: no sync_utime in the answer".into(),
                ));
            }
            Ok(st.sync_utime)
        })
    }

    fn transaction_cell<'a>(
        &'a self,
        address: &'a StdAddr,
        id: TxId,
    ) -> BoxFuture<'a, ChainResult<Option<Cell>>> {
        Box::pin(async move {
            let page = self
                .tx_page(address, 1, Some(id), id.lt.saturating_sub(1))
                .await?;
            Ok(page
                .into_iter()
                .find(|(t, _)| t.id == id)
                .and_then(|(_, c)| c))
        })
    }
}

// `TonCenter` is shared between the roles' tasks (`Arc<dyn ChainBackend>`).
const _: fn() = || {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<TonCenter>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(TonCenter::new(MAINNET_URL, None).is_ok());
        assert!(TonCenter::new("http://127.0.0.1:8081/api/v2/", None).is_ok());
        for bad in [
            "",
            "toncenter.com",
            "ftp://x/api",
            "http:///x",
            "https://x/?a=1",
        ] {
            assert!(TonCenter::new(bad, None).is_err(), "{bad}");
        }
        assert!(TonCenter::new(MAINNET_URL, Some("bad\nkey".into())).is_err());
    }

    #[test]
    fn answers_are_classified() {
        let ok = TonCenter::classify(200, br#"{"ok":true,"result":{"a":1}}"#, false).unwrap();
        assert_eq!(ok, json!({"a": 1}));
        let e = TonCenter::classify(
            429,
            br#"{"ok":false,"error":"Ratelimit exceed","code":429}"#,
            false,
        )
        .unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.code, Some(429));
        let e = TonCenter::classify(502, b"<html>Bad gateway</html>", false).unwrap_err();
        assert!(e.retryable);
        assert!(e.message.contains("Bad gateway"));
        let e = TonCenter::classify(
            416,
            br#"{"ok":false,"error":"Incorrect address","code":416}"#,
            false,
        )
        .unwrap_err();
        assert!(!e.retryable);
        let refusal = br#"{"ok":false,"error":"LITE_SERVER_UNKNOWN: cannot apply external message to current state : External message was not accepted","code":500}"#;
        assert!(
            TonCenter::classify(500, refusal, false)
                .unwrap_err()
                .retryable
        );
        assert!(
            !TonCenter::classify(500, refusal, true)
                .unwrap_err()
                .retryable
        );
        // 200 with ok:false, or without ok at all, is an error.
        assert!(TonCenter::classify(200, br#"{"ok":false,"error":"x"}"#, false).is_err());
        assert!(TonCenter::classify(200, br#"[1,2]"#, false).is_err());
        assert!(TonCenter::classify(200, b"\xff\xfe", false).is_err());
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(encode_query_value("0:ab"), "0%3Aab");
        assert_eq!(encode_query_value("a+b/c="), "a%2Bb%2Fc%3D");
    }
}
