//! Property tests: encode→decode is the identity for every constructor of the schema,
//! and decoding arbitrary bytes never panics.

use cocoon_tl::testing::Source;
use cocoon_tl::{enums, from_bytes, random_object, to_bytes, Object, CONSTRUCTORS};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_constructor_round_trips(seed in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for (id, name) in CONSTRUCTORS {
            let mut source = Source::new(&seed);
            let value = random_object(*id, &mut source).expect("every listed id has a generator");
            prop_assert_eq!(value.name(), *name);
            let bytes = to_bytes(&value);
            prop_assert_eq!(cocoon_tl::peek_id(&bytes), Some(*id));
            let back: Object = from_bytes(&bytes).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
            prop_assert_eq!(&back, &value);
            prop_assert_eq!(to_bytes(&back), bytes);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(object) = from_bytes::<Object>(&bytes) {
            // Whatever decodes re-encodes canonically, and that encoding is stable
            // (compared as bytes: a decoded double may be NaN).
            let again = to_bytes(&object);
            let reparsed = from_bytes::<Object>(&again).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(to_bytes(&reparsed), again);
        }
        let _ = from_bytes::<enums::tcp::Packet>(&bytes);
        let _ = from_bytes::<enums::client::QueryAnswerEx>(&bytes);
        let _ = from_bytes::<enums::proxy::QueryAnswerEx>(&bytes);
    }

    #[test]
    fn known_id_with_random_body_never_panics(
        index in 0..CONSTRUCTORS.len(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = CONSTRUCTORS[index].0.to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        if let Ok(object) = from_bytes::<Object>(&bytes) {
            prop_assert_eq!(object.name(), CONSTRUCTORS[index].1);
        }
    }
}
