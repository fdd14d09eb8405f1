//! `interop.audit.v1.AccessLogService`: a data subject's view of the access
//! log, newest first, and the live stream of committed records for portals
//! that notify subjects: this gateway's own chain for the file log, every
//! instance's chain for a shared database (its cursor in [`cursor`]).
//! Officer ids stay in the log; they are not disclosed here.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

mod cursor;

use super::{loggable_id, page_token, recorded, Answer, Core, Scoped};
use crate::{
    audit::{
        store::{ChainEvent, ChainRecord, ChainsReader, Positions},
        AuditRecord, LiveRecord,
    },
    domain,
    error::RequestError,
    policy,
    proto::{
        audit::v1::{
            access_log_service_server::AccessLogService, AccessRecord, ListAccessRecordsRequest,
            ListAccessRecordsResponse, WatchAccessRecordsRequest, WatchAccessRecordsResponse,
        },
        common::v1::AccessContext,
    },
    snapshot::Snapshot,
};

/// Events read back from the file per step while a watcher catches up.
const CATCH_UP_BATCH: usize = 256;
/// Events queued for one watcher's connection.
const WATCH_QUEUE: usize = 64;

impl Scoped for WatchAccessRecordsRequest {
    fn context(&self) -> Option<&AccessContext> {
        self.context.as_ref()
    }
    fn read_mask(&self) -> &[String] {
        &[]
    }
    fn subject_for_log(&self) -> String {
        "-".into()
    }
    fn subjects(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Core {
    /// A log record as a data subject's portal may see it: no officer id.
    fn access_record(snapshot: &Snapshot, r: AuditRecord) -> AccessRecord {
        AccessRecord {
            time: Some(pbjson_types::Timestamp {
                seconds: r.time_unix_ms.div_euclid(1000),
                nanos: (r.time_unix_ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
            agency_name: snapshot
                .config
                .agencies
                .get(&r.agency_code)
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            agency_code: r.agency_code,
            method: r.method,
            // Records written before values were checked on the way in may
            // hold raw caller text: show only what validates (a placeholder
            // otherwise).
            procedure_code: recorded::kept_if(r.procedure_code, |s| {
                domain::agency::parse_procedure_code(s).is_ok()
            }),
            dossier_id: recorded::kept_if(r.dossier_id, |s| {
                domain::agency::parse_dossier_id(s).is_ok()
            }),
            fields: r.fields,
            outcome: r.outcome,
            relay_agency_code: r.relay_agency_code,
        }
    }

    fn watch_event(&self, cursor: String, mut record: AuditRecord) -> WatchAccessRecordsResponse {
        WatchAccessRecordsResponse {
            subject_ids: std::mem::take(&mut record.subjects),
            // Agency names as configured now: a watch outlives reloads.
            record: Some(Core::access_record(&self.live.snapshot(), record)),
            cursor,
        }
    }
}

type WatchSender = mpsc::Sender<Result<WatchAccessRecordsResponse, Status>>;

/// Sends one item to the watcher; false when the watch is over (the
/// watcher left, or the gateway is stopping and the watcher was told).
async fn deliver(
    tx: &WatchSender,
    item: Result<WatchAccessRecordsResponse, RequestError>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let is_event = item.is_ok();
    tokio::select! {
        sent = tx.send(item.map_err(Status::from)) => sent.is_ok() && is_event,
        _ = stopping.wait_for(|s| *s) => {
            let _ = tx.try_send(Err(shutting_down().into()));
            false
        }
    }
}

fn shutting_down() -> RequestError {
    RequestError::ShuttingDown(
        "the gateway is shutting down; watch again with your last cursor".into(),
    )
}

fn read_failed() -> RequestError {
    RequestError::AuditUnavailable(
        "the access log cannot be read right now; watch again with your last cursor".into(),
    )
}

/// The key of this gateway's own chain in [`Positions`] when the log is
/// the file log (one chain, no instance names).
const OWN_CHAIN: &str = "";

/// The log a watch follows, and how it learns of commits.
enum Feed {
    /// This gateway's own chain (the file log): the writer's broadcast.
    Own(broadcast::Receiver<Arc<LiveRecord>>),
    /// Every instance's chain in a shared store: the store's feed.
    Shared {
        chains: Arc<dyn ChainsReader>,
        live: broadcast::Receiver<ChainEvent>,
    },
}

/// What the feed said next.
enum Next {
    Record(Arc<ChainRecord>),
    /// Read back from the store (the feed may have missed records).
    ReadBack,
    Lagged(u64),
    Closed,
    Unavailable,
}

impl Feed {
    async fn next(&mut self) -> Next {
        use broadcast::error::RecvError;
        match self {
            Feed::Own(live) => match live.recv().await {
                Ok(committed) => Next::Record(Arc::new(ChainRecord {
                    instance: OWN_CHAIN.to_owned(),
                    seq: committed.seq,
                    record: committed.record.clone(),
                })),
                Err(RecvError::Lagged(missed)) => Next::Lagged(missed),
                Err(RecvError::Closed) => Next::Closed,
            },
            Feed::Shared { live, .. } => match live.recv().await {
                Ok(ChainEvent::Record(committed)) => Next::Record(committed),
                Ok(ChainEvent::Resync) => Next::ReadBack,
                // The feed logged why, once for all watches.
                Ok(ChainEvent::Unavailable(_)) => Next::Unavailable,
                Err(RecvError::Lagged(missed)) => Next::Lagged(missed),
                Err(RecvError::Closed) => Next::Closed,
            },
        }
    }

    /// The records after `positions` the store has, a batch at a time.
    async fn read_after(
        &self,
        audit: &Arc<crate::audit::AuditLog>,
        positions: &Positions,
    ) -> Result<Vec<ChainRecord>, String> {
        let read = match self {
            Feed::Own(_) => {
                let audit = Arc::clone(audit);
                let from = positions.get(OWN_CHAIN).copied().unwrap_or(0);
                tokio::task::spawn_blocking(move || {
                    audit.records_after(from, CATCH_UP_BATCH).map(|batch| {
                        batch
                            .into_iter()
                            .map(|(seq, record)| ChainRecord {
                                instance: OWN_CHAIN.to_owned(),
                                seq,
                                record,
                            })
                            .collect()
                    })
                })
                .await
            }
            Feed::Shared { chains, .. } => {
                let (chains, after) = (Arc::clone(chains), positions.clone());
                tokio::task::spawn_blocking(move || chains.records_after(&after, CATCH_UP_BATCH))
                    .await
            }
        };
        read.map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
    }

    /// The cursor a watcher passes back to resume after `positions`.
    fn cursor(&self, positions: &Positions) -> String {
        match self {
            Feed::Own(_) => cursor::seq_cursor(positions.get(OWN_CHAIN).copied().unwrap_or(0)),
            Feed::Shared { .. } => cursor::chains_cursor(positions),
        }
    }
}

/// Where a new watch starts, from its request's cursor, and the feed it
/// follows, subscribed before anything is read back (see `run_watch`).
async fn start_watch(core: &Core, cursor: &str) -> Result<(Feed, Positions), RequestError> {
    let Some(chains) = core.audit.reader().chains() else {
        let last = core.audit.last_seq();
        let after = if cursor.is_empty() {
            last
        } else {
            cursor::parse_seq(cursor, last)?
        };
        let feed = Feed::Own(core.audit.subscribe());
        return Ok((feed, Positions::from([(OWN_CHAIN.to_owned(), after)])));
    };
    let named = (!cursor.is_empty())
        .then(|| cursor::parse_chains(cursor))
        .transpose()?;
    let live = chains.subscribe();
    let reader = Arc::clone(&chains);
    let heads = tokio::task::spawn_blocking(move || reader.heads())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| {
            tracing::error!(error = %e, "access log read failed");
            read_failed()
        })?;
    let positions = match named {
        // From the next record committed on any instance.
        None => heads,
        Some(positions) => {
            cursor::check_against(&positions, &heads)?;
            positions
        }
    };
    Ok((Feed::Shared { chains, live }, positions))
}

/// Streams every record after `positions` to `tx`: first those the store
/// already has, then each as it is committed. The feed was subscribed before
/// the store was read, so every record is in one or the other; per chain,
/// seqs already sent are skipped (none is sent twice) and a seq past the
/// next expected sends the watch back to the store (none is skipped).
/// Returns why the watch ended (the reasons of
/// `interop_gateway_watch_ended`); counts its events on `meter`.
async fn run_watch(
    core: Core,
    call: super::Call,
    mut positions: Positions,
    mut feed: Feed,
    tx: &WatchSender,
    meter: Option<&crate::metrics::WatchMeter>,
) -> &'static str {
    let mut stopping = core.stopping.clone();
    let mut generation = call.snapshot.generation;
    // A watch outlives reloads: before each event, a config newer than the
    // last one checked must still allow it (revoked certificate, agency
    // removed, grant withdrawn end it). Steady state: one load, no check.
    let mut allowed = |core: &Core| {
        let now = core.live.snapshot();
        if now.generation == generation {
            return Ok(());
        }
        call.still_allowed(&now, policy::WATCH_ACCESS_RECORDS)?;
        generation = now.generation;
        Ok::<(), RequestError>(())
    };
    // Why a watch ended when an event could not be delivered.
    let gone = |core: &Core| {
        if *core.stopping.borrow() {
            "shutdown"
        } else {
            "left"
        }
    };
    // Sends one record and moves past it; why the watch is over, if it is.
    let mut send = async |record: ChainRecord, positions: &mut Positions, feed: &Feed| {
        if let Err(e) = allowed(&core) {
            deliver(tx, Err(e), &mut core.stopping.clone()).await;
            return Some("denied");
        }
        positions.insert(record.instance, record.seq);
        let event = core.watch_event(feed.cursor(positions), record.record);
        // Counted as it is handed to the stream (so a scrape after the
        // watcher read it sees it).
        if let Some(meter) = meter {
            meter.event();
        }
        if !deliver(tx, Ok(event), &mut core.stopping.clone()).await {
            return Some(gone(&core));
        }
        None
    };
    loop {
        // Catch up from the store.
        loop {
            let batch = match feed.read_after(&core.audit, &positions).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "access log read failed");
                    deliver(tx, Err(read_failed()), &mut stopping).await;
                    return "unavailable";
                }
            };
            if batch.is_empty() {
                break;
            }
            for record in batch {
                if let Some(ended) = send(record, &mut positions, &feed).await {
                    return ended;
                }
            }
        }
        // Then live, until the watcher leaves, lags or the gateway stops.
        loop {
            let next = tokio::select! {
                _ = stopping.wait_for(|s| *s) => Next::Closed,
                _ = tx.closed() => return "left",
                next = feed.next() => next,
            };
            let committed = match next {
                Next::Record(committed) => committed,
                Next::ReadBack => break,
                Next::Lagged(missed) => {
                    let cursor = feed.cursor(&positions);
                    let resume = if cursor.len() <= 128 {
                        format!("watch again with cursor {cursor} to resume")
                    } else {
                        "watch again with the `cursor` of this error's metadata to resume".into()
                    };
                    let overflow = RequestError::ResourceExhausted {
                        reason: crate::error::reason::WATCH_OVERFLOW,
                        message: format!(
                            "this watch fell more than {} records behind (it missed {missed}); {resume}",
                            crate::audit::LIVE_BUFFER
                        ),
                        metadata: vec![("cursor".to_owned(), cursor)],
                        retry_after: std::time::Duration::ZERO,
                    };
                    deliver(tx, Err(overflow), &mut stopping).await;
                    return "overflow";
                }
                Next::Closed => {
                    deliver(tx, Err(shutting_down()), &mut stopping).await;
                    return "shutdown";
                }
                Next::Unavailable => {
                    deliver(tx, Err(read_failed()), &mut stopping).await;
                    return "unavailable";
                }
            };
            let at = positions.get(&committed.instance).copied().unwrap_or(0);
            if committed.seq <= at {
                continue;
            }
            if committed.seq > at + 1 {
                // Never skip: read what is missing back from the store.
                break;
            }
            if let Some(ended) = send(Arc::unwrap_or_clone(committed), &mut positions, &feed).await
            {
                return ended;
            }
        }
    }
}

const TOKEN_KIND: &str = "a1";

impl Scoped for ListAccessRecordsRequest {
    fn context(&self) -> Option<&AccessContext> {
        self.context.as_ref()
    }
    fn read_mask(&self) -> &[String] {
        &[]
    }
    fn subject_for_log(&self) -> String {
        loggable_id(&self.subject_id)
    }
    fn subjects(&self) -> Vec<String> {
        vec![self.subject_id.chars().take(20).collect()]
    }
}

fn check_subject(id: &str) -> Result<(), RequestError> {
    if domain::personal_id::parse(id).is_ok() || domain::enterprise_code::parse(id).is_ok() {
        return Ok(());
    }
    let why = if id.is_empty() {
        "required: a personal id (12 digits) or an enterprise code".to_owned()
    } else if id.len() == 12 {
        domain::personal_id::parse(id)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    } else {
        domain::enterprise_code::parse(id)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    Err(RequestError::invalid("subject_id", why))
}

#[tonic::async_trait]
impl AccessLogService for Core {
    type WatchAccessRecordsStream = ReceiverStream<Result<WatchAccessRecordsResponse, Status>>;

    async fn watch_access_records(
        &self,
        request: Request<WatchAccessRecordsRequest>,
    ) -> Result<Response<Self::WatchAccessRecordsStream>, Status> {
        let mut response = self
            .call(
                policy::WATCH_ACCESS_RECORDS,
                request,
                |call, req| async move {
                    // Subscribed before the store is read: see `run_watch`.
                    let (feed, positions) = start_watch(self, &req.cursor).await?;
                    let (tx, rx) = mpsc::channel(WATCH_QUEUE);
                    let core = self.clone();
                    // `core` (and its hold on the log) is gone before the
                    // stream ends, so shutdown finds the log free to seal.
                    tokio::spawn(async move {
                        let meter = core.metrics.as_ref().map(|m| m.watch(call.agency.as_str()));
                        let ended =
                            run_watch(core, call, positions, feed, &tx, meter.as_ref()).await;
                        if let Some(meter) = meter {
                            meter.ended(ended);
                        }
                    });
                    Ok(Answer {
                        response: ReceiverStream::new(rx),
                        subjects: Vec::new(),
                        fields: Vec::new(),
                    })
                },
            )
            .await?;
        // A stream has no single message for a receipt to name.
        response.extensions_mut().remove::<crate::receipt::Claims>();
        Ok(response)
    }

    async fn list_access_records(
        &self,
        request: Request<ListAccessRecordsRequest>,
    ) -> Result<Response<ListAccessRecordsResponse>, Status> {
        self.call(
            policy::LIST_ACCESS_RECORDS,
            request,
            |call, req| async move {
                check_subject(&req.subject_id)?;
                let size = page_token::page_size(req.page_size)?;
                // The position is the store's own cursor (for the file log,
                // a seq in decimal, as tokens have always carried).
                let before = if req.page_token.is_empty() {
                    None
                } else {
                    match self
                        .page_keys
                        .open(&req.page_token, TOKEN_KIND, &req.subject_id)
                    {
                        Some(mut parts) if parts.len() == 1 => parts.pop(),
                        _ => return Err(page_token::invalid("subject_id")),
                    }
                };
                // The store's reads block: keep them off the async threads.
                let audit = std::sync::Arc::clone(&self.audit);
                let subject = req.subject_id.clone();
                let mut rows = tokio::task::spawn_blocking(move || {
                    audit.records_for_subject(&subject, before.as_deref(), size + 1)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| match r {
                    // A token sealed by this gateway whose position the store
                    // cannot read: treat it as any other bad token.
                    Err(crate::audit::AuditError::Options(_)) => Ok(None),
                    Err(e) => Err(e.to_string()),
                    Ok(rows) => Ok(Some(rows)),
                })
                .map_err(|e| {
                    tracing::error!(error = %e, "access log read failed");
                    RequestError::AuditUnavailable(
                        "the access log cannot be read right now; retry later".into(),
                    )
                })?
                .ok_or_else(|| page_token::invalid("subject_id"))?;
                let more = rows.len() > size;
                rows.truncate(size);
                let next_page_token = match (more, rows.last()) {
                    (true, Some(row)) => self.page_keys.seal(
                        TOKEN_KIND,
                        &req.subject_id,
                        std::slice::from_ref(&row.cursor),
                    ),
                    _ => String::new(),
                };
                let records = rows
                    .into_iter()
                    .map(|row| Core::access_record(&call.snapshot, row.record))
                    .collect();
                Ok(Answer {
                    response: ListAccessRecordsResponse {
                        records,
                        next_page_token,
                    },
                    subjects: vec![req.subject_id.clone()],
                    fields: Vec::new(),
                })
            },
        )
        .await
    }
}
