//! Validation of inference requests at the worker (cocoon-protocol.md §3.2).
//!
//! Unlike COCOON's worker, we do not whitelist fields: `tools`, `tool_choice`, `seed`,
//! `logprobs`, `response_format` and vendor extensions pass through. The body is handled
//! as raw JSON (key order kept), never through typed structs that would drop fields.
//! The only change made is to ask streams for a final usage chunk, so they can be metered.
//!
//! Audio requests are `multipart/form-data` forms (cocoon-protocol-9060ce5.md §3.2.3):
//! checked by [`validate_form`] and written back as COCOON writes forms.

use serde_json::{Map, Value};

use crate::protocol::multipart::Form;
use crate::worker::audio::AudioFormat;

pub use crate::protocol::endpoint::Endpoint;

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
    /// The `Content-Type` to send the body with, when it is not the request's own (a
    /// re-written form's boundary line).
    pub content_type: Option<String>,
    /// An audio answer the worker renders itself from the model server's `verbose_json`
    /// (`text`, `srt`, `vtt`), so that it is metered like any other.
    pub render: Option<AudioFormat>,
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
    /// A form field has a value the worker cannot take.
    #[error("field '{field}' {problem}")]
    BadFormField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The body is not a usable `multipart/form-data` form.
    #[error("{0}")]
    Form(String),
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
    let endpoint = Endpoint::of_url(url).map_err(|e| RequestError::UnsupportedEndpoint(e.0))?;
    if endpoint.takes_form() {
        return Err(RequestError::Form(format!(
            "{} takes a multipart/form-data form",
            endpoint.path()
        )));
    }
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
        Endpoint::AudioTranscriptions | Endpoint::AudioTranslations => {}
        Endpoint::Embeddings => return embeddings(endpoint, object),
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
        content_type: None,
        render: None,
    })
}

/// An embeddings request: `input` is text, token ids, or a non-empty array of either;
/// `encoding_format` is `float` or `base64`; `dimensions` a positive integer. Nothing is
/// generated, so no completion tokens can be billed.
fn embeddings(
    endpoint: Endpoint,
    object: Map<String, Value>,
) -> Result<ValidatedRequest, RequestError> {
    let input_ok = match object.get("input") {
        Some(Value::String(_)) => true,
        Some(Value::Array(items)) => {
            !items.is_empty()
                && items.iter().all(|item| match item {
                    Value::String(_) => true,
                    Value::Number(n) => n.is_u64(),
                    Value::Array(ids) => !ids.is_empty() && ids.iter().all(Value::is_u64),
                    _ => false,
                })
        }
        _ => false,
    };
    if !input_ok {
        return Err(RequestError::BadField {
            field: "input",
            problem: "must be text, token ids, or a non-empty array of either",
        });
    }
    match object.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "float" || f == "base64" => {}
        Some(_) => {
            return Err(RequestError::BadField {
                field: "encoding_format",
                problem: "must be \"float\" or \"base64\"",
            })
        }
    }
    match object.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64().is_some_and(|d| d > 0) => {}
        Some(_) => {
            return Err(RequestError::BadField {
                field: "dimensions",
                problem: "must be a positive integer",
            })
        }
    }
    if object.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(RequestError::BadField {
            field: "stream",
            problem: "is not available for embeddings",
        });
    }
    let body = serde_json::to_vec(&Value::Object(object))
        .map_err(|e| RequestError::NotAnObject(e.to_string()))?;
    Ok(ValidatedRequest {
        endpoint,
        body,
        stream: false,
        max_completion: Some(0),
        content_type: None,
        render: None,
    })
}

/// Checks an audio form (`endpoint` is one that [takes a form](Endpoint::takes_form)) sent
/// with `content_type`, for `served_model`, and writes it back for the model server.
///
/// `model` must name the served model and `file` must be there; `response_format` is one
/// of `json` (the default), `verbose_json`, `text`, `srt` and `vtt` (COCOON's worker takes
/// `json` only); the model server is asked for `verbose_json` where the worker renders
/// `text`, `srt` or `vtt` itself, so that every answer is metered from its usage.
pub async fn validate_form(
    endpoint: Endpoint,
    content_type: &str,
    body: bytes::Bytes,
    served_model: &str,
) -> Result<ValidatedRequest, RequestError> {
    let mut form = Form::parse(content_type, body)
        .await
        .map_err(|e| RequestError::Form(e.to_string()))?;
    let text = |form: &Form, field: &'static str| -> Result<Option<String>, RequestError> {
        match form.text(field) {
            None => Ok(None),
            Some(Ok(t)) => Ok(Some(t.trim().to_owned())),
            Some(Err(_)) => Err(RequestError::BadFormField {
                field,
                problem: "is not UTF-8 text".into(),
            }),
        }
    };
    let model = text(&form, "model")?.ok_or(RequestError::BadField {
        field: "model",
        problem: "is required",
    })?;
    if model != served_model {
        return Err(RequestError::ModelMismatch {
            requested: model,
            served: served_model.to_owned(),
        });
    }
    if form.get("file").is_none_or(|f| f.value.is_empty()) {
        return Err(RequestError::BadField {
            field: "file",
            problem: "is required (the audio to transcribe)",
        });
    }
    let format = text(&form, "response_format")?.unwrap_or_else(|| "json".into());
    let render = match format.as_str() {
        "json" | "verbose_json" => None,
        "text" => Some(AudioFormat::Text),
        "srt" => Some(AudioFormat::Srt),
        "vtt" => Some(AudioFormat::Vtt),
        other => {
            return Err(RequestError::BadFormField {
                field: "response_format",
                problem: format!("is {other:?}; one of json, verbose_json, text, srt, vtt"),
            })
        }
    };
    if render.is_some() {
        form.set_text("response_format", "verbose_json");
    }
    let stream = match text(&form, "stream")?.as_deref() {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(RequestError::BadFormField {
                field: "stream",
                problem: format!("is {other:?}; true or false"),
            })
        }
    };
    if stream && render.is_some() {
        return Err(RequestError::BadFormField {
            field: "stream",
            problem: format!("cannot stream response_format {format:?}; use json"),
        });
    }
    let mut max_completion = None;
    for field in ["max_completion_tokens", "max_tokens"] {
        if let Some(value) = text(&form, field)? {
            let n = value
                .parse::<u64>()
                .map_err(|_| RequestError::BadFormField {
                    field,
                    problem: format!("is {value:?}; a non-negative integer"),
                })?;
            max_completion = Some(max_completion.map_or(n, |m: u64| m.min(n)));
        }
    }
    Ok(ValidatedRequest {
        endpoint,
        body: form.to_bytes(),
        stream,
        max_completion,
        content_type: Some(form.content_type()),
        render,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("json")
    }

    async fn audio(fields: &[(&str, &str)]) -> Result<ValidatedRequest, RequestError> {
        let mut form = Form::new("b");
        for (name, value) in fields {
            form.set_text(name, value);
        }
        validate_form(
            Endpoint::AudioTranscriptions,
            &form.content_type(),
            bytes::Bytes::from(form.to_bytes()),
            "whisper",
        )
        .await
    }

    #[tokio::test]
    async fn audio_forms_are_checked_and_rewritten_for_rendering() {
        let ok = audio(&[("model", "whisper"), ("file", "RIFF"), ("max_tokens", "50")])
            .await
            .expect("valid");
        assert_eq!(ok.render, None);
        assert_eq!(ok.max_completion, Some(50));
        assert_eq!(
            ok.content_type.as_deref(),
            Some("multipart/form-data; boundary=b")
        );
        let srt = audio(&[
            ("model", "whisper"),
            ("file", "RIFF"),
            ("response_format", "srt"),
        ])
        .await
        .expect("valid");
        assert_eq!(srt.render, Some(AudioFormat::Srt));
        assert!(String::from_utf8_lossy(&srt.body).contains("verbose_json"));

        let err = |r: Result<ValidatedRequest, RequestError>| r.expect_err("refused").to_string();
        assert!(
            err(audio(&[("model", "other"), ("file", "x")]).await).contains("model name mismatch")
        );
        assert!(err(audio(&[("model", "whisper")]).await).contains("'file' is required"));
        assert!(err(audio(&[
            ("model", "whisper"),
            ("file", "x"),
            ("response_format", "srt"),
            ("stream", "true")
        ])
        .await)
        .contains("cannot stream"));
        assert!(
            err(audio(&[("model", "whisper"), ("file", "x"), ("max_tokens", "-1")]).await)
                .contains("non-negative integer")
        );
        assert!(err(validate_form(
            Endpoint::AudioTranscriptions,
            "application/json",
            bytes::Bytes::new(),
            "whisper"
        )
        .await)
        .contains("multipart/form-data"));
        assert!(
            validate_request("/v1/audio/transcriptions", b"{}", "whisper")
                .expect_err("a form endpoint")
                .to_string()
                .contains("takes a multipart/form-data form")
        );
    }

    #[test]
    fn embeddings_requests_are_checked() {
        let ok = |v: serde_json::Value| validate_request("/v1/embeddings", &body(v), "m");
        for input in [
            serde_json::json!("text"),
            serde_json::json!(["a", "b"]),
            serde_json::json!([1, 2, 3]),
            serde_json::json!([[1, 2], [3]]),
        ] {
            let req = ok(serde_json::json!({"model": "m", "input": input, "encoding_format": "base64", "dimensions": 64}))
                .expect("valid");
            assert_eq!(req.max_completion, Some(0), "nothing to complete");
        }
        for (bad, field) in [
            (serde_json::json!({"model": "m"}), "input"),
            (serde_json::json!({"model": "m", "input": []}), "input"),
            (
                serde_json::json!({"model": "m", "input": [{"x": 1}]}),
                "input",
            ),
            (
                serde_json::json!({"model": "m", "input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                serde_json::json!({"model": "m", "input": "x", "dimensions": 0}),
                "dimensions",
            ),
            (
                serde_json::json!({"model": "m", "input": "x", "stream": true}),
                "stream",
            ),
        ] {
            let err = ok(bad).expect_err("refused").to_string();
            assert!(err.contains(field), "{err}");
        }
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
        let err = validate_request("/v1/images/generations", b"{}", "m").expect_err("endpoint");
        assert_eq!(err.to_string(), "unsupported method /v1/images/generations");
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
