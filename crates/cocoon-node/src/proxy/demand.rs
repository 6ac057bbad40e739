//! Demand per model: what clients asked of this proxy and what it could not serve, so that
//! GPU owners (and an operator's autoscaler) can add workers where they are short and
//! drain them where they are idle.
//!
//! Per model: requests routed and refused (no worker connected, every worker busy, every
//! worker above the client's `max_coefficient`), the price clients accepted (their
//! `max_coefficient`) and paid (the chosen worker's coefficient), since start and over the
//! last five minutes; with the serving workers' load at the time of the report.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::protocol::Refusal;
use crate::util::lock;

/// Most models tracked: requests for more (made-up names) are not recorded.
pub const MAX_MODELS: usize = 256;

/// Minutes the recent window covers.
pub const RECENT_MINUTES: u64 = 5;

/// Upper bounds of the price buckets (coefficient, 1000 = 1.0×); the last is unbounded.
pub const PRICE_BUCKETS: [u32; 8] = [500, 1000, 1500, 2000, 3000, 4000, 6000, 8000];

/// Counts of one model over some span.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Requests sent to a worker.
    pub routed: u64,
    /// Refused: no worker of the model connected and ready.
    pub refused_no_worker: u64,
    /// Refused: every worker of the model at its limit of running requests.
    pub refused_busy: u64,
    /// Refused: every worker of the model priced above the client's `max_coefficient`.
    pub refused_price: u64,
    /// Per [`PRICE_BUCKETS`] (plus one above): requests whose client accepted up to that
    /// coefficient, routed or not.
    pub accepted_price: [u64; PRICE_BUCKETS.len() + 1],
    /// Highest `max_coefficient` among the requests refused for price (0: none).
    pub highest_refused_price: u32,
    /// Sum of the coefficients routed requests ran at (their mean is this ÷ `routed`).
    pub paid_coefficient_sum: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.routed += other.routed;
        self.refused_no_worker += other.refused_no_worker;
        self.refused_busy += other.refused_busy;
        self.refused_price += other.refused_price;
        for (a, b) in self.accepted_price.iter_mut().zip(other.accepted_price) {
            *a += b;
        }
        self.highest_refused_price = self.highest_refused_price.max(other.highest_refused_price);
        self.paid_coefficient_sum += other.paid_coefficient_sum;
    }

    /// Requests that found no room (no worker, or all busy): demand beyond the supply.
    pub fn unserved(&self) -> u64 {
        self.refused_no_worker + self.refused_busy
    }
}

fn bucket(max_coefficient: u32) -> usize {
    PRICE_BUCKETS
        .iter()
        .position(|&b| max_coefficient <= b)
        .unwrap_or(PRICE_BUCKETS.len())
}

#[derive(Debug, Default)]
struct ModelDemand {
    total: Counts,
    /// (minute, counts of that minute), oldest first, at most [`RECENT_MINUTES`].
    minutes: VecDeque<(u64, Counts)>,
}

impl ModelDemand {
    fn this_minute(&mut self, minute: u64) -> &mut Counts {
        while self
            .minutes
            .front()
            .is_some_and(|(m, _)| *m + RECENT_MINUTES <= minute)
        {
            self.minutes.pop_front();
        }
        if self.minutes.back().is_none_or(|(m, _)| *m != minute) {
            self.minutes.push_back((minute, Counts::default()));
        }
        match self.minutes.back_mut() {
            Some((_, c)) => c,
            None => unreachable!("pushed above"),
        }
    }
}

/// The demand the proxy has seen, per model.
#[derive(Debug, Default)]
pub struct Demand {
    models: Mutex<BTreeMap<String, ModelDemand>>,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent to a worker pricing at this coefficient.
    Routed {
        /// The worker's coefficient.
        coefficient: u32,
    },
    /// Refused before any worker.
    Refused(Refusal),
}

impl Demand {
    /// Records a request for `model` whose client accepted up to `max_coefficient`, at
    /// unix minute `minute`.
    pub fn record(&self, model: &str, max_coefficient: u32, outcome: Outcome, minute: u64) {
        let mut models = lock(&self.models);
        if !models.contains_key(model) {
            if models.len() >= MAX_MODELS {
                return;
            }
            models.insert(model.to_owned(), ModelDemand::default());
        }
        let Some(entry) = models.get_mut(model) else {
            return;
        };
        let update = |c: &mut Counts| {
            c.accepted_price[bucket(max_coefficient)] += 1;
            match outcome {
                Outcome::Routed { coefficient } => {
                    c.routed += 1;
                    c.paid_coefficient_sum += u64::from(coefficient);
                }
                Outcome::Refused(Refusal::PriceTooHigh) => {
                    c.refused_price += 1;
                    c.highest_refused_price = c.highest_refused_price.max(max_coefficient);
                }
                Outcome::Refused(Refusal::WorkerBusy) => c.refused_busy += 1,
                Outcome::Refused(_) => c.refused_no_worker += 1,
            }
        };
        update(&mut entry.total);
        update(entry.this_minute(minute));
    }

    /// Per model: counts since start and over the last [`RECENT_MINUTES`] minutes (at
    /// unix minute `minute`).
    pub fn snapshot(&self, minute: u64) -> BTreeMap<String, (Counts, Counts)> {
        let models = lock(&self.models);
        models
            .iter()
            .map(|(name, d)| {
                let mut recent = Counts::default();
                for (m, c) in &d.minutes {
                    if *m + RECENT_MINUTES > minute {
                        recent.add(c);
                    }
                }
                (name.clone(), (d.total.clone(), recent))
            })
            .collect()
    }
}

/// The serving workers of one model now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Supply {
    /// Connected, ready workers.
    pub workers: u64,
    /// Requests they are running.
    pub running: u64,
    /// Requests they take at most.
    pub max_running: u64,
    /// The cheapest worker's coefficient.
    pub lowest_coefficient: Option<u32>,
    /// The dearest worker's coefficient (0: no worker).
    pub highest_coefficient: u32,
}

/// One model's supply and demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelReport {
    /// The model's base name.
    pub model: String,
    /// Its workers now.
    pub supply: Supply,
    /// Since the proxy started.
    pub total: Counts,
    /// Over the last [`RECENT_MINUTES`] minutes.
    pub recent: Counts,
}

/// The current unix minute.
pub fn unix_minute() -> u64 {
    crate::util::unix_time() / 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_outcome_and_price_with_a_five_minute_window() {
        let d = Demand::default();
        d.record("m", 1000, Outcome::Routed { coefficient: 800 }, 100);
        d.record("m", 1200, Outcome::Routed { coefficient: 1200 }, 100);
        d.record("m", 900, Outcome::Refused(Refusal::PriceTooHigh), 101);
        d.record("m", 700, Outcome::Refused(Refusal::PriceTooHigh), 101);
        d.record("m", 4000, Outcome::Refused(Refusal::WorkerBusy), 103);
        d.record("other", 9000, Outcome::Refused(Refusal::NoWorker), 103);
        let now = d.snapshot(104);
        let (total, recent) = &now["m"];
        assert_eq!(total, recent, "everything is within five minutes");
        assert_eq!(
            (total.routed, total.refused_price, total.refused_busy),
            (2, 2, 1)
        );
        assert_eq!(total.highest_refused_price, 900);
        assert_eq!(total.paid_coefficient_sum, 2000);
        assert_eq!(total.accepted_price, [0, 3, 1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(now["other"].0.accepted_price[8], 1, "above every bucket");
        assert_eq!(now["other"].0.unserved(), 1);
        // Two minutes later the first minute has left the window; the totals stay.
        let later = d.snapshot(105);
        let (total, recent) = &later["m"];
        assert_eq!(total.routed, 2);
        assert_eq!(recent.routed, 0);
        assert_eq!(recent.refused_price, 2);
        let much_later = d.snapshot(200);
        assert_eq!(much_later["m"].1, Counts::default());
    }

    #[test]
    fn made_up_model_names_cannot_grow_it_without_bound() {
        let d = Demand::default();
        for i in 0..MAX_MODELS + 50 {
            d.record(
                &format!("m{i}"),
                1000,
                Outcome::Refused(Refusal::UnknownModel),
                1,
            );
        }
        assert_eq!(d.snapshot(1).len(), MAX_MODELS);
        d.record("m0", 1000, Outcome::Routed { coefficient: 1000 }, 1);
        assert_eq!(d.snapshot(1)["m0"].0.routed, 1, "known models still count");
    }
}
