//! `interop.audit.v1.WitnessService`: this gateway as a witness for other
//! gateways' access logs. The caller is identified like every call (its
//! certificate must name a configured agency; no grant is needed, and a
//! relay header is not looked at: a log belongs to the gateway that keeps
//! it). The rule and the durable state are [`crate::audit::witness`]'s;
//! this adapter checks the request's shape and maps refusals to statuses.
//! It discloses no registry data, so it writes no access record.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    audit::{
        witness::{Refusal, WitnessStore},
        Checkpoint,
    },
    clock::Clock,
    error::{reason, RequestError},
    proto::audit::v1::{
        witness_service_server::WitnessService, ChainPosition, CountersignRequest,
        CountersignResponse,
    },
    snapshot::Live,
};

/// The witness service: the config in force (for identity), the store.
#[derive(Clone)]
pub struct Witness {
    pub live: Arc<Live>,
    pub store: Arc<WitnessStore>,
    pub clock: Arc<dyn Clock>,
}

const METHOD: &str = "interop.audit.v1.WitnessService/Countersign";

fn bytes<const N: usize>(field: &str, value: &[u8]) -> Result<[u8; N], RequestError> {
    <[u8; N]>::try_from(value).map_err(|_| {
        RequestError::invalid(field, format!("must be {N} bytes, not {}", value.len()))
    })
}

/// The request's checkpoint, key, instance and consistency, checked for shape.
type Parsed = ([u8; 32], String, Checkpoint, Option<(u64, [u8; 32])>);

fn parse(req: &CountersignRequest) -> Result<Parsed, RequestError> {
    let key = bytes::<32>("log_public_key", &req.log_public_key)?;
    if !req.log_instance.is_empty() {
        crate::config::check_instance(&req.log_instance)
            .map_err(|e| RequestError::invalid("log_instance", e))?;
    }
    let cp = req
        .checkpoint
        .as_ref()
        .ok_or_else(|| RequestError::invalid("checkpoint", "required"))?;
    let checkpoint = Checkpoint {
        seq: cp.seq,
        hash: bytes("checkpoint.hash", &cp.hash)?,
        time_unix_ms: cp.time_unix_ms,
        signature: bytes("checkpoint.signature", &cp.signature)?,
    };
    let consistency = req
        .consistency
        .as_ref()
        .map(|ChainPosition { seq, hash }| {
            Ok::<_, RequestError>((*seq, bytes("consistency.hash", hash)?))
        })
        .transpose()?;
    Ok((key, req.log_instance.clone(), checkpoint, consistency))
}

fn refused(refusal: Refusal) -> RequestError {
    let precondition =
        |reason, message: String, witnessed_seq: u64| RequestError::FailedPrecondition {
            reason,
            message,
            metadata: vec![("witnessed_seq".to_owned(), witnessed_seq.to_string())],
        };
    match refusal {
        Refusal::BadSignature => RequestError::InvalidArgument {
            reason: reason::BAD_CHECKPOINT_SIGNATURE,
            violations: vec![crate::error::Violation::new(
                "checkpoint.signature",
                "does not verify with log_public_key over the checkpoint's seq, hash and time",
            )],
        },
        Refusal::RolledBack { witnessed_seq, seq } => precondition(
            reason::LOG_ROLLED_BACK,
            format!(
                "this witness countersigned record {witnessed_seq} of this log; a checkpoint at \
                 record {seq} is older: the log was rolled back"
            ),
            witnessed_seq,
        ),
        Refusal::Forked { witnessed_seq } => precondition(
            reason::LOG_FORKED,
            format!(
                "this log's chain at record {witnessed_seq} is not the one this witness \
                 countersigned: the log was forked or rewritten"
            ),
            witnessed_seq,
        ),
        Refusal::TooManyLogs { max } => RequestError::FailedPrecondition {
            reason: reason::TOO_MANY_LOGS,
            message: format!(
                "this witness already keeps {max} logs for your agency (one per log key and \
                 instance); a new log key cannot be witnessed here until its operator removes \
                 the files of logs that are gone"
            ),
            metadata: vec![("max_logs_per_agency".to_owned(), max.to_string())],
        },
        Refusal::StateMismatch { witnessed_seq } => precondition(
            reason::WITNESS_STATE_MISMATCH,
            format!(
                "this witness last countersigned record {witnessed_seq} of this log: send \
                 consistency with the chain hash at that record"
            ),
            witnessed_seq,
        ),
    }
}

impl Witness {
    async fn answer(
        &self,
        request: Request<CountersignRequest>,
    ) -> Result<CountersignResponse, RequestError> {
        let snapshot = self.live.snapshot();
        let agency = snapshot
            .agency_of_peer(request.peer_certs().as_deref().map(Vec::as_slice))?
            .to_string();
        drop(snapshot);
        let (key, instance, checkpoint, consistency) = parse(request.get_ref())?;
        let store = Arc::clone(&self.store);
        let now = self.clock.now_unix_ms();
        let seq = checkpoint.seq;
        let outcome = tokio::task::spawn_blocking(move || {
            store.countersign(&agency, key, &instance, &checkpoint, consistency, now)
        })
        .await
        .map_err(|e| RequestError::Internal(format!("countersigning failed: {e}")))?;
        match outcome {
            Ok(Ok(c)) => {
                tracing::info!(seq, "countersigned a checkpoint");
                Ok(CountersignResponse {
                    countersignature: c.countersignature.to_vec(),
                    witness_public_key: c.witness_key.to_vec(),
                    witness_kid: c.witness_kid(),
                    witnessed_unix_ms: c.witnessed_unix_ms,
                })
            }
            Ok(Err(refusal)) => Err(refused(refusal)),
            Err(e) => {
                tracing::error!(error = %e, "the witness state cannot be kept");
                Err(RequestError::WitnessUnavailable(e.to_string()))
            }
        }
    }
}

#[tonic::async_trait]
impl WitnessService for Witness {
    async fn countersign(
        &self,
        request: Request<CountersignRequest>,
    ) -> Result<Response<CountersignResponse>, Status> {
        let answer = self.answer(request).await;
        let code = answer
            .as_ref()
            .map_or_else(|e| e.code(), |_| tonic::Code::Ok);
        tracing::info!(
            target: "interop_gateway::access",
            method = METHOD,
            code = crate::error::code_name(code),
            reason = answer.as_ref().err().map(|e| e.reason_text()).unwrap_or_default(),
            "witness call"
        );
        answer.map(Response::new).map_err(Status::from)
    }
}
