//! Validation of inference requests at the worker (cocoon-protocol.md §3.2).
//!
//! Unlike COCOON's worker, we do not whitelist fields: `tools`, `tool_choice`, `seed`,
//! `logprobs`, `response_format` and vendor extensions pass through. The body is handled
//! as raw JSON (key order kept), never through typed structs that would drop fields.
//! The only change made is to ask streams for a final usage chunk, so they can be metered.

use serde_json::{Map, Value};

/// The two inference endpoints a worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/completions`.
    Completions,
}

impl Endpoint {
    /// The URL path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
        }
    }
}

/// A request ready for the model server.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedRequest {
    /// Which endpoint it is for.
    pub endpoint: Endpoint,
    /// The JSON body to send.
    pub body: Vec<u8>,
    /// Whether the answer will be an SSE stream.
    pub stream: bool,
    /// The most completion tokens the request asked for over all its choices
    /// (`max_completion_tokens` or `max_tokens`, times `n` or `best_of`), if it set a limit.
    pub max_completion: Option<u64>,
}

/// Why a request was refused; these are protocol-level (code 621) refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not one of the two inference endpoints.
    #[error("unsupported method {0}")]
    UnsupportedEndpoint(String),
    /// The body is not a JSON object.
    #[error("request body is not a JSON object: {0}")]
    NotAnObject(String),
    /// A required field is missing or has the wrong type.
    #[error("field '{field}' {problem}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The request names another model than the one served.
    #[error("model name mismatch: requested '{requested}', this worker serves '{served}'")]
    ModelMismatch {
        /// The requested model.
        requested: String,
        /// The served base model name.
        served: String,
    },
}

/// Checks a request for `served_model` (a base name) and prepares its body.
pub fn validate_request(
    url: &str,
    body: &[u8],
    served_model: &str,
) -> Result<ValidatedRequest, RequestError> {
    // Origin form (`/v1/…`) as clients send it; an absolute URL loses its authority.
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let path = match after_scheme.find('/') {
        Some(i) => &after_scheme[i..],
        None => after_scheme,
    };
    let path = path.split('?').next().unwrap_or(path);
    let endpoint = match path {
        "/v1/chat/completions" => Endpoint::ChatCompletions,
        "/v1/completions" => Endpoint::Completions,
        other => return Err(RequestError::UnsupportedEndpoint(other.to_owned())),
    };
    let mut object: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(RequestError::NotAnObject("not an object".into())),
        Err(e) => return Err(RequestError::NotAnObject(e.to_string())),
    };
    let model = match object.get("model") {
        Some(Value::String(m)) => m.clone(),
        _ => {
            return Err(RequestError::BadField {
                field: "model",
                problem: "must be a string",
            })
        }
    };
    if model != served_model {
        return Err(RequestError::ModelMismatch {
            requested: model,
            served: served_model.to_owned(),
        });
    }
    match endpoint {
        Endpoint::ChatCompletions => {
            if !matches!(object.get("messages"), Some(Value::Array(_))) {
                return Err(RequestError::BadField {
                    field: "messages",
                    problem: "must be an array",
                });
            }
        }
        Endpoint::Completions => {
            if !matches!(
                object.get("prompt"),
                Some(Value::String(_) | Value::Array(_))
            ) {
                return Err(RequestError::BadField {
                    field: "prompt",
                    problem: "must be a string or an array",
                });
            }
        }
    }
    let stream = match object.get("stream") {
        None | Some(Value::Null) => object.contains_key("stream_options"),
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(RequestError::BadField {
                field: "stream",
                problem: "must be a boolean",
            })
        }
    };
    if stream {
        object.insert("stream".into(), Value::Bool(true));
        let options = object
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        match options {
            Value::Object(options) => {
                options.insert("include_usage".into(), Value::Bool(true));
            }
            _ => {
                return Err(RequestError::BadField {
                    field: "stream_options",
                    problem: "must be an object",
                })
            }
        }
    }
    let max_completion = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| object.get(*k).and_then(Value::as_u64))
        .map(|per_choice| {
            let choices = ["n", "best_of"]
                .iter()
                .filter_map(|k| object.get(*k).and_then(Value::as_u64))
                .fold(1, u64::max);
            per_choice.saturating_mul(choices)
        });
    let body = serde_json::to_vec(&Value::Object(object))
        .map_err(|e| RequestError::NotAnObject(e.to_string()))?;
    Ok(ValidatedRequest {
        endpoint,
        body,
        stream,
        max_completion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("json")
    }

    #[test]
    fn extra_fields_pass_through_in_order() {
        let input = br#"{"model":"Qwen/Qwen3-8B","messages":[],"tools":[{"type":"function"}],"seed":7,"top_k":20,"chat_template_kwargs":{"enable_thinking":false}}"#;
        let req = validate_request("/v1/chat/completions", input, "Qwen/Qwen3-8B").expect("valid");
        assert_eq!(req.body, input.to_vec());
        assert!(!req.stream);
    }

    #[test]
    fn streams_get_include_usage() {
        let req = validate_request(
            "http://worker/v1/completions",
            &body(serde_json::json!({"model":"m","prompt":"hi","stream":true})),
            "m",
        )
        .expect("valid");
        assert!(req.stream);
        assert_eq!(
            String::from_utf8(req.body).expect("utf8"),
            r#"{"model":"m","prompt":"hi","stream":true,"stream_options":{"include_usage":true}}"#
        );
        let req = validate_request(
            "/v1/completions",
            &body(serde_json::json!({"model":"m","prompt":"hi","stream_options":{"include_usage":false}})),
            "m",
        )
        .expect("valid");
        assert!(req.stream, "stream_options alone turns streaming on");
        assert!(String::from_utf8(req.body)
            .expect("utf8")
            .contains(r#""include_usage":true"#));
    }

    #[test]
    fn refusals_say_why() {
        let err = validate_request("/v1/embeddings", b"{}", "m").expect_err("endpoint");
        assert_eq!(err.to_string(), "unsupported method /v1/embeddings");
        let err = validate_request("/v1/completions", b"[1]", "m").expect_err("array");
        assert_eq!(
            err.to_string(),
            "request body is not a JSON object: not an object"
        );
        let err = validate_request(
            "/v1/chat/completions",
            &body(serde_json::json!({"model":"other","messages":[]})),
            "m",
        )
        .expect_err("model");
        assert_eq!(
            err.to_string(),
            "model name mismatch: requested 'other', this worker serves 'm'"
        );
        let err = validate_request(
            "/v1/chat/completions",
            &body(serde_json::json!({"model":"m"})),
            "m",
        )
        .expect_err("messages");
        assert_eq!(err.to_string(), "field 'messages' must be an array");
    }

    /// Every message role and content part COCOON 9060ce5's validator accepts
    /// (cocoon-protocol-9060ce5.md §3.2.1) passes, in OpenAI's own shapes, and so does
    /// what upstream wrongly refuses (§11.4): `content: null` beside `tool_calls`, the
    /// `image_url` key, base64 media, `stop` as a string, `service_tier` as a string, an
    /// object `voice`. The body reaches the model server unchanged.
    #[test]
    fn every_role_and_content_part_openai_defines_passes_unchanged() {
        let messages = serde_json::json!([
            {"role": "developer", "content": "be brief", "name": "dev"},
            {"role": "system", "content": [{"type": "text", "text": "system"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "a.pdf"}},
                {"type": "file", "file": {"file_id": "file-123"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}},
                {"id": "call_2", "type": "custom", "custom": {"name": "grep", "input": "x"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "found"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}], "refusal": "no"},
            {"role": "assistant", "audio": {"id": "audio_1"}},
            {"role": "assistant", "content": "calling", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "done"}
        ]);
        let input = body(serde_json::json!({
            "model": "m",
            "messages": messages,
            "stop": "\n\n",
            "service_tier": "auto",
            "audio": {"format": "wav", "voice": {"id": "voice_1"}},
            "modalities": ["text", "audio"],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
            "tool_choice": "auto",
            "parallel_tool_calls": true,
            "logit_bias": {"50256": -100},
            "metadata": {"k": "v"},
            "prediction": {"type": "content", "content": "x"},
            "response_format": {"type": "json_object"},
            "reasoning_effort": "low",
            "chat_template_kwargs": {"enable_thinking": false}
        }));
        let req = validate_request("/v1/chat/completions", &input, "m").expect("valid");
        assert_eq!(req.body, input, "passed through unchanged");
        // The same for each message alone (no part of the request hides another).
        for message in messages.as_array().expect("array") {
            let alone = body(serde_json::json!({"model": "m", "messages": [message]}));
            let req = validate_request("/v1/chat/completions", &alone, "m")
                .unwrap_or_else(|e| panic!("{message}: {e}"));
            assert_eq!(req.body, alone, "{message}");
        }
    }

    /// COCOON's own shapes, which OpenAI does not define (the `image` key, hex media),
    /// pass as well: our worker does not judge content parts, the model server does.
    #[test]
    fn cocoon_shaped_parts_pass_too() {
        let input = body(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image": {"url": "https://x/y.png"}},
                {"type": "input_audio", "input_audio": {"format": "wav", "data": "52494646"}}
            ]}]}),
        );
        let req = validate_request("/v1/chat/completions", &input, "m").expect("valid");
        assert_eq!(req.body, input);
    }

    /// `/v1/completions` with OpenAI's types where upstream expects others (§11.4):
    /// `logprobs` an integer, `stop` a string, `suffix` a string.
    #[test]
    fn completions_take_openai_types() {
        let input = body(serde_json::json!({
            "model": "m", "prompt": ["a", "b"], "logprobs": 2, "stop": "\n",
            "suffix": "end", "echo": false, "best_of": 2, "n": 1, "max_tokens": 5
        }));
        let req = validate_request("/v1/completions", &input, "m").expect("valid");
        assert_eq!(req.body, input);
        assert_eq!(req.max_completion, Some(10), "max_tokens × best_of");
    }
}
