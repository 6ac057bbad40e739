//! Batch input lines (OpenAI's format: `{"custom_id", "method": "POST", "url", "body"}`),
//! checked one at a time as a file streams in, and read back one at a time when it runs.

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The endpoints a batch line may go to (the gateway's JSON endpoints).
pub const BATCH_ENDPOINTS: [&str; 3] =
    ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/// One request of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The app's id of the line (unique in the file).
    pub custom_id: String,
    /// The endpoint.
    pub url: String,
    /// The request body.
    pub body: Map<String, Value>,
}

#[derive(Deserialize)]
struct Raw {
    custom_id: Option<Value>,
    method: Option<Value>,
    url: Option<Value>,
    body: Option<Value>,
}

/// Whether `line` holds nothing but whitespace (skipped: not a request).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Reads one request line; the error says what is wrong with it.
pub fn parse(line: &[u8]) -> Result<Line, String> {
    let raw: Raw = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) if e.is_data() => return Err("a line must be a JSON object".into()),
        Err(e) => return Err(format!("not valid JSON: {e}")),
    };
    let custom_id = match raw.custom_id {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err("'custom_id' is empty".into()),
        Some(_) => return Err("'custom_id' must be a string".into()),
        None => return Err("'custom_id' is missing".into()),
    };
    if custom_id.len() > 512 {
        return Err("'custom_id' is longer than 512 bytes".into());
    }
    match raw.method {
        Some(Value::String(m)) if m.eq_ignore_ascii_case("POST") => {}
        Some(m) => return Err(format!("'method' must be \"POST\", not {m}")),
        None => return Err("'method' is missing".into()),
    }
    let url = match raw.url {
        Some(Value::String(u)) => u,
        Some(_) => return Err("'url' must be a string".into()),
        None => return Err("'url' is missing".into()),
    };
    if !BATCH_ENDPOINTS.contains(&url.as_str()) {
        return Err(format!(
            "'url' {url:?} is not an endpoint batches can use ({})",
            BATCH_ENDPOINTS.join(", ")
        ));
    }
    let body = match raw.body {
        Some(Value::Object(b)) => b,
        Some(_) => return Err("'body' must be a JSON object".into()),
        None => return Err("'body' is missing".into()),
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(
            "'stream': true is not available in a batch (each answer is written whole)".into(),
        );
    }
    Ok(Line {
        custom_id,
        url,
        body,
    })
}

/// A 128-bit digest of a custom id, to find duplicates without keeping the ids.
pub fn id_digest(custom_id: &str) -> u128 {
    let d = Sha256::digest(custom_id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

/// What a whole input file holds, gathered as it streams in.
#[derive(Debug, Default)]
pub struct Census {
    /// Requests (non-blank lines).
    pub lines: u64,
    /// Physical lines seen (for error messages).
    physical: u64,
    /// The endpoints used.
    pub urls: Vec<String>,
    seen: std::collections::HashSet<u128>,
}

impl Census {
    /// Checks the next physical line; the error names it (1-based).
    pub fn add(&mut self, line: &[u8], max_lines: u64) -> Result<(), String> {
        self.physical += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if is_blank(line) {
            return Ok(());
        }
        let at = self.physical;
        let parsed = parse(line).map_err(|e| format!("line {at}: {e}"))?;
        if !self.seen.insert(id_digest(&parsed.custom_id)) {
            return Err(format!(
                "line {at}: 'custom_id' {:?} appears more than once (each line needs its own)",
                parsed.custom_id
            ));
        }
        if !self.urls.contains(&parsed.url) {
            self.urls.push(parsed.url);
        }
        self.lines += 1;
        if self.lines > max_lines {
            return Err(format!(
                "the file has more than {max_lines} requests, the most one batch takes"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_line_reads() {
        let line = br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#;
        let l = parse(line).expect("parses");
        assert_eq!(l.custom_id, "a");
        assert_eq!(l.url, "/v1/chat/completions");
        assert_eq!(l.body["model"], "m");
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases: [(&[u8], &str); 8] = [
            (b"{", "not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (br#"{"method":"POST","url":"/v1/embeddings","body":{}}"#, "'custom_id' is missing"),
            (br#"{"custom_id":1,"method":"POST","url":"/v1/embeddings","body":{}}"#, "'custom_id' must be a string"),
            (br#"{"custom_id":"a","method":"GET","url":"/v1/embeddings","body":{}}"#, "'method' must be"),
            (br#"{"custom_id":"a","method":"POST","url":"/v1/audio/speech","body":{}}"#, "not an endpoint batches can use"),
            (br#"{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":"x"}"#, "'body' must be a JSON object"),
            (br#"{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"stream":true}}"#, "not available in a batch"),
        ];
        for (line, expected) in cases {
            let e = parse(line).expect_err("refused");
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        }
    }

    #[test]
    fn the_census_counts_requests_and_names_the_first_bad_line() {
        let mut c = Census::default();
        let ok = |id: &str| {
            format!(r#"{{"custom_id":"{id}","method":"POST","url":"/v1/embeddings","body":{{}}}}"#)
        };
        c.add(ok("a").as_bytes(), 10).expect("1");
        c.add(b"  ", 10).expect("blank");
        c.add(format!("{}\r", ok("b")).as_bytes(), 10).expect("3");
        assert_eq!(c.lines, 2);
        assert_eq!(c.urls, vec!["/v1/embeddings".to_string()]);
        let e = c.add(ok("a").as_bytes(), 10).expect_err("duplicate");
        assert!(
            e.starts_with("line 4: 'custom_id' \"a\" appears more than once"),
            "{e}"
        );
        let mut c = Census::default();
        c.add(ok("a").as_bytes(), 1).expect("1");
        let e = c.add(ok("b").as_bytes(), 1).expect_err("too many");
        assert!(e.contains("more than 1 requests"), "{e}");
    }
}
