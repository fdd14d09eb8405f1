//! The access log kept in PostgreSQL (`[audit] database_url`): the schema and
//! its migrations, the bounded connection pool, one instance's chain storage
//! (group commit: a whole batch of records, their subject index rows and the
//! checkpoints due among them in one transaction), the cross-instance queries
//! behind `ListAccessRecords`, the page-token key every instance shares, the
//! live feed of every instance's commits for `WatchAccessRecords` (see
//! *Live feed* below), and [`verify_database`] for
//! `audit verify --database-url`.
//!
//! The hash chain and checkpoint formulas are [`super::chain`]'s; this module
//! only stores what the writer computed and reads it back.
//!
//! # Tables
//!
//! - `audit_schema(version)`: migrations applied, one row each.
//! - `audit_settings`: one row, the 64-byte page-token secret shared by every
//!   instance (so any instance accepts any other's tokens).
//! - `audit_instances(instance, public_key)`: the chains and the key each is
//!   signed with.
//! - `audit_records(instance, seq, hash, time_unix_ms, record)`: per instance
//!   seqs 1, 2, 3, ... without gap; `record` is the record's JSON.
//! - `audit_checkpoints(instance, seq, hash, time_unix_ms, signature)`: the
//!   signed checkpoints, starting with a genesis (seq 0) per instance.
//! - `audit_subjects(subject, time_unix_ms, instance, seq)`: the subject
//!   index, only valid identifiers (as the file log's).
//!
//! # One writer per chain
//!
//! An instance holds a session advisory lock on its name for as long as it
//! writes (on a connection of its own, outside the pool). A second live
//! process with the same `[audit] instance` is refused at start; when the
//! database restarts the lock is taken again before the next write. The lock
//! key is `hashtext(instance)`: two names with the same 32-bit hash cannot
//! run at once (the second is refused as if it were the same instance, and
//! renaming one fixes it), which errs on the safe side.
//!
//! # Live feed
//!
//! Once a group is committed, the writer sends
//! `pg_notify('interop_audit_records', '<instance> <last seq>')` in a
//! transaction of its own with `synchronous_commit` off, without waiting for
//! it. Not in the group's own transaction: PostgreSQL holds one lock for
//! every notifying transaction until its commit is flushed, which would make
//! the instances' group commits wait on one another (measured: 15-30% of the
//! log's throughput). And only while some gateway's feed listens: each
//! instance looks every second for a connection named
//! `interop-gateway-feed`, and on finding one first announces its last
//! commit, so a record committed as a feed begins to listen waits at most
//! that second. A notification lost with its connection (or its process)
//! right after a commit delays those records until that instance's next
//! notification; none is ever skipped.
//!
//! One task per process (started by the first watcher, on the store's
//! runtime) `LISTEN`s on a connection of its own, outside the pool;
//! on each notification it reads the new records of that instance once, on
//! that connection, and publishes them on a bounded broadcast
//! ([`ChainsReader::subscribe`]) that every watcher of this process follows.
//! Notifications are only a wake-up: the task reads from the last seq it
//! published, so a payload that lies makes it read, never skip. With no
//! subscriber it reads nothing. When its connection is lost it connects
//! again at once, and after every (re)connection it tells subscribers to
//! read back from the database what was committed meanwhile
//! ([`ChainEvent::Resync`]); when the database cannot be reached it tells
//! them so ([`ChainEvent::Unavailable`]) and retries with a bounded backoff.

use std::{
    borrow::Cow,
    io,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;

use super::{
    chain::{self, Checkpoint, GENESIS},
    record::AuditRecord,
    signer::Signer,
    store::{
        AuditReader, AuditStore, ChainEvent, ChainRecord, ChainsReader, Entry, Positions,
        Recovered, SubjectRow,
    },
    verify::VerifyFailure,
    AuditError,
};

/// The channel each group commit notifies (see *Live feed*): a macro, so the
/// commit's SQL and the listener name the same one.
macro_rules! feed_channel {
    () => {
        "interop_audit_records"
    };
}

/// The `application_name` of every gateway's feed connection: how an
/// instance knows that a feed listens (see *Live feed*).
const FEED_APPLICATION_NAME: &str = "interop-gateway-feed";

mod feed;

/// Migrations, in order; each runs once, in one transaction with its
/// `audit_schema` row, under a transaction advisory lock so two instances
/// starting together do not both run it.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE audit_settings (
         id boolean PRIMARY KEY DEFAULT true CHECK (id),
         page_token_key bytea NOT NULL CHECK (length(page_token_key) = 64)
     );
     CREATE TABLE audit_instances (
         instance text PRIMARY KEY,
         public_key bytea NOT NULL CHECK (length(public_key) = 32),
         created_unix_ms bigint NOT NULL
     );
     CREATE TABLE audit_records (
         instance text NOT NULL REFERENCES audit_instances,
         seq bigint NOT NULL CHECK (seq > 0),
         hash bytea NOT NULL,
         time_unix_ms bigint NOT NULL,
         record text NOT NULL,
         PRIMARY KEY (instance, seq)
     );
     CREATE TABLE audit_checkpoints (
         instance text NOT NULL REFERENCES audit_instances,
         seq bigint NOT NULL CHECK (seq >= 0),
         hash bytea NOT NULL,
         time_unix_ms bigint NOT NULL,
         signature bytea NOT NULL,
         PRIMARY KEY (instance, seq)
     );
     CREATE TABLE audit_subjects (
         subject text NOT NULL,
         time_unix_ms bigint NOT NULL,
         instance text NOT NULL,
         seq bigint NOT NULL,
         PRIMARY KEY (subject, time_unix_ms, instance, seq),
         FOREIGN KEY (instance, seq) REFERENCES audit_records
     );",
)];

/// Class of the advisory locks (the first key); the second is
/// `hashtext(instance)` for an instance's chain, or 0 for migrations.
const LOCK_CLASS: i32 = 0x001a_0d17;

/// Attempts to take an instance's lock at start, half a second apart.
const LOCK_TRIES: u32 = 6;

/// How long a commit or query may take before the log counts as failing.
pub const DB_TIMEOUT: Duration = Duration::from_secs(10);

fn db_err(what: &str) -> impl Fn(tokio_postgres::Error) -> AuditError + '_ {
    move |e| AuditError::Unavailable(format!("{what}: {}", describe(&e)))
}

/// A driver error with the server's own message when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// The URL as logs may show it: without a password.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The database `url` names, with the TLS its connections use
/// ([`super::pg_tls`]).
fn parse_url(url: &str) -> Result<super::pg_tls::Target, AuditError> {
    let mut target = super::pg_tls::target(url).map_err(|e| {
        AuditError::Options(format!(
            "database_url {}: {e}; expected postgresql://user[:password]@host[:port]/database[?sslmode=verify-full&sslrootcert=ca.pem]",
            redacted(url)
        ))
    })?;
    let config = &mut target.config;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("interop-gateway");
    }
    Ok(target)
}

/// A connection of its own holding one read-only snapshot of the whole
/// database, so a walk over it (`audit verify`, `audit export`, checking
/// witnesses' countersignatures) is not torn by a running gateway's writes.
struct ReadSnapshot {
    conn: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl ReadSnapshot {
    async fn open(url: &str) -> Result<ReadSnapshot, AuditError> {
        let (conn, connection) = connect_once(url).await?;
        let driver = tokio::spawn(connection);
        conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db_err("reading the audit database"))?;
        Ok(ReadSnapshot { conn, driver })
    }

    /// Ends the snapshot and waits for the connection to close.
    async fn close(self) {
        drop(self.conn);
        let _ = self.driver.await;
    }
}

/// One connection to the database `url` names, and its driver task (which
/// must be spawned).
async fn connect_once(
    url: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<
            tokio_postgres::Socket,
            <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                tokio_postgres::Socket,
            >>::Stream,
        >,
    ),
    AuditError,
> {
    let target = parse_url(url)?;
    target
        .config
        .connect(target.tls)
        .await
        .map_err(db_err("connecting to the audit database"))
}

/// A bounded pool on `url`: at most `size` connections; a call waits at most
/// [`DB_TIMEOUT`] for one. Connecting is lazy, so this does not touch the
/// database. Must be called inside a tokio runtime.
pub fn pool(url: &str, size: usize) -> Result<Pool, AuditError> {
    let target = parse_url(url)?;
    if target.verify == Some(super::pg_tls::Verify::Nothing) {
        tracing::warn!(
            url = %redacted(url),
            "the audit database's TLS certificate is not checked (sslmode prefer or require without sslrootcert); use sslmode=verify-full with sslrootcert"
        );
    }
    let manager = Manager::from_config(
        target.config,
        target.tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(DB_TIMEOUT))
        .create_timeout(Some(DB_TIMEOUT))
        .recycle_timeout(Some(DB_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| AuditError::Options(format!("database pool: {e}")))
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, AuditError> {
    pool.get().await.map_err(|e| {
        AuditError::Unavailable(format!(
            "no connection to the audit database: {}",
            match &e {
                deadpool_postgres::PoolError::Backend(b) => describe(b),
                other => other.to_string(),
            }
        ))
    })
}

/// Runs the migrations not yet applied. Refuses a database whose schema is
/// newer than this gateway knows.
pub async fn migrate(pool: &Pool) -> Result<(), AuditError> {
    let mut conn = client(pool).await?;
    let tx = conn
        .transaction()
        .await
        .map_err(db_err("migrating the audit database"))?;
    let failed = db_err("migrating the audit database");
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_CLASS])
        .await
        .map_err(&failed)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS audit_schema (
             version integer PRIMARY KEY,
             applied_unix_ms bigint NOT NULL
         )",
    )
    .await
    .map_err(&failed)?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM audit_schema", &[])
        .await
        .map_err(&failed)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(AuditError::Options(format!(
            "the audit database has schema version {current}, newer than this gateway's {known}: \
             upgrade the gateway"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await.map_err(&failed)?;
        tx.execute(
            "INSERT INTO audit_schema (version, applied_unix_ms) VALUES ($1, $2)",
            &[version, &now_unix_ms()],
        )
        .await
        .map_err(&failed)?;
    }
    tx.commit().await.map_err(&failed)
}

/// The 64-byte page-token secret every instance shares, created by whichever
/// instance first asks.
pub async fn page_token_secret(pool: &Pool) -> Result<[u8; 64], AuditError> {
    let conn = client(pool).await?;
    let failed = db_err("reading the shared page-token key");
    let mut fresh = [0u8; 64];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh).map_err(|_| {
        AuditError::Unavailable("no system randomness for the page-token key".into())
    })?;
    conn.execute(
        "INSERT INTO audit_settings (id, page_token_key) VALUES (true, $1) ON CONFLICT (id) DO NOTHING",
        &[&fresh.as_slice()],
    )
    .await
    .map_err(&failed)?;
    let key: Vec<u8> = conn
        .query_one("SELECT page_token_key FROM audit_settings", &[])
        .await
        .map_err(&failed)?
        .get(0);
    key.try_into()
        .map_err(|_| AuditError::Unavailable("the shared page-token key is not 64 bytes".into()))
}

/// A tokio runtime of the store's own (one worker), so the pool's
/// connections are driven whatever runtime, or none, the caller is on. Shut
/// down in the background when dropped, which is allowed anywhere.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// What the store and its readers share.
struct Inner {
    rt: OwnRuntime,
    pool: Pool,
    url: String,
    instance: String,
    /// The page-token secret every instance shares.
    secret: [u8; 64],
    /// The connection holding this instance's advisory lock; `None` or
    /// closed once lost (the database restarted) until the next write takes
    /// it again.
    lock: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// The live feed of every instance's commits, started by the first
    /// subscriber (see the module documentation).
    feed: std::sync::OnceLock<feed::Feed>,
    /// Whether a feed listens, and this instance's last commit.
    listeners: Arc<Listeners>,
}

/// What an instance knows of the feeds that listen (see *Live feed*).
struct Listeners {
    /// Whether some gateway's feed listens, as last looked up (true until
    /// known otherwise): commits notify only then.
    listened: std::sync::atomic::AtomicBool,
    /// The last seq this instance committed, for the notification sent when
    /// a feed appears.
    last_committed: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    /// Lets go of the instance's lock at once when this is not an async
    /// context (the writer thread ending): a gateway restarted in the same
    /// process may take its chain again right away. Otherwise the lock goes
    /// when its connection closes.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        let (Some(rt), Some(client)) = (&self.rt.0, self.lock.get_mut().take()) else {
            return;
        };
        rt.block_on(async move {
            let unlock = client.execute("SELECT pg_advisory_unlock_all()", &[]);
            let _ = tokio::time::timeout(Duration::from_secs(2), unlock).await;
        });
    }
}

impl Inner {
    /// Runs `fut` on the store's runtime, from a thread that is not one of
    /// its workers (the writer thread, a blocking-pool thread), giving up
    /// after [`DB_TIMEOUT`].
    fn block_on<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, AuditError>>,
    ) -> Result<T, AuditError> {
        let Some(rt) = &self.rt.0 else {
            return Err(AuditError::Unavailable(
                "the audit database store is closed".into(),
            ));
        };
        rt.block_on(async {
            match tokio::time::timeout(DB_TIMEOUT, fut).await {
                Ok(result) => result,
                Err(_) => Err(AuditError::Unavailable(format!(
                    "{what}: no answer from the audit database within {} s",
                    DB_TIMEOUT.as_secs()
                ))),
            }
        })
    }

    /// Takes the instance's advisory lock on a connection of its own, unless
    /// this process holds it already.
    async fn hold_lock(&self) -> Result<(), AuditError> {
        let mut held = self.lock.lock().await;
        if held.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        *held = None;
        let (lock_client, connection) = connect_once(&self.url).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(
                    error = %describe(&e),
                    "the audit database connection holding the instance lock ended"
                );
            }
        });
        // The server drops the lock when this connection dies; keepalives
        // make it notice a vanished host within about a minute instead of
        // the system default of hours.
        lock_client
            .batch_execute(
                "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; \
                 SET tcp_keepalives_count = 3",
            )
            .await
            .map_err(db_err("configuring the lock connection"))?;
        let got: bool = lock_client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &self.instance],
            )
            .await
            .map_err(db_err("locking the instance's chain"))?
            .get(0);
        if !got {
            return Err(AuditError::Options(format!(
                "another running gateway already writes the audit chain of instance {:?} in this \
                 database; give each gateway its own [audit] instance (the default is the host name)",
                self.instance
            )));
        }
        *held = Some(lock_client);
        Ok(())
    }
}

/// One instance's chain in PostgreSQL, for the writer thread.
pub struct PgStore {
    inner: Arc<Inner>,
    /// Seq of the last record known durable (recovered, or committed and
    /// confirmed): the next group must start right after it.
    durable_seq: u64,
    /// The last append failed: its commit may have gone through unconfirmed.
    uncertain: bool,
}

/// Reads of every instance's records, for request handlers.
pub struct PgReader {
    inner: Arc<Inner>,
}

impl PgStore {
    /// Connects, runs pending migrations, takes `instance`'s chain (its
    /// advisory lock: a second live process with that name is refused) and
    /// registers it with the signing key's public key and a signed genesis
    /// checkpoint, or checks the key it was registered with. Fails when the
    /// database cannot be reached: a gateway does not start without its log.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        instance: &str,
        signer: &Signer,
    ) -> Result<PgStore, AuditError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("audit-db")
            .enable_all()
            .build()
            .map_err(|e| {
                AuditError::Unavailable(format!("cannot start the audit database runtime: {e}"))
            })?;
        let genesis = Checkpoint::sign(signer, 0, GENESIS, now_unix_ms());
        let public_key = signer.public_key();
        let (url, instance) = (url.to_owned(), instance.to_owned());
        let setup = rt.spawn(async move {
            let pool = pool(&url, pool_size)?;
            migrate(&pool).await?;
            let secret = page_token_secret(&pool).await?;
            let inner = Inner {
                rt: OwnRuntime(None),
                pool,
                url,
                instance,
                secret,
                lock: tokio::sync::Mutex::new(None),
                feed: std::sync::OnceLock::new(),
                listeners: Arc::new(Listeners {
                    listened: std::sync::atomic::AtomicBool::new(true),
                    last_committed: std::sync::atomic::AtomicU64::new(0),
                }),
            };
            // A process of this instance killed a moment ago may still hold
            // the lock until the server sees its connection close.
            let mut tries = 0;
            while let Err(e) = inner.hold_lock().await {
                tries += 1;
                if tries >= LOCK_TRIES || !matches!(e, AuditError::Options(_)) {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            register(&inner, &public_key, &genesis).await?;
            Ok::<_, AuditError>(inner)
        });
        let joined = setup.await;
        // On failure the runtime is dropped here: `rt` is not inside `inner`.
        let mut inner = match joined {
            Ok(Ok(inner)) => inner,
            Ok(Err(e)) => {
                rt.shutdown_background();
                return Err(e);
            }
            Err(e) => {
                rt.shutdown_background();
                return Err(AuditError::Unavailable(format!(
                    "opening the audit database failed: {e}"
                )));
            }
        };
        // Ends with the runtime, which ends with the store.
        rt.spawn(follow_listeners(
            inner.pool.clone(),
            inner.instance.clone(),
            Arc::clone(&inner.listeners),
        ));
        inner.rt = OwnRuntime(Some(rt));
        Ok(PgStore {
            inner: Arc::new(inner),
            durable_seq: 0,
            uncertain: false,
        })
    }

    /// The instance whose chain this is.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }
}

/// Registers the instance (with its genesis checkpoint, in one transaction)
/// or checks that it was registered with `public_key`.
async fn register(
    inner: &Inner,
    public_key: &[u8; 32],
    genesis: &Checkpoint,
) -> Result<(), AuditError> {
    let mut conn = client(&inner.pool).await?;
    let failed = db_err("registering the instance");
    let tx = conn.transaction().await.map_err(&failed)?;
    let added = tx
        .execute(
            "INSERT INTO audit_instances (instance, public_key, created_unix_ms) VALUES ($1, $2, $3)
             ON CONFLICT (instance) DO NOTHING",
            &[&inner.instance, &public_key.as_slice(), &now_unix_ms()],
        )
        .await
        .map_err(&failed)?;
    if added == 1 {
        tx.execute(
            "INSERT INTO audit_checkpoints (instance, seq, hash, time_unix_ms, signature)
             VALUES ($1, 0, $2, $3, $4)",
            &[
                &inner.instance,
                &genesis.hash.as_slice(),
                &genesis.time_unix_ms,
                &genesis.signature.as_slice(),
            ],
        )
        .await
        .map_err(&failed)?;
    }
    let stored: Vec<u8> = tx
        .query_one(
            "SELECT public_key FROM audit_instances WHERE instance = $1",
            &[&inner.instance],
        )
        .await
        .map_err(&failed)?
        .get(0);
    if stored != public_key {
        return Err(AuditError::Options(format!(
            "instance {:?} in the audit database is signed with another key than \
             [audit] signing_key: start it with that key, or give this gateway another \
             [audit] instance",
            inner.instance
        )));
    }
    tx.commit().await.map_err(&failed)
}

impl AuditStore for PgStore {
    fn recover(&mut self) -> Result<Recovered, AuditError> {
        let inner = &self.inner;
        let recovered = inner.block_on("reading the chain", async {
            inner.hold_lock().await?;
            let conn = client(&inner.pool).await?;
            let failed = db_err("reading the chain");
            let broken = |what: String| {
                AuditError::Unavailable(format!(
                    "instance {}: {what}; run `audit verify --database-url`",
                    inner.instance
                ))
            };
            let head = conn
                .query_opt(
                    "SELECT seq, hash, time_unix_ms, signature FROM audit_checkpoints
                     WHERE instance = $1 ORDER BY seq DESC LIMIT 1",
                    &[&inner.instance],
                )
                .await
                .map_err(&failed)?
                .map(|row| checkpoint_from_row(&row))
                .transpose()
                .map_err(broken)?;
            let from = head.as_ref().map_or(0, |cp| cp.seq);
            let mut tail = Vec::new();
            if let Some(cp) = head.as_ref().filter(|cp| cp.seq > 0) {
                tail.push(Entry::Checkpoint(cp.clone()));
            }
            let rows = conn
                .query(
                    "SELECT seq, hash, record FROM audit_records WHERE instance = $1 AND seq > $2
                     ORDER BY seq",
                    &[&inner.instance, &to_i64(from)],
                )
                .await
                .map_err(&failed)?;
            for row in &rows {
                let (seq, hash, record) = record_from_row(row).map_err(broken)?;
                tail.push(Entry::Record {
                    seq,
                    hash,
                    record: Cow::Owned(record),
                });
            }
            Ok(Recovered {
                head,
                tail,
                sealed_records: from,
            })
        })?;
        self.durable_seq = recovered
            .tail
            .iter()
            .rev()
            .map(|e| match e {
                Entry::Record { seq, .. } => *seq,
                Entry::Checkpoint(cp) => cp.seq,
            })
            .next()
            .unwrap_or(recovered.sealed_records);
        self.uncertain = false;
        Ok(recovered)
    }

    fn append(&mut self, group: &[Entry<'_>]) -> io::Result<()> {
        let first = group.iter().find_map(|e| match e {
            Entry::Record { seq, .. } => Some(*seq),
            Entry::Checkpoint(_) => None,
        });
        if let Some(first) = first {
            if first != self.durable_seq + 1 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a group starting at record {first} does not continue the chain at {}",
                        self.durable_seq
                    ),
                ));
            }
        }
        let last = group.iter().rev().find_map(|e| match e {
            Entry::Record { seq, .. } => Some(*seq),
            Entry::Checkpoint(_) => None,
        });
        let leftovers_after = self.uncertain.then_some(self.durable_seq);
        let inner = &self.inner;
        let result = inner.block_on(
            "writing to the audit database",
            commit(inner, group, leftovers_after),
        );
        match result {
            Ok(()) => {
                self.uncertain = false;
                if let Some(last) = last {
                    self.durable_seq = last;
                }
                Ok(())
            }
            Err(e) => {
                self.uncertain = true;
                Err(io::Error::other(e))
            }
        }
    }

    fn reader(&self) -> Arc<dyn AuditReader> {
        Arc::new(PgReader {
            inner: Arc::clone(&self.inner),
        })
    }

    fn location(&self) -> String {
        format!(
            "{} (instance {})",
            redacted(&self.inner.url),
            self.inner.instance
        )
    }
}

/// Writes `group` in one transaction: all or nothing, durable when it
/// returns `Ok` (PostgreSQL has committed).
/// With `leftovers_after`, rows past that seq are removed first (see
/// below).
async fn commit(
    inner: &Inner,
    group: &[Entry<'_>],
    leftovers_after: Option<u64>,
) -> Result<(), AuditError> {
    inner.hold_lock().await?;
    let mut conn = client(&inner.pool).await?;
    let failed = db_err("writing to the audit database");
    let (mut seqs, mut hashes, mut times, mut jsons) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut s_subject, mut s_time, mut s_seq) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cp_seq, mut cp_hash, mut cp_time, mut cp_sig) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for entry in group {
        match entry {
            Entry::Record { seq, hash, record } => {
                let seq = to_i64(*seq);
                seqs.push(seq);
                hashes.push(hash.to_vec());
                times.push(record.time_unix_ms);
                jsons.push(
                    serde_json::to_string(record.as_ref())
                        .map_err(|e| AuditError::Unavailable(format!("encoding a record: {e}")))?,
                );
                for subject in record.indexed_subjects() {
                    s_subject.push(subject.to_owned());
                    s_time.push(record.time_unix_ms);
                    s_seq.push(seq);
                }
            }
            Entry::Checkpoint(cp) => {
                cp_seq.push(to_i64(cp.seq));
                cp_hash.push(cp.hash.to_vec());
                cp_time.push(cp.time_unix_ms);
                cp_sig.push(cp.signature.to_vec());
            }
        }
    }
    let tx = conn.transaction().await.map_err(&failed)?;
    // A commit whose answer was lost (the connection dropped after COMMIT
    // was sent) may have made a group durable that the writer counts as
    // failed: it never acknowledged it, and writes the next group at the
    // same seqs. This instance alone writes its chain (the lock), so after
    // such a failure, rows past the last seq known durable can only be those
    // leftovers: remove them in the same transaction.
    if let Some(after) = leftovers_after {
        let after = to_i64(after);
        let leftovers = tx
            .prepare_cached(
                "WITH s AS (DELETE FROM audit_subjects WHERE instance = $1 AND seq > $2),
                      c AS (DELETE FROM audit_checkpoints WHERE instance = $1 AND seq > $2)
                 DELETE FROM audit_records WHERE instance = $1 AND seq > $2",
            )
            .await
            .map_err(&failed)?;
        let removed = tx
            .execute(&leftovers, &[&inner.instance, &after])
            .await
            .map_err(&failed)?;
        if removed > 0 {
            tracing::warn!(
                records = removed,
                after_seq = after,
                "removing records of a write whose commit was never confirmed (never acknowledged)"
            );
        }
    }
    if !seqs.is_empty() {
        let insert = tx
            .prepare_cached(
                "INSERT INTO audit_records (instance, seq, hash, time_unix_ms, record)
                 SELECT $1, * FROM unnest($2::int8[], $3::bytea[], $4::int8[], $5::text[])",
            )
            .await
            .map_err(&failed)?;
        tx.execute(&insert, &[&inner.instance, &seqs, &hashes, &times, &jsons])
            .await
            .map_err(&failed)?;
    }
    if !s_subject.is_empty() {
        let insert = tx
            .prepare_cached(
                "INSERT INTO audit_subjects (subject, time_unix_ms, instance, seq)
                 SELECT s, t, $1, q FROM unnest($2::text[], $3::int8[], $4::int8[]) AS u(s, t, q)",
            )
            .await
            .map_err(&failed)?;
        tx.execute(&insert, &[&inner.instance, &s_subject, &s_time, &s_seq])
            .await
            .map_err(&failed)?;
    }
    if !cp_seq.is_empty() {
        let insert = tx
            .prepare_cached(
                "INSERT INTO audit_checkpoints (instance, seq, hash, time_unix_ms, signature)
                 SELECT $1, * FROM unnest($2::int8[], $3::bytea[], $4::int8[], $5::bytea[])
                 ON CONFLICT (instance, seq) DO NOTHING",
            )
            .await
            .map_err(&failed)?;
        tx.execute(
            &insert,
            &[&inner.instance, &cp_seq, &cp_hash, &cp_time, &cp_sig],
        )
        .await
        .map_err(&failed)?;
    }
    tx.commit().await.map_err(&failed)?;
    if let Some(&last) = seqs.last() {
        let last = u64::try_from(last).unwrap_or(0);
        let listeners = &inner.listeners;
        listeners
            .last_committed
            .fetch_max(last, std::sync::atomic::Ordering::AcqRel);
        if listeners
            .listened
            .load(std::sync::atomic::Ordering::Acquire)
        {
            tokio::spawn(notify(conn, &inner.instance, last));
        }
    }
    Ok(())
}

/// Announces `instance`'s records up to `last` on `conn`, after their
/// commit, in a transaction of its own that does not wait for its WAL
/// flush: see *Live feed* above. Failing is only logged: the next
/// notification of the instance covers these records too.
fn notify(
    conn: deadpool_postgres::Object,
    instance: &str,
    last: u64,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // The instance name is letters, digits, '.', '_' and '-' only
    // (`config::check_instance`), so it can stand in the statement's text.
    let sql = format!(
        "BEGIN; SET LOCAL synchronous_commit TO off; SELECT pg_notify('{}', '{instance} {last}'); COMMIT",
        feed_channel!(),
    );
    async move {
        if let Err(e) = conn.batch_execute(&sql).await {
            tracing::debug!(error = %describe(&e), "audit feed notification not sent");
        }
    }
}

/// How often an instance looks whether any gateway's feed listens.
const LISTENERS_EVERY: Duration = Duration::from_secs(1);

/// Keeps [`Listeners::listened`] current while the store is open: commits
/// notify only while some gateway's feed (`application_name`
/// `interop-gateway-feed`) is connected to this database. When one
/// appears, the instance announces its last commit at once, so records
/// committed since the feed began listening wait at most
/// [`LISTENERS_EVERY`]. A failed look-up counts as listened.
async fn follow_listeners(pool: Pool, instance: String, listeners: Arc<Listeners>) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::time::sleep(LISTENERS_EVERY).await;
        let Ok(conn) = pool.get().await else {
            listeners.listened.store(true, Ordering::Release);
            continue;
        };
        let found = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name = $1)",
                &[&FEED_APPLICATION_NAME],
            )
            .await
            .map(|row| row.get::<_, bool>(0))
            .unwrap_or(true);
        let before = listeners.listened.swap(found, Ordering::AcqRel);
        let last = listeners.last_committed.load(Ordering::Acquire);
        if found && !before && last > 0 {
            notify(conn, &instance, last).await;
        }
    }
}

/// A listing cursor: `<time_unix_ms>:<seq>:<instance>` of the last row of a
/// page (instance names hold no `:`). Rows of every instance are ordered by
/// (time, instance, seq), newest first, which is a total order.
fn cursor_of(time_unix_ms: i64, seq: i64, instance: &str) -> String {
    format!("{time_unix_ms}:{seq}:{instance}")
}

fn parse_cursor(cursor: &str) -> Result<(i64, i64, &str), AuditError> {
    let bad = || AuditError::Options(format!("not a cursor of the database log: {cursor:?}"));
    let mut parts = cursor.splitn(3, ':');
    let time = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let seq: i64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let instance = parts.next().filter(|i| !i.is_empty()).ok_or_else(bad)?;
    if seq < 1 {
        return Err(bad());
    }
    Ok((time, seq, instance))
}

impl AuditReader for PgReader {
    fn subject_page(
        &self,
        subject: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubjectRow>, AuditError> {
        let before = before.map(parse_cursor).transpose()?;
        let inner = &self.inner;
        inner.block_on("reading the audit database", async {
            let conn = client(&inner.pool).await?;
            let failed = db_err("reading the audit database");
            let limit = to_i64(limit as u64);
            let rows = match before {
                None => {
                    let stmt = conn
                        .prepare_cached(
                            "SELECT r.time_unix_ms, r.instance, r.seq, r.record
                             FROM audit_subjects s JOIN audit_records r USING (instance, seq)
                             WHERE s.subject = $1
                             ORDER BY s.time_unix_ms DESC, s.instance DESC, s.seq DESC LIMIT $2",
                        )
                        .await
                        .map_err(&failed)?;
                    conn.query(&stmt, &[&subject, &limit]).await
                }
                Some((time, seq, instance)) => {
                    let stmt = conn
                        .prepare_cached(
                            "SELECT r.time_unix_ms, r.instance, r.seq, r.record
                             FROM audit_subjects s JOIN audit_records r USING (instance, seq)
                             WHERE s.subject = $1
                               AND (s.time_unix_ms, s.instance, s.seq) < ($2, $3, $4)
                             ORDER BY s.time_unix_ms DESC, s.instance DESC, s.seq DESC LIMIT $5",
                        )
                        .await
                        .map_err(&failed)?;
                    conn.query(&stmt, &[&subject, &time, &instance, &seq, &limit])
                        .await
                }
            }
            .map_err(&failed)?;
            rows.iter()
                .map(|row| {
                    let time_unix_ms: i64 = row.get(0);
                    let instance: String = row.get(1);
                    let seq: i64 = row.get(2);
                    let json: String = row.get(3);
                    let record: AuditRecord = serde_json::from_str(&json).map_err(|e| {
                        AuditError::Unavailable(format!(
                            "record {instance}/{seq} is malformed: {e}"
                        ))
                    })?;
                    Ok(SubjectRow {
                        cursor: cursor_of(time_unix_ms, seq, &instance),
                        record,
                    })
                })
                .collect()
        })
    }

    fn records_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditRecord)>, AuditError> {
        let inner = &self.inner;
        inner.block_on("reading the audit database", async {
            let conn = client(&inner.pool).await?;
            let rows = conn
                .query(
                    "SELECT seq, hash, record FROM audit_records WHERE instance = $1 AND seq > $2
                     ORDER BY seq LIMIT $3",
                    &[&inner.instance, &to_i64(after_seq), &to_i64(limit as u64)],
                )
                .await
                .map_err(db_err("reading the audit database"))?;
            rows.iter()
                .map(|row| {
                    record_from_row(row)
                        .map(|(seq, _, record)| (seq, record))
                        .map_err(AuditError::Unavailable)
                })
                .collect()
        })
    }

    fn chain_hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>, AuditError> {
        if seq == 0 {
            return Ok(Some(GENESIS));
        }
        let inner = &self.inner;
        inner.block_on("reading the audit database", async {
            let conn = client(&inner.pool).await?;
            let row = conn
                .query_opt(
                    "SELECT hash FROM audit_records WHERE instance = $1 AND seq = $2",
                    &[&inner.instance, &to_i64(seq)],
                )
                .await
                .map_err(db_err("reading the audit database"))?;
            row.map(|row| {
                let hash: Vec<u8> = row.get(0);
                <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| {
                    AuditError::Unavailable(format!(
                        "record {}/{seq} has a hash of {} bytes, not 32",
                        inner.instance,
                        hash.len()
                    ))
                })
            })
            .transpose()
        })
    }

    fn page_token_secret(&self) -> Result<Option<[u8; 64]>, AuditError> {
        Ok(Some(self.inner.secret))
    }

    fn chains(&self) -> Option<Arc<dyn ChainsReader>> {
        Some(Arc::new(PgReader {
            inner: Arc::clone(&self.inner),
        }))
    }
}

/// The last seq of every registered instance (0 for one without records),
/// one index probe per instance.
async fn heads(conn: &tokio_postgres::Client) -> Result<Positions, AuditError> {
    let rows = conn
        .query(
            "SELECT i.instance,
                    (SELECT coalesce(max(seq), 0) FROM audit_records r WHERE r.instance = i.instance)
             FROM audit_instances i",
            &[],
        )
        .await
        .map_err(db_err("reading the audit database"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let seq: i64 = row.get(1);
            (row.get::<_, String>(0), seq.max(0) as u64)
        })
        .collect())
}

/// `(instance, seq, time, record JSON)` rows as chain records.
fn chain_records(rows: &[tokio_postgres::Row]) -> Result<Vec<ChainRecord>, AuditError> {
    rows.iter()
        .map(|row| {
            let instance: String = row.get(0);
            let seq: i64 = row.get(1);
            let json: String = row.get(3);
            let record = serde_json::from_str(&json).map_err(|e| {
                AuditError::Unavailable(format!("record {instance}/{seq} is malformed: {e}"))
            })?;
            Ok(ChainRecord {
                instance,
                seq: seq.max(0) as u64,
                record,
            })
        })
        .collect()
}

impl ChainsReader for PgReader {
    fn heads(&self) -> Result<Positions, AuditError> {
        let inner = &self.inner;
        inner.block_on("reading the audit database", async {
            let conn = client(&inner.pool).await?;
            heads(&conn).await
        })
    }

    fn records_after(
        &self,
        after: &Positions,
        limit: usize,
    ) -> Result<Vec<ChainRecord>, AuditError> {
        let (names, seqs): (Vec<&str>, Vec<i64>) =
            after.iter().map(|(i, s)| (i.as_str(), to_i64(*s))).unzip();
        let inner = &self.inner;
        let rows = inner.block_on("reading the audit database", async {
            let conn = client(&inner.pool).await?;
            let stmt = conn
                .prepare_cached(
                    "SELECT i.instance, r.seq, r.time_unix_ms, r.record
                     FROM audit_instances i
                     LEFT JOIN unnest($1::text[], $2::int8[]) AS p(instance, after)
                       ON p.instance = i.instance
                     CROSS JOIN LATERAL (
                         SELECT seq, time_unix_ms, record FROM audit_records r
                         WHERE r.instance = i.instance AND r.seq > coalesce(p.after, 0)
                         ORDER BY seq LIMIT $3) r
                     ORDER BY i.instance, r.seq",
                )
                .await
                .map_err(db_err("reading the audit database"))?;
            conn.query(&stmt, &[&names, &seqs, &to_i64(limit as u64)])
                .await
                .map_err(db_err("reading the audit database"))
        })?;
        Ok(merge_by_time(chain_records(&rows)?))
    }

    fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        let inner = &self.inner;
        inner
            .feed
            .get_or_init(|| match (&inner.rt.0, parse_url(&inner.url)) {
                (Some(rt), Ok(config)) => feed::Feed::start(rt, config),
                (None, _) | (_, Err(_)) => feed::Feed::idle(),
            })
            .subscribe()
    }
}

/// Records of several chains, each in seq order, merged into one sequence
/// by record time (ties by instance), keeping each chain's own order even
/// where its clock went back.
fn merge_by_time(records: Vec<ChainRecord>) -> Vec<ChainRecord> {
    let mut chains: std::collections::BTreeMap<String, std::collections::VecDeque<ChainRecord>> =
        std::collections::BTreeMap::new();
    for r in records {
        chains.entry(r.instance.clone()).or_default().push_back(r);
    }
    let mut out = Vec::new();
    loop {
        let next = chains
            .iter()
            .filter_map(|(name, queue)| Some((queue.front()?.record.time_unix_ms, name)))
            .min()
            .map(|(_, name)| name.clone());
        let Some(name) = next else {
            return out;
        };
        if let Some(r) = chains.get_mut(&name).and_then(|q| q.pop_front()) {
            out.push(r);
        }
    }
}

/// One instance's chain at the seqs witnesses countersigned.
#[derive(Clone, Debug)]
pub struct ChainPoints {
    pub instance: String,
    pub public_key: [u8; 32],
    /// The instance's last record.
    pub last_seq: u64,
    /// The chain hash after each wanted seq the chain has.
    pub hashes: std::collections::BTreeMap<u64, [u8; 32]>,
}

/// For checking witnesses' countersignatures: every instance's key and last
/// seq, and its chain hashes at the seqs `wanted` names for it (by
/// instance name; `""` is no instance).
pub async fn chain_points(
    url: &str,
    wanted: &std::collections::BTreeMap<String, Vec<u64>>,
) -> Result<Vec<ChainPoints>, AuditError> {
    let snapshot = ReadSnapshot::open(url).await?;
    let conn = &snapshot.conn;
    let failed = db_err("reading the audit database");
    let instances = conn
        .query(
            "SELECT i.instance, i.public_key,
                    (SELECT coalesce(max(seq), 0) FROM audit_records r WHERE r.instance = i.instance)
             FROM audit_instances i ORDER BY i.instance",
            &[],
        )
        .await
        .map_err(&failed)?;
    let mut out = Vec::new();
    for row in instances {
        let instance: String = row.get(0);
        let key: Vec<u8> = row.get(1);
        let last: i64 = row.get(2);
        let public_key = <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
            AuditError::Unavailable(format!(
                "instance {instance}: the public key is not 32 bytes"
            ))
        })?;
        let seqs: Vec<i64> = wanted
            .get(&instance)
            .map(|s| s.iter().map(|&q| to_i64(q)).collect())
            .unwrap_or_default();
        let mut hashes = std::collections::BTreeMap::new();
        if !seqs.is_empty() {
            let rows = conn
                .query(
                    "SELECT seq, hash FROM audit_records WHERE instance = $1 AND seq = ANY($2)",
                    &[&instance, &seqs],
                )
                .await
                .map_err(&failed)?;
            for r in rows {
                let seq: i64 = r.get(0);
                let hash: Vec<u8> = r.get(1);
                if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                    hashes.insert(seq as u64, hash);
                }
            }
        }
        out.push(ChainPoints {
            instance,
            public_key,
            last_seq: last.max(0) as u64,
            hashes,
        });
    }
    snapshot.close().await;
    Ok(out)
}

/// What [`verify_database`] found for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceReport {
    pub instance: String,
    pub records: u64,
    pub checkpoints: u64,
    /// Seq and time of the last checkpoint.
    pub last_checkpoint: (u64, i64),
    /// Records after the last checkpoint (normal on a running gateway).
    pub unsealed_tail: u64,
}

/// A failure of [`verify_database`], naming the instance.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseVerifyError {
    #[error("{0}")]
    Unavailable(AuditError),
    #[error("instance {instance:?}: {failure}")]
    Broken {
        instance: String,
        failure: VerifyFailure,
    },
}

/// Verifies every instance's chain and checkpoints in the database at `url`:
/// seqs 1, 2, 3, ... without gap, every hash recomputed from the record and
/// the one before, a genesis checkpoint and every checkpoint signed (by
/// `public_key` when given, else by the key the instance registered) over the
/// chain hash at its seq, and the subject index naming only records that
/// exist. Reads in chunks, so memory does not grow with the log.
pub async fn verify_database(
    url: &str,
    public_key: Option<&[u8; 32]>,
) -> Result<Vec<InstanceReport>, DatabaseVerifyError> {
    const CHUNK: i64 = 5000;
    let snapshot = ReadSnapshot::open(url)
        .await
        .map_err(DatabaseVerifyError::Unavailable)?;
    let conn = &snapshot.conn;
    let failed = |e| DatabaseVerifyError::Unavailable(db_err("reading the audit database")(e));
    let has_log: bool = conn
        .query_one("SELECT to_regclass('audit_instances') IS NOT NULL", &[])
        .await
        .map_err(failed)?
        .get(0);
    if !has_log {
        return Err(DatabaseVerifyError::Unavailable(AuditError::Options(
            "this database holds no access log (no audit tables): no gateway with this database_url has started yet, or the URL names another database"
                .into(),
        )));
    }
    let instances = conn
        .query(
            "SELECT instance, public_key FROM audit_instances ORDER BY instance",
            &[],
        )
        .await
        .map_err(failed)?;
    // Index rows per instance, in one pass over the table (its primary key
    // does not lead with the instance).
    let mut indexed: std::collections::HashMap<String, i64> = conn
        .query(
            "SELECT instance, count(*) FROM audit_subjects GROUP BY instance",
            &[],
        )
        .await
        .map_err(failed)?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut reports = Vec::new();
    for row in instances {
        let instance: String = row.get(0);
        let registered: Vec<u8> = row.get(1);
        let broken = |seq: Option<u64>, what: String| DatabaseVerifyError::Broken {
            instance: instance.clone(),
            failure: VerifyFailure {
                seq,
                line: 0,
                what,
                file: None,
            },
        };
        let key: [u8; 32] = match public_key {
            Some(k) => *k,
            None => registered
                .as_slice()
                .try_into()
                .map_err(|_| broken(None, "registered public key is not 32 bytes".into()))?,
        };
        let mut checkpoints = Vec::new();
        for row in conn
            .query(
                "SELECT seq, hash, time_unix_ms, signature FROM audit_checkpoints
                 WHERE instance = $1 ORDER BY seq",
                &[&instance],
            )
            .await
            .map_err(failed)?
        {
            let cp = checkpoint_from_row(&row).map_err(|what| broken(None, what))?;
            if !cp.verify(&key) {
                return Err(broken(
                    Some(cp.seq),
                    "its checkpoint has a bad signature".into(),
                ));
            }
            checkpoints.push(cp);
        }
        match checkpoints.first() {
            Some(first) if first.seq == 0 && first.hash == GENESIS => {}
            _ => {
                return Err(broken(
                    None,
                    "no signed genesis checkpoint: the chain's start was removed".into(),
                ))
            }
        }
        let mut next_cp = checkpoints.iter().skip(1).peekable();
        let (mut seq, mut hash) = (0u64, GENESIS);
        // The subject index and the time column (what listings and
        // `audit export --since` read) against the records: the first
        // mismatch, reported once the chain itself verifies.
        let mut index_failure: Option<(Option<u64>, String)> = None;
        let mut index_entries = 0u64;
        loop {
            let rows = conn
                .query(
                    "SELECT seq, hash, record, time_unix_ms FROM audit_records
                     WHERE instance = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&instance, &to_i64(seq), &CHUNK],
                )
                .await
                .map_err(failed)?;
            if rows.is_empty() {
                break;
            }
            let (mut e_subject, mut e_time, mut e_seq) = (Vec::new(), Vec::new(), Vec::new());
            for row in &rows {
                let (row_seq, stored, record) =
                    record_from_row(row).map_err(|what| broken(None, what))?;
                let column: i64 = row.get(3);
                if column != record.time_unix_ms && index_failure.is_none() {
                    index_failure = Some((
                        Some(row_seq),
                        format!(
                            "its time_unix_ms column ({column}) is not the record's ({}): \
                             listings and `audit export --since` would misplace it",
                            record.time_unix_ms
                        ),
                    ));
                }
                for subject in record.indexed_subjects() {
                    e_subject.push(subject.to_owned());
                    e_time.push(record.time_unix_ms);
                    e_seq.push(to_i64(row_seq));
                }
                if row_seq != seq + 1 {
                    return Err(broken(Some(seq + 1), "missing".into()));
                }
                let expected = chain::hash(&hash, row_seq, &record);
                if expected != stored {
                    return Err(broken(
                        Some(row_seq),
                        "hash does not match its content and the record before it".into(),
                    ));
                }
                seq = row_seq;
                hash = stored;
                while let Some(cp) = next_cp.next_if(|cp| cp.seq == seq) {
                    if cp.hash != hash {
                        return Err(broken(
                            Some(seq),
                            "a signed checkpoint names another chain hash: records up to it were changed"
                                .into(),
                        ));
                    }
                }
            }
            index_entries += e_subject.len() as u64;
            if index_failure.is_none() && !e_subject.is_empty() {
                let lacking = conn
                    .query_opt(
                        "SELECT u.q, u.s FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(s, t, q)
                         WHERE NOT EXISTS (SELECT 1 FROM audit_subjects x WHERE x.subject = u.s
                           AND x.time_unix_ms = u.t AND x.instance = $4 AND x.seq = u.q)
                         ORDER BY u.q LIMIT 1",
                        &[&e_subject, &e_time, &e_seq, &instance],
                    )
                    .await
                    .map_err(failed)?;
                if let Some(row) = lacking {
                    let (q, s): (i64, String) = (row.get(0), row.get(1));
                    index_failure = Some((
                        u64::try_from(q).ok(),
                        format!(
                            "the subject index (audit_subjects) lacks it for {s}, or names \
                             another time: ListAccessRecords would not show this read to the \
                             citizen where it belongs; the record is intact, the index was changed"
                        ),
                    ));
                }
            }
        }
        if let Some(cp) = next_cp.next() {
            return Err(broken(
                Some(cp.seq),
                format!("a checkpoint names this record, which is not there (last record {seq})"),
            ));
        }
        let dangling: i64 = conn
            .query_one(
                "SELECT count(*) FROM audit_subjects s WHERE s.instance = $1 AND NOT EXISTS
                 (SELECT 1 FROM audit_records r WHERE r.instance = s.instance AND r.seq = s.seq)",
                &[&instance],
            )
            .await
            .map_err(failed)?
            .get(0);
        if dangling > 0 {
            return Err(broken(
                None,
                format!("{dangling} subject index rows name records that are not there"),
            ));
        }
        if let Some((seq, what)) = index_failure {
            return Err(broken(seq, what));
        }
        let entries = indexed.remove(&instance).unwrap_or(0);
        let extra = u64::try_from(entries)
            .unwrap_or(0)
            .saturating_sub(index_entries);
        if extra > 0 {
            return Err(broken(
                None,
                format!(
                    "{extra} subject index rows (audit_subjects) name no record's subject: \
                     ListAccessRecords would show a citizen reads that are not in the log"
                ),
            ));
        }
        let last = checkpoints
            .last()
            .map_or((0, 0), |c| (c.seq, c.time_unix_ms));
        reports.push(InstanceReport {
            instance: instance.clone(),
            records: seq,
            checkpoints: checkpoints.len() as u64,
            last_checkpoint: last,
            unsealed_tail: seq - last.0,
        });
    }
    snapshot.close().await;
    Ok(reports)
}

/// Writes the records of every instance that match, oldest first per
/// instance, as JSON lines `{"instance":..,"seq":..,"hash":..,"record":{..}}`
/// (the file log's record line with the instance added). Returns how many.
/// It does not verify: run [`verify_database`] for that.
pub async fn export_database(
    url: &str,
    since_unix_ms: Option<i64>,
    subject: Option<&str>,
    out: &mut impl std::io::Write,
) -> Result<u64, AuditError> {
    scan_records(
        url,
        since_unix_ms,
        subject,
        |instance, seq, hash, record| {
            let line = format!(
                "{{\"instance\":{},\"seq\":{seq},\"hash\":\"{}\",\"record\":{record}}}\n",
                serde_json::Value::String(instance.to_owned()),
                super::line::hex(hash)
            );
            out.write_all(line.as_bytes())
                .map_err(|source| AuditError::Io {
                    path: std::path::PathBuf::from("standard output"),
                    source,
                })
        },
    )
    .await
}

/// Hands `each` every record of every instance, per instance oldest first,
/// a chunk at a time from one read-only snapshot (constant memory whatever
/// the log's size). Does not verify: run [`verify_database`] for that.
pub async fn for_each_database_record(
    url: &str,
    mut each: impl FnMut(AuditRecord) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    scan_records(url, None, None, |instance, seq, _, json| {
        let record = serde_json::from_str(json).map_err(|e| {
            AuditError::Unavailable(format!(
                "instance {instance:?} record {seq} is malformed: {e} (run `audit verify`)"
            ))
        })?;
        each(record)
    })
    .await
}

/// The records at or after `since_unix_ms` (and naming `subject`, when
/// given) of every instance, per instance oldest first, 5,000 rows at a
/// time from one read-only snapshot: `each` gets the instance, seq, hash
/// and record text of each. Returns how many.
async fn scan_records(
    url: &str,
    since_unix_ms: Option<i64>,
    subject: Option<&str>,
    mut each: impl FnMut(&str, i64, &[u8], &str) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    const CHUNK: i64 = 5000;
    let snapshot = ReadSnapshot::open(url).await?;
    let conn = &snapshot.conn;
    let failed = db_err("reading the audit database");
    let since = since_unix_ms.unwrap_or(i64::MIN);
    let (mut instance, mut seq, mut read) = (String::new(), 0i64, 0u64);
    loop {
        let rows = conn
            .query(
                "SELECT instance, seq, hash, record FROM audit_records r
                 WHERE (instance, seq) > ($1, $2) AND time_unix_ms >= $3
                   AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM audit_subjects s
                        WHERE s.subject = $4 AND s.instance = r.instance AND s.seq = r.seq))
                 ORDER BY instance, seq LIMIT $5",
                &[&instance, &seq, &since, &subject, &CHUNK],
            )
            .await
            .map_err(&failed)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            instance = row.get(0);
            seq = row.get(1);
            let hash: Vec<u8> = row.get(2);
            let record: String = row.get(3);
            each(&instance, seq, &hash, &record)?;
            read += 1;
        }
    }
    snapshot.close().await;
    Ok(read)
}

fn checkpoint_from_row(row: &tokio_postgres::Row) -> Result<Checkpoint, String> {
    let seq: i64 = row.get(0);
    let hash: Vec<u8> = row.get(1);
    let signature: Vec<u8> = row.get(3);
    Ok(Checkpoint {
        seq: u64::try_from(seq).map_err(|_| format!("checkpoint seq {seq} is negative"))?,
        hash: hash
            .try_into()
            .map_err(|_| format!("checkpoint at record {seq}: hash is not 32 bytes"))?,
        time_unix_ms: row.get(2),
        signature: signature
            .try_into()
            .map_err(|_| format!("checkpoint at record {seq}: signature is not 64 bytes"))?,
    })
}

fn record_from_row(row: &tokio_postgres::Row) -> Result<(u64, [u8; 32], AuditRecord), String> {
    let seq: i64 = row.get(0);
    let hash: Vec<u8> = row.get(1);
    let json: String = row.get(2);
    let seq = u64::try_from(seq).map_err(|_| format!("record seq {seq} is negative"))?;
    let hash = hash
        .try_into()
        .map_err(|_| format!("record {seq}: hash is not 32 bytes"))?;
    let record =
        serde_json::from_str(&json).map_err(|e| format!("record {seq} is malformed: {e}"))?;
    Ok((seq, hash, record))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(instance: &str, seq: u64, time_unix_ms: i64) -> ChainRecord {
        ChainRecord {
            instance: instance.into(),
            seq,
            record: AuditRecord {
                time_unix_ms,
                request_id: format!("{instance}-{seq}"),
                agency_code: String::new(),
                method: String::new(),
                procedure_code: String::new(),
                dossier_id: String::new(),
                officer_id: String::new(),
                subjects: Vec::new(),
                fields: Vec::new(),
                outcome: "OK".into(),
                latency_us: 0,
                relay_agency_code: String::new(),
                reason: String::new(),
            },
        }
    }

    fn order(records: &[ChainRecord]) -> Vec<(&str, u64)> {
        records
            .iter()
            .map(|r| (r.instance.as_str(), r.seq))
            .collect()
    }

    #[test]
    fn chains_merge_by_time_and_each_keeps_its_own_order() {
        let merged = merge_by_time(vec![
            at("a", 1, 10),
            at("a", 2, 30),
            // a's clock went back: still after a/2.
            at("a", 3, 5),
            at("b", 7, 20),
            at("b", 8, 30),
            at("c", 1, 1),
        ]);
        assert_eq!(
            order(&merged),
            [("c", 1), ("a", 1), ("b", 7), ("a", 2), ("a", 3), ("b", 8)]
        );
        assert!(merge_by_time(Vec::new()).is_empty());
    }
}
