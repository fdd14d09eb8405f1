//! The audit trail: every call through the gateway becomes a record in a
//! durable, tamper-evident log that an auditor (or a citizen asking who read
//! their records) can check with nothing but the files and a public key.
//!
//! - [`record`]: the record and its canonical encoding
//! - [`chain`]: the hash chain and signed checkpoints
//! - [`signer`]: the Ed25519 signing key
//! - [`store`]: the storage boundary ([`AuditStore`], [`AuditReader`]) the
//!   chain is kept behind
//! - [`writer`]: the live log ([`AuditLog`]): the chain and checkpoints,
//!   recovery on open, group commit, fail-closed writes, committed records
//!   for live readers
//! - [`segments`]: the embedded store ([`FileStore`]): segments, their
//!   on-disk subject index (`index`), retention, migration
//! - [`verify`]: [`verify_log`], [`export`], [`for_each_record`]
//! - [`witness`]: countersigned checkpoints (the witness's rule and state,
//!   the receipts, and checking a log against them)
//!
//! # Files
//!
//! One directory holds one log (see [`segments`] for how it is cut into
//! segments, indexed, retained and migrated):
//!
//! - `segments/<first seq>.log`: append-only, UTF-8, one JSON object per
//!   `\n`-terminated line, of two kinds:
//!   - record line: `{"seq":N,"hash":"<64 hex>","record":{<AuditRecord>}}`.
//!     Seqs start at 1 and run without gap. `hash` is the chain hash after
//!     this record (see [`chain`]): SHA-256 over a domain tag, the previous
//!     record's hash (32 zero bytes before record 1), `seq` as u64
//!     big-endian, and the record's canonical encoding (see [`record`]; not
//!     its JSON, so JSON formatting never matters).
//!   - checkpoint line: `{"checkpoint":{"seq":N,"hash":"<64 hex>",
//!     "time_unix_ms":T,"signature":"<128 hex>"}}`, right after record N,
//!     with `hash` the chain hash after record N and `signature` Ed25519 over
//!     a tag, N, that hash and T. Written every `checkpoint_every_records`
//!     records, every `checkpoint_every` when anything was written since the
//!     last one, on shutdown, on open when the last run left records
//!     unsealed, and to seal a segment; every segment after the first opens
//!     with a copy of the checkpoint that sealed the one before.
//! - `index.sqlite`: the subject index and checkpoint positions, rebuilt
//!   from the segments when it lags.
//! - `audit.head`: the latest checkpoint line alone, replaced atomically
//!   (temp file, fsync, rename, folder fsync) after each checkpoint is
//!   durable in the log. A new log starts with a signed genesis head
//!   (seq 0, 32 zero bytes).
//! - `audit.pub`: the public key as SPKI PEM, written on first open.
//! - `witness-receipts/<witness kid>.jsonl`: the countersignatures witnesses
//!   returned for this log's checkpoints, one JSON line each (see [`witness`]).
//!
//! The signing key (PKCS#8, mode 0600) lives wherever the caller keeps it;
//! it should not be in this directory if the directory is handed out.
//!
//! # What verification detects
//!
//! Changing a record (its hash no longer matches), removing, duplicating or
//! reordering records (seqs no longer run 1, 2, 3, and the hash covers the
//! seq), rewriting records *and* recomputing every hash after them (the
//! next checkpoint's signed hash no longer matches), forging or altering a
//! checkpoint (its signature fails), removing a segment (a gap in seqs, or
//! a first segment that starts neither at record 1 nor right after the
//! range `audit.retired` attests), and cutting lines off the end,
//! checkpoints included (`audit.head` names a checkpoint the log no longer
//! has). Deleting `audit.head` is itself reported.
//!
//! Not detectable from these files alone: records after the last checkpoint
//! can be changed or removed by someone who recomputes their hashes (at most
//! `checkpoint_every_records` records or `checkpoint_every` of traffic), and
//! rolling the log *and* `audit.head` back together to an earlier state. Both
//! are closed by sending checkpoints to a witness outside the machine
//! (`[audit] witnesses`, see [`witness`]): a log older than a checkpoint a
//! witness countersigned, or disagreeing with it, fails
//! `audit verify --witness-receipts`.
//!
//! # Crashes
//!
//! A record is acknowledged only after its line is fsynced, so a crash can
//! leave (a) a final line cut short, never acknowledged, which open removes,
//! and (b) records after the last checkpoint, which open seals with a new
//! one. Neither is a verification failure; [`VerifyReport`] counts both.
//!
//! One process per directory: the log is not locked against a second writer.

pub mod chain;
pub(crate) mod files;
mod index;
mod indexer;
mod line;
pub mod pg;
pub mod pg_tls;
pub mod record;
pub mod segments;
pub mod signer;
pub mod store;
pub mod verify;
pub mod witness;
pub mod writer;

#[cfg(test)]
mod segment_tests;
#[cfg(test)]
mod tests;

use std::{io, path::PathBuf};

pub use chain::Checkpoint;
pub use files::{fsync_latencies, HEAD_FILE, LOG_FILE, PUB_FILE};
pub use index::INDEX_FILE;
pub use record::AuditRecord;
pub use segments::{FileOptions, FileStore, MIGRATED_FILE, RETIRED_FILE, SEGMENTS_DIR};
pub use signer::{parse_public_key_pem, verify_signature, Signer};
pub use store::{AuditReader, AuditStore, Entry, Recovered, SubjectRow};
pub use verify::{
    export, for_each_record, verify_file, verify_log, verify_log_observing, VerifyFailure,
    VerifyReport, VerifyScope,
};
pub use writer::{AuditLog, AuditOptions, LiveRecord, LIVE_BUFFER};

/// Everything that can go wrong opening, writing or reading the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("signing key {}: {what}", path.display())]
    Key { path: PathBuf, what: String },
    #[error("{0}")]
    Pem(String),
    #[error(
        "{} holds another public key than the signing key's: the log was signed with \
         another key; start with that key, or give this key a new audit directory",
        path.display()
    )]
    KeyMismatch { path: PathBuf },
    #[error(
        "the audit log in {} fails verification, so it is not opened: {failure}",
        dir.display()
    )]
    Broken {
        dir: PathBuf,
        failure: VerifyFailure,
    },
    #[error("{}: {what}; run verification on the log", path.display())]
    Corrupt { path: PathBuf, what: String },
    #[error("audit options: {0}")]
    Options(String),
    /// The record was not written; the caller must not proceed as if it was.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
}
