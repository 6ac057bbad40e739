//! Opcodes of COCOON contract messages (spec §6.2). Values are facts of the
//! wire format; they must match the deployed contracts bit for bit.

/// `excesses#2565934c query_id:uint64` — change returned to `send_excesses_to`.
pub const EXCESSES: u32 = 0x2565_934c;
/// `payout#c59a7cd3 query_id:uint64` — a value transfer to an owner.
pub const PAYOUT: u32 = 0xc59a_7cd3;
/// Contracts ignore bodies starting with this op; the proxy uses it to anchor
/// `proxy_save_state` on chain.
pub const DO_NOT_PROCESS: u32 = 0x9a12_47c0;
/// Inner op after [`DO_NOT_PROCESS`]: `seqno:int32 session_hash:bits256`.
pub const PROXY_SAVE_STATE: u32 = 0x5310_9c0f;

/// Root: add an allowed worker image hash.
pub const ROOT_ADD_WORKER_TYPE: u32 = 0xe34b_1c60;
/// Root: remove an allowed worker image hash.
pub const ROOT_DEL_WORKER_TYPE: u32 = 0x8d94_a79a;
/// Root: add an allowed proxy image hash.
pub const ROOT_ADD_PROXY_TYPE: u32 = 0x7186_0e80;
/// Root: remove an allowed proxy image hash.
pub const ROOT_DEL_PROXY_TYPE: u32 = 0x3c41_d0b2;
/// Root (Tolk only): add an allowed model hash.
pub const ROOT_ADD_MODEL_TYPE: u32 = 0xc146_134d;
/// Root (Tolk only): remove an allowed model hash.
pub const ROOT_DEL_MODEL_TYPE: u32 = 0x92b1_1c18;
/// Root: register a proxy (`ProxyInfo`), key = `++last_proxy_seqno`.
pub const ROOT_REGISTER_PROXY: u32 = 0x927c_7cb5;
/// Root: unregister a proxy by seqno.
pub const ROOT_UNREGISTER_PROXY: u32 = 0x6d49_eaf2;
/// Root: replace the `ProxyInfo` of a registered proxy.
pub const ROOT_UPDATE_PROXY: u32 = 0x9c79_24ba;
/// Root: change price and worker fee (bumps `params_version`).
pub const ROOT_CHANGE_PRICE: u32 = 0xc52e_d8d4;
/// Root (Tolk only): change price, fee, delays and stakes (bumps `params_version`).
pub const ROOT_CHANGE_PARAMS: u32 = 0x022f_a189;
/// Root: replace the three per-party contract codes (bumps `params_version`).
pub const ROOT_UPGRADE_CONTRACTS: u32 = 0xa237_0f61;
/// Root: replace its own code.
pub const ROOT_UPGRADE: u32 = 0x11ae_fd51;
/// Root: clear the dictionaries.
pub const ROOT_RESET: u32 = 0x563c_1d96;
/// Root: replace data and code verbatim.
pub const ROOT_UPGRADE_FULL: u32 = 0x4f7c_5789;
/// Root (Tolk only): change the owner.
pub const ROOT_CHANGE_OWNER: u32 = 0xc4a1_ae54;
/// Root (struct_version ≥ 4, owner): register a public key for end-to-end encryption.
pub const ROOT_ADD_PUBLIC_KEY: u32 = 0x6e5a_646a;
/// Root (struct_version ≥ 4, any sender): a key registration signed by the key manager.
pub const ROOT_ADD_PUBLIC_KEY_SIGNED: u32 = 0x9e0e_1821;
/// Root (struct_version ≥ 4, owner): set the key manager's key, image hash and address.
pub const ROOT_CHANGE_KEY_MANAGER: u32 = 0xb01c_0fe9;

/// Worker contract → proxy contract notification.
pub const WORKER_PROXY_REQUEST: u32 = 0x4d72_5d2c;
/// Inner payload of [`WORKER_PROXY_REQUEST`]: a payout.
pub const WORKER_PROXY_PAYOUT_REQUEST: u32 = 0x08e7_d036;

/// Client contract → proxy contract notification.
pub const CLIENT_PROXY_REQUEST: u32 = 0x6544_8ff4;
/// Inner payload: a top-up.
pub const CLIENT_PROXY_TOP_UP: u32 = 0x5cfc_6b87;
/// Inner payload: a registration carrying `nonce:uint64`.
pub const CLIENT_PROXY_REGISTER: u32 = 0xa35c_b580;
/// Inner payload: a granted refund.
pub const CLIENT_PROXY_REFUND_GRANTED: u32 = 0xc68e_bc7b;
/// Inner payload: a forced refund (paid from the proxy stake).
pub const CLIENT_PROXY_REFUND_FORCE: u32 = 0xf4c3_54c9;

/// Anyone → proxy contract: increase the stake.
pub const EXT_PROXY_INCREASE_STAKE: u32 = 0x9713_f187;
/// Anyone → proxy contract: pay the earned balance to the owner.
pub const EXT_PROXY_PAYOUT_REQUEST: u32 = 0x7610_e6eb;
/// Owner → proxy contract: start closing.
pub const OWNER_PROXY_CLOSE: u32 = 0xb51d_5a01;
/// Signed voucher: start closing the proxy contract.
pub const EXT_PROXY_CLOSE_REQUEST_SIGNED: u32 = 0x636a_4391;
/// Signed voucher: finish closing the proxy contract.
pub const EXT_PROXY_CLOSE_COMPLETE_REQUEST_SIGNED: u32 = 0xe511_abc7;

/// Signed voucher: worker payout.
pub const EXT_WORKER_PAYOUT_REQUEST_SIGNED: u32 = 0xa040_ad28;
/// Signed voucher: last worker payout (closes the worker contract).
pub const EXT_WORKER_LAST_PAYOUT_REQUEST_SIGNED: u32 = 0xf5f2_6a36;
/// Owner → worker contract: ping the proxy contract.
pub const OWNER_WORKER_REGISTER: u32 = 0x26ed_7f65;

/// Anyone → client contract: top up.
pub const EXT_CLIENT_TOP_UP: u32 = 0xf172_e6c2;
/// Signed voucher: charge the client.
pub const EXT_CLIENT_CHARGE_SIGNED: u32 = 0xbb63_ff93;
/// Signed voucher: final charge and refund (closes the client contract).
pub const EXT_CLIENT_GRANT_REFUND_SIGNED: u32 = 0xefd7_11e1;
/// Owner → client contract: top up and reopen a closing contract.
pub const OWNER_CLIENT_TOP_UP_REOPEN: u32 = 0x2911_1ceb;
/// Owner → client contract: register with the proxy (nonce).
pub const OWNER_CLIENT_REGISTER: u32 = 0xc45f_9f3b;
/// Owner → client contract: set the secret hash.
pub const OWNER_CLIENT_CHANGE_SECRET_HASH: u32 = 0xa935_7034;
/// Owner → client contract: set the secret hash and top up.
pub const OWNER_CLIENT_CHANGE_SECRET_HASH_AND_TOP_UP: u32 = 0x8473_b408;
/// Owner → client contract: start / finish closing.
pub const OWNER_CLIENT_REQUEST_REFUND: u32 = 0xfafa_6cc1;
/// Owner → client contract: raise the stake.
pub const OWNER_CLIENT_INCREASE_STAKE: u32 = 0x6a1f_6a60;
/// Owner → client contract: withdraw the balance above the stake.
pub const OWNER_CLIENT_WITHDRAW: u32 = 0xda06_8e78;

/// Owner → cocoon wallet: send a message.
pub const OWNER_WALLET_SEND_MESSAGE: u32 = 0x9c69_f376;
