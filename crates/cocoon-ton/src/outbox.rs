//! The cocoon wallet's send queue, as the C++ `CocoonWallet` runs it (spec §6.3):
//!
//! * messages are queued; one external request carries at most 4 of them;
//! * a batch stops before the total value plus a 0.1 TON reserve would exceed
//!   `min(1000 TON, balance)`; if not even the first message fits, nothing is sent;
//! * nothing is sent while the balance is below the configured low-balance mark;
//! * requests are valid for an hour, carry the StateInit while seqno is 0, and
//!   are resent every 30 s until a wallet transaction with the same body hash
//!   is seen; then the batch's messages are confirmed;
//! * if the wallet seqno moves past the in-flight request without that
//!   transaction being seen, the batch is sent again with the new seqno.
//!
//! The outbox is pure state: the caller feeds it chain observations and sends
//! what [`WalletOutbox::poll`] returns through its [`crate::chain::ChainBackend`].

use std::collections::VecDeque;

use crate::chain::Transaction;
use crate::error::Result;
use crate::root::ONE_TON;
use crate::wallet::{cocoon_send_mode, CocoonWallet, ExternalMessage, InternalMessage};

/// Reserve kept per batch (0.1 TON, the C++ `coins_reserve`).
pub const BATCH_RESERVE: u64 = ONE_TON / 10;
/// Most value one batch may move (1000 TON).
pub const BATCH_VALUE_CAP: u64 = 1000 * ONE_TON;
/// Seconds between resends of an unconfirmed request.
pub const RESEND_AFTER_SECS: u32 = 30;

/// Id of a queued message, returned by [`WalletOutbox::push`].
pub type OutboxId = u64;

#[derive(Debug, Clone)]
struct InFlight {
    seqno: u32,
    body_hash: [u8; 32],
    ids: Vec<OutboxId>,
    message: ExternalMessage,
    resend_at: u32,
}

/// Why nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The queue is empty.
    Idle,
    /// A request is in flight and not due for a resend.
    Waiting,
    /// The balance is below the low-balance mark ("ACTION REQUIRED").
    LowBalance,
    /// The first queued message does not fit in the balance.
    TooExpensive,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Send this external message (a new request or a resend).
    Send(ExternalMessage),
    /// Nothing to send.
    Nothing(Blocked),
}

/// The queue of a cocoon wallet.
#[derive(Debug, Default)]
pub struct WalletOutbox {
    queue: VecDeque<(OutboxId, InternalMessage)>,
    in_flight: Option<InFlight>,
    next_id: OutboxId,
    low_balance: u64,
}

impl WalletOutbox {
    /// An empty outbox that refuses to send while the balance is below `low_balance`.
    pub fn new(low_balance: u64) -> Self {
        WalletOutbox {
            low_balance,
            ..Default::default()
        }
    }

    /// Queues a message; returns its id (reported by [`WalletOutbox::on_transaction`]).
    pub fn push(&mut self, message: InternalMessage) -> OutboxId {
        self.next_id += 1;
        self.queue.push_back((self.next_id, message));
        self.next_id
    }

    /// Messages queued or in flight.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a request is waiting for confirmation.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Decides what to send, given the wallet's current `seqno` and `balance`
    /// and the chain time `now`.
    pub fn poll(
        &mut self,
        wallet: &CocoonWallet,
        seqno: u32,
        balance: u64,
        now: u32,
    ) -> Result<Poll> {
        if let Some(f) = &mut self.in_flight {
            if now < f.resend_at {
                return Ok(Poll::Nothing(Blocked::Waiting));
            }
            f.resend_at = now.saturating_add(RESEND_AFTER_SECS);
            return Ok(Poll::Send(f.message.clone()));
        }
        if self.queue.is_empty() {
            return Ok(Poll::Nothing(Blocked::Idle));
        }
        if balance < self.low_balance {
            return Ok(Poll::Nothing(Blocked::LowBalance));
        }
        let limit = balance.min(BATCH_VALUE_CAP);
        let mut total: u64 = 0;
        let mut batch = Vec::new();
        let mut ids = Vec::new();
        for (id, m) in self
            .queue
            .iter()
            .take(crate::wallet::COCOON_WALLET_MAX_MESSAGES)
        {
            let needed = total.saturating_add(m.value).saturating_add(BATCH_RESERVE);
            if needed > limit {
                break;
            }
            total = total.saturating_add(m.value);
            batch.push((cocoon_send_mode(m.value), m.clone()));
            ids.push(*id);
        }
        if batch.is_empty() {
            return Ok(Poll::Nothing(Blocked::TooExpensive));
        }
        let valid_until = now.saturating_add(crate::wallet::COCOON_WALLET_TTL_SECS);
        let message = wallet.external_message(seqno, valid_until, &batch)?;
        self.in_flight = Some(InFlight {
            seqno,
            body_hash: message.body.repr_hash().0,
            ids,
            message: message.clone(),
            resend_at: now.saturating_add(RESEND_AFTER_SECS),
        });
        Ok(Poll::Send(message))
    }

    /// Feeds a transaction of the wallet account. Returns the ids confirmed by
    /// it (the in-flight batch when the inbound body hash matches).
    pub fn on_transaction(&mut self, tx: &Transaction) -> Vec<OutboxId> {
        let Some(f) = &self.in_flight else {
            return Vec::new();
        };
        let Some(in_msg) = &tx.in_msg else {
            return Vec::new();
        };
        if in_msg.source.is_some() || in_msg.body_hash() != f.body_hash {
            return Vec::new();
        }
        let ids = f.ids.clone();
        self.queue.retain(|(id, _)| !ids.contains(id));
        self.in_flight = None;
        ids
    }

    /// Gives up the in-flight request (the chain refused it, e.g. the wallet is
    /// below its 2 TON floor): its messages leave the queue and their ids are
    /// returned so the senders can be told.
    pub fn abort_in_flight(&mut self) -> Vec<OutboxId> {
        let Some(f) = self.in_flight.take() else {
            return Vec::new();
        };
        self.queue.retain(|(id, _)| !f.ids.contains(id));
        f.ids
    }

    /// Gives up everything queued or in flight (the wallet cannot pay for it);
    /// returns the ids dropped.
    pub fn abort_all(&mut self) -> Vec<OutboxId> {
        self.in_flight = None;
        self.queue.drain(..).map(|(id, _)| id).collect()
    }

    /// Feeds the wallet's current seqno (after its transactions were fed). If
    /// it moved past the in-flight request without a confirmation, the batch
    /// will be sent again by the next [`WalletOutbox::poll`].
    pub fn on_seqno(&mut self, seqno: u32) {
        if self.in_flight.as_ref().is_some_and(|f| f.seqno < seqno) {
            self.in_flight = None;
        }
    }
}
