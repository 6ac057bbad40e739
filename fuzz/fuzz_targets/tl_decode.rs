//! Arbitrary bytes as any COCOON TL object. Whatever decodes must re-encode to bytes that
//! decode again to the same encoding.
#![no_main]

use cocoon_tl::{from_bytes, to_bytes, Object};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = from_bytes::<Object>(data) {
        let encoded = to_bytes(&object);
        let again = from_bytes::<Object>(&encoded).expect("canonical encoding decodes");
        assert_eq!(to_bytes(&again), encoded);
    }
});
