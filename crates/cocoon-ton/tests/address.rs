//! Address forms: every address and flag combination round-trips; COCOON's
//! canonical string is the non-bounceable URL-safe form.

use cocoon_ton::address::{parse, to_friendly, to_friendly_with, to_raw, Address, AddressFlags};
use cocoon_ton::tycho_types::cell::HashBytes;
use cocoon_ton::StdAddr;
use proptest::prelude::*;

proptest! {
    #[test]
    fn all_forms_round_trip(wc in prop_oneof![Just(0i8), Just(-1i8), any::<i8>()], h in any::<[u8; 32]>(),
                            bounceable in any::<bool>(), testnet in any::<bool>(), url_safe in any::<bool>()) {
        let a = StdAddr::new(wc, HashBytes(h));
        let flags = AddressFlags { bounceable, testnet, url_safe };
        let s = to_friendly_with(&a, flags);
        prop_assert_eq!(s.len(), 48);
        let (back, f) = parse(&s).unwrap();
        prop_assert_eq!(&back, &a);
        prop_assert_eq!(f.bounceable, bounceable);
        prop_assert_eq!(f.testnet, testnet);
        let (raw_back, _) = parse(&to_raw(&a)).unwrap();
        prop_assert_eq!(&raw_back, &a);
        let canonical = Address::new(a.clone(), testnet).to_string();
        prop_assert_eq!(&canonical, &to_friendly(&a, testnet));
        prop_assert!(!canonical.contains('+') && !canonical.contains('/'));
        if wc == 0 {
            let prefix = if testnet { "0Q" } else { "UQ" };
            prop_assert!(canonical.starts_with(prefix));
        }
    }

    #[test]
    fn garbage_never_panics(s in ".{0,80}") {
        let _ = parse(&s);
    }
}
