//! COCOON's fake-TON root file: the JSON form of `rootConfig.pseudo` that the official
//! roles take with `--disable-ton FILE` (cocoon-protocol.md §6.5; 9060ce5 adds the key
//! fields). Reading it gives our roles the same root parameters, contract codes and so the
//! same contract addresses as official roles started on that file: the two sides then
//! share one root.
//!
//! The file does not name the root contract; each role's config does
//! (`root_contract_address`), and so does ours (`[chain] root_address`).

use std::path::Path;

use cocoon_ton::root::CocoonParams;
use serde::Deserialize;
use tycho_types::models::StdAddr;

use super::{ChainError, ChainView};

/// One proxy the root lists.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PseudoProxy {
    /// Its position in the root's list.
    pub seqno: i32,
    /// `"WORKER_ENDPOINT CLIENT_ENDPOINT"` (host:port each).
    pub address: String,
}

/// The fake-TON root file (fields this build reads; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct PseudoRoot {
    /// Accepted proxy image hashes (base64).
    #[serde(default)]
    pub proxy_hashes: Vec<String>,
    /// Accepted worker image hashes (base64).
    #[serde(default)]
    pub worker_hashes: Vec<String>,
    /// Model names the 9060ce5 template writes; COCOON's reader ignores them, and so do we.
    #[serde(default)]
    pub model_names: Vec<String>,
    /// Allowed model hashes (base64 of `sha256(NAME@COMMIT:HASH)`).
    #[serde(default)]
    pub model_hashes: Vec<String>,
    /// Allowed model types, each hashed as `sha256` of its name before `@` (as COCOON
    /// reads this field).
    #[serde(default)]
    pub model_types: Vec<String>,
    /// Registered proxies.
    #[serde(default)]
    pub registered_proxies: Vec<PseudoProxy>,
    /// nanoTON per adjusted token, paid by clients.
    pub price_per_token: u64,
    /// nanoTON per adjusted token, earned by workers.
    pub worker_fee_per_token: u64,
    /// The root's config version (what `min_config_version` is compared with).
    pub version: i32,
    /// The parameters' version (contract addresses depend on it).
    pub params_version: u32,
    /// Proxy contract code (hex BOC).
    pub proxy_sc_code: String,
    /// Worker contract code (hex BOC).
    pub worker_sc_code: String,
    /// Client contract code (hex BOC).
    pub client_sc_code: String,
    /// The root's owner.
    #[serde(default)]
    pub root_owner_address: Option<String>,
}

/// Why a fake-TON root file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PseudoRootError {
    /// The file cannot be read.
    #[error("cannot read the fake-TON root file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not the JSON COCOON writes.
    #[error("the fake-TON root file {path} is not COCOON's rootConfig.pseudo JSON: {source}")]
    Json {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A contract code is not a hex BOC.
    #[error("{field} in the fake-TON root file is not a hex BOC: {reason}")]
    Code {
        /// Which code.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A model hash is not base64 of 32 bytes.
    #[error("model_hashes in the fake-TON root file: {0}")]
    Hash(String),
    /// The parameters do not make a root.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl PseudoRoot {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, PseudoRootError> {
        let text = std::fs::read(path).map_err(|source| PseudoRootError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|source| PseudoRootError::Json {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parses the JSON text of the file.
    pub fn parse(text: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(text)
    }

    /// The root parameters: the file's prices, version and codes over the values COCOON's
    /// fake-TON mode fixes (struct version 1, unique id 13, test network, delays 600/300 s,
    /// stakes 1 TON, multipliers 1.0×).
    pub fn params(&self) -> Result<CocoonParams, PseudoRootError> {
        let code = |field: &'static str, hex_boc: &str| {
            let bytes = hex::decode(hex_boc.trim()).map_err(|e| PseudoRootError::Code {
                field,
                reason: e.to_string(),
            })?;
            cocoon_ton::cells::from_boc(&bytes).map_err(|e| PseudoRootError::Code {
                field,
                reason: e.to_string(),
            })
        };
        Ok(CocoonParams {
            params_version: self.params_version,
            price_per_token: self.price_per_token,
            worker_fee_per_token: self.worker_fee_per_token,
            proxy_sc_code: Some(code("proxy_sc_code", &self.proxy_sc_code)?),
            worker_sc_code: Some(code("worker_sc_code", &self.worker_sc_code)?),
            client_sc_code: Some(code("client_sc_code", &self.client_sc_code)?),
            ..CocoonParams::default()
        })
    }

    /// The root as our roles see it, for the root contract at `root` (the address the
    /// official roles' configs name as `root_contract_address`). Addresses are written for
    /// the network `testnet` names (COCOON's `is_testnet`, apart from its test mode): an
    /// official peer compares them as written.
    pub fn view(&self, root: StdAddr, testnet: bool) -> Result<ChainView, PseudoRootError> {
        let mut view = super::ChainContext::from_params(root, self.params()?, testnet)?;
        view.model_hashes = self.model_hashes()?;
        Ok(view)
    }

    /// The model hashes the file allows, sorted: `model_hashes` and the hashes of
    /// `model_types`, as COCOON's reader merges them.
    pub fn model_hashes(&self) -> Result<Vec<[u8; 32]>, PseudoRootError> {
        let mut hashes = self
            .model_hashes
            .iter()
            .map(|h| {
                cocoon_ton::pseudo::decode_int256(h)
                    .map_err(|e| PseudoRootError::Hash(format!("{h:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        hashes.extend(
            self.model_types
                .iter()
                .map(|t| cocoon_ton::pseudo::model_type_hash(t)),
        );
        hashes.sort_unstable();
        hashes.dedup();
        Ok(hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rendered by `../shared/interop/run/render.py` from upstream 9060ce5's template.
    const OFFICIAL: &[u8] = include_bytes!("../../tests/data/official-fake-ton-config.json");

    #[test]
    fn the_official_file_reads_with_upstream_codes() {
        let root = PseudoRoot::parse(OFFICIAL).expect("parses");
        assert_eq!((root.version, root.params_version), (3, 1));
        assert_eq!((root.price_per_token, root.worker_fee_per_token), (2, 1));
        assert_eq!(root.registered_proxies.len(), 1);
        let params = root.params().expect("codes");
        // The root cell hashes the base reference gives for upstream's fake-TON codes.
        let hash = |c: &Option<tycho_types::cell::Cell>| {
            hex::encode(c.as_ref().expect("code").repr_hash().0)
        };
        assert_eq!(
            hash(&params.proxy_sc_code),
            "532e707649e4161be4d816e2b6f97f82e602855a4cd3475883028d054c6e72ef"
        );
        assert_eq!(
            hash(&params.worker_sc_code),
            "657cb7ca586d77e88066effadf10f3eddea7d3487e809220e770d9dc4e596023"
        );
        assert_eq!(
            hash(&params.client_sc_code),
            "5d8a54e4462dd52f747bae8c1edca819fd2f462be05c1fc595cc2a34e6b18c44"
        );
    }

    /// What the official proxy-runner logged ("deploying proxy SC on address …") when
    /// started on this file with the owner, key and root of upstream's local set-up.
    #[test]
    fn our_proxy_contract_address_is_the_official_one() {
        use base64::Engine;
        let parse = |s: &str| cocoon_ton::address::parse(s).expect("address").0;
        let root = parse("EQBT4hy4vMEZ9uxSCuhw_gBKh9_AwmHXLe7Wo0O4Vh-4kRjJ");
        let owner = parse("UQAuz15H1ZHrZ_psVrAra7HealMIVeFq0wguqlmFno1f3B-m");
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode("ml+7xELuOQtfp9q9mSWtHiSWx5aSBV6p3xCfwPmHOwY=")
            .expect("base64")
            .try_into()
            .expect("32 bytes");
        let key = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let view = PseudoRoot::parse(OFFICIAL)
            .expect("parses")
            .view(root, false)
            .expect("a root");
        let sc = view.context.proxy_sc(&owner, &key).expect("derived");
        assert_eq!(
            sc,
            parse("UQBPkxYfPKgOBMbbi9VQVO2DQz7Wg3w9K5YTsl8x1_KaeZcZ")
        );
    }

    #[test]
    fn model_hashes_and_types_are_read_as_cocoon_reads_them() {
        use base64::Engine;
        use sha2::Digest;
        let full = "Qwen/Qwen3-8B@abc:def";
        let full_hash: [u8; 32] = sha2::Sha256::digest(full.as_bytes()).into();
        let mut json: serde_json::Value = serde_json::from_slice(OFFICIAL).expect("json");
        json["model_hashes"] =
            serde_json::json!([base64::engine::general_purpose::STANDARD.encode(full_hash)]);
        json["model_types"] = serde_json::json!(["Other/Model@x:y"]);
        let root = PseudoRoot::parse(&serde_json::to_vec(&json).expect("json")).expect("parses");
        let root_address =
            cocoon_ton::address::parse("EQBT4hy4vMEZ9uxSCuhw_gBKh9_AwmHXLe7Wo0O4Vh-4kRjJ")
                .expect("address")
                .0;
        let view = root.view(root_address, false).expect("a root");
        assert!(view.allows_model(full));
        assert!(!view.allows_model("Qwen/Qwen3-8B@abc:other"));
        // A model type allows the name before '@' (COCOON hashes that part of it).
        assert!(view.allows_model("Other/Model"));
        assert!(!view.allows_model("Other/Model@x:y"));
        // The official template lists `model_names` only, which COCOON ignores: no model.
        let official = PseudoRoot::parse(OFFICIAL).expect("parses");
        assert!(official.model_hashes().expect("hashes").is_empty());
        json["model_hashes"] = serde_json::json!(["not base64"]);
        let broken = PseudoRoot::parse(&serde_json::to_vec(&json).expect("json")).expect("parses");
        assert!(matches!(
            broken.model_hashes(),
            Err(PseudoRootError::Hash(_))
        ));
    }

    #[test]
    fn a_broken_code_is_named() {
        let text = String::from_utf8(OFFICIAL.to_vec())
            .expect("utf-8")
            .replace("\"proxy_sc_code\" : \"b5ee", "\"proxy_sc_code\" : \"zz");
        let root = PseudoRoot::parse(text.as_bytes()).expect("parses");
        assert!(matches!(
            root.params(),
            Err(PseudoRootError::Code {
                field: "proxy_sc_code",
                ..
            })
        ));
    }
}
