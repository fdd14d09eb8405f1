//! The live log: [`AuditLog::open`] recovers the store (re-verifying only
//! what follows its last checkpoint), then one writer thread owns the store
//! and commits records in groups. Every append waiting when the writer is
//! free goes into one durable group (one write and one fsync for the file
//! log), and is acknowledged only after it: throughput grows with
//! concurrency while every acknowledged record is on disk. The hash chain
//! and the checkpoints are computed here, once, whatever the store
//! ([`super::store`]).
//!
//! Fail closed: when a group cannot be made durable, every append of it gets
//! [`AuditError::Unavailable`], the log reports itself unhealthy, and none of
//! the group counts as written (the store cuts it off); the first success
//! reports healthy again.
//!
//! Live readers: each committed record is also published, after it is
//! durable, on a bounded broadcast ([`AuditLog::subscribe`]); a reader that
//! missed some reads them back from the store ([`AuditLog::records_after`]).
//! Publishing never waits: a reader that falls more than [`LIVE_BUFFER`]
//! records behind is told it lagged.

use std::{
    borrow::Cow,
    fs::File,
    future::Future,
    io,
    num::{NonZeroU64, NonZeroUsize},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use crate::clock::{Clock, SystemClock};

use super::{
    chain::{self, Checkpoint, GENESIS},
    files::{self, HEAD_FILE},
    record::AuditRecord,
    segments::{FileOptions, FileStore, Sink},
    signer::Signer,
    store::{AuditReader, AuditStore, Entry, SubjectRow},
    verify::{ChainCheck, VerifyFailure},
    AuditError,
};

/// When checkpoints are written and how many appends one commit may carry.
/// The `NonZero` types keep a zero (a checkpoint never, a batch of nothing)
/// from being expressible.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Seal the chain after this many records.
    pub checkpoint_every_records: NonZeroU64,
    /// Seal the chain this often when records were written since the last
    /// checkpoint. Must not be zero.
    pub checkpoint_every: Duration,
    /// At most this many appends per write and fsync.
    pub max_batch: NonZeroUsize,
    /// Segments, retention and archive of the embedded log.
    pub files: FileOptions,
    /// The time checkpoints carry and retention is measured against.
    pub clock: Arc<dyn Clock>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            checkpoint_every_records: const { NonZeroU64::new(1000).unwrap() },
            checkpoint_every: Duration::from_secs(10),
            max_batch: const { NonZeroUsize::new(1024).unwrap() },
            files: FileOptions::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Committed records a live reader may fall behind by before it is told it
/// lagged (and must read the rest back with [`AuditLog::records_after`]).
pub const LIVE_BUFFER: usize = 1024;

/// A record as committed: durable, with its seq.
#[derive(Clone, Debug)]
pub struct LiveRecord {
    pub seq: u64,
    pub record: AuditRecord,
}

/// An open audit log. Appends go to the single writer thread through a
/// channel; queries go to the store's read side.
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    health: watch::Receiver<bool>,
    sealed: watch::Receiver<u64>,
    checkpoint: watch::Receiver<Option<Checkpoint>>,
    task: JoinHandle<Result<(), AuditError>>,
}

/// What queries share with the writer.
struct Shared {
    /// The store's read side.
    reader: Arc<dyn AuditReader>,
    /// Seq of the last committed record.
    last_seq: AtomicU64,
    /// Records opening re-verified: those after the last checkpoint.
    reverified: u64,
    /// Committed records, for live readers.
    live: broadcast::Sender<Arc<LiveRecord>>,
}

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is an Append; boxing it would cost an allocation per record to shrink a message sent once"
)]
enum Msg {
    Append(AuditRecord, oneshot::Sender<Result<u64, AuditError>>),
    /// The checkpoint timer fired.
    Tick,
    Shutdown,
    /// Tests: stop at once, as a crash would, sealing nothing.
    #[cfg(test)]
    Crash,
}

impl AuditLog {
    /// Opens (or creates) the embedded log in `dir` (segments and their
    /// index, see [`super::segments`]), signing checkpoints with `signer`.
    ///
    /// Only what follows the last checkpoint is read and verified, so
    /// opening costs the same whatever the history; a log that fails is
    /// refused with the first bad line and record. A crash is recovered
    /// from: a final line without its newline (a write that was never
    /// acknowledged) is cut off, and records after the last checkpoint are
    /// sealed with a fresh one. A folder in the single-file format of
    /// earlier versions is migrated first. Must be called inside a tokio
    /// runtime.
    pub async fn open(
        dir: &Path,
        signer: Signer,
        opts: AuditOptions,
    ) -> Result<AuditLog, AuditError> {
        let wrap = super::segments::preallocating(&opts.files);
        Self::open_with_sink(dir, signer, opts, wrap).await
    }

    /// [`AuditLog::open`], with each segment file wrapped by `wrap` (tests
    /// inject failing sinks through this).
    pub(crate) async fn open_with_sink(
        dir: &Path,
        signer: Signer,
        opts: AuditOptions,
        wrap: impl Fn(File) -> Box<dyn Sink> + Send + Sync + 'static,
    ) -> Result<AuditLog, AuditError> {
        let dir = dir.to_owned();
        let public_key = signer.public_key();
        // The public key beside the log, written on first open and checked
        // on every other: a log is signed with one key.
        let key_dir = dir.clone();
        let signer = tokio::task::spawn_blocking(move || {
            files::ensure_public_key(&key_dir, &signer).map(|()| signer)
        })
        .await
        .map_err(|e| AuditError::Unavailable(format!("opening the log failed: {e}")))??;
        let store = FileStore::with_wrap(&dir, public_key, opts.files.clone(), Arc::new(wrap));
        Self::open_store(Box::new(store), signer, opts).await
    }

    /// Opens the log kept in `store`: recovers it (verifying what follows
    /// its last checkpoint), then starts the writer thread on it. Must be
    /// called inside a tokio runtime.
    pub async fn open_store(
        store: Box<dyn AuditStore>,
        signer: Signer,
        opts: AuditOptions,
    ) -> Result<AuditLog, AuditError> {
        if opts.checkpoint_every.is_zero()
            || Instant::now().checked_add(opts.checkpoint_every).is_none()
        {
            return Err(AuditError::Options(format!(
                "checkpoint_every must be longer than zero and a usable interval, not {:?}",
                opts.checkpoint_every
            )));
        }
        let every_records = opts.checkpoint_every_records.get();
        let clock = Arc::clone(&opts.clock);
        let writer = tokio::task::spawn_blocking(move || {
            Writer::recover(store, signer, every_records, clock)
        })
        .await
        .map_err(|e| AuditError::Unavailable(format!("opening the log failed: {e}")))??;

        let shared = Arc::clone(&writer.shared);
        let (health_tx, health) = watch::channel(true);
        let (sealed_tx, sealed) = watch::channel(writer.sealed);
        let (checkpoint_tx, checkpoint) = watch::channel(writer.last_checkpoint.clone());
        let max_batch = opts.max_batch.get();
        // A bounded queue: when the disk falls behind, callers wait here
        // instead of memory growing without limit.
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(2));
        // The writer is a thread of its own, blocked on the queue: an append
        // wakes it directly, with no task and no blocking-pool hop between
        // the queue and the fsync. The checkpoint timer is a task that queues
        // a tick; it holds the queue weakly, so dropping the log still closes
        // it.
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let sealed = Sealed {
                    seq: sealed_tx,
                    checkpoint: checkpoint_tx,
                };
                let _ = done_tx.send(run(writer, rx, max_batch, health_tx, sealed));
            })
            .map_err(|e| AuditError::Unavailable(format!("cannot start the audit writer: {e}")))?;
        tokio::spawn(tick(tx.downgrade(), opts.checkpoint_every));
        let task = tokio::spawn(async move {
            done_rx.await.unwrap_or_else(|_| {
                Err(AuditError::Unavailable(
                    "the audit writer stopped without a word".into(),
                ))
            })
        });
        Ok(AuditLog {
            tx,
            shared,
            health,
            sealed,
            checkpoint,
            task,
        })
    }

    /// Queues `record` and resolves to its seq once it is on disk (written
    /// and fsynced). The future does not borrow the log, so it can be spawned.
    /// Once queued the record is written even if the future is dropped.
    pub fn append(
        &self,
        record: AuditRecord,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + 'static {
        self.append_and_tell(record, || {})
    }

    /// [`AuditLog::append`], calling `queued` once the record is in the
    /// writer's bounded queue (or could not be put there), before it is
    /// durable: what a caller holding a scarce place only for the queue's
    /// sake can give back then.
    pub fn append_and_tell(
        &self,
        record: AuditRecord,
        queued: impl FnOnce() + Send + 'static,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + 'static {
        let tx = self.tx.clone();
        async move {
            let stopped = || AuditError::Unavailable("the audit writer has stopped".into());
            let (reply, answer) = oneshot::channel();
            let sent = tx.send(Msg::Append(record, reply)).await;
            queued();
            sent.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
    }

    /// Up to `limit` committed records naming `subject`, newest first,
    /// strictly older than the row whose cursor is `before` (the last
    /// cursor of a page gets the next). Blocking: one index read and a few
    /// positioned reads of the segments.
    pub fn records_for_subject(
        &self,
        subject: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubjectRow>, AuditError> {
        self.shared.reader.subject_page(subject, before, limit)
    }

    /// The store's read side, for callers that hold it apart from the log.
    pub fn reader(&self) -> Arc<dyn AuditReader> {
        Arc::clone(&self.shared.reader)
    }

    /// Committed records from now on, in seq order. A receiver more than
    /// [`LIVE_BUFFER`] records behind gets `RecvError::Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveRecord>> {
        self.shared.live.subscribe()
    }

    /// Seq of the last committed record (0 for an empty log).
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Acquire)
    }

    /// Up to `limit` committed records with seq strictly above `after_seq`,
    /// oldest first, read back from the store. Blocking.
    pub fn records_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, AuditError> {
        self.shared.reader.records_after(after_seq, limit)
    }

    /// How many records opening the log re-verified (those after its last
    /// checkpoint): the work start-up did, whatever the history.
    pub fn reverified_on_open(&self) -> u64 {
        self.shared.reverified
    }

    /// Appends queued and not yet taken by the writer.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// False from a failed write or fsync until the next commit succeeds.
    pub fn is_healthy(&self) -> bool {
        *self.health.borrow()
    }

    /// Health changes, for a readiness probe to follow.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.health.clone()
    }

    /// The seq of the latest checkpoint on disk.
    pub fn sealed(&self) -> watch::Receiver<u64> {
        self.sealed.clone()
    }

    /// The latest checkpoint durable in the store (`None` until the log has
    /// sealed a record), for what follows the log from outside: witnesses.
    pub fn checkpoints(&self) -> watch::Receiver<Option<Checkpoint>> {
        self.checkpoint.clone()
    }

    /// The chain hash after record `seq` ([`GENESIS`] for 0), or `None` when
    /// the chain has no such record. Blocking.
    pub fn chain_hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>, AuditError> {
        self.shared.reader.chain_hash_at(seq)
    }

    /// Tests: stops the writer as a crash would (what was acknowledged is on
    /// disk; nothing is sealed), and waits for it.
    #[cfg(test)]
    pub(crate) async fn crash(self) {
        let _ = self.tx.send(Msg::Crash).await;
        let _ = self.task.await;
    }

    /// Commits everything queued before this call, seals the chain with a
    /// final checkpoint and waits for the writer to finish. Appends after it
    /// fail with [`AuditError::Unavailable`].
    pub async fn shutdown(self) -> Result<(), AuditError> {
        // If the writer already stopped, its result below says why.
        let _ = self.tx.send(Msg::Shutdown).await;
        self.task
            .await
            .map_err(|e| AuditError::Unavailable(format!("the audit writer failed: {e}")))?
    }
}

impl AuditLog {
    /// [`AuditLog::shutdown`] for a log still shared (a call cut off by the
    /// drain timeout holds it): commits what is queued, seals the chain with
    /// a final checkpoint, and waits until the writer has stopped. Appends
    /// after it fail closed. The writer logs its own failure, if any.
    pub async fn close(&self) {
        let _ = self.tx.send(Msg::Shutdown).await;
        self.tx.closed().await;
    }
}

/// The writer's state: the store, the key and the chain position. Owned by
/// the writer thread, so no lock guards it.
struct Writer {
    store: Box<dyn AuditStore>,
    signer: Signer,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    every_records: u64,
    /// Seq the next record gets.
    next_seq: u64,
    /// Chain hash after record `next_seq - 1`.
    head: [u8; 32],
    /// Records since the last checkpoint.
    since_checkpoint: u64,
    /// Seq of the last checkpoint.
    sealed: u64,
    /// The last checkpoint, once there is one.
    last_checkpoint: Option<Checkpoint>,
    /// The next sealing commit writes a checkpoint even with no new records:
    /// after a failure, the timer's probe that the log is writable again.
    probe: bool,
    /// The last commit failed: the next tick probes.
    failed: bool,
}

/// What a successful commit did.
struct Committed {
    first_seq: u64,
    /// The last checkpoint it wrote.
    sealed: Option<Checkpoint>,
}

impl Writer {
    /// Recovers `store` and verifies what follows its last checkpoint (see
    /// [`AuditLog::open`]). Blocking.
    fn recover(
        mut store: Box<dyn AuditStore>,
        signer: Signer,
        every_records: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<Writer, AuditError> {
        let location = store.location();
        let recovered = store.recover()?;
        let public_key = signer.public_key();
        let broken = |failure: VerifyFailure| AuditError::Broken {
            dir: PathBuf::from(&location),
            failure,
        };
        let fail = |(seq, what): (Option<u64>, String)| {
            broken(VerifyFailure {
                seq,
                ..VerifyFailure::new(format!("after the last checkpoint: {what}"))
            })
        };
        let mut entries = recovered.tail.iter();
        let mut check =
            match recovered.tail.first() {
                Some(Entry::Checkpoint(cp)) => {
                    entries.next();
                    ChainCheck::from_checkpoint(&public_key, cp).map_err(fail)?
                }
                _ if recovered.sealed_records == 0 => ChainCheck::new(&public_key, 0, GENESIS),
                _ => return Err(broken(VerifyFailure::new(
                    "the store returned records after its last checkpoint without that checkpoint",
                ))),
            };
        let base = check.seq;
        for entry in entries {
            check.push(entry).map_err(fail)?;
        }
        let head_seen = recovered.head.as_ref().is_some_and(|h| {
            recovered
                .tail
                .iter()
                .any(|e| matches!(e, Entry::Checkpoint(cp) if cp.seq == h.seq && cp.hash == h.hash))
        });
        // The head must be signed, and the chain must reach it; a head inside
        // what was re-read must be one of its checkpoints.
        match &recovered.head {
            None if check.seq > 0 => {
                return Err(broken(VerifyFailure::new(format!(
                    "{HEAD_FILE} is missing, so lines cut off the end of the log cannot be \
                     detected: it was deleted"
                ))))
            }
            Some(h) if !h.verify(&public_key) => {
                return Err(broken(VerifyFailure::new(format!(
                    "the checkpoint in {HEAD_FILE} does not verify with the public key: \
                     it was forged or altered, or the key is not this log's"
                ))))
            }
            Some(h) if h.seq == 0 && h.hash == GENESIS => {}
            Some(h) if h.seq > check.seq => {
                return Err(broken(VerifyFailure {
                    seq: Some(check.seq + 1),
                    ..VerifyFailure::new(format!(
                        "truncation detected: {HEAD_FILE} holds a signed checkpoint at record {}, \
                         but the log ends after record {}: records were removed from the end",
                        h.seq, check.seq
                    ))
                }))
            }
            Some(h) if h.seq >= base && !head_seen => {
                return Err(broken(VerifyFailure::new(format!(
                    "the signed checkpoint at record {} in {HEAD_FILE} is not in the log: \
                     checkpoint lines were removed or the log was rewritten",
                    h.seq
                ))))
            }
            _ => {}
        }
        let sealed = check.last_checkpoint.as_ref().map_or(0, |cp| cp.seq);
        let last_checkpoint = check.last_checkpoint.clone();
        let reread = check.records;
        let mut writer = Writer {
            shared: Arc::new(Shared {
                reader: store.reader(),
                last_seq: AtomicU64::new(check.seq),
                reverified: reread,
                live: broadcast::channel(LIVE_BUFFER).0,
            }),
            store,
            signer,
            clock,
            every_records,
            next_seq: check.seq + 1,
            head: check.hash,
            since_checkpoint: check.seq - sealed,
            probe: false,
            failed: false,
            sealed,
            last_checkpoint,
        };
        tracing::info!(
            location = %location,
            last_record = check.seq,
            reverified = reread,
            "access log opened"
        );

        // A new log gets a signed genesis head, so that deleting it is seen.
        if recovered.head.is_none() && check.seq == 0 {
            let genesis = Checkpoint::sign(&writer.signer, 0, GENESIS, writer.clock.now_unix_ms());
            writer
                .store
                .keep_genesis(&genesis)
                .map_err(|source| AuditError::Io {
                    path: PathBuf::from(&location),
                    source,
                })?;
        }
        if writer.since_checkpoint > 0 {
            let unsealed = writer.since_checkpoint;
            writer.commit(&[], true).map_err(|source| AuditError::Io {
                path: PathBuf::from(&location),
                source,
            })?;
            tracing::info!(
                location = %location,
                records = unsealed,
                "sealed records the last run left after its final checkpoint"
            );
        }
        Ok(writer)
    }

    /// Writes `records` with the checkpoints due among them (and one at the
    /// end if `seal` and anything is unsealed), as one durable group. All or
    /// nothing: on error the chain position is unchanged.
    fn commit(&mut self, records: &[AuditRecord], seal: bool) -> io::Result<Committed> {
        let result = self.try_commit(records, seal);
        self.probe = false;
        self.failed = result.is_err();
        result
    }

    fn try_commit(&mut self, records: &[AuditRecord], seal: bool) -> io::Result<Committed> {
        let first_seq = self.next_seq;
        let mut group = Vec::with_capacity(records.len() + 2);
        let mut head = self.head;
        let mut since = self.since_checkpoint;
        let mut last_cp = None;
        let mut seq = first_seq - 1;
        for record in records {
            seq += 1;
            head = chain::hash(&head, seq, record);
            group.push(Entry::Record {
                seq,
                hash: head,
                record: Cow::Borrowed(record),
            });
            since += 1;
            if since >= self.every_records {
                let cp = Checkpoint::sign(&self.signer, seq, head, self.clock.now_unix_ms());
                last_cp = Some(cp.clone());
                group.push(Entry::Checkpoint(cp));
                since = 0;
            }
        }
        if seal && (since > 0 || self.probe) {
            let cp = Checkpoint::sign(&self.signer, seq, head, self.clock.now_unix_ms());
            last_cp = Some(cp.clone());
            group.push(Entry::Checkpoint(cp));
            since = 0;
        }
        if group.is_empty() {
            return Ok(Committed {
                first_seq,
                sealed: None,
            });
        }
        self.store.append(&group)?;
        self.next_seq = seq + 1;
        self.head = head;
        self.since_checkpoint = since;
        self.shared.last_seq.store(seq, Ordering::Release);
        if let Some(cp) = &last_cp {
            self.sealed = cp.seq;
            self.last_checkpoint = Some(cp.clone());
        }
        Ok(Committed {
            first_seq,
            sealed: last_cp,
        })
    }

    /// Applies the store's retention rule; a failure is logged and retried
    /// at the next tick (nothing is lost by waiting).
    fn expire(&mut self) {
        let signer = &self.signer;
        let now = self.clock.now_unix_ms();
        let attest = |seq, hash| Checkpoint::sign_retired(signer, seq, hash, now);
        if let Err(e) = self.store.expire(now, &attest) {
            tracing::error!(error = %e, "applying the access log's retention failed; retrying later");
        }
    }
}

/// Queues a [`Msg::Tick`] every `every`, while the log is open.
async fn tick(queue: mpsc::WeakSender<Msg>, every: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(queue) = queue.upgrade() else { return };
        if queue.send(Msg::Tick).await.is_err() {
            return;
        }
    }
}

/// Where the writer announces each checkpoint once it is durable.
struct Sealed {
    seq: watch::Sender<u64>,
    checkpoint: watch::Sender<Option<Checkpoint>>,
}

/// The writer thread: waits for appends or a checkpoint tick, takes what is
/// queued behind the first (at most `max_batch` appends), and commits it in
/// one write and one fsync. Appends arriving during a commit queue up and form
/// the next group.
fn run(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    health: watch::Sender<bool>,
    sealed: Sealed,
) -> Result<(), AuditError> {
    let mut stopping = false;
    loop {
        let mut records = Vec::new();
        let mut replies = Vec::new();
        let mut seal = false;
        let mut expire = false;
        #[cfg(test)]
        let mut crashed = false;
        let mut take = |msg: Msg, stopping: &mut bool| match msg {
            // Appends queued behind a shutdown are dropped, and their
            // callers told the writer stopped.
            Msg::Append(..) if *stopping => {}
            Msg::Append(record, reply) => {
                records.push(record);
                replies.push(reply);
            }
            Msg::Tick => {
                // While unhealthy, every tick probes the disk with a real
                // write (a checkpoint of the current head), so health comes
                // back even when no call arrives to try.
                let healthy = *health.borrow();
                if !healthy
                    || writer.since_checkpoint > 0
                    || writer.failed
                    || writer.store.wants_checkpoint(writer.clock.now_unix_ms())
                {
                    writer.probe = !healthy;
                    seal = true;
                }
                expire = healthy;
            }
            Msg::Shutdown => *stopping = true,
            #[cfg(test)]
            Msg::Crash => crashed = true,
        };
        match rx.blocking_recv() {
            None => stopping = true,
            Some(first) => {
                take(first, &mut stopping);
                let mut taken = 1;
                while taken < max_batch {
                    let Ok(msg) = rx.try_recv() else { break };
                    take(msg, &mut stopping);
                    taken += 1;
                }
            }
        }
        #[cfg(test)]
        if crashed {
            return Ok(());
        }
        let seal = seal
            || stopping
            || (!records.is_empty() && writer.store.wants_checkpoint(writer.clock.now_unix_ms()));
        if expire && !stopping {
            writer.expire();
        }
        if records.is_empty() && !seal {
            continue;
        }

        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            writer.commit(&records, seal)
        })) {
            Ok(result) => result,
            Err(_) => {
                // The commit panicked: its state cannot be trusted.
                health.send_replace(false);
                let err = "the audit writer failed: a commit panicked".to_owned();
                tracing::error!("{err}");
                for reply in replies {
                    let _ = reply.send(Err(AuditError::Unavailable(err.clone())));
                }
                return Err(AuditError::Unavailable(err));
            }
        };

        match result {
            Ok(committed) => {
                if health.send_if_modified(|healthy| !std::mem::replace(healthy, true)) {
                    tracing::info!(
                        location = %writer.store.location(),
                        "the access log is written again; calls are answered (health SERVING)"
                    );
                }
                if let Some(cp) = committed.sealed {
                    sealed.seq.send_replace(cp.seq);
                    sealed.checkpoint.send_replace(Some(cp));
                }
                for (i, reply) in replies.into_iter().enumerate() {
                    // A caller that stopped waiting still has its record written.
                    let _ = reply.send(Ok(committed.first_seq + i as u64));
                }
                let live = &writer.shared.live;
                if live.receiver_count() > 0 {
                    for (i, record) in records.into_iter().enumerate() {
                        let seq = committed.first_seq + i as u64;
                        // No receiver left is not an error.
                        let _ = live.send(Arc::new(LiveRecord { seq, record }));
                    }
                }
            }
            Err(e) => {
                health.send_replace(false);
                tracing::error!(
                    error = %e,
                    location = %writer.store.location(),
                    records = records.len(),
                    "audit write failed; the batch is refused and will be cut off before the next write"
                );
                for reply in replies {
                    let _ = reply.send(Err(AuditError::Unavailable(format!(
                        "the audit log could not be written ({e}); nothing of this batch was recorded"
                    ))));
                }
                if stopping {
                    return Err(AuditError::Io {
                        path: PathBuf::from(writer.store.location()),
                        source: e,
                    });
                }
            }
        }
        if stopping {
            writer.store.close();
            return Ok(());
        }
    }
}

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
