//! The bot's side of the OpenAI API of a cocoon client gateway: models, streamed chat
//! answers with their cost, transcriptions.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::error::GatewayError;
use crate::store::Turn;

/// A model the gateway lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Its id.
    pub id: String,
    /// Whether its workers transcribe (`/v1/audio/transcriptions` among its endpoints; a
    /// gateway that does not say is taken to mean every endpoint).
    pub transcribes: bool,
    /// Whether its workers chat.
    pub chats: bool,
}

/// A finished answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The whole text.
    pub text: String,
    /// What it cost (`usage.total_cost`, nanoTON).
    pub cost: u64,
}

/// The client of one gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

async fn refusal(response: reqwest::Response) -> GatewayError {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let error = &body["error"];
    GatewayError::Refused {
        status,
        code: error["code"].as_str().unwrap_or("").to_owned(),
        message: error["message"].as_str().unwrap_or("no message").to_owned(),
    }
}

impl Gateway {
    /// A client of the gateway whose OpenAI base URL is `base` (`…/v1`), sending
    /// `api_key` as its bearer token when given.
    pub fn new(base: &str, timeout: Duration, api_key: Option<&str>) -> Gateway {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(v) = api_key
            .and_then(|k| reqwest::header::HeaderValue::from_str(&format!("Bearer {k}")).ok())
        {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        Gateway {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
            timeout,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, path: &str) -> impl Fn(reqwest::Error) -> GatewayError + '_ {
        let url = self.url(path);
        let timeout = self.timeout.as_secs();
        move |source| {
            if source.is_timeout() {
                GatewayError::Timeout(timeout)
            } else {
                GatewayError::Unreachable {
                    url: url.clone(),
                    source,
                }
            }
        }
    }

    /// Sends `request` (to `path`): the response when it succeeded, the gateway's
    /// refusal otherwise.
    async fn send(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GatewayError> {
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(self.unreachable(path))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(refusal(response).await)
        }
    }

    /// [`Gateway::send`], the answer read as JSON.
    async fn send_json(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, GatewayError> {
        self.send(path, request)
            .await?
            .json()
            .await
            .map_err(|e| GatewayError::Malformed(e.to_string()))
    }

    /// `GET /models`.
    pub async fn models(&self) -> Result<Vec<Model>, GatewayError> {
        let body = self
            .send_json("/models", self.http.get(self.url("/models")))
            .await?;
        let data = body["data"]
            .as_array()
            .ok_or_else(|| GatewayError::Malformed("/models has no data".into()))?;
        Ok(data
            .iter()
            .filter_map(|m| {
                let id = m["id"].as_str()?.to_owned();
                let serves = |path: &str| {
                    m["endpoints"]
                        .as_array()
                        .is_none_or(|e| e.iter().any(|p| p == path))
                };
                Some(Model {
                    id,
                    transcribes: serves("/v1/audio/transcriptions"),
                    chats: serves("/v1/chat/completions"),
                })
            })
            .collect())
    }

    /// A streamed chat answer: `on_text` gets the whole text so far after each delta.
    pub async fn chat(
        &self,
        model: &str,
        system: Option<&str>,
        history: &[Turn],
        question: &str,
        max_tokens: Option<u32>,
        mut on_text: impl FnMut(&str),
    ) -> Result<Answer, GatewayError> {
        let mut messages = Vec::with_capacity(history.len() + 2);
        if let Some(system) = system {
            messages.push(json!({"role": "system", "content": system}));
        }
        for turn in history {
            messages.push(json!({"role": turn.role, "content": turn.content}));
        }
        messages.push(json!({"role": "user", "content": question}));
        let mut body = json!({"model": model, "messages": messages, "stream": true,
                              "stream_options": {"include_usage": true}});
        if let Some(max) = max_tokens {
            body["max_tokens"] = json!(max);
        }
        let response = self
            .send(
                "/chat/completions",
                self.http.post(self.url("/chat/completions")).json(&body),
            )
            .await?;
        let mut answer = Answer::default();
        let mut buffer = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.unreachable("/chat/completions"))?;
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim().strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(answer);
                }
                let event: Value = serde_json::from_str(data)
                    .map_err(|e| GatewayError::Malformed(format!("a stream event: {e}")))?;
                if let Some(message) = event["error"]["message"].as_str() {
                    return Err(GatewayError::Refused {
                        status: 502,
                        code: event["error"]["code"].as_str().unwrap_or("").to_owned(),
                        message: message.to_owned(),
                    });
                }
                if let Some(delta) = event["choices"][0]["delta"]["content"].as_str() {
                    if !delta.is_empty() {
                        answer.text.push_str(delta);
                        on_text(&answer.text);
                    }
                }
                if let Some(cost) = event["usage"]["total_cost"].as_u64() {
                    answer.cost = cost;
                }
            }
        }
        if answer.text.is_empty() {
            Err(GatewayError::Malformed(
                "the stream ended without an answer".into(),
            ))
        } else {
            Ok(answer)
        }
    }

    /// `POST /audio/transcriptions` of `file` (named `filename`, of type `mime`).
    pub async fn transcribe(
        &self,
        model: &str,
        file: Vec<u8>,
        filename: &str,
        mime: &str,
    ) -> Result<Answer, GatewayError> {
        let part = reqwest::multipart::Part::bytes(file)
            .file_name(filename.to_owned())
            .mime_str(mime)
            .map_err(|e| GatewayError::Malformed(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .text("model", model.to_owned())
            .text("response_format", "json")
            .part("file", part);
        let path = "/audio/transcriptions";
        let body = self
            .send_json(path, self.http.post(self.url(path)).multipart(form))
            .await?;
        let text = body["text"]
            .as_str()
            .ok_or_else(|| GatewayError::Malformed("a transcription without text".into()))?;
        Ok(Answer {
            text: text.trim().to_owned(),
            cost: body["usage"]["total_cost"].as_u64().unwrap_or(0),
        })
    }
}
