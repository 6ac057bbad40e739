//! Protocol versions as capabilities: a role asks a negotiated [`Version`] what the peer
//! understands instead of comparing numbers, and the flag bits of the TL messages have
//! names ([`flags`]).
//!
//! | version | what it adds |
//! |---|---|
//! | 0 | COCOON's first answers (`client.queryAnswer…`, tokens in every message) |
//! | 1 | `…Ex` answers and errors; the last message carries a final info |
//! | 2 | proxy and worker start/end times in the final info |
//! | 3 | cocoon-rs: the caller may cancel a running request (`cocoonrs.cancelQuery`) |

use std::fmt;
use std::ops::RangeInclusive;

/// A negotiated protocol version of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(i32);

impl Version {
    /// The version numbered `n`.
    pub const fn new(n: i32) -> Self {
        Version(n)
    }

    /// Its number, as the wire carries it.
    pub const fn number(self) -> i32 {
        self.0
    }

    /// Answers, parts and errors in their `…Ex` forms, the last one carrying a final info
    /// (protocol 1); before, every message carried the tokens and errors had no summary.
    pub fn ex_answers(self) -> bool {
        self.0 >= 1
    }

    /// Proxy and worker start and end times in the final info (protocol 2).
    pub fn timings(self) -> bool {
        self.0 >= 2
    }

    /// The caller may stop a running request with `cocoonrs.cancelQuery` (cocoon-rs 3).
    pub fn cancellation(self) -> bool {
        self.0 >= 3
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why no version could be agreed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The two ranges do not overlap.
    #[error("cannot choose a common protocol version: peer speaks {peer_min}..={peer_max}, this side {ours_min}..={ours_max}")]
    NoCommon {
        /// The peer's lowest version.
        peer_min: i32,
        /// The peer's highest version.
        peer_max: i32,
        /// Our lowest version.
        ours_min: i32,
        /// Our highest version.
        ours_max: i32,
    },
    /// The peer chose a version outside what we offered.
    #[error("peer chose protocol {chosen}, this side speaks {ours_min}..={ours_max}")]
    NotOffered {
        /// What the peer chose.
        chosen: i32,
        /// Our lowest version.
        ours_min: i32,
        /// Our highest version.
        ours_max: i32,
    },
}

/// The accepting side's choice: the highest version both speak, for a peer that announced
/// `min..=max` in its hello (`announced` is false for a peer too old to announce any,
/// which speaks only version 0).
pub fn choose(
    ours: RangeInclusive<i32>,
    announced: bool,
    min: Option<i32>,
    max: Option<i32>,
) -> Result<Version, VersionError> {
    let (peer_min, peer_max) = if announced {
        (min.unwrap_or(0), max.unwrap_or(0))
    } else {
        (0, 0)
    };
    if peer_max < *ours.start() || *ours.end() < peer_min {
        return Err(VersionError::NoCommon {
            peer_min,
            peer_max,
            ours_min: *ours.start(),
            ours_max: *ours.end(),
        });
    }
    Ok(Version(peer_max.min(*ours.end())))
}

/// The connecting side's check of the version the peer chose (`None`: it announced none,
/// so 0).
pub fn accept(ours: RangeInclusive<i32>, chosen: Option<i32>) -> Result<Version, VersionError> {
    let chosen = chosen.unwrap_or(0);
    if !ours.contains(&chosen) {
        return Err(VersionError::NotOffered {
            chosen,
            ours_min: *ours.start(),
            ours_max: *ours.end(),
        });
    }
    Ok(Version(chosen))
}

/// Named flag bits of the TL messages (the codec also sets the bits of optional fields
/// that are present).
pub mod flags {
    /// Hello params (`worker.params`, `client.params`, `proxy.params`): the base optional
    /// fields (`is_test`, counts) are present.
    pub const PARAMS_BASE: u32 = 1;
    /// Hello params: the protocol version fields are present.
    pub const PARAMS_VERSIONS: u32 = 2;
    /// Hello params that carry neither are from a peer too old to speak with.
    pub const PARAMS_ANY: u32 = PARAMS_BASE | PARAMS_VERSIONS;
    /// An answer, part or error with a final info: the last message of its request.
    pub const ANSWER_LAST: u32 = 1;
    /// Final info: debug strings present.
    pub const FINAL_INFO_DEBUG: u32 = 1;
    /// Final info: start and end times present.
    pub const FINAL_INFO_TIMINGS: u32 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_by_version() {
        let caps = |n| {
            let v = Version::new(n);
            (v.ex_answers(), v.timings(), v.cancellation())
        };
        assert_eq!(caps(0), (false, false, false));
        assert_eq!(caps(1), (true, false, false));
        assert_eq!(caps(2), (true, true, false));
        assert_eq!(caps(3), (true, true, true));
    }

    #[test]
    fn negotiation() {
        assert_eq!(choose(0..=3, true, Some(1), Some(2)), Ok(Version::new(2)));
        assert_eq!(choose(0..=3, true, Some(1), Some(9)), Ok(Version::new(3)));
        assert_eq!(choose(0..=3, false, Some(2), Some(3)), Ok(Version::new(0)));
        assert!(matches!(
            choose(1..=3, false, None, None),
            Err(VersionError::NoCommon { .. })
        ));
        assert!(matches!(
            choose(0..=3, true, Some(4), Some(5)),
            Err(VersionError::NoCommon { .. })
        ));
        assert_eq!(accept(1..=3, Some(3)), Ok(Version::new(3)));
        assert_eq!(accept(0..=3, None), Ok(Version::new(0)));
        assert!(matches!(
            accept(1..=3, Some(0)),
            Err(VersionError::NotOffered { chosen: 0, .. })
        ));
    }
}
