//! The live log: [`AuditLog::open`] checks and recovers the directory, then
//! one writer thread owns the file and commits records in groups. Every append
//! waiting when the writer is free goes into one write and one fsync, and is
//! acknowledged only after that fsync: throughput grows with concurrency
//! while every acknowledged record is on disk.
//!
//! Fail closed: when a write or fsync fails, every append of that batch gets
//! [`AuditError::Unavailable`], the log reports itself unhealthy, and none of
//! the batch counts as written. Before writing again the writer cuts the file
//! back to the last length known good, so a half-written or unsynced batch
//! never becomes part of the chain; the first success reports healthy again.
//!
//! Live readers: each committed record is also published, after its fsync,
//! on a bounded broadcast ([`AuditLog::subscribe`]); with a per-seq offset
//! table ([`AuditLog::records_after`]) a reader that missed some reads them
//! back from the file. Publishing never waits: a reader that falls more than
//! [`LIVE_BUFFER`] records behind is told it lagged.

use std::{
    fs::{self, File, OpenOptions},
    future::Future,
    io::{self, BufReader, Write},
    num::{NonZeroU64, NonZeroUsize},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{
    chain::{self, Checkpoint, GENESIS},
    files::{self, LOG_FILE, PUB_FILE},
    index::{self, SubjectIndex},
    line::{self, Encoded, Line},
    record::AuditRecord,
    signer::Signer,
    verify::{self, ScanError, VerifyFailure},
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
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            checkpoint_every_records: const { NonZeroU64::new(1000).unwrap() },
            checkpoint_every: Duration::from_secs(10),
            max_batch: const { NonZeroUsize::new(1024).unwrap() },
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

/// An open audit log. Appends go to the single writer task through a
/// channel; queries read committed lines back from the file.
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    health: watch::Receiver<bool>,
    sealed: watch::Receiver<u64>,
    task: JoinHandle<Result<(), AuditError>>,
}

/// What queries share with the writer.
struct Shared {
    path: PathBuf,
    /// A read-only handle for positioned reads of committed lines.
    reader: File,
    index: RwLock<SubjectIndex>,
    /// File offset of every committed record: seq `s` at `s - 1`.
    offsets: RwLock<Vec<u64>>,
    /// Committed records, for live readers.
    live: broadcast::Sender<Arc<LiveRecord>>,
}

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is an Append; boxing it would cost an allocation per record to shrink a message sent once"
)]
enum Msg {
    Append(Encoded, oneshot::Sender<Result<u64, AuditError>>),
    /// The checkpoint timer fired.
    Tick,
    Shutdown,
    /// Tests: stop at once, as a crash would, sealing nothing.
    #[cfg(test)]
    Crash,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, signing checkpoints with `signer`.
    ///
    /// The whole file is verified first, exactly as [`super::verify_file`]
    /// does, and a log that fails is refused with the first bad line and
    /// record. Then a crash is recovered from: a final line without its
    /// newline (a write that was never acknowledged) is cut off, and records
    /// after the last checkpoint are sealed with a fresh one. Must be called
    /// inside a tokio runtime; the writer task runs on it.
    pub async fn open(
        dir: &Path,
        signer: Signer,
        opts: AuditOptions,
    ) -> Result<AuditLog, AuditError> {
        Self::open_with_sink(dir, signer, opts, |file| Box::new(file)).await
    }

    /// [`AuditLog::open`], with the log file wrapped by `wrap` (tests inject
    /// failing sinks through this).
    pub(crate) async fn open_with_sink(
        dir: &Path,
        signer: Signer,
        opts: AuditOptions,
        wrap: impl FnOnce(File) -> Box<dyn Sink> + Send + 'static,
    ) -> Result<AuditLog, AuditError> {
        if opts.checkpoint_every.is_zero()
            || Instant::now().checked_add(opts.checkpoint_every).is_none()
        {
            return Err(AuditError::Options(format!(
                "checkpoint_every must be longer than zero and a usable interval, not {:?}",
                opts.checkpoint_every
            )));
        }
        let dir = dir.to_owned();
        let every_records = opts.checkpoint_every_records.get();
        let writer =
            tokio::task::spawn_blocking(move || Writer::recover(dir, signer, every_records, wrap))
                .await
                .map_err(|e| AuditError::Unavailable(format!("opening the log failed: {e}")))??;

        let shared = Arc::clone(&writer.shared);
        let (health_tx, health) = watch::channel(true);
        let (sealed_tx, sealed) = watch::channel(writer.sealed);
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
                let _ = done_tx.send(run(writer, rx, max_batch, health_tx, sealed_tx));
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
            task,
        })
    }

    /// Queues `record` and resolves to its seq once it is on disk (written
    /// and fsynced). The future does not borrow the log, so it can be spawned.
    /// Once queued the record is written even if the future is dropped.
    ///
    /// The record is encoded here, in the caller's task: the writer, which
    /// every append waits on in turn, only chains and writes the bytes.
    pub fn append(
        &self,
        record: AuditRecord,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + 'static {
        let tx = self.tx.clone();
        let encoded = Encoded::new(record);
        async move {
            let stopped = || AuditError::Unavailable("the audit writer has stopped".into());
            let encoded = encoded.map_err(|e| {
                AuditError::Unavailable(format!("the access record cannot be encoded: {e}"))
            })?;
            let (reply, answer) = oneshot::channel();
            tx.send(Msg::Append(encoded, reply))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
    }

    /// Up to `limit` committed records naming `subject`, newest first, with
    /// seq strictly below `before_seq` (pass the last seq of a page to get
    /// the next). Reads the lines back from the file: blocking, but only
    /// `limit` positioned reads of recently written, usually cached, lines.
    pub fn records_for_subject(
        &self,
        subject: &str,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, AuditError> {
        let page = self
            .shared
            .index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .page(subject, before_seq, limit);
        self.read_records(page)
    }

    /// Committed records from now on, in seq order. A receiver more than
    /// [`LIVE_BUFFER`] records behind gets `RecvError::Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveRecord>> {
        self.shared.live.subscribe()
    }

    /// Seq of the last committed record (0 for an empty log).
    pub fn last_seq(&self) -> u64 {
        self.shared
            .offsets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len() as u64
    }

    /// Up to `limit` committed records with seq strictly above `after_seq`,
    /// oldest first, read back from the file. Blocking.
    pub fn records_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, AuditError> {
        let wanted: Vec<(u64, u64)> = {
            let offsets = self
                .shared
                .offsets
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let start = usize::try_from(after_seq).unwrap_or(usize::MAX);
            offsets
                .iter()
                .enumerate()
                .skip(start)
                .take(limit)
                .map(|(i, offset)| (i as u64 + 1, *offset))
                .collect()
        };
        self.read_records(wanted)
    }

    /// Reads the records at the given (seq, offset) pairs back from the file.
    fn read_records(&self, at: Vec<(u64, u64)>) -> Result<Vec<(u64, AuditRecord)>, AuditError> {
        let corrupt = |what: String| AuditError::Corrupt {
            path: self.shared.path.clone(),
            what,
        };
        at.into_iter()
            .map(|(seq, offset)| {
                let bytes = index::read_line_at(&self.shared.reader, offset).map_err(|source| {
                    AuditError::Io {
                        path: self.shared.path.clone(),
                        source,
                    }
                })?;
                match line::parse(&bytes) {
                    Ok(Line::Record {
                        seq: found, record, ..
                    }) if found == seq => Ok((seq, record)),
                    Ok(_) => Err(corrupt(format!(
                        "the line at offset {offset} is not record {seq}"
                    ))),
                    Err(what) => Err(corrupt(format!("record {seq} at offset {offset}: {what}"))),
                }
            })
            .collect()
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

/// Where the writer's bytes go. A `File` in production; tests wrap it to
/// make writes or fsyncs fail on demand.
pub(crate) trait Sink: Send + 'static {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes appended bytes durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes, durably.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl Sink for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_data()
    }
}

/// The writer's state: the file, the key and the chain position. Moved into
/// the blocking section for each commit and back, so no lock guards it.
struct Writer {
    sink: Box<dyn Sink>,
    signer: Signer,
    dir: PathBuf,
    shared: Arc<Shared>,
    every_records: u64,
    /// Seq the next record gets.
    next_seq: u64,
    /// Chain hash after record `next_seq - 1`.
    head: [u8; 32],
    /// Length of the committed part of the file; bytes past it are not part
    /// of the log.
    len: u64,
    /// Records since the last checkpoint.
    since_checkpoint: u64,
    /// Seq of the last checkpoint.
    sealed: u64,
    /// Bytes past `len` may be in the file (a failed commit could not cut
    /// them off): the next commit must truncate first.
    dirty: bool,
    /// The next sealing commit writes a checkpoint even with no new records:
    /// after a failure, the timer's probe that the log is writable again.
    probe: bool,
}

/// What a successful commit did.
struct Committed {
    first_seq: u64,
    /// Seq of the last checkpoint it wrote.
    sealed: Option<u64>,
}

impl Writer {
    /// Verifies the directory's log and recovers from a crash (see
    /// [`AuditLog::open`]). Blocking.
    fn recover(
        dir: PathBuf,
        signer: Signer,
        every_records: u64,
        wrap: impl FnOnce(File) -> Box<dyn Sink>,
    ) -> Result<Writer, AuditError> {
        let io_at = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let public_key = signer.public_key();
        let pub_path = dir.join(PUB_FILE);
        match files::read_public_key(&dir)? {
            Some(stored) if stored != public_key => {
                return Err(AuditError::KeyMismatch { path: pub_path })
            }
            Some(_) => {}
            None => {
                files::replace_file(&pub_path, signer.public_key_pem().as_bytes(), false)
                    .and_then(|()| files::sync_parent(&pub_path))
                    .map_err(io_at(&pub_path))?;
            }
        }
        let broken = |failure: VerifyFailure| AuditError::Broken {
            dir: dir.clone(),
            failure,
        };
        // Read before the log: see `files::read_head`.
        let stored_head = files::read_head(&dir).map_err(|what| {
            broken(VerifyFailure {
                seq: None,
                line: 0,
                what,
            })
        })?;
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_at(&path))?;
        let reader = File::open(&path).map_err(io_at(&path))?;
        let mut index = SubjectIndex::default();
        let mut offsets = Vec::new();
        let scan = verify::scan(
            BufReader::new(&reader),
            &public_key,
            |seq, offset, record| {
                offsets.push(offset);
                index.insert(seq, offset, record)
            },
        )
        .map_err(|e| match e {
            ScanError::Io { source, .. } => AuditError::Io {
                path: path.clone(),
                source,
            },
            ScanError::Bad(failure) => broken(failure),
        })?;
        verify::check_head(&scan, stored_head.as_ref(), &public_key).map_err(broken)?;

        if scan.torn_tail_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = scan.torn_tail_bytes,
                after_record = scan.records,
                "removing a torn final line left by a crash (it was never acknowledged)"
            );
            file.set_len(scan.complete_len)
                .and_then(|()| file.sync_data())
                .map_err(io_at(&path))?;
        }

        let sealed = scan.sealed_seq();
        let mut writer = Writer {
            sink: wrap(file),
            signer,
            dir: dir.clone(),
            shared: Arc::new(Shared {
                path: path.clone(),
                reader,
                index: RwLock::new(index),
                offsets: RwLock::new(offsets),
                live: broadcast::channel(LIVE_BUFFER).0,
            }),
            every_records,
            next_seq: scan.records + 1,
            head: scan.head_hash,
            len: scan.complete_len,
            since_checkpoint: scan.records - sealed,
            probe: false,
            sealed,
            dirty: false,
        };

        // Bring audit.head up to the log: a new log gets a signed genesis
        // head, and a crash between a checkpoint's fsync and the head's
        // rename left the head one checkpoint behind.
        let head_path = dir.join(files::HEAD_FILE);
        let newer = match (&stored_head, &scan.last_checkpoint) {
            (None, _) => Some(Checkpoint::sign(&writer.signer, 0, GENESIS, now_unix_ms())),
            (Some(stored), Some(last)) if last.seq > stored.seq => Some(last.clone()),
            _ => None,
        };
        if let Some(cp) = newer {
            files::write_head(&dir, &cp)
                .and_then(|()| files::sync_parent(&head_path))
                .map_err(io_at(&head_path))?;
        }

        if writer.since_checkpoint > 0 {
            let unsealed = writer.since_checkpoint;
            writer.commit(&[], true).map_err(io_at(&path))?;
            tracing::info!(
                path = %path.display(),
                records = unsealed,
                "sealed records the last run left after its final checkpoint"
            );
        }
        Ok(writer)
    }

    /// Writes `records` with the checkpoints due among them (and one at the
    /// end if `seal` and anything is unsealed), in one write and one fsync,
    /// then adds them to the index. All or nothing: on error the state is
    /// unchanged and the file is cut back to the committed length.
    fn commit(&mut self, records: &[Encoded], seal: bool) -> io::Result<Committed> {
        let result = self.try_commit(records, seal);
        self.probe = false;
        if result.is_err() && self.dirty {
            // Cut the failed batch off now; if even that fails, the next
            // commit tries again before writing anything.
            if self.sink.truncate(self.len).is_ok() {
                self.dirty = false;
            }
        }
        result
    }

    fn try_commit(&mut self, records: &[Encoded], seal: bool) -> io::Result<Committed> {
        if self.dirty {
            self.sink.truncate(self.len)?;
            self.dirty = false;
        }
        let first_seq = self.next_seq;
        let mut buf = Vec::with_capacity(records.len() * 512 + 256);
        let mut offsets = Vec::with_capacity(records.len());
        let mut head = self.head;
        let mut since = self.since_checkpoint;
        let mut last_cp = None;
        let mut seq = first_seq - 1;
        for record in records {
            seq += 1;
            head = chain::hash_canonical(&head, seq, &record.canonical);
            offsets.push(self.len + buf.len() as u64);
            line::write_encoded(&mut buf, seq, &head, record)?;
            since += 1;
            if since >= self.every_records {
                last_cp = Some(self.checkpoint(&mut buf, seq, head)?);
                since = 0;
            }
        }
        if seal && (since > 0 || self.probe) {
            last_cp = Some(self.checkpoint(&mut buf, seq, head)?);
            since = 0;
        }
        if buf.is_empty() {
            return Ok(Committed {
                first_seq,
                sealed: None,
            });
        }

        self.dirty = true;
        self.sink.append(&buf)?;
        self.sink.sync()?;
        if let Some(cp) = &last_cp {
            // The head only ever names a checkpoint already durable in the
            // log. If it cannot be replaced the batch fails (the old head
            // still matches the log once the batch is cut off); once renamed,
            // a failed folder sync at worst leaves the previous head after a
            // crash, which verification accepts.
            files::write_head(&self.dir, cp)?;
            if let Err(e) = files::sync_parent(&self.dir.join(files::HEAD_FILE)) {
                tracing::warn!(error = %e, "could not sync the audit folder after replacing audit.head");
            }
        }
        self.dirty = false;

        {
            let mut index = self
                .shared
                .index
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (i, record) in records.iter().enumerate() {
                index.insert(first_seq + i as u64, offsets[i], &record.record);
            }
        }
        self.shared
            .offsets
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(&offsets);
        self.next_seq = seq + 1;
        self.head = head;
        self.len += buf.len() as u64;
        self.since_checkpoint = since;
        if let Some(cp) = &last_cp {
            self.sealed = cp.seq;
        }
        Ok(Committed {
            first_seq,
            sealed: last_cp.map(|cp| cp.seq),
        })
    }

    fn checkpoint(&self, buf: &mut Vec<u8>, seq: u64, head: [u8; 32]) -> io::Result<Checkpoint> {
        let cp = Checkpoint::sign(&self.signer, seq, head, now_unix_ms());
        line::write_checkpoint(buf, &cp)?;
        Ok(cp)
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

/// The writer thread: waits for appends or a checkpoint tick, takes what is
/// queued behind the first (at most `max_batch` appends), and commits it in
/// one write and one fsync. Appends arriving during a commit queue up and form
/// the next group.
fn run(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    health: watch::Sender<bool>,
    sealed: watch::Sender<u64>,
) -> Result<(), AuditError> {
    let mut stopping = false;
    loop {
        let mut records = Vec::new();
        let mut replies = Vec::new();
        let mut seal = false;
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
                if !healthy || writer.since_checkpoint > 0 || writer.dirty {
                    writer.probe = !healthy;
                    seal = true;
                }
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
        let seal = seal || stopping;
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
                health.send_if_modified(|healthy| !std::mem::replace(healthy, true));
                if let Some(seq) = committed.sealed {
                    sealed.send_replace(seq);
                }
                for (i, reply) in replies.into_iter().enumerate() {
                    // A caller that stopped waiting still has its record written.
                    let _ = reply.send(Ok(committed.first_seq + i as u64));
                }
                let live = &writer.shared.live;
                if live.receiver_count() > 0 {
                    for (i, encoded) in records.into_iter().enumerate() {
                        let seq = committed.first_seq + i as u64;
                        let record = encoded.record;
                        // No receiver left is not an error.
                        let _ = live.send(Arc::new(LiveRecord { seq, record }));
                    }
                }
            }
            Err(e) => {
                health.send_replace(false);
                tracing::error!(
                    error = %e,
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
                        path: writer.shared.path.clone(),
                        source: e,
                    });
                }
            }
        }
        if stopping {
            return Ok(());
        }
    }
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
