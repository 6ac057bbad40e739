//! Arbitrary bytes as a DCAP quote: the parser must never panic, and whatever parses as
//! TDX must yield a stable image hash; the fake-quote reader accepts exactly 64 or 496 bytes.
#![no_main]

use cocoon_attest::quote::parse_quote;
use cocoon_attest::tee::parse_fake_quote;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = parse_quote(data) {
        if let Some(m) = q.tdx() {
            assert_eq!(m.image_hash(), m.clone().image_hash());
        }
    }
    assert_eq!(
        parse_fake_quote(data).is_some(),
        data.len() == 64 || data.len() == cocoon_attest::tee::FAKE_TDX_REPORT_LEN
    );
});
