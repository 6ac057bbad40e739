//! Routing: the worker connections a proxy holds, what it remembers of each (reputation), and
//! the choice of a worker for a request.

use cocoon_net::RpcHandle;
use tycho_types::models::StdAddr;

use super::{log_text, State};
use crate::protocol::{Refusal, Version};

/// Decayed success rate and latency of one worker connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reputation {
    pub(super) success: f64,
    pub(super) avg_secs: f64,
    pub(super) samples: u32,
}

impl Reputation {
    const ALPHA: f64 = 0.2;

    pub(super) fn new() -> Self {
        Reputation {
            success: 1.0,
            avg_secs: 0.0,
            samples: 0,
        }
    }

    pub(super) fn record(&mut self, ok: bool, secs: f64) {
        let a = if self.samples == 0 { 1.0 } else { Self::ALPHA };
        self.success += a * (f64::from(u8::from(ok)) - self.success);
        if ok {
            self.avg_secs += a * (secs - self.avg_secs);
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// A usage report beyond what the request could have produced: weighs like several
    /// failures, so the worker gets little traffic until it behaves for a while.
    pub(super) fn overclaimed(&mut self) {
        self.success *= 0.25;
        self.samples = self.samples.saturating_add(1);
    }

    /// Lower is better: expected time of one more request, inflated by failures.
    pub(super) fn score(&self, running: u32) -> f64 {
        let expected = if self.samples == 0 {
            0.01
        } else {
            self.avg_secs.max(0.001)
        };
        f64::from(running + 1) * expected / self.success.max(0.05)
    }
}

pub(super) struct WorkerLink {
    pub(super) owner: String,
    /// Its worker contract at this proxy.
    pub(super) sc: StdAddr,
    pub(super) model: String,
    pub(super) coefficient: u32,
    pub(super) max_active: u32,
    pub(super) running: u32,
    pub(super) disabled: bool,
    pub(super) ready: bool,
    pub(super) proto: Version,
    pub(super) handle: RpcHandle,
    pub(super) reputation: Reputation,
}

/// Picks the worker connection for a request (§4, plus reputation): among ready,
/// enabled, non-full connections of the model with a coefficient within the client's
/// limit and not tried yet, the lowest expected completion time.
pub(super) fn choose_worker(
    state: &State,
    model: &str,
    max_coefficient: u32,
    exclude: &[u64],
) -> Result<u64, (Refusal, String)> {
    let mut known = false;
    let mut best: Option<(f64, u64)> = None;
    let mut cheapest_too_expensive: Option<u32> = None;
    for (id, w) in &state.workers {
        if w.model != model || !w.ready {
            continue;
        }
        known = true;
        if w.disabled || w.running >= w.max_active || exclude.contains(id) {
            continue;
        }
        if w.coefficient > max_coefficient {
            cheapest_too_expensive =
                Some(cheapest_too_expensive.map_or(w.coefficient, |c| c.min(w.coefficient)));
            continue;
        }
        let score = w.reputation.score(w.running);
        if best.is_none_or(|(b, _)| score < b) {
            best = Some((score, *id));
        }
    }
    match (best, known, cheapest_too_expensive) {
        (Some((_, id)), _, _) => Ok(id),
        (None, false, _) => Err((Refusal::UnknownModel, log_text(model).into_owned())),
        (None, true, Some(c)) => Err((
            Refusal::PriceTooHigh,
            format!("can run this query with coefficient={c}"),
        )),
        (None, true, None) => Err((Refusal::NoWorker, String::new())),
    }
}
