//! Checking a log from its files alone, with only the public key: the walk
//! over `audit.log` that both [`verify_file`] and `AuditLog::open` run (one
//! piece of code, so the gateway refuses to start on exactly what an auditor
//! would reject), and [`export`] of records for an auditor or a citizen.

use std::{
    fmt, fs,
    io::{self, BufRead, BufReader, Write},
    path::Path,
};

use super::{
    chain::{self, Checkpoint, GENESIS},
    files::{self, HEAD_FILE, LOG_FILE, PUB_FILE},
    line::{self, Line},
    record::AuditRecord,
    AuditError,
};

/// What a log that verifies contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
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
}

/// Where and why a log fails verification. `line` is 1-based (0 when the
/// failure is not about a line of `audit.log`); `seq` is the record concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    pub seq: Option<u64>,
    pub line: usize,
    pub what: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.seq) {
            (0, _) => write!(f, "{}", self.what),
            (line, Some(seq)) => write!(f, "line {line} (record {seq}): {}", self.what),
            (line, None) => write!(f, "line {line}: {}", self.what),
        }
    }
}

impl std::error::Error for VerifyFailure {}

/// Walks the whole log in `dir` and checks it with `public_key`, or with the
/// key in `audit.pub` beside it when `None` is given.
///
/// Checked: every line is a well-formed record or checkpoint line; seqs run
/// 1, 2, 3, ... without gap or repeat; every record's hash is recomputed from
/// its content and the hash before it; every checkpoint is signed by the key,
/// sits right after the record it seals and carries the chain head there; and
/// the signed checkpoint in `audit.head` is one of the log's checkpoints, so
/// lines cut off the end (checkpoints included) are detected.
pub fn verify_file(
    dir: &Path,
    public_key: Option<&[u8; 32]>,
) -> Result<VerifyReport, VerifyFailure> {
    let setup = |what: String| VerifyFailure {
        seq: None,
        line: 0,
        what,
    };
    let key = match public_key {
        Some(key) => *key,
        None => files::read_public_key(dir)
            .map_err(|e| setup(e.to_string()))?
            .ok_or_else(|| {
                setup(format!(
                    "no public key given and {} has no {PUB_FILE}",
                    dir.display()
                ))
            })?,
    };
    let head = files::read_head(dir).map_err(setup)?;
    let path = dir.join(LOG_FILE);
    let file =
        fs::File::open(&path).map_err(|e| setup(format!("cannot open {}: {e}", path.display())))?;
    let scan = scan(BufReader::new(file), &key, |_, _, _| {}).map_err(|e| match e {
        ScanError::Bad(failure) => failure,
        ScanError::Io { line, source } => VerifyFailure {
            seq: None,
            line,
            what: format!("cannot read {}: {source}", path.display()),
        },
    })?;
    check_head(&scan, head.as_ref(), &key)?;
    Ok(scan.report())
}

/// Writes the record lines of the log in `dir` that match, byte for byte as
/// logged, so each keeps the hash that verification recomputes. Returns how
/// many were written. It does not verify: run [`verify_file`] for that.
pub fn export(
    dir: &Path,
    since_unix_ms: Option<i64>,
    subject: Option<&str>,
    out: &mut impl Write,
) -> Result<u64, AuditError> {
    let path = dir.join(LOG_FILE);
    let io_err = |source| AuditError::Io {
        path: path.clone(),
        source,
    };
    let mut reader = BufReader::new(fs::File::open(&path).map_err(io_err)?);
    let mut buf = Vec::new();
    let mut lineno = 0;
    let mut written = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io_err)? == 0 || buf.last() != Some(&b'\n') {
            return Ok(written);
        }
        lineno += 1;
        let record = match line::parse(&buf[..buf.len() - 1]) {
            Ok(Line::Record { record, .. }) => record,
            Ok(Line::Checkpoint(_)) => continue,
            Err(what) => {
                return Err(AuditError::Corrupt {
                    path: path.clone(),
                    what: format!("line {lineno}: {what}"),
                })
            }
        };
        let recent = since_unix_ms.is_none_or(|since| record.time_unix_ms >= since);
        let concerns = subject.is_none_or(|s| record.subjects.iter().any(|x| x == s));
        if recent && concerns {
            out.write_all(&buf).map_err(io_err)?;
            written += 1;
        }
    }
}

/// The state at the end of a walk over a log that checked out.
#[derive(Debug)]
pub(crate) struct Scan {
    pub records: u64,
    /// Every checkpoint line, in order, as (seq, hash).
    pub checkpoints: Vec<(u64, [u8; 32])>,
    pub last_checkpoint: Option<Checkpoint>,
    /// The chain head after the last record (GENESIS for an empty log).
    pub head_hash: [u8; 32],
    /// Complete lines read.
    pub lines: usize,
    /// Length of the complete lines: where the next line goes.
    pub complete_len: u64,
    pub torn_tail_bytes: u64,
}

impl Scan {
    pub fn sealed_seq(&self) -> u64 {
        self.last_checkpoint.as_ref().map_or(0, |cp| cp.seq)
    }

    fn report(&self) -> VerifyReport {
        VerifyReport {
            records: self.records,
            checkpoints: self.checkpoints.len() as u64,
            last_checkpoint: self
                .last_checkpoint
                .as_ref()
                .map(|cp| (cp.seq, cp.time_unix_ms)),
            unsealed_tail: self.records - self.sealed_seq(),
            torn_tail_bytes: self.torn_tail_bytes,
        }
    }
}

#[derive(Debug)]
pub(crate) enum ScanError {
    Io { line: usize, source: io::Error },
    Bad(VerifyFailure),
}

/// Walks a log from its first byte, checking every line (see
/// [`verify_file`]), and hands each record with its seq and byte offset to
/// `on_record`. A final line without a newline is counted as torn, not read.
pub(crate) fn scan(
    mut reader: impl BufRead,
    public_key: &[u8; 32],
    mut on_record: impl FnMut(u64, u64, &AuditRecord),
) -> Result<Scan, ScanError> {
    let mut scan = Scan {
        records: 0,
        checkpoints: Vec::new(),
        last_checkpoint: None,
        head_hash: GENESIS,
        lines: 0,
        complete_len: 0,
        torn_tail_bytes: 0,
    };
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| ScanError::Io {
                line: scan.lines + 1,
                source,
            })?;
        if n == 0 {
            return Ok(scan);
        }
        if buf.last() != Some(&b'\n') {
            scan.torn_tail_bytes = n as u64;
            return Ok(scan);
        }
        let lineno = scan.lines + 1;
        let bad = |seq: Option<u64>, what: String| {
            ScanError::Bad(VerifyFailure {
                seq,
                line: lineno,
                what,
            })
        };
        let expected = scan.records + 1;
        match line::parse(&buf[..n - 1]) {
            Err(what) => return Err(bad(None, format!("malformed line: {what}"))),
            Ok(Line::Record { seq, hash, record }) => {
                if seq > expected {
                    return Err(bad(
                        Some(expected),
                        format!(
                            "record {expected} is missing (found record {seq} in its place): \
                             records were removed or reordered"
                        ),
                    ));
                }
                if seq < expected {
                    return Err(bad(
                        Some(expected),
                        format!(
                            "record {seq} appears again where record {expected} should be: \
                             records were duplicated or reordered"
                        ),
                    ));
                }
                if chain::hash(&scan.head_hash, seq, &record) != hash {
                    return Err(bad(
                        Some(seq),
                        "hash does not match: the record was changed, \
                         or a record before it was removed or reordered"
                            .into(),
                    ));
                }
                on_record(seq, scan.complete_len, &record);
                scan.records = seq;
                scan.head_hash = hash;
            }
            Ok(Line::Checkpoint(cp)) => {
                let at = cp.seq;
                if !cp.verify(public_key) {
                    return Err(bad(
                        None,
                        format!(
                            "checkpoint at record {at}: signature does not verify: the \
                             checkpoint was forged or altered, or the key is not this log's"
                        ),
                    ));
                }
                if at > scan.records {
                    return Err(bad(
                        None,
                        format!(
                            "checkpoint at record {at} follows record {}: records were removed",
                            scan.records
                        ),
                    ));
                }
                if at < scan.records {
                    return Err(bad(
                        None,
                        format!(
                            "checkpoint at record {at} follows record {}: lines were reordered",
                            scan.records
                        ),
                    ));
                }
                if cp.hash != scan.head_hash {
                    return Err(bad(
                        None,
                        format!(
                            "checkpoint at record {at}: its hash is not the chain head there: \
                             records up to {at} were rewritten"
                        ),
                    ));
                }
                scan.checkpoints.push((cp.seq, cp.hash));
                scan.last_checkpoint = Some(cp);
            }
        }
        scan.lines = lineno;
        scan.complete_len += n as u64;
    }
}

/// Checks the log against `audit.head`, the latest checkpoint the writer
/// sealed: it must be signed by the key and be one of the log's checkpoints
/// (or the genesis head of a log that has not sealed anything yet). Without
/// it, removing whole lines from the end, checkpoints included, would leave
/// a log that checks out. Runs after the walk, so a wrong key is reported at
/// the log's first checkpoint line.
pub(crate) fn check_head(
    scan: &Scan,
    head: Option<&Checkpoint>,
    public_key: &[u8; 32],
) -> Result<(), VerifyFailure> {
    let end = |seq, what| VerifyFailure {
        seq,
        line: scan.lines + 1,
        what,
    };
    let Some(head) = head else {
        if scan.records == 0 && scan.checkpoints.is_empty() {
            return Ok(());
        }
        return Err(end(
            None,
            format!(
                "{HEAD_FILE} is missing, so lines cut off the end of the log cannot be \
                 detected: it was deleted"
            ),
        ));
    };
    if !head.verify(public_key) {
        return Err(VerifyFailure {
            seq: None,
            line: 0,
            what: format!(
                "the checkpoint in {HEAD_FILE} does not verify with the public key: \
                 it was forged or altered, or the key is not this log's"
            ),
        });
    }
    if head.seq == 0 && head.hash == GENESIS {
        return Ok(());
    }
    if head.seq > scan.records {
        return Err(end(
            Some(scan.records + 1),
            format!(
                "truncation detected: {HEAD_FILE} holds a signed checkpoint at record {}, \
                 but the log ends after record {}: records were removed from the end",
                head.seq, scan.records
            ),
        ));
    }
    if !scan.checkpoints.contains(&(head.seq, head.hash)) {
        return Err(end(
            None,
            format!(
                "the signed checkpoint at record {} in {HEAD_FILE} is not in the log: \
                 checkpoint lines were removed or the log was rewritten",
                head.seq
            ),
        ));
    }
    Ok(())
}
