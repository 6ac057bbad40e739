//! Tool calls as Qwen3 (and Hermes-style templates) write them: a block
//! `<tool_call>{"name": …, "arguments": {…}}</tool_call>` in the generated text, turned into
//! OpenAI `tool_calls`. The parser works on the text as it streams: text outside blocks
//! passes at once (only a possible start of `<tool_call>` is held back), a block becomes a
//! call when it closes, and a block that is not a call (bad JSON, unterminated) is given
//! back as text rather than lost.

use serde_json::{json, Value};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// One call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolCall {
    /// `call_` and 24 hex digits, unique per call.
    pub(crate) id: String,
    /// The function's name.
    pub(crate) name: String,
    /// Its arguments as JSON text (OpenAI sends a string).
    pub(crate) arguments: String,
}

impl ToolCall {
    /// The call as an OpenAI `tool_calls` entry (with its `index` when streamed).
    pub(crate) fn to_json(&self, index: Option<usize>) -> Value {
        let mut v = json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        });
        if let Some(i) = index {
            v["index"] = json!(i);
        }
        v
    }
}

/// What the parser gives back, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Text for the message's `content`.
    Text(String),
    /// A complete call.
    Call(ToolCall),
}

/// Reads a call block's body: `{"name": "f", "arguments": {…}}` (arguments may also be
/// given as a JSON string).
fn parse_call(body: &str) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_owned();
    let arguments = match v.get("arguments") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Some(ToolCall {
        id: format!("call_{:024x}", rand::random::<u128>() >> 32),
        name,
        arguments,
    })
}

/// The streaming parser of one choice's text.
#[derive(Debug, Default)]
pub(crate) struct ToolCallParser {
    buf: String,
    in_call: bool,
}

impl ToolCallParser {
    /// Feeds generated text; returns what can be given out now.
    pub(crate) fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.in_call {
                let Some(end) = self.buf.find(CLOSE) else {
                    break;
                };
                let body: String = self.buf.drain(..end + CLOSE.len()).collect();
                let inner = &body[..end];
                match parse_call(inner) {
                    Some(call) => out.push(Piece::Call(call)),
                    None => out.push(Piece::Text(format!("{OPEN}{body}"))),
                }
                self.in_call = false;
            } else if let Some(start) = self.buf.find(OPEN) {
                let before: String = self.buf.drain(..start).collect();
                if !before.is_empty() {
                    out.push(Piece::Text(before));
                }
                self.buf.drain(..OPEN.len());
                self.in_call = true;
            } else {
                // Hold back only what could still become `<tool_call>`.
                let keep = (1..OPEN.len())
                    .rev()
                    .find(|&n| self.buf.ends_with(&OPEN[..n]))
                    .unwrap_or(0);
                let cut = self.buf.len() - keep;
                if cut > 0 {
                    out.push(Piece::Text(self.buf.drain(..cut).collect()));
                }
                break;
            }
        }
        out
    }

    /// Ends the text: whatever is held back is text (an unterminated block included).
    pub(crate) fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.buf);
        let text = if std::mem::take(&mut self.in_call) {
            format!("{OPEN}{rest}")
        } else {
            rest
        };
        if text.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Text(text)]
        }
    }
}

/// Splits a whole text into its content and its calls (`parallel` false keeps the first
/// call only; the content is trimmed of the blank lines around blocks).
pub(crate) fn split(text: &str, parallel: bool) -> (String, Vec<ToolCall>) {
    let mut parser = ToolCallParser::default();
    let mut pieces = parser.push(text);
    pieces.extend(parser.finish());
    let mut content = String::new();
    let mut calls = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => content.push_str(&t),
            Piece::Call(c) if parallel || calls.is_empty() => calls.push(c),
            Piece::Call(_) => {}
        }
    }
    let content = if calls.is_empty() {
        content
    } else {
        content.trim().to_owned()
    };
    (content, calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ANSWER: &str = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Dubai\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";

    #[test]
    fn calls_are_read_from_qwen3_text() {
        let (content, calls) = split(ANSWER, true);
        assert_eq!(content, "Let me look.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Dubai"}"#);
        assert_eq!(calls[1].arguments, "{}");
        assert_ne!(calls[0].id, calls[1].id);
        assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29);
        let (_, first_only) = split(ANSWER, false);
        assert_eq!(first_only.len(), 1);
    }

    #[test]
    fn what_is_not_a_call_stays_text() {
        assert_eq!(
            split("no tools here", true),
            ("no tools here".into(), vec![])
        );
        let broken = "<tool_call>{not json}</tool_call> and <tool_call>{\"name\": \"f\"";
        let (content, calls) = split(broken, true);
        assert!(calls.is_empty());
        assert_eq!(content, broken, "nothing lost");
        assert_eq!(split("a < b <tool", true).0, "a < b <tool");
    }

    #[test]
    fn text_streams_without_waiting_and_calls_come_whole() {
        let mut p = ToolCallParser::default();
        assert_eq!(p.push("Hello <to"), vec![Piece::Text("Hello ".into())]);
        assert_eq!(p.push("ol_call>{\"name\": \"f\", \"argu"), vec![]);
        let out = p.push("ments\": {\"x\": 1}}</tool_call> done");
        assert!(matches!(&out[0], Piece::Call(c) if c.name == "f" && c.arguments == r#"{"x":1}"#));
        assert_eq!(out[1], Piece::Text(" done".into()));
        assert_eq!(p.finish(), vec![]);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_pieces(cuts in proptest::collection::vec(0..ANSWER.len(), 0..8)) {
            let mut points: Vec<usize> = cuts.into_iter().filter(|c| ANSWER.is_char_boundary(*c)).collect();
            points.sort_unstable();
            let mut p = ToolCallParser::default();
            let mut text = String::new();
            let mut names = Vec::new();
            let mut last = 0;
            for cut in points.into_iter().chain([ANSWER.len()]) {
                for piece in p.push(&ANSWER[last..cut]) {
                    match piece {
                        Piece::Text(t) => text.push_str(&t),
                        Piece::Call(c) => names.push(c.name),
                    }
                }
                last = cut;
            }
            for piece in p.finish() {
                if let Piece::Text(t) = piece { text.push_str(&t) }
            }
            prop_assert_eq!(text.trim(), "Let me look.");
            prop_assert_eq!(names, vec!["get_weather".to_owned(), "get_time".to_owned()]);
        }
    }
}
