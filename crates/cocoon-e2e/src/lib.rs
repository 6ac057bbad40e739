//! End-to-end encryption of COCOON requests and answers, as COCOON 9060ce5 defines it
//! (reference `cocoon-protocol-9060ce5.md` §2.8): an app encrypts the string fields of its
//! request to a key manager's public key; the worker that holds the private key decrypts
//! them, and encrypts every string of its answer back to the app. Proxies and client
//! gateways on the way see only the envelope, the model name and the limits.
//!
//! ```
//! use cocoon_e2e::{open, public_key, seal, Direction};
//! let (app, key_manager) = ([1u8; 32], [2u8; 32]);
//! let request = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
//! let sealed = seal(&request, &app, &public_key(&key_manager), Direction::ToWorker).unwrap();
//! assert_eq!(sealed["model"], "m");
//! let opened = open(&sealed, &key_manager, Direction::ToWorker, None).unwrap();
//! assert_eq!(opened.body["messages"][0]["content"], "hi");
//! assert_eq!(opened.sender, public_key(&app));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cipher;
pub mod envelope;
pub mod keys;

pub use envelope::{is_encrypted, open, seal, EnvelopeError, Opened};
pub use keys::{public_key, Direction};

#[cfg(test)]
mod vector {
    //! The test vector of reference §2.8.7 (cross-checked there against COCOON's C++).

    use super::*;
    use serde_json::json;

    fn h32(s: &str) -> [u8; 32] {
        hex::decode(s).expect("hex").try_into().expect("32 bytes")
    }

    const KM_SEED: &str = "070ad82e6132dab32067fb720afd0060555a64f905bbec0dc2849088951b3a63";
    const KM_PUB: &str = "fb67d0fcd338f20e0d4957d9e82adc101d2e3513a448a3ab46052ee1b88c5818";
    const CLIENT_SEED: &str = "1c28f20c3d005f3391b9f32242a00ad256b268f490ed9e4eab262d9827069636";
    const CLIENT_PUB: &str = "4d90a5eacda9a6d1c381711b619505cf032e0cae5e2744b6b343fa87362014a2";
    const HELLO: &str = "ENC_6775b1fd573fa4711c21c4dc98a8cb50346e15f7da1814a6c054f009719d6d62d856b948dd19bb96d53f42cdaebb4922";
    const USER: &str = "ENC_88ee952f6efb7388168bc374e2ce9d1fbdf6d5814ceeb02e2e17d432567f45a2987c4d9acad1965870ed23de45baed70";
    const HI: &str = "ENC_2d631e519177178180339194342fc442541a8696860b7b53ad4314a495ed79ba41638d8759217ffa2c0c9e73e7b9f3e6";

    /// The deterministic prefix of the vector: `[p, 0, 0, …]`.
    fn zero_prefix(n: usize) -> Vec<u8> {
        vec![0; cipher::prefix_len(n)]
    }

    #[test]
    fn keys_shared_secret_and_message_secrets() {
        let (km, client) = (h32(KM_SEED), h32(CLIENT_SEED));
        assert_eq!(hex::encode(public_key(&km)), KM_PUB);
        assert_eq!(hex::encode(public_key(&client)), CLIENT_PUB);
        let shared = keys::shared_secret(&client, &h32(KM_PUB)).expect("shared");
        assert_eq!(
            hex::encode(shared),
            "09b518cc978c49f7563a1938e5077a83d6dd475d2165c8a2ce0e15250d4adf63"
        );
        assert_eq!(keys::shared_secret(&km, &h32(CLIENT_PUB)), Ok(shared));
        let nonce = "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=";
        assert_eq!(
            hex::encode(keys::message_secret(&shared, nonce, Direction::ToWorker)),
            "93c73e2bed806ce20dc9362b1460882d532276018ea7b75c0c0da52bdcdd0707"
        );
        assert_eq!(
            hex::encode(keys::message_secret(&shared, nonce, Direction::ToApp)),
            "ba687a8a4014a40d2a46fffe17c0a405a4bc622385767b1be3369b2cf1e02904"
        );
        let answer_nonce = "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=";
        assert_eq!(
            hex::encode(keys::message_secret(
                &shared,
                answer_nonce,
                Direction::ToApp
            )),
            "8d982526640c7a82f79b7c965c121926ef8b0e5ca68ef8eb10dec9fef901ba02"
        );
    }

    #[test]
    fn the_request_of_the_vector_encrypts_byte_for_byte() {
        let request = json!({"model": "Qwen/Qwen3-0.6B", "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hello"}]});
        let sealed = envelope::seal_with(
            &request,
            &h32(CLIENT_SEED),
            &h32(KM_PUB),
            Direction::ToWorker,
            &[0x22; 32],
            &mut zero_prefix,
        )
        .expect("sealed");
        assert_eq!(
            sealed,
            json!({
                "model": "Qwen/Qwen3-0.6B",
                "max_tokens": 100,
                "messages": [{"role": USER, "content": HELLO}],
                "is_encrypted": "v1",
                "sender_public_key": CLIENT_PUB,
                "receiver_public_key": KM_PUB,
                "encryption_nonce": "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=",
            })
        );
        // The worker, holding the key manager's seed, reads it back.
        let opened = open(&sealed, &h32(KM_SEED), Direction::ToWorker, None).expect("opened");
        assert_eq!(opened.sender, h32(CLIENT_PUB));
        assert_eq!(opened.body["messages"][0]["content"], "Hello");
        assert_eq!(opened.body["messages"][0]["role"], "user");
    }

    #[test]
    fn the_answer_of_the_vector_encrypts_byte_for_byte() {
        let answer = json!({"text": "Hi"});
        let sealed = envelope::seal_with(
            &answer,
            &h32(KM_SEED),
            &h32(CLIENT_PUB),
            Direction::ToApp,
            &[0x33; 32],
            &mut zero_prefix,
        )
        .expect("sealed");
        assert_eq!(sealed["text"], HI);
        // The app checks the sender is the key it encrypted to.
        let opened = open(
            &sealed,
            &h32(CLIENT_SEED),
            Direction::ToApp,
            Some(&h32(KM_PUB)),
        )
        .expect("opened");
        assert_eq!(opened.body["text"], "Hi");
        assert_eq!(
            open(&sealed, &h32(CLIENT_SEED), Direction::ToApp, Some(&[9; 32])),
            Err(EnvelopeError::PublicKeyMismatch)
        );
        // A request cannot be read as an answer: the direction enters the secret.
        assert!(matches!(
            open(&sealed, &h32(CLIENT_SEED), Direction::ToWorker, None),
            Err(EnvelopeError::Cipher { .. })
        ));
    }

    #[test]
    fn hostile_envelopes_are_refused_never_a_panic() {
        let (km, client) = (h32(KM_SEED), h32(CLIENT_SEED));
        let sealed = seal(
            &json!({"content": "x"}),
            &client,
            &h32(KM_PUB),
            Direction::ToWorker,
        )
        .expect("sealed");
        for (field, value) in [
            ("content", json!("ENC")),
            ("content", json!("EN")),
            ("content", json!("ENC_zz")),
            ("content", json!("ENC_00")),
            ("content", json!("plain")),
        ] {
            let mut bad = sealed.clone();
            bad[field] = value.clone();
            assert!(
                open(&bad, &km, Direction::ToWorker, None).is_err(),
                "{value}"
            );
        }
        let mut plain_on_purpose = sealed.clone();
        plain_on_purpose["content"] = json!("DEC_as is");
        assert_eq!(
            open(&plain_on_purpose, &km, Direction::ToWorker, None)
                .expect("opened")
                .body["content"],
            "as is"
        );
        let mut missing = sealed.clone();
        missing
            .as_object_mut()
            .expect("object")
            .remove("encryption_nonce");
        assert_eq!(
            open(&missing, &km, Direction::ToWorker, None),
            Err(EnvelopeError::MissingFields)
        );
        // Sealed to someone else.
        assert_eq!(
            open(&sealed, &[5; 32], Direction::ToWorker, None),
            Err(EnvelopeError::PublicKeyMismatch)
        );
        assert_eq!(
            open(&json!([1]), &km, Direction::ToWorker, None),
            Err(EnvelopeError::NotAnObject)
        );
    }
}
