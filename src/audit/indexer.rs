//! The file log's index writer: an `audit-index` thread that moves the
//! index rows of acknowledged groups into `index.sqlite` in large batches,
//! off the path of the call being answered, and the rows on their way,
//! which readers see in the meantime ([`Pending`]).
//!
//! A group is acknowledged once its segment lines are durable; its index
//! rows (subject → seq and position; checkpoint → position) are handed
//! here. Committing them to SQLite once per group wrote a page of the
//! B-tree for nearly every record (subjects arrive in random order) and
//! copied it again at the WAL checkpoint: about 13 KB of writes per call
//! for a 500-byte record. Batched, a page takes many rows per commit.
//!
//! Nothing is lost by waiting: the segments are the log, and opening it
//! re-indexes from them whatever the index lacks (`indexed_seq`). Readers
//! ask [`Pending`] first: every row with a seq above what the index holds
//! is still here, so a page of `ListAccessRecords` is complete the moment
//! its record is acknowledged.
//!
//! Memory stays bounded when `index.sqlite` cannot be written (a full or
//! read-only disk, a lock held elsewhere): while commits fail, past
//! [`Tuning::max_rows`] rows waiting, those are dropped and the index is
//! *behind*. Listings then
//! fail (the log is intact; its index is incomplete) rather than leave out
//! records, and once commits succeed again the thread re-reads the dropped
//! range from the segments, in seq order, before anything newer, so
//! `indexed_seq` never passes a hole.

use std::{
    path::Path,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::index::{self, Batch, Position};

/// Flush once this many rows wait...
const FLUSH_ROWS: usize = 32768;
/// ...or once the oldest has waited this long.
const FLUSH_AFTER: Duration = Duration::from_millis(1000);
/// After a failed commit, wait this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Rows kept in memory at most (about 70 bytes each) while commits fail.
const MAX_ROWS: usize = 4 * FLUSH_ROWS;

/// When the thread commits, and how much it may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// Commit once the oldest row waiting has waited this long.
    pub flush_after: Duration,
    /// Rows held in memory at most; past it the index is behind.
    pub max_rows: usize,
    /// How long a commit waits for a lock held by another connection.
    pub busy_timeout: Duration,
    /// After a failed commit, wait this long before trying again.
    pub retry_after: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            flush_after: FLUSH_AFTER,
            max_rows: MAX_ROWS,
            busy_timeout: Duration::from_secs(10),
            retry_after: RETRY_AFTER,
        }
    }
}

/// A listing asked while rows of acknowledged records are neither in the
/// index nor in memory: the index lacks the records in `(indexed, through]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Behind {
    pub indexed: u64,
    pub through: u64,
}

/// One subject of one record, or (with no subject) a checkpoint's position.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub subject: Option<Box<str>>,
    pub seq: u64,
    pub at: Position,
}

#[derive(Default)]
struct State {
    /// Rows being committed right now (kept visible until they are).
    flushing: Arc<Vec<Row>>,
    /// Rows that arrived since.
    waiting: Vec<Row>,
    /// When the oldest of `waiting` arrived.
    since: Option<Instant>,
    /// Every row with a seq up to this is in `index.sqlite`.
    indexed: u64,
    /// Rows of records up to this seq (above `indexed` and the rows of
    /// `flushing`) were dropped from memory while commits failed; the
    /// thread re-reads them from the segments. At most `indexed` when the
    /// index is not behind.
    dropped_through: u64,
    /// The last commit or catch-up failed: rows past the bound are dropped
    /// only then (a healthy index that is merely busy keeps them).
    failing: bool,
    closed: bool,
}

impl State {
    fn behind(&self) -> Option<Behind> {
        (self.dropped_through > self.indexed).then_some(Behind {
            indexed: self.indexed,
            through: self.dropped_through,
        })
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The rows not yet in `index.sqlite`, as readers see them.
#[derive(Clone)]
pub(crate) struct Pending(Arc<Shared>);

impl Pending {
    /// Newest first: the seqs and positions of `subject`'s records below
    /// `before` and at most `last`, at most `limit`, among the rows not yet
    /// in the index; and the seq up to which the index has every row (what
    /// the index is then asked for, so no row is returned twice). `Behind`
    /// while rows dropped from memory are not in the index yet.
    pub fn page(
        &self,
        subject: &str,
        before: u64,
        last: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, Position)>, u64), Behind> {
        let state = self.0.lock();
        if let Some(behind) = state.behind() {
            return Err(behind);
        }
        let rows = state
            .waiting
            .iter()
            .rev()
            .chain(state.flushing.iter().rev())
            .filter(|r| r.seq < before && r.seq <= last && r.subject.as_deref() == Some(subject))
            .take(limit)
            .map(|r| (r.seq, r.at))
            .collect();
        Ok((rows, state.indexed))
    }

    /// The newest checkpoint at or before `seq` among the rows not yet in
    /// the index (all newer than any the index holds).
    pub fn mark_at_or_before(&self, seq: u64) -> Option<(u64, Position)> {
        let state = self.0.lock();
        state
            .waiting
            .iter()
            .rev()
            .chain(state.flushing.iter().rev())
            .find(|r| r.subject.is_none() && r.seq <= seq)
            .map(|r| (r.seq, r.at))
    }
}

/// The `audit-index` thread. Dropping it commits what is left and joins.
pub(crate) struct Indexer {
    shared: Arc<Shared>,
    max_rows: usize,
    thread: Option<JoinHandle<()>>,
}

impl Indexer {
    /// Starts the thread on `dir`'s index, which holds every row up to
    /// `indexed`, with `pending` (from [`Indexer::pending`] of a store not
    /// yet opened) as the readers' view.
    /// `catch_up(conn, after, through)` indexes, from the segments, the
    /// records with a seq in `(after, through]` (rows dropped from memory).
    pub fn start(
        dir: &Path,
        indexed: u64,
        pending: &Pending,
        tuning: Tuning,
        catch_up: CatchUp,
    ) -> std::io::Result<Self> {
        let conn = index::open_writer(dir)?;
        // A page cache that holds the hot part of the B-tree, and a WAL that
        // takes several batches before it is copied back.
        conn.execute_batch("PRAGMA cache_size=-8192; PRAGMA wal_autocheckpoint=4096;")
            .and_then(|()| conn.busy_timeout(tuning.busy_timeout))
            .map_err(|e| std::io::Error::other(format!("{}: {e}", index::INDEX_FILE)))?;
        let shared = Arc::clone(&pending.0);
        {
            let mut state = shared.lock();
            state.indexed = indexed;
            state.dropped_through = 0;
            state.failing = false;
        }
        let thread = std::thread::Builder::new()
            .name("audit-index".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&conn, &shared, tuning, &catch_up)
            })?;
        Ok(Self {
            shared,
            max_rows: tuning.max_rows.max(1),
            thread: Some(thread),
        })
    }

    /// A view for readers, before any thread runs (nothing pending).
    pub fn pending() -> Pending {
        Pending(Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }))
    }

    /// Hands over the rows of a group that is now durable.
    pub fn add(&self, rows: Vec<Row>) {
        if rows.is_empty() {
            return;
        }
        let mut state = self.shared.lock();
        if state.failing && state.waiting.len() + rows.len() > self.max_rows {
            // Commits have been failing: drop what waits (and these), to be
            // re-read from the segments once the index can be written.
            let through = state
                .waiting
                .iter()
                .chain(&rows)
                .map(|r| r.seq)
                .max()
                .unwrap_or(0);
            if state.behind().is_none() {
                tracing::error!(
                    rows = state.waiting.len() + rows.len(),
                    "the access log's index cannot keep up (see the errors before); rows are dropped \
                     from memory and will be re-read from the segments, and listings fail until then"
                );
            }
            state.dropped_through = state.dropped_through.max(through);
            state.waiting = Vec::new();
            state.since = None;
            // The thread may sleep without a deadline: it has a range to
            // re-read once commits succeed again.
            self.shared.wake.notify_one();
            return;
        }
        let first = state.waiting.is_empty();
        if first {
            state.since = Some(Instant::now());
            state.waiting = rows;
        } else {
            state.waiting.extend(rows);
        }
        // The thread sleeps without a deadline while nothing waits.
        if first || state.waiting.len() >= FLUSH_ROWS {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Indexes, from the segments, the records with a seq in `(after, through]`.
pub(crate) type CatchUp =
    Box<dyn Fn(&rusqlite::Connection, u64, u64) -> std::io::Result<()> + Send + 'static>;

/// What the thread does next.
enum Job {
    Commit(Arc<Vec<Row>>),
    CatchUp(Behind),
}

fn run(conn: &rusqlite::Connection, shared: &Shared, tuning: Tuning, catch_up: &CatchUp) {
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if !state.flushing.is_empty() {
                    // A failed commit: try it again.
                    break Job::Commit(Arc::clone(&state.flushing));
                }
                if let Some(behind) = state.behind() {
                    // Before anything newer, so the index has no hole.
                    break Job::CatchUp(behind);
                }
                let due = state.since.map(|t| t + tuning.flush_after);
                let now = Instant::now();
                if !state.waiting.is_empty()
                    && (state.closed
                        || state.waiting.len() >= FLUSH_ROWS
                        || due.is_some_and(|d| d <= now))
                {
                    state.flushing = Arc::new(std::mem::take(&mut state.waiting));
                    state.since = None;
                    break Job::Commit(Arc::clone(&state.flushing));
                }
                if state.closed {
                    return;
                }
                state = match due {
                    Some(d) => {
                        shared
                            .wake
                            .wait_timeout(state, d.saturating_duration_since(now))
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => shared.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
                };
            }
        };
        let (done, failed) = match &job {
            Job::Commit(batch) => (
                batch.iter().map(|r| r.seq).max().unwrap_or(0),
                commit(conn, batch).err(),
            ),
            Job::CatchUp(behind) => {
                tracing::info!(
                    after = behind.indexed,
                    through = behind.through,
                    "indexing from the segments the records whose rows were dropped from memory"
                );
                (
                    behind.through,
                    catch_up(conn, behind.indexed, behind.through).err(),
                )
            }
        };
        let mut state = shared.lock();
        state.failing = failed.is_some();
        match failed {
            None => {
                state.indexed = state.indexed.max(done);
                if let Job::Commit(_) = job {
                    state.flushing = Arc::default();
                } else {
                    tracing::info!(
                        through = done,
                        "the access log's index has caught up; listings are complete again"
                    );
                }
            }
            Some(e) => {
                match &job {
                    Job::Commit(batch) => {
                        tracing::error!(error = %e, rows = batch.len(), "could not update the access log's index; the rows stay in memory and are retried")
                    }
                    Job::CatchUp(_) => {
                        tracing::error!(error = %e, "could not index the dropped rows from the segments; retrying")
                    }
                }
                if state.closed {
                    // Opening the log re-indexes them from the segments.
                    return;
                }
                drop(
                    shared
                        .wake
                        .wait_timeout(state, tuning.retry_after)
                        .unwrap_or_else(|p| p.into_inner()),
                );
            }
        }
    }
}

fn commit(conn: &rusqlite::Connection, rows: &[Row]) -> std::io::Result<()> {
    // In key order, B-tree inserts walk the leaves once instead of landing
    // on a random page each (subjects arrive in random order). Stable: of
    // two positions of one checkpoint, the later must still win.
    let mut keyed: Vec<&Row> = rows.iter().collect();
    keyed.sort_by(|a, b| (&a.subject, a.seq).cmp(&(&b.subject, b.seq)));
    let mut batch = Batch::begin(conn)?;
    let added = keyed.iter().try_for_each(|r| match &r.subject {
        Some(subject) => batch.row(subject, r.seq, r.at),
        None => batch.mark(r.seq, r.at),
    });
    match added {
        Ok(()) => batch.commit(),
        Err(e) => {
            batch.rollback();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits only when dropped or closed, and never re-reads anything.
    fn idle() -> Tuning {
        Tuning {
            flush_after: Duration::from_secs(3600),
            ..Tuning::default()
        }
    }

    fn no_catch_up() -> CatchUp {
        Box::new(|_, _, _| Err(std::io::Error::other("nothing to re-read in this test")))
    }

    fn row(subject: Option<&str>, seq: u64) -> Row {
        Row {
            subject: subject.map(Into::into),
            seq,
            at: Position {
                segment: 1,
                offset: seq * 100,
            },
        }
    }

    #[test]
    fn rows_are_seen_once_before_and_after_they_reach_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let pending = Indexer::pending();
        // Nothing is committed before the drop.
        let indexer = Indexer::start(dir.path(), 0, &pending, idle(), no_catch_up()).unwrap();
        let mut rows = Vec::new();
        for seq in 1..=10 {
            let subject = if seq % 2 == 0 { "even" } else { "odd" };
            rows.push(row(Some(subject), seq));
        }
        rows.push(row(None, 10));
        indexer.add(rows);
        // Before any commit: all from memory, newest first, within the bounds.
        let (seen, indexed) = pending.page("even", 10, 8, 100).unwrap();
        assert_eq!(seen.iter().map(|r| r.0).collect::<Vec<_>>(), [8, 6, 4, 2]);
        assert_eq!(indexed, 0);
        assert_eq!(pending.page("odd", u64::MAX, 10, 2).unwrap().0.len(), 2);
        // Dropping commits what is left; the index then has every row and
        // memory none of them.
        drop(indexer);
        let (seen, indexed) = pending.page("even", u64::MAX, 10, 100).unwrap();
        assert!(seen.is_empty());
        assert_eq!(indexed, 10);
        assert_eq!(pending.mark_at_or_before(10), None);
        let conn = index::open_reader(dir.path()).unwrap();
        let from_index = index::page(&conn, "even", u64::MAX, 10, 100).unwrap();
        assert_eq!(
            from_index.iter().map(|r| r.0).collect::<Vec<_>>(),
            [10, 8, 6, 4, 2]
        );
        assert_eq!(from_index[0].1.offset, 1000);
        assert_eq!(index::indexed_seq(&conn).unwrap(), 10);
        assert_eq!(
            index::mark_at_or_before(&conn, 10).unwrap().map(|m| m.0),
            Some(10)
        );
    }

    #[test]
    fn a_checkpoint_waiting_in_memory_is_found_before_the_index_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let pending = Indexer::pending();
        let indexer = Indexer::start(dir.path(), 0, &pending, idle(), no_catch_up()).unwrap();
        indexer.add(vec![row(None, 5), row(Some("a"), 6), row(None, 9)]);
        assert_eq!(pending.mark_at_or_before(8).map(|m| m.0), Some(5));
        assert_eq!(pending.mark_at_or_before(9).map(|m| m.0), Some(9));
        assert_eq!(pending.mark_at_or_before(4), None);
        drop(indexer);
    }

    /// Rows are committed in key order, and of two positions of one
    /// checkpoint (a segment's final line and the next one's opening copy)
    /// the one handed over later is the one kept.
    #[test]
    fn a_checkpoint_keeps_its_later_position_when_rows_are_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let pending = Indexer::pending();
        let indexer = Indexer::start(dir.path(), 0, &pending, idle(), no_catch_up()).unwrap();
        let opening = Position {
            segment: 11,
            offset: 0,
        };
        indexer.add(vec![row(Some("z"), 9), row(Some("a"), 10), row(None, 10)]);
        indexer.add(vec![Row {
            subject: None,
            seq: 10,
            at: opening,
        }]);
        drop(indexer);
        let conn = index::open_reader(dir.path()).unwrap();
        assert_eq!(
            index::mark_at_or_before(&conn, 10).unwrap(),
            Some((10, opening))
        );
        assert_eq!(index::page(&conn, "z", u64::MAX, 10, 10).unwrap().len(), 1);
    }

    /// While another connection holds the index's write lock, rows past
    /// `max_rows` are dropped and listings say the index is behind instead
    /// of leaving records out; once the lock is gone, the dropped range is
    /// re-read (here from a stand-in for the segments) before anything
    /// newer is committed, and every row is listed again.
    #[test]
    fn rows_dropped_while_the_index_is_locked_are_read_again_before_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let pending = Indexer::pending();
        let tuning = Tuning {
            flush_after: Duration::from_millis(1),
            max_rows: 4,
            busy_timeout: Duration::from_millis(5),
            retry_after: Duration::from_millis(5),
        };
        // The stand-in for the segments: record n names "s".
        let (asked, asked_rx) = std::sync::mpsc::channel();
        let catch_up: CatchUp = Box::new(move |conn, after, through| {
            asked.send((after, through)).unwrap();
            let mut batch = index::Batch::begin(conn)?;
            for seq in after + 1..=through {
                batch.row(
                    "s",
                    seq,
                    Position {
                        segment: 1,
                        offset: seq * 100,
                    },
                )?;
            }
            batch.commit()
        });
        let indexer = Indexer::start(dir.path(), 0, &pending, tuning, catch_up).unwrap();
        let lock = rusqlite::Connection::open(dir.path().join(index::INDEX_FILE)).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();

        indexer.add(vec![row(Some("s"), 1), row(Some("s"), 2)]);
        // Rows 1-2 go to the thread, whose commit fails and is retried.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pending.0.lock().failing {
            assert!(
                Instant::now() < deadline,
                "the commit of rows 1-2 never failed"
            );
            std::thread::yield_now();
        }
        assert!(pending.0.lock().flushing.iter().any(|r| r.seq == 2));
        indexer.add(vec![row(Some("s"), 3), row(Some("s"), 4)]);
        assert_eq!(pending.page("s", u64::MAX, 4, 10).unwrap().0.len(), 4);
        // Past four rows waiting: 3-7 are dropped; memory holds 1-2 only.
        indexer.add(vec![
            row(Some("s"), 5),
            row(Some("s"), 6),
            row(Some("s"), 7),
        ]);
        assert_eq!(pending.0.lock().waiting.len(), 0);
        assert_eq!(
            pending.page("s", u64::MAX, 7, 10),
            Err(Behind {
                indexed: 0,
                through: 7
            })
        );
        // A row that arrives later waits in memory, behind the gap.
        indexer.add(vec![row(Some("s"), 8)]);
        assert!(pending.page("s", u64::MAX, 8, 10).is_err());

        lock.execute_batch("ROLLBACK").unwrap();
        // Rows 1-2 commit, then 3-7 are re-read, then 8 commits.
        assert_eq!(asked_rx.recv_timeout(Duration::from_secs(30)), Ok((2, 7)));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = pending.0.lock();
            if state.indexed == 8 {
                break;
            }
            drop(state);
            assert!(Instant::now() < deadline, "the index never caught up");
            std::thread::yield_now();
        }
        let (mem, indexed) = pending.page("s", u64::MAX, 8, 10).unwrap();
        assert!(mem.is_empty());
        assert_eq!(indexed, 8);
        drop(indexer);
        let conn = index::open_reader(dir.path()).unwrap();
        let listed = index::page(&conn, "s", u64::MAX, 8, 100).unwrap();
        assert_eq!(
            listed.iter().map(|r| r.0).collect::<Vec<_>>(),
            [8, 7, 6, 5, 4, 3, 2, 1]
        );
        assert_eq!(index::indexed_seq(&conn).unwrap(), 8);
    }
}
