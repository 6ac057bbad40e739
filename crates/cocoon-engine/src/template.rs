//! Chat template rendering with minijinja, configured like Hugging Face
//! transformers' Jinja environment (`trim_blocks`, `lstrip_blocks`, Python string
//! methods, `raise_exception`, non-escaping `tojson`, `strftime_now`).

use minijinja::value::Value as JValue;
use minijinja::{Environment, Error as JError, ErrorKind};
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// A compiled chat template.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    /// Whether the template reads a `tools` variable (it knows a tool-call format).
    takes_tools: bool,
}

fn raise_exception(msg: String) -> std::result::Result<JValue, JError> {
    Err(JError::new(ErrorKind::InvalidOperation, msg))
}

fn tojson(value: JValue, indent: Option<usize>) -> std::result::Result<JValue, JError> {
    let v = serde_json::to_value(&value)
        .map_err(|e| JError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let s = match indent {
        Some(n) if n > 0 => {
            let mut buf = Vec::new();
            let ind = " ".repeat(n);
            let fmt = serde_json::ser::PrettyFormatter::with_indent(ind.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(&v, &mut ser)
                .map_err(|e| JError::new(ErrorKind::InvalidOperation, e.to_string()))?;
            String::from_utf8_lossy(&buf).into_owned()
        }
        // Python's json.dumps default separators: ", " and ": ".
        _ => python_json(&v),
    };
    Ok(JValue::from_safe_string(s))
}

/// `json.dumps(v, ensure_ascii=False)` formatting (spaces after `,` and `:`).
fn python_json(v: &Value) -> String {
    match v {
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(python_json).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(o) => {
            let items: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

fn strftime_now(format: String) -> String {
    // Minimal strftime for the patterns chat templates use (`%d %b %Y`, `%Y-%m-%d`).
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mut y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    if m <= 2 {
        y += 1;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mon = MONTHS[(m - 1).clamp(0, 11) as usize];
    format
        .replace("%Y", &format!("{y:04}"))
        .replace("%m", &format!("{m:02}"))
        .replace("%d", &format!("{d:02}"))
        .replace("%b", mon)
}

impl ChatTemplate {
    /// Compiles `source`.
    pub(crate) fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| EngineError::Template(e.to_string()))?;
        Ok(Self {
            env,
            takes_tools: source.contains("tools"),
        })
    }

    /// Whether the template can present tools to the model.
    pub(crate) fn takes_tools(&self) -> bool {
        self.takes_tools
    }

    /// Renders the prompt for `messages` with `add_generation_prompt = true`.
    /// `kwargs` (from the request's `chat_template_kwargs`) become template variables,
    /// e.g. `enable_thinking`.
    pub(crate) fn render(
        &self,
        messages: &[Value],
        kwargs: &Map<String, Value>,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> std::result::Result<String, String> {
        let mut ctx = Map::new();
        for (k, v) in kwargs {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert("messages".into(), Value::Array(messages.to_vec()));
        ctx.insert("add_generation_prompt".into(), Value::Bool(true));
        ctx.insert("bos_token".into(), Value::from(bos_token.unwrap_or("")));
        ctx.insert("eos_token".into(), Value::from(eos_token.unwrap_or("")));
        let tmpl = self.env.get_template("chat").map_err(|e| e.to_string())?;
        tmpl.render(JValue::from_serialize(&ctx))
            .map_err(|e| format!("chat template failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_python_isms() {
        let t = ChatTemplate::new(
            "{% for m in messages[::-1] %}{{ m.content.strip().upper() }}|{% endfor %}\
             {{ {'a': 1, 'b': [1, 2]} | tojson }}{% if enable_thinking is defined and enable_thinking is false %}NO{% endif %}",
        )
        .unwrap();
        let msgs = vec![
            json!({"role":"user","content":" a "}),
            json!({"role":"assistant","content":"b"}),
        ];
        let mut kw = Map::new();
        kw.insert("enable_thinking".into(), json!(false));
        let out = t.render(&msgs, &kw, None, None).unwrap();
        assert_eq!(out, "B|A|{\"a\": 1, \"b\": [1, 2]}NO");
    }

    #[test]
    fn qwen3_presents_tools_and_the_call_history() {
        let t = ChatTemplate::new(crate::testing::QWEN3_CHAT_TEMPLATE).unwrap();
        assert!(t.takes_tools());
        let tool = json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}});
        let mut kw = Map::new();
        kw.insert("tools".into(), json!([tool]));
        let msgs = vec![
            json!({"role": "user", "content": "Weather?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                   "function": {"name": "get_weather", "arguments": "{\"city\": \"Dubai\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "c", "content": "sunny"}),
        ];
        let out = t.render(&msgs, &kw, None, None).unwrap();
        assert!(
            out.contains("<tools>") && out.contains("\"name\": \"get_weather\""),
            "{out}"
        );
        assert!(out.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Dubai\"}}\n</tool_call>"), "{out}");
        assert!(
            out.contains("<tool_response>\nsunny\n</tool_response>"),
            "{out}"
        );
        assert!(!ChatTemplate::new("{{ messages[0].content }}")
            .unwrap()
            .takes_tools());
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('nope') }}").unwrap();
        assert!(t
            .render(&[], &Map::new(), None, None)
            .unwrap_err()
            .contains("nope"));
    }
}
