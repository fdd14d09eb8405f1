//! `interop.audit.v1.AccessLogService`: a data subject's view of the access
//! log, newest first, and the live stream of committed records for portals
//! that notify subjects. Officer ids stay in the log; they are not disclosed
//! here.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{loggable_id, page_token, recorded, Answer, Core, Scoped};
use crate::{
    audit::{AuditRecord, LiveRecord},
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

    fn watch_event(&self, seq: u64, mut record: AuditRecord) -> WatchAccessRecordsResponse {
        WatchAccessRecordsResponse {
            subject_ids: std::mem::take(&mut record.subjects),
            // Agency names as configured now: a watch outlives reloads.
            record: Some(Core::access_record(&self.live.snapshot(), record)),
            cursor: seq.to_string(),
        }
    }
}

/// The seq a cursor names, which must not be past `last`.
fn parse_cursor(cursor: &str, last: u64) -> Result<u64, RequestError> {
    let seq = (!cursor.is_empty() && cursor.len() <= 20 && cursor.bytes().all(|b| b.is_ascii_digit()))
        .then(|| cursor.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| {
            RequestError::invalid(
                "cursor",
                "not a cursor of this gateway: pass the `cursor` of the last event received, or nothing to start with the next record",
            )
        })?;
    if seq > last {
        return Err(RequestError::invalid(
            "cursor",
            format!("cursor {seq} is ahead of this gateway's access log (last record {last}): it came from another gateway"),
        ));
    }
    Ok(seq)
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

/// Streams every record after seq `after` to `tx`: first those already in
/// the file, then each as it is committed. `live` was subscribed before the
/// file was read, so every record is in one or the other; seqs already
/// sent are skipped, so none is sent twice.
async fn run_watch(
    core: Core,
    call: super::Call,
    mut after: u64,
    mut live: broadcast::Receiver<Arc<LiveRecord>>,
    tx: &WatchSender,
) {
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
    loop {
        // Catch up from the file.
        loop {
            let audit = Arc::clone(&core.audit);
            let from = after;
            let batch =
                tokio::task::spawn_blocking(move || audit.records_after(from, CATCH_UP_BATCH))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "access log read failed");
                    let failed = RequestError::AuditUnavailable(
                        "the access log cannot be read right now; watch again with your last cursor".into(),
                    );
                    deliver(tx, Err(failed), &mut stopping).await;
                    return;
                }
            };
            if batch.is_empty() {
                break;
            }
            for (seq, record) in batch {
                if let Err(e) = allowed(&core) {
                    deliver(tx, Err(e), &mut stopping).await;
                    return;
                }
                if !deliver(tx, Ok(core.watch_event(seq, record)), &mut stopping).await {
                    return;
                }
                after = seq;
            }
        }
        // Then live, until the watcher leaves, lags or the gateway stops.
        loop {
            let next = tokio::select! {
                _ = stopping.wait_for(|s| *s) => Err(broadcast::error::RecvError::Closed),
                _ = tx.closed() => return,
                next = live.recv() => next,
            };
            let committed = match next {
                Ok(committed) => committed,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let overflow = RequestError::ResourceExhausted {
                        reason: crate::error::reason::WATCH_OVERFLOW,
                        message: format!(
                            "this watch fell more than {} records behind (it missed {missed}); watch again with cursor {after} to resume",
                            crate::audit::LIVE_BUFFER
                        ),
                        metadata: vec![("cursor".to_owned(), after.to_string())],
                        retry_after: std::time::Duration::ZERO,
                    };
                    deliver(tx, Err(overflow), &mut stopping).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    deliver(tx, Err(shutting_down()), &mut stopping).await;
                    return;
                }
            };
            if committed.seq <= after {
                continue;
            }
            if committed.seq > after + 1 {
                // Never skip: read what is missing back from the file.
                break;
            }
            if let Err(e) = allowed(&core) {
                deliver(tx, Err(e), &mut stopping).await;
                return;
            }
            let event = core.watch_event(committed.seq, committed.record.clone());
            if !deliver(tx, Ok(event), &mut stopping).await {
                return;
            }
            after = committed.seq;
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
                    let last = self.audit.last_seq();
                    let after = if req.cursor.is_empty() {
                        last
                    } else {
                        parse_cursor(&req.cursor, last)?
                    };
                    // Subscribed before the file is read: see `run_watch`.
                    let live = self.audit.subscribe();
                    let (tx, rx) = mpsc::channel(WATCH_QUEUE);
                    let core = self.clone();
                    // `core` (and its hold on the log) is gone before the
                    // stream ends, so shutdown finds the log free to seal.
                    tokio::spawn(async move { run_watch(core, call, after, live, &tx).await });
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
