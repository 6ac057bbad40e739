//! Token sampling: temperature, top-k, top-p, OpenAI presence/frequency penalties and
//! a seedable RNG.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling parameters of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling mass in `(0, 1]`.
    pub top_p: f32,
    /// Keep only the `k` most likely tokens; `None` disables.
    pub top_k: Option<usize>,
    /// RNG seed; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// OpenAI presence penalty in `[-2, 2]`.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty in `[-2, 2]`.
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// Stateful sampler for one sequence.
pub(crate) struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    counts: HashMap<u32, u32>,
}

impl Sampler {
    pub(crate) fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Self {
            params,
            rng,
            counts: HashMap::new(),
        }
    }

    /// Picks the next token from `logits` (modified in place) and records it for the
    /// penalties.
    pub(crate) fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&tok, &n) in &self.counts {
                if let Some(l) = logits.get_mut(tok as usize) {
                    *l -= p.frequency_penalty * n as f32 + p.presence_penalty;
                }
            }
        }
        let tok = if p.temperature <= 1e-5 {
            argmax(logits)
        } else {
            self.sample_stochastic(logits)
        };
        *self.counts.entry(tok).or_default() += 1;
        tok
    }

    fn sample_stochastic(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let max = logits
            .iter()
            .copied()
            .filter(|l| l.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return 0;
        }
        // Unnormalized probabilities.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp()))
            .collect();
        let desc = |a: &(u32, f32), b: &(u32, f32)| {
            b.1.partial_cmp(&a.1)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.0.cmp(&b.0))
        };
        if let Some(k) = p.top_k.filter(|&k| k > 0 && k < cand.len()) {
            cand.select_nth_unstable_by(k - 1, desc);
            cand.truncate(k);
        }
        if p.top_p < 1.0 {
            let total: f32 = cand.iter().map(|c| c.1).sum();
            let target = p.top_p * total;
            // Usually the nucleus is small: sort only the head when it suffices.
            let head = 256.min(cand.len());
            if head < cand.len() {
                cand.select_nth_unstable_by(head - 1, desc);
            }
            cand[..head].sort_unstable_by(desc);
            let mut cut = None;
            let mut acc = 0.0;
            for (i, c) in cand[..head].iter().enumerate() {
                acc += c.1;
                if acc >= target {
                    cut = Some(i + 1);
                    break;
                }
            }
            let cut = match cut {
                Some(c) => c,
                None => {
                    cand.sort_unstable_by(desc);
                    let mut acc = 0.0;
                    cand.iter()
                        .position(|c| {
                            acc += c.1;
                            acc >= target
                        })
                        .map_or(cand.len(), |i| i + 1)
                }
            };
            cand.truncate(cut.max(1));
        }
        let total: f32 = cand.iter().map(|c| c.1).sum();
        let mut r = self.rng.gen::<f32>() * total;
        for &(tok, w) in &cand {
            if r < w {
                return tok;
            }
            r -= w;
        }
        cand.last().map_or(0, |c| c.0)
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut logits = vec![0.0f32; 1000];
        logits[7] = 20.0;
        logits[8] = 19.0;
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.5,
            seed: Some(1),
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut logits.clone()), 7);
        }
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.99,
            top_k: Some(2),
            seed: Some(1),
            ..Default::default()
        });
        let picks: std::collections::BTreeSet<u32> =
            (0..200).map(|_| s.sample(&mut logits.clone())).collect();
        assert_eq!(picks, [7, 8].into_iter().collect());
    }

    #[test]
    fn greedy_picks_max() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0]), 1);
    }

    #[test]
    fn frequency_penalty_changes_choice() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            frequency_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.0]), 1);
        // Token 1 now carries a 2.0 penalty: 3.0 - 2.0 < 2.0.
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.0]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_is_deterministic() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7) % 13) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                top_p: 0.9,
                ..Default::default()
            });
            (0..20)
                .map(|_| s.sample(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let mut s = Sampler::new(SamplingParams {
            top_k: Some(1),
            ..Default::default()
        });
        assert_eq!(s.sample(&mut logits.clone()), argmax(&logits));
    }
}
