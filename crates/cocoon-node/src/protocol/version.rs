//! Protocol versions as capabilities: a role asks a negotiated [`Version`] what the peer
//! understands instead of comparing numbers, and the flag bits of the TL messages have
//! names ([`flags`]). Version numbers are COCOON's alone (upstream 9060ce5): our own
//! additions are negotiated apart from them ([`super::extensions`]).
//!
//! | version | what it adds |
//! |---|---|
//! | 0 | COCOON's first answers (`client.queryAnswer…`, tokens in every message) |
//! | 1 | `…Ex` answers and errors; the last message carries a final info |
//! | 2 | proxy and worker start/end times in the final info |
//! | 3 | `runQueryEx` carries a key (`public_key` from the client, `private_key` to the worker; zero: not encrypted); the worker may get encrypted requests |
//! | 4 | the worker may describe its machine in its hello (no 9060ce5 worker does) |
//!
//! Who speaks what (9060ce5): proxies 0..=4, clients 1..=4, workers 3..=4; b75d444: proxies
//! 0..=2, clients and workers 1..=2. The accepting proxy picks the highest common version.

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

    /// `client.runQueryEx` and `proxy.runQueryEx` carry their key field (flag bit 1), zero
    /// for a request that is not encrypted (protocol 3).
    pub fn request_keys(self) -> bool {
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
    /// Hello params: the peer is cocoon-rs and offers its extensions
    /// ([`super::super::extensions`]). COCOON uses bits 0–2 of these flags and reads no
    /// others, so an official peer ignores it and never answers with it.
    pub const PARAMS_COCOON_RS: u32 = 1 << 16;
    /// `client.runQueryEx`: answer this request at most once (a cocoon-rs extension, set
    /// only towards a proxy that accepted the extensions): the proxy keeps the answer with
    /// its booking and answers the same request id sent again with it instead of running
    /// and billing it twice. No optional field of `runQueryEx` uses this bit.
    pub const QUERY_ANSWER_ONCE: u32 = 1 << 16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_by_version() {
        let caps = |n| {
            let v = Version::new(n);
            (v.ex_answers(), v.timings(), v.request_keys())
        };
        assert_eq!(caps(0), (false, false, false));
        assert_eq!(caps(1), (true, false, false));
        assert_eq!(caps(2), (true, true, false));
        assert_eq!(caps(3), (true, true, true));
        assert_eq!(caps(4), (true, true, true));
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

    /// The pairings of the 9060ce5 reference (§2.5), with our ranges beside upstream's.
    #[test]
    fn pairings_with_official_roles() {
        use crate::{client, proxy, worker};
        let upstream_proxy = 0..=4;
        let old_proxy = 0..=2;
        let ours = |r: std::ops::RangeInclusive<i32>| (Some(*r.start()), Some(*r.end()));
        let offer = |(min, max): (Option<i32>, Option<i32>),
                     proxy: std::ops::RangeInclusive<i32>| {
            choose(proxy, true, min, max)
        };
        let our_client = ours(client::MIN_PROTO..=client::MAX_PROTO);
        let our_worker = ours(worker::MIN_PROTO..=worker::MAX_PROTO);
        // Our client: 4 with a 9060ce5 proxy, 2 with a b75d444 one.
        assert_eq!(
            offer(our_client, upstream_proxy.clone()),
            Ok(Version::new(4))
        );
        assert_eq!(offer(our_client, old_proxy.clone()), Ok(Version::new(2)));
        // Our worker joins both: at 4 a 9060ce5 proxy may send it encrypted requests.
        assert_eq!(offer(our_worker, upstream_proxy), Ok(Version::new(4)));
        assert_eq!(offer(our_worker, old_proxy.clone()), Ok(Version::new(2)));
        // Our proxy: a 9060ce5 worker (3..4) and client (1..4) get 4, b75d444 ones 2, a
        // proxy-0 peer 0.
        let our_proxy = proxy::MIN_PROTO..=proxy::MAX_PROTO;
        assert_eq!(
            offer((Some(3), Some(4)), our_proxy.clone()),
            Ok(Version::new(4))
        );
        assert_eq!(
            offer((Some(1), Some(4)), our_proxy.clone()),
            Ok(Version::new(4))
        );
        assert_eq!(
            offer((Some(1), Some(2)), our_proxy.clone()),
            Ok(Version::new(2))
        );
        assert_eq!(choose(our_proxy, false, None, None), Ok(Version::new(0)));
        // A 9060ce5 worker cannot join a b75d444 proxy (upstream's own limit).
        assert!(offer((Some(3), Some(4)), old_proxy).is_err());
        // What each side accepts back.
        assert!(accept(worker::MIN_PROTO..=worker::MAX_PROTO, Some(2)).is_ok());
        assert!(accept(worker::MIN_PROTO..=worker::MAX_PROTO, Some(4)).is_ok());
        assert!(accept(client::MIN_PROTO..=client::MAX_PROTO, Some(4)).is_ok());
    }
}
