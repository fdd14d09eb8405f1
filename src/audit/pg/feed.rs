//! The live feed behind [`ChainsReader::subscribe`](super::ChainsReader::subscribe):
//! one task and one `LISTEN` connection per process, publishing every
//! instance's committed records to the process's watchers (see *Live feed*
//! in [`super`]).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::{broadcast, Notify};
use tokio_postgres::{AsyncMessage, Client, Statement};

use crate::audit::pg_tls::Target;

use super::{chain_records, db_err, describe, heads, to_i64, ChainEvent, DB_TIMEOUT};
use crate::audit::{store::Positions, AuditError};

/// The channel group commits notify; payload `<instance> <last seq>`.
const CHANNEL: &str = feed_channel!();
/// Records read per query while publishing.
const BATCH: i64 = 512;
/// Backoff between attempts to reach the database.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);
/// A session shorter than this is followed by a pause before the next,
/// so a connection that breaks at once cannot make the task spin.
const SHORT_SESSION: Duration = Duration::from_secs(1);

/// What the connection's driver hands over: the highest seq notified
/// per instance since the last look (so a burst of commits is one read
/// per instance, and memory stays bounded), or why the connection ended.
#[derive(Default)]
struct Pending {
    state: std::sync::Mutex<(BTreeMap<String, u64>, Option<String>)>,
    wake: Notify,
}

impl Pending {
    fn note(&self, payload: &str) {
        // Anyone who can connect may NOTIFY: a payload is only a hint.
        let Some((instance, seq)) = payload
            .split_once(' ')
            .and_then(|(i, s)| Some((i, s.parse::<u64>().ok()?)))
            .filter(|(i, _)| !i.is_empty() && i.len() <= 64)
        else {
            tracing::debug!(payload, "ignoring a malformed audit notification");
            return;
        };
        if let Ok(mut state) = self.state.lock() {
            let head = state.0.entry(instance.to_owned()).or_default();
            *head = (*head).max(seq);
        }
        self.wake.notify_one();
    }

    fn end(&self, why: String) {
        if let Ok(mut state) = self.state.lock() {
            state.1.get_or_insert(why);
        }
        self.wake.notify_one();
    }

    fn take(&self) -> (BTreeMap<String, u64>, Option<String>) {
        match self.state.lock() {
            Ok(mut state) => (std::mem::take(&mut state.0), state.1.clone()),
            Err(_) => (BTreeMap::new(), Some("the feed's state is poisoned".into())),
        }
    }
}

/// Follows the database for as long as the process runs (the store's
/// runtime is shut down with the store).
/// The handle the store keeps: subscribers' side of the feed.
pub(super) struct Feed {
    events: broadcast::Sender<ChainEvent>,
    /// Wakes the task from its backoff: a new subscriber should not wait up
    /// to [`LAST_RETRY`] after the database is back.
    retry_now: Arc<Notify>,
}

impl Feed {
    /// Starts the task on `rt`.
    pub(super) fn start(rt: &tokio::runtime::Runtime, target: Target) -> Feed {
        let (events, _) = broadcast::channel(crate::audit::LIVE_BUFFER);
        let retry_now = Arc::new(Notify::new());
        rt.spawn(run(target, events.clone(), Arc::clone(&retry_now)));
        Feed { events, retry_now }
    }

    /// A feed that never starts (a store closed, or a URL that no longer
    /// parses: neither happens to an open store).
    pub(super) fn idle() -> Feed {
        Feed {
            events: broadcast::channel(1).0,
            retry_now: Arc::new(Notify::new()),
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        let receiver = self.events.subscribe();
        self.retry_now.notify_one();
        receiver
    }
}

async fn run(mut target: Target, events: broadcast::Sender<ChainEvent>, retry_now: Arc<Notify>) {
    // Named, so an operator can tell it from the pool's connections.
    target.config.application_name(super::FEED_APPLICATION_NAME);
    let mut retry = FIRST_RETRY;
    let mut told_unavailable = false;
    loop {
        let started = tokio::time::Instant::now();
        match session(&target, &events).await {
            Ok(why) => {
                told_unavailable = false;
                tracing::warn!(reason = %why, "the audit feed lost its database connection; reconnecting");
                if started.elapsed() >= SHORT_SESSION {
                    retry = FIRST_RETRY;
                    continue;
                }
            }
            Err(e) if !told_unavailable => {
                tracing::warn!(error = %e, "the audit feed cannot reach the database; retrying");
                let _ = events.send(ChainEvent::Unavailable(e.to_string().into()));
                told_unavailable = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = retry_now.notified() => {}
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// One connection: connect, `LISTEN`, then publish until it fails.
/// `Err`: it could not be set up; `Ok(why)`: it was lost.
async fn session(
    target: &Target,
    events: &broadcast::Sender<ChainEvent>,
) -> Result<String, AuditError> {
    let connect = target.config.connect(target.tls.clone());
    let (client, mut connection) = tokio::time::timeout(DB_TIMEOUT, connect)
        .await
        .map_err(|_| AuditError::Unavailable("no answer from the audit database".into()))?
        .map_err(db_err("connecting to the audit database"))?;
    let pending = Arc::new(Pending::default());
    let driven = Arc::clone(&pending);
    let driver = tokio::spawn(async move {
        let why = loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                    driven.note(n.payload())
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break describe(&e),
                None => break "the connection closed".to_owned(),
            }
        };
        driven.end(why);
    });
    let result = async {
        within(client.batch_execute(&format!("LISTEN {CHANNEL}")))
            .await?
            .map_err(db_err("listening for audit commits"))?;
        let read = within(client.prepare(
            "SELECT instance, seq, time_unix_ms, record FROM audit_records
             WHERE instance = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        ))
        .await?
        .map_err(db_err("reading the audit database"))?;
        Ok(publish(&client, &read, &pending, events).await)
    }
    .await;
    driver.abort();
    result
}

async fn within<F: std::future::Future>(fut: F) -> Result<F::Output, AuditError> {
    tokio::time::timeout(DB_TIMEOUT, fut).await.map_err(|_| {
        AuditError::Unavailable(format!(
            "no answer from the audit database within {} s",
            DB_TIMEOUT.as_secs()
        ))
    })
}

/// Publishes what is committed until the connection fails; returns why.
/// Starts by telling subscribers to read back (`Resync`): what was
/// committed before `LISTEN` took effect was never notified here.
async fn publish(
    client: &Client,
    read: &Statement,
    pending: &Pending,
    events: &broadcast::Sender<ChainEvent>,
) -> String {
    let mut published = Positions::new();
    // Whether `published` may lag the database (no subscriber was there
    // to publish to): then heads are read again and subscribers resync.
    let mut stale = true;
    loop {
        let (notified, ended) = pending.take();
        if let Some(why) = ended {
            return why;
        }
        if events.receiver_count() == 0 {
            stale = true;
        } else if stale {
            match within(heads(client)).await.and_then(|h| h) {
                Ok(heads) => published = heads,
                Err(e) => return e.to_string(),
            }
            stale = false;
            let _ = events.send(ChainEvent::Resync);
        } else {
            for (instance, seq) in notified {
                if seq <= published.get(&instance).copied().unwrap_or(0) {
                    continue;
                }
                let chain = publish_chain(client, read, &instance, &mut published, events);
                if let Err(e) = chain.await {
                    return e.to_string();
                }
            }
        }
        pending.wake.notified().await;
    }
}

/// Publishes every record of `instance` after the last one published.
async fn publish_chain(
    client: &Client,
    read: &Statement,
    instance: &str,
    published: &mut Positions,
    events: &broadcast::Sender<ChainEvent>,
) -> Result<(), AuditError> {
    loop {
        let after = published.get(instance).copied().unwrap_or(0);
        let rows = within(client.query(read, &[&instance, &to_i64(after), &BATCH]))
            .await?
            .map_err(db_err("reading the audit database"))?;
        let read = rows.len();
        for record in chain_records(&rows)? {
            published.insert(record.instance.clone(), record.seq);
            let _ = events.send(ChainEvent::Record(Arc::new(record)));
        }
        if read < BATCH as usize {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_keep_the_highest_seq_per_instance_and_ignore_the_malformed() {
        let pending = Pending::default();
        for payload in [
            "gw-a 3",
            "gw-b 7",
            "gw-a 5",
            "gw-a 4",
            "",
            "gw-a",
            "gw-a x",
            "gw-a -1",
            " 9",
            &format!("{} 1", "a".repeat(65)),
        ] {
            pending.note(payload);
        }
        let (heads, ended) = pending.take();
        assert_eq!(
            heads,
            BTreeMap::from([("gw-a".to_owned(), 5), ("gw-b".to_owned(), 7)])
        );
        assert_eq!(ended, None);
        // Taken once: the next look starts empty.
        assert!(pending.take().0.is_empty());
        pending.end("gone".into());
        pending.end("later".into());
        assert_eq!(pending.take().1.as_deref(), Some("gone"));
    }
}
