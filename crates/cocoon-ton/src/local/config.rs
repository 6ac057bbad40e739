//! The blockchain config (fees, limits, TVM version) the local chain executes with.
//!
//! By default it is **TON mainnet's config** as of masterchain block 52 956 904:
//! the config dictionary @ton/sandbox 0.41 ships as its `defaultConfig` (MIT),
//! stored in `data/ton-mainnet-config.boc` (root hash `293c508d…`). Gas, forward
//! and storage prices, the global version and capabilities are mainnet's, and
//! the contract tests in `contracts/tests` run on the same config.
//!
//! Two adaptations are needed for `tycho-executor`, which reads some params in
//! its own (Everscale/Tycho) formats:
//! * param 12 (workchains) is replaced by one basic workchain 0 description
//!   when the mainnet one does not parse; only the executor's workchain checks
//!   read it;
//! * param 43 (size limits) is absent on mainnet; the executor then uses its
//!   defaults, which equal TON's defaults.

use tycho_executor::ParsedConfig;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::dict::Dict;
use tycho_types::models::{
    BlockchainConfig, BlockchainConfigParams, WorkchainDescription, WorkchainFormat,
    WorkchainFormatBasic,
};

use crate::cells::from_boc;
use crate::local::LocalChainError;

static TON_MAINNET_CONFIG: &[u8] = include_bytes!("../../data/ton-mainnet-config.boc");

/// Root hash of the embedded TON mainnet config dictionary.
pub const TON_MAINNET_CONFIG_HASH: &str =
    "293c508de227d9755682c6d16468724e04512e9a2263c4d9d6511de11f28e89d";

/// Masterchain seqno the embedded TON mainnet config was taken at.
pub const TON_MAINNET_CONFIG_SEQNO: u32 = 52_956_904;

/// The embedded TON mainnet config dictionary (`HashmapE 32 ^Cell`).
pub fn ton_mainnet_config() -> crate::Result<Cell> {
    from_boc(TON_MAINNET_CONFIG)
}

/// Parses a config dictionary for the executor (see the module docs for the
/// adaptations).
pub(crate) fn parse_config(dict_root: &Cell, now: u32) -> Result<ParsedConfig, LocalChainError> {
    let bad = |e: tycho_types::error::Error| LocalChainError::Config(e.to_string());
    let mut params = BlockchainConfigParams::from_raw(dict_root.clone());
    let address = match params.as_dict().get(0).map_err(bad)? {
        Some(cell) => cell
            .as_slice()
            .and_then(|mut s| s.load_u256())
            .map_err(bad)?,
        None => HashBytes::ZERO,
    };
    if params.get_workchains().is_err() || workchains_unparsable(&params) {
        let mut workchains = Dict::<i32, WorkchainDescription>::new();
        workchains
            .set(
                0,
                WorkchainDescription {
                    enabled_since: 0,
                    actual_min_split: 0,
                    min_split: 0,
                    max_split: 0,
                    active: true,
                    accept_msgs: true,
                    zerostate_root_hash: HashBytes::ZERO,
                    zerostate_file_hash: HashBytes::ZERO,
                    version: 0,
                    format: WorkchainFormat::Basic(WorkchainFormatBasic {
                        vm_mode: 0,
                        vm_version: 0,
                    }),
                },
            )
            .map_err(bad)?;
        params.set_workchains(&workchains).map_err(bad)?;
    }
    ParsedConfig::parse(BlockchainConfig { address, params }, now).map_err(bad)
}

fn workchains_unparsable(params: &BlockchainConfigParams) -> bool {
    match params.get_workchains() {
        Ok(dict) => dict.iter().any(|e| e.is_err()),
        Err(_) => true,
    }
}
