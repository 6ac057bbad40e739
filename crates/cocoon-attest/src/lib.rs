//! RA-TLS for COCOON: the proof-of-work gate, attested mutual TLS 1.3 with self-signed
//! Ed25519 certificates carrying TDX quotes, quote parsing and verification, and policies.
