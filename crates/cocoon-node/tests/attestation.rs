//! `GET /v1/attestation` on one loopback network: the proxy and every serving worker sign
//! the app's nonce with their certificates' keys, fetched fresh through the network; the
//! evidence verifies for that nonce only.

mod common;

use cocoon_attest::{CertResolver, TeeMode};
use cocoon_node::client::gateway::GatewaySettings;
use cocoon_node::protocol::evidence::{check, Attester};
use cocoon_tl::types::cocoonrs::Evidence;
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::Value;

fn attester(seed: u8) -> (Attester, [u8; 32]) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let public = key.verifying_key().to_bytes();
    let certs = CertResolver::new(key.clone(), TeeMode::FakeTdx).expect("certificate");
    (Attester::new(key, certs), public)
}

fn evidence_of(item: &Value) -> Evidence {
    use base64::Engine;
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(item[k].as_str().expect(k))
            .expect("base64")
    };
    Evidence {
        role: item["role"].as_str().expect("role").into(),
        model: item["model"].as_str().expect("model").into(),
        certificate: b64("certificate"),
        signature: b64("signature"),
        verified_key: [0; 32],
        verified_image_hash: [0; 32],
        verified_policy: String::new(),
        verified_at: 0,
    }
}

#[tokio::test]
async fn every_party_signs_the_apps_nonce_with_its_attested_key() {
    let net = start_network(&[WorkerSpec::new("w1", 1000), WorkerSpec::new("w2", 1000)]).await;
    net.wait_ready(2).await;
    // The proxy's key is the one its sessions know it by; each worker has its own.
    let proxy_key = proxy_settings().signing_key;
    let proxy_certs = CertResolver::new(proxy_key.clone(), TeeMode::FakeTdx).expect("cert");
    net.proxy
        .set_attester(Attester::new(proxy_key.clone(), proxy_certs), "fake_tdx");
    let mut worker_keys = Vec::new();
    for (i, w) in net.workers.iter().enumerate() {
        let (a, public) = attester(40 + i as u8);
        w.set_attester(a);
        worker_keys.push(public);
    }
    let (base, _node) = start_gateway(&[net.client_addr], GatewaySettings::default()).await;
    let http = reqwest::Client::new();

    let answer = get_json(&http, &format!("{base}/v1/attestation?nonce=0badc0ffee")).await;
    assert_eq!(answer["nonce"], "0badc0ffee");
    let proxies = answer["proxies"].as_array().expect("proxies");
    assert_eq!(proxies.len(), 1);
    let items = proxies[0]["evidence"].as_array().expect("evidence");
    assert_eq!(items.len(), 3, "the proxy and both workers: {answer}");
    let mut workers_seen = Vec::new();
    for item in items {
        assert_eq!(item["valid"], true, "{item}");
        assert_eq!(item["tee"], "fake-tdx");
        let e = evidence_of(item);
        let key = check(&e, &hex::decode("0badc0ffee").expect("hex")).expect("signed");
        assert_eq!(item["public_key"], hex::encode(key));
        // A replayed answer does not hold for another nonce.
        assert!(check(&e, b"another nonce").is_err());
        match item["role"].as_str() {
            Some("proxy") => {
                assert_eq!(key, proxy_key.verifying_key().to_bytes());
                assert_eq!(item["verified"]["by"], "client");
            }
            Some("worker") => {
                assert_eq!(item["model"], MODEL);
                assert_eq!(item["verified"]["by"], "proxy");
                assert_eq!(item["verified"]["policy"], "fake_tdx");
                workers_seen.push(key);
            }
            other => panic!("unexpected role {other:?}"),
        }
    }
    workers_seen.sort();
    worker_keys.sort();
    assert_eq!(workers_seen, worker_keys);

    // Each call is fresh: another nonce, other signatures.
    let again = get_json(&http, &format!("{base}/v1/attestation?nonce=01")).await;
    assert_ne!(
        again["proxies"][0]["evidence"][0]["signature"],
        items[0]["signature"]
    );
    let bad = http
        .get(format!("{base}/v1/attestation?nonce=xyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status().as_u16(), 400);
    let long = "00".repeat(65);
    let bad = http
        .get(format!("{base}/v1/attestation?nonce={long}"))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status().as_u16(), 400);
}
