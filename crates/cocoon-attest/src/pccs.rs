//! Collateral from a PCCS (Intel PCS API v4 or a local PCCS) over a minimal HTTP/1.1
//! client, so no heavyweight HTTP stack is pulled in.

use std::sync::Arc;
use std::time::Duration;

use dcap_qvl::QuoteCollateralV3;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::dcap::{BoxFuture, CollateralSource, DcapError};

const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// Intel's root CA CRL, used when the PCCS has no `rootcacrl` endpoint (Intel PCS).
pub const INTEL_ROOT_CA_CRL_URL: &str =
    "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

/// A parsed `http(s)://host[:port][/base]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `true` for https.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses an absolute http or https URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("URL {url:?} must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in URL {url:?}"))?,
            ),
            _ => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("URL {url:?} has no host"));
        }
        Ok(Self {
            tls,
            host,
            port,
            path: path.to_string(),
        })
    }
}

/// An HTTP response: status, headers (lower-cased names) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers with lower-case names.
    pub headers: Vec<(String, String)>,
    /// Body (chunked encoding already removed).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header value named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a complete HTTP/1.1 response read until EOF.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = find(raw, b"\r\n\r\n").ok_or("HTTP response has no header end")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "HTTP header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad HTTP status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = find(&rest[pos..], b"\r\n").ok_or("truncated chunk header")? + pos;
            let size_str = std::str::from_utf8(&rest[pos..line_end]).map_err(|_| "bad chunk")?;
            let size_str = size_str.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_str, 16).map_err(|_| "bad chunk size")?;
            pos = line_end + 2;
            if size == 0 {
                break;
            }
            let end = pos.checked_add(size).ok_or("chunk size overflow")?;
            out.extend_from_slice(rest.get(pos..end).ok_or("truncated chunk")?);
            pos = end + 2;
        }
        out
    } else {
        match headers.iter().find(|(k, _)| k == "content-length") {
            Some((_, v)) => {
                let n: usize = v.parse().map_err(|_| "bad content-length")?;
                rest.get(..n).ok_or("truncated body")?.to_vec()
            }
            None => rest.to_vec(),
        }
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    url: &HttpUrl,
) -> std::io::Result<Vec<u8>> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: cocoon-rs\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            // Servers that close without close_notify: keep what we have.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(std::io::Error::other("HTTP response too large"));
        }
    }
    Ok(buf)
}

/// Performs one HTTP(S) GET (https uses the webpki root store).
pub async fn http_get(url: &str, timeout: Duration) -> Result<HttpResponse, String> {
    let u = HttpUrl::parse(url)?;
    let run = async {
        let tcp = tokio::net::TcpStream::connect((u.host.as_str(), u.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", u.host, u.port))?;
        let raw = if u.tls {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(u.host.clone())
                .map_err(|e| format!("bad host name {}: {e}", u.host))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS to {}: {e}", u.host))?;
            exchange(tls, &u).await
        } else {
            exchange(tcp, &u).await
        }
        .map_err(|e| format!("GET {url}: {e}"))?;
        parse_response(&raw)
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("GET {url}: timed out after {timeout:?}"))?
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hexv = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hexv(b[i + 1]), hexv(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fetches TDX collateral from a PCCS (`/sgx|tdx/certification/v4/...`).
#[derive(Debug, Clone)]
pub struct PccsClient {
    base: String,
    timeout: Duration,
}

impl PccsClient {
    /// A client for the PCCS at `base_url` (e.g. `https://api.trustedservices.intel.com`).
    pub fn new(base_url: &str) -> Result<Self, crate::AttestError> {
        let base = base_url.trim_end_matches('/').to_string();
        HttpUrl::parse(&base).map_err(crate::AttestError::Config)?;
        Ok(Self {
            base,
            timeout: Duration::from_secs(30),
        })
    }

    async fn get_ok(&self, url: &str) -> Result<HttpResponse, DcapError> {
        let r = http_get(url, self.timeout)
            .await
            .map_err(DcapError::Collateral)?;
        if r.status != 200 {
            return Err(DcapError::Collateral(format!(
                "GET {url}: HTTP {}",
                r.status
            )));
        }
        Ok(r)
    }

    fn chain(r: &HttpResponse, names: &[&str]) -> Result<String, DcapError> {
        names
            .iter()
            .find_map(|n| r.header(n))
            .map(percent_decode)
            .ok_or_else(|| DcapError::Collateral(format!("PCCS response lacks {}", names[0])))
    }

    fn split_signed(body: &[u8], field: &str) -> Result<(String, Vec<u8>), DcapError> {
        #[derive(serde::Deserialize)]
        struct Signed<'a> {
            #[serde(borrow, rename = "tcbInfo", alias = "enclaveIdentity")]
            body: &'a serde_json::value::RawValue,
            signature: String,
        }
        let s: Signed<'_> = serde_json::from_slice(body)
            .map_err(|e| DcapError::Collateral(format!("{field} is not valid JSON: {e}")))?;
        let sig = hex::decode(&s.signature)
            .map_err(|_| DcapError::Collateral(format!("{field} signature is not hex")))?;
        Ok((s.body.get().to_string(), sig))
    }

    async fn fetch_inner(&self, fmspc: &str, ca: &str) -> Result<QuoteCollateralV3, DcapError> {
        let b = &self.base;
        let crl = self
            .get_ok(&format!(
                "{b}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"
            ))
            .await?;
        let pck_crl_issuer_chain = Self::chain(&crl, &["SGX-PCK-CRL-Issuer-Chain"])?;
        let tcb = self
            .get_ok(&format!("{b}/tdx/certification/v4/tcb?fmspc={fmspc}"))
            .await?;
        let tcb_info_issuer_chain = Self::chain(
            &tcb,
            &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
        )?;
        let (tcb_info, tcb_info_signature) = Self::split_signed(&tcb.body, "TCB info")?;
        let qe = self
            .get_ok(&format!("{b}/tdx/certification/v4/qe/identity"))
            .await?;
        let qe_identity_issuer_chain = Self::chain(&qe, &["SGX-Enclave-Identity-Issuer-Chain"])?;
        let (qe_identity, qe_identity_signature) = Self::split_signed(&qe.body, "QE identity")?;
        let root_ca_crl = match self
            .get_ok(&format!("{b}/sgx/certification/v4/rootcacrl"))
            .await
        {
            // A PCCS answers with the DER CRL hex-encoded.
            Ok(r) => match std::str::from_utf8(&r.body)
                .ok()
                .and_then(|s| hex::decode(s.trim()).ok())
            {
                Some(der) => der,
                None => r.body,
            },
            Err(_) => self.get_ok(INTEL_ROOT_CA_CRL_URL).await?.body,
        };
        Ok(QuoteCollateralV3 {
            pck_crl_issuer_chain,
            root_ca_crl,
            pck_crl: crl.body,
            tcb_info_issuer_chain,
            tcb_info,
            tcb_info_signature,
            qe_identity_issuer_chain,
            qe_identity,
            qe_identity_signature,
            pck_certificate_chain: None,
        })
    }
}

impl CollateralSource for PccsClient {
    fn fetch<'a>(
        &'a self,
        fmspc: &'a str,
        ca: &'a str,
    ) -> BoxFuture<'a, Result<QuoteCollateralV3, DcapError>> {
        Box::pin(self.fetch_inner(fmspc, ca))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let u = HttpUrl::parse("https://api.trustedservices.intel.com/x?y=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "api.trustedservices.intel.com", 443, "/x?y=1")
        );
        let u = HttpUrl::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 8081, "/"));
        assert!(HttpUrl::parse("ftp://x").is_err());
    }

    #[test]
    fn chunked_and_percent_decoding() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Chain: a%20b%0A\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcde");
        assert_eq!(percent_decode(r.header("x-chain").unwrap()), "a b\n");
        assert!(parse_response(b"garbage").is_err());
    }

    #[tokio::test]
    async fn fetches_collateral_from_a_local_pccs() {
        // A tiny PCCS stand-in serving the dcap-qvl sample collateral.
        let col: QuoteCollateralV3 =
            serde_json::from_slice(include_bytes!("../tests/data/tdx_quote_collateral.json"))
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = col.clone();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hits2 = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                hits2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let enc = |c: &str| c.replace('\n', "%0A").replace(' ', "%20");
                let (hdr, body): (String, Vec<u8>) = if req.contains("/pckcrl") {
                    (
                        format!(
                            "SGX-PCK-CRL-Issuer-Chain: {}",
                            enc(&served.pck_crl_issuer_chain)
                        ),
                        served.pck_crl.clone(),
                    )
                } else if req.contains("/tcb") {
                    (
                        format!(
                            "TCB-Info-Issuer-Chain: {}",
                            enc(&served.tcb_info_issuer_chain)
                        ),
                        format!(
                            "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
                            served.tcb_info,
                            hex::encode(&served.tcb_info_signature)
                        )
                        .into_bytes(),
                    )
                } else if req.contains("/qe/identity") {
                    (
                        format!(
                            "SGX-Enclave-Identity-Issuer-Chain: {}",
                            enc(&served.qe_identity_issuer_chain)
                        ),
                        format!(
                            "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
                            served.qe_identity,
                            hex::encode(&served.qe_identity_signature)
                        )
                        .into_bytes(),
                    )
                } else {
                    (
                        "X-Root: 1".into(),
                        hex::encode(&served.root_ca_crl).into_bytes(),
                    )
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\n{hdr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        let client = PccsClient::new(&format!("http://{addr}")).unwrap();
        let got = client.fetch("00806F050000", "platform").await.unwrap();
        assert_eq!(got.tcb_info, col.tcb_info);
        assert_eq!(got.tcb_info_signature, col.tcb_info_signature);
        assert_eq!(got.qe_identity, col.qe_identity);
        assert_eq!(got.pck_crl, col.pck_crl);
        assert_eq!(got.root_ca_crl, col.root_ca_crl);
        assert_eq!(got.pck_crl_issuer_chain, col.pck_crl_issuer_chain);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 4);

        // The whole path: quote -> FMSPC/CA -> PCCS -> dcap-qvl, then caches.
        let quote = include_bytes!("../tests/data/tdx_quote");
        let v = Arc::new(
            crate::dcap::DcapVerifier::from_config(&crate::dcap::DcapConfig {
                pccs_url: format!("http://{addr}/"),
                ..Default::default()
            })
            .unwrap()
            .with_clock(Arc::new(|| 1_750_329_147 + 60)),
        );
        let r = v.verify(quote).await.unwrap();
        assert_eq!(r.tcb_status, "UpToDate");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 8);
        v.verify(quote).await.unwrap();
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            8,
            "served from cache"
        );
    }
}
