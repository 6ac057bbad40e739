//! Checks that a model server's answer is what it claims to be before the app sees it:
//! a JSON body that parses, or a Server-Sent-Events stream of well-formed events whose
//! `data` is JSON (or `[DONE]`). A worker whose model server answers garbage gets its app a
//! clear error (HTTP 502, or an in-band error event that ends the stream) instead of a 200
//! that the app's SDK then fails to decode.

/// Why an answer was not passed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Garbage {
    /// A JSON answer that does not parse.
    #[error("the model server answered HTTP {status} with a body that is not valid JSON ({content_type}): {reason}")]
    NotJson {
        /// The HTTP status the model server sent.
        status: u16,
        /// Its `Content-Type`, or `no content type`.
        content_type: String,
        /// What the parser said.
        reason: String,
    },
    /// Bytes that are not UTF-8 in an event stream.
    #[error("the model server's event stream is not UTF-8 text")]
    NotText,
    /// A line that is no SSE field.
    #[error("the model server's event stream has a line that is not an SSE field: {0:?}")]
    BadLine(String),
    /// An event whose `data` is neither JSON nor `[DONE]`.
    #[error("the model server sent an event whose data is not JSON: {0}")]
    BadData(String),
    /// One event larger than [`MAX_EVENT`].
    #[error("the model server sent an event larger than {MAX_EVENT} bytes")]
    EventTooLarge,
    /// The stream ended without one data event.
    #[error("the model server's event stream ended without any event")]
    Empty,
}

/// The largest single SSE event passed on.
pub const MAX_EVENT: usize = 16 << 20;

/// Checks a whole answer body: JSON, unless its `Content-Type` is `text/plain` or
/// `text/vtt` (the plain, SRT and WebVTT transcripts of audio requests), which pass as
/// they are. Anything else (an HTML error page, binary) is refused.
pub fn check_json(status: u16, content_type: Option<&str>, body: &[u8]) -> Result<(), Garbage> {
    let transcript = content_type.is_some_and(|c| {
        let media = c.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("text/plain") || media.eq_ignore_ascii_case("text/vtt")
    });
    if transcript {
        return Ok(());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map(|_| ())
        .map_err(|e| Garbage::NotJson {
            status,
            content_type: content_type.unwrap_or("no content type").to_owned(),
            reason: e.to_string(),
        })
}

/// Checks an SSE answer as it streams: [`SseCheck::push`] returns the complete, checked
/// events to pass on, holding back an event until its end.
#[derive(Debug, Default)]
pub struct SseCheck {
    pending: Vec<u8>,
    /// Where in `pending` the next unread line starts.
    scanned: usize,
    /// `data` of the event being read.
    data: Vec<u8>,
    has_data: bool,
    events: u64,
}

impl SseCheck {
    /// A checker at the start of a stream.
    pub fn new() -> Self {
        SseCheck::default()
    }

    /// Feeds bytes; returns the events completed by them, checked, as received.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Garbage> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.pending[self.scanned..]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = self.scanned + pos + 1;
            let line = self.pending[self.scanned..end].to_vec();
            self.scanned = end;
            if self.line(&line)? {
                out.extend(self.pending.drain(..self.scanned));
                self.scanned = 0;
            }
        }
        if self.pending.len() > MAX_EVENT {
            return Err(Garbage::EventTooLarge);
        }
        Ok(out)
    }

    /// Ends the stream: returns the last event if it lacked its blank line, or why the
    /// stream as a whole is not an answer.
    pub fn finish(&mut self) -> Result<Vec<u8>, Garbage> {
        if self.scanned < self.pending.len() {
            let line = self.pending[self.scanned..].to_vec();
            self.scanned = self.pending.len();
            self.line(&line)?;
        }
        self.end_event()?;
        if self.events == 0 {
            return Err(Garbage::Empty);
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Reads one line (with its ending); true when it ended an event.
    fn line(&mut self, raw: &[u8]) -> Result<bool, Garbage> {
        let text = std::str::from_utf8(raw).map_err(|_| Garbage::NotText)?;
        let line = text.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            self.end_event()?;
            return Ok(true);
        }
        if line.starts_with(':') {
            return Ok(false); // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value.as_bytes());
                self.has_data = true;
            }
            "event" | "id" | "retry" => {}
            _ => {
                let shown: String = line.chars().take(80).collect();
                return Err(Garbage::BadLine(shown));
            }
        }
        Ok(false)
    }

    fn end_event(&mut self) -> Result<(), Garbage> {
        if !self.has_data {
            return Ok(());
        }
        let data = std::mem::take(&mut self.data);
        self.has_data = false;
        if data.trim_ascii() != b"[DONE]" {
            serde_json::from_slice::<serde::de::IgnoredAny>(&data)
                .map_err(|e| Garbage::BadData(e.to_string()))?;
        }
        self.events += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &[u8], chunk: usize) -> Result<Vec<u8>, Garbage> {
        let mut check = SseCheck::new();
        let mut out = Vec::new();
        for piece in body.chunks(chunk) {
            out.extend(check.push(piece)?);
        }
        out.extend(check.finish()?);
        Ok(out)
    }

    #[test]
    fn a_well_formed_stream_passes_unchanged_in_any_chunking() {
        let body = b": keep-alive\n\ndata: {\"a\":1}\n\nevent: x\ndata: {\"b\":\ndata: 2}\r\n\r\ndata: [DONE]\n\n";
        for chunk in [1, 2, 7, body.len()] {
            assert_eq!(
                run(body, chunk).expect("valid"),
                body.to_vec(),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn text_answers_pass_and_json_ones_must_parse() {
        let srt = b"1\n00:00:00,000 --> 00:00:01,000\nhi\n\n";
        assert_eq!(
            check_json(200, Some("text/plain; charset=utf-8"), srt),
            Ok(())
        );
        assert_eq!(check_json(200, Some("Text/VTT"), b"WEBVTT\n\n"), Ok(()));
        assert!(check_json(502, Some("text/html"), b"<html>").is_err());
        assert!(check_json(200, Some("application/json"), srt).is_err());
        assert!(
            check_json(200, None, srt).is_err(),
            "no content type: JSON expected"
        );
    }

    #[test]
    fn events_are_held_until_their_end() {
        let mut check = SseCheck::new();
        assert_eq!(check.push(b"data: {\"a\"").expect("ok"), b"");
        assert_eq!(check.push(b":1}\n").expect("ok"), b"");
        assert_eq!(check.push(b"\n").expect("ok"), b"data: {\"a\":1}\n\n");
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(
            run(b"<html>oops</html>\n", 4),
            Err(Garbage::BadLine("<html>oops</html>".into()))
        );
        assert!(matches!(
            run(b"data: not json\n\n", 3),
            Err(Garbage::BadData(_))
        ));
        assert_eq!(run(b"data: \xff\xfe\n\n", 3), Err(Garbage::NotText));
        assert_eq!(run(b"", 1), Err(Garbage::Empty));
        assert_eq!(run(b": only comments\n\n", 1), Err(Garbage::Empty));
        // The last event may lack its blank line.
        assert_eq!(run(b"data: {}", 2).expect("valid"), b"data: {}".to_vec());
    }

    #[test]
    fn json_bodies() {
        assert!(check_json(200, Some("application/json"), b"{\"ok\":true}").is_ok());
        let err = check_json(500, Some("text/html"), b"<html>500</html>").expect_err("html");
        assert!(err.to_string().contains("HTTP 500"), "{err}");
        assert!(err.to_string().contains("text/html"), "{err}");
        assert!(check_json(200, None, b"\x00\x01binary").is_err());
        assert!(check_json(200, None, b"").is_err());
    }
}
