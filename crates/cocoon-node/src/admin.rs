//! What a role's admin HTTP port does beyond showing stats: its access rule, and the
//! proxy's `POST /request/change_worker_model` (COCOON 9060ce5, cocoon-protocol-9060ce5.md
//! §2.10).
//!
//! Access: the admin port listens on 127.0.0.1 by default. With an access hash set
//! (`http_access_hash`, as COCOON's), `/jsonstats` and `/request/*` answer 403 unless the
//! query string carries `access_hash=<the same text>`; `/metrics` stays open for scrapers.
//! A `/request/*` action that carries an `Origin` header (what every browser adds to a
//! POST) is refused with 403: a web page on the operator's machine could otherwise send
//! the form to the local port. `curl` and scripts send no `Origin`.
//!
//! `POST /request/change_worker_model` takes `connection_id` (a worker connection's id, as
//! `/jsonstats` lists them under `workers`) and `new_model_name` (the full
//! `NAME@COMMIT:HASH` id), as `application/x-www-form-urlencoded` (COCOON's form) or as a
//! JSON object. It waits for the worker's answer (60 s at most) and answers JSON:
//!
//! | status | body | when |
//! |---|---|---|
//! | 200 | `{"result": "model changed", "connection_id", "new_model_name"}` | the worker changed its model (it reconnects under a new connection id) |
//! | 400 | `{"error": "connection_id is not an integer"}` (or names the missing field or the malformed body) | the request is malformed |
//! | 403 | `{"error": …}` | wrong access hash, or sent by a browser |
//! | 404 | `{"error": "connection N not found"}` | no worker connection has that id |
//! | 409 | `{"error": "connection N is not ready"}` | its handshake is not complete |
//! | 422 | `{"error": …, "worker_error_code": 602, "worker_error": "cannot change model: …"}` | the worker refused (no script, unknown model, script failed, …) |
//! | 502 | `{"error": …}` | the connection failed before the answer |
//! | 504 | `{"error": …}` | the worker did not answer within 60 s |
//!
//! Every worker connection has an id, and client connections have none, so COCOON's
//! "connection not from worker" cannot happen here: such an id is not found.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::proxy::{ChangeWorkerModelError, Proxy};

/// Who may use a role's admin port.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// COCOON's `http_access_hash`: when set, `/jsonstats` and `/request/*` need
    /// `?access_hash=` with this text.
    pub access_hash: Option<String>,
}

/// A `change_worker_model` request, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeWorkerModelRequest {
    /// The worker connection.
    pub connection_id: u64,
    /// The full model id to switch to.
    pub new_model_name: String,
}

/// Why an admin request is malformed (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminRequestError {
    /// `connection_id` is missing or not a non-negative integer (COCOON: "not an
    /// integer").
    #[error("connection_id is not an integer")]
    NotAnInteger,
    /// `new_model_name` is missing or empty.
    #[error("new_model_name is missing")]
    NoModel,
    /// The body is neither a form nor a JSON object.
    #[error("malformed body: {0}")]
    Body(&'static str),
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
fn percent_decode(text: &[u8]) -> Result<String, AdminRequestError> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let digits = text
                    .get(i + 1..i + 3)
                    .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
                    .ok_or(AdminRequestError::Body("a bad percent escape"))?;
                let hex = std::str::from_utf8(digits)
                    .map_err(|_| AdminRequestError::Body("a bad percent escape"))?;
                let value = u8::from_str_radix(hex, 16)
                    .map_err(|_| AdminRequestError::Body("a bad percent escape"))?;
                out.push(value);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| AdminRequestError::Body("not UTF-8"))
}

/// The fields of an `application/x-www-form-urlencoded` text (a body or a query
/// string), in order; a name without `=` has an empty value.
pub fn form_fields(text: &[u8]) -> Result<Vec<(String, String)>, AdminRequestError> {
    text.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            Ok((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

/// Parses a `change_worker_model` body: a JSON object when `content_type` says JSON,
/// else a form.
pub fn parse_change_request(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<ChangeWorkerModelRequest, AdminRequestError> {
    let is_json = content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    let (id, model) = if is_json {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
            return Err(AdminRequestError::Body("not a JSON object"));
        };
        let id = match object.get("connection_id") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let model = match object.get("new_model_name") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        (id, model)
    } else {
        let fields = form_fields(body)?;
        let field = |name: &str| {
            fields
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let id = field("connection_id").and_then(|s| s.trim().parse().ok());
        (id, field("new_model_name"))
    };
    let connection_id = id.ok_or(AdminRequestError::NotAnInteger)?;
    let new_model_name = model
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .ok_or(AdminRequestError::NoModel)?;
    Ok(ChangeWorkerModelRequest {
        connection_id,
        new_model_name,
    })
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// The access rule of the admin port (see the module documentation), as an axum
/// middleware over the protected routes.
pub async fn guard(
    State(access): State<Arc<AdminAccess>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(hash) = access.access_hash.as_deref().filter(|h| !h.is_empty()) {
        let given = request
            .uri()
            .query()
            .and_then(|q| form_fields(q.as_bytes()).ok())
            .and_then(|fields| {
                fields
                    .into_iter()
                    .find(|(name, _)| name == "access_hash")
                    .map(|(_, value)| value)
            });
        if given.as_deref() != Some(hash) {
            return answer(
                StatusCode::FORBIDDEN,
                json!({"error": "wrong or missing access_hash"}),
            );
        }
    }
    if request.uri().path().starts_with("/request/")
        && request.headers().contains_key(header::ORIGIN)
    {
        return answer(
            StatusCode::FORBIDDEN,
            json!({"error": "admin actions sent by a web browser (with an Origin header) are refused"}),
        );
    }
    next.run(request).await
}

/// `POST /request/change_worker_model` (see the module documentation).
pub async fn change_worker_model(
    State(proxy): State<Proxy>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let request = match parse_change_request(content_type, &body) {
        Ok(r) => r,
        Err(e) => return answer(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    };
    let result = proxy
        .change_worker_model(request.connection_id, &request.new_model_name)
        .await;
    match result {
        Ok(()) => answer(
            StatusCode::OK,
            json!({
                "result": "model changed",
                "connection_id": request.connection_id,
                "new_model_name": request.new_model_name,
            }),
        ),
        Err(e) => {
            let status = match &e {
                ChangeWorkerModelError::NotFound(_) => StatusCode::NOT_FOUND,
                ChangeWorkerModelError::NotReady(_) => StatusCode::CONFLICT,
                ChangeWorkerModelError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                ChangeWorkerModelError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                ChangeWorkerModelError::Connection(_) => StatusCode::BAD_GATEWAY,
            };
            let mut body = json!({"error": e.to_string()});
            if let ChangeWorkerModelError::Refused { code, message } = &e {
                body["worker_error_code"] = json!(code);
                body["worker_error"] = json!(message);
            }
            answer(status, body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn cocoon_forms_parse() {
        let r = parse_change_request(
            FORM,
            b"connection_id=17&new_model_name=Qwen%2FQwen3-8B%40abc%3Adef",
        )
        .expect("valid");
        assert_eq!(
            r,
            ChangeWorkerModelRequest {
                connection_id: 17,
                new_model_name: "Qwen/Qwen3-8B@abc:def".into()
            }
        );
        // No content type at all is read as a form too (what `curl -d` sends is a form).
        let r = parse_change_request(None, b"new_model_name=a+b&connection_id=+3+").expect("ok");
        assert_eq!((r.connection_id, r.new_model_name.as_str()), (3, "a b"));
    }

    #[test]
    fn json_bodies_parse() {
        for body in [
            br#"{"connection_id": 5, "new_model_name": "m@c:h"}"#.as_slice(),
            br#"{"connection_id": "5", "new_model_name": "m@c:h"}"#.as_slice(),
        ] {
            let r =
                parse_change_request(Some("application/json; charset=utf-8"), body).expect("valid");
            assert_eq!((r.connection_id, r.new_model_name.as_str()), (5, "m@c:h"));
        }
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        for body in [
            b"connection_id=abc&new_model_name=m".as_slice(),
            b"connection_id=-1&new_model_name=m",
            b"new_model_name=m",
            b"connection_id=1.5&new_model_name=m",
        ] {
            assert_eq!(
                parse_change_request(FORM, body),
                Err(AdminRequestError::NotAnInteger),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse_change_request(FORM, b"connection_id=1&new_model_name="),
            Err(AdminRequestError::NoModel)
        );
        assert_eq!(
            parse_change_request(FORM, b"connection_id=1&new_model_name=%zz"),
            Err(AdminRequestError::Body("a bad percent escape"))
        );
        assert_eq!(
            parse_change_request(FORM, b"connection_id=1&new_model_name=%ff"),
            Err(AdminRequestError::Body("not UTF-8"))
        );
        assert_eq!(
            parse_change_request(Some("application/json"), b"[1]"),
            Err(AdminRequestError::Body("not a JSON object"))
        );
        assert_eq!(
            parse_change_request(
                Some("application/json"),
                br#"{"connection_id": -2, "new_model_name": "m"}"#
            ),
            Err(AdminRequestError::NotAnInteger)
        );
    }

    #[test]
    fn form_fields_keep_order_and_empty_values() {
        assert_eq!(
            form_fields(b"a=1&&b&c=%41").expect("valid"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), "A".into())
            ]
        );
        assert!(form_fields(b"a=%4").is_err());
        assert!(form_fields(b"a=%+4").is_err());
    }
}
