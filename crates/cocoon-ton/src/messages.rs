//! Bodies of COCOON contract messages (spec §6.2, §6.4): one [`Body`] variant
//! per message, with [`Body::to_cell`] and [`Body::parse`].
//!
//! Every body starts with `op:uint32 query_id:uint64`; the rest follows the
//! field order of the spec and the C++ builders. Where the C++ builders have
//! known quirks the variant's doc says which form is built and which are read.

use tycho_types::cell::{Cell, CellBuilder, CellSlice, HashBytes};
use tycho_types::models::StdAddr;

use crate::cells::{
    expect_end, load_address, load_coins, load_maybe_ref, open, store_address, store_coins,
    store_maybe_ref, ADDRESS_BITS,
};
use crate::error::{Result, TonError};
use crate::opcodes as op;
use crate::root::{load_proxy_info, store_proxy_info};
use crate::voucher::{SignedVoucher, VoucherKind};

/// The client contract's state as reported to the proxy in `client_proxy_request`:
/// `^(state:uint2 balance:Coins stake:Coins tokens_used:uint64 secret_hash:uint256)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStateReport {
    /// 0 normal, 1 closing, 2 closed.
    pub state: u8,
    /// Client balance (nanoTON, bookkeeping).
    pub balance: u64,
    /// Client stake (nanoTON).
    pub stake: u64,
    /// Tokens charged on chain.
    pub tokens_used: u64,
    /// `sha256(secret)` or zero.
    pub secret_hash: [u8; 32],
}

/// Inner payload of `client_proxy_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientProxyPayload {
    /// `client_proxy_top_up coins send_excesses_to`.
    TopUp {
        /// Amount (nanoTON).
        coins: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `client_proxy_register nonce:uint64`.
    Register {
        /// Registration nonce from the client's handshake.
        nonce: u64,
    },
    /// `client_proxy_refund_granted coins send_excesses_to`.
    RefundGranted {
        /// Amount (nanoTON).
        coins: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `client_proxy_refund_force coins send_excesses_to` (paid from the proxy stake).
    RefundForce {
        /// Amount (nanoTON).
        coins: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
}

/// Inner payload of `worker_proxy_request`: `worker_proxy_payout_request
/// worker_part:Coins proxy_part:Coins send_excesses_to`.
///
/// The C++ `ProxyContract::on_transaction` reads a `tokens:uint64` here instead
/// but ignores it; we follow the spec and our contracts (Coins layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPayoutPayload {
    /// Paid to the worker owner (nanoTON).
    pub worker_part: u64,
    /// Credited to the proxy's balance (nanoTON).
    pub proxy_part: u64,
    /// Where change goes.
    pub send_excesses_to: StdAddr,
}

/// Every message body the contracts and runners exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `excesses query_id`.
    Excesses {
        /// Query id.
        query_id: u64,
    },
    /// `payout query_id`.
    Payout {
        /// Query id.
        query_id: u64,
    },
    /// `do_not_process query_id proxy_save_state seqno:int32 session_hash:bits256`
    /// (the proxy's on-chain anchor of its DB seqno, §5.3).
    ProxySaveState {
        /// Query id (random in the C++).
        query_id: u64,
        /// DB commit seqno.
        seqno: i32,
        /// Per-process session hash.
        session_hash: [u8; 32],
    },
    /// Root: `hash:uint256` ops (add/del worker, proxy or model type).
    RootHash {
        /// One of the six hash ops.
        op: u32,
        /// Query id.
        query_id: u64,
        /// The hash.
        hash: [u8; 32],
    },
    /// Root: `root_register_proxy query_id ProxyInfo`.
    RootRegisterProxy {
        /// Query id.
        query_id: u64,
        /// `"ip:port[ ip:port]"`.
        info: String,
    },
    /// Root: `root_unregister_proxy query_id seqno:uint32`.
    RootUnregisterProxy {
        /// Query id.
        query_id: u64,
        /// Registry key.
        seqno: u32,
    },
    /// Root: `root_update_proxy query_id seqno:uint32 ProxyInfo`.
    RootUpdateProxy {
        /// Query id.
        query_id: u64,
        /// Registry key.
        seqno: u32,
        /// `"ip:port[ ip:port]"`.
        info: String,
    },
    /// Root: `root_change_price query_id price:Coins fee:Coins`.
    RootChangePrice {
        /// Query id.
        query_id: u64,
        /// New price per token.
        price_per_token: u64,
        /// New worker fee per token.
        worker_fee_per_token: u64,
    },
    /// Root (Tolk only): `root_change_params query_id price fee proxy_delay:uint32
    /// client_delay:uint32 min_proxy_stake:Coins min_client_stake:Coins`.
    RootChangeParams {
        /// Query id.
        query_id: u64,
        /// New price per token.
        price_per_token: u64,
        /// New worker fee per token.
        worker_fee_per_token: u64,
        /// New proxy close delay.
        proxy_delay_before_close: u32,
        /// New client close delay.
        client_delay_before_close: u32,
        /// New minimum proxy stake.
        min_proxy_stake: u64,
        /// New minimum client stake.
        min_client_stake: u64,
    },
    /// Root: `root_upgrade_contracts query_id ^proxy ^worker ^client`.
    RootUpgradeContracts {
        /// Query id.
        query_id: u64,
        /// Proxy code.
        proxy_code: Cell,
        /// Worker code.
        worker_code: Cell,
        /// Client code.
        client_code: Cell,
    },
    /// Root: `root_upgrade query_id ^code`.
    RootUpgrade {
        /// Query id.
        query_id: u64,
        /// New root code.
        code: Cell,
    },
    /// Root: `root_reset query_id`.
    RootReset {
        /// Query id.
        query_id: u64,
    },
    /// Root: `root_upgrade_full query_id ^data ^code`.
    RootUpgradeFull {
        /// Query id.
        query_id: u64,
        /// New data.
        data: Cell,
        /// New code.
        code: Cell,
    },
    /// Root (Tolk only): `root_change_owner query_id new_owner`.
    RootChangeOwner {
        /// Query id.
        query_id: u64,
        /// New owner.
        new_owner: StdAddr,
    },
    /// Root (owner): `root_add_public_key query_id public_key:uint256 key_type:uint8
    /// expire_at:uint32` (9060ce5).
    RootAddPublicKey {
        /// Query id.
        query_id: u64,
        /// The key being registered.
        key: KeyRegistration,
    },
    /// Root (any sender): `root_add_public_key_signed query_id send_excesses_to
    /// signature:bits512 ^payload`, the §5.4 wrapper around `op query_id public_key
    /// key_type expire_at`, signed by the key manager's machine key (9060ce5). Built with
    /// [`Body::signed_key_registration`].
    RootAddPublicKeySigned {
        /// Query id (repeated in the payload).
        query_id: u64,
        /// Where the root sends the change (not signed).
        send_excesses_to: StdAddr,
        /// Ed25519 signature of the payload cell's hash.
        signature: [u8; 64],
        /// The key being registered.
        key: KeyRegistration,
    },
    /// Root (owner): `root_change_key_manager query_id public_key:uint256
    /// image_hash:uint256 NetAddr` (9060ce5; the layout of COCOON's contracts at edafcb2b).
    RootChangeKeyManager {
        /// Query id.
        query_id: u64,
        /// The key manager's machine key (verifies signed registrations).
        public_key: [u8; 32],
        /// The image hash a key manager must be attested with.
        image_hash: [u8; 32],
        /// `"ip:port"` where proxies and workers reach it; empty for none.
        address: String,
    },
    /// Worker contract → proxy contract: `worker_proxy_request query_id owner
    /// state:uint2 tokens:uint64 payload:(Maybe ^Cell)`.
    WorkerProxyRequest {
        /// Query id.
        query_id: u64,
        /// Worker owner.
        owner: StdAddr,
        /// Worker contract state.
        state: u8,
        /// Worker contract token count.
        tokens: u64,
        /// Optional payout.
        payload: Option<WorkerPayoutPayload>,
    },
    /// Client contract → proxy contract: `client_proxy_request query_id owner
    /// ^state payload:(Maybe ^Cell)`.
    ClientProxyRequest {
        /// Query id.
        query_id: u64,
        /// Client owner (its cocoon wallet).
        owner: StdAddr,
        /// Client contract state.
        state: ClientStateReport,
        /// Optional inner request.
        payload: Option<ClientProxyPayload>,
    },
    /// `ext_proxy_increase_stake query_id grams:Coins send_excesses_to`.
    ExtProxyIncreaseStake {
        /// Query id.
        query_id: u64,
        /// Stake to add.
        grams: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `ext_proxy_payout_request query_id send_excesses_to`.
    ExtProxyPayoutRequest {
        /// Query id.
        query_id: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `owner_proxy_close [query_id] send_excesses_to`. The C++ builder omits the
    /// query id (`query_id: None`); both forms are built and parsed.
    OwnerProxyClose {
        /// Query id, absent in the C++ form.
        query_id: Option<u64>,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// One of the six signed voucher ops (§5.4).
    Signed(SignedVoucher),
    /// `owner_worker_register query_id send_excesses_to`.
    OwnerWorkerRegister {
        /// Query id.
        query_id: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `ext_client_top_up query_id amount:Coins send_excesses_to`.
    ExtClientTopUp {
        /// Query id.
        query_id: u64,
        /// Amount to add.
        amount: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `owner_client_top_up_reopen query_id amount:Coins send_excesses_to`.
    OwnerClientTopUpReopen {
        /// Query id.
        query_id: u64,
        /// Amount to add.
        amount: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `owner_client_register query_id nonce:uint64 send_excesses_to`.
    OwnerClientRegister {
        /// Query id.
        query_id: u64,
        /// Nonce the proxy will see.
        nonce: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `owner_client_change_secret_hash query_id hash:uint256 send_excesses_to`.
    OwnerClientChangeSecretHash {
        /// Query id.
        query_id: u64,
        /// `sha256(secret)`.
        secret_hash: [u8; 32],
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `owner_client_change_secret_hash_and_top_up query_id amount:Coins hash:uint256 send_excesses_to`.
    OwnerClientChangeSecretHashAndTopUp {
        /// Query id.
        query_id: u64,
        /// Amount to add.
        amount: u64,
        /// `sha256(secret)`.
        secret_hash: [u8; 32],
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `owner_client_request_refund query_id send_excesses_to`.
    OwnerClientRequestRefund {
        /// Query id.
        query_id: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `owner_client_increase_stake query_id new_stake:Coins send_excesses_to`
    /// (the C++ builder forgets `new_stake`; we write it, as the contracts read it).
    OwnerClientIncreaseStake {
        /// Query id.
        query_id: u64,
        /// New stake.
        new_stake: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `owner_client_withdraw query_id send_excesses_to`.
    OwnerClientWithdraw {
        /// Query id.
        query_id: u64,
        /// Where change goes.
        send_excesses_to: StdAddr,
    },
    /// `owner_wallet_send_message query_id mode:uint8 ^message`.
    OwnerWalletSendMessage {
        /// Query id.
        query_id: u64,
        /// Send mode.
        mode: u8,
        /// The internal message (a `MessageRelaxed` cell).
        message: Cell,
    },
    /// A text command (`op = 0` followed by the text), e.g. `"c"` and `"w"` to the
    /// proxy contract. No query id.
    Text(String),
}

const ROOT_HASH_OPS: [u32; 6] = [
    op::ROOT_ADD_WORKER_TYPE,
    op::ROOT_DEL_WORKER_TYPE,
    op::ROOT_ADD_PROXY_TYPE,
    op::ROOT_DEL_PROXY_TYPE,
    op::ROOT_ADD_MODEL_TYPE,
    op::ROOT_DEL_MODEL_TYPE,
];

fn head(b: &mut CellBuilder, opcode: u32, query_id: u64) -> Result<()> {
    b.store_u32(opcode)?;
    b.store_u64(query_id)?;
    Ok(())
}

fn load_hash(s: &mut CellSlice<'_>) -> Result<[u8; 32]> {
    Ok(s.load_u256()?.0)
}

impl ClientStateReport {
    fn to_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_small_uint(self.state, 2)?;
        store_coins(&mut b, self.balance)?;
        store_coins(&mut b, self.stake)?;
        b.store_u64(self.tokens_used)?;
        b.store_u256(&HashBytes(self.secret_hash))?;
        Ok(b.build()?)
    }

    fn from_cell(c: &Cell) -> Result<Self> {
        let mut s = open(c)?;
        let r = ClientStateReport {
            state: s.load_small_uint(2)?,
            balance: load_coins(&mut s)?,
            stake: load_coins(&mut s)?,
            tokens_used: s.load_u64()?,
            secret_hash: load_hash(&mut s)?,
        };
        expect_end(&s, "client state report")?;
        Ok(r)
    }
}

impl ClientProxyPayload {
    fn to_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        match self {
            ClientProxyPayload::TopUp {
                coins,
                send_excesses_to,
            }
            | ClientProxyPayload::RefundGranted {
                coins,
                send_excesses_to,
            }
            | ClientProxyPayload::RefundForce {
                coins,
                send_excesses_to,
            } => {
                let code = match self {
                    ClientProxyPayload::TopUp { .. } => op::CLIENT_PROXY_TOP_UP,
                    ClientProxyPayload::RefundGranted { .. } => op::CLIENT_PROXY_REFUND_GRANTED,
                    _ => op::CLIENT_PROXY_REFUND_FORCE,
                };
                b.store_u32(code)?;
                store_coins(&mut b, *coins)?;
                store_address(&mut b, send_excesses_to)?;
            }
            ClientProxyPayload::Register { nonce } => {
                b.store_u32(op::CLIENT_PROXY_REGISTER)?;
                b.store_u64(*nonce)?;
            }
        }
        Ok(b.build()?)
    }

    fn from_cell(c: &Cell) -> Result<Self> {
        let mut s = open(c)?;
        let code = s.load_u32()?;
        let p = match code {
            op::CLIENT_PROXY_REGISTER => ClientProxyPayload::Register {
                nonce: s.load_u64()?,
            },
            op::CLIENT_PROXY_TOP_UP
            | op::CLIENT_PROXY_REFUND_GRANTED
            | op::CLIENT_PROXY_REFUND_FORCE => {
                let coins = load_coins(&mut s)?;
                let send_excesses_to = load_address(&mut s)?;
                match code {
                    op::CLIENT_PROXY_TOP_UP => ClientProxyPayload::TopUp {
                        coins,
                        send_excesses_to,
                    },
                    op::CLIENT_PROXY_REFUND_GRANTED => ClientProxyPayload::RefundGranted {
                        coins,
                        send_excesses_to,
                    },
                    _ => ClientProxyPayload::RefundForce {
                        coins,
                        send_excesses_to,
                    },
                }
            }
            other => {
                return Err(TonError::UnexpectedOp {
                    found: other,
                    expected: "a client_proxy_* sub-op".into(),
                })
            }
        };
        expect_end(&s, "client proxy payload")?;
        Ok(p)
    }
}

impl WorkerPayoutPayload {
    fn to_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        b.store_u32(op::WORKER_PROXY_PAYOUT_REQUEST)?;
        store_coins(&mut b, self.worker_part)?;
        store_coins(&mut b, self.proxy_part)?;
        store_address(&mut b, &self.send_excesses_to)?;
        Ok(b.build()?)
    }

    fn from_cell(c: &Cell) -> Result<Self> {
        let mut s = open(c)?;
        let code = s.load_u32()?;
        if code != op::WORKER_PROXY_PAYOUT_REQUEST {
            return Err(TonError::UnexpectedOp {
                found: code,
                expected: "worker_proxy_payout_request".into(),
            });
        }
        let p = WorkerPayoutPayload {
            worker_part: load_coins(&mut s)?,
            proxy_part: load_coins(&mut s)?,
            send_excesses_to: load_address(&mut s)?,
        };
        expect_end(&s, "worker payout payload")?;
        Ok(p)
    }
}

/// A public key registration on the root: `public_key:uint256 key_type:uint8 expire_at:uint32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRegistration {
    /// Ed25519 public key apps encrypt to.
    pub public_key: [u8; 32],
    /// Kind of key (the key manager issues 1).
    pub key_type: u8,
    /// Unix time when the key expires.
    pub expire_at: u32,
}

impl KeyRegistration {
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_raw(&self.public_key, 256)?;
        b.store_u8(self.key_type)?;
        b.store_u32(self.expire_at)?;
        Ok(())
    }

    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        Ok(KeyRegistration {
            public_key: load_hash(s)?,
            key_type: s.load_u8()?,
            expire_at: s.load_u32()?,
        })
    }

    /// The signed payload cell of `root_add_public_key_signed`.
    fn signed_payload(&self, query_id: u64) -> Result<Cell> {
        let mut b = CellBuilder::new();
        head(&mut b, op::ROOT_ADD_PUBLIC_KEY_SIGNED, query_id)?;
        self.store(&mut b)?;
        Ok(b.build()?)
    }
}

impl Body {
    /// `root_add_public_key_signed` for `key`, signed with the key manager's machine key
    /// `signer` (its public half must be the root's `key_manager_public_key`).
    pub fn signed_key_registration(
        signer: &ed25519_dalek::SigningKey,
        query_id: u64,
        send_excesses_to: StdAddr,
        key: KeyRegistration,
    ) -> Result<Body> {
        use ed25519_dalek::Signer as _;
        let payload = key.signed_payload(query_id)?;
        let signature = signer.sign(payload.repr_hash().as_array()).to_bytes();
        Ok(Body::RootAddPublicKeySigned {
            query_id,
            send_excesses_to,
            signature,
            key,
        })
    }

    /// The opcode this body starts with (0 for text).
    pub fn op(&self) -> u32 {
        match self {
            Body::Excesses { .. } => op::EXCESSES,
            Body::Payout { .. } => op::PAYOUT,
            Body::ProxySaveState { .. } => op::DO_NOT_PROCESS,
            Body::RootHash { op, .. } => *op,
            Body::RootRegisterProxy { .. } => op::ROOT_REGISTER_PROXY,
            Body::RootUnregisterProxy { .. } => op::ROOT_UNREGISTER_PROXY,
            Body::RootUpdateProxy { .. } => op::ROOT_UPDATE_PROXY,
            Body::RootChangePrice { .. } => op::ROOT_CHANGE_PRICE,
            Body::RootChangeParams { .. } => op::ROOT_CHANGE_PARAMS,
            Body::RootUpgradeContracts { .. } => op::ROOT_UPGRADE_CONTRACTS,
            Body::RootUpgrade { .. } => op::ROOT_UPGRADE,
            Body::RootReset { .. } => op::ROOT_RESET,
            Body::RootUpgradeFull { .. } => op::ROOT_UPGRADE_FULL,
            Body::RootChangeOwner { .. } => op::ROOT_CHANGE_OWNER,
            Body::RootAddPublicKey { .. } => op::ROOT_ADD_PUBLIC_KEY,
            Body::RootAddPublicKeySigned { .. } => op::ROOT_ADD_PUBLIC_KEY_SIGNED,
            Body::RootChangeKeyManager { .. } => op::ROOT_CHANGE_KEY_MANAGER,
            Body::WorkerProxyRequest { .. } => op::WORKER_PROXY_REQUEST,
            Body::ClientProxyRequest { .. } => op::CLIENT_PROXY_REQUEST,
            Body::ExtProxyIncreaseStake { .. } => op::EXT_PROXY_INCREASE_STAKE,
            Body::ExtProxyPayoutRequest { .. } => op::EXT_PROXY_PAYOUT_REQUEST,
            Body::OwnerProxyClose { .. } => op::OWNER_PROXY_CLOSE,
            Body::Signed(v) => v.voucher.kind.op(),
            Body::OwnerWorkerRegister { .. } => op::OWNER_WORKER_REGISTER,
            Body::ExtClientTopUp { .. } => op::EXT_CLIENT_TOP_UP,
            Body::OwnerClientTopUpReopen { .. } => op::OWNER_CLIENT_TOP_UP_REOPEN,
            Body::OwnerClientRegister { .. } => op::OWNER_CLIENT_REGISTER,
            Body::OwnerClientChangeSecretHash { .. } => op::OWNER_CLIENT_CHANGE_SECRET_HASH,
            Body::OwnerClientChangeSecretHashAndTopUp { .. } => {
                op::OWNER_CLIENT_CHANGE_SECRET_HASH_AND_TOP_UP
            }
            Body::OwnerClientRequestRefund { .. } => op::OWNER_CLIENT_REQUEST_REFUND,
            Body::OwnerClientIncreaseStake { .. } => op::OWNER_CLIENT_INCREASE_STAKE,
            Body::OwnerClientWithdraw { .. } => op::OWNER_CLIENT_WITHDRAW,
            Body::OwnerWalletSendMessage { .. } => op::OWNER_WALLET_SEND_MESSAGE,
            Body::Text(_) => 0,
        }
    }

    /// Builds the body cell.
    pub fn to_cell(&self) -> Result<Cell> {
        let mut b = CellBuilder::new();
        let code = self.op();
        match self {
            Body::Excesses { query_id }
            | Body::Payout { query_id }
            | Body::RootReset { query_id } => head(&mut b, code, *query_id)?,
            Body::ProxySaveState {
                query_id,
                seqno,
                session_hash,
            } => {
                head(&mut b, code, *query_id)?;
                b.store_u32(op::PROXY_SAVE_STATE)?;
                b.store_u32(*seqno as u32)?;
                b.store_u256(&HashBytes(*session_hash))?;
            }
            Body::RootHash { query_id, hash, op } => {
                if !ROOT_HASH_OPS.contains(op) {
                    return Err(TonError::UnexpectedOp {
                        found: *op,
                        expected: "a root hash op".into(),
                    });
                }
                head(&mut b, code, *query_id)?;
                b.store_u256(&HashBytes(*hash))?;
            }
            Body::RootRegisterProxy { query_id, info } => {
                head(&mut b, code, *query_id)?;
                store_proxy_info(&mut b, info)?;
            }
            Body::RootUnregisterProxy { query_id, seqno } => {
                head(&mut b, code, *query_id)?;
                b.store_u32(*seqno)?;
            }
            Body::RootUpdateProxy {
                query_id,
                seqno,
                info,
            } => {
                head(&mut b, code, *query_id)?;
                b.store_u32(*seqno)?;
                store_proxy_info(&mut b, info)?;
            }
            Body::RootChangePrice {
                query_id,
                price_per_token,
                worker_fee_per_token,
            } => {
                head(&mut b, code, *query_id)?;
                store_coins(&mut b, *price_per_token)?;
                store_coins(&mut b, *worker_fee_per_token)?;
            }
            Body::RootChangeParams {
                query_id,
                price_per_token,
                worker_fee_per_token,
                proxy_delay_before_close,
                client_delay_before_close,
                min_proxy_stake,
                min_client_stake,
            } => {
                head(&mut b, code, *query_id)?;
                store_coins(&mut b, *price_per_token)?;
                store_coins(&mut b, *worker_fee_per_token)?;
                b.store_u32(*proxy_delay_before_close)?;
                b.store_u32(*client_delay_before_close)?;
                store_coins(&mut b, *min_proxy_stake)?;
                store_coins(&mut b, *min_client_stake)?;
            }
            Body::RootUpgradeContracts {
                query_id,
                proxy_code,
                worker_code,
                client_code,
            } => {
                head(&mut b, code, *query_id)?;
                b.store_reference(proxy_code.clone())?;
                b.store_reference(worker_code.clone())?;
                b.store_reference(client_code.clone())?;
            }
            Body::RootUpgrade { query_id, code: c } => {
                head(&mut b, code, *query_id)?;
                b.store_reference(c.clone())?;
            }
            Body::RootUpgradeFull {
                query_id,
                data,
                code: c,
            } => {
                head(&mut b, code, *query_id)?;
                b.store_reference(data.clone())?;
                b.store_reference(c.clone())?;
            }
            Body::RootChangeOwner {
                query_id,
                new_owner,
            } => {
                head(&mut b, code, *query_id)?;
                store_address(&mut b, new_owner)?;
            }
            Body::RootAddPublicKey { query_id, key } => {
                head(&mut b, code, *query_id)?;
                key.store(&mut b)?;
            }
            Body::RootAddPublicKeySigned {
                query_id,
                send_excesses_to,
                signature,
                key,
            } => {
                head(&mut b, code, *query_id)?;
                store_address(&mut b, send_excesses_to)?;
                b.store_raw(signature, 512)?;
                b.store_reference(key.signed_payload(*query_id)?)?;
            }
            Body::RootChangeKeyManager {
                query_id,
                public_key,
                image_hash,
                address,
            } => {
                head(&mut b, code, *query_id)?;
                b.store_raw(public_key, 256)?;
                b.store_raw(image_hash, 256)?;
                store_proxy_info(&mut b, address)?;
            }
            Body::WorkerProxyRequest {
                query_id,
                owner,
                state,
                tokens,
                payload,
            } => {
                head(&mut b, code, *query_id)?;
                store_address(&mut b, owner)?;
                b.store_small_uint(*state, 2)?;
                b.store_u64(*tokens)?;
                let p = payload.as_ref().map(|p| p.to_cell()).transpose()?;
                store_maybe_ref(&mut b, p.as_ref())?;
            }
            Body::ClientProxyRequest {
                query_id,
                owner,
                state,
                payload,
            } => {
                head(&mut b, code, *query_id)?;
                store_address(&mut b, owner)?;
                b.store_reference(state.to_cell()?)?;
                let p = payload.as_ref().map(|p| p.to_cell()).transpose()?;
                store_maybe_ref(&mut b, p.as_ref())?;
            }
            Body::ExtProxyIncreaseStake {
                query_id,
                grams: amount,
                send_excesses_to,
            }
            | Body::ExtClientTopUp {
                query_id,
                amount,
                send_excesses_to,
            }
            | Body::OwnerClientTopUpReopen {
                query_id,
                amount,
                send_excesses_to,
            }
            | Body::OwnerClientIncreaseStake {
                query_id,
                new_stake: amount,
                send_excesses_to,
            } => {
                head(&mut b, code, *query_id)?;
                store_coins(&mut b, *amount)?;
                store_address(&mut b, send_excesses_to)?;
            }
            Body::ExtProxyPayoutRequest {
                query_id,
                send_excesses_to,
            }
            | Body::OwnerWorkerRegister {
                query_id,
                send_excesses_to,
            }
            | Body::OwnerClientRequestRefund {
                query_id,
                send_excesses_to,
            }
            | Body::OwnerClientWithdraw {
                query_id,
                send_excesses_to,
            } => {
                head(&mut b, code, *query_id)?;
                store_address(&mut b, send_excesses_to)?;
            }
            Body::OwnerProxyClose {
                query_id,
                send_excesses_to,
            } => {
                b.store_u32(code)?;
                if let Some(q) = query_id {
                    b.store_u64(*q)?;
                }
                store_address(&mut b, send_excesses_to)?;
            }
            Body::OwnerClientRegister {
                query_id,
                nonce,
                send_excesses_to,
            } => {
                head(&mut b, code, *query_id)?;
                b.store_u64(*nonce)?;
                store_address(&mut b, send_excesses_to)?;
            }
            Body::OwnerClientChangeSecretHash {
                query_id,
                secret_hash,
                send_excesses_to,
            } => {
                head(&mut b, code, *query_id)?;
                b.store_u256(&HashBytes(*secret_hash))?;
                store_address(&mut b, send_excesses_to)?;
            }
            Body::OwnerClientChangeSecretHashAndTopUp {
                query_id,
                amount,
                secret_hash,
                send_excesses_to,
            } => {
                head(&mut b, code, *query_id)?;
                store_coins(&mut b, *amount)?;
                b.store_u256(&HashBytes(*secret_hash))?;
                store_address(&mut b, send_excesses_to)?;
            }
            Body::OwnerWalletSendMessage {
                query_id,
                mode,
                message,
            } => {
                head(&mut b, code, *query_id)?;
                b.store_u8(*mode)?;
                b.store_reference(message.clone())?;
            }
            Body::Text(t) => {
                // Short commands only: a snake-encoded long text is not needed here.
                if t.len() > 123 {
                    return Err(TonError::Range("text command longer than 123 bytes".into()));
                }
                b.store_u32(0)?;
                b.store_raw(t.as_bytes(), t.len() as u16 * 8)?;
            }
            Body::Signed(v) => return v.to_cell(),
        }
        Ok(b.build()?)
    }

    /// Parses a body cell. Layouts are checked strictly (no trailing data).
    pub fn parse(cell: &Cell) -> Result<Body> {
        let mut s = open(cell)?;
        let code = s.load_u32()?;
        if VoucherKind::from_op(code).is_some() {
            return Ok(Body::Signed(SignedVoucher::from_cell(cell)?));
        }
        if code == 0 {
            if s.size_bits() % 8 != 0 || s.size_refs() != 0 {
                return Err(TonError::layout("text command", "not whole bytes"));
            }
            let mut buf = vec![0u8; (s.size_bits() / 8) as usize];
            let bits = s.size_bits();
            s.load_raw(&mut buf, bits)?;
            return String::from_utf8(buf)
                .map(Body::Text)
                .map_err(|e| TonError::layout("text command", e.to_string()));
        }
        if code == op::OWNER_PROXY_CLOSE {
            let query_id = if s.size_bits() == ADDRESS_BITS {
                None
            } else {
                Some(s.load_u64()?)
            };
            let send_excesses_to = load_address(&mut s)?;
            expect_end(&s, "owner_proxy_close")?;
            return Ok(Body::OwnerProxyClose {
                query_id,
                send_excesses_to,
            });
        }
        let query_id = s.load_u64()?;
        let s = &mut s;
        let body = match code {
            op::EXCESSES => Body::Excesses { query_id },
            op::PAYOUT => Body::Payout { query_id },
            op::ROOT_RESET => Body::RootReset { query_id },
            op::DO_NOT_PROCESS => {
                let inner = s.load_u32()?;
                if inner != op::PROXY_SAVE_STATE {
                    return Err(TonError::UnexpectedOp {
                        found: inner,
                        expected: "proxy_save_state after do_not_process".into(),
                    });
                }
                Body::ProxySaveState {
                    query_id,
                    seqno: s.load_u32()? as i32,
                    session_hash: load_hash(s)?,
                }
            }
            c if ROOT_HASH_OPS.contains(&c) => Body::RootHash {
                op: c,
                query_id,
                hash: load_hash(s)?,
            },
            op::ROOT_REGISTER_PROXY => Body::RootRegisterProxy {
                query_id,
                info: load_proxy_info(s)?
                    .ok_or_else(|| TonError::layout("ProxyInfo", "unknown type"))?,
            },
            op::ROOT_UNREGISTER_PROXY => Body::RootUnregisterProxy {
                query_id,
                seqno: s.load_u32()?,
            },
            op::ROOT_UPDATE_PROXY => Body::RootUpdateProxy {
                query_id,
                seqno: s.load_u32()?,
                info: load_proxy_info(s)?
                    .ok_or_else(|| TonError::layout("ProxyInfo", "unknown type"))?,
            },
            op::ROOT_CHANGE_PRICE => Body::RootChangePrice {
                query_id,
                price_per_token: load_coins(s)?,
                worker_fee_per_token: load_coins(s)?,
            },
            op::ROOT_CHANGE_PARAMS => Body::RootChangeParams {
                query_id,
                price_per_token: load_coins(s)?,
                worker_fee_per_token: load_coins(s)?,
                proxy_delay_before_close: s.load_u32()?,
                client_delay_before_close: s.load_u32()?,
                min_proxy_stake: load_coins(s)?,
                min_client_stake: load_coins(s)?,
            },
            op::ROOT_UPGRADE_CONTRACTS => Body::RootUpgradeContracts {
                query_id,
                proxy_code: s.load_reference_cloned()?,
                worker_code: s.load_reference_cloned()?,
                client_code: s.load_reference_cloned()?,
            },
            op::ROOT_UPGRADE => Body::RootUpgrade {
                query_id,
                code: s.load_reference_cloned()?,
            },
            op::ROOT_UPGRADE_FULL => Body::RootUpgradeFull {
                query_id,
                data: s.load_reference_cloned()?,
                code: s.load_reference_cloned()?,
            },
            op::ROOT_CHANGE_OWNER => Body::RootChangeOwner {
                query_id,
                new_owner: load_address(s)?,
            },
            op::ROOT_ADD_PUBLIC_KEY => Body::RootAddPublicKey {
                query_id,
                key: KeyRegistration::load(s)?,
            },
            op::ROOT_ADD_PUBLIC_KEY_SIGNED => {
                let send_excesses_to = load_address(s)?;
                let mut signature = [0u8; 64];
                s.load_raw(&mut signature, 512)?;
                let payload = s.load_reference_cloned()?;
                let mut p = open(&payload)?;
                let (inner_op, inner_query) = (p.load_u32()?, p.load_u64()?);
                if inner_op != op::ROOT_ADD_PUBLIC_KEY_SIGNED || inner_query != query_id {
                    return Err(TonError::layout(
                        "root_add_public_key_signed",
                        "payload op or query id differs from the wrapper's",
                    ));
                }
                let key = KeyRegistration::load(&mut p)?;
                expect_end(&p, "root_add_public_key_signed payload")?;
                Body::RootAddPublicKeySigned {
                    query_id,
                    send_excesses_to,
                    signature,
                    key,
                }
            }
            op::ROOT_CHANGE_KEY_MANAGER => Body::RootChangeKeyManager {
                query_id,
                public_key: load_hash(s)?,
                image_hash: load_hash(s)?,
                address: load_proxy_info(s)?
                    .ok_or_else(|| TonError::layout("NetAddr", "unknown type"))?,
            },
            op::WORKER_PROXY_REQUEST => Body::WorkerProxyRequest {
                query_id,
                owner: load_address(s)?,
                state: s.load_small_uint(2)?,
                tokens: s.load_u64()?,
                payload: load_maybe_ref(s)?
                    .map(|c| WorkerPayoutPayload::from_cell(&c))
                    .transpose()?,
            },
            op::CLIENT_PROXY_REQUEST => {
                let owner = load_address(s)?;
                let state = ClientStateReport::from_cell(&s.load_reference_cloned()?)?;
                let payload = load_maybe_ref(s)?
                    .map(|c| ClientProxyPayload::from_cell(&c))
                    .transpose()?;
                Body::ClientProxyRequest {
                    query_id,
                    owner,
                    state,
                    payload,
                }
            }
            op::EXT_PROXY_INCREASE_STAKE => Body::ExtProxyIncreaseStake {
                query_id,
                grams: load_coins(s)?,
                send_excesses_to: load_address(s)?,
            },
            op::EXT_CLIENT_TOP_UP => Body::ExtClientTopUp {
                query_id,
                amount: load_coins(s)?,
                send_excesses_to: load_address(s)?,
            },
            op::OWNER_CLIENT_TOP_UP_REOPEN => Body::OwnerClientTopUpReopen {
                query_id,
                amount: load_coins(s)?,
                send_excesses_to: load_address(s)?,
            },
            op::OWNER_CLIENT_INCREASE_STAKE => Body::OwnerClientIncreaseStake {
                query_id,
                new_stake: load_coins(s)?,
                send_excesses_to: load_address(s)?,
            },
            op::EXT_PROXY_PAYOUT_REQUEST => Body::ExtProxyPayoutRequest {
                query_id,
                send_excesses_to: load_address(s)?,
            },
            op::OWNER_WORKER_REGISTER => Body::OwnerWorkerRegister {
                query_id,
                send_excesses_to: load_address(s)?,
            },
            op::OWNER_CLIENT_REQUEST_REFUND => Body::OwnerClientRequestRefund {
                query_id,
                send_excesses_to: load_address(s)?,
            },
            op::OWNER_CLIENT_WITHDRAW => Body::OwnerClientWithdraw {
                query_id,
                send_excesses_to: load_address(s)?,
            },
            op::OWNER_CLIENT_REGISTER => Body::OwnerClientRegister {
                query_id,
                nonce: s.load_u64()?,
                send_excesses_to: load_address(s)?,
            },
            op::OWNER_CLIENT_CHANGE_SECRET_HASH => Body::OwnerClientChangeSecretHash {
                query_id,
                secret_hash: load_hash(s)?,
                send_excesses_to: load_address(s)?,
            },
            op::OWNER_CLIENT_CHANGE_SECRET_HASH_AND_TOP_UP => {
                Body::OwnerClientChangeSecretHashAndTopUp {
                    query_id,
                    amount: load_coins(s)?,
                    secret_hash: load_hash(s)?,
                    send_excesses_to: load_address(s)?,
                }
            }
            op::OWNER_WALLET_SEND_MESSAGE => Body::OwnerWalletSendMessage {
                query_id,
                mode: s.load_u8()?,
                message: s.load_reference_cloned()?,
            },
            other => {
                return Err(TonError::UnexpectedOp {
                    found: other,
                    expected: "a COCOON contract op".into(),
                })
            }
        };
        expect_end(s, "message body")?;
        Ok(body)
    }

    /// Reads only `op:uint32 query_id:uint64` (what the runners use to match
    /// transactions to their requests). `None` when the body is shorter.
    pub fn peek_op_query_id(cell: &Cell) -> Option<(u32, u64)> {
        let mut s = cell.as_slice().ok()?;
        let o = s.load_u32().ok()?;
        let q = s.load_u64().ok()?;
        Some((o, q))
    }
}
