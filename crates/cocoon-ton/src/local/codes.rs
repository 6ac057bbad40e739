//! Our compiled Tolk contracts (`contracts/build/*.boc`), embedded at build time.
//!
//! CI checks that these BOCs equal a fresh compile of `contracts/src`, so the
//! chain runs exactly the code the @ton/sandbox tests run.

use tycho_types::cell::Cell;

use crate::cells::from_boc;
use crate::error::Result;
use crate::root::CocoonParams;

static ROOT: &[u8] = include_bytes!("../../../../contracts/build/root.boc");
static PROXY: &[u8] = include_bytes!("../../../../contracts/build/proxy.boc");
static CLIENT: &[u8] = include_bytes!("../../../../contracts/build/client.boc");
static WORKER: &[u8] = include_bytes!("../../../../contracts/build/worker.boc");
static WALLET: &[u8] = include_bytes!("../../../../contracts/build/wallet.boc");

/// Code of our root contract.
pub fn root_code() -> Result<Cell> {
    from_boc(ROOT)
}

/// Code of our proxy contract.
pub fn proxy_code() -> Result<Cell> {
    from_boc(PROXY)
}

/// Code of our client contract.
pub fn client_code() -> Result<Cell> {
    from_boc(CLIENT)
}

/// Code of our worker contract.
pub fn worker_code() -> Result<Cell> {
    from_boc(WORKER)
}

/// Code of our cocoon wallet (same layouts as the C++ runners' wallet, other code).
pub fn wallet_code() -> Result<Cell> {
    from_boc(WALLET)
}

/// `params` with our proxy, worker and client codes filled in where absent.
pub fn with_our_codes(mut params: CocoonParams) -> Result<CocoonParams> {
    if params.proxy_sc_code.is_none() {
        params.proxy_sc_code = Some(proxy_code()?);
    }
    if params.worker_sc_code.is_none() {
        params.worker_sc_code = Some(worker_code()?);
    }
    if params.client_sc_code.is_none() {
        params.client_sc_code = Some(client_code()?);
    }
    Ok(params)
}
