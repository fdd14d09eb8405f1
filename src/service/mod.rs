//! The tonic service impls: thin adapters from protobuf to the modules below.
//! Every data call takes the same path, written once in [`Core::call`]:
//! identity (certificate -> agency), access context, grant, field mask, the
//! registry lookup, and one structured log line.

use std::{
    future::Future,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use tonic::{Request, Response, Status};

use crate::{
    audit::{AuditLog, AuditRecord},
    config::Config,
    domain,
    error::{RequestError, Violation},
    identity::AgencyId,
    policy::{Disclosure, MethodSpec},
    proto::common::v1::AccessContext,
    registry::Store,
};

pub mod access_log;
pub mod business;
pub mod citizen;
pub mod land;
pub mod page_token;
pub mod recorded;

/// Longest officer id accepted (it is free text from the caller's system).
const MAX_OFFICER_ID: usize = 64;

/// Response header carrying the id under which the call was audited.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What every service shares: the validated config, the store, the access log.
#[derive(Clone)]
pub struct Core {
    pub config: Arc<Config>,
    pub store: Store,
    pub audit: Arc<AuditLog>,
    /// Client certificates already resolved to an agency.
    pub identities: Arc<crate::identity::IdentityCache>,
    /// Grant decisions already made.
    pub disclosures: Arc<crate::policy::DisclosureCache>,
}

/// A successful answer and what the access log must say about it.
pub struct Answer<Resp> {
    pub response: Resp,
    /// Whose records it concerns (personal ids, enterprise codes, parcel keys).
    pub subjects: Vec<String>,
    /// Field paths of registry records it discloses.
    pub fields: Vec<String>,
}

/// An allowed call: who, for what, and what it may disclose.
pub struct Call {
    pub agency: AgencyId,
    pub procedure_code: String,
    pub dossier_id: String,
    pub disclosure: Arc<Disclosure>,
}

/// The parts of a request every data call has.
pub trait Scoped {
    fn context(&self) -> Option<&AccessContext>;
    fn read_mask(&self) -> &[String];
    /// The record key, in a form safe to log (personal ids masked).
    fn subject_for_log(&self) -> String;
    /// Whose records the request asks about, for the access log.
    fn subjects(&self) -> Vec<String>;
}

/// A fresh request id: 128 random bits, hex.
fn new_request_id() -> String {
    use std::{
        collections::hash_map::RandomState,
        hash::BuildHasher,
        sync::{
            atomic::{AtomicU64, Ordering},
            OnceLock,
        },
    };
    // A counter through a keyed PRF (SipHash with per-process random keys):
    // unique within a process without a system call per request, and
    // without telling callers how many calls the gateway has served.
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (high, low) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:016x}", high.hash_one(n), low.hash_one(n))
}

/// A caller-supplied identifier as it may appear in a log line: a personal id
/// masked; in anything else, every run of 9 or more digits masked (it could
/// be a personal id with noise around it), control characters dropped, and
/// at most 24 characters.
pub fn loggable_id(id: &str) -> String {
    if let Ok(pid) = domain::personal_id::parse(id) {
        return pid.masked();
    }
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 9 {
            out.push_str(&digits[..3]);
            out.push_str("***");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in id.chars().take(24) {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            if !c.is_control() {
                out.push(c);
            }
        }
    }
    flush(&mut digits, &mut out);
    out
}

fn check_context(ctx: Option<&AccessContext>) -> Result<(String, String), RequestError> {
    let Some(ctx) = ctx else {
        return Err(RequestError::invalid(
            "context",
            "required: set context.procedure_code and context.dossier_id to the procedure and dossier this call serves",
        ));
    };
    let mut violations = Vec::new();
    if ctx.procedure_code.is_empty() {
        violations.push(Violation::new(
            "context.procedure_code",
            "required: the code of the administrative procedure (for example 1.004227)",
        ));
    } else if let Err(e) = domain::agency::parse_procedure_code(&ctx.procedure_code) {
        violations.push(Violation::new("context.procedure_code", e.to_string()));
    }
    if ctx.dossier_id.is_empty() {
        violations.push(Violation::new(
            "context.dossier_id",
            "required: the dossier id in your one-stop system (for example 000.00.20.H13-241205-0001)",
        ));
    } else if let Err(e) = domain::agency::parse_dossier_id(&ctx.dossier_id) {
        violations.push(Violation::new("context.dossier_id", e.to_string()));
    }
    if !recorded::officer_id_ok(&ctx.officer_id, MAX_OFFICER_ID) {
        violations.push(Violation::new(
            "context.officer_id",
            format!("at most {MAX_OFFICER_ID} characters, none of them control characters"),
        ));
    }
    if violations.is_empty() {
        Ok((ctx.procedure_code.clone(), ctx.dossier_id.clone()))
    } else {
        Err(RequestError::InvalidArgument {
            reason: crate::error::reason::INVALID_ARGUMENT,
            violations,
        })
    }
}

impl Core {
    /// Runs one data call through identity, context, grant and mask, then `f`.
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        method: MethodSpec,
        request: Request<Req>,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Scoped,
        F: FnOnce(Call, Req) -> Fut,
        Fut: Future<Output = Result<Answer<Resp>, RequestError>>,
    {
        let started = Instant::now();
        let time_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let request_id = new_request_id();
        let certs = request.peer_certs();
        let req = request.into_inner();
        let subject = req.subject_for_log();
        let requested_subjects = req.subjects();
        let context = req.context().cloned().unwrap_or_default();
        let mut audited_agency: Option<AgencyId> = None;
        let procedure_for_log = req
            .context()
            .map(|c| c.procedure_code.chars().take(40).collect::<String>())
            .unwrap_or_default();
        let mut agency_for_log = String::from("-");

        let result = async {
            let leaf = certs.as_ref().and_then(|c| c.first()).ok_or_else(|| {
                RequestError::Unauthenticated {
                    reason: crate::error::reason::NO_AGENCY_IDENTITY,
                    message: "no client certificate on this connection".into(),
                }
            })?;
            let agency = self
                .identities
                .agency_of(leaf, &self.config.trust_domain, |code| {
                    self.config.agencies.contains_key(code)
                })?;
            agency_for_log = agency.to_string();
            audited_agency = Some(agency.clone());
            let (procedure_code, dossier_id) = check_context(req.context())?;
            let disclosure = self.disclosures.disclose(
                &self.config.policy,
                agency.as_str(),
                method,
                &procedure_code,
                req.read_mask(),
            )?;
            let call = Call {
                agency,
                procedure_code,
                dossier_id,
                disclosure,
            };
            f(call, req).await
        }
        .await;

        // No answer leaves before its access record is durable; a call whose
        // record cannot be written fails closed.
        let mut result = result;
        let result = match audited_agency {
            None => result,
            Some(agency) => {
                let (subjects, fields, code) = match &mut result {
                    // Only the response is needed after this: move, not copy.
                    Ok(a) => (
                        std::mem::take(&mut a.subjects),
                        std::mem::take(&mut a.fields),
                        tonic::Code::Ok,
                    ),
                    Err(e) => (requested_subjects, Vec::new(), e.code()),
                };
                let (context, subjects) = recordable(&context, subjects);
                let record = AuditRecord {
                    time_unix_ms,
                    request_id: request_id.clone(),
                    agency_code: agency.to_string(),
                    method: method.name.to_owned(),
                    procedure_code: context.procedure_code,
                    dossier_id: context.dossier_id,
                    officer_id: context.officer_id,
                    subjects,
                    fields,
                    outcome: crate::error::code_name(code).to_owned(),
                    latency_us: started.elapsed().as_micros() as u64,
                };
                match self.audit.append(record).await {
                    Ok(_) => result,
                    Err(e) => {
                        tracing::error!(error = %e, "access log write failed; failing the call closed");
                        Err(RequestError::AuditUnavailable(
                            "the access log cannot be written right now, so no data is disclosed; retry later".into(),
                        ))
                    }
                }
            }
        };
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code(),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "interop_gateway::access",
            agency = %agency_for_log,
            method = method.name,
            procedure = ?procedure_for_log,
            subject = ?subject,
            code = crate::error::code_name(code),
            latency_ms = format_args!("{latency_ms:.3}"),
            "call"
        );
        // The id names a record in the access log, so it is only given out
        // when that record exists.
        let recorded = !matches!(result, Err(RequestError::AuditUnavailable(_)));
        let id = tonic::metadata::MetadataValue::try_from(request_id.as_str())
            .ok()
            .filter(|_| recorded);
        match result {
            Ok(answer) => {
                let mut response = Response::new(answer.response);
                if let Some(id) = id {
                    response.metadata_mut().insert(REQUEST_ID_HEADER, id);
                }
                Ok(response)
            }
            Err(e) => {
                let mut status = Status::from(e);
                if let Some(id) = id {
                    status.metadata_mut().insert(REQUEST_ID_HEADER, id);
                }
                Err(status)
            }
        }
    }
}

/// What the access record keeps of a call's context and subjects: validated
/// values as they are, anything else as a placeholder (see [`recorded`]).
fn recordable(
    context: &AccessContext,
    subjects: Vec<String>,
) -> (recorded::RecordedContext, Vec<String>) {
    let mut subjects = recorded::subjects(subjects);
    subjects.sort();
    subjects.dedup();
    (recorded::context(context, MAX_OFFICER_ID), subjects)
}

/// Decodes a stored record after applying the call's field mask.
pub fn disclose<T: prost::Message + Default>(
    call: &Call,
    record: &[u8],
) -> Result<T, RequestError> {
    let bytes = call
        .disclosure
        .mask
        .apply(record)
        .map_err(|e| RequestError::Internal(e.to_string()))?;
    T::decode(bytes.as_slice()).map_err(|e| RequestError::Internal(format!("stored record: {e}")))
}

/// Maps a store failure to the caller's view of it.
pub fn store_error(e: crate::registry::StoreError) -> RequestError {
    tracing::error!(error = %e, "store read failed");
    RequestError::Unavailable("the registry store cannot be read right now; retry later".into())
}

#[cfg(test)]
mod tests {
    use super::loggable_id;

    #[test]
    fn request_ids_are_unique_and_do_not_count_calls() {
        let ids: Vec<String> = (0..10_000).map(|_| super::new_request_id()).collect();
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Consecutive ids share no visible counter: their first halves differ.
        assert!(ids.windows(2).all(|w| w[0][..16] != w[1][..16]));
    }

    #[test]
    fn log_lines_never_carry_a_full_personal_id() {
        for input in [
            "092085000123",
            " 092085000123",
            "092085000123\n",
            "092085000123x",
            "+84092085000123",
            "abc-092085000123-def",
        ] {
            let shown = loggable_id(input);
            assert!(!shown.contains("092085000123"), "{input:?} -> {shown:?}");
            assert!(!shown.contains('\n'));
        }
        assert_eq!(loggable_id("0300588569"), "030***");
        assert_eq!(loggable_id("31117/12/101"), "31117/12/101");
    }
}
