//! Fuzzer-chosen values of every constructor: encode then decode is the identity.
#![no_main]

use cocoon_tl::testing::Source;
use cocoon_tl::{from_bytes, random_object, to_bytes, Object, CONSTRUCTORS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&index, rest)) = data.split_first() else { return };
    let (id, _) = CONSTRUCTORS[usize::from(index) % CONSTRUCTORS.len()];
    let mut source = Source::new(rest);
    let value = random_object(id, &mut source).expect("generator for every id");
    let bytes = to_bytes(&value);
    let back = from_bytes::<Object>(&bytes).expect("our own encoding decodes");
    assert_eq!(to_bytes(&back), bytes);
});
