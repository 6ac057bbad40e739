//! Arbitrary bytes as a peer certificate: certificate parsing, extension checks and every
//! policy's synchronous verification must never panic on hostile input.
#![no_main]

use cocoon_attest::cert::parse_certificate;
use cocoon_attest::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = parse_certificate(data);
    for policy in [Policy::any(), Policy::fake_tdx()] {
        let r = policy.check_cert(data, 1_800_000_000);
        // Policy checks never accept what the structural parser refused.
        if parsed.is_err() {
            assert!(r.is_err());
        }
    }
});
