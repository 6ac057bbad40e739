//! OpenAI request parsing/validation and response (JSON and SSE) formatting, shaped
//! like vLLM's OpenAI-compatible server.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::generate::GenOutcome;

/// Which OpenAI endpoint a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Completions,
}

/// A prompt of `/v1/completions`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// A validated request.
#[derive(Debug, Clone)]
pub(crate) struct ParsedRequest {
    pub(crate) endpoint: Endpoint,
    pub(crate) model: Option<String>,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) messages: Vec<Value>,
    pub(crate) chat_template_kwargs: Map<String, Value>,
    pub(crate) prompts: Vec<PromptInput>,
    pub(crate) echo: bool,
    pub(crate) n: usize,
    pub(crate) max_tokens: Option<usize>,
    pub(crate) stop: Vec<String>,
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) top_k: Option<i64>,
    pub(crate) seed: Option<u64>,
    pub(crate) presence_penalty: f32,
    pub(crate) frequency_penalty: f32,
    pub(crate) ignore_eos: bool,
    pub(crate) skip_special_tokens: bool,
    /// The tools the model may call (`tool_choice` `auto`), given to the chat template.
    pub(crate) tools: Option<Vec<Value>>,
    /// Whether several calls may come in one answer (`parallel_tool_calls`, default true).
    pub(crate) parallel_tool_calls: bool,
}

/// The tools a request offers and whether calls may come in parallel. `tool_choice`
/// `auto` (the default) offers them, `none` does not; forcing a call (`required`, a named
/// function) and the legacy `functions` are refused: the engine cannot honour them.
fn tools(
    endpoint: Endpoint,
    obj: &Map<String, Value>,
) -> Result<(Option<Vec<Value>>, bool), ApiError> {
    if matches!(obj.get("functions"), Some(Value::Array(l)) if !l.is_empty()) {
        return Err(ApiError::bad_param(
            "functions",
            "`functions` is the legacy form; send `tools`",
        ));
    }
    let tools = match obj.get("tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if list.is_empty() => None,
        Some(Value::Array(list)) => Some(list.clone()),
        Some(_) => return Err(ApiError::bad_param("tools", "`tools` must be an array")),
    };
    let tools = match obj.get("tool_choice") {
        None | Some(Value::Null) => tools,
        Some(Value::String(c)) if c == "auto" => tools,
        Some(Value::String(c)) if c == "none" => None,
        Some(_) if tools.is_none() => None,
        Some(_) => {
            return Err(ApiError::bad_param(
                "tool_choice",
                "the embedded engine cannot force a tool call; use \"auto\" or \"none\"",
            ))
        }
    };
    if tools.is_some() && endpoint != Endpoint::Chat {
        return Err(ApiError::bad_param(
            "tools",
            "`tools` are for /v1/chat/completions",
        ));
    }
    Ok((tools, boolean(obj, "parallel_tool_calls")?.unwrap_or(true)))
}

/// Largest `n` accepted (choices are generated one after another).
pub(crate) const MAX_N: usize = 16;

fn num(obj: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !(lo..=hi).contains(&x) {
                return Err(ApiError::bad_param(
                    key,
                    format!("`{key}` must be between {lo} and {hi}, got {x}"),
                ));
            }
            Ok(Some(x as f32))
        }
        Some(_) => Err(ApiError::bad_param(
            key,
            format!("`{key}` must be a number"),
        )),
    }
}

fn int(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_param(key, format!("`{key}` must be an integer"))),
        Some(_) => Err(ApiError::bad_param(
            key,
            format!("`{key}` must be an integer"),
        )),
    }
}

fn uint(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match int(obj, key)? {
        None => Ok(None),
        Some(x) if x >= 0 => Ok(Some(x as u64)),
        Some(_) => Err(ApiError::bad_param(
            key,
            format!("`{key}` must be non-negative"),
        )),
    }
}

fn boolean(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_param(
            key,
            format!("`{key}` must be a boolean"),
        )),
    }
}

fn content_text(content: &Value) -> Result<Value, ApiError> {
    match content {
        Value::Null | Value::String(_) => Ok(content.clone()),
        // Content parts: concatenate the text parts (vLLM's "string" content format).
        Value::Array(parts) => {
            let mut s = String::new();
            for p in parts {
                match (p.get("type").and_then(|t| t.as_str()), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => {
                        if !s.is_empty() {
                            s.push('\n');
                        }
                        s.push_str(t);
                    }
                    _ => {
                        return Err(ApiError::bad_param(
                            "messages",
                            "only text content parts are supported",
                        ))
                    }
                }
            }
            Ok(Value::String(s))
        }
        _ => Err(ApiError::bad_param(
            "messages",
            "message `content` must be a string, an array of parts or null",
        )),
    }
}

/// A JSON request body as an object, with its optional `model`.
pub(crate) fn object_and_model(
    body: &[u8],
) -> Result<(Map<String, Value>, Option<String>), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    };
    let model = match obj.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_param("model", "`model` must be a string")),
    };
    Ok((obj, model))
}

/// Parses and validates a request body.
pub(crate) fn parse_request(endpoint: Endpoint, body: &[u8]) -> Result<ParsedRequest, ApiError> {
    let (obj, model) = object_and_model(body)?;
    let (tools, parallel_tool_calls) = tools(endpoint, &obj)?;
    let stream_options = match obj.get("stream_options") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(_) => {
            return Err(ApiError::bad_param(
                "stream_options",
                "`stream_options` must be an object",
            ))
        }
    };
    let stream = boolean(&obj, "stream")?.unwrap_or(false);
    let include_usage = match stream_options {
        Some(o) => boolean(o, "include_usage")?.unwrap_or(false),
        None => false,
    };
    let n = uint(&obj, "n")?.unwrap_or(1) as usize;
    if n == 0 || n > MAX_N {
        return Err(ApiError::bad_param(
            "n",
            format!("`n` must be between 1 and {MAX_N}"),
        ));
    }
    let max_tokens = match endpoint {
        Endpoint::Chat => uint(&obj, "max_completion_tokens")?.or(uint(&obj, "max_tokens")?),
        Endpoint::Completions => uint(&obj, "max_tokens")?,
    }
    .map(|x| x.min(usize::MAX as u64) as usize);
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_param("stop", "`stop` must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_param(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    };
    let top_p = num(&obj, "top_p", 0.0, 1.0)?;
    if top_p == Some(0.0) {
        return Err(ApiError::bad_param("top_p", "`top_p` must be in (0, 1]"));
    }
    let seed = int(&obj, "seed")?.map(|s| s as u64);
    let mut req = ParsedRequest {
        endpoint,
        model,
        stream,
        include_usage: stream && include_usage,
        messages: Vec::new(),
        chat_template_kwargs: Map::new(),
        prompts: Vec::new(),
        echo: false,
        n,
        max_tokens,
        stop,
        temperature: num(&obj, "temperature", 0.0, 2.0)?,
        top_p,
        top_k: int(&obj, "top_k")?,
        seed,
        presence_penalty: num(&obj, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        frequency_penalty: num(&obj, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        ignore_eos: boolean(&obj, "ignore_eos")?.unwrap_or(false),
        skip_special_tokens: boolean(&obj, "skip_special_tokens")?.unwrap_or(true),
        tools,
        parallel_tool_calls,
    };
    match endpoint {
        Endpoint::Chat => {
            let Some(Value::Array(msgs)) = obj.get("messages") else {
                return Err(ApiError::bad_param(
                    "messages",
                    "`messages` is required and must be an array",
                ));
            };
            if msgs.is_empty() {
                return Err(ApiError::bad_param(
                    "messages",
                    "`messages` must not be empty",
                ));
            }
            for m in msgs {
                let Value::Object(mo) = m else {
                    return Err(ApiError::bad_param(
                        "messages",
                        "each message must be an object",
                    ));
                };
                let Some(Value::String(_)) = mo.get("role") else {
                    return Err(ApiError::bad_param(
                        "messages",
                        "each message needs a string `role`",
                    ));
                };
                let mut mo = mo.clone();
                if let Some(c) = mo.get("content") {
                    let c = content_text(c)?;
                    mo.insert("content".into(), c);
                }
                req.messages.push(Value::Object(mo));
            }
            match obj.get("chat_template_kwargs") {
                None | Some(Value::Null) => {}
                Some(Value::Object(o)) => req.chat_template_kwargs = o.clone(),
                Some(_) => {
                    return Err(ApiError::bad_param(
                        "chat_template_kwargs",
                        "`chat_template_kwargs` must be an object",
                    ))
                }
            }
        }
        Endpoint::Completions => {
            req.echo = boolean(&obj, "echo")?.unwrap_or(false);
            let bad = || {
                ApiError::bad_param(
                    "prompt",
                    "`prompt` must be a string, an array of strings, an array of token ids or an array of token-id arrays",
                )
            };
            let tokens = |a: &Vec<Value>| -> Result<Vec<u32>, ApiError> {
                a.iter()
                    .map(|t| {
                        t.as_u64()
                            .and_then(|x| u32::try_from(x).ok())
                            .ok_or_else(bad)
                    })
                    .collect()
            };
            req.prompts = match obj.get("prompt") {
                Some(Value::String(s)) => vec![PromptInput::Text(s.clone())],
                Some(Value::Array(a)) if !a.is_empty() && a.iter().all(|x| x.is_string()) => a
                    .iter()
                    .map(|x| PromptInput::Text(x.as_str().unwrap_or_default().to_string()))
                    .collect(),
                Some(Value::Array(a)) if !a.is_empty() && a.iter().all(|x| x.is_number()) => {
                    vec![PromptInput::Tokens(tokens(a)?)]
                }
                Some(Value::Array(a)) if !a.is_empty() && a.iter().all(|x| x.is_array()) => a
                    .iter()
                    .map(|x| match x {
                        Value::Array(t) => tokens(t).map(PromptInput::Tokens),
                        _ => Err(bad()),
                    })
                    .collect::<Result<_, _>>()?,
                None => {
                    return Err(ApiError::bad_param("prompt", "`prompt` is required"));
                }
                _ => return Err(bad()),
            };
            if req.prompts.len() * n > MAX_N * 4 {
                return Err(ApiError::bad_param(
                    "prompt",
                    "too many prompts in one request",
                ));
            }
        }
    }
    Ok(req)
}

/// Token usage of a request, in the OpenAI shape plus the detail fields COCOON meters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (each prompt counted once, whatever `n`).
    pub prompt_tokens: usize,
    /// Generated tokens over all choices (EOS included, as vLLM counts).
    pub completion_tokens: usize,
    /// Generated tokens inside `<think>…</think>`.
    pub reasoning_tokens: usize,
    /// Prompt tokens whose KV state came from the prefix cache.
    pub cached_tokens: usize,
}

impl Usage {
    /// The `usage` JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens": self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        })
    }
}

/// Builds response bodies and SSE chunks with a fixed id/created/model.
pub(crate) struct ResponseFormatter {
    pub(crate) endpoint: Endpoint,
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
}

/// One finished choice.
pub(crate) struct ChoiceResult {
    pub(crate) index: usize,
    pub(crate) text: String,
    pub(crate) outcome: GenOutcome,
    /// The calls read out of the text (chat with tools).
    pub(crate) tool_calls: Vec<crate::tools::ToolCall>,
}

/// `finish_reason` of a choice: `tool_calls` when it called a tool and stopped on its own.
fn finish_reason(o: &GenOutcome, called: bool) -> &'static str {
    match o.finish_reason.as_str() {
        "stop" if called => "tool_calls",
        other => other,
    }
}

fn stop_reason(o: &GenOutcome) -> Value {
    match (&o.stop_string, o.stop_token) {
        (Some(s), _) => Value::String(s.clone()),
        _ => Value::Null,
    }
}

/// Frames one SSE event.
pub(crate) fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// The final SSE line.
pub(crate) fn sse_done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

impl ResponseFormatter {
    pub(crate) fn new(endpoint: Endpoint, model: String) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl-",
            Endpoint::Completions => "cmpl-",
        };
        let id = format!("{prefix}{:032x}", rand::random::<u128>());
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            endpoint,
            id,
            created,
            model,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// Non-streaming response body.
    pub(crate) fn full(&self, mut choices: Vec<ChoiceResult>, usage: &Usage) -> Value {
        choices.sort_by_key(|c| c.index);
        let choices: Vec<Value> = choices
            .into_iter()
            .map(|c| match self.endpoint {
                Endpoint::Chat => {
                    let called = !c.tool_calls.is_empty();
                    let calls: Vec<Value> = c.tool_calls.iter().map(|t| t.to_json(None)).collect();
                    let content = if called && c.text.is_empty() {
                        Value::Null
                    } else {
                        Value::String(c.text)
                    };
                    json!({
                        "index": c.index,
                        "message": {"role": "assistant", "content": content, "tool_calls": calls},
                        "logprobs": null,
                        "finish_reason": finish_reason(&c.outcome, called),
                        "stop_reason": stop_reason(&c.outcome),
                    })
                }
                Endpoint::Completions => json!({
                    "index": c.index,
                    "text": c.text,
                    "logprobs": null,
                    "finish_reason": c.outcome.finish_reason.as_str(),
                    "stop_reason": stop_reason(&c.outcome),
                }),
            })
            .collect();
        let mut v = self.envelope(false, Value::Array(choices));
        v["usage"] = usage.to_json();
        v
    }

    /// First chunk of a chat choice (announces the role).
    pub(crate) fn chunk_start(&self, index: usize) -> Option<Value> {
        match self.endpoint {
            Endpoint::Chat => Some(self.envelope(
                true,
                json!([{"index": index, "delta": {"role": "assistant", "content": ""},
                        "logprobs": null, "finish_reason": null}]),
            )),
            Endpoint::Completions => None,
        }
    }

    /// A text delta chunk.
    pub(crate) fn chunk_text(&self, index: usize, text: &str) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({"index": index, "delta": {"content": text},
                                     "logprobs": null, "finish_reason": null}),
            Endpoint::Completions => json!({"index": index, "text": text,
                                            "logprobs": null, "finish_reason": null}),
        };
        self.envelope(true, json!([choice]))
    }

    /// A chunk carrying one complete tool call (call number `call` of choice `index`).
    pub(crate) fn chunk_tool_call(
        &self,
        index: usize,
        call: usize,
        tool_call: &crate::tools::ToolCall,
    ) -> Value {
        let choice = json!({"index": index, "delta": {"tool_calls": [tool_call.to_json(Some(call))]},
                            "logprobs": null, "finish_reason": null});
        self.envelope(true, json!([choice]))
    }

    /// The chunk carrying a choice's `finish_reason` (`tool_calls` if it `called` one).
    pub(crate) fn chunk_finish(&self, index: usize, o: &GenOutcome, called: bool) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({"index": index, "delta": {}, "logprobs": null,
                                     "finish_reason": finish_reason(o, called),
                                     "stop_reason": stop_reason(o)}),
            Endpoint::Completions => json!({"index": index, "text": "", "logprobs": null,
                                            "finish_reason": o.finish_reason.as_str(),
                                            "stop_reason": stop_reason(o)}),
        };
        self.envelope(true, json!([choice]))
    }

    /// The final usage chunk (`choices: []`) sent when `stream_options.include_usage`.
    pub(crate) fn chunk_usage(&self, usage: &Usage) -> Value {
        let mut v = self.envelope(true, json!([]));
        v["usage"] = usage.to_json();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_request(Endpoint::Chat, b"{").unwrap_err().status, 400);
        let e = parse_request(Endpoint::Chat, br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = parse_request(
            Endpoint::Chat,
            br#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(parse_request(Endpoint::Completions, br#"{"model":"m"}"#).is_err());
        assert!(parse_request(Endpoint::Completions, br#"{"prompt":[1,-2]}"#).is_err());
    }

    #[test]
    fn parses_fields() {
        let r = parse_request(
            Endpoint::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                 "stream":true,"stream_options":{"include_usage":true},"stop":"x","max_tokens":5,
                 "chat_template_kwargs":{"enable_thinking":false}}"#,
        )
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(r.stop, vec!["x"]);
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.messages[0]["content"], "hi");
        assert_eq!(r.chat_template_kwargs["enable_thinking"], false);
        let r = parse_request(Endpoint::Completions, br#"{"prompt":[[1,2],[3]]}"#).unwrap();
        assert_eq!(r.prompts.len(), 2);
    }
}
