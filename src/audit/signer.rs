//! The gateway's audit signing key: an Ed25519 key pair kept as a PKCS#8 file
//! beside the log, created on first start, and the public half exported as an
//! SPKI PEM so anyone can check checkpoints without the gateway.

use std::{fmt, io, path::Path};

use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519},
};
use rustls_pki_types::{pem::PemObject, PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

use super::{files, AuditError};

/// DER of an Ed25519 SubjectPublicKeyInfo up to the 32 key bytes (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Signs checkpoints. Holds the private key; `Debug` shows only the public key.
pub struct Signer {
    key_pair: Ed25519KeyPair,
}

impl Signer {
    /// Loads the PKCS#8 key at `path` (DER, or PEM `PRIVATE KEY` as openssl
    /// writes it), or creates one with mode 0600 if there is no file yet.
    ///
    /// An existing key readable by group or others is refused rather than
    /// used: whoever can read it can forge checkpoints.
    pub fn load_or_create(path: &Path) -> Result<Signer, AuditError> {
        let key_err = |what: String| AuditError::Key {
            path: path.to_owned(),
            what,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                check_private_mode(path)?;
                let der = if bytes.starts_with(b"-----BEGIN") {
                    PrivatePkcs8KeyDer::from_pem_slice(&bytes)
                        .map_err(|e| key_err(format!("not a PKCS#8 PEM private key: {e}")))?
                        .secret_pkcs8_der()
                        .to_vec()
                } else {
                    bytes
                };
                // `maybe_unchecked` also takes PKCS#8 v1 files (openssl's), which
                // carry no public key to cross-check.
                let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map_err(|e| key_err(format!("not an Ed25519 PKCS#8 key: {e}")))?;
                Ok(Signer { key_pair })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|e| key_err(format!("cannot generate a key: {e}")))?;
                let io_err = |source| AuditError::Io {
                    path: path.to_owned(),
                    source,
                };
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io_err)?;
                }
                files::replace_file(path, pkcs8.as_ref(), true).map_err(io_err)?;
                files::sync_parent(path).map_err(io_err)?;
                tracing::info!(path = %path.display(), "created the audit signing key");
                let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                    .map_err(|e| key_err(format!("generated key does not load: {e}")))?;
                Ok(Signer { key_pair })
            }
            Err(source) => Err(AuditError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0; 32];
        out.copy_from_slice(self.key_pair.public_key().as_ref());
        out
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> String {
        public_key_pem(&self.public_key())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0; 64];
        out.copy_from_slice(self.key_pair.sign(msg).as_ref());
        out
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &super::line::hex(&self.public_key()))
            .finish_non_exhaustive()
    }
}

/// Whether `sig` is a valid Ed25519 signature by `public_key` (32 raw bytes)
/// over `msg`.
pub fn verify_signature(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

/// The DER SubjectPublicKeyInfo of a raw Ed25519 public key (RFC 8410).
fn spki_der(public_key: &[u8; 32]) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(public_key);
    der
}

/// The key's SHA-256 fingerprint: lowercase hex SHA-256 of its DER
/// SubjectPublicKeyInfo (what `openssl pkey -pubin -outform DER | sha256sum`
/// prints for `audit.pub`).
pub fn fingerprint(public_key: &[u8; 32]) -> String {
    super::line::hex(ring::digest::digest(&ring::digest::SHA256, &spki_der(public_key)).as_ref())
}

/// Encodes a raw Ed25519 public key as an SPKI PEM.
pub fn public_key_pem(public_key: &[u8; 32]) -> String {
    let der = spki_der(public_key);
    let b64 = base64(&der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    // 60 base64 characters: the whole key fits on one line.
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// Reads an SPKI PEM Ed25519 public key back to its 32 raw bytes.
pub fn parse_public_key_pem(text: &str) -> Result<[u8; 32], AuditError> {
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes())
        .map_err(|e| AuditError::Pem(format!("not a public key PEM (no PUBLIC KEY block): {e}")))?;
    let der: &[u8] = spki.as_ref();
    match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => {
            let mut out = [0; 32];
            out.copy_from_slice(key);
            Ok(out)
        }
        _ => Err(AuditError::Pem(
            "the PUBLIC KEY block is not an Ed25519 key (expected the 44-byte RFC 8410 form)"
                .into(),
        )),
    }
}

/// Refuses a key file that group or others may read.
fn check_private_mode(path: &Path) -> Result<(), AuditError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| AuditError::Io {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(AuditError::Key {
                path: path.to_owned(),
                what: format!(
                    "readable by group or others (mode {:04o}); run `chmod 600 {}`",
                    mode & 0o7777,
                    path.display()
                ),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Standard base64 with padding, for the PEM body.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_load_creates_a_private_key_and_later_loads_return_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit.pk8");
        let first = Signer::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Signer::load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        assert!(!path.with_file_name("audit.pk8.tmp").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.pk8");
        Signer::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Signer::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.pk8");
        files::replace_file(&path, b"not a key", true).unwrap();
        let err = Signer::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("not an Ed25519 PKCS#8 key"), "{err}");
    }

    #[test]
    fn public_key_pem_round_trips_and_signatures_verify_only_with_that_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = Signer::load_or_create(&dir.path().join("a")).unwrap();
        let b = Signer::load_or_create(&dir.path().join("b")).unwrap();
        let pem = a.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(parse_public_key_pem(&pem).unwrap(), a.public_key());
        let sig = a.sign(b"checkpoint");
        assert!(verify_signature(&a.public_key(), b"checkpoint", &sig));
        assert!(!verify_signature(&b.public_key(), b"checkpoint", &sig));
        assert!(!verify_signature(&a.public_key(), b"checkpoinT", &sig));
    }

    #[test]
    fn a_pem_that_is_not_an_ed25519_public_key_is_refused() {
        assert!(parse_public_key_pem("hello").is_err());
        // A P-256 SPKI: right PEM label, wrong algorithm.
        let p256 = "-----BEGIN PUBLIC KEY-----\n\
            MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\n\
            q9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n\
            -----END PUBLIC KEY-----\n";
        let err = parse_public_key_pem(p256).unwrap_err().to_string();
        assert!(err.contains("not an Ed25519 key"), "{err}");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }
}
