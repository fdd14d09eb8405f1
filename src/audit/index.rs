//! The file log's on-disk index (`index.sqlite` beside the segments, SQLite
//! in WAL mode): per subject, the seqs of the records naming it and where
//! each record's line is (segment and byte offset); per checkpoint, where
//! its line is. Records stay in the segments and are read back by position,
//! so a page of `ListAccessRecords` costs one index range read and a few
//! positioned reads, whatever the history, and memory holds none of it.
//!
//! The writer updates the index in the same group as the segment (one
//! transaction per group, committed after the segment's fsync and before
//! the group is acknowledged). `synchronous=NORMAL` does not fsync the
//! index: after a power loss it may lag the segments, and opening the log
//! re-indexes from the segments whatever it lacks (`indexed_seq`). Readers
//! never see rows past the last acknowledged seq (they filter on it), so an
//! index briefly ahead of a failed group shows nothing unacknowledged.

use std::{fs::File, io, path::Path};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::record::AuditRecord;

/// The index file, in the audit folder.
pub const INDEX_FILE: &str = "index.sqlite";

/// Where a line is: the segment (by its first seq) and the byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub segment: u64,
    pub offset: u64,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sql_err(e: rusqlite::Error) -> io::Error {
    io::Error::other(format!("{INDEX_FILE}: {e}"))
}

/// Opens (creating) the index read-write, for the writer.
pub(crate) fn open_writer(dir: &Path) -> io::Result<Connection> {
    let conn = Connection::open(dir.join(INDEX_FILE)).map_err(sql_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=NORMAL;
         PRAGMA busy_timeout=10000;
         CREATE TABLE IF NOT EXISTS subjects(
             subject TEXT NOT NULL,
             seq INTEGER NOT NULL,
             segment INTEGER NOT NULL,
             offset INTEGER NOT NULL,
             PRIMARY KEY(subject, seq)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS marks(
             seq INTEGER PRIMARY KEY,
             segment INTEGER NOT NULL,
             offset INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS meta(
             key TEXT PRIMARY KEY,
             value INTEGER NOT NULL);",
    )
    .map_err(sql_err)?;
    Ok(conn)
}

/// Opens the index read-only, for readers.
pub(crate) fn open_reader(dir: &Path) -> io::Result<Connection> {
    Connection::open_with_flags(
        dir.join(INDEX_FILE),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err)
}

/// The last seq whose record is in the index (0 for none).
pub(crate) fn indexed_seq(conn: &Connection) -> io::Result<u64> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'indexed_seq'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v.map_or(0, from_i64))
    .map_err(sql_err)
}

/// Rows added inside one transaction: begin, add, then commit (or roll
/// back, dropping everything added).
pub(crate) struct Batch<'c> {
    conn: &'c Connection,
    last_seq: Option<u64>,
}

impl<'c> Batch<'c> {
    pub fn begin(conn: &'c Connection) -> io::Result<Self> {
        conn.execute_batch("BEGIN").map_err(sql_err)?;
        Ok(Self {
            conn,
            last_seq: None,
        })
    }

    /// Indexes a record's [`AuditRecord::indexed_subjects`] at `at`.
    pub fn record(&mut self, seq: u64, at: Position, record: &AuditRecord) -> io::Result<()> {
        for subject in record.indexed_subjects() {
            self.row(subject, seq, at)?;
        }
        self.last_seq = Some(seq);
        Ok(())
    }

    /// Indexes one subject of record `seq` at `at` (see [`Batch::record`]
    /// for which subjects are indexed).
    pub fn row(&mut self, subject: &str, seq: u64, at: Position) -> io::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO subjects(subject, seq, segment, offset) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    subject,
                    to_i64(seq),
                    to_i64(at.segment),
                    to_i64(at.offset)
                ])
            })
            .map_err(sql_err)?;
        self.last_seq = self.last_seq.max(Some(seq));
        Ok(())
    }

    /// Notes where the checkpoint at `seq` is (the latest position wins:
    /// a segment's opening copy of the previous segment's final checkpoint).
    pub fn mark(&mut self, seq: u64, at: Position) -> io::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO marks(seq, segment, offset) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| {
                s.execute(params![to_i64(seq), to_i64(at.segment), to_i64(at.offset)])
            })
            .map_err(sql_err)?;
        Ok(())
    }

    pub fn commit(self) -> io::Result<()> {
        if let Some(seq) = self.last_seq {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('indexed_seq', ?1)",
                    [to_i64(seq)],
                )
                .map_err(sql_err)?;
        }
        self.conn.execute_batch("COMMIT").map_err(sql_err)
    }

    pub fn rollback(self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }
}

/// Drops every row past `last_seq` (a group that failed after its rows were
/// committed, or an index ahead of segments restored from a backup).
pub(crate) fn forget_after(conn: &Connection, last_seq: u64) -> io::Result<()> {
    let last = to_i64(last_seq);
    conn.execute_batch("BEGIN").map_err(sql_err)?;
    let done = (|| {
        conn.execute("DELETE FROM subjects WHERE seq > ?1", [last])?;
        conn.execute("DELETE FROM marks WHERE seq > ?1", [last])?;
        conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'indexed_seq' AND value > ?1",
            [last],
        )?;
        conn.execute_batch("COMMIT")
    })();
    if done.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done.map_err(sql_err)
}

/// Drops every row about records up to `through` (deleted by retention).
pub(crate) fn forget_through(conn: &Connection, through: u64) -> io::Result<()> {
    let through = to_i64(through);
    conn.execute("DELETE FROM subjects WHERE seq <= ?1", [through])
        .and_then(|_| conn.execute("DELETE FROM marks WHERE seq < ?1", [through]))
        .map(drop)
        .map_err(sql_err)
}

/// The position of the last checkpoint line noted in `segment`.
pub(crate) fn last_mark_in(conn: &Connection, segment: u64) -> io::Result<Option<(u64, u64)>> {
    conn.query_row(
        "SELECT seq, offset FROM marks WHERE segment = ?1 ORDER BY seq DESC LIMIT 1",
        [to_i64(segment)],
        |r| Ok((from_i64(r.get(0)?), from_i64(r.get(1)?))),
    )
    .optional()
    .map_err(sql_err)
}

/// A row's (seq, segment, offset) columns.
fn seq_and_position(r: &rusqlite::Row<'_>) -> rusqlite::Result<(u64, Position)> {
    Ok((
        from_i64(r.get(0)?),
        Position {
            segment: from_i64(r.get(1)?),
            offset: from_i64(r.get(2)?),
        },
    ))
}

/// The last checkpoint at or before `seq`, and where its line is.
pub(crate) fn mark_at_or_before(
    conn: &Connection,
    seq: u64,
) -> io::Result<Option<(u64, Position)>> {
    conn.query_row(
        "SELECT seq, segment, offset FROM marks WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1",
        [to_i64(seq)],
        seq_and_position,
    )
    .optional()
    .map_err(sql_err)
}

/// Up to `limit` (seq, position) of records naming `subject` with seq
/// strictly below `before` and at most `last`, newest first.
pub(crate) fn page(
    conn: &Connection,
    subject: &str,
    before: u64,
    last: u64,
    limit: usize,
) -> io::Result<Vec<(u64, Position)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, segment, offset FROM subjects
             WHERE subject = ?1 AND seq < ?2 AND seq <= ?3
             ORDER BY seq DESC LIMIT ?4",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(
            params![
                subject,
                to_i64(before),
                to_i64(last),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            seq_and_position,
        )
        .map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// Reads the line starting at `offset`, without its newline, with positioned
/// reads that do not disturb the writer or other readers.
pub(crate) fn read_line_at(file: &File, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; 1024];
    let mut filled = 0;
    loop {
        let n = read_at(file, &mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("no complete line at offset {offset}"),
            ));
        }
        if let Some(pos) = buf[filled..filled + n].iter().position(|&b| b == b'\n') {
            buf.truncate(filled + pos);
            return Ok(buf);
        }
        filled += n;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::sample;
    use std::io::Write;

    const EVEN: &str = "001099000002";
    const ODD: &str = "001099000001";

    fn at(seq: u64) -> Position {
        Position {
            segment: 1,
            offset: seq * 100,
        }
    }

    fn seqs(rows: Vec<(u64, Position)>) -> Vec<u64> {
        rows.into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn pages_run_newest_first_below_before_and_up_to_the_last_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(dir.path()).unwrap();
        let mut batch = Batch::begin(&conn).unwrap();
        for seq in 1..=10 {
            let subject = if seq % 2 == 0 { EVEN } else { ODD };
            batch.record(seq, at(seq), &sample(seq, subject)).unwrap();
        }
        batch.commit().unwrap();
        assert_eq!(indexed_seq(&conn).unwrap(), 10);
        let reader = open_reader(dir.path()).unwrap();
        assert_eq!(
            page(&reader, EVEN, u64::MAX, 10, 3).unwrap(),
            vec![(10, at(10)), (8, at(8)), (6, at(6))]
        );
        assert_eq!(seqs(page(&reader, EVEN, 6, 10, 3).unwrap()), vec![4, 2]);
        assert_eq!(
            seqs(page(&reader, EVEN, 2, 10, 3).unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(
            seqs(page(&reader, EVEN, u64::MAX, 7, 2).unwrap()),
            vec![6, 4]
        );
        assert_eq!(
            seqs(page(&reader, "nobody", u64::MAX, 10, 3).unwrap()),
            Vec::<u64>::new()
        );
        forget_after(&conn, 5).unwrap();
        assert_eq!(indexed_seq(&conn).unwrap(), 5);
        assert_eq!(
            seqs(page(&reader, EVEN, u64::MAX, 10, 9).unwrap()),
            vec![4, 2]
        );
    }

    #[test]
    fn a_rolled_back_batch_leaves_nothing_and_invalid_subjects_are_not_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(dir.path()).unwrap();
        let mut batch = Batch::begin(&conn).unwrap();
        let mut r = sample(1, EVEN);
        r.subjects.push(EVEN.into());
        r.subjects.push("invalid:0000abcd".into());
        r.subjects.push("made-up-000000000001".into());
        batch.record(1, at(1), &r).unwrap();
        batch.commit().unwrap();
        let mut batch = Batch::begin(&conn).unwrap();
        batch.record(2, at(2), &sample(2, EVEN)).unwrap();
        batch.rollback();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM subjects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(indexed_seq(&conn).unwrap(), 1);
    }

    #[test]
    fn read_line_at_reads_lines_longer_than_its_first_buffer() {
        let mut file = tempfile::tempfile().unwrap();
        let long = "x".repeat(5000);
        write!(file, "short\n{long}\ntail-without-newline").unwrap();
        assert_eq!(read_line_at(&file, 0).unwrap(), b"short");
        assert_eq!(read_line_at(&file, 6).unwrap(), long.as_bytes());
        assert!(read_line_at(&file, 6 + 5001).is_err());
    }
}
