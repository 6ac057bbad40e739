//! `/v1/embeddings` for embedding models (Qwen3-Embedding and other last-token-pooling
//! sentence-transformers checkpoints): the request as OpenAI defines it, the pooled vector
//! (the last token's final hidden state, L2-normalised; `dimensions` truncates first, as
//! Matryoshka-trained models allow) and the response, floats or base64.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// One input to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Text, tokenized with the model's tokenizer (its special tokens added, e.g. the
    /// end-of-text token Qwen3-Embedding pools on).
    Text(String),
    /// Token ids as given.
    Tokens(Vec<u32>),
}

/// A parsed embeddings request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EmbeddingRequest {
    pub(crate) model: Option<String>,
    pub(crate) inputs: Vec<Input>,
    pub(crate) base64: bool,
    pub(crate) dimensions: Option<usize>,
}

/// The most inputs one request may carry (OpenAI: 2048).
pub(crate) const MAX_INPUTS: usize = 2048;

fn token_ids(items: &[Value]) -> Option<Vec<u32>> {
    items
        .iter()
        .map(|v| v.as_u64().and_then(|t| u32::try_from(t).ok()))
        .collect()
}

/// Parses an embeddings request body.
pub(crate) fn parse(body: &[u8]) -> Result<EmbeddingRequest, ApiError> {
    let (obj, model) = crate::openai::object_and_model(body)?;
    let bad_input = || {
        ApiError::bad_param(
            "input",
            "`input` must be text, token ids, or a non-empty array of either",
        )
    };
    let inputs = match obj.get("input") {
        Some(Value::String(s)) => vec![Input::Text(s.clone())],
        Some(Value::Array(items)) if items.is_empty() => return Err(bad_input()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![Input::Tokens(token_ids(items).ok_or_else(bad_input)?)]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(Input::Text(s.clone())),
                Value::Array(ids) if !ids.is_empty() => {
                    token_ids(ids).map(Input::Tokens).ok_or_else(bad_input)
                }
                _ => Err(bad_input()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad_input()),
    };
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::bad_param(
            "input",
            format!("at most {MAX_INPUTS} inputs per request"),
        ));
    }
    let base64 = match obj.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(ApiError::bad_param(
                "encoding_format",
                "`encoding_format` must be \"float\" or \"base64\"",
            ))
        }
    };
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|d| *d > 0) {
            Some(d) => Some(usize::try_from(d).unwrap_or(usize::MAX)),
            None => {
                return Err(ApiError::bad_param(
                    "dimensions",
                    "`dimensions` must be a positive integer",
                ))
            }
        },
    };
    Ok(EmbeddingRequest {
        model,
        inputs,
        base64,
        dimensions,
    })
}

/// The embedding of a hidden state: its first `dimensions` values (all without), scaled
/// to unit length.
pub(crate) fn pooled(mut hidden: Vec<f32>, dimensions: Option<usize>) -> Vec<f32> {
    if let Some(d) = dimensions {
        hidden.truncate(d);
    }
    let norm = hidden.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in &mut hidden {
            *x /= norm;
        }
    }
    hidden
}

/// The response body: one `embedding` object per input, in order.
pub(crate) fn response(
    model: &str,
    vectors: &[Vec<f32>],
    base64: bool,
    prompt_tokens: usize,
) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            let mut item = Map::new();
            item.insert("object".into(), "embedding".into());
            item.insert("index".into(), i.into());
            item.insert("embedding".into(), embedding);
            Value::Object(item)
        })
        .collect();
    json!({
        "object": "list",
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_parse_in_every_openai_shape() {
        let p = |v: Value| parse(v.to_string().as_bytes());
        assert_eq!(
            p(json!({"input": "hi"})).expect("text").inputs,
            [Input::Text("hi".into())]
        );
        assert_eq!(
            p(json!({"input": [1, 2]})).expect("ids").inputs,
            [Input::Tokens(vec![1, 2])]
        );
        assert_eq!(
            p(json!({"input": ["a", [3]]})).expect("mixed").inputs,
            [Input::Text("a".into()), Input::Tokens(vec![3])]
        );
        let r = p(json!({"input": "x", "encoding_format": "base64", "dimensions": 3})).expect("ok");
        assert!(r.base64);
        assert_eq!(r.dimensions, Some(3));
        for (bad, param) in [
            (json!({}), "input"),
            (json!({"input": []}), "input"),
            (json!({"input": [[]]}), "input"),
            (json!({"input": [-1]}), "input"),
            (
                json!({"input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (json!({"input": "x", "dimensions": 0}), "dimensions"),
        ] {
            let e = p(bad).expect_err("refused");
            assert_eq!(e.param.as_deref(), Some(param), "{}", e.message);
        }
    }

    #[test]
    fn pooling_truncates_then_normalises() {
        let v = pooled(vec![3.0, 4.0, 12.0], None);
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(pooled(vec![3.0, 4.0, 12.0], Some(2)), [0.6, 0.8]);
        assert_eq!(
            pooled(vec![0.0, 0.0], None),
            [0.0, 0.0],
            "no division by zero"
        );
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let r = response("m", &[vec![1.0, -2.5]], true, 3);
        let text = r["data"][0]["embedding"].as_str().expect("base64");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("decodes");
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
        assert_eq!(r["usage"]["prompt_tokens"], 3);
    }
}
