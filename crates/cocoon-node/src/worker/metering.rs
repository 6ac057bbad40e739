//! Usage metering of model answers, streamed (cocoon-protocol.md §3.3, §5.2).
//!
//! A [`UsageMeter`] sits on the answer body between the model server and the proxy. It
//! reads the `usage` object of every JSON value it sees — in a plain JSON body, in
//! concatenated/NDJSON values, and in the `data:` events of a Server-Sent-Events stream
//! (which COCOON's C++ worker leaves unmetered) — keeps the field-wise maximum, and
//! injects `prompt_total_cost`, `completion_total_cost` and `total_cost` (nanoTON) into
//! each usage object whose counts grew. Everything else passes through unchanged and
//! without delay: a complete SSE line or JSON value is forwarded as soon as it is whole.

use serde_json::{Map, Value};

use crate::bounds::RawBound;
use crate::pricing::{adjusted_usage, cost, AdjustedTokens, Prices, RawUsage};

/// Longest SSE line or pending JSON text kept while waiting for its end; anything longer
/// is forwarded unparsed (and unmetered) so that a hostile upstream cannot grow memory.
pub const MAX_PENDING: usize = 16 << 20;

/// Prompt tokens an audio answer is counted by per second of audio, when the model server
/// reports its duration rather than tokens (OpenAI's audio models count one token per
/// 100 ms).
pub const AUDIO_TOKENS_PER_SECOND: f64 = 10.0;

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `text/event-stream`: lines, usage in `data:` events.
    Sse,
    /// JSON values, one or several concatenated (NDJSON included).
    Json,
    /// Not decided yet: the first bytes decide (`data:`/`event:`/`:` means SSE).
    Sniff,
    /// Not metered: passed through as is.
    Opaque,
}

impl BodyFormat {
    /// The format announced by a `Content-Type` header value.
    pub fn from_content_type(content_type: Option<&str>) -> BodyFormat {
        match content_type.map(|c| c.to_ascii_lowercase()) {
            Some(c) if c.starts_with("text/event-stream") => BodyFormat::Sse,
            Some(c) if c.contains("json") => BodyFormat::Json,
            _ => BodyFormat::Sniff,
        }
    }
}

/// Streaming usage meter and cost injector for one answer body.
#[derive(Debug)]
pub struct UsageMeter {
    format: BodyFormat,
    pending: Vec<u8>,
    /// Field-wise maximum of the usage the model server reported.
    usage: RawUsage,
    coefficient: u32,
    prices: Prices,
    /// Bytes of answer body received so far.
    seen: u64,
    /// What the request allows, when known ([`UsageMeter::bounded`]).
    limits: Option<RequestLimits>,
}

/// What one request can have produced at most, as [`RawBound`] needs it.
#[derive(Debug, Clone, Copy)]
struct RequestLimits {
    request_bytes: u64,
    max_completion: Option<u64>,
}

impl UsageMeter {
    /// A meter for an answer produced at `coefficient` under `prices`.
    pub fn new(format: BodyFormat, coefficient: u32, prices: Prices) -> Self {
        UsageMeter {
            format,
            pending: Vec::new(),
            usage: RawUsage::default(),
            coefficient,
            prices,
            seen: 0,
            limits: None,
        }
    }

    /// Bounds the usage this meter accepts by what the request could have produced
    /// ([`crate::bounds`]): prompt tokens by its `request_bytes`, completion tokens by the
    /// answer bytes seen and by `max_completion` (its `max_tokens` × choices, if set).
    pub fn bounded(mut self, request_bytes: u64, max_completion: Option<u64>) -> Self {
        self.limits = Some(RequestLimits {
            request_bytes,
            max_completion,
        });
        self
    }

    /// The usage to bill: the field-wise maximum of what the model server reported, within
    /// the bound of a [bounded](UsageMeter::bounded) meter.
    pub fn usage(&self) -> RawUsage {
        self.bounded_usage().0
    }

    /// Whether the model server reported more than the request could have produced (the
    /// excess is not billed).
    pub fn clipped(&self) -> bool {
        self.bounded_usage().1
    }

    /// The usage as the model server reported it (field-wise maximum), unbounded.
    pub fn reported(&self) -> RawUsage {
        self.usage
    }

    fn bounded_usage(&self) -> (RawUsage, bool) {
        match self.limits {
            Some(l) => RawBound::new(l.request_bytes, self.seen, l.max_completion).clip(self.usage),
            None => (self.usage, false),
        }
    }

    /// Adjusted tokens of the usage seen so far.
    pub fn adjusted(&self) -> AdjustedTokens {
        adjusted_usage(self.usage(), self.coefficient, self.prices.multipliers)
    }

    /// Feeds a body chunk; returns the bytes to forward now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        self.pending.extend_from_slice(chunk);
        if self.format == BodyFormat::Sniff {
            self.sniff();
        }
        let mut out = Vec::with_capacity(self.pending.len() + 64);
        match self.format {
            BodyFormat::Sse => self.drain_sse(&mut out),
            BodyFormat::Json => self.drain_json(&mut out, false),
            BodyFormat::Opaque => out.append(&mut self.pending),
            BodyFormat::Sniff => {}
        }
        if self.pending.len() > MAX_PENDING {
            out.append(&mut self.pending);
        }
        out
    }

    /// Meters `body` without forwarding it (an answer the worker replaces, e.g. an audio
    /// transcript rendered from it); what is pushed afterwards passes through unparsed.
    pub fn count_only(&mut self, body: &[u8]) {
        let _ = self.push(body);
        let _ = self.finish();
        self.format = BodyFormat::Opaque;
    }

    /// Ends the body; returns what is left to forward.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.format {
            BodyFormat::Sse => {
                if !self.pending.is_empty() {
                    // A last line without its newline.
                    let line = std::mem::take(&mut self.pending);
                    self.process_sse_line(&line, &mut out);
                }
            }
            BodyFormat::Json => self.drain_json(&mut out, true),
            BodyFormat::Opaque | BodyFormat::Sniff => {}
        }
        out.append(&mut self.pending);
        out
    }

    fn sniff(&mut self) {
        let text = self.pending.trim_ascii_start();
        if text.is_empty() {
            return;
        }
        let decided = if text.starts_with(b"data:")
            || text.starts_with(b"event:")
            || text.starts_with(b":")
            || text.starts_with(b"id:")
            || text.starts_with(b"retry:")
        {
            BodyFormat::Sse
        } else if text.starts_with(b"{") || text.starts_with(b"[") {
            BodyFormat::Json
        } else if text.len() < 6 && b"data:".starts_with(text) {
            return; // could still become `data:`
        } else {
            BodyFormat::Opaque
        };
        self.format = decided;
    }

    fn drain_sse(&mut self, out: &mut Vec<u8>) {
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            let line = self.pending[start..end].to_vec();
            self.process_sse_line(&line, out);
            start = end;
        }
        self.pending.drain(..start);
    }

    /// Forwards one SSE line (with its line ending), rewriting a `data:` event whose JSON
    /// carries usage that grew.
    fn process_sse_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let body_end = line
            .iter()
            .rposition(|&b| b != b'\n' && b != b'\r')
            .map_or(0, |p| p + 1);
        let (body, ending) = line.split_at(body_end);
        if let Some(data) = body.strip_prefix(b"data:") {
            let json = data.trim_ascii();
            if json != b"[DONE]" {
                if let Ok(mut value) = serde_json::from_slice::<Value>(json) {
                    if self.observe(&mut value) {
                        out.extend_from_slice(b"data: ");
                        out.extend_from_slice(&serialize(&value));
                        out.extend_from_slice(ending);
                        return;
                    }
                }
            }
        }
        out.extend_from_slice(line);
    }

    fn drain_json(&mut self, out: &mut Vec<u8>, at_end: bool) {
        let mut pending = std::mem::take(&mut self.pending);
        let mut consumed = 0;
        loop {
            let rest = &pending[consumed..];
            let leading = rest.len() - rest.trim_ascii_start().len();
            if leading == rest.len() {
                out.extend_from_slice(rest);
                consumed = pending.len();
                break;
            }
            let mut stream =
                serde_json::Deserializer::from_slice(&rest[leading..]).into_iter::<Value>();
            match stream.next() {
                Some(Ok(mut value)) => {
                    let len = leading + stream.byte_offset();
                    if self.observe(&mut value) {
                        out.extend_from_slice(&rest[..leading]);
                        out.extend_from_slice(&serialize(&value));
                    } else {
                        out.extend_from_slice(&rest[..len]);
                    }
                    consumed += len;
                }
                Some(Err(e)) if e.is_eof() && !at_end => break,
                Some(Err(_)) | None => {
                    // Not JSON after all (or truncated at the end): pass it through.
                    out.extend_from_slice(rest);
                    consumed = pending.len();
                    self.format = BodyFormat::Opaque;
                    break;
                }
            }
        }
        pending.drain(..consumed);
        self.pending = pending;
    }

    /// Reads the usage counts of one JSON value; when they grew, injects the cost fields
    /// and returns true.
    fn observe(&mut self, value: &mut Value) -> bool {
        // A transcription without usage is counted by its audio's duration.
        if let Some(answer) = value.as_object_mut() {
            let transcript = answer.get("text").is_some_and(Value::is_string);
            let duration = answer.get("duration").and_then(Value::as_f64);
            if let (false, true, Some(seconds)) =
                (answer.contains_key("usage"), transcript, duration)
            {
                answer.insert(
                    "usage".into(),
                    serde_json::json!({"type": "duration", "seconds": seconds}),
                );
            }
        }
        let Some(usage) = value.get_mut("usage").and_then(Value::as_object_mut) else {
            return false;
        };
        let seen = read_usage(usage);
        let merged = self.usage.max(seen);
        if merged == self.usage && seen == RawUsage::default() {
            return false;
        }
        let grew = merged != self.usage;
        self.usage = merged;
        if !grew && usage.contains_key("total_cost") {
            return false;
        }
        let c = cost(self.adjusted(), self.prices.price_per_token);
        usage.insert("prompt_total_cost".into(), c.prompt_total_cost.into());
        usage.insert(
            "completion_total_cost".into(),
            c.completion_total_cost.into(),
        );
        usage.insert("total_cost".into(), c.total_cost.into());
        true
    }
}

fn serialize(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn unsigned(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

/// The counted fields of a `usage` object; only unsigned integers count.
/// The counts of a `usage` object: chat and completions name them `prompt_tokens` /
/// `completion_tokens`; audio (and the Responses API) `input_tokens` / `output_tokens`; an
/// audio answer may give only `{"type": "duration", "seconds": S}`, counted as
/// [`AUDIO_TOKENS_PER_SECOND`] prompt tokens per second.
fn read_usage(usage: &Map<String, Value>) -> RawUsage {
    let detail = |obj: &str, field: &str| unsigned(usage.get(obj).and_then(|d| d.get(field)));
    let by_duration = match (
        usage.get("type").and_then(Value::as_str),
        usage.get("seconds"),
    ) {
        (Some("duration"), Some(seconds)) => seconds
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(0, |s| {
                (s * AUDIO_TOKENS_PER_SECOND).ceil().min(u32::MAX as f64) as u64
            }),
        _ => 0,
    };
    RawUsage {
        prompt: unsigned(usage.get("prompt_tokens"))
            .max(unsigned(usage.get("input_tokens")))
            .max(by_duration),
        cached: detail("prompt_tokens_details", "cached_tokens")
            .max(detail("input_tokens_details", "cached_tokens")),
        completion: unsigned(usage.get("completion_tokens"))
            .max(unsigned(usage.get("output_tokens"))),
        reasoning: detail("completion_tokens_details", "reasoning_tokens")
            .max(detail("output_tokens_details", "reasoning_tokens"))
            .max(unsigned(usage.get("reasoning_tokens"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Multipliers;
    use proptest::prelude::*;

    fn prices() -> Prices {
        Prices {
            price_per_token: 2,
            worker_fee_per_token: 1,
            multipliers: Multipliers::default(),
        }
    }

    fn run(format: BodyFormat, body: &[u8], chunk: usize) -> (Vec<u8>, UsageMeter) {
        let mut meter = UsageMeter::new(format, 1000, prices());
        let mut out = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            out.extend(meter.push(piece));
        }
        out.extend(meter.finish());
        (out, meter)
    }

    const JSON_BODY: &str = r#"{"id":"cmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":34,"completion_tokens":100,"total_tokens":134,"prompt_tokens_details":{"cached_tokens":11},"completion_tokens_details":{"reasoning_tokens":10}}}"#;

    #[test]
    fn audio_usage_is_read_in_its_own_names_and_by_duration() {
        let tokens = br#"{"text":"hi","usage":{"type":"tokens","input_tokens":40,"output_tokens":5,"total_tokens":45,"input_token_details":{"audio_tokens":38,"text_tokens":2}}}"#;
        let (_, meter) = run(BodyFormat::Json, tokens, 5);
        assert_eq!(meter.usage().prompt, 40);
        assert_eq!(meter.usage().completion, 5);

        let duration = br#"{"text":"hi","usage":{"type":"duration","seconds":2.01}}"#;
        let (out, meter) = run(BodyFormat::Json, duration, 3);
        assert_eq!(meter.usage().prompt, 21, "10 tokens a second, rounded up");
        assert!(String::from_utf8_lossy(&out).contains("total_cost"));

        // verbose_json without usage: its duration counts, and the app sees the usage.
        let verbose = br#"{"task":"transcribe","duration":3.0,"text":"hi","segments":[]}"#;
        let (out, meter) = run(BodyFormat::Json, verbose, 4);
        assert_eq!(meter.usage().prompt, 30);
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["usage"]["type"], "duration");
        assert!(v["usage"]["total_cost"].as_u64().is_some());
    }

    #[test]
    fn a_replaced_body_is_counted_but_not_forwarded() {
        let mut meter = UsageMeter::new(BodyFormat::Json, 1000, prices());
        meter.count_only(JSON_BODY.as_bytes());
        assert_eq!(meter.usage().prompt, 34);
        assert_eq!(meter.push(b"{plain text"), b"{plain text");
        assert!(meter.finish().is_empty());
    }

    #[test]
    fn json_body_is_metered_and_costed() {
        let (out, meter) = run(BodyFormat::Json, JSON_BODY.as_bytes(), 7);
        assert_eq!(
            meter.usage(),
            RawUsage {
                prompt: 34,
                cached: 11,
                completion: 100,
                reasoning: 10
            }
        );
        assert_eq!(meter.adjusted().total(), 134);
        let value: Value = serde_json::from_slice(&out).expect("still JSON");
        assert_eq!(value["usage"]["total_cost"], 268);
        assert_eq!(value["usage"]["prompt_total_cost"], 68);
        assert_eq!(value["usage"]["completion_total_cost"], 200);
        // Key order of the upstream is kept.
        assert!(std::str::from_utf8(&out)
            .expect("utf8")
            .starts_with(r#"{"id":"cmpl-1","object""#));
    }

    const SSE_BODY: &str = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn sse_stream_is_metered_and_streamed() {
        let (out, meter) = run(BodyFormat::Sse, SSE_BODY.as_bytes(), 5);
        assert_eq!(meter.usage().prompt, 5);
        assert_eq!(meter.usage().completion, 2);
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        // Content events pass through byte for byte.
        assert_eq!(lines[0], SSE_BODY.lines().next().expect("line"));
        assert!(lines[4].contains("\"total_cost\":14"), "{}", lines[4]);
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn sse_lines_are_forwarded_as_soon_as_complete() {
        let mut meter = UsageMeter::new(BodyFormat::Sniff, 1000, prices());
        assert_eq!(meter.push(b"da"), b"");
        assert_eq!(meter.push(b"ta: {\"a\":1}\n"), b"data: {\"a\":1}\n");
        assert_eq!(meter.push(b"\n"), b"\n");
    }

    #[test]
    fn ndjson_values_are_metered() {
        let body = "{\"delta\":\"a\",\"i\":0}\n{\"delta\":\"b\",\"i\":1}\n{\"usage\":{\"prompt_tokens\":34,\"completion_tokens\":100,\"reasoning_tokens\":10,\"prompt_tokens_details\":{\"cached_tokens\":11}}}\n";
        let (out, meter) = run(BodyFormat::Sniff, body.as_bytes(), 3);
        assert_eq!(meter.adjusted().total(), 134);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("{\"delta\":\"a\",\"i\":0}\n{\"delta\":\"b\",\"i\":1}\n"));
        assert!(text.contains("\"total_cost\":268"));
    }

    #[test]
    fn non_json_passes_through_unmetered() {
        let (out, meter) = run(BodyFormat::Sniff, b"plain text answer", 4);
        assert_eq!(out, b"plain text answer");
        assert_eq!(meter.usage(), RawUsage::default());
    }

    #[test]
    fn negative_or_fractional_counts_do_not_count() {
        let body = r#"{"usage":{"prompt_tokens":-5,"completion_tokens":2.5}}"#;
        let (_, meter) = run(BodyFormat::Json, body.as_bytes(), 100);
        assert_eq!(meter.usage(), RawUsage::default());
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_the_output(chunk in 1usize..64) {
            let (whole, _) = run(BodyFormat::Sse, SSE_BODY.as_bytes(), SSE_BODY.len());
            let (pieces, _) = run(BodyFormat::Sse, SSE_BODY.as_bytes(), chunk);
            prop_assert_eq!(&whole, &pieces);
            let (whole, _) = run(BodyFormat::Json, JSON_BODY.as_bytes(), JSON_BODY.len());
            let (pieces, _) = run(BodyFormat::Json, JSON_BODY.as_bytes(), chunk);
            prop_assert_eq!(whole, pieces);
        }

        #[test]
        fn arbitrary_bytes_are_never_lost(body in proptest::collection::vec(any::<u8>(), 0..400), chunk in 1usize..50) {
            // Without usage objects, output equals input whatever the format guess.
            prop_assume!(!body.windows(5).any(|w| w == b"usage"));
            for format in [BodyFormat::Sniff, BodyFormat::Sse, BodyFormat::Json] {
                let (out, _) = run(format, &body, chunk);
                prop_assert_eq!(&out, &body);
            }
        }
    }
}
