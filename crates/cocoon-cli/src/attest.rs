//! `cocoon attest …`: attestation tools (certificates, quote inspection, self-check) and
//! the `listen` / `dial` debugging pair, which establish the attested link between two
//! processes like `openssl s_server` / `s_client` and print the verified peer as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::Engine;
use clap::Subcommand;
use cocoon_attest::cert::{parse_certificate, pem_decode};
use cocoon_attest::dcap::{DcapConfig, DcapVerifier};
use cocoon_attest::policy::PoliciesFile;
use cocoon_attest::quote::{parse_quote, QuoteBody};
use cocoon_attest::tee::parse_fake_quote;
use cocoon_attest::{
    dial, AttestedListener, CertResolver, ClientConfig, Policy, PolicyConfig, PolicyKind,
    ServerConfig, TeeMode,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Line the `listen` side sends once it has accepted a peer.
const GREETING: &str = "cocoon-attest: attested link established";

/// Subcommands of `cocoon attest`.
#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Say what kind of attestation this machine can produce (tdx or none) and why.
    #[command(name = "self")]
    SelfCheck,
    /// Issue a COCOON RA-TLS certificate: writes NAME_cert.pem, NAME_key.pem and
    /// NAME_image_hash.b64.
    GenCert {
        /// Evidence to embed: none, fake_tee or tee (the kind following this CPU's vendor, as
        /// COCOON's gen-cert), or fake_tdx, tdx, fake_sev, sev. `--tdx` is the old name.
        #[arg(long = "tee", alias = "tdx", default_value = "none")]
        tdx: TeeMode,
        /// File name prefix.
        #[arg(long)]
        name: String,
        /// Output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print a key sealed to this image on this machine (COCOON §8): on an SEV-SNP guest
    /// `HMAC-SHA256(SNP derived key, NAME)`, the same on every boot; with fake or no
    /// evidence COCOON's public debug-image key (a stand-in). COCOON's names:
    /// `disk_encryption`, `app` (the machine key seed, `APP_KEY`).
    SealKey {
        /// The key's name.
        #[arg(long)]
        name: String,
        /// Whose sealing: tee (this CPU's kind), sev, or fake_tee / none for the debug key.
        #[arg(long, default_value = "tee")]
        tee: TeeMode,
        /// Output as base64 (COCOON's `APP_KEY` form) instead of hex.
        #[arg(long)]
        base64: bool,
    },
    /// Print a TDX quote, an AMD SEV-SNP attestation report (binary or hex) or a PEM/DER
    /// certificate as JSON.
    Inspect {
        /// A raw TDX quote, an SNP report (1184 bytes, or their hex), or a certificate.
        file: PathBuf,
        /// For an SNP report: the VCEK (PEM or DER) to check its signature with; the output
        /// gains `"signature": "valid"` or the reason it is not.
        #[arg(long)]
        vcek: Option<PathBuf>,
        /// With --vcek: AMD's ASK + ARK (PEM, as KDS serves `cert_chain`) instead of the
        /// built-in roots.
        #[arg(long, requires = "vcek")]
        chain: Option<PathBuf>,
        /// For an SNP report: take the VCEK and chain from AMD's KDS through this cache
        /// directory (filled on first use, then read offline) instead of --vcek.
        #[arg(long, conflicts_with_all = ["vcek", "chain"])]
        kds_cache: Option<PathBuf>,
        /// With --kds-cache: the KDS base URL, or `files` to read the cache only.
        #[arg(long, default_value = cocoon_attest::sev::kds::KDS_URL, requires = "kds_cache")]
        kds: String,
        /// With --kds-cache: the chip's product (Milan, Genoa, Turin); version-2 reports do
        /// not say.
        #[arg(long, default_value = "Milan", requires = "kds_cache")]
        product: String,
    },
    /// Accept attested connections (PoW + RA-TLS) and print each verified peer as JSON.
    Listen {
        /// TCP port (0 picks one; the bound address is printed first).
        #[arg(long)]
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Policy applied to clients: any, fake_tee or tee (fake_tdx and tdx are old names).
        #[arg(long, required_unless_present = "policy_file")]
        policy: Option<PolicyKind>,
        /// Policies TOML (see crates/cocoon-attest/examples/attest-policies.toml); the
        /// `[listen."PORT"]` entry for --port applies, overriding --policy.
        #[arg(long)]
        policy_file: Option<PathBuf>,
        /// Evidence in our own certificate: none, fake_tee, tee, fake_tdx, tdx, fake_sev or
        /// sev. `--tdx` is the old name.
        #[arg(long = "tee", alias = "tdx", default_value = "none")]
        tdx: TeeMode,
        /// PoW difficulty asked of clients.
        #[arg(long, default_value_t = 20)]
        difficulty: u32,
        /// Exit after the first connection (status 0 if it was accepted, 1 if refused).
        #[arg(long)]
        once: bool,
        /// PCCS for policy tee (TDX quotes).
        #[arg(long, default_value = cocoon_attest::dcap::DEFAULT_PCCS_URL)]
        pccs_url: String,
    },
    /// Connect to an attested port and print the verified server as JSON.
    Dial {
        /// HOST:PORT to connect to.
        addr: String,
        /// Policy applied to the server: any, fake_tee or tee (fake_tdx and tdx are old names).
        #[arg(long, required_unless_present = "policy_file")]
        policy: Option<PolicyKind>,
        /// Policies TOML; the `[connect."HOST:PORT"]` entry for ADDR applies, overriding
        /// --policy.
        #[arg(long)]
        policy_file: Option<PathBuf>,
        /// Evidence in our own certificate: none, fake_tee, tee, fake_tdx, tdx, fake_sev or
        /// sev. `--tdx` is the old name.
        #[arg(long = "tee", alias = "tdx", default_value = "none")]
        tdx: TeeMode,
        /// Highest PoW difficulty we agree to solve.
        #[arg(long, default_value_t = 28)]
        max_difficulty: u32,
        /// PCCS for policy tee (TDX quotes).
        #[arg(long, default_value = cocoon_attest::dcap::DEFAULT_PCCS_URL)]
        pccs_url: String,
    },
}

/// Runs one `cocoon attest` subcommand.
pub fn run(cmd: AttestCommand) -> anyhow::Result<()> {
    match cmd {
        AttestCommand::SelfCheck => {
            let r = cocoon_attest::tee::self_report();
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        AttestCommand::GenCert { tdx, name, out } => gen_cert(tdx, &name, &out),
        AttestCommand::SealKey { name, tee, base64 } => {
            use cocoon_attest::seal::{sealed_key, SealSource};
            let source = SealSource::for_tee(tee)?;
            if source == SealSource::Debug {
                eprintln!("note: no TEE sealing here: this is COCOON's public debug-image key");
            }
            let key = sealed_key(source, &name)?;
            if base64 {
                println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            } else {
                println!("{}", hex::encode(key));
            }
            Ok(())
        }
        AttestCommand::Inspect {
            file,
            vcek,
            chain,
            kds_cache,
            kds,
            product,
        } => {
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let data = read(&file)?;
            let value = match cocoon_attest::sev::SnpReport::from_bytes_or_hex(&data) {
                Ok(report) => match &kds_cache {
                    Some(cache) => {
                        let (vcek, chain, crl) =
                            runtime()?.block_on(kds_collateral(&report, cache, &kds, &product))?;
                        let mut v = inspect_snp(&report, Some(&vcek), Some(&chain))?;
                        v["crl"] = match crl {
                            Ok(crl) => json!(crl_verdict(&report, &vcek, &chain, &crl, &product)),
                            Err(e) => json!(format!("not checked: {e}")),
                        };
                        v
                    }
                    None => inspect_snp(
                        &report,
                        vcek.as_ref().map(read).transpose()?.as_deref(),
                        chain.as_ref().map(read).transpose()?.as_deref(),
                    )?,
                },
                Err(_) if vcek.is_some() || kds_cache.is_some() => {
                    anyhow::bail!(
                        "--vcek applies to an SNP attestation report; {} is not one",
                        file.display()
                    )
                }
                Err(_) => inspect(&data)?,
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        AttestCommand::Listen {
            port,
            host,
            policy,
            policy_file,
            tdx,
            difficulty,
            once,
            pccs_url,
        } => {
            let policy = select_policy(
                policy,
                policy_file.as_deref(),
                &pccs_url,
                |f| f.listen_policy(port).cloned(),
                &format!("listen.\"{port}\""),
            )?;
            runtime()?.block_on(listen(host, port, policy, tdx, difficulty, once))
        }
        AttestCommand::Dial {
            addr,
            policy,
            policy_file,
            tdx,
            max_difficulty,
            pccs_url,
        } => {
            let policy = select_policy(
                policy,
                policy_file.as_deref(),
                &pccs_url,
                |f| f.connect_policy(&addr).cloned(),
                &format!("connect.\"{addr}\""),
            )?;
            runtime()?.block_on(dial_cmd(addr, policy, tdx, max_difficulty))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn gen_cert(tdx: TeeMode, name: &str, out: &Path) -> anyhow::Result<()> {
    if name.is_empty() || name.contains('/') {
        bail!("--name must be a plain file name prefix");
    }
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let issued = cocoon_attest::tls::issue(&key, tdx, std::time::SystemTime::now())?;
    let info = parse_certificate(&issued.cert_der)?;
    let image_hash = match &info.sev {
        Some(sev) => cocoon_attest::sev::image_hash(&sev.measurement().unwrap_or([0; 48])),
        None => image_hash_of(info.quote.as_deref())?,
    };
    std::fs::create_dir_all(out)?;
    let cert_path = out.join(format!("{name}_cert.pem"));
    let key_path = out.join(format!("{name}_key.pem"));
    let hash_path = out.join(format!("{name}_image_hash.b64"));
    std::fs::write(&cert_path, issued.cert_pem())?;
    write_private(&key_path, issued.key_pem().as_bytes())?;
    std::fs::write(
        &hash_path,
        base64::engine::general_purpose::STANDARD.encode(image_hash),
    )?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "cert": cert_path,
            "key": key_path,
            "image_hash_file": hash_path,
            "tee": tdx,
            "public_key": hex::encode(info.public_key),
            "image_hash": hex::encode(image_hash),
            "not_before": info.not_before,
            "not_after": info.not_after,
        }))?
    );
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(data)?;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, data)?;
        Ok(())
    }
}

/// Image hash of a certificate's evidence: all zero without a quote.
fn image_hash_of(quote: Option<&[u8]>) -> anyhow::Result<[u8; 32]> {
    Ok(match quote {
        None => [0; 32],
        Some(q) => match parse_fake_quote(q) {
            Some(m) => m.image_hash(),
            None => match parse_quote(q)?.tdx() {
                Some(m) => m.image_hash(),
                None => [0; 32],
            },
        },
    })
}

/// The VCEK (DER) and chain (ASK then ARK, PEM) of `report`'s chip from AMD's KDS through
/// the cache directory `cache` (`kds` = a base URL, or `files` for the cache only).
async fn kds_collateral(
    report: &cocoon_attest::sev::SnpReport,
    cache: &Path,
    kds: &str,
    product: &str,
) -> anyhow::Result<(Vec<u8>, Vec<u8>, Result<Vec<u8>, String>)> {
    use cocoon_attest::sev::kds::{Kds, KdsSource};
    let product = cocoon_attest::sev::Product::from_vcek_name(product)?;
    let source = match kds {
        "files" => KdsSource::FilesOnly,
        url => KdsSource::Online(url.to_owned()),
    };
    let kds = Kds::new(source, cache);
    let vcek = kds.vcek(report, product).await?;
    let (ask, ark) = kds.chain(product).await?;
    let mut chain = ask;
    chain.push(b'\n');
    chain.extend_from_slice(&ark);
    let crl = kds.crl(product).await.map_err(|e| e.to_string());
    Ok((vcek.der().to_vec(), chain, crl))
}

/// Whether `crl` (from KDS) verifies under the chain's ARK and leaves the VCEK and ASK
/// unrevoked: `"valid"` or the reason.
fn crl_verdict(
    report: &cocoon_attest::sev::SnpReport,
    vcek: &[u8],
    chain: &[u8],
    crl: &[u8],
    product: &str,
) -> String {
    use cocoon_attest::sev::{Product, SnpRules, SnpVerifier, Vcek};
    let run = || -> Result<(), String> {
        let product = Product::from_vcek_name(product).map_err(|e| e.to_string())?;
        let (ask, ark) = cocoon_attest::sev::split_chain(chain).map_err(|e| e.to_string())?;
        let verifier = SnpVerifier::amd(SnpRules {
            allow_debug: true,
            ..SnpRules::default()
        })
        .and_then(|v| v.with_chain(product, &ask, &ark))
        .and_then(|v| v.with_crl(product, crl))
        .map_err(|e| e.to_string())?;
        let vcek = Vcek::from_pem_or_der(vcek).map_err(|e| e.to_string())?;
        verifier
            .verify(report, &vcek, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match run() {
        Ok(()) => "valid".into(),
        Err(e) => e,
    }
}

/// JSON description of an SNP report; with `vcek`, whether its signature (and the VCEK's
/// chain to AMD, `chain` or the built-in roots) holds.
fn inspect_snp(
    report: &cocoon_attest::sev::SnpReport,
    vcek: Option<&[u8]>,
    chain: Option<&[u8]>,
) -> anyhow::Result<serde_json::Value> {
    use cocoon_attest::sev::{SnpRules, SnpVerifier, Vcek};
    let mut v = report.to_json();
    let Some(vcek) = vcek else {
        return Ok(v);
    };
    let vcek = Vcek::from_pem_or_der(vcek)?;
    v["vcek"] = json!({
        "product_name": vcek.product_name,
        "hw_id": hex::encode(&vcek.hw_id),
        "tcb": vcek.tcb,
    });
    // Inspection reports on the signature and chain; a debug policy is shown, not refused.
    let mut verifier = SnpVerifier::amd(SnpRules {
        allow_debug: true,
        ..SnpRules::default()
    })?;
    if let Some(chain) = chain {
        let (ask, ark) = cocoon_attest::sev::split_chain(chain).context("--chain")?;
        verifier = verifier.with_chain(vcek.product, &ask, &ark)?;
    }
    v["signature"] = match verifier.verify(report, &vcek, None) {
        Ok(_) => json!("valid"),
        Err(e) => json!(e.to_string()),
    };
    Ok(v)
}

/// JSON description of a raw quote or a PEM certificate.
fn inspect(data: &[u8]) -> anyhow::Result<serde_json::Value> {
    // PEM certificate, or DER certificate (a SEQUENCE; no quote starts with 0x30 0x82).
    let der = pem_decode("CERTIFICATE", data)
        .or_else(|| data.starts_with(&[0x30, 0x82]).then(|| data.to_vec()));
    if let Some(der) = der {
        let info = parse_certificate(&der)?;
        if let Some(sev) = &info.sev {
            let fake = sev.is_fake();
            let measurement = sev.measurement().unwrap_or([0; 48]);
            let report_data = sev.report_field_data().unwrap_or([0; 64]);
            let want = cocoon_attest::tee::report_data_for_key(&info.public_key);
            return Ok(json!({
                "tee": if fake { "fake_sev" } else { "sev-snp" },
                "tee_type": if fake { "fake_sev" } else { "sev-snp" },
                "measurement": hex::encode(measurement),
                "report_data": hex::encode(report_data),
                "image_hash": hex::encode(cocoon_attest::sev::image_hash(&measurement)),
                "certificate": {
                    "public_key": hex::encode(info.public_key),
                    "not_before": info.not_before,
                    "not_after": info.not_after,
                    "report_data_matches_key": sev.report_data.as_slice() == want.as_slice()
                        && report_data == want,
                },
            }));
        }
        let mut v = match info.quote.as_deref() {
            None => json!({
                "version": null,
                "tee_type": "none",
                "mrtd": null,
                "rtmr": null,
                "report_data": null,
                "image_hash": hex::encode([0u8; 32]),
            }),
            Some(q) => match parse_fake_quote(q) {
                Some(m) => json!({
                    "version": null,
                    "tee_type": "fake_tdx",
                    "mrtd": hex::encode(m.mrtd),
                    "rtmr": m.rtmr.iter().map(hex::encode).collect::<Vec<_>>(),
                    "report_data": hex::encode(m.report_data),
                    "image_hash": hex::encode(m.image_hash()),
                }),
                None => inspect_quote(q)?,
            },
        };
        v["certificate"] = json!({
            "public_key": hex::encode(info.public_key),
            "not_before": info.not_before,
            "not_after": info.not_after,
            "report_data_matches_key": info.quote.as_deref().map(|q| {
                let want = cocoon_attest::tee::report_data_for_key(&info.public_key);
                parse_fake_quote(q).map(|m| m.report_data == want).unwrap_or_else(|| {
                    parse_quote(q).ok().and_then(|p| p.tdx().map(|m| m.report_data == want)).unwrap_or(false)
                })
            }),
        });
        return Ok(v);
    }
    inspect_quote(data)
}

fn inspect_quote(q: &[u8]) -> anyhow::Result<serde_json::Value> {
    let p = parse_quote(q)?;
    let tee = match p.tee_type {
        cocoon_attest::quote::TEE_TYPE_TDX => "tdx",
        _ => "sgx",
    };
    let mut v = json!({
        "tee": tee,
        "version": p.version,
        "att_key_type": p.att_key_type,
        "tee_type": tee,
        "tee_type_raw": p.tee_type,
        "body": p.body_kind,
        "qe_vendor_id": hex::encode(p.qe_vendor_id),
    });
    match &p.body {
        QuoteBody::Tdx {
            measurements: m,
            extra,
        } => {
            v["mrtd"] = json!(hex::encode(m.mrtd));
            v["mr_config_id"] = json!(hex::encode(m.mr_config_id));
            v["mr_owner"] = json!(hex::encode(m.mr_owner));
            v["mr_owner_config"] = json!(hex::encode(m.mr_owner_config));
            v["rtmr"] = json!(m.rtmr.iter().map(hex::encode).collect::<Vec<_>>());
            v["report_data"] = json!(hex::encode(m.report_data));
            v["image_hash"] = json!(hex::encode(m.image_hash()));
            v["tee_tcb_svn"] = json!(hex::encode(extra.tee_tcb_svn));
            v["mr_seam"] = json!(hex::encode(extra.mr_seam));
            v["td_attributes"] = json!(hex::encode(extra.td_attributes));
            v["xfam"] = json!(hex::encode(extra.xfam));
        }
        QuoteBody::Sgx(s) => {
            v["mr_enclave"] = json!(hex::encode(s.mr_enclave));
            v["mr_signer"] = json!(hex::encode(s.mr_signer));
            v["report_data"] = json!(hex::encode(s.report_data));
        }
    }
    Ok(v)
}

/// The policy from `--policy-file` (the entry `what`) or else from `--policy`.
fn select_policy(
    kind: Option<PolicyKind>,
    file: Option<&Path>,
    pccs_url: &str,
    pick: impl Fn(&PoliciesFile) -> Option<PolicyConfig>,
    what: &str,
) -> anyhow::Result<Arc<Policy>> {
    let Some(path) = file else {
        let kind = kind.context("--policy or --policy-file is required")?;
        return make_policy(kind, pccs_url);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let f = PoliciesFile::from_toml(&text)?;
    let cfg = pick(&f).with_context(|| format!("{} has no [{what}] policy", path.display()))?;
    let dcap = match cfg.kind {
        PolicyKind::Tee => Some(Arc::new(DcapVerifier::from_config(&f.dcap)?)),
        _ => None,
    };
    Ok(Arc::new(Policy::from_config(&cfg, dcap)?))
}

fn make_policy(kind: PolicyKind, pccs_url: &str) -> anyhow::Result<Arc<Policy>> {
    Ok(Arc::new(match kind {
        PolicyKind::Any => Policy::any(),
        PolicyKind::FakeTee => Policy::fake_tdx(),
        PolicyKind::Tee => {
            let cfg = DcapConfig {
                pccs_url: pccs_url.to_string(),
                ..DcapConfig::default()
            };
            Policy::tdx(Arc::new(DcapVerifier::from_config(&cfg)?))
        }
    }))
}

fn make_identity(tdx: TeeMode) -> anyhow::Result<Arc<CertResolver>> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    Ok(CertResolver::new(key, tdx)?)
}

fn emit(v: serde_json::Value) {
    println!("{v}");
}

async fn listen(
    host: String,
    port: u16,
    policy: Arc<Policy>,
    tdx: TeeMode,
    difficulty: u32,
    once: bool,
) -> anyhow::Result<()> {
    let identity = make_identity(tdx)?;
    let _renewal = identity.spawn_renewal(std::time::Duration::from_secs(3600));
    let cfg = ServerConfig::new(identity, policy)?.with_pow_difficulty(Some(difficulty));
    let listener = AttestedListener::bind((host.as_str(), port), cfg).await?;
    emit(json!({ "event": "listening", "addr": listener.local_addr()?.to_string() }));
    loop {
        let incoming = listener.accept().await?;
        let peer = incoming.peer_addr().to_string();
        let task = tokio::spawn(async move {
            match incoming.establish().await {
                Ok((mut stream, id)) => {
                    emit(json!({ "event": "accepted", "peer_addr": peer, "peer": id.to_json() }));
                    let _ = stream.write_all(format!("{GREETING}\n").as_bytes()).await;
                    let _ = stream.flush().await;
                    let _ = stream.shutdown().await;
                    true
                }
                Err(e) => {
                    emit(json!({ "event": "refused", "peer_addr": peer, "error": e.to_string() }));
                    false
                }
            }
        });
        if once {
            let ok = task.await.unwrap_or(false);
            if ok {
                return Ok(());
            }
            bail!("connection refused by policy");
        }
    }
}

async fn dial_cmd(
    addr: String,
    policy: Arc<Policy>,
    tdx: TeeMode,
    max_difficulty: u32,
) -> anyhow::Result<()> {
    let identity = make_identity(tdx)?;
    let cfg = ClientConfig::new(identity, policy)?.with_pow_max_difficulty(Some(max_difficulty));
    let (stream, id) = dial(addr.as_str(), &cfg).await?;
    // In TLS 1.3 the server checks our certificate after we finish; its verdict shows
    // up on the first read, so wait for the greeting before declaring success.
    let mut line = String::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        BufReader::new(stream).read_line(&mut line),
    )
    .await
    .context("no answer from the server")?;
    match read {
        Ok(_) if line.trim_end() == GREETING => {
            emit(json!({ "event": "connected", "peer": id.to_json() }));
            Ok(())
        }
        Ok(_) => bail!("server closed the connection (it refused our certificate)"),
        Err(e) => bail!("server refused the connection: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_reads_pem_and_der_certificates() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let issued =
            cocoon_attest::tls::issue(&key, TeeMode::None, std::time::SystemTime::now()).unwrap();
        let from_pem = inspect(issued.cert_pem().as_bytes()).unwrap();
        let from_der = inspect(&issued.cert_der).unwrap();
        assert_eq!(from_pem, from_der);
        assert_eq!(from_pem["tee_type"], "none");
        assert_eq!(
            from_pem["certificate"]["public_key"],
            hex::encode(key.verifying_key().to_bytes())
        );
        assert!(inspect(b"not a quote").is_err());
    }

    #[test]
    fn inspect_reads_the_cocoon_test_quote() {
        let q = include_bytes!("../../cocoon-attest/tests/data/tdx-quote-v4.dat");
        let v = inspect(q).unwrap();
        assert_eq!(v["version"], 4);
        assert_eq!(v["tee_type"], "tdx");
        assert_eq!(v["rtmr"].as_array().unwrap().len(), 4);
        assert_eq!(
            v["image_hash"],
            "04b3afd931d28680af91a15b09d672c40ad6b141f7f9089a8d67d595220f7436"
        );
    }
}
