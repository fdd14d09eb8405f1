//! The embedded access log ([`FileStore`]): the chain kept in segment files,
//! with an SQLite subject index beside them ([`super::index`]), so memory
//! and start-up stay the same whatever the history.
//!
//! - `segments/<first seq, 20 digits>.log`: record and checkpoint lines (see
//!   the [module documentation](super)). Every segment after the first opens
//!   with a copy of the signed checkpoint that closed the one before it, so
//!   each can be verified on its own and the link between two is checked.
//!   The newest segment is appended to; once it holds at least
//!   `segment_bytes`, or is older than `segment_max_age`, the store asks for
//!   a checkpoint ([`AuditStore::wants_checkpoint`]), and right after it the
//!   segment is sealed and a new one opened (created as a temp file, fsynced,
//!   renamed).
//! - The newest segment is written ahead with zeros, up to 4 MiB at a time,
//!   so that a group's `fdatasync` overwrites allocated blocks instead of
//!   growing the file (which would also commit the journal). The data ends
//!   at the first NUL byte; a segment is cut to its data when it is sealed
//!   and when the log stops in order.
//! - Opening reads the newest segment from its last checkpoint known to the
//!   index (only what follows it), and re-indexes from the segments what
//!   the index lacks (none of it after a clean stop).
//! - Retention: sealed segments whose last checkpoint is older than
//!   `retain` move to `archive_dir`, or, with no archive, are deleted and a
//!   signed statement (`audit.retired`) names the range deleted and the
//!   chain head at its end, so verification still proves the log continuous.
//! - A folder in the single-file format of earlier versions (`audit.log`)
//!   is migrated on first open: verified, copied as the first segment,
//!   verified again, then renamed `audit.log.migrated` (kept, never deleted).

use std::{
    collections::{HashMap, VecDeque},
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rusqlite::Connection;

use super::{
    chain::Checkpoint,
    files::{self, LOG_FILE},
    index::{self, Batch, Position},
    indexer::{self, Indexer, Pending, Row},
    line,
    record::AuditRecord,
    store::{AuditReader, AuditStore, Entry, Recovered, SubjectRow},
    verify::{self, ReadError, VerifyFailure, VerifyScope},
    AuditError,
};

/// The folder of segment files, in the audit folder.
pub const SEGMENTS_DIR: &str = "segments";
/// What a migrated single-file log is renamed to, in the audit folder.
pub const MIGRATED_FILE: &str = "audit.log.migrated";
/// The signed statement of the range deleted under retention.
pub const RETIRED_FILE: &str = "audit.retired";

/// The file name of the segment whose first record is `first`.
pub fn segment_file_name(first: u64) -> String {
    format!("{first:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A segment file and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    /// The seq of its first record.
    pub first: u64,
    pub path: PathBuf,
    /// In the archive rather than the audit folder.
    pub archived: bool,
}

/// The segments in `dir` and in `archive`, by first seq (a seq in both is
/// listed twice, for verification to report). Other files are ignored.
pub fn list_segments(dir: &Path, archive: Option<&Path>) -> io::Result<Vec<SegmentFile>> {
    let mut out = Vec::new();
    let folders = [(dir.join(SEGMENTS_DIR), false)]
        .into_iter()
        .chain(archive.map(|a| (a.to_owned(), true)));
    for (folder, archived) in folders {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && archived => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
                out.push(SegmentFile {
                    first,
                    path: entry.path(),
                    archived,
                });
            }
        }
    }
    out.sort_by_key(|s| (s.first, s.archived));
    Ok(out)
}

/// Opens the segment starting at `first`, in the audit folder or else the
/// archive.
fn open_segment(dir: &Path, archive: Option<&Path>, first: u64) -> io::Result<File> {
    let name = segment_file_name(first);
    match File::open(dir.join(SEGMENTS_DIR).join(&name)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match archive {
            Some(a) => File::open(a.join(&name)),
            None => Err(e),
        },
        other => other,
    }
}

/// Reads `audit.retired`, if there is one (its signature is the caller's
/// to check).
pub(crate) fn read_retired(dir: &Path) -> Result<Option<Checkpoint>, String> {
    match fs::read(dir.join(RETIRED_FILE)) {
        Ok(bytes) => line::parse_retired(bytes.trim_ascii_end())
            .map(Some)
            .map_err(|e| format!("{RETIRED_FILE} is malformed: {e}")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {RETIRED_FILE}: {e}")),
    }
}

/// How segments are sealed and kept.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// Seal the newest segment once it holds at least this many bytes.
    pub segment_bytes: u64,
    /// ...or once its first line is older than this.
    pub segment_max_age: Option<Duration>,
    /// Sealed segments whose last checkpoint is older than this leave the
    /// audit folder (to `archive_dir`, or deleted with a signed statement).
    pub retain: Option<Duration>,
    pub archive_dir: Option<PathBuf>,
    /// How the subject index is written (tests shorten its timings).
    pub(crate) index: indexer::Tuning,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            segment_max_age: None,
            retain: None,
            archive_dir: None,
            index: indexer::Tuning::default(),
        }
    }
}

/// Where the writer's bytes go. A `File` opened for appending in
/// production; tests wrap it to make writes or fsyncs fail on demand.
pub(crate) trait Sink: Send + 'static {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes appended bytes durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes, durably; the next append goes
    /// there.
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
        self.seek(SeekFrom::Start(len))?;
        self.sync_data()
    }
}

/// Wraps each newly opened segment file, positioned at the end of its
/// data (tests inject faults through it).
pub(crate) type Wrap = dyn Fn(File) -> Box<dyn Sink> + Send + Sync;

/// The most a segment is allocated ahead of its data.
const PREALLOCATE: u64 = 4 << 20;

/// The size of each write of zeros ahead of the data: one page.
const ZERO_WRITE: usize = 4 << 10;

/// The segment file as the store writes it: zeros are written ahead of the
/// data, a few MiB at a time, and each group overwrites them. An
/// `fdatasync` of a file that grew must also commit its new size to the
/// file system's journal (and, on ext4 in `data=ordered` mode, write out
/// the newly allocated blocks of every other file first); one that only
/// overwrote allocated blocks flushes those blocks and nothing else. The
/// zeros are not part of the log: readers stop at the first NUL byte
/// ([`verify::next_line`]), and a sealed segment is cut to its data.
struct Preallocated {
    file: File,
    /// Where the next bytes go (the end of the data), once known.
    at: Option<u64>,
    /// The file's length: data and zeros.
    allocated: u64,
    chunk: u64,
}

/// How the store writes segment files unless a test says otherwise: ahead
/// of their data by up to 4 MiB (no more than a segment's size).
pub(crate) fn preallocating(opts: &FileOptions) -> impl Fn(File) -> Box<dyn Sink> + Send + Sync {
    let chunk = opts.segment_bytes.clamp(64 << 10, PREALLOCATE);
    move |file| Box::new(Preallocated::new(file, chunk))
}

impl Preallocated {
    fn new(file: File, chunk: u64) -> Self {
        Self {
            file,
            at: None,
            allocated: 0,
            chunk,
        }
    }

    /// Writes zeros from the allocated end to `target`, one page per write.
    /// The page cache sizes a new folio by the write that creates it: zeros
    /// written 64 KiB at a time become 64 KiB folios (Linux 6.18, ext4), and
    /// every group that then overwrites a few hundred bytes of one dirties
    /// and writes out the whole folio at its `fdatasync`: 66 KB to the disk
    /// per commit instead of 4.6 KB, measured with 568-byte groups.
    fn allocate(&mut self, target: u64) -> io::Result<()> {
        let zeros = [0u8; ZERO_WRITE];
        while self.allocated < target {
            let n = (target - self.allocated).min(zeros.len() as u64) as usize;
            let from = self.allocated;
            self.write_at(from, &zeros[..n])?;
            self.allocated += n as u64;
        }
        Ok(())
    }

    fn write_at(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(at))?;
        self.file.write_all(bytes)
    }
}

impl Sink for Preallocated {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let at = match self.at {
            Some(at) => at,
            None => {
                let at = self.file.stream_position()?;
                self.allocated = self.file.metadata()?.len().max(at);
                at
            }
        };
        let end = at + bytes.len() as u64;
        if end > self.allocated {
            let target = end.div_ceil(self.chunk) * self.chunk;
            if let Err(e) = self.allocate(target) {
                // A nearly full disk (or a file-size limit) still takes
                // the data itself while there is room for it.
                tracing::debug!(error = %e, "could not preallocate the access log's segment");
                self.allocated = self.file.metadata()?.len();
            }
        }
        self.write_at(at, bytes)?;
        self.at = Some(end);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_data()?;
        self.at = Some(len);
        self.allocated = len;
        Ok(())
    }
}

/// The segment being appended to.
struct Active {
    first: u64,
    sink: Box<dyn Sink>,
    /// Length of its committed part; bytes past it are not part of the log.
    len: u64,
    /// Bytes past `len` may be in the file (a failed group could not be cut
    /// off): the next append cuts them first.
    dirty: bool,
    /// When its first line was written.
    started_ms: i64,
}

/// A sealed segment still in the audit folder.
#[derive(Debug)]
struct Sealed {
    first: u64,
    last: u64,
    /// Time of its closing checkpoint.
    end_ms: i64,
}

/// The embedded access log. See the module documentation.
pub struct FileStore {
    dir: PathBuf,
    public_key: [u8; 32],
    opts: FileOptions,
    wrap: Arc<Wrap>,
    active: Option<Active>,
    /// For opening and retention; rows of new groups go through `indexer`.
    conn: Option<Connection>,
    /// Moves the rows of acknowledged groups into the index, in batches.
    indexer: Option<Indexer>,
    /// Those rows until they are there, for readers.
    pending: Pending,
    /// Seq of the last record of an acknowledged group; readers see no more.
    committed: Arc<AtomicU64>,
    sealed: VecDeque<Sealed>,
    reader: Arc<FileReader>,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.to_owned();
    move |source| AuditError::Io { path, source }
}

/// Why reading a segment for [`index_segment`] stopped early.
enum Stop {
    /// Past the range.
    Done,
    Failed(io::Error),
}

/// Whether `segs[i]` may hold a record in `(after, through]` or the copy of
/// the checkpoint at `after` or `through`: a segment's records end where
/// the next one starts (which opens with a copy of its final checkpoint).
fn segment_in_range(segs: &[SegmentFile], i: usize, after: u64, through: u64) -> bool {
    let next_first = segs.get(i + 1).map_or(u64::MAX, |s| s.first);
    next_first > after.saturating_add(1) && segs[i].first <= through.saturating_add(1)
}

/// Indexes into `conn`, in one transaction, the records of `seg` with a seq
/// in `(after, through]` and its checkpoints from `after` on; returns how
/// many records. Safe while the writer appends to the segment: those
/// records are acknowledged, hence complete, and a torn line ends the read.
fn index_segment(
    conn: &Connection,
    seg: &SegmentFile,
    after: u64,
    through: u64,
) -> Result<u64, ReadError<io::Error>> {
    let io = |source| ReadError::Io { line: 0, source };
    let file = File::open(&seg.path).map_err(io)?;
    let mut batch = Batch::begin(conn).map_err(io)?;
    let mut n = 0u64;
    let read = verify::read_entries(BufReader::new(file), 0, |offset, entry| {
        let at = Position {
            segment: seg.first,
            offset,
        };
        match &entry {
            Entry::Record { seq, .. } if *seq > through => Err(Stop::Done),
            Entry::Record { seq, record, .. } if *seq > after => {
                n += 1;
                batch.record(*seq, at, record).map_err(Stop::Failed)
            }
            Entry::Checkpoint(cp) if cp.seq >= after && cp.seq <= through => {
                batch.mark(cp.seq, at).map_err(Stop::Failed)
            }
            _ => Ok(()),
        }
    });
    let failed = match read {
        Ok(_)
        | Err(ReadError::Refused {
            error: Stop::Done, ..
        }) => None,
        Err(ReadError::Refused {
            error: Stop::Failed(error),
            line,
        }) => Some(ReadError::Refused { line, error }),
        Err(ReadError::Io { line, source }) => Some(ReadError::Io { line, source }),
        Err(ReadError::Malformed { line, what }) => Some(ReadError::Malformed { line, what }),
    };
    match failed {
        None => {
            batch.commit().map_err(io)?;
            Ok(n)
        }
        Some(e) => {
            batch.rollback();
            Err(e)
        }
    }
}

/// Indexes into `conn`, from the segments in the audit folder `dir` and
/// the archive, the records with a seq in `(after, through]` and the
/// checkpoints among them: the rows the indexer dropped from memory while
/// the index could not be written. One transaction per segment, in seq
/// order: the index's write lock is never held for more than one
/// segment's read, and what is committed never leaves a hole below
/// `indexed_seq`.
fn index_range(
    dir: &Path,
    archive: Option<&Path>,
    conn: &Connection,
    after: u64,
    through: u64,
) -> io::Result<()> {
    let segs = list_segments(dir, archive)?;
    for (i, seg) in segs.iter().enumerate() {
        if !segment_in_range(&segs, i, after, through) {
            continue;
        }
        index_segment(conn, seg, after, through).map_err(|e| match e {
            ReadError::Io { source, .. } | ReadError::Refused { error: source, .. } => source,
            ReadError::Malformed { line, what } => {
                io::Error::other(format!("{} line {line}: {what}", seg.path.display()))
            }
        })?;
    }
    Ok(())
}

impl FileStore {
    /// A store for the folder `dir`, whose checkpoints verify with
    /// `public_key` (a migration verifies the old file with it). Nothing is
    /// read before [`AuditStore::recover`].
    pub fn new(dir: &Path, public_key: [u8; 32], opts: FileOptions) -> Self {
        let wrap = preallocating(&opts);
        Self::with_wrap(dir, public_key, opts, Arc::new(wrap))
    }

    pub(crate) fn with_wrap(
        dir: &Path,
        public_key: [u8; 32],
        opts: FileOptions,
        wrap: Arc<Wrap>,
    ) -> Self {
        let committed = Arc::new(AtomicU64::new(0));
        let pending = Indexer::pending();
        let reader = Arc::new(FileReader {
            dir: dir.to_owned(),
            archive: opts.archive_dir.clone(),
            conn: Mutex::new(None),
            committed: Arc::clone(&committed),
            pending: pending.clone(),
        });
        Self {
            dir: dir.to_owned(),
            public_key,
            opts,
            wrap,
            active: None,
            conn: None,
            indexer: None,
            pending,
            committed,
            sealed: VecDeque::new(),
            reader,
        }
    }

    fn segments_dir(&self) -> PathBuf {
        self.dir.join(SEGMENTS_DIR)
    }

    fn broken(&self, failure: VerifyFailure) -> AuditError {
        AuditError::Broken {
            dir: self.dir.clone(),
            failure,
        }
    }

    /// Migrates a single-file log of earlier versions, once (see the module
    /// documentation). A crash part-way leaves either the old file alone
    /// (redone at the next open) or the segments complete.
    fn migrate(&self) -> Result<(), AuditError> {
        let old = self.dir.join(LOG_FILE);
        let seg_dir = self.segments_dir();
        let kept = self.dir.join(MIGRATED_FILE);
        if old.exists() && kept.exists() {
            // Never replace the copy a migration kept.
            return Err(AuditError::Io {
                path: old,
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{MIGRATED_FILE} is already there from an earlier migration; move one \
                         of the two out of the audit folder, then start again"
                    ),
                ),
            });
        }
        if seg_dir.exists() {
            if old.exists() {
                // A migration stopped after its segments were in place.
                fs::rename(&old, &kept).map_err(io_at(&old))?;
                files::sync_parent(&kept).map_err(io_at(&kept))?;
            }
            return Ok(());
        }
        if !old.exists() {
            return Ok(());
        }
        tracing::info!(
            path = %old.display(),
            "migrating the access log to segments: verifying it first"
        );
        let (before, complete_len) =
            verify::verify_legacy(&self.dir, &self.public_key).map_err(|f| self.broken(f))?;
        let tmp_dir = self.dir.join("segments.tmp");
        match fs::remove_dir_all(&tmp_dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&tmp_dir)(e)),
            _ => {}
        }
        fs::create_dir_all(&tmp_dir).map_err(io_at(&tmp_dir))?;
        let first = tmp_dir.join(segment_file_name(1));
        {
            let mut from = File::open(&old).map_err(io_at(&old))?;
            let mut to = File::create(&first).map_err(io_at(&first))?;
            // Only complete lines: a torn last line was never acknowledged.
            io::copy(&mut io::Read::take(&mut from, complete_len), &mut to)
                .and_then(|_| to.sync_all())
                .map_err(io_at(&first))?;
        }
        files::sync_parent(&first).map_err(io_at(&first))?;
        // Verify the copy where it is, before it replaces anything.
        let staged = self.dir.join("segments.verify");
        let _ = fs::remove_dir_all(&staged);
        fs::create_dir_all(&staged).map_err(io_at(&staged))?;
        let after = (|| {
            for name in [files::HEAD_FILE, files::PUB_FILE] {
                let from = self.dir.join(name);
                if from.exists() {
                    fs::copy(&from, staged.join(name))?;
                }
            }
            fs::rename(&tmp_dir, staged.join(SEGMENTS_DIR))?;
            Ok::<_, io::Error>(())
        })()
        .map_err(io_at(&staged))
        .and_then(|()| {
            verify::verify_log(VerifyScope {
                dir: &staged,
                archive_dir: None,
                public_key: Some(&self.public_key),
                segments: None,
            })
            .map_err(|f| self.broken(f))
        })?;
        if (after.records, after.last_seq) != (before.records, before.last_seq) {
            return Err(self.broken(VerifyFailure::new(format!(
                "the migrated copy holds {} records, the old log {}: the old log is kept as it was",
                after.records, before.records
            ))));
        }
        fs::rename(staged.join(SEGMENTS_DIR), &seg_dir).map_err(io_at(&seg_dir))?;
        files::sync_parent(&seg_dir).map_err(io_at(&seg_dir))?;
        let _ = fs::remove_dir_all(&staged);
        fs::rename(&old, &kept).map_err(io_at(&old))?;
        files::sync_parent(&kept).map_err(io_at(&kept))?;
        tracing::warn!(
            records = after.records,
            kept = %kept.display(),
            "migrated the access log to segments, verified before and after; the old file is kept \
             renamed (delete it once a copy is archived)"
        );
        Ok(())
    }

    /// Indexes the records after `indexed` in the sealed segments (`segs`,
    /// all but the newest), for an index that lags or was deleted.
    fn reindex_sealed(
        &self,
        conn: &Connection,
        segs: &[SegmentFile],
        indexed: u64,
    ) -> Result<(), AuditError> {
        for (i, seg) in segs.iter().enumerate() {
            if !segment_in_range(segs, i, indexed, u64::MAX) {
                continue;
            }
            tracing::info!(segment = %seg.path.display(), "indexing a sealed segment the index lacks");
            let n = index_segment(conn, seg, indexed, u64::MAX)
                .map_err(|e| self.read_error(&seg.path, e))?;
            tracing::info!(records = n, "indexed");
        }
        Ok(())
    }

    fn read_error(&self, path: &Path, e: ReadError<io::Error>) -> AuditError {
        match e {
            ReadError::Io { source, .. } | ReadError::Refused { error: source, .. } => {
                AuditError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
            ReadError::Malformed { line, what } => self.broken(VerifyFailure {
                seq: None,
                line,
                what: format!("malformed line: {what}"),
                file: Some(path.to_owned()),
            }),
        }
    }

    /// Opens a segment for writing after its first `len` bytes (its data;
    /// what follows is preallocated space, or nothing).
    fn open_sink(&self, path: &Path, len: u64) -> Result<Box<dyn Sink>, AuditError> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_at(path))?;
        file.seek(SeekFrom::Start(len)).map_err(io_at(path))?;
        Ok((self.wrap)(file))
    }

    /// Closes the active segment after its final checkpoint `cp` and opens
    /// the next, which starts with a copy of `cp`.
    fn rotate(&mut self, cp: &Checkpoint) -> Result<(), AuditError> {
        let first = cp.seq + 1;
        let path = self.segments_dir().join(segment_file_name(first));
        let mut opening = Vec::with_capacity(256);
        line::write_checkpoint(&mut opening, cp).map_err(io_at(&path))?;
        files::replace_file(&path, &opening, false)
            .and_then(|()| files::sync_parent(&path))
            .map_err(io_at(&path))?;
        let sink = self.open_sink(&path, opening.len() as u64)?;
        if let Some(indexer) = &self.indexer {
            indexer.add(vec![Row {
                subject: None,
                seq: cp.seq,
                at: Position {
                    segment: first,
                    offset: 0,
                },
            }]);
        }
        if let Some(mut old) = self.active.replace(Active {
            first,
            sink,
            len: opening.len() as u64,
            dirty: false,
            started_ms: cp.time_unix_ms,
        }) {
            // A sealed segment keeps its data only, not the zeros allocated
            // ahead of it (readers stop at them either way).
            if let Err(e) = old.sink.truncate(old.len) {
                tracing::warn!(error = %e, "could not cut the sealed segment's preallocated space");
            }
            self.sealed.push_back(Sealed {
                first: old.first,
                last: cp.seq,
                end_ms: cp.time_unix_ms,
            });
        }
        tracing::info!(segment = %path.display(), "sealed the access log's segment and opened the next");
        Ok(())
    }

    fn rotation_due(&self, now_unix_ms: i64) -> bool {
        let Some(active) = &self.active else {
            return false;
        };
        let has_records = self.committed.load(Ordering::Acquire) >= active.first;
        let full = active.len >= self.opts.segment_bytes;
        let old = self.opts.segment_max_age.is_some_and(|age| {
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            now_unix_ms.saturating_sub(active.started_ms) >= age_ms
        });
        has_records && (full || old)
    }

    fn try_append(&mut self, group: &[Entry<'_>]) -> io::Result<()> {
        let (Some(indexer), Some(active)) = (&self.indexer, self.active.as_mut()) else {
            return Err(io::Error::other("the access log was not opened"));
        };
        if active.dirty {
            active.sink.truncate(active.len)?;
            active.dirty = false;
        }
        let mut buf = Vec::with_capacity(group.len() * 512 + 256);
        // Index rows: the valid subjects of each record (a refused call's
        // made-up values are not indexed: nobody can list records under
        // them) and each checkpoint's position.
        let mut rows = Vec::with_capacity(group.len() * 2);
        let mut last_record = None;
        let mut last_cp = None;
        for entry in group {
            let at = Position {
                segment: active.first,
                offset: active.len + buf.len() as u64,
            };
            line::write_entry(&mut buf, entry)?;
            match entry {
                Entry::Record { seq, record, .. } => {
                    rows.extend(record.indexed_subjects().map(|s| Row {
                        subject: Some(s.into()),
                        seq: *seq,
                        at,
                    }));
                    last_record = Some(*seq);
                }
                Entry::Checkpoint(cp) => {
                    rows.push(Row {
                        subject: None,
                        seq: cp.seq,
                        at,
                    });
                    last_cp = Some(cp);
                }
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        let cut_back = |active: &mut Active| {
            if active.sink.truncate(active.len).is_ok() {
                active.dirty = false;
            }
        };
        active.dirty = true;
        if let Err(e) = active.sink.append(&buf).and_then(|()| active.sink.sync()) {
            cut_back(active);
            return Err(e);
        }
        if let Some(cp) = last_cp {
            // The head only ever names a checkpoint already durable in the
            // log. If it cannot be replaced the group fails (the old head
            // still matches the log once the group is cut off); once renamed,
            // a failed folder sync at worst leaves the previous head after a
            // crash, which verification accepts.
            if let Err(e) = files::write_head(&self.dir, cp) {
                cut_back(active);
                return Err(e);
            }
            if let Err(e) = files::sync_parent(&self.dir.join(files::HEAD_FILE)) {
                tracing::warn!(error = %e, "could not sync the audit folder after replacing audit.head");
            }
        }
        active.dirty = false;
        active.len += buf.len() as u64;
        indexer.add(rows);
        if let Some(seq) = last_record {
            self.committed.store(seq, Ordering::Release);
        }
        Ok(())
    }

    /// Moves or deletes sealed segments past retention. Each deletion is
    /// first attested by `attest` (a signed statement of the range deleted
    /// and the chain head at its end, written to `audit.retired`).
    pub fn expire(
        &mut self,
        now_unix_ms: i64,
        attest: &dyn Fn(u64, [u8; 32]) -> Checkpoint,
    ) -> Result<u64, AuditError> {
        let Some(retain) = self.opts.retain else {
            return Ok(0);
        };
        let retain_ms = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
        let mut moved = 0;
        while let Some(oldest) = self.sealed.front() {
            if now_unix_ms.saturating_sub(oldest.end_ms) < retain_ms {
                break;
            }
            let name = segment_file_name(oldest.first);
            let from = self.segments_dir().join(&name);
            match &self.opts.archive_dir {
                Some(archive) => {
                    fs::create_dir_all(archive).map_err(io_at(archive))?;
                    let to = archive.join(&name);
                    move_file(&from, &to)?;
                    tracing::info!(from = %from.display(), to = %to.display(), "archived a sealed segment past retention");
                }
                None => {
                    // The chain head at the segment's end: the checkpoint
                    // that opens the next segment.
                    let next = self.segments_dir().join(segment_file_name(oldest.last + 1));
                    let cp = first_checkpoint(&next)?.ok_or_else(|| {
                        self.broken(VerifyFailure {
                            file: Some(next.clone()),
                            ..VerifyFailure::new("the segment does not open with a checkpoint")
                        })
                    })?;
                    let statement = attest(oldest.last, cp.hash);
                    let mut text = Vec::with_capacity(256);
                    line::write_retired(&mut text, &statement).map_err(io_at(&from))?;
                    let path = self.dir.join(RETIRED_FILE);
                    files::replace_file(&path, &text, false)
                        .and_then(|()| files::sync_parent(&path))
                        .map_err(io_at(&path))?;
                    // Already gone when an earlier try stopped after it (at
                    // the index, say): that try is finished here.
                    match fs::remove_file(&from) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            return Err(io_at(&from)(e));
                        }
                        _ => {}
                    }
                    files::sync_parent(&from).map_err(io_at(&from))?;
                    if let Some(conn) = &self.conn {
                        index::forget_through(conn, oldest.last).map_err(io_at(&from))?;
                    }
                    tracing::warn!(
                        segment = %from.display(),
                        through = oldest.last,
                        "deleted a sealed segment past retention (no archive_dir); audit.retired attests it"
                    );
                }
            }
            self.sealed.pop_front();
            moved += 1;
        }
        Ok(moved)
    }
}

/// Renames `from` to `to`, or copies (fsynced) and removes it when they are
/// on different file systems.
fn move_file(from: &Path, to: &Path) -> Result<(), AuditError> {
    if fs::rename(from, to).is_err() {
        let mut tmp = to.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        fs::copy(from, &tmp)
            .and_then(|_| File::open(&tmp)?.sync_all())
            .and_then(|()| fs::rename(&tmp, to))
            .map_err(io_at(to))?;
        fs::remove_file(from).map_err(io_at(from))?;
    }
    files::sync_parent(to).map_err(io_at(to))?;
    files::sync_parent(from).map_err(io_at(from))
}

/// The first line of a segment, when there is one that parses.
fn first_entry(path: &Path) -> Result<Option<Entry<'static>>, AuditError> {
    let file = File::open(path).map_err(io_at(path))?;
    let bytes = match index::read_line_at(&file, 0) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    Ok(line::parse_entry(&bytes).ok().map(Entry::into_owned))
}

/// The time of a segment's first line, a checkpoint or a record (the very
/// first segment, and one made by migrating a single-file log, open with a
/// record): what its age is counted from.
fn first_line_time(path: &Path) -> Result<Option<i64>, AuditError> {
    Ok(first_entry(path)?.map(|entry| match entry {
        Entry::Checkpoint(cp) => cp.time_unix_ms,
        Entry::Record { record, .. } => record.time_unix_ms,
    }))
}

/// The first line of a segment, when it is a checkpoint.
fn first_checkpoint(path: &Path) -> Result<Option<Checkpoint>, AuditError> {
    Ok(match first_entry(path)? {
        Some(Entry::Checkpoint(cp)) => Some(cp),
        _ => None,
    })
}

impl AuditStore for FileStore {
    fn recover(&mut self) -> Result<Recovered, AuditError> {
        fs::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        self.migrate()?;
        let seg_dir = self.segments_dir();
        fs::create_dir_all(&seg_dir).map_err(io_at(&seg_dir))?;
        // Read before the segments: see `files::read_head`.
        let head =
            files::read_head(&self.dir).map_err(|what| self.broken(VerifyFailure::new(what)))?;
        let mut segs = list_segments(&self.dir, None).map_err(io_at(&seg_dir))?;
        if segs.is_empty() {
            let path = seg_dir.join(segment_file_name(1));
            files::replace_file(&path, b"", false)
                .and_then(|()| files::sync_parent(&path))
                .map_err(io_at(&path))?;
            segs = list_segments(&self.dir, None).map_err(io_at(&seg_dir))?;
        }
        let Some(active) = segs.pop() else {
            return Err(AuditError::Unavailable(format!(
                "no segment in {}",
                seg_dir.display()
            )));
        };
        let index_path = self.dir.join(index::INDEX_FILE);
        let conn = index::open_writer(&self.dir).map_err(io_at(&index_path))?;
        let indexed = index::indexed_seq(&conn).map_err(io_at(&index_path))?;
        if indexed + 1 < active.first {
            // The sealed segments the index lacks may have been archived
            // by retention: read them there too.
            let mut sealed = match &self.opts.archive_dir {
                Some(archive) => list_segments(&self.dir, Some(archive)).map_err(io_at(archive))?,
                None => segs.clone(),
            };
            sealed.retain(|s| s.first < active.first);
            self.reindex_sealed(&conn, &sealed, indexed)?;
        }

        // Read the active segment from its last checkpoint the index knows.
        let file = OpenOptions::new()
            .read(true)
            .open(&active.path)
            .map_err(io_at(&active.path))?;
        let start = match index::last_mark_in(&conn, active.first).map_err(io_at(&index_path))? {
            Some((seq, offset)) => match index::read_line_at(&file, offset)
                .ok()
                .and_then(|bytes| line::parse_entry(&bytes).ok())
            {
                Some(Entry::Checkpoint(cp)) if cp.seq == seq => offset,
                _ => 0,
            },
            None => 0,
        };
        let mut reader = BufReader::new(&file);
        reader
            .seek(SeekFrom::Start(start))
            .map_err(io_at(&active.path))?;
        let mut tail: Vec<Entry<'static>> = Vec::new();
        let mut last_seq = active.first.saturating_sub(1);
        let mut started_ms = None;
        let mut batch = Batch::begin(&conn).map_err(io_at(&index_path))?;
        let read = verify::read_entries(reader, start, |offset, entry| {
            let at = Position {
                segment: active.first,
                offset,
            };
            match &entry {
                Entry::Record { seq, record, .. } => {
                    if *seq > indexed {
                        batch.record(*seq, at, record)?;
                    }
                    last_seq = *seq;
                    if offset == 0 {
                        started_ms = Some(record.time_unix_ms);
                    }
                }
                Entry::Checkpoint(cp) => {
                    if cp.seq >= indexed {
                        batch.mark(cp.seq, at)?;
                    }
                    if offset == 0 {
                        started_ms = Some(cp.time_unix_ms);
                    }
                    last_seq = last_seq.max(cp.seq);
                    // Only what follows the last checkpoint needs checking.
                    tail.clear();
                }
            }
            tail.push(entry);
            Ok(())
        });
        let end = match read {
            Ok(end) => {
                batch.commit().map_err(io_at(&index_path))?;
                end
            }
            Err(e) => {
                batch.rollback();
                return Err(self.read_error(&active.path, e));
            }
        };
        if end.torn_tail_bytes > 0 {
            tracing::warn!(
                path = %active.path.display(),
                bytes = end.torn_tail_bytes,
                after_record = last_seq,
                "removing a torn final line left by a crash (it was never acknowledged)"
            );
            OpenOptions::new()
                .write(true)
                .open(&active.path)
                .and_then(|f| {
                    f.set_len(end.complete_len)?;
                    f.sync_data()
                })
                .map_err(io_at(&active.path))?;
        }
        if indexed > last_seq {
            index::forget_after(&conn, last_seq).map_err(io_at(&index_path))?;
        }
        if start > 0 && started_ms.is_none() {
            started_ms = first_line_time(&active.path)?;
        }

        // Sealed segments still here, for retention: each ends where the next
        // begins, at the checkpoint the next one opens with.
        let mut sealed = VecDeque::with_capacity(segs.len());
        let mut nexts = segs.iter().skip(1).chain(std::iter::once(&active));
        for seg in &segs {
            let Some(next) = nexts.next() else { break };
            let end_ms = first_checkpoint(&next.path)?.map_or(0, |cp| cp.time_unix_ms);
            sealed.push_back(Sealed {
                first: seg.first,
                last: next.first - 1,
                end_ms,
            });
        }
        self.sealed = sealed;

        let sealed_records = match tail.first() {
            Some(Entry::Checkpoint(cp)) => cp.seq,
            _ => 0,
        };
        self.committed.store(last_seq, Ordering::Release);
        let sink = self.open_sink(&active.path, end.complete_len)?;
        self.active = Some(Active {
            first: active.first,
            sink,
            len: end.complete_len,
            dirty: false,
            started_ms: started_ms.unwrap_or_else(super::writer::now_unix_ms),
        });
        self.conn = Some(conn);
        // The index now holds every row up to `last_seq`.
        let (dir, archive) = (self.dir.clone(), self.opts.archive_dir.clone());
        self.indexer = Some(
            Indexer::start(
                &self.dir,
                last_seq,
                &self.pending,
                self.opts.index,
                Box::new(move |conn, after, through| {
                    index_range(&dir, archive.as_deref(), conn, after, through)
                }),
            )
            .map_err(io_at(&index_path))?,
        );
        Ok(Recovered {
            head,
            tail,
            sealed_records,
        })
    }

    fn append(&mut self, group: &[Entry<'_>]) -> io::Result<()> {
        self.try_append(group)?;
        if let Some(Entry::Checkpoint(cp)) = group.last() {
            if self.rotation_due(cp.time_unix_ms) {
                if let Err(e) = self.rotate(cp) {
                    // The group is durable; sealing waits for the next checkpoint.
                    tracing::error!(error = %e, "could not open the next segment of the access log");
                }
            }
        }
        Ok(())
    }

    fn keep_genesis(&mut self, genesis: &Checkpoint) -> io::Result<()> {
        files::write_head(&self.dir, genesis)?;
        files::sync_parent(&self.dir.join(files::HEAD_FILE))
    }

    fn wants_checkpoint(&self, now_unix_ms: i64) -> bool {
        self.rotation_due(now_unix_ms)
    }

    fn expire(
        &mut self,
        now_unix_ms: i64,
        attest: &dyn Fn(u64, [u8; 32]) -> Checkpoint,
    ) -> Result<u64, AuditError> {
        FileStore::expire(self, now_unix_ms, attest)
    }

    /// A stopped log's files hold its data only: the active segment is cut
    /// to its last acknowledged line (no zeros ahead of it). After a crash
    /// readers stop at the zeros instead.
    fn close(&mut self) {
        if let Some(active) = &mut self.active {
            if let Err(e) = active.sink.truncate(active.len) {
                tracing::warn!(error = %e, "could not cut the active segment to its data at close");
            }
        }
    }

    fn reader(&self) -> Arc<dyn AuditReader> {
        Arc::clone(&self.reader) as Arc<dyn AuditReader>
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

/// The read side of the file log: the index for positions, positioned reads
/// of the segments (in the audit folder or the archive) for records.
pub struct FileReader {
    dir: PathBuf,
    archive: Option<PathBuf>,
    /// Opened on first use (the writer creates the file).
    conn: Mutex<Option<Connection>>,
    committed: Arc<AtomicU64>,
    /// Rows of acknowledged groups not yet in the index.
    pending: Pending,
}

impl FileReader {
    /// The signed statement of the records deleted under retention, if any.
    fn retired(&self) -> Result<Option<Checkpoint>, AuditError> {
        read_retired(&self.dir).map_err(|what| AuditError::Corrupt {
            path: self.dir.join(RETIRED_FILE),
            what,
        })
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> io::Result<T>) -> Result<T, AuditError> {
        let path = self.dir.join(index::INDEX_FILE);
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(index::open_reader(&self.dir).map_err(io_at(&path))?);
        }
        match guard.as_ref() {
            Some(conn) => f(conn).map_err(io_at(&path)),
            None => Err(AuditError::Unavailable("the index is not open".into())),
        }
    }

    fn corrupt(&self, segment: u64, what: String) -> AuditError {
        AuditError::Corrupt {
            path: self.dir.join(SEGMENTS_DIR).join(segment_file_name(segment)),
            what,
        }
    }
}

impl AuditReader for FileReader {
    fn subject_page(
        &self,
        subject: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubjectRow>, AuditError> {
        let before = match before {
            None => u64::MAX,
            Some(cursor) => cursor.parse::<u64>().map_err(|_| {
                AuditError::Options(format!("{cursor:?} is not a cursor of this access log"))
            })?,
        };
        let last = self.committed.load(Ordering::Acquire);
        // The newest rows may not be in the index yet; every row above what
        // it holds is still pending, so the two never overlap.
        let (mut rows, indexed) =
            self.pending
                .page(subject, before, last, limit)
                .map_err(|behind| {
                    AuditError::Unavailable(format!(
                    "the access log's index lacks records {}..={} (it could not be written; they \
                     are being indexed again from the log), so a listing would be incomplete",
                    behind.indexed + 1,
                    behind.through
                ))
                })?;
        if rows.len() < limit {
            let more = limit - rows.len();
            let older =
                self.with_conn(|c| index::page(c, subject, before, last.min(indexed), more))?;
            rows.extend(older);
        }
        let mut files: HashMap<u64, File> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for (seq, at) in rows {
            let file = match files.entry(at.segment) {
                std::collections::hash_map::Entry::Occupied(f) => f.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(
                    open_segment(&self.dir, self.archive.as_deref(), at.segment).map_err(
                        |source| AuditError::Io {
                            path: self
                                .dir
                                .join(SEGMENTS_DIR)
                                .join(segment_file_name(at.segment)),
                            source,
                        },
                    )?,
                ),
            };
            let bytes = index::read_line_at(file, at.offset).map_err(|source| AuditError::Io {
                path: self
                    .dir
                    .join(SEGMENTS_DIR)
                    .join(segment_file_name(at.segment)),
                source,
            })?;
            match line::parse_entry(&bytes) {
                Ok(Entry::Record {
                    seq: found, record, ..
                }) if found == seq => out.push(SubjectRow {
                    cursor: seq.to_string(),
                    record: record.into_owned(),
                }),
                Ok(_) => {
                    return Err(self.corrupt(
                        at.segment,
                        format!("the line at offset {} is not record {seq}", at.offset),
                    ))
                }
                Err(what) => {
                    return Err(self.corrupt(
                        at.segment,
                        format!("record {seq} at offset {}: {what}", at.offset),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn records_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, AuditError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.walk_after(after_seq, |seq, _, record| {
            out.push((seq, record.into_owned()));
            out.len() < limit
        })?;
        Ok(out)
    }

    fn chain_hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>, AuditError> {
        if seq == 0 {
            return Ok(Some(super::chain::GENESIS));
        }
        // Records deleted under retention: the statement keeps the hash of
        // the last one, and nothing of those before it.
        if let Some(retired) = self.retired()? {
            if seq <= retired.seq {
                return Ok((seq == retired.seq).then_some(retired.hash));
            }
        }
        let mut found = None;
        self.walk_after(seq - 1, |at, hash, _| {
            if at == seq {
                found = Some(hash);
            }
            false
        })?;
        Ok(found)
    }

    fn retired_through(&self) -> Result<Option<u64>, AuditError> {
        Ok(self.retired()?.map(|retired| retired.seq))
    }
}

impl FileReader {
    /// Hands the committed records with seq strictly above `after_seq`, oldest
    /// first, with their chain hashes, to `each` until it returns false: from
    /// the index's checkpoint at or before `after_seq`, through the segments
    /// (the archive's too).
    fn walk_after(
        &self,
        after_seq: u64,
        mut each: impl FnMut(u64, [u8; 32], std::borrow::Cow<'static, AuditRecord>) -> bool,
    ) -> Result<(), AuditError> {
        let last = self.committed.load(Ordering::Acquire);
        if after_seq >= last {
            return Ok(());
        }
        let mark = match self.pending.mark_at_or_before(after_seq) {
            Some(mark) => Some(mark),
            None => self.with_conn(|c| index::mark_at_or_before(c, after_seq))?,
        };
        let (mut segment, mut offset) = match mark {
            Some((_, at)) => (at.segment, at.offset),
            None => {
                // No checkpoint before it: from the oldest segment there is.
                let segs = list_segments(&self.dir, self.archive.as_deref()).map_err(|source| {
                    AuditError::Io {
                        path: self.dir.clone(),
                        source,
                    }
                })?;
                match segs.first() {
                    Some(s) => (s.first, 0),
                    None => return Ok(()),
                }
            }
        };
        let mut seen = after_seq;
        let mut handed = false;
        loop {
            let file = match open_segment(&self.dir, self.archive.as_deref(), segment) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound && handed => return Ok(()),
                Err(source) => {
                    return Err(AuditError::Io {
                        path: self.dir.join(SEGMENTS_DIR).join(segment_file_name(segment)),
                        source,
                    })
                }
            };
            let mut reader = BufReader::new(file);
            reader
                .seek(SeekFrom::Start(offset))
                .map_err(|source| AuditError::Io {
                    path: self.dir.join(SEGMENTS_DIR).join(segment_file_name(segment)),
                    source,
                })?;
            let mut last_in_file = segment.saturating_sub(1);
            let read = verify::read_entries(reader, offset, |_, entry| {
                if let Entry::Record { seq, hash, record } = entry {
                    last_in_file = seq;
                    if seq > seen && seq <= last {
                        seen = seq;
                        handed = true;
                        if !each(seq, hash, record) {
                            return Err(io::Error::other("enough"));
                        }
                    }
                    if seq >= last {
                        return Err(io::Error::other("enough"));
                    }
                }
                Ok(())
            });
            match read {
                Ok(_) => {}
                Err(ReadError::Refused { .. }) => return Ok(()),
                Err(e) => return Err(self.corrupt(segment, format!("{e:?}"))),
            }
            if seen >= last || last_in_file < segment {
                return Ok(());
            }
            segment = last_in_file + 1;
            offset = 0;
        }
    }
}
