//! The hash chain and its signed checkpoints: the two formulas verification
//! recomputes, kept here and nowhere else.
//!
//! - `hash_n = SHA-256(RECORD_TAG || hash_{n-1} || n as u64 big-endian ||
//!   canonical(record_n))`, with `hash_0` = 32 zero bytes ([`GENESIS`]).
//! - A checkpoint at record `n` is an Ed25519 signature over
//!   `CHECKPOINT_TAG || n as u64 big-endian || hash_n || time_unix_ms as i64
//!   big-endian`.
//!
//! The tags separate the two uses of the key material and version the
//! formulas; each ends in a NUL so neither is a prefix of the other.

use ring::digest;

use super::{
    record::AuditRecord,
    signer::{verify_signature, Signer},
};

/// The `prev` of record 1.
pub const GENESIS: [u8; 32] = [0; 32];

const RECORD_TAG: &[u8] = b"interop-gateway/audit/record/v1\0";
const CHECKPOINT_TAG: &[u8] = b"interop-gateway/audit/checkpoint/v1\0";

/// The chain hash of record `seq`, given the hash of the record before it.
pub fn hash(prev: &[u8; 32], seq: u64, record: &AuditRecord) -> [u8; 32] {
    hash_canonical(prev, seq, &record.canonical_bytes())
}

/// [`hash`], given the record's canonical bytes already encoded.
pub fn hash_canonical(prev: &[u8; 32], seq: u64, canonical: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(RECORD_TAG);
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(canonical);
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A signed statement that the chain head after record `seq` was `hash` at
/// `time_unix_ms`. `seq` 0 with [`GENESIS`] seals the empty log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: [u8; 32],
    pub time_unix_ms: i64,
    pub signature: [u8; 64],
}

impl Checkpoint {
    pub fn sign(signer: &Signer, seq: u64, hash: [u8; 32], time_unix_ms: i64) -> Self {
        let signature = signer.sign(&message(seq, &hash, time_unix_ms));
        Self {
            seq,
            hash,
            time_unix_ms,
            signature,
        }
    }

    /// Whether the signature is by `public_key` over this seq, hash and time.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        verify_signature(
            public_key,
            &message(self.seq, &self.hash, self.time_unix_ms),
            &self.signature,
        )
    }
}

/// The bytes a checkpoint signature covers.
fn message(seq: u64, hash: &[u8; 32], time_unix_ms: i64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CHECKPOINT_TAG.len() + 48);
    msg.extend_from_slice(CHECKPOINT_TAG);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(hash);
    msg.extend_from_slice(&time_unix_ms.to_be_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::sample;

    #[test]
    fn hash_depends_on_prev_seq_and_record() {
        let r = sample(1, "001099012345");
        let h = hash(&GENESIS, 1, &r);
        assert_eq!(h, hash(&GENESIS, 1, &r));
        assert_ne!(h, hash(&[1; 32], 1, &r));
        assert_ne!(h, hash(&GENESIS, 2, &r));
        let mut changed = r.clone();
        changed.latency_us += 1;
        assert_ne!(h, hash(&GENESIS, 1, &changed));
    }

    #[test]
    fn hash_is_sha256_of_tag_prev_seq_and_canonical_record() {
        let r = sample(7, "0101234567");
        let mut input = RECORD_TAG.to_vec();
        input.extend_from_slice(&[9; 32]);
        input.extend_from_slice(&7u64.to_be_bytes());
        input.extend_from_slice(&r.canonical_bytes());
        let expected = digest::digest(&digest::SHA256, &input);
        assert_eq!(hash(&[9; 32], 7, &r).as_slice(), expected.as_ref());
    }

    #[test]
    fn checkpoint_signature_covers_seq_hash_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(&dir.path().join("k.pk8")).unwrap();
        let cp = Checkpoint::sign(&signer, 5, [3; 32], 1_000);
        assert!(cp.verify(&signer.public_key()));
        for altered in [
            Checkpoint {
                seq: 6,
                ..cp.clone()
            },
            Checkpoint {
                hash: [4; 32],
                ..cp.clone()
            },
            Checkpoint {
                time_unix_ms: 1_001,
                ..cp.clone()
            },
        ] {
            assert!(!altered.verify(&signer.public_key()));
        }
    }
}
