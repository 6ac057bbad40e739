//! Benchmarks: RA-TLS handshake with fake quotes (no PoW), PoW solving at difficulty 20,
//! and DCAP verification of a real sample quote, uncached and cached.

use std::sync::Arc;

use cocoon_attest::dcap::{collateral_from_json, DcapVerifier, StaticCollateral};
use cocoon_attest::pow::PowChallenge;
use cocoon_attest::transport::{client_handshake, server_handshake};
use cocoon_attest::{CertResolver, ClientConfig, Policy, ServerConfig, TeeMode};
use criterion::{criterion_group, criterion_main, Criterion};

const QUOTE: &[u8] = include_bytes!("../tests/data/tdx_quote");
const COLLATERAL: &[u8] = include_bytes!("../tests/data/tdx_quote_collateral.json");
const PINNED_NOW: u64 = 1_750_329_147 + 60;

fn node() -> Arc<CertResolver> {
    CertResolver::new(
        ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        TeeMode::FakeTdx,
    )
    .expect("fake TDX certificate")
}

fn handshake(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let scfg = ServerConfig::new(node(), Arc::new(Policy::fake_tdx()))
        .expect("server config")
        .with_pow_difficulty(None);
    let ccfg = ClientConfig::new(node(), Arc::new(Policy::fake_tdx()))
        .expect("client config")
        .with_pow_max_difficulty(None);
    c.bench_function("handshake_fake_tdx_both_sides_no_pow", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (a, z) = tokio::io::duplex(64 * 1024);
                let (s, cl) = tokio::join!(server_handshake(a, &scfg), client_handshake(z, &ccfg));
                assert!(s.is_ok() && cl.is_ok());
            })
        })
    });
}

fn pow(c: &mut Criterion) {
    let mut g = c.benchmark_group("pow");
    g.sample_size(10);
    g.bench_function("solve_difficulty_20", |b| {
        b.iter(|| PowChallenge::random(20).solve().expect("solvable"))
    });
    g.finish();
}

fn dcap(c: &mut Criterion) {
    let col = collateral_from_json(COLLATERAL).expect("collateral");
    let v = Arc::new(
        DcapVerifier::new(Arc::new(StaticCollateral(col.clone())))
            .with_clock(Arc::new(|| PINNED_NOW)),
    );
    c.bench_function("dcap_verify_uncached", |b| {
        b.iter(|| {
            v.verify_with_collateral(QUOTE, &col, PINNED_NOW)
                .expect("verifies")
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(v.verify(QUOTE)).expect("verifies");
    c.bench_function("dcap_verify_cached", |b| {
        b.iter(|| v.cached(QUOTE).expect("cached"))
    });
}

criterion_group!(benches, handshake, pow, dcap);
criterion_main!(benches);
