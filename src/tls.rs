//! The rustls server side: TLS 1.3 only, ALPN `h2`, and a mandatory client
//! certificate that must chain to the configured CA bundle, not be revoked
//! by any configured CRL, and (unless `[tls] require_client_auth_eku` is
//! false) carry `clientAuth` in its extended key usage. Failing certificates
//! never reach a handler: the handshake fails.

use std::{fs, path::Path, sync::Arc};

use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::ring,
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        WebPkiClientVerifier,
    },
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{
    pem::PemObject, CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime,
};

use crate::config::TlsFiles;

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{key} ({path}): {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub path: String,
    pub message: String,
}

fn err(key: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = fs::read(path).map_err(|e| err(key, path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(
                key,
                path,
                format!("not a PEM certificate file: {}", pem_error(&e)),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            key,
            path,
            "no PEM certificate (BEGIN CERTIFICATE) found",
        ));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = fs::read(path).map_err(|e| err(key, path, e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| {
        err(
            key,
            path,
            format!("no usable PEM private key: {}", pem_error(&e)),
        )
    })
}

/// A PEM error in words (the library prints markers as byte lists).
fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { end_marker } => format!(
            "missing the line {:?}",
            format!("-----END {}-----", String::from_utf8_lossy(end_marker))
        ),
        E::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}

/// The CRLs of the `[tls] crls` files, each parsed (so a broken one is
/// named here, not later by the verifier built with it), and a warning per
/// CRL past its `nextUpdate` (still applied: its CA may have stopped
/// publishing).
pub fn load_crls(
    paths: &[std::path::PathBuf],
    now_unix: i64,
) -> Result<(Vec<CertificateRevocationListDer<'static>>, Vec<String>), TlsError> {
    let mut crls = Vec::new();
    let mut warnings = Vec::new();
    for path in paths {
        let data = fs::read(path).map_err(|e| err("tls.crls", path, e.to_string()))?;
        let found = CertificateRevocationListDer::pem_slice_iter(&data)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                err(
                    "tls.crls",
                    path,
                    format!("not a PEM CRL file: {}", pem_error(&e)),
                )
            })?;
        if found.is_empty() {
            return Err(err("tls.crls", path, "no PEM CRL (BEGIN X509 CRL) found"));
        }
        for (i, crl) in found.iter().enumerate() {
            let which = if found.len() > 1 {
                format!("CRL {} of the file", i + 1)
            } else {
                "the CRL".to_owned()
            };
            let parsed = match x509_parser::parse_x509_crl(crl.as_ref()) {
                Ok(([], parsed)) => parsed,
                Ok(_) => {
                    return Err(err(
                        "tls.crls",
                        path,
                        format!("{which}: bytes after its end"),
                    ))
                }
                Err(e) => {
                    return Err(err(
                        "tls.crls",
                        path,
                        format!("{which} does not parse: {e}"),
                    ))
                }
            };
            if let Some(next) = parsed.next_update() {
                if next.timestamp() < now_unix {
                    warnings.push(format!(
                        "tls.crls ({}): {which} of {} was due to be replaced on {} (its nextUpdate) and still is not; it is applied, but check that its CA still publishes",
                        path.display(),
                        parsed.issuer(),
                        next
                    ));
                }
            }
        }
        crls.extend(found);
    }
    Ok((crls, warnings))
}

/// Trust anchors read from one PEM file (`key` names it in errors).
pub struct Anchors<'a> {
    pub key: &'static str,
    pub path: &'a Path,
    pub certs: Vec<CertificateDer<'static>>,
}

/// A client certificate verifier: chains to one of `anchors`, is not revoked
/// by `crls`, and (with `require_client_auth_eku`) lists `clientAuth`. The
/// handshake uses one over every trusted CA; each call uses the one of its
/// agency (`snapshot.rs`).
pub fn client_verifier(
    anchors: &[Anchors<'_>],
    crls: &[CertificateRevocationListDer<'static>],
    require_client_auth_eku: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    for a in anchors {
        for cert in &a.certs {
            roots
                .add(cert.clone())
                .map_err(|e| err(a.key, a.path, format!("unusable CA certificate: {e}")))?;
        }
    }
    let (key, path) = anchors
        .first()
        .map_or(("tls.client_ca", Path::new("")), |a| (a.key, a.path));
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .with_crls(crls.iter().cloned())
        // CRLs are per CA: a bundle may hold agencies' CAs that publish none,
        // so a chain no configured CRL speaks for is not refused for that.
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| err(key, path, format!("cannot verify clients with it: {e}")))?;
    Ok(if require_client_auth_eku {
        Arc::new(RequireClientAuthEku(verifier))
    } else {
        verifier
    })
}

/// Builds the server config from the configured files (the client CA
/// bundle and CRLs of `files`).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let anchors = Anchors {
        key: "tls.client_ca",
        path: &files.client_ca,
        certs: load_certs("tls.client_ca", &files.client_ca)?,
    };
    // Warnings are the snapshot's to report; this is for tests and tools.
    let (crls, _) = load_crls(&files.crls, 0)?;
    let verifier = client_verifier(&[anchors], &crls, files.require_client_auth_eku)?;
    server_config_with(files, verifier)
}

/// The server config: the gateway's certificate and key from `files`,
/// TLS 1.3, ALPN `h2`, and client certificates checked by `verifier`.
pub fn server_config_with(
    files: &TlsFiles,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let chain = load_certs("tls.cert", &files.cert)?;
    let key = load_key("tls.key", &files.key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err("tls.cert", &files.cert, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            err(
                "tls.key",
                &files.key,
                format!("does not match tls.cert or is unsupported: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Whether a DER certificate lists `clientAuth` in an extended key usage
/// extension. A certificate without the extension does not.
pub fn has_client_auth_eku(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(
        |(_, cert)| matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth),
    )
}

/// The WebPKI client verifier, plus: the end-entity certificate must carry
/// `clientAuth` in its extended key usage. WebPKI alone accepts a
/// certificate without the extension (its rule is "required if present"),
/// so any certificate the CA ever issued, for any purpose, would do.
#[derive(Debug)]
struct RequireClientAuthEku(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for RequireClientAuthEku {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        if !has_client_auth_eku(end_entity) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
