//! `interop.audit.v1.AccessLogService`: a data subject's view of the access
//! log, newest first. Officer ids stay in the log; they are not disclosed here.

use tonic::{Request, Response, Status};

use super::{loggable_id, page_token, recorded, Answer, Core, Scoped};
use crate::{
    domain,
    error::RequestError,
    policy,
    proto::{
        audit::v1::{
            access_log_service_server::AccessLogService, AccessRecord, ListAccessRecordsRequest,
            ListAccessRecordsResponse,
        },
        common::v1::AccessContext,
    },
};

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
    async fn list_access_records(
        &self,
        request: Request<ListAccessRecordsRequest>,
    ) -> Result<Response<ListAccessRecordsResponse>, Status> {
        self.call(
            policy::LIST_ACCESS_RECORDS,
            request,
            |_call, req| async move {
                check_subject(&req.subject_id)?;
                let size = page_token::page_size(req.page_size)?;
                let before = if req.page_token.is_empty() {
                    None
                } else {
                    match page_token::open(&req.page_token, TOKEN_KIND, &req.subject_id).as_deref()
                    {
                        Some([seq]) => Some(
                            seq.parse::<u64>()
                                .map_err(|_| page_token::invalid("subject_id"))?,
                        ),
                        _ => return Err(page_token::invalid("subject_id")),
                    }
                };
                // The log is read from its file: keep that off the async threads.
                let audit = std::sync::Arc::clone(&self.audit);
                let subject = req.subject_id.clone();
                let mut rows = tokio::task::spawn_blocking(move || {
                    audit.records_for_subject(&subject, before, size + 1)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| {
                    tracing::error!(error = %e, "access log read failed");
                    RequestError::AuditUnavailable(
                        "the access log cannot be read right now; retry later".into(),
                    )
                })?;
                let more = rows.len() > size;
                rows.truncate(size);
                let next_page_token = match (more, rows.last()) {
                    (true, Some((seq, _))) => {
                        page_token::seal(TOKEN_KIND, &req.subject_id, &[seq.to_string()])
                    }
                    _ => String::new(),
                };
                let records = rows
                    .into_iter()
                    .map(|(_, r)| AccessRecord {
                        time: Some(pbjson_types::Timestamp {
                            seconds: r.time_unix_ms.div_euclid(1000),
                            nanos: (r.time_unix_ms.rem_euclid(1000) * 1_000_000) as i32,
                        }),
                        agency_name: self
                            .config
                            .agencies
                            .get(&r.agency_code)
                            .map(|a| a.name.clone())
                            .unwrap_or_default(),
                        agency_code: r.agency_code,
                        method: r.method,
                        // Records written before values were checked on
                        // the way in may hold raw caller text: show only
                        // what validates (a placeholder otherwise).
                        procedure_code: recorded::kept_if(r.procedure_code, |s| {
                            domain::agency::parse_procedure_code(s).is_ok()
                        }),
                        dossier_id: recorded::kept_if(r.dossier_id, |s| {
                            domain::agency::parse_dossier_id(s).is_ok()
                        }),
                        fields: r.fields,
                        outcome: r.outcome,
                        relay_agency_code: r.relay_agency_code,
                    })
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
