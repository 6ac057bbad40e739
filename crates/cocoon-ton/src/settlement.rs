//! Amounts and ready-made internal messages for on-chain settlement (spec §5.5,
//! §5.7, §6.3). Every builder returns an [`InternalMessage`] to queue in the
//! cocoon wallet's [`crate::outbox::WalletOutbox`].

use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;

use crate::contracts::ContractInit;
use crate::error::Result;
use crate::messages::Body;
use crate::root::ONE_TON;
use crate::voucher::SignedVoucher;
use crate::wallet::InternalMessage;

/// Value sent to deploy a proxy contract (0.3 TON).
pub const PROXY_DEPLOY_VALUE: u64 = 3 * ONE_TON / 10;
/// Value sent to deploy a worker contract (0.3 TON).
pub const WORKER_DEPLOY_VALUE: u64 = 3 * ONE_TON / 10;
/// Value sent to deploy a client contract (0.8 TON).
pub const CLIENT_DEPLOY_VALUE: u64 = 8 * ONE_TON / 10;
/// Value attached to charges, grant-refunds, proxy → worker payouts, client
/// top-ups (plus the coins) and secret changes (0.7 TON).
pub const OPERATION_VALUE: u64 = 7 * ONE_TON / 10;
/// Value a worker attaches to its own payout request (0.5 TON).
pub const WORKER_SELF_PAYOUT_VALUE: u64 = ONE_TON / 2;
/// Value attached to `ext_proxy_payout_request` (0.2 TON).
pub const PROXY_WITHDRAW_VALUE: u64 = 2 * ONE_TON / 10;
/// Value attached to each message of an old proxy contract's close-down (1 TON).
pub const OLD_PROXY_CLOSE_VALUE: u64 = ONE_TON;
/// Value of the proxy's save-state anchor (1 nanoTON).
pub const SAVE_STATE_VALUE: u64 = 1;
/// The proxy charges a client once the uncharged usage is worth this much (1 TON).
pub const CLIENT_CHARGE_THRESHOLD: u64 = ONE_TON;
/// The proxy pays a worker once the unpaid fee is worth this much (10 TON).
pub const WORKER_PAYOUT_THRESHOLD: u64 = 10 * ONE_TON;
/// The proxy withdraws its commission once its contract balance reaches this (10 TON).
pub const PROXY_WITHDRAW_THRESHOLD: u64 = 10 * ONE_TON;

/// A message carrying `body` to `dest` (bounceable).
pub fn body_message(dest: StdAddr, value: u64, body: &Body) -> Result<InternalMessage> {
    Ok(InternalMessage::cocoon(
        dest,
        value,
        None,
        Some(body.to_cell()?),
    ))
}

/// A signed voucher sent to the contract it names.
pub fn voucher_message(voucher: &SignedVoucher, value: u64) -> Result<InternalMessage> {
    Ok(InternalMessage::cocoon(
        voucher.voucher.contract.clone(),
        value,
        None,
        Some(voucher.to_cell()?),
    ))
}

/// A message deploying `init` (StateInit attached, non-bounceable as in the C++).
pub fn deploy_message(init: &ContractInit, value: u64, body: Option<Cell>) -> InternalMessage {
    InternalMessage::cocoon(
        init.address.clone(),
        value,
        Some(init.state_init.clone()),
        body,
    )
}

/// The proxy's save-state anchor: `do_not_process qid proxy_save_state seqno
/// session_hash` to its own proxy contract, 1 nanoTON.
pub fn save_state_message(
    proxy_sc: StdAddr,
    query_id: u64,
    seqno: i32,
    session_hash: [u8; 32],
) -> Result<InternalMessage> {
    body_message(
        proxy_sc,
        SAVE_STATE_VALUE,
        &Body::ProxySaveState {
            query_id,
            seqno,
            session_hash,
        },
    )
}

/// A client top-up of `coins`: value `0.7 TON + coins`.
pub fn client_top_up_message(
    client_sc: StdAddr,
    query_id: u64,
    coins: u64,
    send_excesses_to: StdAddr,
) -> Result<InternalMessage> {
    body_message(
        client_sc,
        OPERATION_VALUE.saturating_add(coins),
        &Body::ExtClientTopUp {
            query_id,
            amount: coins,
            send_excesses_to,
        },
    )
}

/// The top-up amount the C++ client uses: the stake rounded down to a
/// multiple of the price (`stake − stake % price`).
pub fn client_top_up_amount(stake: u64, price_per_token: u64) -> u64 {
    stake - stake.checked_rem(price_per_token).unwrap_or(0)
}

/// Whether the proxy should charge a client: uncharged committed tokens are
/// worth at least [`CLIENT_CHARGE_THRESHOLD`].
pub fn client_charge_due(committed_tokens: u64, charged_tokens: u64, price_per_token: u64) -> bool {
    u128::from(committed_tokens.saturating_sub(charged_tokens)) * u128::from(price_per_token)
        >= u128::from(CLIENT_CHARGE_THRESHOLD)
}

/// Whether the proxy should pay a worker: unpaid committed tokens are worth at
/// least [`WORKER_PAYOUT_THRESHOLD`] in worker fees.
pub fn worker_payout_due(
    committed_tokens: u64,
    paid_tokens: u64,
    worker_fee_per_token: u64,
) -> bool {
    u128::from(committed_tokens.saturating_sub(paid_tokens)) * u128::from(worker_fee_per_token)
        >= u128::from(WORKER_PAYOUT_THRESHOLD)
}
