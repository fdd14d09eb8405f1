//! The budget's file: one row per failed `VerifyCitizen` call (agency,
//! personal id, kind, time), in SQLite beside the registry store. Rows are
//! written only when a verification fails, in WAL mode with
//! `synchronous=NORMAL`: a commit appends to the WAL without an fsync, so no
//! call pays for a disk flush, and a process crash loses nothing (a power
//! cut can lose the last commits). Rows are kept [`KEEP_DAYS`] days for
//! `report verifications`, then deleted.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rusqlite::{params, Connection, OpenFlags};

/// Failed verifications are kept this long for reports.
pub const KEEP_DAYS: i64 = 90;
const KEEP_MS: i64 = KEEP_DAYS * 24 * 3600 * 1000;
const SCHEMA_VERSION: i64 = 1;

/// Why the budget's file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("verification budget {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "verification budget {}: schema version {found}, this gateway knows {SCHEMA_VERSION}",
        path.display()
    )]
    Version { path: PathBuf, found: i64 },
    #[error("verification budget worker failed: {0}")]
    Worker(String),
}

/// What a failed verification told the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Answered with `match = false`.
    Mismatch,
    /// The personal id is not in the registry (NOT_FOUND).
    NotFound,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Mismatch => "mismatch",
            FailureKind::NotFound => "not_found",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "mismatch" => Some(FailureKind::Mismatch),
            "not_found" => Some(FailureKind::NotFound),
            _ => None,
        }
    }
}

/// One failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRow {
    pub agency: String,
    pub subject: String,
    pub kind: FailureKind,
    pub at_ms: i64,
}

/// The open file. Cloning shares the connection.
#[derive(Clone)]
pub(super) struct FailureStore {
    path: PathBuf,
    // A std Mutex: taken only on a blocking thread, never across an await.
    conn: Arc<Mutex<Connection>>,
}

impl FailureStore {
    /// Opens (creating when missing) the file and deletes rows older than
    /// [`KEEP_DAYS`] before `now_ms`.
    pub(super) fn open(path: &Path, now_ms: i64) -> Result<Self, BudgetError> {
        let sqlite = |source| BudgetError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sqlite)?;
        match version {
            0 => conn
                .execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS verify_failures (
                         agency TEXT NOT NULL,
                         subject TEXT NOT NULL,
                         kind TEXT NOT NULL,
                         at_ms INTEGER NOT NULL);
                     CREATE INDEX IF NOT EXISTS verify_failures_at ON verify_failures(at_ms);
                     PRAGMA user_version = {SCHEMA_VERSION};"
                ))
                .map_err(sqlite)?,
            SCHEMA_VERSION => {}
            found => {
                return Err(BudgetError::Version {
                    path: path.to_owned(),
                    found,
                })
            }
        }
        conn.execute(
            "DELETE FROM verify_failures WHERE at_ms < ?1",
            params![now_ms - KEEP_MS],
        )
        .map_err(sqlite)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Rows at or after `since_ms`, oldest first.
    pub(super) fn since(&self, since_ms: i64) -> Result<Vec<FailureRow>, BudgetError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        rows(&conn, since_ms).map_err(|source| BudgetError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Appends a row (and, when `prune_before_ms` is set, deletes rows
    /// older than it), on a blocking thread.
    pub(super) async fn insert(
        &self,
        row: FailureRow,
        prune_before_ms: Option<i64>,
    ) -> Result<(), BudgetError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.conn.lock().unwrap_or_else(|e| e.into_inner());
            let sqlite = |source| BudgetError::Sqlite {
                path: this.path.clone(),
                source,
            };
            conn.execute(
                "INSERT INTO verify_failures (agency, subject, kind, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![row.agency, row.subject, row.kind.as_str(), row.at_ms],
            )
            .map_err(sqlite)?;
            if let Some(before) = prune_before_ms {
                conn.execute(
                    "DELETE FROM verify_failures WHERE at_ms < ?1",
                    params![before],
                )
                .map_err(sqlite)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| BudgetError::Worker(e.to_string()))?
    }
}

/// How long rows are kept, as a cutoff before `now_ms`.
pub(super) fn keep_cutoff(now_ms: i64) -> i64 {
    now_ms - KEEP_MS
}

fn rows(conn: &Connection, since_ms: i64) -> rusqlite::Result<Vec<FailureRow>> {
    let mut stmt = conn.prepare(
        "SELECT agency, subject, kind, at_ms FROM verify_failures WHERE at_ms >= ?1 ORDER BY at_ms",
    )?;
    let rows = stmt.query_map(params![since_ms], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (agency, subject, kind, at_ms) = row?;
        // A kind this version does not know counts as a mismatch: still a
        // failure, never a free guess.
        let kind = FailureKind::parse(&kind).unwrap_or(FailureKind::Mismatch);
        out.push(FailureRow {
            agency,
            subject,
            kind,
            at_ms,
        });
    }
    Ok(out)
}

/// Every kept row of the file at `path`, read-only (for reports); none when
/// the file does not exist yet.
pub fn read_all(path: &Path) -> Result<Vec<FailureRow>, BudgetError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let sqlite = |source| BudgetError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite)?;
    rows(&conn, i64::MIN).map_err(sqlite)
}
