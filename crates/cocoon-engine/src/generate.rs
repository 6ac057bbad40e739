//! The generation loop: prefill, sampling, incremental detokenization, `stop`
//! strings, `max_tokens`, EOS and reasoning-token accounting.

use std::collections::BTreeSet;

use tokenizers::Tokenizer;

use crate::error::{EngineError, Result};
use crate::model::SequenceState;
use crate::sampling::{Sampler, SamplingParams};

/// Why a choice ended, as OpenAI `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS token or a `stop` string.
    Stop,
    /// `max_tokens` (or the context window) reached.
    Length,
}

impl FinishReason {
    /// The OpenAI string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// One sequence to generate.
#[derive(Debug, Clone)]
pub(crate) struct GenRequest {
    pub(crate) prompt_tokens: Vec<u32>,
    pub(crate) max_tokens: usize,
    pub(crate) stop: Vec<String>,
    pub(crate) sampling: SamplingParams,
    pub(crate) ignore_eos: bool,
    pub(crate) skip_special_tokens: bool,
    /// Whether this sequence's prompt cache hits are reported (the first choice of
    /// each prompt; later choices of the same prompt always hit).
    pub(crate) report_cached: bool,
}

/// Result of one sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GenOutcome {
    pub(crate) completion_tokens: usize,
    pub(crate) reasoning_tokens: usize,
    pub(crate) finish_reason: FinishReason,
    /// The `stop` string that ended generation, if any.
    pub(crate) stop_string: Option<String>,
    /// The EOS token id that ended generation, if any.
    pub(crate) stop_token: Option<u32>,
    /// Prompt tokens served from the prefix cache (0 unless `report_cached`).
    pub(crate) cached_tokens: usize,
}

/// Token ids bounding a reasoning span (`<think>` … `</think>`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ThinkTokens {
    pub(crate) start: Option<u32>,
    pub(crate) end: Option<u32>,
}

/// Counts generated tokens inside `<think>…</think>` (both tags included).
#[derive(Debug, Clone)]
pub(crate) struct ReasoningCounter {
    tags: ThinkTokens,
    inside: bool,
    pub(crate) count: usize,
}

impl ReasoningCounter {
    /// Starts inside a span when the prompt opened `<think>` without closing it.
    pub(crate) fn new(tags: ThinkTokens, prompt: &[u32]) -> Self {
        let mut inside = false;
        if let (Some(s), Some(e)) = (tags.start, tags.end) {
            for &t in prompt {
                if t == s {
                    inside = true;
                } else if t == e {
                    inside = false;
                }
            }
        }
        Self {
            tags,
            inside,
            count: 0,
        }
    }

    pub(crate) fn observe(&mut self, tok: u32) {
        if self.tags.start.is_none() {
            return;
        }
        if Some(tok) == self.tags.start {
            self.inside = true;
            self.count += 1;
        } else if self.inside {
            self.count += 1;
            if Some(tok) == self.tags.end {
                self.inside = false;
            }
        }
    }
}

/// Incremental detokenizer (the prefix/read offset scheme of TGI/vLLM): emits text
/// only once it is stable, so multi-token UTF-8 characters are never split.
pub(crate) struct Detokenizer<'a> {
    tokenizer: &'a Tokenizer,
    skip_special: bool,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl<'a> Detokenizer<'a> {
    pub(crate) fn new(tokenizer: &'a Tokenizer, skip_special: bool) -> Self {
        Self {
            tokenizer,
            skip_special,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, self.skip_special)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    /// Adds a token; returns newly stable text (possibly empty).
    pub(crate) fn push(&mut self, tok: u32) -> Result<String> {
        self.ids.push(tok);
        let prefix = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = self.decode(&self.ids[self.prefix_offset..])?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            let delta = full.get(prefix.len()..).unwrap_or_default().to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Text of tokens not yet emitted (at the end of generation).
    pub(crate) fn flush(&mut self) -> Result<String> {
        if self.read_offset >= self.ids.len() {
            return Ok(String::new());
        }
        let prefix = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = self.decode(&self.ids[self.prefix_offset..])?;
        self.read_offset = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }
}

/// Applies `stop` strings to streamed text, holding back any tail that could be the
/// start of a stop string.
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    text: String,
    sent: usize,
}

impl StopMatcher {
    pub(crate) fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            text: String::new(),
            sent: 0,
        }
    }

    /// Adds text; returns `(text safe to emit, matched stop string)`.
    pub(crate) fn push(&mut self, delta: &str) -> (String, Option<String>) {
        self.text.push_str(delta);
        let pending = &self.text[self.sent..];
        let mut best: Option<(usize, &String)> = None;
        for s in &self.stops {
            if let Some(pos) = pending.find(s.as_str()) {
                if best.is_none_or(|(b, _)| pos < b) {
                    best = Some((pos, s));
                }
            }
        }
        if let Some((pos, s)) = best {
            let out = pending[..pos].to_string();
            let s = s.clone();
            self.sent = self.text.len();
            return (out, Some(s));
        }
        // Longest suffix of `pending` that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            let max = (s.len() - 1).min(pending.len());
            for k in (hold + 1..=max).rev() {
                let start = pending.len() - k;
                if pending.is_char_boundary(start) && s.starts_with(&pending[start..]) {
                    hold = k;
                    break;
                }
            }
        }
        let cut = pending.len() - hold;
        let out = pending[..cut].to_string();
        self.sent += cut;
        (out, None)
    }

    /// Releases held-back text at the end of generation.
    pub(crate) fn flush(&mut self) -> String {
        let out = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        out
    }
}

/// Model-level facts the loop needs.
pub(crate) struct GenContext<'a> {
    pub(crate) tokenizer: &'a Tokenizer,
    pub(crate) eos_token_ids: &'a BTreeSet<u32>,
    pub(crate) think: ThinkTokens,
    pub(crate) max_context: usize,
}

/// Runs one sequence. `on_text` receives each piece of output text; returning `false`
/// aborts (client gone), reported as [`EngineError::ShutDown`]-free early stop.
pub(crate) fn generate(
    state: &mut SequenceState,
    ctx: &GenContext<'_>,
    req: &GenRequest,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Option<GenOutcome>> {
    let mut sampler = Sampler::new(req.sampling.clone());
    let mut detok = Detokenizer::new(ctx.tokenizer, req.skip_special_tokens);
    let mut stops = StopMatcher::new(req.stop.clone());
    let mut reasoning = ReasoningCounter::new(ctx.think, &req.prompt_tokens);
    let budget = req
        .max_tokens
        .min(ctx.max_context.saturating_sub(req.prompt_tokens.len()));
    let mut outcome = GenOutcome {
        completion_tokens: 0,
        reasoning_tokens: 0,
        finish_reason: FinishReason::Length,
        stop_string: None,
        stop_token: None,
        cached_tokens: 0,
    };
    if budget == 0 {
        return Ok(Some(outcome));
    }
    let prefill = tracing::debug_span!("prefill", tokens = req.prompt_tokens.len());
    let (mut logits, cached) = prefill.in_scope(|| state.prefill(&req.prompt_tokens))?;
    if req.report_cached {
        outcome.cached_tokens = cached;
    }
    let mut pos = req.prompt_tokens.len();
    loop {
        let tok = sampler.sample(&mut logits);
        outcome.completion_tokens += 1;
        reasoning.observe(tok);
        if !req.ignore_eos && ctx.eos_token_ids.contains(&tok) {
            outcome.finish_reason = FinishReason::Stop;
            outcome.stop_token = Some(tok);
            break;
        }
        let delta = detok.push(tok)?;
        if !delta.is_empty() {
            let (out, hit) = stops.push(&delta);
            if !out.is_empty() && !on_text(&out) {
                return Ok(None);
            }
            if let Some(s) = hit {
                outcome.finish_reason = FinishReason::Stop;
                outcome.stop_string = Some(s);
                outcome.reasoning_tokens = reasoning.count;
                return Ok(Some(outcome));
            }
        }
        if outcome.completion_tokens >= budget {
            break;
        }
        logits = state.forward(&[tok], pos)?;
        pos += 1;
    }
    // Release text held back by the detokenizer and the stop matcher.
    let tail = detok.flush()?;
    let (mut out, hit) = stops.push(&tail);
    if let Some(s) = hit {
        outcome.finish_reason = FinishReason::Stop;
        outcome.stop_string = Some(s);
    } else {
        out.push_str(&stops.flush());
    }
    if !out.is_empty() && !on_text(&out) {
        return Ok(None);
    }
    outcome.reasoning_tokens = reasoning.count;
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_matcher_holds_back_partial_and_cuts_at_stop() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abc E"), ("abc ".to_string(), None));
        assert_eq!(m.push("N"), (String::new(), None));
        assert_eq!(m.push("Dxyz"), (String::new(), Some("END".to_string())));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abc E"), ("abc ".to_string(), None));
        assert_eq!(m.push("x"), ("Ex".to_string(), None));
        assert_eq!(m.push("E"), (String::new(), None));
        assert_eq!(m.flush(), "E");
    }

    #[test]
    fn reasoning_counter_counts_span_with_tags() {
        let tags = ThinkTokens {
            start: Some(100),
            end: Some(101),
        };
        let mut c = ReasoningCounter::new(tags, &[1, 2]);
        for t in [100, 5, 6, 101, 7, 8] {
            c.observe(t);
        }
        assert_eq!(c.count, 4);
        // Prompt ends inside an open <think>.
        let mut c = ReasoningCounter::new(tags, &[1, 100]);
        for t in [5, 101, 7] {
            c.observe(t);
        }
        assert_eq!(c.count, 2);
        // Closed span in the prompt (enable_thinking = false).
        let mut c = ReasoningCounter::new(tags, &[100, 101]);
        c.observe(5);
        assert_eq!(c.count, 0);
    }
}
