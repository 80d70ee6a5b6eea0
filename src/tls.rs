//! TLS configuration with rustls (ring provider): certificates and keys from PEM files,
//! optional or required client certificates, and uvicorn's `--ssl-*` options mapped to rustls.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

/// `ssl.PROTOCOL_TLS` (negotiate the highest version both sides support).
const PROTOCOL_TLS: i32 = 2;
/// `ssl.PROTOCOL_TLSv1`, `ssl.PROTOCOL_TLSv1_1`: versions rustls does not implement.
const PROTOCOL_TLSV1: i32 = 3;
const PROTOCOL_TLSV1_1: i32 = 4;
/// `ssl.PROTOCOL_TLSv1_2`: TLS 1.2 only.
const PROTOCOL_TLSV1_2: i32 = 5;
/// `ssl.PROTOCOL_TLS_SERVER`, uvicorn's default.
const PROTOCOL_TLS_SERVER: i32 = 17;

/// What `--ssl-*` asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsOptions {
    /// `--ssl-certfile`: PEM certificate chain, leaf first.
    pub(crate) certfile: String,
    /// `--ssl-keyfile`: PEM private key (PKCS#1, PKCS#8, SEC1, or encrypted PKCS#8); may be the certfile.
    pub(crate) keyfile: Option<String>,
    /// `--ssl-keyfile-password`
    pub(crate) password: Option<String>,
    /// `--ssl-ca-certs`: PEM roots to verify client certificates with.
    pub(crate) ca_certs: Option<String>,
    /// `--ssl-cert-reqs`: 0 none, 1 optional, 2 required (Python's `ssl.CERT_*`).
    pub(crate) cert_reqs: i32,
    /// `--ssl-version`: one of Python's `ssl.PROTOCOL_*` values.
    pub(crate) version: i32,
    /// `--ssl-ciphers`: an OpenSSL cipher list.
    pub(crate) ciphers: Option<String>,
}

impl TlsOptions {
    /// Whether TLS 1.3 may be negotiated (QUIC needs it, RFC 9001 §4.2): only `--ssl-version`
    /// can leave it out, as TLS 1.3 suites are always kept.
    pub(crate) fn allows_tls13(&self) -> bool {
        self.version != PROTOCOL_TLSV1_2
    }
}

/// A TLS configuration error, worded for the one line the user reads.
#[derive(Debug)]
pub(crate) struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

fn error(message: impl Into<String>) -> TlsError {
    TlsError(message.into())
}

/// Build the rustls server configuration; `alpn` lists the protocols to offer, best first.
/// Also returns the leaf certificate (DER), which the ASGI TLS extension reports.
pub(crate) fn server_config(options: &TlsOptions, alpn: &[&[u8]]) -> Result<(Arc<ServerConfig>, Vec<u8>), TlsError> {
    let provider = Arc::new(provider(options.ciphers.as_deref())?);
    let versions = versions(options.version)?;
    let certs = load_certs(&options.certfile)?;
    let leaf = certs[0].to_vec();
    let key = load_key(options.keyfile.as_deref().unwrap_or(&options.certfile), options.password.as_deref())?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| error(format!("--ssl-ciphers and --ssl-version leave nothing to negotiate: {e}")))?;
    let builder = match (options.cert_reqs, &options.ca_certs) {
        (0, _) => builder.with_no_client_auth(),
        (1 | 2, None) => {
            return Err(error("--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs to verify client certificates"));
        }
        (reqs @ (1 | 2), Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots.add(cert).map_err(|e| error(format!("--ssl-ca-certs {ca}: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if reqs == 1 { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| error(format!("--ssl-ca-certs {ca}: {e}")))?)
        }
        (other, _) => return Err(error(format!("--ssl-cert-reqs must be 0, 1 or 2, not {other}"))),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| error(format!("the key in --ssl-keyfile does not fit the certificate in --ssl-certfile: {e}")))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), leaf))
}

fn versions(version: i32) -> Result<&'static [&'static SupportedProtocolVersion], TlsError> {
    static BOTH: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    match version {
        PROTOCOL_TLS | PROTOCOL_TLS_SERVER => Ok(&BOTH),
        PROTOCOL_TLSV1_2 => Ok(&TLS12),
        PROTOCOL_TLSV1 | PROTOCOL_TLSV1_1 => {
            Err(error("--ssl-version: TLS 1.0 and 1.1 are insecure and not supported; TLS 1.2 and 1.3 are"))
        }
        other => Err(error(format!(
            "--ssl-version {other} is not supported: use {PROTOCOL_TLS_SERVER} (TLS 1.2 and 1.3) or {PROTOCOL_TLSV1_2} (TLS 1.2 only)"
        ))),
    }
}

/// The ring provider, with its cipher suites narrowed to an OpenSSL cipher list if one is given.
///
/// OpenSSL names of the TLS 1.2 suites rustls implements are matched exactly; TLS 1.3 suites are
/// always kept (OpenSSL configures them separately too). uvicorn's old default `TLSv1` means
/// "every suite". A list that names nothing rustls implements is refused.
fn provider(ciphers: Option<&str>) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let Some(list) = ciphers.map(str::trim).filter(|c| !c.is_empty() && *c != "TLSv1" && *c != "DEFAULT") else {
        return Ok(provider);
    };
    let wanted: Vec<&str> = list.split([':', ',', ' ']).filter(|n| !n.is_empty() && !n.starts_with('!')).collect();
    let keep = |suite: &SupportedCipherSuite| match suite {
        SupportedCipherSuite::Tls13(_) => true,
        SupportedCipherSuite::Tls12(_) => openssl_name(*suite).is_some_and(|name| wanted.contains(&name)),
    };
    let tls12_before = provider.cipher_suites.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls12(_))).count();
    provider.cipher_suites.retain(keep);
    let tls12_after = provider.cipher_suites.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls12(_))).count();
    let names_tls13_only = wanted.iter().all(|n| n.starts_with("TLS_"));
    if tls12_after == 0 && tls12_before > 0 && !names_tls13_only {
        return Err(error(format!(
            "--ssl-ciphers {list:?} names no cipher suite this server implements; supported TLS 1.2 suites: {}",
            supported_openssl_names().join(":")
        )));
    }
    Ok(provider)
}

/// OpenSSL's name for a TLS 1.2 suite rustls implements.
fn openssl_name(suite: SupportedCipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as C;
    Some(match suite.suite() {
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

fn supported_openssl_names() -> Vec<&'static str> {
    rustls::crypto::ring::default_provider().cipher_suites.into_iter().filter_map(openssl_name).collect()
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(format!("cannot read certificates from {path}: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(format!("cannot read certificates from {path}: {e}")))?;
    if certs.is_empty() {
        return Err(error(format!("no PEM certificate found in {path}")));
    }
    Ok(certs)
}

/// Load a PEM private key: PKCS#1 (`RSA PRIVATE KEY`), PKCS#8 (`PRIVATE KEY`), SEC1
/// (`EC PRIVATE KEY`), or PKCS#8 encrypted with a password (`ENCRYPTED PRIVATE KEY`).
fn load_key(path: &str, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| error(format!("cannot read the key file {path}: {e}")))?;
    if let Some(der) = encrypted_pkcs8(&pem) {
        let password =
            password.ok_or_else(|| error(format!("the key in {path} is encrypted: give --ssl-keyfile-password")))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| error(format!("cannot parse the encrypted key in {path}: {e}")))?;
        let document =
            info.decrypt(password).map_err(|_| error(format!("cannot decrypt the key in {path}: wrong password?")))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(document.as_bytes().to_vec())));
    }
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(error(format!(
            "the key in {path} uses the legacy OpenSSL encryption; convert it with `openssl pkcs8 -topk8 -in {path} -out key.pem` (PKCS#8, encrypted or not)"
        )));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| error(format!("no usable PEM private key in {path}: {e}")))
}

/// The DER body of an `ENCRYPTED PRIVATE KEY` PEM block, if the file holds one.
fn encrypted_pkcs8(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let end = "-----END ENCRYPTED PRIVATE KEY-----";
    let start = text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----")?;
    let stop = start + text[start..].find(end)? + end.len();
    let (label, der) = pkcs8::der::pem::decode_vec(&text.as_bytes()[start..stop]).ok()?;
    (label == "ENCRYPTED PRIVATE KEY").then_some(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_python_constants() {
        assert_eq!(versions(PROTOCOL_TLS_SERVER).unwrap().len(), 2);
        assert_eq!(versions(PROTOCOL_TLS).unwrap().len(), 2);
        assert_eq!(versions(PROTOCOL_TLSV1_2).unwrap().len(), 1);
        assert!(versions(PROTOCOL_TLSV1).unwrap_err().to_string().contains("not supported"));
        assert!(versions(99).is_err());
    }

    #[test]
    fn cipher_lists() {
        let all = rustls::crypto::ring::default_provider().cipher_suites.len();
        assert_eq!(provider(None).unwrap().cipher_suites.len(), all);
        assert_eq!(provider(Some("TLSv1")).unwrap().cipher_suites.len(), all);
        let one = provider(Some("ECDHE-RSA-AES128-GCM-SHA256")).unwrap();
        let tls12: Vec<_> = one.cipher_suites.iter().filter_map(|s| openssl_name(*s)).collect();
        assert_eq!(tls12, ["ECDHE-RSA-AES128-GCM-SHA256"]);
        assert!(provider(Some("RC4-MD5:DES-CBC3-SHA")).unwrap_err().to_string().contains("supported TLS 1.2 suites"));
    }
}
