//! The storage boundary of the access log: what the hash chain and its
//! checkpoints (the writer, [`super::writer`]) need from wherever records are
//! kept, and nothing more. The chain formulas, the signing of checkpoints,
//! group commit, fail-closed health and live readers live once, above this
//! boundary; a store only keeps, returns and indexes what it is given.
//!
//! Two kinds of store implement it: the embedded file log (segments and an
//! SQLite subject index in one folder) and a database shared by several
//! gateway instances. The writer owns its store on one dedicated synchronous
//! thread (`audit-writer`), so [`AuditStore`] is a blocking trait; a store
//! that talks to a database over async I/O blocks on its own runtime inside
//! that thread. Reads for `ListAccessRecords` and watchers come from async
//! handlers and must not stall the writer: they go through a separate
//! [`AuditReader`] handle (`Send + Sync`, shared), whose blocking methods the
//! caller runs on `spawn_blocking`.
//!
//! # What a store promises
//!
//! - [`AuditStore::append`] is all or nothing and durable when it returns
//!   `Ok`: a group of records (consecutive seqs, each with its chain hash)
//!   with the signed checkpoints that fall among them, in order. On `Err`
//!   none of the group may ever be returned by a later read or recovery.
//! - [`AuditStore::recover`] returns the last durable checkpoint and every
//!   entry after it, so that opening re-verifies only those (constant work
//!   whatever the history), plus the latest checkpoint the store keeps apart
//!   from the entries (to detect entries cut off the end).
//! - Reads return only what an `append` made durable.
//!
//! Seqs and hashes belong to one chain. A store shared by several instances
//! keeps one chain per instance (the writer never sees the others'), while
//! [`AuditReader::subject_page`] lists every instance's records: its cursor
//! is therefore an opaque string the store itself defines and parses back,
//! never a bare seq. Cursors travel inside sealed page tokens, so a store
//! that serves several instances should also hand out the token key
//! ([`AuditReader::page_token_secret`]) they share.
//!
//! Watchers of a store with one chain follow the writer's own broadcast. A
//! store shared by several instances also hands out [`AuditReader::chains`]:
//! every chain's records after a set of positions ([`Positions`]), and a
//! live feed of what any instance commits ([`ChainEvent`]), so a watcher on
//! any instance sees the records of all of them.
//!
//! Changes to these traits are additive (new methods with defaults), so a
//! store written against them keeps building.

use std::{borrow::Cow, collections::BTreeMap, io, sync::Arc};

use tokio::sync::broadcast;

use super::{chain::Checkpoint, record::AuditRecord, AuditError};

/// One entry of a chain as a store keeps it: a record with its seq and the
/// chain hash after it, or a signed checkpoint sealing the chain up to a seq.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every entry is a record; boxing it would cost an allocation per record to shrink the rare checkpoint"
)]
pub enum Entry<'a> {
    Record {
        seq: u64,
        /// The chain hash after this record.
        hash: [u8; 32],
        record: Cow<'a, AuditRecord>,
    },
    Checkpoint(Checkpoint),
}

impl Entry<'_> {
    /// The same entry owning its record.
    pub fn into_owned(self) -> Entry<'static> {
        match self {
            Entry::Record { seq, hash, record } => Entry::Record {
                seq,
                hash,
                record: Cow::Owned(record.into_owned()),
            },
            Entry::Checkpoint(cp) => Entry::Checkpoint(cp),
        }
    }
}

/// What a store holds when it is opened: enough to re-verify the part of the
/// chain no checkpoint seals yet, and no more.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The latest checkpoint the store keeps apart from its entries (the
    /// file log's `audit.head`): the chain must reach at least this far and
    /// hold this checkpoint, or entries were cut off. `None` only for a store
    /// that never sealed anything.
    pub head: Option<Checkpoint>,
    /// The entries from the last durable checkpoint (its first element) to
    /// the end, in chain order. A chain with no checkpoint yet starts at
    /// record 1, whose previous hash is [`super::chain::GENESIS`]. Empty for
    /// a new store.
    pub tail: Vec<Entry<'static>>,
    /// Records the store has before the first entry of `tail`, for reports
    /// (they were verified when they were sealed).
    pub sealed_records: u64,
}

/// Where the access log's chain is kept. Owned by the writer thread;
/// blocking. See the module documentation for what every method promises.
pub trait AuditStore: Send + 'static {
    /// Opens the store as left by the last run (a crash included: a write
    /// that was never acknowledged is dropped here) and returns the last
    /// checkpoint and what follows it. Called once, before any `append`.
    fn recover(&mut self) -> Result<Recovered, AuditError>;

    /// Makes `group` durable, all or nothing: records with consecutive seqs
    /// continuing the chain, and checkpoints right after the record they
    /// seal. Keeps the subject index in step in the same group.
    fn append(&mut self, group: &[Entry<'_>]) -> io::Result<()>;

    /// Keeps `genesis` (the signed checkpoint at seq 0 of a new chain) as
    /// the latest checkpoint apart from the entries, when [`Recovered::head`]
    /// was `None` and the chain is empty: from then on, losing that
    /// record of the head is itself detected. Not an entry of the chain.
    fn keep_genesis(&mut self, _genesis: &Checkpoint) -> io::Result<()> {
        Ok(())
    }

    /// Whether the store would like the chain sealed now (the file log: its
    /// active segment is full or old enough to be closed, which it does
    /// right after a checkpoint). The writer then ends its next group, or an
    /// empty one, with a checkpoint.
    fn wants_checkpoint(&self, _now_unix_ms: i64) -> bool {
        false
    }

    /// Applies the store's retention rule at `now_unix_ms`: what is sealed
    /// and old enough leaves (the file log: to its archive, or deleted).
    /// A deletion is attested first with `attest(seq, hash)`, which signs a
    /// statement that records up to `seq` (chain head `hash`) were deleted.
    /// Returns how many units (segments) left. Called by the writer between
    /// groups.
    fn expire(
        &mut self,
        _now_unix_ms: i64,
        _attest: &dyn Fn(u64, [u8; 32]) -> Checkpoint,
    ) -> Result<u64, AuditError> {
        Ok(0)
    }

    /// The writer stopped in order after its final checkpoint: leave the
    /// store as a stopped log should be (the file log cuts its active
    /// segment to its data).
    fn close(&mut self) {}

    /// The read side, shared with request handlers.
    fn reader(&self) -> Arc<dyn AuditReader>;

    /// Where the store is, for messages (a folder, a database name).
    fn location(&self) -> String;
}

/// One row of a subject's listing.
#[derive(Clone, Debug, PartialEq)]
pub struct SubjectRow {
    /// Where the next (older) page starts when this is the last row of a
    /// page: opaque, defined and parsed back by the store.
    pub cursor: String,
    pub record: AuditRecord,
}

/// Reads of committed records, from any thread. Blocking: async callers run
/// them on `spawn_blocking`.
pub trait AuditReader: Send + Sync + 'static {
    /// Up to `limit` records naming `subject` (a valid personal id,
    /// enterprise code or parcel key), newest first, strictly older than the
    /// row whose cursor is `before` (`None`: from the newest). Reads one page,
    /// not the rest of the history. A cursor the store cannot parse is
    /// [`AuditError::Options`].
    fn subject_page(
        &self,
        subject: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubjectRow>, AuditError>;

    /// Up to `limit` records of this instance's chain with seq strictly above
    /// `after_seq`, oldest first (live watchers catching up).
    fn records_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, AuditError>;

    /// The chain hash after record `seq` of this instance's chain
    /// ([`super::chain::GENESIS`] for 0), or `None` when the chain has no
    /// such record (it ends before `seq`, or retention removed it): what a
    /// witness is shown to prove that a new checkpoint extends the one it
    /// countersigned. The default (a store that cannot) fails, so
    /// witnessing such a log is reported and retried, never wrong.
    fn chain_hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>, AuditError> {
        Err(AuditError::Unavailable(format!(
            "this store cannot read the chain hash at record {seq}"
        )))
    }

    /// The last record deleted under retention with no archive, when any
    /// was (from the signed statement that attests the deletion). A witness
    /// that last countersigned a record before it cannot be shown that the
    /// log goes on from there: the record is gone, not rolled back.
    fn retired_through(&self) -> Result<Option<u64>, AuditError> {
        Ok(None)
    }

    /// The secret page tokens are sealed with, when the store shares one
    /// between instances (a token issued by one must open on another).
    /// `None`: the gateway uses a key of its own process.
    fn page_token_secret(&self) -> Result<Option<[u8; 64]>, AuditError> {
        Ok(None)
    }

    /// Every chain's records, for watchers, when the store keeps the chains
    /// of several instances. `None` (the default): the store keeps this
    /// gateway's chain alone, and watchers follow the writer's broadcast.
    fn chains(&self) -> Option<Arc<dyn ChainsReader>> {
        None
    }
}

/// How far a reader got in each chain: instance name to the seq of the last
/// record it has. A chain it does not name is read from its beginning.
pub type Positions = BTreeMap<String, u64>;

/// One committed record of one instance's chain.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainRecord {
    pub instance: String,
    pub seq: u64,
    pub record: AuditRecord,
}

/// What the live feed of several chains tells its subscribers.
#[derive(Clone, Debug)]
pub enum ChainEvent {
    /// A record committed by any instance. Per instance, records come in seq
    /// order; a subscriber that sees a seq further than the next it expects
    /// reads the ones between back from the store.
    Record(Arc<ChainRecord>),
    /// The feed (re)started following the store: records committed before
    /// may not have been sent, so a subscriber reads back from the store
    /// what follows its positions.
    Resync,
    /// The feed lost the store and is trying to reach it again: nothing
    /// arrives until the next [`ChainEvent::Resync`].
    Unavailable(Arc<str>),
}

/// Reads of every instance's chain in a shared store, for watchers: the
/// records after given positions and the live feed of new ones. The feed is
/// one per process, whatever the number of subscribers. Blocking, like
/// [`AuditReader`], except [`ChainsReader::subscribe`].
pub trait ChainsReader: Send + Sync + 'static {
    /// The last seq of every chain now (0 for a chain without records).
    fn heads(&self) -> Result<Positions, AuditError>;

    /// Up to `limit` records of each chain after its position in `after` (a
    /// chain `after` does not name: from its first record), in seq order per
    /// instance, chains interleaved by record time.
    fn records_after(
        &self,
        after: &Positions,
        limit: usize,
    ) -> Result<Vec<ChainRecord>, AuditError>;

    /// The live feed. Subscribe *before* reading back with
    /// [`ChainsReader::records_after`]: every record is then in one or the
    /// other. A subscriber more than a bounded number of events behind gets
    /// `RecvError::Lagged`.
    fn subscribe(&self) -> broadcast::Receiver<ChainEvent>;
}
