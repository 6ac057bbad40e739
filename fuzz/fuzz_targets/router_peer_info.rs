//! Arbitrary bytes as the body of an official router's `AttestedPeerInfo` prefix: parsing
//! never panics, and what parses writes back as a v2 body that parses to the same peer
//! (v1 bodies without a report come back as v2's empty report).
#![no_main]

use cocoon_attest::router::{AttestedPeerInfo, RouterReport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = AttestedPeerInfo::parse(data) else {
        return;
    };
    let _ = info.image_hash();
    let _ = info.source_addr();
    let again = AttestedPeerInfo::parse(&info.to_body()).expect("our own body parses");
    assert_eq!(again.public_key, info.public_key);
    assert_eq!(again.source_ip, info.source_ip);
    assert_eq!(again.destination_port, info.destination_port);
    if matches!(info.report, Some(RouterReport::Tdx { .. } | RouterReport::Sev { .. })) {
        assert_eq!(again, info);
    }
});
