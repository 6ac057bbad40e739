//! Golden bytes and error cases of the TL codec.

use cocoon_tl::types::{client, http, proxy, tcp};
use cocoon_tl::{enums, from_bytes, from_bytes_bare, functions, to_bytes, to_bytes_bare, TlError};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).expect("valid hex in test")
}

#[test]
fn tcp_connect_golden_bytes_both_ways() {
    // The payload of the spec's example frame `0c000000 00000000 61427ca5 0100000000000000`.
    let payload = unhex("61427ca5 0100000000000000");
    let value = enums::tcp::Packet::Connect(tcp::Connect { id: 1 });
    assert_eq!(to_bytes(&value), payload);
    assert_eq!(from_bytes::<enums::tcp::Packet>(&payload), Ok(value));
}

#[test]
fn client_params_with_flags_1_and_2() {
    let params = client::Params {
        flags: 1 | 2,
        client_owner_address: "EQAB".into(),
        is_test: Some(true),
        min_proto_version: Some(1),
        max_proto_version: Some(2),
    };
    // flags | string "EQAB" (1-byte length, 3 bytes padding) | boolTrue | min | max
    let bare = unhex("03000000 04455141 42000000 b5757299 01000000 02000000");
    assert_eq!(to_bytes_bare(&params), bare);
    assert_eq!(from_bytes_bare::<client::Params>(&bare), Ok(params.clone()));
    // Boxed, it starts with the pinned id 0x40fdca64.
    let mut boxed = unhex("64cafd40");
    boxed.extend_from_slice(&bare);
    assert_eq!(to_bytes(&params), boxed);
}

#[test]
fn client_params_without_flags_omits_optional_fields() {
    let params = client::Params {
        flags: 0,
        client_owner_address: String::new(),
        is_test: None,
        min_proto_version: None,
        max_proto_version: None,
    };
    assert_eq!(to_bytes_bare(&params), unhex("00000000 00000000"));
}

#[test]
fn present_optional_fields_set_their_flag_bits() {
    let info = proxy::QueryFinalInfo {
        flags: 0,
        tokens_used: Default::default(),
        worker_debug: Some("dbg".into()),
        worker_start_time: None,
        worker_end_time: None,
    };
    let bytes = to_bytes_bare(&info);
    assert_eq!(
        &bytes[..4],
        &[1, 0, 0, 0],
        "bit 0 follows the present field"
    );
    let back = from_bytes_bare::<proxy::QueryFinalInfo>(&bytes).expect("decodes");
    assert_eq!(back.flags, 1);
    assert_eq!(back.worker_debug.as_deref(), Some("dbg"));
}

#[test]
fn string_length_prefix_switches_at_254() {
    for (n, header) in [(0usize, 1usize), (3, 1), (253, 1), (254, 4), (1000, 4)] {
        let header_and_data = header + n;
        let value = http::Header {
            name: "a".repeat(n),
            value: String::new(),
        };
        let bytes = to_bytes_bare(&value);
        let name_len = header_and_data.div_ceil(4) * 4;
        assert_eq!(bytes.len(), name_len + 4, "n = {n}");
        if header == 4 {
            assert_eq!(bytes[0], 0xfe);
            assert_eq!(&bytes[1..4], &(n as u32).to_le_bytes()[..3]);
        } else {
            assert_eq!(bytes[0] as usize, n);
        }
        assert_eq!(from_bytes_bare::<http::Header>(&bytes), Ok(value));
    }
}

#[test]
fn invalid_utf8_is_a_decode_error() {
    let bytes = unhex("02ff fe00 00000000");
    assert_eq!(
        from_bytes_bare::<http::Header>(&bytes),
        Err(TlError::InvalidUtf8 { offset: 0 })
    );
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut bytes = to_bytes(&tcp::Ping { id: 7 });
    bytes.push(0);
    assert!(matches!(
        from_bytes::<enums::tcp::Packet>(&bytes),
        Err(TlError::TrailingBytes { count: 1, .. })
    ));
}

#[test]
fn truncated_data_is_an_error() {
    let bytes = to_bytes(&tcp::Ping { id: 7 });
    for cut in 0..bytes.len() {
        let err = from_bytes::<enums::tcp::Packet>(&bytes[..cut]).expect_err("truncated");
        assert!(
            matches!(err, TlError::UnexpectedEof { .. }),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn unknown_constructor_names_the_expected_type() {
    let err = from_bytes::<enums::tcp::Packet>(&unhex("01020304 00000000")).expect_err("unknown");
    assert_eq!(
        err,
        TlError::UnknownConstructor {
            id: 0x04030201,
            offset: 0,
            expected: "tcp.Packet"
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown constructor id 0x04030201 at offset 0, expected tcp.Packet"
    );
}

#[test]
fn bool_must_be_one_of_its_two_constructors() {
    let mut bytes = to_bytes(&functions::worker::ProxyHandshakeComplete { is_disabled: true });
    bytes[4] ^= 1;
    assert!(matches!(
        from_bytes::<functions::worker::ProxyHandshakeComplete>(&bytes),
        Err(TlError::UnknownConstructor {
            expected: "Bool",
            offset: 4,
            ..
        })
    ));
}

#[test]
fn huge_vector_count_is_rejected_before_allocation() {
    // client.workerTypes with a count of 0xffffffff and nothing after it.
    let mut bytes = to_bytes(&client::WorkerTypes { types: vec![] });
    bytes.truncate(4);
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        from_bytes::<client::WorkerTypes>(&bytes),
        Err(TlError::VectorTooLong { .. })
    ));
}

#[test]
fn boxed_field_round_trips_through_its_enum() {
    let answer = client::PaymentStatus {
        signed_payment: proxy::SignedPaymentEmpty {}.into(),
        db_tokens: 10,
        max_tokens: 20,
    };
    let bytes = to_bytes(&answer);
    // signed_payment is boxed: proxy.signedPaymentEmpty's id follows the answer's id.
    assert_eq!(&bytes[4..8], &0xb347ce64u32.to_le_bytes());
    assert_eq!(from_bytes::<client::PaymentStatus>(&bytes), Ok(answer));
}

#[test]
fn object_decodes_any_constructor_and_names_it() {
    let bytes = to_bytes(&functions::client::GetWorkerTypesV2 {});
    let object: cocoon_tl::Object = from_bytes(&bytes).expect("decodes");
    assert_eq!(object.name(), "client.getWorkerTypesV2");
    assert_eq!(
        cocoon_tl::constructor_name(0xb2133d72),
        Some("client.getWorkerTypesV2")
    );
}
