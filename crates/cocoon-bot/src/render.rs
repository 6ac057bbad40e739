//! Turning a model's answer into Telegram messages: split to Telegram's 4096-character
//! limit, and the Markdown models write turned into Telegram's MarkdownV2 (bold, inline
//! code and code blocks kept, every other special character escaped). When Telegram
//! refuses the markup anyway, the bot sends the plain text.

/// The most characters of one Telegram message.
pub const MESSAGE_LIMIT: usize = 4096;

/// Splits `text` into parts of at most `limit` characters, cutting after a blank line, a
/// line or a space where one is in the second half of a part, else anywhere.
pub fn split(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest: &str = text;
    while rest.chars().count() > limit {
        let hard = rest
            .char_indices()
            .nth(limit)
            .map_or(rest.len(), |(i, _)| i);
        let window = &rest[..hard];
        let half = window.char_indices().nth(limit / 2).map_or(0, |(i, _)| i);
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| {
                window
                    .rfind(sep)
                    .filter(|i| *i >= half)
                    .map(|i| i + sep.len())
            })
            .unwrap_or(hard);
        parts.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start_matches('\n');
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

const SPECIAL: &str = "_*[]()~`>#+-=|{}.!\\";

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        if SPECIAL.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn escape_code(text: &str, out: &mut String) {
    for c in text.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// `text` (Markdown as models write it) in Telegram's MarkdownV2.
pub fn markdown_v2(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("```") {
            let (body, next) = match after.find("```") {
                Some(end) => (&after[..end], &after[end + 3..]),
                None => (after, ""),
            };
            out.push_str("```");
            escape_code(body, &mut out);
            out.push_str("```");
            rest = next;
        } else if let Some(after) = rest.strip_prefix('`') {
            match after.find(['`', '\n']) {
                Some(end) if after[end..].starts_with('`') && end > 0 => {
                    out.push('`');
                    escape_code(&after[..end], &mut out);
                    out.push('`');
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push_str("\\`");
                    rest = after;
                }
            }
        } else if let Some(after) = rest.strip_prefix("**") {
            match after.find("**") {
                Some(end) if end > 0 && !after[..end].contains('`') => {
                    out.push('*');
                    escape(&after[..end], &mut out);
                    out.push('*');
                    rest = &after[end + 2..];
                }
                _ => {
                    out.push_str("\\*\\*");
                    rest = after;
                }
            }
        } else {
            let next = rest
                .char_indices()
                .skip(1)
                .find(|(i, _)| rest[*i..].starts_with('`') || rest[*i..].starts_with("**"))
                .map_or(rest.len(), |(i, _)| i);
            escape(&rest[..next], &mut out);
            rest = &rest[next..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_answers_split_at_paragraphs_lines_or_spaces() {
        let para = "word ".repeat(500); // 2500 characters
        let text = format!("{para}\n\n{para}\n\n{para}");
        let parts = split(&text, MESSAGE_LIMIT);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= MESSAGE_LIMIT));
        assert_eq!(
            parts.concat().replace(' ', "").len(),
            text.replace([' ', '\n'], "").len()
        );
        // No separator at all: cut at the limit, nothing lost; multi-byte safe.
        let solid = "ж".repeat(9000);
        let parts = split(&solid, MESSAGE_LIMIT);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [4096, 4096, 808]
        );
        assert_eq!(split("", MESSAGE_LIMIT), [""]);
    }

    #[test]
    fn markdown_becomes_markdown_v2() {
        assert_eq!(markdown_v2("Hi. 1+1=2!"), "Hi\\. 1\\+1\\=2\\!");
        assert_eq!(markdown_v2("a **bold** word"), "a *bold* word");
        assert_eq!(markdown_v2("use `a_b` here"), "use `a_b` here");
        assert_eq!(
            markdown_v2("```rust\nlet x = a\\b;\n```"),
            "```rust\nlet x = a\\\\b;\n```"
        );
        // Unclosed markup (a stream cut short) is escaped, never left open.
        assert_eq!(markdown_v2("a **b"), "a \\*\\*b");
        assert_eq!(markdown_v2("a `b"), "a \\`b");
        assert_eq!(markdown_v2("```\ncode"), "```\ncode```");
    }
}
