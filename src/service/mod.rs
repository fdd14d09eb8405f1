//! The tonic service impls: thin adapters from protobuf to the modules below.
//! Every data call takes the same path, written once in [`Core::call`]:
//! identity (certificate -> agency), access context, grant, field mask, the
//! registry lookup, and one structured log line.

use std::{
    future::Future,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use tonic::{metadata::MetadataValue, Request, Response, Status};

use crate::{
    audit::{AuditLog, AuditRecord},
    domain,
    error::{RequestError, Violation},
    identity::AgencyId,
    policy::{Disclosure, MethodSpec},
    proto::common::v1::{AccessContext, Provenance},
    registry::Store,
    snapshot::{Live, Snapshot},
    upstream::Upstream,
};

pub mod access_log;
pub mod business;
pub mod catalog;
pub mod citizen;
pub mod land;
pub mod page_token;
pub mod recorded;
pub mod witness;

/// Longest officer id accepted (it is free text from the caller's system).
const MAX_OFFICER_ID: usize = 64;

/// Response header carrying the id under which the call was audited.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What every service shares: the config in force, the store, the access log.
#[derive(Clone)]
pub struct Core {
    /// The config in force. A call takes one snapshot of it when it starts
    /// and uses only that (`Call::snapshot`), whatever reloads meanwhile.
    pub live: Arc<Live>,
    /// Answered data calls carry a signed receipt. Fixed at start, as the
    /// receipt layer is built then.
    pub receipts: bool,
    pub store: Store,
    pub audit: Arc<AuditLog>,
    /// Owners' gateways of the forwarded services.
    pub upstreams: Arc<crate::upstream::Upstreams>,
    /// Failed `VerifyCitizen` calls per agency and personal id.
    pub verify_budget: Arc<crate::verify_budget::VerifyBudget>,
    /// The keys page tokens are sealed with (shared by every instance when
    /// the access log is in PostgreSQL).
    pub page_keys: Arc<page_token::Keys>,
    /// Turns true when the server shuts down: long calls (watches) end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Each agency's token bucket and calls in flight; the limits
    /// themselves are read from `config` per call.
    pub agency_limits: Arc<crate::limits::AgencyLimiter>,
    /// Where access-record latency and forwarded calls are counted (with
    /// `[admin]` only).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
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
    /// The agency the call is for (a relay's consumer when relayed).
    pub agency: AgencyId,
    /// The gateway that relayed the call on behalf of `agency`, if any.
    pub relay: Option<AgencyId>,
    /// The id under which the call is recorded in this gateway's access log.
    pub request_id: String,
    pub procedure_code: String,
    pub dossier_id: String,
    pub disclosure: Arc<Disclosure>,
    /// The config this call was decided under, for the rest of it.
    pub snapshot: Arc<Snapshot>,
    /// The caller's certificate chain, for a long call (a watch) to check
    /// again under a later config.
    pub peer_certs: Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>>,
}

impl Call {
    /// Whether this call would still be allowed under `snapshot` (a config
    /// reloaded since it started): the caller's certificate still names a
    /// configured agency and verifies (CRLs, the agency's CA), and the
    /// agency the call is for still has a grant for `method` and the
    /// procedure. A long call checks this when the config changes.
    pub fn still_allowed(
        &self,
        snapshot: &Snapshot,
        method: MethodSpec,
    ) -> Result<(), RequestError> {
        snapshot.agency_of_peer(self.peer_certs.as_deref().map(Vec::as_slice))?;
        if !snapshot.config.agencies.contains_key(self.agency.as_str()) {
            return Err(RequestError::Unauthenticated {
                reason: crate::error::reason::UNKNOWN_AGENCY,
                message: format!(
                    "agency {} is no longer configured on this gateway",
                    self.agency
                ),
            });
        }
        snapshot
            .config
            .policy
            .authorize(self.agency.as_str(), method, &self.procedure_code)
            .map(drop)
    }
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

/// `id` as the value of a [`REQUEST_ID_HEADER`]. It is unique to every
/// call, so it is marked never-indexed: HPACK then sends it as a literal
/// instead of adding it to both ends' header tables on every call (evicting
/// entries that would have repeated).
pub fn request_id_value(
    id: &str,
) -> Result<MetadataValue<tonic::metadata::Ascii>, tonic::metadata::errors::InvalidMetadataValue> {
    let mut value = MetadataValue::try_from(id)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Whether `id` has the form of [`new_request_id`]'s ids.
fn is_request_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A caller-supplied identifier as it may appear in a log line: a personal id
/// masked; in anything else, every run of 9 or more digits masked (it could
/// be a personal id with noise around it), control characters dropped, and
/// at most 24 characters.
pub fn loggable_id(id: &str) -> String {
    if let Ok(pid) = domain::personal_id::parse(id) {
        return pid.masked();
    }
    // Caller text that is no identifier is not repeated, as in the access
    // record: its placeholder, made (like the record's) of its first 20
    // characters, so the two match.
    if !id.is_empty() && !domain::is_subject_key(id) {
        return recorded::placeholder(&id.chars().take(20).collect::<String>());
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
    // Control characters are dropped first: dropped between digits, they
    // would join two short runs into a long one after the masking.
    for c in id.chars().filter(|c| !c.is_control()).take(24) {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
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
            format!("at most {MAX_OFFICER_ID} characters, none of them control characters or invisible formatting (bidirectional overrides, zero-width characters)"),
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
        let snapshot = self.live.snapshot();
        let shed_slot = request
            .extensions()
            .get::<crate::limits::layers::ShedSlot>()
            .cloned();
        let time_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let on_behalf_of = on_behalf_of(request.metadata()).map(|v| v.map(str::to_owned));
        // A relay's own request id is kept, so its log and this one join on
        // it; anyone else's is ignored.
        let relay_request_id = request
            .metadata()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_request_id(id))
            .map(str::to_owned);
        let mut request_id = new_request_id();
        let mut relay_for_log: Option<AgencyId> = None;
        let certs = request.peer_certs();
        let req = request.into_inner();
        let subject = req.subject_for_log();
        let requested_subjects = req.subjects();
        let context = req.context().cloned().unwrap_or_default();
        let mut audited_agency: Option<AgencyId> = None;
        let procedure_for_log = req
            .context()
            .map(
                |c| match domain::agency::parse_procedure_code(&c.procedure_code) {
                    Ok(_) => c.procedure_code.clone(),
                    Err(_) if c.procedure_code.is_empty() => String::new(),
                    Err(_) => recorded::placeholder(&c.procedure_code),
                },
            )
            .unwrap_or_default();
        let mut agency_for_log = String::from("-");
        // Slots among the agencies' calls in flight, held until the call
        // (its access record included) is done.
        let mut in_flight = Vec::new();

        let result = async {
            let caller = snapshot.agency_of_peer(certs.as_deref().map(Vec::as_slice))?;
            let peer_certs = certs.clone();
            agency_for_log = caller.to_string();
            audited_agency = Some(caller.clone());
            let principal = snapshot.principal_of(
                caller,
                on_behalf_of
                    .as_ref()
                    .map(|v| v.as_deref().map_err(|why| *why)),
            )?;
            let agency = principal.agency;
            if let Some(relay) = &principal.relay {
                agency_for_log = format!("{agency} via {relay}");
                audited_agency = Some(agency.clone());
                relay_for_log = principal.relay.clone();
                if let Some(id) = relay_request_id {
                    request_id = id;
                }
            }
            // Before anything else is looked at: a flood of malformed calls
            // spends the agency's share like any other. A relayed call
            // counts for the relay (everything it relays) and the consumer.
            for charged in principal.relay.iter().chain([&agency]) {
                in_flight.push(self.admit(&snapshot, charged)?);
            }
            let (procedure_code, dossier_id) = check_context(req.context())?;
            let mode = if principal.relay.is_some() {
                crate::policy::MaskMode::UpperBound
            } else {
                crate::policy::MaskMode::Strict
            };
            let disclosure = snapshot.disclosures.disclose(
                &snapshot.config.policy,
                agency.as_str(),
                method,
                &procedure_code,
                req.read_mask(),
                mode,
            )?;
            let call = Call {
                agency,
                relay: principal.relay,
                request_id: request_id.clone(),
                procedure_code,
                dossier_id,
                disclosure,
                snapshot: Arc::clone(&snapshot),
                peer_certs,
            };
            f(call, req).await
        }
        .await;

        // No answer leaves before its access record is durable; a call whose
        // record cannot be written fails closed.
        let mut result = result;
        // Told to a relay only: which fields it receives, for its own log.
        let disclosed = match (&result, &relay_for_log) {
            (Ok(answer), Some(_)) => MetadataValue::try_from(answer.fields.join(",")).ok(),
            _ => None,
        };
        // What this call's receipt will assert, once it is answered OK.
        let mut receipt: Option<crate::receipt::Claims> = None;
        let result = match audited_agency {
            None => result,
            Some(agency) => {
                let (subjects, fields, code, reason) = match &mut result {
                    // Only the response is needed after this: move, not copy.
                    Ok(a) => (
                        std::mem::take(&mut a.subjects),
                        std::mem::take(&mut a.fields),
                        tonic::Code::Ok,
                        String::new(),
                    ),
                    Err(e) => (requested_subjects, Vec::new(), e.code(), e.reason_text()),
                };
                let (context, subjects) = recordable(context, subjects);
                let mut fields = fields;
                fields.sort();
                fields.dedup();
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
                    relay_agency_code: relay_for_log
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    reason,
                };
                if code == tonic::Code::Ok && self.receipts {
                    receipt = Some(crate::receipt::Claims::of(&record));
                }
                // Nothing is disclosed: the gateway-wide place goes back
                // once the record is in the writer's bounded queue (a slow
                // log still holds refusals back there); the answer still
                // waits for its record to be durable.
                let release = shed_slot.filter(|_| code != tonic::Code::Ok);
                let appending = Instant::now();
                let appended = self
                    .audit
                    .append_and_tell(record, move || {
                        if let Some(slot) = release {
                            slot.release();
                        }
                    })
                    .await;
                if let Some(m) = &self.metrics {
                    m.audit_append(appending.elapsed());
                }
                match appended {
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
        let id = request_id_value(&request_id).ok().filter(|_| recorded);
        match result {
            Ok(answer) => {
                let mut response = Response::new(answer.response);
                if let Some(id) = id {
                    response.metadata_mut().insert(REQUEST_ID_HEADER, id);
                }
                if let Some(fields) = disclosed {
                    response
                        .metadata_mut()
                        .insert(crate::upstream::DISCLOSED_FIELDS_HEADER, fields);
                }
                // Signed into the trailers by `receipt::ReceiptLayer`.
                if let Some(claims) = receipt {
                    response.extensions_mut().insert(claims);
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
    context: AccessContext,
    subjects: Vec<String>,
) -> (recorded::RecordedContext, Vec<String>) {
    let mut subjects = recorded::subjects(subjects);
    subjects.sort();
    subjects.dedup();
    (recorded::context(context, MAX_OFFICER_ID), subjects)
}

/// The `x-interop-on-behalf-of` header of a request: absent, one text
/// value, or unusable (`Err`, saying why: not text, or given more than
/// once, when which agency the call is for would be a guess).
pub fn on_behalf_of(metadata: &tonic::metadata::MetadataMap) -> Option<Result<&str, &'static str>> {
    let mut values = metadata
        .get_all(crate::upstream::ON_BEHALF_OF_HEADER)
        .iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(Err(
            "x-interop-on-behalf-of is given more than once; a relayed call names one agency",
        ));
    }
    Some(
        first
            .to_str()
            .map_err(|_| "x-interop-on-behalf-of is not an agency code"),
    )
}

impl Core {
    /// One call of `agency` under its configured share (`rate_per_second`,
    /// `burst`, `max_in_flight`), as this call's config snapshot has it.
    fn admit(
        &self,
        snapshot: &Snapshot,
        agency: &AgencyId,
    ) -> Result<crate::limits::InFlight, RequestError> {
        let code = agency.as_str();
        let limits = snapshot
            .config
            .agencies
            .get(code)
            .map(|a| a.limits.clone())
            .unwrap_or_default();
        self.agency_limits.admit(code, &limits, Instant::now())
    }
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

impl Core {
    /// The owner's gateway that answers `method`, when its service is forwarded.
    pub fn upstream(&self, method: MethodSpec) -> Option<Arc<Upstream>> {
        self.upstreams.get(method.service()).cloned()
    }
}

impl Call {
    /// Provenance of an answer from the embedded store: the service's
    /// configured owner (none when the service has no `[[registry]]` entry)
    /// and when the record was current.
    pub fn stored_provenance(
        &self,
        method: MethodSpec,
        as_of_ms: Option<i64>,
    ) -> Option<Provenance> {
        Some(Provenance {
            source_agency: self
                .snapshot
                .config
                .registry(method.service())
                .map(|r| r.owner.clone())
                .unwrap_or_default(),
            as_of: as_of_ms.map(|ms| pbjson_types::Timestamp {
                seconds: ms.div_euclid(1000),
                nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
        })
    }
}

impl Core {
    /// Forwards `req` for `call` to the service's owner, on behalf of the
    /// calling agency. Returns the owner's answer and the fields it says it
    /// disclosed, each of which the call may disclose (else INTERNAL: an
    /// owner answering beyond what was asked discloses nothing). What the
    /// answer actually carries is added by [`check_within`].
    pub async fn forward<Req, Resp>(
        &self,
        upstream: &Upstream,
        method: MethodSpec,
        call: &Call,
        req: Req,
    ) -> Result<(Resp, Vec<String>), RequestError>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let sent = upstream
            .unary(method.name, req, call.agency.as_str(), &call.request_id)
            .await;
        let (code, answered) = match &sent {
            Ok(_) => (tonic::Code::Ok, true),
            Err(RequestError::Upstream(status)) => (status.code(), true),
            Err(e) => (e.code(), false),
        };
        if let Some(m) = &self.metrics {
            m.forwarded(&upstream.owner, code, answered);
        }
        let (response, metadata) = sent?;
        let Some(listed) = metadata.get(crate::upstream::DISCLOSED_FIELDS_HEADER) else {
            return Ok((response, Vec::new()));
        };
        let listed = listed
            .to_str()
            .map_err(|_| owner_misbehaved(upstream, "its disclosed-fields header is not text"))?;
        let fields: Vec<String> = listed
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(extra) = fields
            .iter()
            .find(|f| !call.disclosure.field_names.contains(f))
        {
            return Err(owner_misbehaved(
                upstream,
                &format!("it says it disclosed {extra}, which was not asked for"),
            ));
        }
        Ok((response, fields))
    }
}

/// The field mask sent to an owner: exactly what this call may disclose
/// (what was asked, narrowed to this gateway's grant).
pub fn narrowed_mask(call: &Call) -> Option<pbjson_types::FieldMask> {
    Some(pbjson_types::FieldMask {
        paths: call.disclosure.field_names.clone(),
    })
}

/// A forwarded answer's provenance: the configured owner (whatever the
/// answer names) and the time the owner reported its data current.
pub fn forwarded_provenance(
    reported: Option<Provenance>,
    upstream: &Upstream,
) -> Option<Provenance> {
    Some(Provenance {
        source_agency: upstream.owner.clone(),
        as_of: reported.and_then(|p| p.as_of),
    })
}

/// Refuses a forwarded record that carries any field outside the call's
/// disclosure (masking it must change nothing), and adds to `disclosed` the
/// disclosure's field paths the record does carry: what the access log
/// records is what leaves, not what the owner says.
pub fn check_within<T: prost::Message>(
    call: &Call,
    upstream: &Upstream,
    record: &T,
    disclosed: &mut Vec<String>,
) -> Result<(), RequestError> {
    let bytes = record.encode_to_vec();
    let unreadable = |e: crate::fieldmask::WireError| {
        owner_misbehaved(upstream, &format!("its record does not parse: {e}"))
    };
    let kept = call.disclosure.mask.apply(&bytes).map_err(unreadable)?;
    if kept != bytes {
        return Err(owner_misbehaved(
            upstream,
            "its record carries fields outside what was asked",
        ));
    }
    let d = &call.disclosure;
    for (name, mask) in d.field_names.iter().zip(&d.field_masks) {
        if !disclosed.contains(name) && mask.keeps_any(&bytes).map_err(unreadable)? {
            disclosed.push(name.clone());
        }
    }
    Ok(())
}

fn owner_misbehaved(upstream: &Upstream, what: &str) -> RequestError {
    tracing::error!(target: "interop_gateway::upstream", service = upstream.service, owner = %upstream.owner, "refused the owner's answer: {what}");
    RequestError::Internal(format!(
        "the owner of {} ({}) answered outside the contract ({what}); nothing of its answer is disclosed",
        upstream.service, upstream.owner
    ))
}

/// Maps a store failure to the caller's view of it.
pub fn store_error(e: crate::registry::StoreError) -> RequestError {
    tracing::error!(error = %e, "store read failed");
    RequestError::Unavailable("the registry store cannot be read right now; retry later".into())
}

#[cfg(test)]
mod tests {
    use super::loggable_id;
    use proptest::prelude::*;

    proptest! {
        /// Fuzz target: a request's access context, as every data call
        /// checks it. Valid or a list of violations naming context fields;
        /// never a panic.
        #[test]
        fn fuzz_access_context(
            procedure in crate::fuzz::text_near("1.004227", 4),
            dossier in crate::fuzz::text_near("000.00.20.H13-241205-0001", 6),
            officer in crate::fuzz::text_near("officer-7", 6),
            present in any::<bool>(),
        ) {
            let ctx = crate::proto::common::v1::AccessContext {
                procedure_code: procedure,
                dossier_id: dossier,
                officer_id: officer,
            };
            match super::check_context(present.then_some(&ctx)) {
                Ok((p, d)) => {
                    prop_assert_eq!(p, ctx.procedure_code);
                    prop_assert_eq!(d, ctx.dossier_id);
                }
                Err(crate::error::RequestError::InvalidArgument { violations, .. }) => {
                    prop_assert!(!violations.is_empty());
                    prop_assert!(violations.iter().all(|v| v.field.starts_with("context")));
                }
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }

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
            // Found by fuzz_identifiers: a control character splitting the
            // digits into runs too short to mask, then dropped.
            "092\085000123",
            "092085\u{1b}000123",
        ] {
            let shown = loggable_id(input);
            assert!(!shown.contains("092085000123"), "{input:?} -> {shown:?}");
            assert!(!shown.contains('\n'));
        }
        assert_eq!(loggable_id("0300588569"), "030***");
        assert_eq!(loggable_id("31117/12/101"), "31117/12/101");
        // Text that is no identifier is not repeated: its placeholder.
        for text in ["+84 912 345 678", "=1+2", "3112/0/0", "\u{1b}]0;pwned\u{7}"] {
            let shown = loggable_id(text);
            assert!(shown.starts_with("invalid:"), "{text:?} -> {shown:?}");
        }
        // The same placeholder as the access record's, made of the first
        // 20 characters (as `subjects()` keeps them).
        let long = "+84 912 345 678 ext 1234";
        assert_eq!(
            loggable_id(long),
            super::recorded::placeholder(&long.chars().take(20).collect::<String>())
        );
    }
}
