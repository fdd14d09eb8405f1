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
        let serials: Vec<Vec<u8>> = revoked.iter().map(|s| s.to_be_bytes().to_vec()).collect();
        self.crl_pem_revoking(&serials)
    }

    /// A CRL revoking the given serial numbers (big-endian bytes), valid
    /// for a week from now: re-issue it well before then.
    pub fn crl_pem_revoking(&self, revoked: &[Vec<u8>]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(CRL_VALID_DAYS),
            crl_number: SerialNumber::from(serial()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
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

    /// Whether this CA issued `cert_pem` (its issuer is this CA's subject
    /// and its signature verifies against this CA's key).
    pub fn issued(&self, cert_pem: &str) -> bool {
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        let (Ok(leaf), Ok(ca)) = (
            CertificateDer::from_pem_slice(cert_pem.as_bytes()),
            CertificateDer::from_pem_slice(self.cert_pem.as_bytes()),
        ) else {
            return false;
        };
        let (Ok((_, leaf)), Ok((_, ca))) = (
            x509_parser::parse_x509_certificate(&leaf),
            x509_parser::parse_x509_certificate(&ca),
        ) else {
            return false;
        };
        leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// Days a CRL from [`Ca::crl_pem_revoking`] is valid (its nextUpdate).
pub const CRL_VALID_DAYS: i64 = 7;

/// A certificate serial number as hexadecimal digits, as `openssl x509
/// -noout -serial` prints it (colons and a `0x` prefix allowed), into its
/// big-endian bytes without leading zero bytes.
pub fn parse_serial(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if digits.is_empty() || digits.len() > 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{text:?} is not a serial number: hexadecimal digits, at most 20 bytes (as `openssl x509 -noout -serial` prints it)"
        ));
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes: Vec<u8> = (0..padded.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&padded[i..i + 2], 16).ok())
        .collect();
    Ok(trim_serial(&bytes))
}

/// The serial number of a PEM certificate, big-endian, no leading zeros.
pub fn serial_of(cert_pem: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("certificate could not be parsed: {e}"))?;
    Ok(trim_serial(cert.raw_serial()))
}

fn trim_serial(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    match &bytes[start..] {
        [] => vec![0],
        rest => rest.to_vec(),
    }
}

/// A serial number as uppercase hexadecimal, as `openssl` prints it.
pub fn serial_hex(serial: &[u8]) -> String {
    serial.iter().map(|b| format!("{b:02X}")).collect()
}

/// Where the dev PKI lives: `<dir>/ca.pem`, `<dir>/ca.key`,
/// `<dir>/agencies/<code>.pem` and `.key`, and the revocation state
/// `<dir>/revoked.txt` and `<dir>/crl.pem`.
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
    /// The dev CA's CRL, as `certs crl` and `certs revoke` write it.
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    /// The serial numbers the dev CA has revoked, one (hex) per line: what
    /// every CRL it issues lists.
    pub fn revoked(&self) -> PathBuf {
        self.dir.join("revoked.txt")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_read_as_openssl_prints_them() {
        assert_eq!(parse_serial("1A2B").unwrap(), vec![0x1a, 0x2b]);
        assert_eq!(parse_serial("0x01:a2:0b").unwrap(), vec![0x01, 0xa2, 0x0b]);
        assert_eq!(parse_serial("00ff").unwrap(), vec![0xff]);
        assert_eq!(parse_serial("abc").unwrap(), vec![0x0a, 0xbc]);
        for bad in ["", "xyz", "12 34", &"f".repeat(41)] {
            assert!(parse_serial(bad).is_err(), "{bad:?}");
        }
        assert_eq!(serial_hex(&[0x0a, 0xbc]), "0ABC");
    }

    #[test]
    fn the_serial_of_a_certificate_is_the_one_it_was_issued_with() {
        let ca = Ca::generate("test").unwrap();
        let issued = ca.issue_server(&["localhost"]).unwrap();
        let serial = serial_of(&issued.cert_pem).unwrap();
        assert_eq!(
            serial,
            parse_serial(&format!("{:x}", issued.serial)).unwrap()
        );
        assert!(ca.issued(&issued.cert_pem));
        assert!(!Ca::generate("other").unwrap().issued(&issued.cert_pem));
    }
}
