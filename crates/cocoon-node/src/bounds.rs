//! Billing bounded by what a request could have produced: the one place that rule lives
//! (README, "Billing bounds").
//!
//! A usage report is a peer's claim. The worker meters what its model server says, and the
//! proxy books what the worker says; either may be hostile or broken. Both cap the claim by
//! what is physically possible for the request:
//!
//! * **prompt** tokens (cached included) by the bytes of the request that was relayed,
//!   plus [`PROMPT_ALLOWANCE`] for what a chat template adds: a byte-level tokenizer never
//!   makes more tokens than bytes;
//! * **completion** tokens (reasoning included) by the bytes of the answer that was
//!   relayed, plus [`COMPLETION_ALLOWANCE`] for special tokens that print nothing, and,
//!   on the worker, by the request's own `max_tokens` × `n`;
//! * the **total** (proxy only) by the request's reservation, which the proxy admitted
//!   only within the client's available balance: no request costs more than its client
//!   allowed (`max_tokens` and `max_coefficient`) or could pay.
//!
//! A claim beyond a bound is clipped to it; the caller logs it with the peer's identity
//! and counts it.

use crate::pricing::{adjust, AdjustedTokens, Multipliers, RawUsage};

/// Prompt tokens a chat template (role markers, a default system prompt) may add beyond
/// the bytes of the request.
pub const PROMPT_ALLOWANCE: u64 = 1024;

/// Completion tokens that print nothing (end-of-sequence and other special tokens).
pub const COMPLETION_ALLOWANCE: u64 = 64;

/// Upper bounds on the raw token counts of one answer (worker side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawBound {
    /// Most prompt tokens (cached included).
    pub prompt: u64,
    /// Most completion tokens (reasoning included).
    pub completion: u64,
}

impl RawBound {
    /// The bound for a request of `request_bytes` whose answer has `answer_bytes` so far,
    /// and that asked for at most `max_completion` completion tokens (all choices), if it
    /// said.
    pub fn new(request_bytes: u64, answer_bytes: u64, max_completion: Option<u64>) -> Self {
        let by_answer = answer_bytes.saturating_add(COMPLETION_ALLOWANCE);
        RawBound {
            prompt: request_bytes.saturating_add(PROMPT_ALLOWANCE),
            completion: max_completion.map_or(by_answer, |m| m.min(by_answer)),
        }
    }

    /// `raw` within the bound; whether anything had to be cut.
    pub fn clip(&self, raw: RawUsage) -> (RawUsage, bool) {
        let prompt = raw.prompt.min(self.prompt);
        let completion = raw.completion.min(self.completion);
        let clipped = RawUsage {
            prompt,
            cached: raw.cached.min(prompt),
            completion,
            reasoning: raw.reasoning.min(completion),
        };
        (clipped, clipped != raw)
    }
}

/// Upper bounds on the adjusted tokens the proxy books for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdjustedBound {
    /// Most prompt + cached adjusted tokens.
    pub prompt: u64,
    /// Most completion + reasoning adjusted tokens.
    pub completion: u64,
    /// Most adjusted tokens in all: the request's reservation.
    pub total: u64,
}

impl AdjustedBound {
    /// The bound for a query of `query_bytes` answered with `answer_bytes`, priced at the
    /// worker's `coefficient` under `multipliers`, that reserved `reserved` adjusted tokens.
    pub fn new(
        query_bytes: u64,
        answer_bytes: u64,
        coefficient: u32,
        multipliers: Multipliers,
        reserved: u64,
    ) -> Self {
        let raw = RawBound::new(query_bytes, answer_bytes, None);
        AdjustedBound {
            prompt: adjust(
                raw.prompt,
                coefficient,
                multipliers.prompt.max(multipliers.cached),
            ),
            completion: adjust(
                raw.completion,
                coefficient,
                multipliers.completion.max(multipliers.reasoning),
            ),
            total: reserved,
        }
    }

    /// `reported` within the bound; whether anything had to be cut. Within each pair the
    /// cheaper-to-verify class is kept first (cached before prompt, reasoning before
    /// completion); over the total, completion is cut first, then reasoning, prompt and
    /// cached.
    pub fn clip(&self, reported: AdjustedTokens) -> (AdjustedTokens, bool) {
        let cached = reported.cached.min(self.prompt);
        let prompt = reported.prompt.min(self.prompt - cached);
        let reasoning = reported.reasoning.min(self.completion);
        let completion = reported.completion.min(self.completion - reasoning);
        let mut classes = [completion, reasoning, prompt, cached];
        let mut excess = classes
            .iter()
            .fold(0u64, |a, &c| a.saturating_add(c))
            .saturating_sub(self.total);
        for class in &mut classes {
            let cut = excess.min(*class);
            *class -= cut;
            excess -= cut;
        }
        let [completion, reasoning, prompt, cached] = classes;
        let clipped = AdjustedTokens {
            prompt,
            cached,
            completion,
            reasoning,
        };
        (clipped, clipped != reported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn honest_usage_passes_unchanged() {
        let bound = RawBound::new(200, 600, Some(1000));
        let raw = RawUsage {
            prompt: 34,
            cached: 11,
            completion: 100,
            reasoning: 10,
        };
        assert_eq!(bound.clip(raw), (raw, false));
    }

    #[test]
    fn absurd_usage_is_cut_to_what_was_relayed() {
        let bound = RawBound::new(200, 600, None);
        let (raw, clipped) = bound.clip(RawUsage {
            prompt: 1 << 62,
            cached: 0,
            completion: 1 << 62,
            reasoning: 1 << 62,
        });
        assert!(clipped);
        assert_eq!(raw.prompt, 200 + PROMPT_ALLOWANCE);
        assert_eq!(raw.completion, 600 + COMPLETION_ALLOWANCE);
        assert_eq!(raw.reasoning, raw.completion);
        // The request's own max_tokens is tighter still.
        let (raw, _) = RawBound::new(200, 600, Some(16)).clip(RawUsage {
            completion: 500,
            ..RawUsage::default()
        });
        assert_eq!(raw.completion, 16);
    }

    #[test]
    fn the_reservation_caps_the_total() {
        let bound = AdjustedBound::new(1000, 1 << 30, 1000, Multipliers::default(), 1500);
        let (t, clipped) = bound.clip(AdjustedTokens {
            prompt: 500,
            cached: 100,
            completion: 1 << 62,
            reasoning: 0,
        });
        assert!(clipped);
        assert_eq!(t.total(), 1500);
        assert_eq!((t.prompt, t.cached, t.completion), (500, 100, 900));
    }

    proptest! {
        #[test]
        fn clipped_tokens_respect_every_bound(
            q in 0u64..1 << 24, a in 0u64..1 << 30, coef in 1u32..10_000,
            m in 1u32..50_000, reserved in 0u64..1 << 40,
            p in 0u64..u64::MAX / 8, c in 0u64..u64::MAX / 8,
            o in 0u64..u64::MAX / 8, r in 0u64..u64::MAX / 8,
        ) {
            let mult = Multipliers { prompt: m, cached: m / 2, completion: m, reasoning: m + 1 };
            let bound = AdjustedBound::new(q, a, coef, mult, reserved);
            let reported = AdjustedTokens { prompt: p, cached: c, completion: o, reasoning: r };
            let (t, clipped) = bound.clip(reported);
            prop_assert!(t.prompt + t.cached <= bound.prompt);
            prop_assert!(t.completion + t.reasoning <= bound.completion);
            prop_assert!(t.total() <= bound.total);
            prop_assert!(t.prompt <= p && t.cached <= c && t.completion <= o && t.reasoning <= r);
            prop_assert_eq!(clipped, t != reported);
            // Within the bounds nothing changes.
            let (again, clipped_again) = bound.clip(t);
            prop_assert_eq!(again, t);
            prop_assert!(!clipped_again);
        }

        #[test]
        fn raw_clip_keeps_the_parts_inside_their_wholes(
            rq in 0u64..1 << 24, an in 0u64..1 << 30, max in proptest::option::of(0u64..1 << 20),
            p in 0u64..u64::MAX, c in 0u64..u64::MAX, o in 0u64..u64::MAX, r in 0u64..u64::MAX,
        ) {
            let bound = RawBound::new(rq, an, max);
            let (u, _) = bound.clip(RawUsage { prompt: p, cached: c, completion: o, reasoning: r });
            prop_assert!(u.prompt <= bound.prompt && u.cached <= u.prompt);
            prop_assert!(u.completion <= bound.completion && u.reasoning <= u.completion);
        }
    }
}
