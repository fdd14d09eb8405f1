//! Checking a log from its files alone, with only the public key, and
//! reading its records back for an auditor or a citizen.
//!
//! [`ChainCheck`] is the one piece of code that decides whether a run of
//! entries is a valid piece of the chain: [`verify_log`] streams every
//! segment (the archive's too) through it, and `AuditLog::open` passes the
//! entries after the last checkpoint through it, so the gateway refuses to
//! start on exactly what an auditor would reject. [`export`] and
//! [`for_each_record`] read segments and archive alike.

use std::{
    fmt, fs,
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use super::{
    chain::{self, Checkpoint, GENESIS},
    files::{self, HEAD_FILE, LOG_FILE, PUB_FILE},
    line,
    record::AuditRecord,
    segments::{self, SegmentFile},
    store::Entry,
    AuditError,
};

/// What a log that verifies contains.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Checkpoint lines checked (each segment's opening copy included).
    pub checkpoints: u64,
    /// Seq and time of the last checkpoint line.
    pub last_checkpoint: Option<(u64, i64)>,
    /// Records after the last checkpoint, not yet sealed by one: normal on
    /// a running gateway between checkpoints; after a crash, the gateway
    /// seals them when it next opens the log.
    pub unsealed_tail: u64,
    /// Bytes of a final line without its newline: a write in progress, or
    /// one a crash cut short (never acknowledged; the gateway removes them
    /// when it next opens the log).
    pub torn_tail_bytes: u64,
    /// Segment files checked, and how many of them were in the archive.
    pub segments: u64,
    pub archived_segments: u64,
    /// Records 1 to this seq were deleted under the retention rule, as a
    /// signed statement (`audit.retired`) attests.
    pub retired_through: Option<u64>,
    /// Seq of the last record checked.
    pub last_seq: u64,
    /// Entries of the subject index (`index.sqlite`, behind
    /// `ListAccessRecords`) checked against the records: each record's
    /// subjects point at its line, and (verifying the whole log) no entry
    /// names anything else. `None` when there is no index (it is rebuilt
    /// from the segments at the next start).
    pub index_entries: Option<u64>,
    /// The last record the index covers (it follows the log by up to a
    /// second or a batch).
    pub indexed_seq: u64,
}

/// The subject index checked against the records as verification reads
/// them: a citizen's listing comes from it, so an entry deleted or moved
/// would hide a read from the citizen while the chain still verifies. Its
/// failure is reported only once the records themselves verify: a changed
/// record is the finding then, not the index that no longer matches it.
struct IndexCheck {
    /// `None` when the index could not be read (`failure` says why).
    conn: Option<rusqlite::Connection>,
    /// Entries are checked for records up to this seq (the index lags).
    through: u64,
    checked: u64,
    failure: Option<VerifyFailure>,
}

impl IndexCheck {
    /// The index of the log in `dir`, read in one snapshot taken before
    /// the segments are listed (the index only follows them, so the
    /// segments read hold at least what it names); `None` when there is
    /// none. An index that cannot be read is a failure reported, like any
    /// other of the index's, once the records verify.
    fn open(dir: &Path) -> Option<IndexCheck> {
        if !dir.join(super::index::INDEX_FILE).exists() {
            return None;
        }
        let snapshot = super::index::open_reader(dir).and_then(|conn| {
            conn.execute_batch("BEGIN").map_err(std::io::Error::other)?;
            let through = super::index::indexed_seq(&conn)?;
            Ok((conn, through))
        });
        Some(match snapshot {
            Ok((conn, through)) => IndexCheck {
                conn: Some(conn),
                through,
                checked: 0,
                failure: None,
            },
            Err(e) => IndexCheck {
                conn: None,
                through: 0,
                checked: 0,
                failure: Some(VerifyFailure::new(format!(
                    "cannot read the subject index ({}): {e}; delete it to have it rebuilt \
                     from the segments at the next start",
                    super::index::INDEX_FILE
                ))),
            },
        })
    }

    /// Checks the entries of the record `seq` at `offset` in `seg`; the
    /// first mismatch is kept for [`IndexCheck::finish`].
    fn record(&mut self, seq: u64, seg: &SegmentFile, offset: u64, record: &AuditRecord) {
        if seq > self.through || self.failure.is_some() {
            return;
        }
        if let Err((seq, what)) = self.entries(seq, seg.first, offset, record) {
            self.failure = Some(VerifyFailure {
                seq,
                line: 0,
                what,
                file: Some(seg.path.clone()),
            });
        }
    }

    fn entries(
        &mut self,
        seq: u64,
        segment: u64,
        offset: u64,
        record: &AuditRecord,
    ) -> Result<(), (Option<u64>, String)> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        for subject in record.indexed_subjects() {
            let found: Option<(i64, i64)> = conn
                .prepare_cached(
                    "SELECT segment, offset FROM subjects WHERE subject = ?1 AND seq = ?2",
                )
                .and_then(|mut stmt| {
                    rusqlite::OptionalExtension::optional(
                        stmt.query_row(rusqlite::params![subject, seq as i64], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        }),
                    )
                })
                .map_err(|e| {
                    (
                        Some(seq),
                        format!("cannot read {}: {e}", super::index::INDEX_FILE),
                    )
                })?;
            let tampered = match found {
                Some((s, o)) if (s, o) == (segment as i64, offset as i64) => {
                    self.checked += 1;
                    continue;
                }
                Some(_) => "points elsewhere",
                None => "lacks it",
            };
            return Err((
                Some(seq),
                format!(
                    "the subject index ({}) {tampered} for {subject}: ListAccessRecords would not \
                     show this read to the citizen. The records are intact; the index does not \
                     match them: it was changed, or built by a version before 2026-12-01 that \
                     left archived segments out of a rebuild. Delete it (it is rebuilt from the \
                     segments and the archive at the next start)",
                    super::index::INDEX_FILE
                ),
            ));
        }
        Ok(())
    }

    /// Once the records verify: the first mismatch found, then (`whole`:
    /// verifying the whole log) no entry beyond those checked, for records
    /// after `retired` (deleted under retention) up to `last`, the last
    /// record read (an index copied after the segments may name later ones).
    fn finish(&mut self, whole: bool, retired: u64, last: u64) -> Result<(), VerifyFailure> {
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        if whole {
            self.no_others(retired, last)?;
        }
        Ok(())
    }

    fn no_others(&self, retired: u64, last: u64) -> Result<(), VerifyFailure> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let entries: i64 = conn
            .query_row(
                "SELECT count(*) FROM subjects WHERE seq > ?1 AND seq <= ?2",
                rusqlite::params![retired as i64, self.through.min(last) as i64],
                |r| r.get(0),
            )
            .map_err(|e| {
                VerifyFailure::new(format!("cannot read {}: {e}", super::index::INDEX_FILE))
            })?;
        let extra = u64::try_from(entries)
            .unwrap_or(0)
            .saturating_sub(self.checked);
        if extra > 0 {
            return Err(VerifyFailure::new(format!(
                "the subject index ({}) has {extra} entries that name no record's subject: \
                 ListAccessRecords would show a citizen reads that are not in the log. The \
                 records are intact; the index does not match them: delete it (it is rebuilt \
                 from the segments and the archive at the next start)",
                super::index::INDEX_FILE
            )));
        }
        Ok(())
    }
}

/// Where and why a log fails verification. `line` is 1-based within `file`
/// (0 when the failure is not about one line); `seq` is the record concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    pub seq: Option<u64>,
    pub line: usize,
    pub what: String,
    /// The segment file concerned, when there is one.
    pub file: Option<PathBuf>,
}

impl VerifyFailure {
    pub(crate) fn new(what: impl Into<String>) -> Self {
        Self {
            seq: None,
            line: 0,
            what: what.into(),
            file: None,
        }
    }
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        match (self.line, self.seq) {
            (0, Some(seq)) => write!(f, "record {seq}: {}", self.what),
            (0, None) => write!(f, "{}", self.what),
            (line, Some(seq)) => write!(f, "line {line} (record {seq}): {}", self.what),
            (line, None) => write!(f, "line {line}: {}", self.what),
        }
    }
}

impl std::error::Error for VerifyFailure {}

/// The running check of a chain: fed entries in order from a known point
/// (seq and chain hash), it recomputes every record's hash and checks every
/// checkpoint's signature and place. Memory is constant.
#[derive(Debug)]
pub(crate) struct ChainCheck<'k> {
    key: &'k [u8; 32],
    /// Seq of the last record (or of the starting point).
    pub seq: u64,
    /// The chain hash there.
    pub hash: [u8; 32],
    pub records: u64,
    pub checkpoints: u64,
    pub last_checkpoint: Option<Checkpoint>,
    /// The last entry was a checkpoint (the chain is sealed so far).
    pub sealed: bool,
}

impl<'k> ChainCheck<'k> {
    /// A check starting after record `seq`, whose chain hash is `hash`
    /// (0 and [`GENESIS`] for the start of the log).
    pub fn new(key: &'k [u8; 32], seq: u64, hash: [u8; 32]) -> Self {
        Self {
            key,
            seq,
            hash,
            records: 0,
            checkpoints: 0,
            last_checkpoint: None,
            sealed: seq == 0,
        }
    }

    /// A check starting at a signed checkpoint (a segment's opening line, a
    /// store's last checkpoint): its signature is checked, then it counts as
    /// the first entry.
    pub fn from_checkpoint(
        key: &'k [u8; 32],
        cp: &Checkpoint,
    ) -> Result<Self, (Option<u64>, String)> {
        let mut check = Self::new(key, cp.seq, cp.hash);
        check.push(&Entry::Checkpoint(cp.clone()))?;
        Ok(check)
    }

    /// Checks the next entry. The error names the record concerned, if any,
    /// and what is wrong.
    pub fn push(&mut self, entry: &Entry<'_>) -> Result<(), (Option<u64>, String)> {
        let expected = self.seq + 1;
        match entry {
            Entry::Record { seq, hash, record } => {
                let seq = *seq;
                if seq > expected {
                    return Err((
                        Some(expected),
                        format!(
                            "record {expected} is missing (found record {seq} in its place): \
                             records were removed or reordered"
                        ),
                    ));
                }
                if seq < expected {
                    return Err((
                        Some(expected),
                        format!(
                            "record {seq} appears again where record {expected} should be: \
                             records were duplicated or reordered"
                        ),
                    ));
                }
                if chain::hash(&self.hash, seq, record) != *hash {
                    return Err((
                        Some(seq),
                        "hash does not match: the record was changed, \
                         or a record before it was removed or reordered"
                            .into(),
                    ));
                }
                self.seq = seq;
                self.hash = *hash;
                self.records += 1;
                self.sealed = false;
            }
            Entry::Checkpoint(cp) => {
                let at = cp.seq;
                if !cp.verify(self.key) {
                    return Err((
                        None,
                        format!(
                            "checkpoint at record {at}: signature does not verify: the \
                             checkpoint was forged or altered, or the key is not this log's"
                        ),
                    ));
                }
                if at > self.seq {
                    return Err((
                        None,
                        format!(
                            "checkpoint at record {at} follows record {}: records were removed",
                            self.seq
                        ),
                    ));
                }
                if at < self.seq {
                    return Err((
                        None,
                        format!(
                            "checkpoint at record {at} follows record {}: lines were reordered",
                            self.seq
                        ),
                    ));
                }
                if cp.hash != self.hash {
                    return Err((
                        None,
                        format!(
                            "checkpoint at record {at}: its hash is not the chain head there: \
                             records up to {at} were rewritten"
                        ),
                    ));
                }
                self.checkpoints += 1;
                self.last_checkpoint = Some(cp.clone());
                self.sealed = true;
            }
        }
        Ok(())
    }

    /// Records after the last checkpoint.
    pub fn unsealed(&self) -> u64 {
        self.seq - self.last_checkpoint.as_ref().map_or(0, |cp| cp.seq)
    }
}

/// The end of a file's complete lines.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FileEnd {
    /// Complete lines read.
    pub lines: usize,
    /// Length of the complete lines: where the next line goes.
    pub complete_len: u64,
    /// Bytes of a final line without its newline.
    pub torn_tail_bytes: u64,
}

/// Why reading entries stopped short.
#[derive(Debug)]
pub(crate) enum ReadError<E> {
    Io {
        line: usize,
        source: io::Error,
    },
    /// A line that is not a record or checkpoint line.
    Malformed {
        line: usize,
        what: String,
    },
    /// What the callback refused.
    Refused {
        line: usize,
        error: E,
    },
}

/// What [`next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line ending in its newline, in the buffer.
    Complete,
    /// Bytes without a newline before the end of the data (in the buffer):
    /// a write a crash cut short.
    Torn,
    /// The end of the file, or of its data: a segment is preallocated with
    /// zeros past its last line (see `segments`), and no line starts with a
    /// NUL byte.
    End,
}

/// Reads the next line of `reader` into `buf` (cleared first). The data
/// ends at the end of the file or at a NUL byte, whatever follows it:
/// preallocated space is never read further than its first byte.
pub(crate) fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::End
            } else {
                Line::Torn
            });
        }
        match available.iter().position(|&b| b == b'\n' || b == 0) {
            Some(i) if available[i] == b'\n' => {
                buf.extend_from_slice(&available[..=i]);
                reader.consume(i + 1);
                return Ok(Line::Complete);
            }
            Some(i) => {
                buf.extend_from_slice(&available[..i]);
                reader.consume(i);
                return Ok(if buf.is_empty() {
                    Line::End
                } else {
                    Line::Torn
                });
            }
            None => {
                let n = available.len();
                buf.extend_from_slice(available);
                reader.consume(n);
            }
        }
    }
}

/// Reads the complete lines of `reader` (starting at byte `start` of its
/// file) as entries, handing each with its byte offset to `each`. A final
/// line without its newline is counted, not read.
pub(crate) fn read_entries<E>(
    mut reader: impl BufRead,
    start: u64,
    mut each: impl FnMut(u64, Entry<'static>) -> Result<(), E>,
) -> Result<FileEnd, ReadError<E>> {
    let mut end = FileEnd {
        complete_len: start,
        ..FileEnd::default()
    };
    let mut buf = Vec::with_capacity(1024);
    loop {
        let n = match next_line(&mut reader, &mut buf).map_err(|source| ReadError::Io {
            line: end.lines + 1,
            source,
        })? {
            Line::End => return Ok(end),
            Line::Torn => {
                end.torn_tail_bytes = buf.len() as u64;
                return Ok(end);
            }
            Line::Complete => buf.len(),
        };
        let lineno = end.lines + 1;
        let entry = line::parse_entry(&buf[..n - 1])
            .map_err(|what| ReadError::Malformed { line: lineno, what })?;
        each(end.complete_len, entry).map_err(|error| ReadError::Refused {
            line: lineno,
            error,
        })?;
        end.lines = lineno;
        end.complete_len += n as u64;
    }
}

/// What to verify.
#[derive(Clone, Copy, Debug)]
pub struct VerifyScope<'a> {
    /// The audit folder (`[audit] dir`).
    pub dir: &'a Path,
    /// Where sealed segments past retention were moved (`[audit] archive_dir`).
    pub archive_dir: Option<&'a Path>,
    /// The key to check signatures with; `None`: `audit.pub` in `dir`.
    pub public_key: Option<&'a [u8; 32]>,
    /// Only the segments starting at these seqs, each from its own signed
    /// opening checkpoint, and the links between those that are adjacent.
    /// `None`: the whole log, from record 1 (or the retired range's end)
    /// to `audit.head`.
    pub segments: Option<&'a [u64]>,
}

/// Walks the whole log in `dir` (no archive) and checks it with
/// `public_key`, or with the key in `audit.pub` beside it when `None` is
/// given. See [`verify_log`].
pub fn verify_file(
    dir: &Path,
    public_key: Option<&[u8; 32]>,
) -> Result<VerifyReport, VerifyFailure> {
    verify_log(VerifyScope {
        dir,
        archive_dir: None,
        public_key,
        segments: None,
    })
}

fn load_key(dir: &Path, given: Option<&[u8; 32]>) -> Result<[u8; 32], VerifyFailure> {
    match given {
        Some(key) => Ok(*key),
        None => files::read_public_key(dir)
            .map_err(|e| VerifyFailure::new(e.to_string()))?
            .ok_or_else(|| {
                VerifyFailure::new(format!(
                    "no public key given and {} has no {PUB_FILE}",
                    dir.display()
                ))
            }),
    }
}

/// Checks the log, streaming (memory does not grow with it).
///
/// Checked: every line of every segment is a well-formed record or
/// checkpoint line; seqs run without gap or repeat, across segments too
/// (each segment after the first opens with a copy of the signed checkpoint
/// that closed the one before it, and is named after its first seq); every
/// record's hash is recomputed from its content and the hash before it;
/// every checkpoint is signed by the key, sits right after the record it
/// seals and carries the chain head there; every segment but the last ends
/// in a checkpoint; the log starts at record 1, or right after a signed
/// retirement statement (`audit.retired`) whose chain head matches; and the
/// signed checkpoint in `audit.head` is one of the log's checkpoints, so
/// lines or segments cut off the end are detected. A folder still in the
/// single-file format of earlier versions (`audit.log`, no `segments/`) is
/// checked as such.
pub fn verify_log(scope: VerifyScope<'_>) -> Result<VerifyReport, VerifyFailure> {
    verify_log_observing(scope, &mut |_, _| {})
}

/// [`verify_log`], handing `observe` the seq and chain hash of every record
/// it has checked (and of the retirement statement, whose hash is signed), in
/// chain order: what checking witnesses' countersignatures against the log
/// needs, read in the same pass.
pub fn verify_log_observing(
    scope: VerifyScope<'_>,
    observe: &mut dyn FnMut(u64, &[u8; 32]),
) -> Result<VerifyReport, VerifyFailure> {
    let dir = scope.dir;
    let key = load_key(dir, scope.public_key)?;
    if !dir.join(segments::SEGMENTS_DIR).exists() && dir.join(LOG_FILE).exists() {
        return verify_legacy(dir, &key).map(|(report, _)| report);
    }
    // The index's snapshot first: see `IndexCheck::open`.
    let mut index = IndexCheck::open(dir);
    // Read before the segments: see `files::read_head`.
    let head = files::read_head(dir).map_err(VerifyFailure::new)?;
    let retired = segments::read_retired(dir).map_err(VerifyFailure::new)?;
    if let Some(r) = &retired {
        if !r.verify_retired(&key) {
            return Err(VerifyFailure::new(format!(
                "the statement in {} does not verify with the public key: it was forged or \
                 altered, or the key is not this log's",
                segments::RETIRED_FILE
            )));
        }
    }
    let all = segments::list_segments(dir, scope.archive_dir).map_err(|e| {
        VerifyFailure::new(format!(
            "cannot list the segments of {}: {e}",
            dir.display()
        ))
    })?;
    for pair in all.windows(2) {
        if pair[0].first == pair[1].first {
            return Err(VerifyFailure::new(format!(
                "the segment starting at record {} is both in {} and in {}: keep one",
                pair[0].first,
                pair[0].path.display(),
                pair[1].path.display()
            )));
        }
    }
    let whole = scope.segments.is_none();
    let chosen: Vec<&SegmentFile> = match scope.segments {
        None => all.iter().collect(),
        Some(wanted) => {
            let mut chosen = Vec::new();
            for first in wanted {
                match all.iter().find(|s| s.first == *first) {
                    Some(s) => chosen.push(s),
                    None => {
                        return Err(VerifyFailure::new(format!(
                            "there is no segment starting at record {first} ({})",
                            segments::segment_file_name(*first)
                        )))
                    }
                }
            }
            chosen.sort_by_key(|s| s.first);
            chosen.dedup_by_key(|s| s.first);
            chosen
        }
    };

    let mut report = VerifyReport {
        retired_through: retired.as_ref().map(|r| r.seq),
        ..VerifyReport::default()
    };
    if let Some(r) = &retired {
        observe(r.seq, &r.hash);
    }
    // The whole log starts at record 1, or right after the retired range.
    let mut check: Option<ChainCheck<'_>> = whole.then(|| match &retired {
        Some(r) => ChainCheck::new(&key, r.seq, r.hash),
        None => ChainCheck::new(&key, 0, GENESIS),
    });
    let mut head_seen = false;
    // The last segment read and its complete lines, to place a failure at its end.
    let mut end_of_log: Option<(PathBuf, usize)> = None;
    // Records and checkpoints of the checks a subset left behind.
    let mut counted = (0, 0);
    let last_index = chosen.len().saturating_sub(1);
    for (i, seg) in chosen.iter().enumerate() {
        let file_failure = |seq, line, what: String| VerifyFailure {
            seq,
            line,
            what,
            file: Some(seg.path.clone()),
        };
        // In a subset, a segment not adjacent to the one before starts afresh.
        if let Some(c) = &check {
            if c.seq + 1 != seg.first {
                if whole {
                    let what = if seg.first > c.seq + 1 {
                        format!(
                            "records {} to {} are missing: a segment was removed",
                            c.seq + 1,
                            seg.first - 1
                        )
                    } else {
                        format!(
                            "this segment starts at record {} but the one before it ends at \
                             record {}: segments overlap or were renamed",
                            seg.first, c.seq
                        )
                    };
                    return Err(file_failure(Some(c.seq + 1), 0, what));
                }
                counted.0 += c.records;
                counted.1 += c.checkpoints;
                check = None;
            }
        }
        let file = fs::File::open(&seg.path)
            .map_err(|e| file_failure(None, 0, format!("cannot open: {e}")))?;
        let mut fresh = check.is_none();
        let mut opening = true;
        let end = read_entries(BufReader::new(file), 0, |offset, entry| {
            if let (Some(index), Entry::Record { seq, record, .. }) = (index.as_mut(), &entry) {
                index.record(*seq, seg, offset, record);
            }
            if fresh {
                fresh = false;
                let started = match &entry {
                    Entry::Checkpoint(cp) if cp.seq + 1 == seg.first => {
                        ChainCheck::from_checkpoint(&key, cp)?
                    }
                    Entry::Record { seq: 1, .. } if seg.first == 1 => {
                        let mut c = ChainCheck::new(&key, 0, GENESIS);
                        c.push(&entry)?;
                        c
                    }
                    _ => return Err(must_open_with_checkpoint(seg.first)),
                };
                check = Some(started);
            } else if let Some(c) = check.as_mut() {
                if opening
                    && seg.first > 1
                    && !matches!(&entry, Entry::Checkpoint(cp) if cp.seq + 1 == seg.first)
                {
                    return Err(must_open_with_checkpoint(seg.first));
                }
                c.push(&entry)?;
            }
            if let Entry::Record { seq, hash, .. } = &entry {
                observe(*seq, hash);
            }
            opening = false;
            if let (Some(h), Entry::Checkpoint(cp)) = (&head, &entry) {
                if cp.seq == h.seq {
                    if cp.hash != h.hash {
                        return Err((
                            None,
                            format!(
                                "the signed checkpoint at record {} in {HEAD_FILE} is not the \
                                 one in the log: the log was rewritten",
                                h.seq
                            ),
                        ));
                    }
                    head_seen = true;
                }
            }
            Ok(())
        })
        .map_err(|e| match e {
            ReadError::Io { line, source } => {
                file_failure(None, line, format!("cannot read: {source}"))
            }
            ReadError::Malformed { line, what } => {
                file_failure(None, line, format!("malformed line: {what}"))
            }
            ReadError::Refused {
                line,
                error: (seq, what),
            } => file_failure(seq, line, what),
        })?;
        if end.lines == 0 && seg.first > 1 {
            return Err(file_failure(
                None,
                0,
                "the segment is empty: it must open with the checkpoint that closed the one before"
                    .into(),
            ));
        }
        let Some(c) = check.as_ref() else {
            // An empty file: only the newest segment of a new log may be.
            if whole && !(seg.first == 1 && i == last_index) {
                return Err(file_failure(None, 0, "the segment is empty".into()));
            }
            continue;
        };
        let last_of_all = whole && i == last_index && !seg.archived;
        if end.torn_tail_bytes > 0 && !last_of_all {
            return Err(file_failure(
                None,
                end.lines + 1,
                "the segment ends in an unfinished line, but it is not the one being written"
                    .into(),
            ));
        }
        if !c.sealed && whole && !last_of_all {
            return Err(file_failure(
                Some(c.seq),
                0,
                "the segment does not end with a checkpoint: its end was cut off".into(),
            ));
        }
        report.torn_tail_bytes = end.torn_tail_bytes;
        end_of_log = Some((seg.path.clone(), end.lines));
        report.segments += 1;
        report.archived_segments += u64::from(seg.archived);
    }
    report.records = counted.0;
    report.checkpoints = counted.1;
    if let Some(c) = &check {
        report.records += c.records;
        report.checkpoints += c.checkpoints;
        report.last_checkpoint = c
            .last_checkpoint
            .as_ref()
            .map(|cp| (cp.seq, cp.time_unix_ms));
        report.unsealed_tail = c.unsealed();
        report.last_seq = c.seq;
    }
    if whole {
        let retired_through = retired.as_ref().map_or(0, |r| r.seq);
        check_head_reached(
            head.as_ref(),
            &key,
            report.last_seq,
            retired_through,
            head_seen,
            report.records,
        )
        .map_err(|mut f| {
            if f.seq.is_some() {
                if let Some((path, lines)) = end_of_log {
                    f.file = Some(path);
                    f.line = lines + 1;
                }
            }
            f
        })?;
    }
    if let Some(index) = &mut index {
        index.finish(
            whole,
            retired.as_ref().map_or(0, |r| r.seq),
            report.last_seq,
        )?;
        report.index_entries = Some(index.checked);
        report.indexed_seq = index.through.min(report.last_seq);
    }
    Ok(report)
}

/// Why a segment that does not open with its predecessor's last checkpoint
/// is refused.
fn must_open_with_checkpoint(first: u64) -> (Option<u64>, String) {
    (
        None,
        format!(
            "a segment starting at record {first} must open with the signed checkpoint at \
             record {}",
            first.saturating_sub(1)
        ),
    )
}

/// The end of the log against `audit.head`: the head must be signed by the
/// key and be one of the log's checkpoints (or the genesis head of a log
/// that has not sealed anything yet). Without it, removing whole lines or
/// segments from the end, checkpoints included, would leave a log that
/// checks out.
fn check_head_reached(
    head: Option<&Checkpoint>,
    key: &[u8; 32],
    last_seq: u64,
    retired_through: u64,
    seen: bool,
    records: u64,
) -> Result<(), VerifyFailure> {
    let Some(head) = head else {
        if records == 0 && last_seq == retired_through {
            return Ok(());
        }
        return Err(VerifyFailure::new(format!(
            "{HEAD_FILE} is missing, so lines cut off the end of the log cannot be \
             detected: it was deleted"
        )));
    };
    if !head.verify(key) {
        return Err(VerifyFailure::new(format!(
            "the checkpoint in {HEAD_FILE} does not verify with the public key: \
             it was forged or altered, or the key is not this log's"
        )));
    }
    if head.seq == 0 && head.hash == GENESIS {
        return Ok(());
    }
    if head.seq > last_seq {
        return Err(VerifyFailure {
            seq: Some(last_seq + 1),
            ..VerifyFailure::new(format!(
                "truncation detected: {HEAD_FILE} holds a signed checkpoint at record {}, \
                 but the log ends after record {last_seq}: records were removed from the end",
                head.seq
            ))
        });
    }
    if !seen && head.seq > retired_through {
        return Err(VerifyFailure::new(format!(
            "the signed checkpoint at record {} in {HEAD_FILE} is not in the log: \
             checkpoint lines were removed or the log was rewritten",
            head.seq
        )));
    }
    Ok(())
}

/// Checks a log in the single-file format of earlier versions
/// (`audit.log`); returns its report and the length of its complete lines.
pub(crate) fn verify_legacy(
    dir: &Path,
    key: &[u8; 32],
) -> Result<(VerifyReport, u64), VerifyFailure> {
    let head = files::read_head(dir).map_err(VerifyFailure::new)?;
    let path = dir.join(LOG_FILE);
    let file = fs::File::open(&path)
        .map_err(|e| VerifyFailure::new(format!("cannot open {}: {e}", path.display())))?;
    let mut check = ChainCheck::new(key, 0, GENESIS);
    let mut head_seen = false;
    let end = read_entries(BufReader::new(file), 0, |_, entry| {
        check.push(&entry)?;
        if let (Some(h), Entry::Checkpoint(cp)) = (&head, &entry) {
            head_seen |= cp.seq == h.seq && cp.hash == h.hash;
        }
        Ok(())
    })
    .map_err(|e| {
        let (seq, line, what) = match e {
            ReadError::Io { line, source } => (
                None,
                line,
                format!("cannot read {}: {source}", path.display()),
            ),
            ReadError::Malformed { line, what } => (None, line, format!("malformed line: {what}")),
            ReadError::Refused {
                line,
                error: (seq, what),
            } => (seq, line, what),
        };
        VerifyFailure {
            seq,
            line,
            what,
            file: None,
        }
    })?;
    check_head_reached(head.as_ref(), key, check.seq, 0, head_seen, check.records).map_err(
        |mut f| {
            if f.line == 0 && (f.what.contains("truncation") || f.what.contains("not in the log")) {
                f.line = end.lines + 1;
            }
            f
        },
    )?;
    Ok((
        VerifyReport {
            records: check.records,
            checkpoints: check.checkpoints,
            last_checkpoint: check
                .last_checkpoint
                .as_ref()
                .map(|cp| (cp.seq, cp.time_unix_ms)),
            unsealed_tail: check.unsealed(),
            torn_tail_bytes: end.torn_tail_bytes,
            segments: 0,
            archived_segments: 0,
            retired_through: None,
            last_seq: check.seq,
            index_entries: None,
            indexed_seq: 0,
        },
        end.complete_len,
    ))
}

/// What to tell someone who points a command at an audit folder holding no
/// log at all (neither segments nor a single-file log); `None` when there
/// is one.
pub fn no_log_in(dir: &Path) -> Option<String> {
    let absent = !dir.join(segments::SEGMENTS_DIR).exists() && !dir.join(LOG_FILE).exists();
    absent.then(|| {
        format!(
            "no access log in {}: neither a {}/ folder nor an {LOG_FILE} (is [audit] dir right? \
             a gateway creates the log when it first starts)",
            dir.display(),
            segments::SEGMENTS_DIR
        )
    })
}

/// Every record line of the log in order, segments and archive alike (or
/// the single file of an unmigrated folder): `each` gets the line as
/// logged (without its newline) and the record. Does not verify.
pub fn for_each_record(
    dir: &Path,
    archive_dir: Option<&Path>,
    mut each: impl FnMut(&[u8], AuditRecord) -> io::Result<()>,
) -> Result<(), AuditError> {
    let segmented = dir.join(segments::SEGMENTS_DIR).exists();
    let retired = || {
        segments::read_retired(dir).map_err(|what| AuditError::Corrupt {
            path: dir.join(segments::RETIRED_FILE),
            what,
        })
    };
    let files: Vec<(PathBuf, u64)> = if !segmented {
        if let Some(absent) = no_log_in(dir) {
            return Err(AuditError::Unavailable(absent));
        }
        vec![(dir.join(LOG_FILE), u64::MAX)]
    } else {
        let segs = segments::list_segments(dir, archive_dir).map_err(|source| AuditError::Io {
            path: dir.to_owned(),
            source,
        })?;
        // Each segment with the last seq it may hold (the next one's first - 1).
        let ends: Vec<u64> = segs
            .iter()
            .skip(1)
            .map(|s| s.first - 1)
            .chain([u64::MAX])
            .collect();
        segs.into_iter().map(|s| s.path).zip(ends).collect()
    };
    // The seq the next record must have: a record missing (a segment
    // removed, an archive not read) fails the read instead of leaving a
    // silent hole in an export or a report. Read after the listing: a
    // segment that retention deletes meanwhile is then covered by it.
    let mut next = if segmented {
        retired()?.map_or(1, |r| r.seq + 1)
    } else {
        1
    };
    for (mut path, last) in files {
        let opened = match fs::File::open(&path) {
            // A live gateway's retention moved the segment to the archive,
            // or deleted it under a statement that now covers it.
            Err(e) if e.kind() == io::ErrorKind::NotFound && segmented => {
                let moved = archive_dir.zip(path.file_name()).map(|(a, n)| a.join(n));
                match moved.as_ref().map(fs::File::open) {
                    Some(Ok(file)) => {
                        path = moved.unwrap_or(path);
                        Ok(file)
                    }
                    _ => match retired()? {
                        Some(r) if r.seq >= last => {
                            next = next.max(r.seq + 1);
                            continue;
                        }
                        _ => Err(e),
                    },
                }
            }
            other => other,
        };
        let io_err = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(opened.map_err(io_err)?);
        let mut buf = Vec::new();
        let mut lineno = 0;
        loop {
            if next_line(&mut reader, &mut buf).map_err(io_err)? != Line::Complete {
                break;
            }
            lineno += 1;
            let bytes = &buf[..buf.len() - 1];
            match line::parse_entry(bytes) {
                // A segment left in both the folder and the archive (a move
                // to another file system cut short) is read once.
                Ok(Entry::Record { seq, .. }) if seq < next => {}
                // A checkpoint covers the records up to its seq: one past
                // what was read means records are missing, as a record
                // past it does.
                Ok(Entry::Record { seq, .. }) if seq > next => {
                    return Err(missing(&path, lineno, next, seq - 1))
                }
                Ok(Entry::Checkpoint(cp)) if cp.seq >= next => {
                    return Err(missing(&path, lineno, next, cp.seq))
                }
                Ok(Entry::Record { seq, record, .. }) => {
                    next = seq + 1;
                    each(bytes, record.into_owned()).map_err(io_err)?
                }
                Ok(Entry::Checkpoint(_)) => {}
                Err(what) => {
                    return Err(AuditError::Corrupt {
                        path: path.clone(),
                        what: format!("line {lineno}: {what}"),
                    })
                }
            }
        }
    }
    Ok(())
}

fn missing(path: &Path, lineno: u64, from: u64, to: u64) -> AuditError {
    AuditError::Corrupt {
        path: path.to_owned(),
        what: format!(
            "line {lineno}: records {from} to {to} are missing (a segment removed, or archive_dir \
             not set to where retention moved them); `audit verify` says more"
        ),
    }
}

/// Writes the record lines of the log in `dir` (and its archive) that
/// match, byte for byte as logged, so each keeps the hash that verification
/// recomputes. Returns how many were written. It does not verify: run
/// [`verify_log`] for that.
pub fn export(
    dir: &Path,
    archive_dir: Option<&Path>,
    since_unix_ms: Option<i64>,
    subject: Option<&str>,
    out: &mut impl Write,
) -> Result<u64, AuditError> {
    let mut written = 0;
    // A write error is the output's, not the segment's being read.
    let mut output: Option<io::Error> = None;
    let read = for_each_record(dir, archive_dir, |bytes, record| {
        let recent = since_unix_ms.is_none_or(|since| record.time_unix_ms >= since);
        let concerns = subject.is_none_or(|s| record.subjects.iter().any(|x| x == s));
        if recent && concerns {
            if let Err(e) = out.write_all(bytes).and_then(|()| out.write_all(b"\n")) {
                let kind = e.kind();
                output = Some(e);
                return Err(io::Error::new(kind, "the export's output failed"));
            }
            written += 1;
        }
        Ok(())
    });
    if let Some(source) = output {
        return Err(AuditError::Io {
            path: PathBuf::from("standard output"),
            source,
        });
    }
    read?;
    Ok(written)
}
