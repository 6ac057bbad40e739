//! How the money commands reach the chain, send one wallet request and see
//! what it caused.
//!
//! * The devnet's chain opened directly ([`LocalChain`], when no devnet
//!   process holds it): a request is executed to completion when sent, and its
//!   whole cascade is reported with exit codes and fees.
//! * A chain API (`cocoon_ton::toncenter::TonCenter`: the running devnet's,
//!   or toncenter): the request is sent, then the wallet's transactions are
//!   polled until one with the request's body hash appears (or the timeout
//!   passes); then each message is followed to its destination (the accounts
//!   the command knows), matched by sender and body hash, and exit codes and
//!   fees are read from the raw transactions the API returns.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cocoon_ton::address::to_raw;
use cocoon_ton::chain::{
    AccountState, AccountStatus, ChainBackend, Transaction, TxFollower, TxMessage,
};
use cocoon_ton::contracts::CocoonWalletState;
use cocoon_ton::local::{ExecutedTx, LocalChain, LocalChainError};
use cocoon_ton::opcodes as op;
use cocoon_ton::outbox::BATCH_RESERVE;
use cocoon_ton::root::ONE_TON;
use cocoon_ton::tycho_types::models::{MsgInfo, Transaction as TlbTransaction, TxInfo};
use cocoon_ton::wallet::{InternalMessage, COCOON_WALLET_TTL_SECS};
use cocoon_ton::StdAddr;

use super::{exit_code_meaning, ton, Wallet};

/// The cocoon wallet contract refuses external messages below this balance (exit code 1035).
pub const WALLET_MIN_BALANCE: u64 = 2 * ONE_TON;

/// The two ways to the chain.
pub enum Backend {
    /// The devnet's state directory, opened (and locked) by this process.
    Local(Box<LocalChain>),
    /// A chain API.
    Remote(Arc<dyn ChainBackend>),
}

/// A connected chain.
pub struct Chain {
    backend: Backend,
    /// What it is, for messages ("the devnet chain in DIR", "toncenter URL").
    pub description: String,
    /// Whether addresses are printed with the testnet flag.
    pub testnet: bool,
    /// How long to wait for a request to show on chain (chain APIs only).
    pub timeout: Duration,
}

/// A client of TON's HTTP API v2 at `url` (toncenter, or a devnet's chain API).
/// A devnet's API on this machine is not rate limited; toncenter's is (1
/// request per second without an API key, 10 with one).
fn toncenter_client(
    url: &str,
    api_key: Option<&str>,
    devnet: bool,
) -> anyhow::Result<Arc<dyn ChainBackend>> {
    let client = cocoon_ton::toncenter::TonCenter::new(url, api_key.map(str::to_owned))
        .with_context(|| format!("chain API {url}"))?;
    Ok(Arc::new(if devnet {
        client
            .with_requests_per_second(0.0)
            .with_retries(1, Duration::from_millis(100))
            .with_timeout(Duration::from_secs(10))
    } else {
        client
    }))
}

impl Chain {
    /// The devnet in `dir`: its chain API `api` when given and answering, else
    /// `dir/chain` opened directly.
    pub async fn devnet(dir: &Path, api: Option<&str>, timeout: Duration) -> anyhow::Result<Chain> {
        let mut api_problem = None;
        if let Some(url) = api {
            let probe = async {
                let client = toncenter_client(url, None, true)?;
                tokio::time::timeout(Duration::from_secs(5), client.now())
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within 5 s"))??;
                anyhow::Ok(client)
            };
            match probe.await {
                Ok(client) => {
                    return Ok(Chain {
                        backend: Backend::Remote(client),
                        description: format!("the devnet chain API {url}"),
                        testnet: true,
                        timeout,
                    })
                }
                Err(e) => api_problem = Some(format!("{url}: {e:#}")),
            }
        }
        let chain_dir = dir.join("chain");
        match LocalChain::open(&chain_dir) {
            Ok(c) => Ok(Chain {
                backend: Backend::Local(Box::new(c)),
                description: format!("the devnet chain in {}", chain_dir.display()),
                testnet: true,
                timeout,
            }),
            Err(LocalChainError::InUse { pid, .. }) => {
                let by = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                let api = match &api_problem {
                    Some(p) => format!(" ({p})"),
                    None => " (devnet.json names none)".into(),
                };
                bail!(
                    "the devnet in {} is running{by}; its chain API is not reachable{api}",
                    dir.display()
                )
            }
            Err(LocalChainError::Persist { .. }) if !chain_dir.join("chain.json").exists() => {
                bail!(
                    "no devnet chain in {} (looked in --dir {}{}): if a devnet is running \
                     with another directory, pass its --dir (the `state:` line of its \
                     banner); to start one here: `cocoon devnet --dir {}`",
                    chain_dir.display(),
                    dir.display(),
                    match std::path::absolute(dir) {
                        Ok(abs) if abs != dir => format!(", i.e. {}", abs.display()),
                        _ => String::new(),
                    },
                    dir.display()
                )
            }
            Err(e) => {
                Err(e).with_context(|| format!("opening the devnet chain {}", chain_dir.display()))
            }
        }
    }

    /// toncenter at `url`.
    pub async fn toncenter(
        url: &str,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Chain> {
        let client = toncenter_client(url, api_key, false)?;
        Ok(Chain {
            backend: Backend::Remote(client),
            description: format!("toncenter {url}"),
            testnet: url.contains("testnet"),
            timeout,
        })
    }

    /// The chain opened directly, if it is.
    pub fn local(&self) -> Option<&LocalChain> {
        match &self.backend {
            Backend::Local(c) => Some(c),
            Backend::Remote(_) => None,
        }
    }

    fn api(&self) -> &dyn ChainBackend {
        match &self.backend {
            Backend::Local(c) => c.as_ref(),
            Backend::Remote(r) => r.as_ref(),
        }
    }

    /// The state of an account.
    pub async fn account(&self, a: &StdAddr) -> anyhow::Result<AccountState> {
        self.api()
            .account_state(a)
            .await
            .with_context(|| format!("reading account {}", to_raw(a)))
    }

    /// Every transaction of `a`, oldest first, with fees and exit codes where the chain
    /// keeps raw transactions; `None` when it has more than `limit` (too many to add up).
    pub async fn history(&self, a: &StdAddr, limit: usize) -> anyhow::Result<Option<Vec<TxView>>> {
        match &self.backend {
            Backend::Local(chain) => {
                let txs = chain.transactions_of(a);
                if txs.len() > limit {
                    return Ok(None);
                }
                Ok(Some(txs.iter().map(TxView::from_local).collect()))
            }
            Backend::Remote(api) => {
                let mut follower = TxFollower::from_start(a.clone());
                let mut txs = Vec::new();
                loop {
                    let page = api
                        .transactions(a, follower.cursor, TxFollower::PAGE)
                        .await
                        .with_context(|| format!("reading the transactions of {}", to_raw(a)))?;
                    txs.extend(page.transactions);
                    follower.cursor = page.cursor;
                    if txs.len() > limit {
                        return Ok(None);
                    }
                    if !page.more {
                        break;
                    }
                }
                let mut views = Vec::with_capacity(txs.len());
                for t in txs {
                    let mut v = TxView::from_summary(a.clone(), &t);
                    if let Ok(Some(cell)) = api.transaction_cell(a, t.id).await {
                        v.read_phases(&cell);
                    }
                    views.push(v);
                }
                Ok(Some(views))
            }
        }
    }

    /// The chain's time (unix seconds).
    pub async fn now(&self) -> anyhow::Result<u32> {
        self.api().now().await.context("reading the chain time")
    }

    /// The wallet's state for sending: `(seqno, balance)`, after the checks the
    /// wallet contract would make (exists, not blocked, at least 2 TON) and
    /// that `value` plus the fee reserve fits.
    pub async fn check_wallet(&self, w: &Wallet, value: u64) -> anyhow::Result<(u32, u64)> {
        let st = self.account(w.address()).await?;
        let seqno = match st.status {
            AccountStatus::NonExist => bail!(
                "{} {} does not exist on {}: send it at least 2 TON first (it deploys \
                 itself with its first request)",
                w.label,
                to_raw(w.address()),
                self.description
            ),
            AccountStatus::Frozen => bail!("{} is frozen (unpaid storage)", w.label),
            AccountStatus::Uninit => 0,
            AccountStatus::Active => {
                let data = st
                    .data
                    .as_ref()
                    .with_context(|| format!("{} has no data", w.label))?;
                let ws = CocoonWalletState::from_data(data)
                    .with_context(|| format!("{} is not a cocoon wallet", w.label))?;
                if ws.status & 1 != 0 {
                    bail!(
                        "{} is blocked by its owner: it refuses every request (exit code 1031)",
                        w.label
                    );
                }
                ws.seqno
            }
        };
        if st.balance < WALLET_MIN_BALANCE {
            bail!(
                "refused: {} holds {}, below 2 TON; the cocoon wallet contract refuses every \
                 request while its balance is under 2 TON (exit code 1035). Top it up with at \
                 least {} first.",
                w.label,
                ton(st.balance),
                ton(WALLET_MIN_BALANCE - st.balance)
            );
        }
        let needed = value.saturating_add(BATCH_RESERVE);
        if needed > st.balance {
            bail!(
                "refused: {} holds {}, which cannot cover {} (value {} + fee reserve {}); \
                 short by {}. Nothing was sent.",
                w.label,
                ton(st.balance),
                ton(needed),
                ton(value),
                ton(BATCH_RESERVE),
                ton(needed - st.balance)
            );
        }
        Ok((seqno, st.balance))
    }

    /// Checks the wallet (see [`Chain::check_wallet`]), signs one request
    /// carrying `messages` and sends it; returns what it caused once the
    /// wallet's transaction is seen. Through a chain API the cascade is
    /// followed across the wallet, the messages' destinations and the accounts
    /// `names` knows.
    pub async fn send(
        &self,
        w: &Wallet,
        messages: Vec<(u8, InternalMessage)>,
        names: &Names,
    ) -> anyhow::Result<Outcome> {
        let value: u64 = messages.iter().map(|(_, m)| m.value).sum();
        let (seqno, _) = self.check_wallet(w, value).await?;
        let now = self.now().await?;
        let ext = w
            .inner
            .external_message(seqno, now.saturating_add(COCOON_WALLET_TTL_SECS), &messages)
            .context("signing the wallet request")?;
        let body_hash = ext.body.repr_hash().0;
        let boc = ext.to_boc()?;
        match &self.backend {
            Backend::Local(chain) => match chain.execute_external(&boc) {
                Ok(report) => Ok(Outcome {
                    txs: report.transactions.iter().map(TxView::from_local).collect(),
                    complete: true,
                }),
                Err(LocalChainError::NotAccepted { exit_code, .. }) => {
                    let code = exit_code
                        .map(|c| format!("exit code {c} ({})", exit_code_meaning(c)))
                        .unwrap_or_else(|| "no exit code".into());
                    bail!(
                        "{} did not accept the request: {code}; nothing was sent",
                        w.label
                    )
                }
                Err(e) => Err(e).context("executing the request"),
            },
            Backend::Remote(api) => {
                let mut watch: Vec<StdAddr> = vec![w.address().clone()];
                watch.extend(messages.iter().map(|(_, m)| m.dest.clone()));
                watch.extend(names.addresses());
                self.send_remote(api.as_ref(), w, watch, boc, body_hash)
                    .await
            }
        }
    }

    async fn send_remote(
        &self,
        api: &dyn ChainBackend,
        w: &Wallet,
        watch: Vec<StdAddr>,
        boc: Vec<u8>,
        body_hash: [u8; 32],
    ) -> anyhow::Result<Outcome> {
        // Follow every account concerned from before the request.
        let mut followers: HashMap<StdAddr, Followed> = HashMap::new();
        for a in watch {
            if let std::collections::hash_map::Entry::Vacant(e) = followers.entry(a) {
                let f = TxFollower::from_now(api, e.key().clone()).await?;
                e.insert(Followed::new(f));
            }
        }
        api.send_external(boc)
            .await
            .context("sending the wallet request")?;
        let deadline = Instant::now() + self.timeout;
        let wallet = w.address().clone();
        let is_request = |t: &Transaction| {
            t.in_msg
                .as_ref()
                .is_some_and(|m| m.source.is_none() && m.body_hash() == body_hash)
        };
        let first = loop {
            let f = followers
                .get_mut(&wallet)
                .context("the wallet is followed")?;
            if let Some(t) = f.take(is_request) {
                break t;
            }
            if Instant::now() >= deadline {
                bail!(
                    "no transaction of {} with this request (body hash {}) within {} s; it may \
                     still be applied until it expires in {} s: check `cocoon wallet show` (the \
                     seqno moves when it is) before sending again",
                    w.label,
                    hex::encode(body_hash),
                    self.timeout.as_secs(),
                    COCOON_WALLET_TTL_SECS
                );
            }
            if !f.poll(api).await? {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        };
        // Then each message to where it went, in the order they were sent.
        let mut complete = true;
        let mut queue: VecDeque<(StdAddr, TxMessage)> = VecDeque::new();
        let mut txs = Vec::new();
        let mut push = |address: StdAddr, t: Transaction, queue: &mut VecDeque<_>| {
            for m in &t.out_msgs {
                queue.push_back((address.clone(), m.clone()));
            }
            txs.push((address, t));
        };
        push(wallet, first, &mut queue);
        while let Some((src, m)) = queue.pop_front() {
            let Some(dest) = m.dest.clone() else {
                continue; // an external log message
            };
            let Some(f) = followers.get_mut(&dest) else {
                complete = false; // to an account this command does not follow
                continue;
            };
            let hash = m.body_hash();
            let is_it = |t: &Transaction| {
                t.in_msg
                    .as_ref()
                    .is_some_and(|i| i.source.as_ref() == Some(&src) && i.body_hash() == hash)
            };
            let found = loop {
                if let Some(t) = f.take(is_it) {
                    break Some(t);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                if !f.poll(api).await? {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            };
            match found {
                Some(t) => push(dest, t, &mut queue),
                None => complete = false,
            }
        }
        let mut views = Vec::with_capacity(txs.len());
        for (address, t) in txs {
            let mut v = TxView::from_summary(address, &t);
            // Exit codes and fees are in the raw transaction, when the API has it.
            match api.transaction_cell(&v.address, t.id).await {
                Ok(Some(cell)) => v.read_phases(&cell),
                Ok(None) | Err(_) if !v.success => {
                    // Without it: a failed transaction where code runs is a refusal.
                    v.failed = api.account_state(&v.address).await?.is_active();
                }
                Ok(None) | Err(_) => {}
            }
            views.push(v);
        }
        Ok(Outcome {
            txs: views,
            complete,
        })
    }
}

/// How often a chain API is polled for new transactions.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// An account followed through a chain API, with the transactions seen but
/// not yet matched to a message.
struct Followed {
    follower: TxFollower,
    unmatched: Vec<Transaction>,
}

impl Followed {
    fn new(follower: TxFollower) -> Self {
        Followed {
            follower,
            unmatched: Vec::new(),
        }
    }

    /// Takes the first seen transaction that `pred` accepts.
    fn take(&mut self, pred: impl Fn(&Transaction) -> bool) -> Option<Transaction> {
        let at = self.unmatched.iter().position(pred)?;
        Some(self.unmatched.remove(at))
    }

    /// Fetches new transactions; whether there were any.
    async fn poll(&mut self, api: &dyn ChainBackend) -> anyhow::Result<bool> {
        let new = self
            .follower
            .poll(api)
            .await
            .with_context(|| format!("following {}", to_raw(&self.follower.address)))?;
        let any = !new.is_empty();
        self.unmatched.extend(new);
        Ok(any)
    }
}

/// One transaction, as the commands report it.
#[derive(Debug, Clone)]
pub struct TxView {
    /// Account.
    pub address: StdAddr,
    /// Sender of the inbound message (`None`: external).
    pub from: Option<StdAddr>,
    /// Value of the inbound message.
    pub value_in: u64,
    /// Op of the inbound message body, if it has one.
    pub op: Option<u32>,
    /// Whether the inbound body is empty (a plain transfer).
    pub empty_body: bool,
    /// Compute phase exit code (`None`: skipped, or not known through a chain API).
    pub exit_code: Option<i32>,
    /// Action phase result code, when there was one and it failed.
    pub action_error: Option<i32>,
    /// Whether compute and action phases succeeded.
    pub success: bool,
    /// Whether it bounced the inbound value back.
    pub bounced: bool,
    /// Why the compute phase was skipped, when it was (local chain only).
    pub skipped: Option<&'static str>,
    /// Total fees (known on the local chain only).
    pub total_fees: Option<u64>,
    /// Forward fees carried by the messages it sent (local chain only).
    pub fwd_fees_out: Option<u64>,
    /// Whether a contract refused: its compute or action phase failed. (An
    /// account without code is credited in a transaction whose compute phase
    /// is skipped: that is no failure.)
    pub failed: bool,
}

impl TxView {
    fn from_local(t: &ExecutedTx) -> TxView {
        let mut v = TxView::from_summary(t.address.clone(), &t.summary);
        v.read_phases(&t.cell);
        v
    }

    /// Fills in what only the raw transaction cell tells: exit and result
    /// codes, bounce, skip reason, fees. A cell that does not parse as an
    /// ordinary transaction leaves the view as it is.
    fn read_phases(&mut self, cell: &cocoon_ton::Cell) {
        if let Some(p) = phases(cell) {
            self.exit_code = p.exit_code;
            self.action_error = p.action_error;
            self.bounced = p.bounced;
            self.skipped = p.skipped;
            self.total_fees = Some(p.total_fees);
            self.fwd_fees_out = Some(p.fwd_fees_out);
            self.failed = !self.success && (p.exit_code.is_some() || p.action_error.is_some());
        }
    }

    fn from_summary(address: StdAddr, t: &Transaction) -> TxView {
        let (from, value_in, op, empty_body) = match &t.in_msg {
            Some(m) => (
                m.source.clone(),
                m.value,
                body_op(&m.body),
                m.body.bit_len() == 0 && m.body.reference_count() == 0,
            ),
            None => (None, 0, None, true),
        };
        TxView {
            address,
            from,
            value_in,
            op,
            empty_body,
            exit_code: None,
            action_error: None,
            success: t.success,
            bounced: false,
            skipped: None,
            total_fees: None,
            fwd_fees_out: None,
            // Through a chain API: set by the caller, who knows whether code runs there.
            failed: false,
        }
    }
}

fn body_op(body: &cocoon_ton::Cell) -> Option<u32> {
    body.as_slice().ok()?.load_u32().ok()
}

/// What a transaction cell tells beyond the summary.
struct Phases {
    exit_code: Option<i32>,
    action_error: Option<i32>,
    bounced: bool,
    skipped: Option<&'static str>,
    total_fees: u64,
    fwd_fees_out: u64,
}

fn phases(cell: &cocoon_ton::Cell) -> Option<Phases> {
    use cocoon_ton::tycho_types::models::{ComputePhase, ComputePhaseSkipReason as R};
    let tx = cell.parse::<TlbTransaction>().ok()?;
    let TxInfo::Ordinary(o) = tx.load_info().ok()? else {
        return None;
    };
    let (exit_code, skipped) = match &o.compute_phase {
        ComputePhase::Executed(c) => (Some(c.exit_code), None),
        ComputePhase::Skipped(s) => (
            None,
            Some(match s.reason {
                R::NoState => "credited (no code there)",
                R::BadState => "not run: the account's state does not match",
                R::NoGas => "not run: the value cannot pay for any gas",
                R::Suspended => "not run: the account is suspended",
            }),
        ),
    };
    let mut fwd_fees_out: u64 = 0;
    for m in tx.out_msgs.values() {
        if let Ok(MsgInfo::Int(i)) = m.ok()?.parse::<MsgInfo>() {
            fwd_fees_out = fwd_fees_out.checked_add(u64::try_from(i.fwd_fee.into_inner()).ok()?)?;
        }
    }
    Some(Phases {
        exit_code,
        action_error: o
            .action_phase
            .as_ref()
            .map(|a| a.result_code)
            .filter(|&r| r != 0),
        bounced: o.bounce_phase.is_some(),
        skipped,
        total_fees: u64::try_from(tx.total_fees.tokens.into_inner()).ok()?,
        fwd_fees_out,
    })
}

/// What one wallet request caused.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The transactions, the wallet's first.
    pub txs: Vec<TxView>,
    /// Whether the whole cascade was seen: always on the local chain; through
    /// a chain API, unless a message went to an account this command does not
    /// follow or did not show within the timeout.
    pub complete: bool,
}

/// Names of the accounts a command deals with, for the output.
#[derive(Debug, Clone, Default)]
pub struct Names(Vec<(StdAddr, String)>);

impl Names {
    /// Adds a name.
    pub fn add(&mut self, a: &StdAddr, name: impl Into<String>) -> &mut Self {
        self.0.push((a.clone(), name.into()));
        self
    }

    /// Every named address.
    pub fn addresses(&self) -> impl Iterator<Item = StdAddr> + '_ {
        self.0.iter().map(|(a, _)| a.clone())
    }

    fn of(&self, a: &StdAddr, testnet: bool) -> String {
        self.0
            .iter()
            .find(|(x, _)| x == a)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| cocoon_ton::address::to_friendly(a, testnet))
    }
}

/// A readable name of an op.
pub fn op_name(o: u32) -> String {
    let name = match o {
        0 => "comment",
        0xffff_ffff => "bounce",
        op::EXCESSES => "excesses",
        op::PAYOUT => "payout",
        op::DO_NOT_PROCESS => "do_not_process",
        op::ROOT_ADD_WORKER_TYPE => "root_add_worker_type",
        op::ROOT_DEL_WORKER_TYPE => "root_del_worker_type",
        op::ROOT_ADD_PROXY_TYPE => "root_add_proxy_type",
        op::ROOT_DEL_PROXY_TYPE => "root_del_proxy_type",
        op::ROOT_ADD_MODEL_TYPE => "root_add_model_type",
        op::ROOT_DEL_MODEL_TYPE => "root_del_model_type",
        op::ROOT_REGISTER_PROXY => "root_register_proxy",
        op::ROOT_UNREGISTER_PROXY => "root_unregister_proxy",
        op::ROOT_UPDATE_PROXY => "root_update_proxy",
        op::ROOT_CHANGE_PRICE => "root_change_price",
        op::ROOT_CHANGE_PARAMS => "root_change_params",
        op::ROOT_UPGRADE_CONTRACTS => "root_upgrade_contracts",
        op::ROOT_UPGRADE => "root_upgrade",
        op::ROOT_RESET => "root_reset",
        op::ROOT_UPGRADE_FULL => "root_upgrade_full",
        op::ROOT_CHANGE_OWNER => "root_change_owner",
        op::WORKER_PROXY_REQUEST => "worker_proxy_request",
        op::CLIENT_PROXY_REQUEST => "client_proxy_request",
        op::EXT_PROXY_INCREASE_STAKE => "ext_proxy_increase_stake",
        op::EXT_PROXY_PAYOUT_REQUEST => "ext_proxy_payout_request",
        op::OWNER_PROXY_CLOSE => "owner_proxy_close",
        op::EXT_PROXY_CLOSE_REQUEST_SIGNED => "ext_proxy_close_request_signed",
        op::EXT_PROXY_CLOSE_COMPLETE_REQUEST_SIGNED => "ext_proxy_close_complete_request_signed",
        op::EXT_WORKER_PAYOUT_REQUEST_SIGNED => "ext_worker_payout_request_signed",
        op::EXT_WORKER_LAST_PAYOUT_REQUEST_SIGNED => "ext_worker_last_payout_request_signed",
        op::OWNER_WORKER_REGISTER => "owner_worker_register",
        op::EXT_CLIENT_TOP_UP => "ext_client_top_up",
        op::EXT_CLIENT_CHARGE_SIGNED => "ext_client_charge_signed",
        op::EXT_CLIENT_GRANT_REFUND_SIGNED => "ext_client_grant_refund_signed",
        op::OWNER_CLIENT_TOP_UP_REOPEN => "owner_client_top_up_reopen",
        op::OWNER_CLIENT_REGISTER => "owner_client_register",
        op::OWNER_CLIENT_CHANGE_SECRET_HASH => "owner_client_change_secret_hash",
        op::OWNER_CLIENT_CHANGE_SECRET_HASH_AND_TOP_UP => {
            "owner_client_change_secret_hash_and_top_up"
        }
        op::OWNER_CLIENT_REQUEST_REFUND => "owner_client_request_refund",
        op::OWNER_CLIENT_INCREASE_STAKE => "owner_client_increase_stake",
        op::OWNER_CLIENT_WITHDRAW => "owner_client_withdraw",
        op::OWNER_WALLET_SEND_MESSAGE => "owner_wallet_send_message",
        other => return format!("op {other:#010x}"),
    };
    name.to_owned()
}

impl Outcome {
    /// The transactions that failed.
    pub fn failures(&self) -> impl Iterator<Item = &TxView> {
        self.txs.iter().filter(|t| t.failed)
    }

    /// Value received by `a` in messages from `from` with op `o`.
    pub fn received(&self, a: &StdAddr, from: Option<&StdAddr>, o: Option<u32>) -> u64 {
        self.txs
            .iter()
            .filter(|t| &t.address == a)
            .filter(|t| from.is_none_or(|f| t.from.as_ref() == Some(f)))
            .filter(|t| o.is_none_or(|o| t.op == Some(o)))
            .map(|t| t.value_in)
            .sum()
    }

    /// Prints every transaction: account, message, exit code, fees.
    pub fn print(&self, names: &Names, testnet: bool) {
        println!("transactions:");
        for (i, t) in self.txs.iter().enumerate() {
            let what = match (&t.from, t.op) {
                (None, _) => "signed request (external)".to_owned(),
                (Some(f), o) => {
                    let op = match o {
                        Some(o) => op_name(o),
                        None if t.empty_body => "transfer".into(),
                        None => "message".into(),
                    };
                    format!("{op} from {}, {}", names.of(f, testnet), ton(t.value_in))
                }
            };
            let result = match (t.exit_code, t.action_error, t.skipped) {
                (_, Some(a), _) => format!("action phase failed ({a})"),
                (Some(c), None, _) => format!("exit code {c} ({})", exit_code_meaning(c)),
                (None, None, Some(why)) => why.into(),
                (None, None, None) if t.success => "ok".into(),
                (None, None, None) => "not successful (refused, or an account without code)".into(),
            };
            let fees = t
                .total_fees
                .map(|f| format!(", fees {}", ton(f)))
                .unwrap_or_default();
            let bounced = if t.bounced {
                ", value bounced back"
            } else {
                ""
            };
            println!(
                "  {}. {}: {what}: {result}{fees}{bounced}",
                i + 1,
                names.of(&t.address, testnet)
            );
        }
        if !self.complete {
            println!(
                "  (more followed: messages to accounts this command does not follow, or not \
                 seen within the timeout)"
            );
        }
    }

    /// Fails with the first refusal (exit code and meaning), after printing.
    pub fn ensure_ok(&self, names: &Names, testnet: bool) -> anyhow::Result<()> {
        if let Some(t) = self.failures().next() {
            let code = match (t.exit_code, t.action_error) {
                (_, Some(a)) => format!("its action phase failed with result code {a}"),
                (Some(c), None) => format!("exit code {c}: {}", exit_code_meaning(c)),
                (None, None) => "it did not succeed".into(),
            };
            let back = if t.bounced {
                "; the value came back to the sender minus fees"
            } else {
                ""
            };
            bail!(
                "{} refused the message: {code}{back}",
                names.of(&t.address, testnet)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_ton::local::{codes, Clock, GenesisConfig, GenesisRoot, GenesisWallet};
    use cocoon_ton::messages::Body;
    use cocoon_ton::settlement::body_message;
    use cocoon_ton::tycho_types::cell::HashBytes;
    use cocoon_ton::wallet::CocoonWallet;
    use ed25519_dalek::SigningKey;

    fn wallet(k: u8) -> Wallet {
        let w = CocoonWallet::new(
            SigningKey::from_bytes(&[k; 32]),
            StdAddr::new(0, HashBytes([k; 32])),
            &codes::wallet_code().unwrap(),
        )
        .unwrap();
        Wallet {
            name: Some(format!("w{k}")),
            label: format!("wallet w{k}"),
            inner: w,
        }
    }

    /// A chain with a root owned by wallet 1, and wallet 2 (a stranger).
    fn chain() -> (LocalChain, StdAddr) {
        let (admin, other) = (wallet(1), wallet(2));
        let root = GenesisRoot::devnet(admin.address().clone()).unwrap();
        let root_addr = root.contract().unwrap().address;
        let g = |w: &Wallet| {
            GenesisWallet::new(w.inner.public_key(), w.inner.owner().clone(), 10 * ONE_TON)
        };
        let chain = LocalChain::genesis(GenesisConfig {
            root: Some(root),
            wallets: vec![g(&admin), g(&other)],
            clock: Clock::Fixed(1_800_000_000),
            ..GenesisConfig::default()
        })
        .unwrap();
        (chain, root_addr)
    }

    fn on(backend: Backend) -> Chain {
        Chain {
            backend,
            description: "test".into(),
            testnet: true,
            timeout: Duration::from_secs(5),
        }
    }

    type Row = (StdAddr, Option<StdAddr>, u64, Option<u32>, bool, bool);

    fn summary(o: &Outcome) -> Vec<Row> {
        o.txs
            .iter()
            .map(|t| {
                (
                    t.address.clone(),
                    t.from.clone(),
                    t.value_in,
                    t.op,
                    t.success,
                    t.failed,
                )
            })
            .collect()
    }

    /// Through a chain API the whole cascade is followed, message by message,
    /// and reads as it does on the chain opened directly.
    #[tokio::test]
    async fn a_chain_api_shows_the_same_cascade_as_the_chain_itself() {
        let (a, root) = chain();
        let (b, _) = chain();
        let local = on(Backend::Local(Box::new(a)));
        let remote = on(Backend::Remote(Arc::new(b)));
        let mut names = Names::default();
        names.add(&root, "root");
        // The owner's admin op (wallet → root → excesses back) and a stranger's
        // comment the root refuses (wallet → root, exit 1010 → bounce back).
        let add = Body::RootHash {
            op: op::ROOT_ADD_WORKER_TYPE,
            query_id: 7,
            hash: [0xb1; 32],
        };
        let cases = [
            (
                wallet(1),
                body_message(root.clone(), ONE_TON / 2, &add).unwrap(),
                3,
                false,
            ),
            (
                wallet(2),
                body_message(root.clone(), ONE_TON / 2, &Body::Text("hi".into())).unwrap(),
                3,
                true,
            ),
        ];
        for (w, msg, count, refused) in cases {
            let mut n = names.clone();
            n.add(w.address(), w.label.clone());
            let m = vec![(cocoon_ton::wallet::cocoon_send_mode(msg.value), msg)];
            let l = local.send(&w, m.clone(), &n).await.unwrap();
            let r = remote.send(&w, m, &n).await.unwrap();
            assert!(l.complete && r.complete);
            assert_eq!(l.txs.len(), count);
            assert_eq!(summary(&l), summary(&r));
            assert_eq!(r.failures().count(), usize::from(refused));
            assert_eq!(l.txs[1].exit_code, Some(if refused { 1010 } else { 0 }));
        }
    }

    /// A request the wallet never executes is reported after the timeout.
    #[tokio::test]
    async fn a_request_that_never_shows_times_out_with_a_clear_error() {
        struct Blackhole(LocalChain);
        impl ChainBackend for Blackhole {
            fn account_state<'a>(
                &'a self,
                a: &'a StdAddr,
            ) -> cocoon_ton::chain::BoxFuture<'a, cocoon_ton::chain::ChainResult<AccountState>>
            {
                self.0.account_state(a)
            }
            fn run_get_method<'a>(
                &'a self,
                a: &'a StdAddr,
                m: &'a str,
                args: Vec<cocoon_ton::chain::StackValue>,
            ) -> cocoon_ton::chain::BoxFuture<
                'a,
                cocoon_ton::chain::ChainResult<cocoon_ton::chain::GetMethodResult>,
            > {
                self.0.run_get_method(a, m, args)
            }
            fn send_external<'a>(
                &'a self,
                _boc: Vec<u8>,
            ) -> cocoon_ton::chain::BoxFuture<'a, cocoon_ton::chain::ChainResult<[u8; 32]>>
            {
                // Accepted by the API, never included.
                Box::pin(async { Ok([0; 32]) })
            }
            fn transactions<'a>(
                &'a self,
                a: &'a StdAddr,
                after: Option<cocoon_ton::chain::TxId>,
                limit: usize,
            ) -> cocoon_ton::chain::BoxFuture<
                'a,
                cocoon_ton::chain::ChainResult<cocoon_ton::chain::TxPage>,
            > {
                self.0.transactions(a, after, limit)
            }
            fn now(&self) -> cocoon_ton::chain::BoxFuture<'_, cocoon_ton::chain::ChainResult<u32>> {
                self.0.now()
            }
        }
        let (c, root) = chain();
        let mut remote = on(Backend::Remote(Arc::new(Blackhole(c))));
        remote.timeout = Duration::from_secs(1);
        let w = wallet(1);
        let msg = body_message(root, ONE_TON / 2, &Body::Text("x".into())).unwrap();
        let err = remote
            .send(&w, vec![(0, msg)], &Names::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no transaction of wallet w1 with this request"),
            "{err}"
        );
        assert!(err.contains("within 1 s"), "{err}");
    }
}
