//! Errors of the TON layer.

use thiserror::Error;

/// Everything that can go wrong while building, parsing, signing or checking
/// TON cells and messages in this crate.
#[derive(Debug, Error)]
pub enum TonError {
    /// A cell could not be built or read (overflow, underflow, bad tag...).
    #[error("cell error: {0}")]
    Cell(#[from] tycho_types::error::Error),
    /// A bag of cells could not be decoded.
    #[error("bad BOC: {0}")]
    Boc(String),
    /// An address string could not be parsed.
    #[error("bad address {input:?}: {reason}")]
    Address {
        /// The string that was given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// A cell had a layout other than the one expected.
    #[error("bad layout of {what}: {reason}")]
    Layout {
        /// What was being parsed.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// An opcode other than the expected one(s).
    #[error("unexpected opcode {found:#010x} (expected {expected})")]
    UnexpectedOp {
        /// The opcode found in the cell.
        found: u32,
        /// A description of the opcode(s) that would have been accepted.
        expected: String,
    },
    /// A cell carried more bits or references than its layout allows.
    #[error("trailing data in {0}")]
    TrailingData(&'static str),
    /// An Ed25519 signature did not verify, or a key was malformed.
    #[error("bad signature: {0}")]
    Signature(String),
    /// A voucher was addressed to another contract than the expected one.
    #[error("voucher addressed to {found}, expected {expected}")]
    WrongContract {
        /// The contract in the voucher payload (raw form).
        found: String,
        /// The contract that was expected (raw form).
        expected: String,
    },
    /// A required contract code cell is missing from the root params.
    #[error("missing contract code: {0}")]
    MissingCode(&'static str),
    /// A configuration file or value could not be read.
    #[error("config: {0}")]
    Config(String),
    /// A value is out of its allowed range.
    #[error("out of range: {0}")]
    Range(String),
}

impl TonError {
    pub(crate) fn layout(what: &'static str, reason: impl Into<String>) -> Self {
        TonError::Layout {
            what,
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = TonError> = std::result::Result<T, E>;
