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
    closed: bool,
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
    /// the index is then asked for, so no row is returned twice).
    pub fn page(
        &self,
        subject: &str,
        before: u64,
        last: u64,
        limit: usize,
    ) -> (Vec<(u64, Position)>, u64) {
        let state = self.0.lock();
        let rows = state
            .waiting
            .iter()
            .rev()
            .chain(state.flushing.iter().rev())
            .filter(|r| r.seq < before && r.seq <= last && r.subject.as_deref() == Some(subject))
            .take(limit)
            .map(|r| (r.seq, r.at))
            .collect();
        (rows, state.indexed)
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
    thread: Option<JoinHandle<()>>,
}

impl Indexer {
    /// Starts the thread on `dir`'s index, which holds every row up to
    /// `indexed`, with `pending` (from [`Indexer::pending`] of a store not
    /// yet opened) as the readers' view.
    pub fn start(dir: &Path, indexed: u64, pending: &Pending) -> std::io::Result<Self> {
        Self::start_flushing_after(dir, indexed, pending, FLUSH_AFTER)
    }

    fn start_flushing_after(
        dir: &Path,
        indexed: u64,
        pending: &Pending,
        flush_after: Duration,
    ) -> std::io::Result<Self> {
        let conn = index::open_writer(dir)?;
        // A page cache that holds the hot part of the B-tree, and a WAL that
        // takes several batches before it is copied back.
        conn.execute_batch("PRAGMA cache_size=-8192; PRAGMA wal_autocheckpoint=4096;")
            .map_err(|e| std::io::Error::other(format!("{}: {e}", index::INDEX_FILE)))?;
        let shared = Arc::clone(&pending.0);
        shared.lock().indexed = indexed;
        let thread = std::thread::Builder::new()
            .name("audit-index".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&conn, &shared, flush_after)
            })?;
        Ok(Self {
            shared,
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

fn run(conn: &rusqlite::Connection, shared: &Shared, flush_after: Duration) {
    loop {
        let batch = {
            let mut state = shared.lock();
            loop {
                if !state.flushing.is_empty() {
                    // A failed commit: try it again (with what came since).
                    break;
                }
                let due = state.since.map(|t| t + flush_after);
                let now = Instant::now();
                if !state.waiting.is_empty()
                    && (state.closed
                        || state.waiting.len() >= FLUSH_ROWS
                        || due.is_some_and(|d| d <= now))
                {
                    state.flushing = Arc::new(std::mem::take(&mut state.waiting));
                    state.since = None;
                    break;
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
            Arc::clone(&state.flushing)
        };
        match commit(conn, &batch) {
            Ok(()) => {
                let mut state = shared.lock();
                if let Some(last) = batch.iter().map(|r| r.seq).max() {
                    state.indexed = state.indexed.max(last);
                }
                state.flushing = Arc::default();
            }
            Err(e) => {
                tracing::error!(error = %e, rows = batch.len(), "could not update the access log's index; the rows stay in memory and are retried");
                let state = shared.lock();
                if state.closed {
                    // Opening the log re-indexes them from the segments.
                    return;
                }
                drop(
                    shared
                        .wake
                        .wait_timeout(state, RETRY_AFTER)
                        .unwrap_or_else(|p| p.into_inner()),
                );
            }
        }
    }
}

fn commit(conn: &rusqlite::Connection, rows: &[Row]) -> std::io::Result<()> {
    let mut batch = Batch::begin(conn)?;
    let added = rows.iter().try_for_each(|r| match &r.subject {
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
        let hour = Duration::from_secs(3600);
        let indexer = Indexer::start_flushing_after(dir.path(), 0, &pending, hour).unwrap();
        let mut rows = Vec::new();
        for seq in 1..=10 {
            let subject = if seq % 2 == 0 { "even" } else { "odd" };
            rows.push(row(Some(subject), seq));
        }
        rows.push(row(None, 10));
        indexer.add(rows);
        // Before any commit: all from memory, newest first, within the bounds.
        let (seen, indexed) = pending.page("even", 10, 8, 100);
        assert_eq!(seen.iter().map(|r| r.0).collect::<Vec<_>>(), [8, 6, 4, 2]);
        assert_eq!(indexed, 0);
        assert_eq!(pending.page("odd", u64::MAX, 10, 2).0.len(), 2);
        // Dropping commits what is left; the index then has every row and
        // memory none of them.
        drop(indexer);
        let (seen, indexed) = pending.page("even", u64::MAX, 10, 100);
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
        let hour = Duration::from_secs(3600);
        let indexer = Indexer::start_flushing_after(dir.path(), 0, &pending, hour).unwrap();
        indexer.add(vec![row(None, 5), row(Some("a"), 6), row(None, 9)]);
        assert_eq!(pending.mark_at_or_before(8).map(|m| m.0), Some(5));
        assert_eq!(pending.mark_at_or_before(9).map(|m| m.0), Some(9));
        assert_eq!(pending.mark_at_or_before(4), None);
        drop(indexer);
    }
}
