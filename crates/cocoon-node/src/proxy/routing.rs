//! Routing: the worker connections a proxy holds, what it remembers of each (reputation), and
//! the choice of a worker for a request.

use cocoon_net::RpcHandle;
use tycho_types::models::StdAddr;

use std::collections::BTreeMap;

use super::log_text;
use crate::chain::Owner;
use crate::protocol::endpoint::{Endpoint, Endpoints, Feature};
use crate::protocol::{Extensions, Refusal, Version};

/// Decayed success rate and latency of one worker connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reputation {
    pub(super) success: f64,
    pub(super) avg_secs: f64,
    pub(super) samples: u32,
}

impl Reputation {
    const ALPHA: f64 = 0.2;

    /// A worker with no history: trusted, expected to be quick.
    pub(super) fn new() -> Self {
        Reputation {
            success: 1.0,
            avg_secs: 0.0,
            samples: 0,
        }
    }

    /// Folds one finished request into the averages (the first one replaces the prior).
    pub(super) fn record(&mut self, outcome: Outcome) {
        let a = if self.samples == 0 { 1.0 } else { Self::ALPHA };
        let ok = matches!(outcome, Outcome::Succeeded { .. });
        self.success += a * (f64::from(u8::from(ok)) - self.success);
        if let Outcome::Succeeded { secs } = outcome {
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

    /// What one failed try costs a caller in expected time (the wait for it, the retry).
    const FAILURE_COST_SECS: f64 = 1.0;

    /// Lower is better: the expected time until one more request is answered here, with
    /// the failed tries on the way (each costing [`Self::FAILURE_COST_SECS`]), scaled by the
    /// load. A worker that fails fast is not mistaken for a fast one.
    pub(super) fn score(&self, running: u32) -> f64 {
        let expected = if self.samples == 0 {
            0.01
        } else {
            self.avg_secs.max(0.001)
        };
        let success = self.success.max(0.05);
        let failed_tries = (1.0 - success) / success;
        f64::from(running + 1) * (expected + failed_tries * Self::FAILURE_COST_SECS)
    }
}

/// How a request ended on a worker, for its reputation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Outcome {
    /// Answered completely, in `secs` seconds.
    Succeeded {
        /// Seconds from forwarding to the last message.
        secs: f64,
    },
    /// Ended in an error, or was moved to another worker.
    Failed,
}

/// One worker connection as routing sees it. `H` is how to reach it (an [`RpcHandle`];
/// unit tests use `()`).
pub(super) struct WorkerLink<H = RpcHandle> {
    /// The worker's owner.
    pub(super) owner: Owner,
    /// Its worker contract at this proxy.
    pub(super) sc: StdAddr,
    /// The base model it serves.
    pub(super) model: String,
    /// The full model id it announced (`NAME@COMMIT:HASH`).
    pub(super) model_id: String,
    /// Its price coefficient (1000 = 1.0×).
    pub(super) coefficient: u32,
    /// Requests this proxy may run on it at once (its share of the worker's capacity).
    pub(super) max_active: u32,
    /// Requests running on it now.
    pub(super) running: u32,
    /// The worker said it takes no requests now.
    pub(super) disabled: bool,
    /// The handshake is complete.
    pub(super) ready: bool,
    /// The link's protocol version.
    pub(super) proto: Version,
    /// The cocoon-rs extensions it offered.
    pub(super) extensions: Extensions,
    /// The endpoints it serves: what it announced, else COCOON's worker's set (an official
    /// worker) or all (one of ours before its announcement).
    pub(super) endpoints: Endpoints,
    /// How to reach it.
    pub(super) handle: H,
    /// Its recent record.
    pub(super) reputation: Reputation,
}

impl<H> WorkerLink<H> {
    /// Ready and enabled: listed to clients and eligible for requests.
    pub(super) fn serving(&self) -> bool {
        self.ready && !self.disabled
    }
}

/// A worker chosen for a request, with one of its slots taken.
#[derive(Debug, Clone)]
pub(super) struct Assignment<H = RpcHandle> {
    /// The connection id.
    pub(super) id: u64,
    /// The worker's owner.
    pub(super) owner: Owner,
    /// Its worker contract.
    pub(super) sc: StdAddr,
    /// The coefficient it prices the request at.
    pub(super) coefficient: u32,
    /// The link's protocol version.
    pub(super) proto: Version,
    /// How to reach it.
    pub(super) handle: H,
}

/// Why no worker can take a request: the refusal and its detail.
pub(super) type NoWorker = (Refusal, String);

/// The worker connections of a proxy by connection id: the load balancer, kept apart from
/// the transport so that its choices can be tested alone.
pub(super) struct WorkerTable<H = RpcHandle> {
    links: BTreeMap<u64, WorkerLink<H>>,
}

impl<H> Default for WorkerTable<H> {
    fn default() -> Self {
        WorkerTable {
            links: BTreeMap::new(),
        }
    }
}

/// What a request needs of a worker beyond its model, price and a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Needs {
    /// A worker that takes the key of an encrypted request (protocol 3 and up).
    pub(crate) request_keys: bool,
    /// A worker that serves this endpoint (`None`: the request's path is not one we know;
    /// the worker judges it).
    pub(crate) endpoint: Option<Endpoint>,
    /// A worker that calls tools (a chat request offering `tools`).
    pub(crate) tools: bool,
}

impl Needs {
    /// Whether a worker serving `set` can take the request.
    fn met_by(self, set: Endpoints) -> bool {
        self.endpoint.is_none_or(|e| set.contains(e)) && (!self.tools || set.offers(Feature::Tools))
    }

    /// Why no worker of `model` can take the request, when none serves what it needs.
    fn unmet(self, model: &str) -> String {
        match self.endpoint {
            Some(Endpoint::ChatCompletions) | None if self.tools => format!(
                "no worker of model {} calls tools (`tools` in /v1/chat/completions)",
                log_text(model)
            ),
            endpoint => format!(
                "no worker of model {} serves {}",
                log_text(model),
                endpoint.map_or("this endpoint", Endpoint::path)
            ),
        }
    }
}

#[cfg(test)]
impl Needs {
    /// Any worker of the model.
    pub(crate) const ANY: Needs = Needs {
        request_keys: false,
        endpoint: None,
        tools: false,
    };
    /// A worker that takes request keys.
    pub(crate) const REQUEST_KEYS: Needs = Needs {
        request_keys: true,
        endpoint: None,
        tools: false,
    };
}

impl<H: Clone> WorkerTable<H> {
    /// Adds a connection (after its hello; not ready yet).
    pub(super) fn insert(&mut self, id: u64, link: WorkerLink<H>) {
        self.links.insert(id, link);
    }

    /// Drops a connection that ended.
    pub(super) fn remove(&mut self, id: u64) -> Option<WorkerLink<H>> {
        self.links.remove(&id)
    }

    /// A connection by id.
    pub(super) fn get(&self, id: u64) -> Option<&WorkerLink<H>> {
        self.links.get(&id)
    }

    /// A connection by id, to update what it announced.
    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut WorkerLink<H>> {
        self.links.get_mut(&id)
    }

    /// Every connection with its id, in id order.
    pub(super) fn all(&self) -> impl Iterator<Item = (u64, &WorkerLink<H>)> {
        self.links.iter().map(|(id, w)| (*id, w))
    }

    /// The connections that take requests.
    pub(super) fn serving(&self) -> impl Iterator<Item = &WorkerLink<H>> {
        self.links.values().filter(|w| w.serving())
    }

    /// [`WorkerTable::serving`] with each connection's id.
    pub(super) fn serving_links(&self) -> impl Iterator<Item = (&u64, &WorkerLink<H>)> {
        self.links.iter().filter(|(_, w)| w.serving())
    }

    /// Picks the worker connection for a request (§4, plus reputation): among ready,
    /// enabled, non-full connections of the model with a coefficient within the client's
    /// limit and not tried yet, that can do what the request `needs`, the lowest expected
    /// completion time.
    pub(super) fn choose(
        &self,
        model: &str,
        max_coefficient: u32,
        exclude: &[u64],
        needs: Needs,
    ) -> Result<u64, NoWorker> {
        let mut known = false;
        let mut unable = false;
        let mut lacks_endpoint = false;
        let mut best: Option<(f64, u64)> = None;
        let mut cheapest_too_expensive: Option<u32> = None;
        for (id, w) in &self.links {
            if w.model != model || !w.ready {
                continue;
            }
            known = true;
            if !needs.met_by(w.endpoints) {
                lacks_endpoint = true;
                continue;
            }
            if w.disabled || w.running >= w.max_active || exclude.contains(id) {
                continue;
            }
            if needs.request_keys && !w.proto.request_keys() {
                unable = true;
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
        let serving = || {
            self.links
                .values()
                .any(|w| w.model == model && w.ready && needs.met_by(w.endpoints))
        };
        match (best, known, cheapest_too_expensive) {
            (Some((_, id)), _, _) => Ok(id),
            (None, false, _) => Err((Refusal::UnknownModel, log_text(model).into_owned())),
            (None, true, _) if lacks_endpoint && !serving() => {
                Err((Refusal::InvalidRequest, needs.unmet(model)))
            }
            (None, true, Some(c)) => Err((
                Refusal::PriceTooHigh,
                format!("can run this query with coefficient={c}"),
            )),
            (None, true, None) if unable => Err((
                Refusal::NoWorker,
                "no worker of this model takes encrypted requests (COCOON protocol 3 or later)"
                    .into(),
            )),
            (None, true, None) => Err((Refusal::NoWorker, String::new())),
        }
    }

    /// [`WorkerTable::choose`], taking one of the chosen worker's slots.
    pub(super) fn assign(
        &mut self,
        model: &str,
        max_coefficient: u32,
        exclude: &[u64],
        needs: Needs,
    ) -> Result<Assignment<H>, NoWorker> {
        let id = self.choose(model, max_coefficient, exclude, needs)?;
        let Some(link) = self.links.get_mut(&id) else {
            return Err((Refusal::NoWorker, String::new()));
        };
        link.running += 1;
        Ok(Assignment {
            id,
            owner: link.owner.clone(),
            sc: link.sc.clone(),
            coefficient: link.coefficient,
            proto: link.proto,
            handle: link.handle.clone(),
        })
    }

    /// Frees the slot a request held on connection `id` and records how it went; the
    /// connection's handle, if it is still open.
    pub(super) fn release(&mut self, id: u64, outcome: Outcome) -> Option<H> {
        let link = self.links.get_mut(&id)?;
        link.running = link.running.saturating_sub(1);
        link.reputation.record(outcome);
        Some(link.handle.clone())
    }

    /// Holds a usage report beyond the bound against connection `id`; its owner, if it is
    /// still connected.
    pub(super) fn overclaimed(&mut self, id: u64) -> Option<Owner> {
        let link = self.links.get_mut(&id)?;
        link.reputation.overclaimed();
        Some(link.owner.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::devnet_address;
    use tycho_types::cell::HashBytes;

    fn owner(coefficient: u32) -> Owner {
        Owner::of(&devnet_address(&format!("owner-{coefficient}")), true)
    }

    fn link(model: &str, coefficient: u32, max_active: u32) -> WorkerLink<()> {
        WorkerLink {
            owner: owner(coefficient),
            sc: StdAddr::new(0, HashBytes::ZERO),
            model: model.to_owned(),
            model_id: format!("{model}@commit:hash"),
            coefficient,
            max_active,
            running: 0,
            disabled: false,
            ready: true,
            proto: Version::new(2),
            extensions: Extensions::OURS,
            endpoints: Endpoints::ALL,
            handle: (),
            reputation: Reputation::new(),
        }
    }

    #[test]
    fn requests_go_only_to_workers_that_serve_their_endpoint() {
        let mut embedder = link("a", 1000, 4);
        embedder.endpoints = Endpoints::of(&[Endpoint::Embeddings]);
        let official = WorkerLink {
            endpoints: Endpoints::COCOON,
            ..link("a", 1000, 4)
        };
        let needs = |e: Endpoint| Needs {
            request_keys: false,
            endpoint: Some(e),
            tools: false,
        };
        let t = table(vec![embedder, official]);
        assert_eq!(t.choose("a", 5000, &[], needs(Endpoint::Embeddings)), Ok(1));
        assert_eq!(
            t.choose("a", 5000, &[], needs(Endpoint::ChatCompletions)),
            Ok(2)
        );
        assert_eq!(
            t.choose("a", 5000, &[], needs(Endpoint::AudioTranscriptions)),
            Ok(2)
        );
        let (r, detail) = t
            .choose("a", 5000, &[], needs(Endpoint::AudioTranslations))
            .expect_err("nobody translates");
        assert_eq!(r, Refusal::InvalidRequest);
        assert_eq!(detail, "no worker of model a serves /v1/audio/translations");
        // A worker that serves it but is busy is busy, not missing.
        let t = table(vec![WorkerLink {
            running: 4,
            ..link("a", 1000, 4)
        }]);
        let (r, _) = t
            .choose("a", 5000, &[], needs(Endpoint::AudioTranslations))
            .expect_err("busy");
        assert_ne!(r, Refusal::InvalidRequest);
    }

    #[test]
    fn tool_requests_go_only_to_workers_that_call_tools() {
        let chat = Endpoints::of(&[Endpoint::ChatCompletions, Endpoint::Completions]);
        let plain = WorkerLink {
            endpoints: chat,
            ..link("a", 900, 4)
        };
        let official = WorkerLink {
            endpoints: Endpoints::COCOON,
            ..link("a", 800, 4)
        };
        let tools = Needs {
            request_keys: false,
            endpoint: Some(Endpoint::ChatCompletions),
            tools: true,
        };
        let t = table(vec![plain, official]);
        let (r, detail) = t.choose("a", 5000, &[], tools).expect_err("no tools");
        assert_eq!(r, Refusal::InvalidRequest);
        assert_eq!(
            detail,
            "no worker of model a calls tools (`tools` in /v1/chat/completions)"
        );
        let t = table(vec![
            WorkerLink {
                endpoints: chat,
                ..link("a", 900, 4)
            },
            WorkerLink {
                endpoints: chat.with(Feature::Tools),
                ..link("a", 1000, 4)
            },
        ]);
        assert_eq!(t.choose("a", 5000, &[], tools), Ok(2));
        let no_tools = Needs {
            tools: false,
            ..tools
        };
        assert!(t.choose("a", 5000, &[], no_tools).is_ok());
    }

    fn table(links: Vec<WorkerLink<()>>) -> WorkerTable<()> {
        let mut t = WorkerTable::default();
        for (id, l) in links.into_iter().enumerate() {
            t.insert(id as u64 + 1, l);
        }
        t
    }

    fn refusal(r: Result<u64, NoWorker>) -> Refusal {
        r.expect_err("no worker expected").0
    }

    #[test]
    fn encrypted_requests_go_only_to_workers_that_take_keys() {
        let mut old = link("a", 1000, 4);
        old.proto = Version::new(2);
        let mut new = link("a", 3000, 4);
        new.proto = Version::new(4);
        let t = table(vec![old, new]);
        assert_eq!(
            t.choose("a", 5000, &[], Needs::ANY),
            Ok(1),
            "the first of equals"
        );
        assert_eq!(t.choose("a", 5000, &[], Needs::REQUEST_KEYS), Ok(2));
        let (r, detail) = t
            .choose("a", 5000, &[2], Needs::REQUEST_KEYS)
            .expect_err("only a protocol-2 worker left");
        assert_eq!(r, Refusal::NoWorker);
        assert!(detail.contains("encrypted"), "{detail}");
    }

    #[test]
    fn only_ready_enabled_workers_of_the_model_within_the_price_are_chosen() {
        let mut t = table(vec![
            link("a", 1000, 4),
            link("b", 500, 4),
            link("a", 3000, 4),
        ]);
        assert_eq!(t.choose("a", 2000, &[], Needs::ANY), Ok(1));
        assert_eq!(t.choose("b", 2000, &[], Needs::ANY), Ok(2));
        assert_eq!(
            refusal(t.choose("c", 2000, &[], Needs::ANY)),
            Refusal::UnknownModel
        );
        // Within the price only the 1000 one; above it, the cheapest is named.
        let (r, detail) = t.choose("a", 999, &[], Needs::ANY).expect_err("too cheap");
        assert_eq!(r, Refusal::PriceTooHigh);
        assert_eq!(detail, "can run this query with coefficient=1000");
        // Disabled and not-yet-ready workers are skipped; a model only they serve is
        // known (not ready: unknown) but has no worker.
        t.get_mut(1).expect("present").disabled = true;
        assert_eq!(t.choose("a", 5000, &[], Needs::ANY), Ok(3));
        t.get_mut(3).expect("present").disabled = true;
        assert_eq!(
            refusal(t.choose("a", 5000, &[], Needs::ANY)),
            Refusal::NoWorker
        );
        t.get_mut(2).expect("present").ready = false;
        assert_eq!(
            refusal(t.choose("b", 5000, &[], Needs::ANY)),
            Refusal::UnknownModel
        );
        assert_eq!(t.serving().count(), 0);
    }

    #[test]
    fn full_and_tried_workers_are_skipped() {
        let mut t = table(vec![link("a", 1000, 1), link("a", 1000, 1)]);
        let first = t.assign("a", 1000, &[], Needs::ANY).expect("a worker");
        let second = t
            .assign("a", 1000, &[first.id], Needs::ANY)
            .expect("the other worker");
        assert_ne!(first.id, second.id);
        // Both full now.
        assert_eq!(
            refusal(t.choose("a", 1000, &[], Needs::ANY)),
            Refusal::NoWorker
        );
        t.release(first.id, Outcome::Failed);
        // The freed one is excluded as already tried: nobody left for this request.
        assert_eq!(
            refusal(t.choose("a", 1000, &[first.id], Needs::ANY)),
            Refusal::NoWorker
        );
        assert_eq!(t.choose("a", 1000, &[], Needs::ANY), Ok(first.id));
    }

    #[test]
    fn load_and_reputation_steer_the_choice() {
        let mut t = table(vec![link("a", 1000, 8), link("a", 1000, 8)]);
        // Equal workers: the less loaded one wins.
        let a = t.assign("a", 1000, &[], Needs::ANY).expect("worker");
        assert_ne!(t.choose("a", 1000, &[], Needs::ANY), Ok(a.id));
        t.release(a.id, Outcome::Succeeded { secs: 0.5 });
        // A slow worker loses to one with no history until the other proves slower.
        let other = if a.id == 1 { 2 } else { 1 };
        assert_eq!(t.choose("a", 1000, &[], Needs::ANY), Ok(other));
        t.get_mut(other)
            .expect("present")
            .reputation
            .record(Outcome::Succeeded { secs: 1.0 });
        assert_eq!(t.choose("a", 1000, &[], Needs::ANY), Ok(a.id));
        // Failures outweigh a twice better speed.
        for _ in 0..5 {
            t.get_mut(a.id)
                .expect("present")
                .reputation
                .record(Outcome::Failed);
        }
        assert_eq!(t.choose("a", 1000, &[], Needs::ANY), Ok(other));
        // An overclaim costs like several failures.
        let mut t = table(vec![link("a", 1000, 8), link("a", 1000, 8)]);
        for id in [1, 2] {
            t.release(id, Outcome::Succeeded { secs: 1.0 });
        }
        assert_eq!(t.overclaimed(1), Some(owner(1000)));
        assert_eq!(t.choose("a", 1000, &[], Needs::ANY), Ok(2));
        assert_eq!(t.overclaimed(9), None);
    }

    #[test]
    fn reputation_decays_towards_recent_behaviour() {
        let mut r = Reputation::new();
        assert_eq!(r.score(0), 0.01, "no history: optimistic");
        r.record(Outcome::Succeeded { secs: 1.0 });
        assert_eq!(
            (r.success, r.avg_secs),
            (1.0, 1.0),
            "the first sample replaces the prior"
        );
        r.record(Outcome::Failed);
        assert!((r.success - 0.8).abs() < 1e-9, "{}", r.success);
        assert_eq!(r.avg_secs, 1.0, "a failure has no latency");
        r.record(Outcome::Succeeded { secs: 2.0 });
        assert!((r.avg_secs - 1.2).abs() < 1e-9, "{}", r.avg_secs);
        // Recovery: successes bring the rate back towards 1.
        for _ in 0..30 {
            r.record(Outcome::Succeeded { secs: 1.0 });
        }
        assert!(r.success > 0.99, "{}", r.success);
        // Load scales the expected time; a failing worker's score is capped at 20×.
        assert_eq!(r.score(3), 4.0 * r.score(0));
        // A worker that only fails, however fast, scores worse than a healthy slow one
        // (the score used to divide its zero latency by the failure rate, and it won).
        let mut bad = Reputation::new();
        bad.record(Outcome::Succeeded { secs: 0.001 });
        for _ in 0..50 {
            bad.record(Outcome::Failed);
        }
        let mut slow = Reputation::new();
        slow.record(Outcome::Succeeded { secs: 2.0 });
        assert!(
            bad.score(0) > 5.0 * slow.score(0),
            "{} vs {}",
            bad.score(0),
            slow.score(0)
        );
        let mut never = Reputation::new();
        never.record(Outcome::Failed);
        assert!(
            never.score(0) > slow.score(0),
            "{} vs {}",
            never.score(0),
            slow.score(0)
        );
    }
}
