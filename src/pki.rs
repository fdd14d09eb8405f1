//! A development PKI made with rcgen: one CA, a gateway server certificate for
//! `localhost`/`127.0.0.1`, and one client certificate per agency carrying the
//! agency's SPIFFE URI. Production agencies bring certificates from their own
//! CAs; this exists so that a fresh clone and the tests have working mTLS.

use std::{
    fs,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Errors while creating or loading the dev PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

/// A certificate authority able to issue certificates (its key is in memory).
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A PEM certificate and its PKCS#8 PEM private key.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: u64,
}

/// Validity window of an issued certificate.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From one hour ago until `days` from now.
    pub fn days_from_now(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }

    /// A window that ended yesterday (for tests of expired certificates).
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

fn serial() -> u64 {
    // Unique enough for a dev CA: nanoseconds since the epoch, mixed with a counter.
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    (nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48)) & 0x7fff_ffff_ffff_ffff
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "interop-gateway dev PKI");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let validity = Validity::days_from_now(3650);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params
}

impl Ca {
    /// A new self-signed CA with a fresh P-256 key.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its PEM certificate and PKCS#8 PEM key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[&str]) -> Result<IssuedCert, PkiError> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("gateway"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, Validity::days_from_now(825))
    }

    /// A client certificate for an agency: URI SAN `spiffe://<trust_domain>/agency/<code>`.
    pub fn issue_agency(
        &self,
        trust_domain: &str,
        agency_code: &str,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        self.issue_client(
            agency_code,
            Some(&format!("spiffe://{trust_domain}/agency/{agency_code}")),
            validity,
        )
    }

    /// A client certificate with an arbitrary (or no) URI SAN.
    pub fn issue_client(
        &self,
        common_name: &str,
        uri: Option<&str>,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        self.issue_with_usages(
            common_name,
            uri,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        )
    }

    /// A certificate with an arbitrary (or no) URI SAN and the given
    /// extended key usages (none: no extension at all).
    pub fn issue_with_usages(
        &self,
        common_name: &str,
        uri: Option<&str>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(uri) = uri {
            let uri = uri
                .to_owned()
                .try_into()
                .map_err(|_| PkiError::Invalid(format!("{uri:?} is not a valid URI SAN")))?;
            params.subject_alt_names = vec![SanType::URI(uri)];
        }
        params.extended_key_usages = usages;
        self.sign(params, validity)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let serial = serial();
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }

    /// A CRL revoking the given serial numbers, valid for a week.
    pub fn crl_pem(&self, revoked: &[u64]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(serial()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)?;
        Ok(crl.pem()?)
    }
}

/// Where the dev PKI lives: `<dir>/ca.pem`, `<dir>/ca.key`,
/// `<dir>/agencies/<code>.pem` and `.key`.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn agency_cert(&self, code: &str) -> PathBuf {
        self.dir.join("agencies").join(format!("{code}.pem"))
    }
    pub fn agency_key(&self, code: &str) -> PathBuf {
        self.dir.join("agencies").join(format!("{code}.key"))
    }

    /// Loads the CA from `ca.pem`/`ca.key`.
    pub fn load_ca(&self) -> Result<Ca, PkiError> {
        let cert = read(&self.ca_cert())?;
        let key = read(&self.ca_key())?;
        Ca::from_pem(&cert, &key)
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` (creating its folder); private keys get mode 0600.
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    // Write to a sibling temp file and rename, so a crash never leaves half a key.
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).map_err(io)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    fs::rename(&tmp, path).map_err(io)
}

/// Writes an issued certificate and its key.
pub fn write_issued(
    cert_path: &Path,
    key_path: &Path,
    issued: &IssuedCert,
) -> Result<(), PkiError> {
    write_file(key_path, &issued.key_pem, true)?;
    write_file(cert_path, &issued.cert_pem, false)
}
