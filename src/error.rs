//! The one error type of request handling, and the one place where it becomes
//! a `tonic::Status` with `google.rpc` details (`ErrorInfo`, `BadRequest`,
//! `ResourceInfo`, `RetryInfo`). Reasons are stable strings clients can switch on.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// `ErrorInfo.domain` of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "interop-gateway";

/// Stable `ErrorInfo.reason` values.
pub mod reason {
    pub const NO_AGENCY_IDENTITY: &str = "NO_AGENCY_IDENTITY";
    pub const WRONG_TRUST_DOMAIN: &str = "WRONG_TRUST_DOMAIN";
    pub const UNKNOWN_AGENCY: &str = "UNKNOWN_AGENCY";
    /// A CRL in force lists the client certificate.
    pub const CERTIFICATE_REVOKED: &str = "CERTIFICATE_REVOKED";
    /// The certificate names an agency that has its own `ca`, and another
    /// CA issued it (or it no longer chains to a trusted CA at all).
    pub const WRONG_ISSUER: &str = "WRONG_ISSUER";
    /// The certificate no longer verifies for another reason (expired
    /// while its connection was open).
    pub const CERTIFICATE_INVALID: &str = "CERTIFICATE_INVALID";
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    pub const INVALID_FIELD_MASK: &str = "INVALID_FIELD_MASK";
    pub const METHOD_NOT_GRANTED: &str = "METHOD_NOT_GRANTED";
    pub const PROCEDURE_NOT_GRANTED: &str = "PROCEDURE_NOT_GRANTED";
    pub const FIELD_NOT_GRANTED: &str = "FIELD_NOT_GRANTED";
    pub const RECORD_NOT_FOUND: &str = "RECORD_NOT_FOUND";
    pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";
    pub const AUDIT_UNAVAILABLE: &str = "AUDIT_UNAVAILABLE";
    pub const VERIFICATION_LIMIT: &str = "VERIFICATION_LIMIT";
    pub const INTERNAL: &str = "INTERNAL";
    pub const RELAY_NOT_ALLOWED: &str = "RELAY_NOT_ALLOWED";
    pub const UPSTREAM_UNAVAILABLE: &str = "UPSTREAM_UNAVAILABLE";
    /// The registry's owner refused this gateway's call as
    /// UNAUTHENTICATED (the two gateways' configs disagree about the relay
    /// or the consumer agency): PERMISSION_DENIED here, since the caller's
    /// own identity was accepted.
    pub const UPSTREAM_REFUSED: &str = "UPSTREAM_REFUSED";
    pub const WATCH_OVERFLOW: &str = "WATCH_OVERFLOW";
    pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
    /// The agency is over its `rate_per_second` (RESOURCE_EXHAUSTED).
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The agency already has `max_in_flight` calls being served.
    pub const TOO_MANY_IN_FLIGHT: &str = "TOO_MANY_IN_FLIGHT";
    /// The gateway as a whole is at `[limits] max_in_flight` (UNAVAILABLE).
    pub const OVERLOADED: &str = "OVERLOADED";
    /// The request is larger than `[limits] max_request_bytes`.
    pub const REQUEST_TOO_LARGE: &str = "REQUEST_TOO_LARGE";
    /// The request body is not the method's message (bad protobuf, a
    /// truncated frame): INVALID_ARGUMENT.
    pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";
    /// The call ran past its `grpc-timeout` or `[limits] max_call_ms`.
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
    /// A witness refuses a checkpoint older than one it countersigned for
    /// that log (FAILED_PRECONDITION).
    pub const LOG_ROLLED_BACK: &str = "LOG_ROLLED_BACK";
    pub const TOO_MANY_LOGS: &str = "TOO_MANY_LOGS";
    /// A witness refuses a checkpoint that disagrees with the chain it
    /// countersigned for that log (FAILED_PRECONDITION).
    pub const LOG_FORKED: &str = "LOG_FORKED";
    /// The request's `consistency` is not at the seq the witness last
    /// countersigned (FAILED_PRECONDITION, metadata `witnessed_seq`).
    pub const WITNESS_STATE_MISMATCH: &str = "WITNESS_STATE_MISMATCH";
    /// A checkpoint's signature does not verify with the given log key
    /// (INVALID_ARGUMENT).
    pub const BAD_CHECKPOINT_SIGNATURE: &str = "BAD_CHECKPOINT_SIGNATURE";
    /// A witness cannot keep its state right now (UNAVAILABLE).
    pub const WITNESS_UNAVAILABLE: &str = "WITNESS_UNAVAILABLE";
}

/// One field violation: the request field path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Everything that can end a request early.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    #[error("{}", describe(.violations))]
    InvalidArgument {
        reason: &'static str,
        violations: Vec<Violation>,
    },
    #[error("{message}")]
    PermissionDenied {
        reason: &'static str,
        message: String,
        metadata: Vec<(String, String)>,
    },
    /// The request cannot be served in the state the gateway holds (a
    /// witness's countersigned position), whatever the caller's rights.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
        metadata: Vec<(String, String)>,
    },
    #[error("{resource_type} {name} is not in the registry")]
    NotFound {
        resource_type: &'static str,
        name: String,
    },
    /// A limit refuses the call for now; `retry_after` says when it frees.
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
        metadata: Vec<(String, String)>,
        retry_after: std::time::Duration,
    },
    /// The request is larger than `[limits] max_request_bytes`: retrying
    /// the same request cannot help, so no RetryInfo.
    #[error("the request is larger than this gateway accepts ({max_bytes} bytes, limits.max_request_bytes); send a smaller request")]
    RequestTooLarge { max_bytes: usize },
    #[error("{0}")]
    Unavailable(String),
    /// The gateway is saturated: the call is shed before any work, to be
    /// retried after `retry_after`.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The call's deadline (its `grpc-timeout`, capped by
    /// `[limits] max_call_ms`) passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    AuditUnavailable(String),
    /// A witness cannot read or write its own state.
    #[error("{0}")]
    WitnessUnavailable(String),
    /// The gateway is shutting down: a long call (a watch) ends early.
    #[error("{0}")]
    ShuttingDown(String),
    #[error("{0}")]
    Internal(String),
    /// The registry's owner could not be reached, failed its handshake or
    /// missed the forwarding deadline.
    #[error("{message}")]
    UpstreamUnavailable {
        service: &'static str,
        owner: String,
        message: String,
    },
    /// The registry owner's own refusal of the request, passed on (code,
    /// message and `google.rpc` details); see `upstream` for which codes.
    #[error("{}", .0.message())]
    Upstream(Status),
}

fn describe(violations: &[Violation]) -> String {
    let parts: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    format!("invalid request: {}", parts.join("; "))
}

impl RequestError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        RequestError::InvalidArgument {
            reason: reason::INVALID_ARGUMENT,
            violations: vec![Violation::new(field, description)],
        }
    }

    pub fn code(&self) -> Code {
        match self {
            RequestError::Unauthenticated { .. } => Code::Unauthenticated,
            RequestError::InvalidArgument { .. } => Code::InvalidArgument,
            RequestError::PermissionDenied { .. } => Code::PermissionDenied,
            RequestError::NotFound { .. } => Code::NotFound,
            RequestError::FailedPrecondition { .. } => Code::FailedPrecondition,
            RequestError::ResourceExhausted { .. } | RequestError::RequestTooLarge { .. } => {
                Code::ResourceExhausted
            }
            RequestError::Unavailable(_)
            | RequestError::Overloaded { .. }
            | RequestError::AuditUnavailable(_)
            | RequestError::WitnessUnavailable(_)
            | RequestError::ShuttingDown(_) => Code::Unavailable,
            RequestError::Internal(_) => Code::Internal,
            RequestError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            RequestError::UpstreamUnavailable { .. } => Code::Unavailable,
            RequestError::Upstream(status) => status.code(),
        }
    }

    /// The `ErrorInfo.reason` the caller receives (for an owner's status
    /// passed on, the owner's own reason), as the access log records it.
    pub fn reason_text(&self) -> String {
        match self {
            RequestError::Upstream(status) => status
                .get_error_details()
                .error_info()
                .map(|info| reason_code(&info.reason).unwrap_or("none").to_owned())
                .unwrap_or_default(),
            other => other.reason().to_owned(),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            RequestError::Unauthenticated { reason, .. }
            | RequestError::InvalidArgument { reason, .. }
            | RequestError::PermissionDenied { reason, .. }
            | RequestError::FailedPrecondition { reason, .. }
            | RequestError::ResourceExhausted { reason, .. } => reason,
            RequestError::NotFound { .. } => reason::RECORD_NOT_FOUND,
            RequestError::Unavailable(_) => reason::STORE_UNAVAILABLE,
            RequestError::Overloaded { .. } => reason::OVERLOADED,
            RequestError::RequestTooLarge { .. } => reason::REQUEST_TOO_LARGE,
            RequestError::DeadlineExceeded(_) => reason::DEADLINE_EXCEEDED,
            RequestError::AuditUnavailable(_) => reason::AUDIT_UNAVAILABLE,
            RequestError::WitnessUnavailable(_) => reason::WITNESS_UNAVAILABLE,
            RequestError::ShuttingDown(_) => reason::SHUTTING_DOWN,
            RequestError::Internal(_) => reason::INTERNAL,
            RequestError::UpstreamUnavailable { .. } => reason::UPSTREAM_UNAVAILABLE,
            // Not used: an owner's status keeps its own details.
            RequestError::Upstream(_) => "",
        }
    }
}

/// Most UTF-8 bytes of one field violation's description in an answer, and
/// of its message, marks of a cut included: descriptions may quote what the
/// caller sent, and an answer's headers must stay well under any client's
/// header limit (16 KiB is common) however the text encodes. A message goes
/// out percent-encoded (`grpc-message`: up to 3 bytes per byte) and again
/// inside the base64 details; see the test for the worst case.
const MAX_DESCRIPTION_BYTES: usize = 256;
const MAX_MESSAGE_BYTES: usize = 1024;
/// Most field violations listed in one answer, and most bytes of all their
/// fields and descriptions together.
const MAX_VIOLATIONS: usize = 16;
const MAX_VIOLATIONS_BYTES: usize = 2048;

/// `text` cut to at most `max` bytes (never inside a character), marked as
/// cut; the mark counts toward `max`.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mark = format!("… ({} bytes in all)", text.len());
    let mut at = max.saturating_sub(mark.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}{mark}", &text[..at])
}

/// The violations as an answer lists them: each description clipped, at
/// most [`MAX_VIOLATIONS`], the rest counted.
fn listed(violations: &[Violation]) -> Vec<Violation> {
    let mut out: Vec<Violation> = Vec::new();
    let mut bytes = 0;
    for v in violations.iter().take(MAX_VIOLATIONS) {
        let v = Violation::new(
            clip(&v.field, 64),
            clip(&v.description, MAX_DESCRIPTION_BYTES),
        );
        bytes += v.field.len() + v.description.len();
        if bytes > MAX_VIOLATIONS_BYTES {
            break;
        }
        out.push(v);
    }
    if violations.len() > out.len() {
        out.push(Violation::new(
            "...",
            format!("and {} more", violations.len() - out.len()),
        ));
    }
    out
}

/// An owner's refusal as the consumer receives it: the owner's code, its
/// message bounded as this gateway's own are, and of its details the kinds
/// this gateway gives itself (ErrorInfo, BadRequest, ResourceInfo,
/// RetryInfo), their text bounded too. The owner's encoded
/// `google.rpc.Status` is not passed as sent: it repeats the message
/// unbounded and may carry DebugInfo (stack traces) or anything else. None
/// of the owner's metadata either (its request id names a record in the
/// owner's log, not ours).
fn passed_on(status: &Status) -> Status {
    let theirs = status.get_error_details();
    let mut ours = ErrorDetails::new();
    if let Some(info) = theirs.error_info() {
        let metadata: std::collections::HashMap<String, String> = info
            .metadata
            .iter()
            .take(MAX_VIOLATIONS)
            .map(|(k, v)| (clip(k, 64), clip(v, MAX_DESCRIPTION_BYTES)))
            .collect();
        ours.set_error_info(
            reason_code(&info.reason).unwrap_or("none"),
            clip(&info.domain, 64),
            metadata,
        );
    }
    if let Some(bad) = theirs.bad_request() {
        let violations: Vec<Violation> = bad
            .field_violations
            .iter()
            .map(|v| Violation::new(v.field.clone(), v.description.clone()))
            .collect();
        ours.set_bad_request(
            listed(&violations)
                .iter()
                .map(|v| FieldViolation::new(&v.field, &v.description))
                .collect::<Vec<_>>(),
        );
    }
    if let Some(r) = theirs.resource_info() {
        ours.set_resource_info(
            clip(&r.resource_type, 128),
            clip(&r.resource_name, MAX_DESCRIPTION_BYTES),
            clip(&r.owner, 128),
            clip(&r.description, MAX_DESCRIPTION_BYTES),
        );
    }
    if let Some(r) = theirs.retry_info() {
        ours.set_retry_info(r.retry_delay);
    }
    Status::with_error_details(
        status.code(),
        clip(status.message(), MAX_MESSAGE_BYTES),
        ours,
    )
}

/// `reason` when it is a reason code (1 to 64 capitals, digits and `_`,
/// as this gateway's are): what of another gateway's `ErrorInfo.reason` is
/// recorded or passed on, so that no free text rides along in it.
pub fn reason_code(reason: &str) -> Option<&str> {
    let ok = !reason.is_empty()
        && reason.len() <= 64
        && reason
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some(reason)
}

impl From<RequestError> for Status {
    fn from(err: RequestError) -> Status {
        let err = match err {
            RequestError::InvalidArgument { reason, violations } => RequestError::InvalidArgument {
                reason,
                violations: listed(&violations),
            },
            other => other,
        };
        if let RequestError::Upstream(status) = &err {
            return passed_on(status);
        }
        let message = clip(&err.to_string(), MAX_MESSAGE_BYTES);
        let mut metadata = std::collections::HashMap::new();
        let mut details = ErrorDetails::new();
        match &err {
            RequestError::InvalidArgument { violations, .. } => {
                details.set_bad_request(
                    violations
                        .iter()
                        .map(|v| FieldViolation::new(&v.field, &v.description))
                        .collect::<Vec<_>>(),
                );
            }
            RequestError::PermissionDenied { metadata: m, .. }
            | RequestError::FailedPrecondition { metadata: m, .. } => {
                metadata.extend(m.iter().cloned());
            }
            RequestError::UpstreamUnavailable { service, owner, .. } => {
                metadata.insert("service".to_owned(), (*service).to_owned());
                metadata.insert("owner".to_owned(), owner.clone());
            }
            RequestError::ResourceExhausted {
                metadata: m,
                retry_after,
                ..
            } => {
                metadata.extend(m.iter().cloned());
                details.set_retry_info(Some(*retry_after));
            }
            RequestError::Overloaded { retry_after, .. } => {
                details.set_retry_info(Some(*retry_after));
            }
            RequestError::RequestTooLarge { max_bytes } => {
                metadata.insert("max_request_bytes".to_owned(), max_bytes.to_string());
            }
            RequestError::NotFound {
                resource_type,
                name,
            } => {
                details.set_resource_info(*resource_type, name.as_str(), "", message.as_str());
            }
            _ => {}
        }
        details.set_error_info(err.reason(), ERROR_DOMAIN, metadata);
        Status::with_error_details(err.code(), message, details)
    }
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_never_carry_unbounded_caller_text() {
        let violations: Vec<Violation> = (0..100)
            .map(|i| Violation::new(format!("read_mask.paths[{i}]"), "x".repeat(50_000)))
            .collect();
        let status = Status::from(RequestError::InvalidArgument {
            reason: reason::INVALID_FIELD_MASK,
            violations,
        });
        assert!(
            status.message().len() < 8 * 1024,
            "{}",
            status.message().len()
        );
        let details = status.get_error_details();
        let listed = &details.bad_request().unwrap().field_violations;
        // 2 KiB of violations hold 7 of these (each about 275 bytes).
        let shown = listed.len() - 1;
        assert_eq!(shown, 7);
        assert!(listed[0].description.len() <= MAX_DESCRIPTION_BYTES);
        assert!(listed[0].description.ends_with("(50000 bytes in all)"));
        assert_eq!(
            listed[shown].description,
            format!("and {} more", 100 - shown)
        );
        // Short text is kept whole; multi-byte characters are never split.
        assert_eq!(clip("abc", 3), "abc");
        let cut = clip(&"đ".repeat(100), 40);
        assert!(cut.starts_with("đđđ") && cut.len() <= 40, "{cut}");
    }

    /// The worst case for an answer's headers: every quoted byte outside
    /// ASCII (three UTF-8 bytes a character, each percent-encoded in
    /// `grpc-message`), as many violations as fit. The whole header block
    /// stays under half of the 16 KiB many clients allow.
    #[test]
    fn an_answer_quoting_caller_text_fits_a_client_header_limit() {
        let quoted = "Ặ".repeat(300);
        let violations: Vec<Violation> = (0..20)
            .map(|i| {
                Violation::new(
                    format!("read_mask.paths[{i}]"),
                    format!("{quoted}{i} is not a field of Citizen"),
                )
            })
            .collect();
        let status = Status::from(RequestError::InvalidArgument {
            reason: reason::INVALID_FIELD_MASK,
            violations,
        });
        let response = status.into_http::<()>();
        let size: usize = response
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        assert!(size < 8 * 1024, "{size} bytes of headers");
    }
}
