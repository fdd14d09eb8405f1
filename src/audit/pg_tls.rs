//! How the gateway reaches PostgreSQL: the `[audit] database_url` (and
//! `--database-url`) read as libpq reads it, TLS included, so a URL that
//! works with `psql` works here.
//!
//! The driver (tokio-postgres) takes `sslmode` `disable`, `prefer` and
//! `require` only, and no certificate files. This module takes libpq's TLS
//! parameters out of the URL before the driver sees it and builds the rustls
//! client that every connection to the database uses:
//!
//! | `sslmode` | TLS | server certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (the default, as in libpq) | when the server offers it | as `require` |
//! | `require` | always | chain to `sslrootcert` when given; otherwise not at all (libpq's rule; a warning is logged) |
//! | `verify-ca` | always | chain to `sslrootcert` |
//! | `verify-full` | always | chain to `sslrootcert` and the host name of the URL |
//!
//! `sslcert` and `sslkey` (together) are the gateway's client certificate,
//! for servers that authenticate with `cert` in `pg_hba.conf`. The files are
//! read when the URL is parsed, so a wrong path fails the start, not the
//! first commit. Unlike libpq, nothing is read from `~/.postgresql/`: the
//! files the gateway uses are the ones the URL names.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    crypto::{ring, CryptoProvider},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's TLS parameters, taken out of the URL before the driver parses it.
const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Not at all (`sslmode=require` or `prefer` without `sslrootcert`).
    Nothing,
    /// That it chains to `sslrootcert` (`verify-ca`).
    Chain,
    /// That it chains to `sslrootcert` and names the host (`verify-full`).
    Full,
}

/// Where and how to connect: the driver's config and the TLS connector
/// every connection uses.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// What is checked of the server's certificate (`None`: no TLS).
    pub verify: Option<Verify>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

/// A `database_url` split into what the driver reads and libpq's TLS
/// parameters, with the URL's own (percent-decoded) values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// The URL without the TLS parameters.
    pub rest: String,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

/// Takes libpq's TLS parameters out of `url`'s query string.
pub fn split(url: &str) -> Result<Split, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut out = Split::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !TLS_KEYS.contains(&key) {
            kept.push(pair);
            continue;
        }
        let value = percent_decode(value)
            .ok_or_else(|| format!("{key}: not a valid percent-encoded value: {value:?}"))?;
        let slot = match key {
            "sslmode" => &mut out.sslmode,
            "sslrootcert" => &mut out.sslrootcert,
            "sslcert" => &mut out.sslcert,
            _ => &mut out.sslkey,
        };
        if slot.replace(value).is_some() {
            return Err(format!("{key} is given twice"));
        }
    }
    out.rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(out)
}

/// `url` with the paths of `sslrootcert`, `sslcert` and `sslkey` passed
/// through `resolve` (the config resolves them against its own folder, as
/// every other path it names).
pub fn resolve_paths(url: &str, resolve: impl Fn(&str) -> PathBuf) -> Result<String, String> {
    let s = split(url)?;
    let mut params = Vec::new();
    if let Some(mode) = &s.sslmode {
        params.push(format!("sslmode={}", percent_encode(mode)));
    }
    for (key, value) in [
        ("sslrootcert", &s.sslrootcert),
        ("sslcert", &s.sslcert),
        ("sslkey", &s.sslkey),
    ] {
        if let Some(path) = value {
            let resolved = resolve(path);
            params.push(format!(
                "{key}={}",
                percent_encode(&resolved.to_string_lossy())
            ));
        }
    }
    if params.is_empty() {
        return Ok(s.rest);
    }
    let glue = if s.rest.contains('?') { '&' } else { '?' };
    Ok(format!("{}{glue}{}", s.rest, params.join("&")))
}

/// Parses `url` (`postgresql://user[:password]@host[:port]/database[?...]`)
/// and reads the TLS files it names. Errors say which parameter is wrong.
pub fn target(url: &str) -> Result<Target, String> {
    let s = split(url)?;
    let mut config: tokio_postgres::Config = s.rest.parse().map_err(
        |e: tokio_postgres::Error| match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    )?;
    let mode = s.sslmode.as_deref().unwrap_or("prefer");
    let (ssl_mode, verify) = match mode {
        "disable" => (SslMode::Disable, None),
        "prefer" | "require" => {
            let verify = if s.sslrootcert.is_some() {
                Verify::Chain
            } else {
                Verify::Nothing
            };
            let ssl = if mode == "prefer" {
                SslMode::Prefer
            } else {
                SslMode::Require
            };
            (ssl, Some(verify))
        }
        "verify-ca" => (SslMode::Require, Some(Verify::Chain)),
        "verify-full" => (SslMode::Require, Some(Verify::Full)),
        "allow" => {
            return Err(
                "sslmode=allow is not supported (it tries plaintext first); use prefer, require, verify-ca or verify-full"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "sslmode={other:?}: expected disable, prefer, require, verify-ca or verify-full"
            ))
        }
    };
    if matches!(verify, Some(Verify::Chain | Verify::Full)) && s.sslrootcert.is_none() {
        return Err(format!(
            "sslmode={mode} needs sslrootcert: the file of the CA certificates the database server's certificate must chain to"
        ));
    }
    if s.sslrootcert.is_some() && verify.is_none() {
        return Err("sslrootcert is given but sslmode=disable: nothing would use it".into());
    }
    config.ssl_mode(ssl_mode);

    let provider = Arc::new(ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (&verify, &s.sslrootcert) {
        (Some(Verify::Chain | Verify::Full), Some(path)) | (Some(Verify::Nothing), Some(path)) => {
            let mut roots = RootCertStore::empty();
            let path = Path::new(path);
            for cert in load("sslrootcert", path)? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "sslrootcert {}: unusable CA certificate: {e}",
                        path.display()
                    )
                })?;
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            if verify == Some(Verify::Full) {
                webpki
            } else {
                Arc::new(Lenient {
                    chain: Some(webpki),
                    provider: Arc::clone(&provider),
                })
            }
        }
        _ => Arc::new(Lenient {
            chain: None,
            provider: Arc::clone(&provider),
        }),
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client = match (&s.sslcert, &s.sslkey) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let certs = load("sslcert", Path::new(cert))?;
            let key_der = crate::tls::load_key("sslkey", Path::new(key))
                .map_err(|e| format!("sslkey {}: {}", e.path, e.message))?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| format!("sslcert {cert} and sslkey {key}: {e}"))?
        }
        (Some(_), None) => {
            return Err("sslcert needs sslkey (the certificate's private key)".into())
        }
        (None, Some(_)) => return Err("sslkey needs sslcert (the client certificate)".into()),
    };
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(client),
        verify,
    })
}

fn load(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    crate::tls::load_certs(key, path).map_err(|e| format!("{key} {}: {}", e.path, e.message))
}

/// `verify-ca` (with the chain's roots): the chain is checked, the name is
/// not; `require` or `prefer` without `sslrootcert` (no roots), as libpq:
/// encrypted, any certificate accepted. Either way the handshake's
/// signatures are checked.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Decodes `%XX` escapes (and nothing else: `+` stays `+`, as in a URL's
/// query for libpq).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes what would end a query value (`&`, `#`, `%`, space and controls).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'&' | b'#' | b'%' | b'+' | b'=' | b'?' => out.push_str(&format!("%{b:02X}")),
            b if b <= b' ' || b == 0x7f => out.push_str(&format!("%{b:02X}")),
            b => out.push(b as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_and_the_rest_kept() {
        let s = split(
            "postgresql://gw@db.example:5432/audit?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20one.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            s.rest,
            "postgresql://gw@db.example:5432/audit?application_name=x&connect_timeout=3"
        );
        assert_eq!(s.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/ca one.pem"));
        assert_eq!(
            split("postgresql://gw@h/db").unwrap().rest,
            "postgresql://gw@h/db"
        );
        assert_eq!(
            split("postgresql://gw@h/db?sslmode=require").unwrap().rest,
            "postgresql://gw@h/db"
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = |url: &str| target(url).unwrap_err();
        assert!(e("postgresql://h/db?sslmode=verify-full").contains("needs sslrootcert"));
        assert!(e("postgresql://h/db?sslmode=verify-ca").contains("needs sslrootcert"));
        assert!(e("postgresql://h/db?sslmode=sometimes").contains("sslmode=\"sometimes\""));
        assert!(e("postgresql://h/db?sslmode=allow").contains("not supported"));
        assert!(e("postgresql://h/db?sslmode=require&sslmode=disable").contains("twice"));
        assert!(
            e("postgresql://h/db?sslmode=disable&sslrootcert=/x").contains("nothing would use it")
        );
        assert!(e("postgresql://h/db?sslcert=/x").contains("sslcert needs sslkey"));
        assert!(e("postgresql://h/db?sslmode=require&sslrootcert=%zz").contains("percent-encoded"));
        let missing = e("postgresql://h/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem");
        assert!(
            missing.starts_with("sslrootcert /no/such/ca.pem"),
            "{missing}"
        );
        let unknown = e("postgresql://h/db?nonsense=1");
        assert!(unknown.contains("nonsense"), "{unknown}");
    }

    #[test]
    fn modes_map_to_the_driver_and_a_verification() {
        let t = target("postgresql://h/db").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Prefer);
        assert_eq!(t.verify, Some(Verify::Nothing));
        let t = target("postgresql://h/db?sslmode=disable").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(t.verify, None);
        let t = target("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.verify, Some(Verify::Nothing));
    }

    #[test]
    fn relative_paths_are_resolved_and_escaped() {
        let url = resolve_paths(
            "postgresql://gw@h/db?sslmode=verify-full&sslrootcert=certs/pg%20ca.pem&application_name=a",
            |p| Path::new("/etc/gw").join(p),
        )
        .unwrap();
        assert_eq!(
            url,
            "postgresql://gw@h/db?application_name=a&sslmode=verify-full&sslrootcert=/etc/gw/certs/pg%20ca.pem"
        );
        let s = split(&url).unwrap();
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/gw/certs/pg ca.pem"));
        assert_eq!(
            resolve_paths("postgresql://gw@h/db", |p| PathBuf::from(p)).unwrap(),
            "postgresql://gw@h/db"
        );
    }
}
