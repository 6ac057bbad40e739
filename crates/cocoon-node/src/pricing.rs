//! Token pricing: adjusted tokens, costs and reservations (cocoon-protocol.md §3.3, §3.4,
//! §5.1, §5.2). This is the one place where COCOON's price formulas live.
//!
//! Accounting counts *adjusted* tokens: raw tokens × worker coefficient / 1000 × the
//! token class multiplier / 10000. The formula is COCOON's f64 expression, evaluated left
//! to right and truncated, reproduced exactly so that our numbers equal the C++ ones.
//! Money is integer nanoTON everywhere else.

use serde::{Deserialize, Serialize};

/// A coefficient of 1000 means 1.0× (the worker's price factor).
pub const COEFFICIENT_ONE: u32 = 1000;
/// A multiplier of 10000 means 1.0× (the root's per-class price factors).
pub const MULTIPLIER_ONE: u32 = 10_000;

/// Raw token counts of one answer, as reported by the model server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawUsage {
    /// `usage.prompt_tokens` (includes the cached ones).
    pub prompt: u64,
    /// `usage.prompt_tokens_details.cached_tokens`.
    pub cached: u64,
    /// `usage.completion_tokens` (includes the reasoning ones).
    pub completion: u64,
    /// `usage.completion_tokens_details.reasoning_tokens` (or `usage.reasoning_tokens`).
    pub reasoning: u64,
}

impl RawUsage {
    /// Field-wise maximum: usage counters only ever grow during one answer.
    pub fn max(self, other: RawUsage) -> RawUsage {
        RawUsage {
            prompt: self.prompt.max(other.prompt),
            cached: self.cached.max(other.cached),
            completion: self.completion.max(other.completion),
            reasoning: self.reasoning.max(other.reasoning),
        }
    }
}

/// The root's per-class price multipliers (10000 = 1.0×).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multipliers {
    /// Uncached prompt tokens.
    pub prompt: u32,
    /// Cached prompt tokens.
    pub cached: u32,
    /// Completion tokens that are not reasoning.
    pub completion: u32,
    /// Reasoning tokens.
    pub reasoning: u32,
}

impl Default for Multipliers {
    fn default() -> Self {
        Multipliers {
            prompt: MULTIPLIER_ONE,
            cached: MULTIPLIER_ONE,
            completion: MULTIPLIER_ONE,
            reasoning: MULTIPLIER_ONE,
        }
    }
}

/// Prices from the root contract, in nanoTON per adjusted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    /// Paid by the client per adjusted token.
    pub price_per_token: u64,
    /// Received by the worker per adjusted token; the rest is the proxy's commission.
    pub worker_fee_per_token: u64,
    /// Per-class multipliers.
    pub multipliers: Multipliers,
}

/// Adjusted token counts of one request (the TL `tokensUsed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustedTokens {
    /// Uncached prompt tokens, adjusted.
    pub prompt: u64,
    /// Cached prompt tokens, adjusted.
    pub cached: u64,
    /// Non-reasoning completion tokens, adjusted.
    pub completion: u64,
    /// Reasoning tokens, adjusted.
    pub reasoning: u64,
}

impl AdjustedTokens {
    /// The sum of the four classes (`total_tokens_used`).
    pub fn total(&self) -> u64 {
        self.prompt + self.cached + self.completion + self.reasoning
    }

    /// As the TL `tokensUsed` value (bare).
    pub fn to_tl(&self) -> cocoon_tl::types::TokensUsed {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        cocoon_tl::types::TokensUsed {
            prompt_tokens_used: clamp(self.prompt),
            cached_tokens_used: clamp(self.cached),
            completion_tokens_used: clamp(self.completion),
            reasoning_tokens_used: clamp(self.reasoning),
            total_tokens_used: clamp(self.total()),
        }
    }

    /// From a TL `tokensUsed` received from a peer; negative counts become 0 and the
    /// peer's total is recomputed, never trusted.
    pub fn from_tl(t: &cocoon_tl::types::TokensUsed) -> Self {
        let clamp = |v: i64| u64::try_from(v).unwrap_or(0);
        AdjustedTokens {
            prompt: clamp(t.prompt_tokens_used),
            cached: clamp(t.cached_tokens_used),
            completion: clamp(t.completion_tokens_used),
            reasoning: clamp(t.reasoning_tokens_used),
        }
    }
}

/// COCOON's adjustment of one token class:
/// `trunc((f64)t * ((f64)coef * 0.001) * (f64)mult * 0.0001)`, left to right.
pub fn adjust(tokens: u64, coefficient: u32, multiplier: u32) -> u64 {
    let v = tokens as f64 * (f64::from(coefficient) * 0.001) * f64::from(multiplier) * 0.0001;
    // `as` truncates toward zero and saturates, which is what the C++ cast does for the
    // values that can occur (non-negative, far below 2^63).
    v as u64
}

/// Adjusted tokens of one answer: cached tokens are taken out of the prompt and reasoning
/// tokens out of the completion first, then each class is adjusted on its own.
pub fn adjusted_usage(raw: RawUsage, coefficient: u32, m: Multipliers) -> AdjustedTokens {
    AdjustedTokens {
        prompt: adjust(raw.prompt.saturating_sub(raw.cached), coefficient, m.prompt),
        cached: adjust(raw.cached, coefficient, m.cached),
        completion: adjust(
            raw.completion.saturating_sub(raw.reasoning),
            coefficient,
            m.completion,
        ),
        reasoning: adjust(raw.reasoning, coefficient, m.reasoning),
    }
}

/// The cost fields injected into a response's `usage` object (nanoTON, §5.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// `(prompt_adj + cached_adj) × price`.
    pub prompt_total_cost: u64,
    /// `(completion_adj + reasoning_adj) × price`.
    pub completion_total_cost: u64,
    /// `total_adj × price`.
    pub total_cost: u64,
}

/// What the client pays for `tokens` at `price_per_token`.
pub fn cost(tokens: AdjustedTokens, price_per_token: u64) -> Cost {
    Cost {
        prompt_total_cost: (tokens.prompt + tokens.cached).saturating_mul(price_per_token),
        completion_total_cost: (tokens.completion + tokens.reasoning)
            .saturating_mul(price_per_token),
        total_cost: tokens.total().saturating_mul(price_per_token),
    }
}

/// How the client's payment for `tokens` adjusted tokens splits (all nanoTON, exact):
/// `client_pays = worker_earns + proxy_commission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// `tokens × price_per_token`.
    pub client_pays: u64,
    /// `tokens × worker_fee_per_token`.
    pub worker_earns: u64,
    /// `tokens × (price_per_token − worker_fee_per_token)`.
    pub proxy_commission: u64,
}

/// Splits the price of `tokens` between worker and proxy. Fails if the fee exceeds the
/// price or the amounts overflow `u64` nanoTON.
pub fn settle(tokens: u64, prices: &Prices) -> Option<Settlement> {
    let commission_per_token = prices
        .price_per_token
        .checked_sub(prices.worker_fee_per_token)?;
    Some(Settlement {
        client_pays: tokens.checked_mul(prices.price_per_token)?,
        worker_earns: tokens.checked_mul(prices.worker_fee_per_token)?,
        proxy_commission: tokens.checked_mul(commission_per_token)?,
    })
}

/// The default `max_tokens` used for reservations when a request sets none (§3.4).
pub const DEFAULT_MAX_TOKENS: u64 = 1000;

/// Adjusted tokens the proxy reserves for a request: `max_tokens` plus the query size,
/// at the client's `max_coefficient` and a 1.0× multiplier (§3.4).
pub fn reservation(max_tokens: u64, query_len: usize, max_coefficient: u32) -> u64 {
    adjust(
        max_tokens.saturating_add(query_len as u64),
        max_coefficient,
        MULTIPLIER_ONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BENCH_USAGE: RawUsage = RawUsage {
        prompt: 34,
        cached: 11,
        completion: 100,
        reasoning: 10,
    };

    #[test]
    fn spec_vector_134() {
        let adj = adjusted_usage(BENCH_USAGE, 1000, Multipliers::default());
        assert_eq!(
            (adj.prompt, adj.cached, adj.completion, adj.reasoning),
            (23, 11, 90, 10)
        );
        assert_eq!(adj.total(), 134);
    }

    #[test]
    fn spec_vector_252() {
        let m = Multipliers {
            prompt: 11_000,
            cached: 12_000,
            completion: 13_000,
            reasoning: 14_000,
        };
        let adj = adjusted_usage(BENCH_USAGE, 1500, m);
        assert_eq!(
            (adj.prompt, adj.cached, adj.completion, adj.reasoning),
            (37, 19, 175, 21)
        );
        assert_eq!(adj.total(), 252);
    }

    #[test]
    fn truncation_follows_the_f64_order_of_operations() {
        // 3 × 0.333 × 1.0 = 0.999 → 0, not a rounded 1.
        assert_eq!(adjust(3, 333, 10_000), 0);
        // 10 × 1.1 × 1.0 in f64 is 11.000000000000002 → 11.
        assert_eq!(adjust(10, 1100, 10_000), 11);
        // 7 × (0.001×1000=1.0) × 3333 × 0.0001 = 2.3331 → 2.
        assert_eq!(adjust(7, 1000, 3333), 2);
    }

    #[test]
    fn cost_fields() {
        let adj = adjusted_usage(BENCH_USAGE, 1000, Multipliers::default());
        assert_eq!(
            cost(adj, 2),
            Cost {
                prompt_total_cost: 68,
                completion_total_cost: 200,
                total_cost: 268
            }
        );
    }

    #[test]
    fn reservation_uses_query_size_and_max_coefficient() {
        assert_eq!(reservation(1000, 500, 4000), 6000);
        assert_eq!(reservation(0, 0, 4000), 0);
    }

    #[test]
    fn settle_rejects_fee_above_price() {
        let prices = Prices {
            price_per_token: 1,
            worker_fee_per_token: 2,
            multipliers: Multipliers::default(),
        };
        assert_eq!(settle(10, &prices), None);
    }

    proptest! {
        #[test]
        fn money_is_conserved(tokens in 0u64..1 << 40, price in 0u64..1 << 20, fee_part in 0u64..=100) {
            let prices = Prices {
                price_per_token: price,
                worker_fee_per_token: price * fee_part / 100,
                multipliers: Multipliers::default(),
            };
            let s = settle(tokens, &prices).expect("no overflow in range");
            prop_assert_eq!(s.client_pays, s.worker_earns + s.proxy_commission);
        }

        #[test]
        fn adjusted_never_exceeds_scaled_raw(
            prompt in 0u64..1_000_000, cached in 0u64..1_000_000,
            completion in 0u64..1_000_000, reasoning in 0u64..1_000_000,
            coef in 0u32..10_000,
        ) {
            let raw = RawUsage { prompt, cached, completion, reasoning };
            let adj = adjusted_usage(raw, coef, Multipliers::default());
            let bound = (prompt.max(cached) + completion.max(reasoning)) as f64 * f64::from(coef) / 1000.0;
            prop_assert!(adj.total() as f64 <= bound + 1e-6);
            prop_assert_eq!(adj.total(), adj.prompt + adj.cached + adj.completion + adj.reasoning);
        }

        #[test]
        fn tl_round_trip(p in 0u64..1 << 50, c in 0u64..1 << 50, co in 0u64..1 << 50, r in 0u64..1 << 50) {
            let adj = AdjustedTokens { prompt: p, cached: c, completion: co, reasoning: r };
            prop_assert_eq!(AdjustedTokens::from_tl(&adj.to_tl()), adj);
        }
    }
}
