//! The embedded store: one SQLite file holding every record protobuf-encoded,
//! keyed by its identifier, with an index of parcels by holder. Lookups are
//! primary-key or index seeks, so their cost does not grow with the registry.
//!
//! SQLite is synchronous; reads run on a fixed set of reader threads, each
//! with its own read-only connection (WAL mode lets them run beside an
//! import), fed from one queue. A fixed set keeps memory bounded (one SQLite
//! page cache per reader, whatever the number of calls in flight) and, under
//! load, readers take the next lookup without sleeping in between.

use std::{
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

/// Current layout of the store file (`PRAGMA user_version`). Version 2 added
/// `as_of` (when each record was current, Unix milliseconds) to the record
/// tables; a version 1 store is brought up to date when it is opened.
const SCHEMA_VERSION: i64 = 2;

/// Version 1 to 2: adding a nullable column rewrites nothing.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE citizen ADD COLUMN as_of INTEGER;
ALTER TABLE enterprise ADD COLUMN as_of INTEGER;
ALTER TABLE parcel ADD COLUMN as_of INTEGER;
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS citizen (
    personal_id TEXT PRIMARY KEY,
    record BLOB NOT NULL,
    as_of INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS enterprise (
    enterprise_code TEXT PRIMARY KEY,
    record BLOB NOT NULL,
    as_of INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parcel (
    commune_code TEXT NOT NULL,
    map_sheet INTEGER NOT NULL,
    parcel_number INTEGER NOT NULL,
    record BLOB NOT NULL,
    as_of INTEGER,
    PRIMARY KEY (commune_code, map_sheet, parcel_number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parcel_holder (
    holder_id TEXT NOT NULL,
    commune_code TEXT NOT NULL,
    map_sheet INTEGER NOT NULL,
    parcel_number INTEGER NOT NULL,
    PRIMARY KEY (holder_id, commune_code, map_sheet, parcel_number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parcel_holder_by_parcel
    ON parcel_holder (commune_code, map_sheet, parcel_number);
";

/// A store that cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path} does not exist; create it with `interop-gateway import` (every registry service without an `upstream` is served from it; an empty file makes an empty registry)")]
    Missing { path: PathBuf },
    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "store {path} has layout version {found}, this gateway reads version {SCHEMA_VERSION}"
    )]
    Version { path: PathBuf, found: i64 },
    #[error("store worker failed: {0}")]
    Join(String),
}

/// A stored record: its protobuf encoding, unmasked, and when it was current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub record: Vec<u8>,
    /// Unix milliseconds: the extract's `asOf` for the record, or the time
    /// it was imported; `None` for records imported before stores kept it.
    pub as_of_ms: Option<i64>,
}

fn stored(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Stored> {
    Ok(Stored {
        record: r.get(first)?,
        as_of_ms: r.get(first + 1)?,
    })
}

/// Identifies a parcel in the store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParcelKey {
    pub commune_code: String,
    pub map_sheet: u32,
    pub parcel_number: u32,
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    Ok(conn)
}

/// Read access to the store, shared by every request.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

type Job = Box<dyn FnOnce(&Connection) + Send>;

struct Inner {
    path: PathBuf,
    /// The readers' queue; dropping the last `Store` closes it and the
    /// readers exit.
    jobs: mpsc::Sender<Job>,
}

/// Reader threads: enough to keep every core busy and to overlap a few
/// reads that miss the page cache.
fn reader_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

impl Store {
    /// Opens an existing store for reading and starts its readers.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        // An older layout is brought up to date first (readers are read-only).
        let version: i64 = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .map_err(|source| StoreError::Sqlite {
                path: path.to_owned(),
                source,
            })?;
        if version < SCHEMA_VERSION {
            drop(open_for_write(path)?);
        }
        // Open every connection now, so a broken file fails the start, not a call.
        let conns = (0..reader_count())
            .map(|_| connect(path))
            .collect::<Result<Vec<_>, _>>()?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for (i, conn) in conns.into_iter().enumerate() {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("store-reader-{i}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panicking read loses its answer (the caller sees
                        // the reader gone), not the reader.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                job(&conn)
                            }));
                        }
                        Err(_) => return,
                    }
                })
                .map_err(|e| StoreError::Join(format!("cannot start a store reader: {e}")))?;
        }
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                jobs,
            }),
        })
    }

    /// A store with no file and no readers, for a gateway that forwards
    /// every registry service to its owner: a read fails as unavailable.
    pub fn detached(path: &Path) -> Store {
        let (jobs, _) = mpsc::channel::<Job>();
        Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                jobs,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a reader thread with its connection.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let path = self.inner.path.clone();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn).map_err(|source| StoreError::Sqlite { path, source }));
        });
        self.inner
            .jobs
            .send(job)
            .map_err(|_| StoreError::Join("the store readers have stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Join("a store reader stopped during a read".into()))?
    }

    pub async fn citizen(&self, personal_id: &str) -> Result<Option<Stored>, StoreError> {
        let id = personal_id.to_owned();
        self.with_conn(move |c| {
            c.prepare_cached("SELECT record, as_of FROM citizen WHERE personal_id = ?1")?
                .query_row([id], |r| stored(r, 0))
                .optional()
        })
        .await
    }

    pub async fn enterprise(&self, code: &str) -> Result<Option<Stored>, StoreError> {
        let code = code.to_owned();
        self.with_conn(move |c| {
            c.prepare_cached("SELECT record, as_of FROM enterprise WHERE enterprise_code = ?1")?
                .query_row([code], |r| stored(r, 0))
                .optional()
        })
        .await
    }

    pub async fn parcel(&self, key: &ParcelKey) -> Result<Option<Stored>, StoreError> {
        let key = key.clone();
        self.with_conn(move |c| {
            c.prepare_cached(
                "SELECT record, as_of FROM parcel
                 WHERE commune_code = ?1 AND map_sheet = ?2 AND parcel_number = ?3",
            )?
            .query_row(
                params![key.commune_code, key.map_sheet, key.parcel_number],
                |r| stored(r, 0),
            )
            .optional()
        })
        .await
    }

    /// Parcels held by `holder_id` in key order, strictly after `after`, at most `limit`.
    pub async fn parcels_by_holder(
        &self,
        holder_id: &str,
        after: Option<ParcelKey>,
        limit: usize,
    ) -> Result<Vec<(ParcelKey, Stored)>, StoreError> {
        let holder = holder_id.to_owned();
        let after = after.unwrap_or(ParcelKey {
            commune_code: String::new(),
            map_sheet: 0,
            parcel_number: 0,
        });
        self.with_conn(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT p.commune_code, p.map_sheet, p.parcel_number, p.record, p.as_of
                 FROM parcel_holder h
                 JOIN parcel p ON p.commune_code = h.commune_code
                    AND p.map_sheet = h.map_sheet AND p.parcel_number = h.parcel_number
                 WHERE h.holder_id = ?1
                   AND (h.commune_code, h.map_sheet, h.parcel_number) > (?2, ?3, ?4)
                 ORDER BY h.commune_code, h.map_sheet, h.parcel_number
                 LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![
                    holder,
                    after.commune_code,
                    after.map_sheet,
                    after.parcel_number,
                    limit as i64
                ],
                |r| {
                    Ok((
                        ParcelKey {
                            commune_code: r.get(0)?,
                            map_sheet: r.get(1)?,
                            parcel_number: r.get(2)?,
                        },
                        stored(r, 3)?,
                    ))
                },
            )?;
            rows.collect()
        })
        .await
    }
}

/// Opens (creating if needed) a store for writing and brings its layout up to date.
pub fn open_for_write(path: &Path) -> Result<Connection, StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Sqlite {
            path: path.to_owned(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
    }
    let conn = Connection::open(path).map_err(sqlite)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    if !(0..=SCHEMA_VERSION).contains(&version) {
        return Err(StoreError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    if version == 1 {
        let tx = conn.unchecked_transaction().map_err(sqlite)?;
        tx.execute_batch(MIGRATE_1_TO_2).map_err(sqlite)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
    }
    conn.execute_batch(SCHEMA).map_err(sqlite)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    Ok(conn)
}

/// Upserts within an open write transaction.
pub struct Writer<'t> {
    tx: &'t Transaction<'t>,
}

impl<'t> Writer<'t> {
    pub fn new(tx: &'t Transaction<'t>) -> Self {
        Self { tx }
    }

    /// `as_of`: Unix milliseconds when the record was current.
    pub fn citizen(&self, personal_id: &str, record: &[u8], as_of: i64) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO citizen (personal_id, record, as_of) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![personal_id, record, as_of])?;
        Ok(())
    }

    pub fn enterprise(&self, code: &str, record: &[u8], as_of: i64) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO enterprise (enterprise_code, record, as_of) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![code, record, as_of])?;
        Ok(())
    }

    pub fn parcel(
        &self,
        key: &ParcelKey,
        holders: &[&str],
        record: &[u8],
        as_of: i64,
    ) -> rusqlite::Result<()> {
        let k = params![key.commune_code, key.map_sheet, key.parcel_number];
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO parcel (commune_code, map_sheet, parcel_number, record, as_of)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                key.commune_code,
                key.map_sheet,
                key.parcel_number,
                record,
                as_of
            ])?;
        self.tx
            .prepare_cached(
                "DELETE FROM parcel_holder
                 WHERE commune_code = ?1 AND map_sheet = ?2 AND parcel_number = ?3",
            )?
            .execute(k)?;
        let mut insert = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO parcel_holder (holder_id, commune_code, map_sheet, parcel_number)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for h in holders {
            insert.execute(params![
                h,
                key.commune_code,
                key.map_sheet,
                key.parcel_number
            ])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{import::import_file, Registry};

    #[tokio::test]
    async fn a_layout_1_store_is_migrated_on_open_and_keeps_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE citizen (personal_id TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
                 CREATE TABLE enterprise (enterprise_code TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
                 CREATE TABLE parcel (commune_code TEXT NOT NULL, map_sheet INTEGER NOT NULL,
                     parcel_number INTEGER NOT NULL, record BLOB NOT NULL,
                     PRIMARY KEY (commune_code, map_sheet, parcel_number)) WITHOUT ROWID;
                 INSERT INTO citizen VALUES ('092085000123', x'0a01');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let stored = store.citizen("092085000123").await.unwrap().unwrap();
        assert_eq!(stored.record, vec![0x0a, 0x01]);
        assert_eq!(stored.as_of_ms, None);
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn records_keep_the_extracts_as_of_or_their_import_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        let file = dir.path().join("enterprises.jsonl");
        let line = |code: &str, as_of: &str| {
            format!(
                r#"{{"enterpriseCode":"{code}","name":"Công ty TNHH Tây Đô","type":"ENTERPRISE_TYPE_MULTI_MEMBER_LLC","status":"ENTERPRISE_STATUS_OPERATING","foundedOn":{{"year":2010,"month":6,"day":1}},"headOffice":{{"addressLine":"1 Hòa Bình","communeCode":"31117","communeName":"Phường Ninh Kiều","provinceCode":"92","provinceName":"Cần Thơ"}}{as_of}}}"#
            )
        };
        std::fs::write(
            &file,
            format!(
                "{}\n{}\n",
                line("0300588569", r#","asOf":"2026-11-01T00:00:00Z""#),
                line("0100109106", "")
            ),
        )
        .unwrap();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        import_file(&path, Registry::Business, &file).unwrap();
        let store = Store::open(&path).unwrap();
        let given = store.enterprise("0300588569").await.unwrap().unwrap();
        assert_eq!(given.as_of_ms, Some(1_793_491_200_000));
        let imported = store.enterprise("0100109106").await.unwrap().unwrap();
        assert!(imported.as_of_ms.unwrap() >= before);

        for bad in [
            r#","asOf":"yesterday""#,
            r#","asOf":"2099-01-01T00:00:00Z""#,
        ] {
            std::fs::write(&file, line("0300588569", bad) + "\n").unwrap();
            let err = import_file(&path, Registry::Business, &file).unwrap_err();
            assert!(err.to_string().contains(":1: asOf"), "{err}");
        }
    }
}
