//! The Rust client side: one place that sets up an mTLS channel to a gateway
//! with an agency certificate, used by the `call` command, the tests and any
//! Rust caller.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto::{
    audit::v1::access_log_service_client::AccessLogServiceClient,
    business::v1::business_registry_service_client::BusinessRegistryServiceClient,
    catalog::v1::catalog_service_client::CatalogServiceClient,
    citizen::v1::citizen_registry_service_client::CitizenRegistryServiceClient,
    land::v1::land_registry_service_client::LandRegistryServiceClient,
};

/// An agency's credentials: the CA that issued the gateway's certificate and
/// the agency's own certificate chain and key, all PEM.
#[derive(Clone, Debug)]
pub struct AgencyIdentity {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// A client-side failure before any call was made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Endpoint(String),
    /// The files do not fit together: the message names the file and why.
    #[error("{0}")]
    Files(String),
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
}

/// Where an identity's files came from, so messages can name them.
#[derive(Clone, Debug)]
pub struct IdentityFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AgencyIdentity {
    /// Reads the three PEM files and checks that they fit together (see
    /// [`AgencyIdentity::check`]).
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| ClientError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let identity = Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        };
        identity.check(&IdentityFiles {
            ca: ca.to_owned(),
            cert: cert.to_owned(),
            key: key.to_owned(),
        })?;
        Ok(identity)
    }

    /// Before any connection: the CA file holds certificates, the client
    /// certificate is not a CA certificate, and the key is the certificate's.
    /// Each mix-up otherwise surfaces only as a failed handshake.
    pub fn check(&self, files: &IdentityFiles) -> Result<(), ClientError> {
        let fail =
            |path: &Path, why: String| ClientError::Files(format!("{}: {why}", path.display()));
        let ca: Vec<_> = CertificateDer::pem_slice_iter(&self.ca_pem)
            .filter_map(Result::ok)
            .collect();
        if ca.is_empty() {
            return Err(fail(
                &files.ca,
                "no PEM certificate (BEGIN CERTIFICATE) in it; the CA file is the certificate of \
                 the CA that issued the gateway's certificate (dev: certs/ca.pem)"
                    .into(),
            ));
        }
        let cert = CertificateDer::pem_slice_iter(&self.cert_pem)
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| {
                fail(
                    &files.cert,
                    "no PEM certificate (BEGIN CERTIFICATE) in it; pass your agency's \
                     certificate (dev: certs/agencies/<code>.pem)"
                        .into(),
                )
            })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert).map_err(|e| {
            fail(
                &files.cert,
                format!("not a readable X.509 certificate: {e}"),
            )
        })?;
        if parsed.is_ca() {
            return Err(fail(
                &files.cert,
                "a CA certificate (basicConstraints CA:TRUE), not a client certificate; pass \
                 your agency's certificate (dev: certs/agencies/<code>.pem) here and the CA with \
                 --ca"
                    .into(),
            ));
        }
        // clientAuth missing from an extended key usage that is there is
        // refused by every gateway (a gateway may relax only its absence).
        if let Ok(Some(eku)) = parsed.extended_key_usage() {
            if !eku.value.client_auth && !eku.value.any {
                return Err(fail(
                    &files.cert,
                    "its extended key usage does not include clientAuth, so the gateway refuses \
                     it as an agency certificate; have your CA issue one with clientAuth (see \
                     certs/README.md)"
                        .into(),
                ));
            }
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| {
            fail(
                &files.key,
                format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
            )
        })?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| fail(&files.key, format!("unsupported private key: {e}")))?;
        if let Some(public) = signing.public_key() {
            if public.as_ref() != parsed.public_key().raw {
                return Err(fail(
                    &files.key,
                    format!(
                        "does not match the certificate {} (their public keys differ); pass \
                         the key made with that certificate (dev: certs/agencies/<code>.key)",
                        files.cert.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether a status is a transport failure (no answer from the gateway)
/// rather than a status the gateway sent.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// What most likely went wrong when a connection to `addr` with `files`
/// failed with `error` (its whole source chain), in words naming the file
/// to change; the raw error follows in parentheses.
pub fn explain_failure(error: &str, addr: &str, files: &IdentityFiles) -> String {
    let (ca, cert) = (files.ca.display(), files.cert.display());
    let lower = error.to_lowercase();
    let has = |s: &str| error.contains(s) || lower.contains(&s.to_lowercase());
    let cause = if has("UnknownIssuer") {
        format!(
            "the gateway's certificate is not issued by the CA in {ca} (--ca): pass the CA \
             certificate that issued the gateway's certificate"
        )
    } else if has("NotValidForName") {
        format!(
            "the gateway's certificate does not carry the host name of {addr}: connect by a name \
             it carries (dev: localhost)"
        )
    } else if has("UnknownCA") || has("unknown ca") {
        format!("the gateway does not trust the CA that issued {cert}")
    } else if has("CertificateExpired") {
        format!("the gateway refused {cert}: expired (or not yet valid)")
    } else if has("CertificateRevoked") {
        format!("the gateway refused {cert}: revoked")
    } else if has("UnsupportedCertificate") {
        format!(
            "the gateway refused {cert}: its extended key usage lacks clientAuth (see \
             certs/README.md)"
        )
    } else if has("CertificateRequired") || has("BadCertificate") || has("AccessDenied") {
        format!("the gateway refused {cert} during the TLS handshake; its log says why")
    } else if has("Connection refused") {
        format!("nothing is listening at {addr}: is the gateway running, on that address?")
    } else if lacks_eku(&files.cert) {
        // TLS 1.3: the gateway checks the client certificate after the
        // client's side of the handshake is done, so the refusal arrives
        // as a closed connection, in varying words.
        format!(
            "the gateway most likely refused {cert}: it has no extended key usage, and gateways \
             require clientAuth unless their operator relaxes it (see certs/README.md)"
        )
    } else if has("close_notify")
        || has("connection closed")
        || has("reset by peer")
        || has("broken pipe")
        // hyper, when the connection closed before the request could go.
        || has("connection was not ready")
    {
        format!(
            "the gateway closed the connection right after the TLS handshake, so it most likely \
             refused {cert}: issued by a CA it does not trust (for that agency: its own `ca`), \
             revoked by a CRL it loads, or naming no agency configured there (no or several \
             spiffe://<trust domain>/agency/<code> URI SANs, another trust domain, or an \
             unregistered agency code); or it is at a connection limit. Its log names the \
             cause"
        )
    } else if has("timed out") || has("deadline") {
        format!("no answer from {addr} in time")
    } else {
        format!("cannot reach the gateway at {addr}")
    };
    format!("{cause} ({error})")
}

/// Whether the first certificate in the PEM file at `path` has no extended
/// key usage extension at all.
fn lacks_eku(path: &Path) -> bool {
    let Ok(pem) = std::fs::read(path) else {
        return false;
    };
    let Some(Ok(cert)) = CertificateDer::pem_slice_iter(&pem).next() else {
        return false;
    };
    x509_parser::parse_x509_certificate(&cert)
        .is_ok_and(|(_, c)| matches!(c.extended_key_usage(), Ok(None)))
}

/// Stubs for every registry service over one mTLS channel.
#[derive(Clone, Debug)]
pub struct Client {
    pub channel: Channel,
    pub citizen: CitizenRegistryServiceClient<Channel>,
    pub land: LandRegistryServiceClient<Channel>,
    pub business: BusinessRegistryServiceClient<Channel>,
    pub access_log: AccessLogServiceClient<Channel>,
    pub catalog: CatalogServiceClient<Channel>,
}

/// Builds an endpoint (`https://host:port` or `host:port`) with mTLS.
pub fn endpoint(address: &str, identity: &AgencyIdentity) -> Result<Endpoint, ClientError> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&identity.ca_pem))
        .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
    Endpoint::from_shared(uri.clone())
        .map_err(|e| ClientError::Endpoint(format!("{uri}: {e}")))?
        .tls_config(tls)
        .map_err(|e| ClientError::Endpoint(format!("{uri}: {e}")))
        .map(|e| e.connect_timeout(Duration::from_secs(10)).tcp_nodelay(true))
}

impl Client {
    /// Connects (handshake included) to the gateway at `address`.
    pub async fn connect(address: &str, identity: &AgencyIdentity) -> Result<Client, ClientError> {
        let ep = endpoint(address, identity)?;
        let channel = ep.connect().await.map_err(|e| ClientError::Connect {
            endpoint: address.to_owned(),
            message: error_chain(&e),
        })?;
        Ok(Client::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Client {
        Client {
            citizen: CitizenRegistryServiceClient::new(channel.clone()),
            land: LandRegistryServiceClient::new(channel.clone()),
            business: BusinessRegistryServiceClient::new(channel.clone()),
            access_log: AccessLogServiceClient::new(channel.clone()),
            catalog: CatalogServiceClient::new(channel.clone()),
            channel,
        }
    }
}

/// An error with all its sources, `a: b: c`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, Validity};
    use rcgen::ExtendedKeyUsagePurpose as Eku;

    /// Writes CA, certificate and key files for a certificate with `usages`.
    fn files(dir: &Path, usages: Vec<Eku>) -> (AgencyIdentity, IdentityFiles) {
        let ca = Ca::generate("test CA").unwrap();
        let issued = ca
            .issue_with_usages(
                "x",
                Some("spiffe://interop.example.vn/agency/000.00.20.H13"),
                usages,
                Validity::days_from_now(1),
            )
            .unwrap();
        let f = IdentityFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("agency.pem"),
            key: dir.join("agency.key"),
        };
        std::fs::write(&f.ca, ca.cert_pem()).unwrap();
        std::fs::write(&f.cert, &issued.cert_pem).unwrap();
        std::fs::write(&f.key, &issued.key_pem).unwrap();
        let identity = AgencyIdentity {
            ca_pem: ca.cert_pem().as_bytes().to_vec(),
            cert_pem: issued.cert_pem.as_bytes().to_vec(),
            key_pem: issued.key_pem.as_bytes().to_vec(),
        };
        (identity, f)
    }

    #[test]
    fn a_certificate_without_client_auth_usage_is_named_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, f) = files(dir.path(), vec![Eku::ServerAuth]);
        let e = identity.check(&f).unwrap_err().to_string();
        assert!(e.contains("agency.pem") && e.contains("clientAuth"), "{e}");

        let (identity, f) = files(dir.path(), vec![Eku::ClientAuth]);
        identity.check(&f).unwrap();
        assert!(!lacks_eku(&f.cert));

        // No extension at all: allowed here (a gateway may relax it), and
        // named as the likely cause when the connection is then closed.
        let (identity, f) = files(dir.path(), vec![]);
        identity.check(&f).unwrap();
        let why = explain_failure("connection was not ready", "localhost:1", &f);
        assert!(why.contains("no extended key usage"), "{why}");

        // With clientAuth, a connection closed after the handshake reads the
        // same in each of the words the client may report it in.
        let (_, f) = files(dir.path(), vec![Eku::ClientAuth]);
        for error in [
            "connection closed because of a broken pipe",
            "operation was canceled: connection was not ready",
            "received fatal alert: close_notify",
        ] {
            let why = explain_failure(error, "localhost:1", &f);
            assert!(why.contains("right after the TLS handshake"), "{why}");
        }
    }
}
