//! Sending the access log's checkpoints to witnesses (`[audit] witnesses`):
//! one task per witness, each with one HTTP/2 channel over mutual TLS (built
//! like the forwarding channels, [`crate::upstream::mtls_endpoint`]).
//!
//! The writer publishes each durable checkpoint on a watch channel
//! ([`AuditLog::checkpoints`]); a task only ever sends the latest, so a slow
//! or absent witness never holds up the writer or a call, and checkpoints it
//! missed meanwhile are simply superseded. Each send carries `consistency`:
//! this log's chain hash at the seq the witness last countersigned, read from
//! the store ([`crate::audit::AuditReader::chain_hash_at`]). The task learns
//! that seq from the witness itself: a first send without it (or with a
//! stale one) is answered `WITNESS_STATE_MISMATCH` with `witnessed_seq`, and
//! re-sent once with the hash there. A witnessed seq the log does not have
//! is a rolled-back log, unless retention deleted it (no archive, attested
//! by `audit.retired`): either is logged as an error and counted apart.
//!
//! Every countersignature received is verified and appended (fsynced) to
//! `<audit dir>/witness-receipts/<witness kid>.jsonl` in the witness's own
//! line format. Failures are logged, counted
//! (`interop_gateway_witness_countersign_total{witness,result}`) and retried
//! with a bounded backoff; calls never wait for any of it.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::{
    audit::{
        witness::{append_line, Countersigned, RECEIPTS_DIR},
        AuditReader, Checkpoint,
    },
    config::{Config, WitnessSettings},
    error::reason,
    metrics::{witness_result, Metrics},
    proto::audit::v1::{
        witness_service_client::WitnessServiceClient, ChainPosition, CountersignRequest,
    },
};

/// First pause after a failed send; doubled after each failure...
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// ...up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait for one countersignature (the witness fsyncs before it answers).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait to connect to a witness.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A witness whose files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("audit.witnesses[{index}].{key} ({path}): {message}")]
pub struct WitnessConfigError {
    pub index: usize,
    pub key: &'static str,
    pub path: String,
    pub message: String,
}

/// What every witness task shares about the log.
#[derive(Clone)]
pub struct LogSide {
    /// The log's public key.
    pub key: [u8; 32],
    /// `[audit] instance` for a log in PostgreSQL, `""` for files.
    pub instance: String,
    pub reader: Arc<dyn AuditReader>,
    /// Where countersignatures received are kept.
    pub receipts: PathBuf,
    pub metrics: Option<Arc<Metrics>>,
    /// The least time between two countersignatures asked of one witness
    /// (`[audit] checkpoint_every_seconds`).
    pub every: Duration,
}

impl LogSide {
    /// The receipts folder of a config: under the audit folder.
    pub fn receipts_dir(config: &Config) -> PathBuf {
        config.audit.dir.join(RECEIPTS_DIR)
    }
}

/// The endpoint of witness `index` (its files parsed, nothing connected).
fn endpoint(
    index: usize,
    w: &WitnessSettings,
) -> Result<tonic::transport::Endpoint, WitnessConfigError> {
    crate::upstream::mtls_endpoint(&w.address, &w.server_name, &w.ca, &w.cert, &w.key).map_err(
        |e| WitnessConfigError {
            index,
            key: e.key,
            path: e.path.display().to_string(),
            message: e.message,
        },
    )
}

/// Checks every witness's certificate, key and CA as a start would, without
/// connecting (`check-config`).
pub fn check(witnesses: &[WitnessSettings]) -> Result<(), WitnessConfigError> {
    for (index, w) in witnesses.iter().enumerate() {
        endpoint(index, w)?;
    }
    Ok(())
}

/// Starts one task per configured witness, following `checkpoints`. The
/// tasks end once the log has stopped and its last checkpoint was sent (or
/// failed); abort them to stop sooner.
pub fn spawn(
    witnesses: &[WitnessSettings],
    log: LogSide,
    checkpoints: watch::Receiver<Option<Checkpoint>>,
) -> Result<Vec<JoinHandle<()>>, WitnessConfigError> {
    let mut tasks = Vec::new();
    for (index, w) in witnesses.iter().enumerate() {
        let channel = endpoint(index, w)?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        let task = Task {
            address: w.address.clone(),
            client: WitnessServiceClient::new(channel),
            log: log.clone(),
            witnessed: None,
        };
        tasks.push(tokio::spawn(task.run(checkpoints.clone())));
    }
    Ok(tasks)
}

/// Waits `every`, or until the log stops.
async fn pause(checkpoints: &mut watch::Receiver<Option<Checkpoint>>, every: Duration) {
    let until = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            changed = checkpoints.changed() => if changed.is_err() { return },
        }
    }
}

/// One witness's sender.
struct Task {
    /// As configured: the `witness` label and what logs name.
    address: String,
    client: WitnessServiceClient<Channel>,
    log: LogSide,
    /// The seq this witness last countersigned for this log, as far as this
    /// task knows (learnt from its answers).
    witnessed: Option<u64>,
}

/// How one send ended, when it did not end in a countersignature.
#[derive(Debug)]
struct Failed;

impl Task {
    async fn run(mut self, mut checkpoints: watch::Receiver<Option<Checkpoint>>) {
        let mut done: Option<(u64, [u8; 32])> = None;
        let mut backoff = MIN_BACKOFF;
        loop {
            let latest = checkpoints.borrow_and_update().clone();
            if let Some(cp) = latest.filter(|cp| done != Some((cp.seq, cp.hash))) {
                match self.send(&cp).await {
                    Ok(()) => {
                        done = Some((cp.seq, cp.hash));
                        backoff = MIN_BACKOFF;
                        // Under load the writer checkpoints every 1,000
                        // records, many times a second; the witness keeps a
                        // line for each it countersigns. Only the latest
                        // matters, so ask at most once per interval (and
                        // at once for the final one, when the log stops).
                        pause(&mut checkpoints, self.log.every).await;
                        continue;
                    }
                    Err(Failed) => {
                        // The log has stopped: nothing more will come.
                        if checkpoints.has_changed().is_err() {
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            if checkpoints.changed().await.is_err() {
                return;
            }
        }
    }

    fn count(&self, result: &'static str) {
        if let Some(m) = &self.log.metrics {
            m.witness_countersign(&self.address, result);
        }
    }

    /// A blocking read of the store, off the runtime; a failure is logged
    /// (saying what was being read) and counted.
    async fn read<T: Send + 'static>(
        &self,
        what: &str,
        read: impl FnOnce(&dyn AuditReader) -> Result<T, crate::audit::AuditError> + Send + 'static,
    ) -> Result<T, Failed> {
        let reader = Arc::clone(&self.log.reader);
        match tokio::task::spawn_blocking(move || read(reader.as_ref())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                tracing::error!(witness = %self.address, error = %e, "cannot read {what}");
                self.count(witness_result::ERROR);
                Err(Failed)
            }
            Err(e) => {
                tracing::error!(witness = %self.address, error = %e, "reading {what} failed");
                self.count(witness_result::ERROR);
                Err(Failed)
            }
        }
    }

    /// The chain hash at `seq` from the store.
    async fn hash_at(&self, seq: u64) -> Result<Option<[u8; 32]>, Failed> {
        self.read("the chain hash a witness needs", move |r| {
            r.chain_hash_at(seq)
        })
        .await
    }

    /// Says why the record `seq` the witness countersigned last is not in
    /// the log: deleted under retention, or the log was rolled back.
    async fn missing(&self, seq: u64, cp: &Checkpoint) -> Failed {
        let Ok(retired) = self.read("audit.retired", |r| r.retired_through()).await else {
            return Failed;
        };
        match retired {
            Some(through) if seq < through => {
                tracing::error!(
                    witness = %self.address,
                    witnessed_seq = seq,
                    retired_through = through,
                    checkpoint_seq = cp.seq,
                    "the witness countersigned record {seq} of this access log last, and retention has since deleted it (no archive_dir; audit.retired attests records up to {through}): this log cannot show the witness that its checkpoints go on from there, so the witness will refuse them until its operator moves this log's file out of the witness's <data_dir>/witness/"
                );
                self.count(witness_result::WITNESSED_RECORD_RETIRED);
            }
            _ => {
                tracing::error!(
                    witness = %self.address,
                    witnessed_seq = seq,
                    checkpoint_seq = cp.seq,
                    "the witness countersigned record {seq} of this access log, which the log no longer has: the log was rolled back (restored from an older copy); the witness will refuse its checkpoints"
                );
                self.count(witness_result::LOG_ROLLED_BACK);
            }
        }
        Failed
    }

    /// Sends `cp`, re-sending once with the right consistency hash when the
    /// witness says which seq it holds.
    async fn send(&mut self, cp: &Checkpoint) -> Result<(), Failed> {
        for _ in 0..2 {
            let consistency = match self.witnessed {
                None => None,
                Some(seq) => match self.hash_at(seq).await? {
                    Some(hash) => Some(ChainPosition {
                        seq,
                        hash: hash.to_vec(),
                    }),
                    None => return Err(self.missing(seq, cp).await),
                },
            };
            let request = CountersignRequest {
                log_public_key: self.log.key.to_vec(),
                log_instance: self.log.instance.clone(),
                checkpoint: Some(crate::proto::audit::v1::Checkpoint {
                    seq: cp.seq,
                    hash: cp.hash.to_vec(),
                    time_unix_ms: cp.time_unix_ms,
                    signature: cp.signature.to_vec(),
                }),
                consistency,
            };
            let status = match self.client.countersign(request).await {
                Ok(answer) => return self.keep(cp, answer.into_inner()).await,
                Err(status) => status,
            };
            let details = status.get_error_details();
            let info = details.error_info();
            let why = info.map(|i| i.reason.as_str()).unwrap_or_default();
            let witnessed_seq = info
                .and_then(|i| i.metadata.get("witnessed_seq"))
                .and_then(|s| s.parse::<u64>().ok());
            match (why, witnessed_seq) {
                (reason::WITNESS_STATE_MISMATCH, Some(seq)) => {
                    tracing::info!(witness = %self.address, witnessed_seq = seq, "the witness holds another seq of this log; re-sending with the chain hash there");
                    self.witnessed = Some(seq);
                    continue;
                }
                (reason::LOG_ROLLED_BACK, _) | (reason::LOG_FORKED, _) => {
                    tracing::error!(witness = %self.address, checkpoint_seq = cp.seq, witnessed_seq, reason = why, message = status.message(), "the witness refuses this access log's checkpoint: the log disagrees with what it countersigned before");
                    self.count(if why == reason::LOG_FORKED {
                        witness_result::LOG_FORKED
                    } else {
                        witness_result::LOG_ROLLED_BACK
                    });
                }
                _ if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                ) =>
                {
                    tracing::warn!(witness = %self.address, checkpoint_seq = cp.seq, code = ?status.code(), message = status.message(), "the witness could not be reached; retrying");
                    self.count(witness_result::UNAVAILABLE);
                }
                _ => {
                    tracing::error!(witness = %self.address, checkpoint_seq = cp.seq, code = ?status.code(), reason = why, message = status.message(), "the witness refused the checkpoint");
                    self.count(witness_result::REFUSED);
                }
            }
            return Err(Failed);
        }
        tracing::error!(witness = %self.address, checkpoint_seq = cp.seq, "the witness keeps naming another seq; retrying later");
        self.count(witness_result::REFUSED);
        Err(Failed)
    }

    /// Checks the countersignature of `cp` and keeps it as a receipt.
    async fn keep(
        &mut self,
        cp: &Checkpoint,
        answer: crate::proto::audit::v1::CountersignResponse,
    ) -> Result<(), Failed> {
        let signed = (|| {
            Some(Countersigned {
                witness_key: answer.witness_public_key.as_slice().try_into().ok()?,
                log_key: self.log.key,
                instance: self.log.instance.clone(),
                checkpoint: cp.clone(),
                witnessed_unix_ms: answer.witnessed_unix_ms,
                countersignature: answer.countersignature.as_slice().try_into().ok()?,
            })
        })()
        .filter(|c| c.verify() && c.witness_kid() == answer.witness_kid);
        let Some(signed) = signed else {
            tracing::error!(witness = %self.address, checkpoint_seq = cp.seq, "the witness answered with a countersignature that does not verify");
            self.count(witness_result::BAD_COUNTERSIGNATURE);
            return Err(Failed);
        };
        let path = self
            .log
            .receipts
            .join(format!("{}.jsonl", signed.witness_kid()));
        let line = signed.to_line();
        let at = path.clone();
        let written = tokio::task::spawn_blocking(move || append_line(&at, &line)).await;
        if let Err(e) = written
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            tracing::error!(witness = %self.address, path = %path.display(), error = %e, "cannot keep the witness's countersignature; retrying");
            self.count(witness_result::ERROR);
            return Err(Failed);
        }
        self.witnessed = Some(cp.seq);
        self.count(witness_result::OK);
        if let Some(m) = &self.log.metrics {
            m.witness_last_seq(&self.address, cp.seq);
        }
        tracing::debug!(witness = %self.address, seq = cp.seq, "checkpoint countersigned");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditError, SubjectRow};

    /// A log that no longer has the record the witness countersigned last,
    /// with (or without) a retention statement covering it.
    struct Gone {
        retired_through: Option<u64>,
    }

    impl AuditReader for Gone {
        fn subject_page(
            &self,
            _: &str,
            _: Option<&str>,
            _: usize,
        ) -> Result<Vec<SubjectRow>, AuditError> {
            Ok(Vec::new())
        }
        fn records_after(
            &self,
            _: u64,
            _: usize,
        ) -> Result<Vec<(u64, crate::audit::AuditRecord)>, AuditError> {
            Ok(Vec::new())
        }
        fn chain_hash_at(&self, _: u64) -> Result<Option<[u8; 32]>, AuditError> {
            Ok(None)
        }
        fn retired_through(&self) -> Result<Option<u64>, AuditError> {
            Ok(self.retired_through)
        }
    }

    /// The result counted when the witness last countersigned record 5.
    async fn counted(retired_through: Option<u64>) -> String {
        let metrics = Arc::new(Metrics::new());
        // Never dialled: the send fails before any call.
        let channel = tonic::transport::Endpoint::from_static("https://127.0.0.1:9").connect_lazy();
        let mut task = Task {
            address: "witness.example:443".into(),
            client: WitnessServiceClient::new(channel),
            log: LogSide {
                key: [7; 32],
                instance: String::new(),
                reader: Arc::new(Gone { retired_through }),
                receipts: PathBuf::from("unused"),
                metrics: Some(Arc::clone(&metrics)),
                every: Duration::from_secs(1),
            },
            witnessed: Some(5),
        };
        let cp = Checkpoint {
            seq: 40,
            hash: [1; 32],
            time_unix_ms: 1,
            signature: [2; 64],
        };
        assert!(task.send(&cp).await.is_err());
        metrics
            .render(true)
            .lines()
            .filter(|l| l.starts_with("interop_gateway_witness_countersign_total{"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn a_witnessed_record_deleted_under_retention_is_not_called_a_rollback() {
        let retired = counted(Some(10)).await;
        assert!(
            retired.contains(r#"result="witnessed_record_retired"} 1"#),
            "{retired}"
        );
        assert!(!retired.contains("log_rolled_back"), "{retired}");
        // Past the retired range, a missing record is a rollback.
        for statement in [None, Some(3)] {
            let rolled_back = counted(statement).await;
            assert!(
                rolled_back.contains(r#"result="log_rolled_back"} 1"#),
                "{rolled_back}"
            );
        }
    }
}
