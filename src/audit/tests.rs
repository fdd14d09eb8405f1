//! Scenarios across the audit modules: a live log written, tampered with,
//! crashed and failed, then checked with `verify_file` as an auditor would.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{self, Write},
    num::{NonZeroU64, NonZeroUsize},
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tempfile::TempDir;

use super::{
    chain, line,
    record::{sample, AuditRecord},
    segments::{self, Sink},
    *,
};

/// A key outside the log folder and the log folder itself.
struct Fixture {
    root: TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("audit")
    }

    fn signer(&self) -> Signer {
        Signer::load_or_create(&self.root.path().join("audit.pk8")).unwrap()
    }

    async fn open(&self, every_records: u64) -> AuditLog {
        AuditLog::open(&self.dir(), self.signer(), opts(every_records))
            .await
            .unwrap()
    }

    fn log_path(&self) -> PathBuf {
        self.dir()
            .join(SEGMENTS_DIR)
            .join(segments::segment_file_name(1))
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(self.log_path())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(self.log_path(), text).unwrap();
    }

    fn verify(&self) -> Result<VerifyReport, VerifyFailure> {
        verify_file(&self.dir(), None)
    }

    /// Edits the log's lines as an attacker would, and verifies.
    fn tamper(&self, edit: impl FnOnce(&mut Vec<String>)) -> Result<VerifyReport, VerifyFailure> {
        let mut lines = self.lines();
        edit(&mut lines);
        self.write_lines(&lines);
        self.verify()
    }

    /// A sealed log of `n` records, a checkpoint after every 10th: record k
    /// is on line k + (k - 1) / 10.
    async fn with_records(n: u64) -> Self {
        let fx = Self::new();
        let log = fx.open(10).await;
        for i in 1..=n {
            assert_eq!(log.append(record(i)).await.unwrap(), i);
        }
        log.shutdown().await.unwrap();
        fx
    }
}

/// Timer checkpoints far away, so only counts and shutdown seal.
fn opts(every_records: u64) -> AuditOptions {
    AuditOptions {
        checkpoint_every_records: NonZeroU64::new(every_records).unwrap(),
        checkpoint_every: Duration::from_secs(3600),
        ..AuditOptions::default()
    }
}

/// Record `n`, about the citizen `0010990000nn`.
fn record(n: u64) -> AuditRecord {
    sample(n, &format!("0010990{n:05}"))
}

fn line_of(seq: u64) -> usize {
    (seq + (seq - 1) / 10) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_unique_consecutive_seqs_and_the_log_verifies() {
    let fx = Fixture::new();
    let log = fx.open(100).await;
    let tasks: Vec<_> = (0..50u64)
        .map(|task| {
            let appends: Vec<_> = (0..40u64)
                .map(|i| log.append(record(task * 40 + i)))
                .collect();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for append in appends {
                    seqs.push(append.await.unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for task in tasks {
        for seq in task.await.unwrap() {
            assert!(seqs.insert(seq), "seq {seq} given twice");
        }
    }
    assert_eq!(seqs, (1..=2000).collect());
    log.shutdown().await.unwrap();

    let report = fx.verify().unwrap();
    assert_eq!(report.records, 2000);
    assert_eq!(report.checkpoints, 20);
    assert_eq!(report.last_checkpoint.map(|(seq, _)| seq), Some(2000));
    assert_eq!(report.unsealed_tail, 0);
}

#[tokio::test]
async fn appends_queued_during_an_fsync_are_committed_together_with_one_fsync() {
    let fx = Fixture::new();
    let ctl = Control::default();
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    *ctl.gate.lock().unwrap() = Some((entered_tx, release_rx));
    let log = open_faulty(&fx, &ctl, 1000).await;

    let first = tokio::spawn(log.append(record(1)));
    entered.await.unwrap(); // the writer is inside the first fsync
    let rest: Vec<_> = (2..=11)
        .map(|i| tokio::spawn(log.append(record(i))))
        .collect();
    while log.queued() < 10 {
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();

    assert_eq!(first.await.unwrap().unwrap(), 1);
    let mut seqs = BTreeSet::new();
    for task in rest {
        seqs.insert(task.await.unwrap().unwrap());
    }
    assert_eq!(seqs, (2..=11).collect());
    assert_eq!(ctl.syncs.load(Ordering::SeqCst), 2);
    log.shutdown().await.unwrap();
    assert_eq!(fx.verify().unwrap().records, 11);
}

#[tokio::test]
async fn a_changed_digit_in_a_subject_is_caught_at_that_record() {
    let fx = Fixture::with_records(30).await;
    let failure = fx
        .tamper(|lines| {
            let at = line_of(7) - 1;
            assert!(lines[at].contains("\"001099000007\""));
            lines[at] = lines[at].replace("001099000007", "001099000008");
        })
        .unwrap_err();
    assert_eq!((failure.seq, failure.line), (Some(7), 7));
    assert_eq!(failure.file, Some(fx.log_path()));
    assert!(
        failure.to_string().ends_with(
            "00000000000000000001.log: line 7 (record 7): hash does not match: the record was \
             changed, or a record before it was removed or reordered"
        ),
        "{failure}"
    );
}

#[tokio::test]
async fn a_deleted_record_line_is_caught_where_the_record_is_missing() {
    let fx = Fixture::with_records(30).await;
    let failure = fx
        .tamper(|lines| {
            lines.remove(line_of(15) - 1);
        })
        .unwrap_err();
    assert_eq!((failure.seq, failure.line), (Some(15), line_of(15)));
    assert!(failure.what.contains("record 15 is missing"), "{failure}");
}

#[tokio::test]
async fn swapped_record_lines_are_caught_at_the_first_of_them() {
    let fx = Fixture::with_records(30).await;
    let failure = fx
        .tamper(|lines| lines.swap(line_of(15) - 1, line_of(16) - 1))
        .unwrap_err();
    assert_eq!((failure.seq, failure.line), (Some(15), line_of(15)));
    assert!(failure.what.contains("reordered"), "{failure}");
}

#[tokio::test]
async fn a_record_rewritten_with_recomputed_hashes_is_caught_by_the_next_checkpoint() {
    let fx = Fixture::with_records(30).await;
    let mut lines = fx.lines();
    // Change record 12, then redo every hash after it as a forger could;
    // only the checkpoints (which need the key) stay as they were.
    let mut prev = [0; 32];
    for (i, text) in lines.iter_mut().enumerate() {
        if let Ok(line::Line::Record {
            seq,
            hash,
            mut record,
        }) = line::parse(text.as_bytes())
        {
            if seq < 12 {
                prev = hash;
                continue;
            }
            if seq == 12 {
                record.outcome = "PERMISSION_DENIED".into();
            }
            prev = chain::hash(&prev, seq, &record);
            let mut buf = Vec::new();
            line::write_record(&mut buf, seq, &prev, &record).unwrap();
            *text = String::from_utf8(buf).unwrap().trim_end().to_owned();
            assert_ne!(i, 0);
        }
    }
    fx.write_lines(&lines);

    let failure = fx.verify().unwrap_err();
    assert_eq!((failure.seq, failure.line), (None, line_of(20) + 1));
    assert!(
        failure
            .what
            .contains("checkpoint at record 20: its hash is not the chain head"),
        "{failure}"
    );
}

#[tokio::test]
async fn lines_cut_off_past_a_checkpoint_are_detected_through_audit_head() {
    let fx = Fixture::with_records(30).await;
    let mut lines = fx.lines();
    // Keep records 1..=20 and the checkpoint after 20: on its own, a
    // perfectly consistent log.
    lines.truncate(line_of(20) + 1);
    fx.write_lines(&lines);

    let failure = fx.verify().unwrap_err();
    assert_eq!((failure.seq, failure.line), (Some(21), lines.len() + 1));
    assert!(failure.what.starts_with("truncation detected"), "{failure}");
    assert!(failure.what.contains("record 30"), "{failure}");

    // The gateway refuses to continue such a log.
    let err = AuditLog::open(&fx.dir(), fx.signer(), opts(10))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("truncation detected"), "{err}");
}

#[tokio::test]
async fn a_removed_final_checkpoint_line_is_detected() {
    let fx = Fixture::with_records(30).await;
    let failure = fx
        .tamper(|lines| {
            lines.pop();
        })
        .unwrap_err();
    assert!(
        failure
            .what
            .contains("checkpoint at record 30 in audit.head is not in the log"),
        "{failure}"
    );
}

#[tokio::test]
async fn a_deleted_audit_head_is_reported() {
    let fx = Fixture::with_records(30).await;
    fs::remove_file(fx.dir().join(HEAD_FILE)).unwrap();
    let failure = fx.verify().unwrap_err();
    assert!(failure.what.contains("audit.head is missing"), "{failure}");
}

#[tokio::test]
async fn a_wrong_public_key_fails_at_the_first_checkpoint() {
    let fx = Fixture::with_records(30).await;
    let other = Signer::load_or_create(&fx.root.path().join("other.pk8")).unwrap();

    let failure = verify_file(&fx.dir(), Some(&other.public_key())).unwrap_err();
    assert_eq!((failure.seq, failure.line), (None, line_of(10) + 1));
    assert!(
        failure.what.contains("signature does not verify"),
        "{failure}"
    );
    // With the right key given explicitly it passes.
    assert!(verify_file(&fx.dir(), Some(&fx.signer().public_key())).is_ok());
    // And the gateway will not continue the log with another key.
    let err = AuditLog::open(&fx.dir(), other, opts(10))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, AuditError::KeyMismatch { .. }), "{err}");
}

#[tokio::test]
async fn open_refuses_a_broken_chain_after_the_last_checkpoint_naming_the_record() {
    let fx = Fixture::new();
    let log = fx.open(10).await;
    for i in 1..=25 {
        log.append(record(i)).await.unwrap();
    }
    // A crash leaves records 21 to 25 after the last checkpoint: opening
    // re-verifies those (and only those: what a checkpoint seals is
    // `audit verify`'s to check).
    log.crash().await;
    let mut lines = fx.lines();
    let at = line_of(23) - 1;
    lines[at] = lines[at].replace("\"latency_us\":873", "\"latency_us\":1");
    fx.write_lines(&lines);

    let err = AuditLog::open(&fx.dir(), fx.signer(), opts(10))
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(matches!(err, AuditError::Broken { .. }), "{text}");
    assert!(
        text.contains("record 23: after the last checkpoint: hash does not match"),
        "{text}"
    );
    let failure = fx.verify().unwrap_err();
    assert_eq!((failure.seq, failure.line), (Some(23), 25));
}

#[tokio::test]
async fn a_torn_final_line_is_reported_and_cut_off_on_open() {
    let fx = Fixture::with_records(12).await;
    let intact = fs::read(fx.log_path()).unwrap();
    let mut torn = Vec::new();
    line::write_record(&mut torn, 13, &[7; 32], &record(13)).unwrap();
    torn.truncate(40);
    fs::OpenOptions::new()
        .append(true)
        .open(fx.log_path())
        .unwrap()
        .write_all(&torn)
        .unwrap();

    let report = fx.verify().unwrap();
    assert_eq!((report.records, report.torn_tail_bytes), (12, 40));

    let log = fx.open(10).await;
    assert_eq!(fs::read(fx.log_path()).unwrap(), intact);
    assert_eq!(log.append(record(13)).await.unwrap(), 13);
    log.shutdown().await.unwrap();
    let report = fx.verify().unwrap();
    assert_eq!((report.records, report.torn_tail_bytes), (13, 0));
    assert_eq!(report.unsealed_tail, 0);
}

#[test]
fn records_left_unsealed_by_a_crash_are_sealed_on_open() {
    let fx = Fixture::new();
    // A crash: the writer stops with no shutdown and no final checkpoint.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = fx.open(1000).await;
        for i in 1..=5 {
            log.append(record(i)).await.unwrap();
        }
        log.crash().await;
    });
    drop(rt);
    let report = fx.verify().unwrap();
    assert_eq!((report.records, report.checkpoints), (5, 0));
    assert_eq!(report.unsealed_tail, 5);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = fx.open(1000).await;
        assert_eq!(*log.sealed().borrow(), 5);
        log.shutdown().await.unwrap();
    });
    let report = fx.verify().unwrap();
    assert_eq!(report.last_checkpoint.map(|(seq, _)| seq), Some(5));
    assert_eq!(report.unsealed_tail, 0);
}

#[tokio::test]
async fn a_failed_write_refuses_the_batch_and_leaves_no_trace() {
    fail_closed_scenario(Fault::HalfWrite).await;
}

#[tokio::test]
async fn a_failed_fsync_refuses_the_batch_and_leaves_no_trace() {
    fail_closed_scenario(Fault::Fsync).await;
}

/// Three good records, then a batch that fails with `fault`, then recovery.
async fn fail_closed_scenario(fault: Fault) {
    let fx = Fixture::new();
    let ctl = Control::default();
    let log = open_faulty(&fx, &ctl, 1000).await;
    let mut health = log.health();
    for i in 1..=3 {
        assert_eq!(log.append(record(i)).await.unwrap(), i);
    }
    let good_len = fs::metadata(fx.log_path()).unwrap().len();

    *ctl.fault.lock().unwrap() = fault;
    let failed: Vec<_> = (101..=104)
        .map(|i| tokio::spawn(log.append(record(i))))
        .collect();
    for task in failed {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
    }
    assert!(!log.is_healthy());
    assert!(health.has_changed().unwrap());
    assert!(!*health.borrow_and_update());
    // The disk still fails, so the failed bytes could not be cut off yet.
    assert!(fs::metadata(fx.log_path()).unwrap().len() > good_len);

    *ctl.fault.lock().unwrap() = Fault::None;
    assert_eq!(log.append(record(4)).await.unwrap(), 4);
    assert_eq!(log.append(record(5)).await.unwrap(), 5);
    assert!(log.is_healthy());
    assert!(*health.borrow_and_update());
    log.shutdown().await.unwrap();

    let report = fx.verify().unwrap();
    assert_eq!((report.records, report.unsealed_tail), (5, 0));
    let text = fs::read_to_string(fx.log_path()).unwrap();
    for i in 101..=104 {
        assert!(
            !text.contains(&format!("req-{i:06}")),
            "record {i} left a trace"
        );
    }
}

#[tokio::test]
async fn health_comes_back_without_traffic_once_the_disk_recovers() {
    let fx = Fixture::new();
    let ctl = Control::default();
    let ctl2 = ctl.clone();
    // Records 1-3 are sealed by count, so nothing is left for the timer to seal.
    let options = AuditOptions {
        checkpoint_every: Duration::from_millis(20),
        max_batch: NonZeroUsize::new(64).unwrap(),
        ..opts(3)
    };
    let log = AuditLog::open_with_sink(&fx.dir(), fx.signer(), options, move |file| {
        Box::new(FaultySink {
            file,
            ctl: ctl2.clone(),
        })
    })
    .await
    .unwrap();
    for i in 1..=3 {
        log.append(record(i)).await.unwrap();
    }
    // The failed batch is cut off at once, so nothing is left dirty either.
    *ctl.fault.lock().unwrap() = Fault::WriteOnly;
    assert!(log.append(record(100)).await.is_err());
    assert!(!log.is_healthy());
    *ctl.fault.lock().unwrap() = Fault::None;
    let mut health = log.health();
    tokio::time::timeout(Duration::from_secs(30), health.wait_for(|h| *h))
        .await
        .unwrap()
        .unwrap();
    log.shutdown().await.unwrap();
    let report = fx.verify().unwrap();
    assert_eq!((report.records, report.unsealed_tail), (3, 0));
}

#[tokio::test]
async fn records_for_subject_pages_newest_first_and_survive_reopen() {
    const A: &str = "001099000001";
    const B: &str = "001099000002";
    let fx = Fixture::new();
    let log = fx.open(10).await;
    let mut expected = Vec::new();
    for i in 1..=25 {
        let subject = if i % 3 == 0 { A } else { B };
        let mut r = sample(i, subject);
        if i == 10 {
            r.subjects.push(A.into());
        }
        if r.subjects.iter().any(|s| s == A) {
            expected.push((i, r.clone()));
        }
        log.append(r).await.unwrap();
    }
    expected.reverse();
    // 9 records name A (24, 21, 18, 15, 12, 10, 9, 6, 3): pages of 4, 4, 1.
    let pages = |log: &AuditLog| {
        let mut all = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page = log.records_for_subject(A, before.as_deref(), 4).unwrap();
            assert!(page.len() <= 4);
            let Some(last) = page.last() else { break };
            before = Some(last.cursor.clone());
            all.extend(
                page.into_iter()
                    .map(|row| (row.cursor.parse::<u64>().unwrap(), row.record)),
            );
        }
        all
    };
    assert_eq!(pages(&log), expected);
    assert_eq!(
        log.records_for_subject(A, Some("12"), 2).unwrap()[0].cursor,
        "10"
    );
    assert!(log
        .records_for_subject("nobody", None, 4)
        .unwrap()
        .is_empty());
    log.shutdown().await.unwrap();

    let log = fx.open(10).await;
    assert_eq!(pages(&log), expected);
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn export_filters_by_time_and_subject_and_keeps_lines_verbatim() {
    let fx = Fixture::with_records(30).await;
    let lines = fx.lines();
    let since = record(25).time_unix_ms;

    let mut out = Vec::new();
    assert_eq!(
        export(&fx.dir(), None, Some(since), None, &mut out).unwrap(),
        6
    );
    let expected: Vec<_> = (25..=30).map(|s| lines[line_of(s) - 1].clone()).collect();
    assert_eq!(
        String::from_utf8(out).unwrap().lines().collect::<Vec<_>>(),
        expected
    );

    let mut out = Vec::new();
    assert_eq!(
        export(&fx.dir(), None, None, Some("001099000007"), &mut out).unwrap(),
        1
    );
    assert_eq!(
        String::from_utf8(out).unwrap().trim_end(),
        lines[line_of(7) - 1]
    );
}

#[tokio::test]
async fn the_timer_seals_records_written_since_the_last_checkpoint() {
    let fx = Fixture::new();
    let options = AuditOptions {
        checkpoint_every: Duration::from_millis(20),
        ..opts(1000)
    };
    let log = AuditLog::open(&fx.dir(), fx.signer(), options)
        .await
        .unwrap();
    for i in 1..=3 {
        log.append(record(i)).await.unwrap();
    }
    let mut sealed = log.sealed();
    tokio::time::timeout(Duration::from_secs(30), sealed.wait_for(|&seq| seq == 3))
        .await
        .unwrap()
        .unwrap();
    // Verified while the log is still open: nothing is left unsealed.
    let report = fx.verify().unwrap();
    assert_eq!((report.records, report.unsealed_tail), (3, 0));
    log.shutdown().await.unwrap();
    // Nothing new to seal at shutdown. (On a busy machine the timer may also
    // have sealed before the third record arrived.)
    let report = fx.verify().unwrap();
    assert_eq!(report.last_checkpoint.map(|(seq, _)| seq), Some(3));
    assert!(report.checkpoints <= 3, "{report:?}");
}

#[tokio::test]
async fn shutdown_seals_with_a_final_checkpoint() {
    let fx = Fixture::new();
    let log = fx.open(1000).await;
    for i in 1..=5 {
        log.append(record(i)).await.unwrap();
    }
    log.shutdown().await.unwrap();
    let report = fx.verify().unwrap();
    assert_eq!(report.last_checkpoint.map(|(seq, _)| seq), Some(5));
    assert_eq!(report.unsealed_tail, 0);
}

#[tokio::test]
async fn a_new_log_verifies_empty_and_exports_its_public_key() {
    let fx = Fixture::new();
    fx.open(10).await.shutdown().await.unwrap();
    let report = fx.verify().unwrap();
    assert_eq!((report.records, report.checkpoints), (0, 0));
    let pem = fs::read_to_string(fx.dir().join(PUB_FILE)).unwrap();
    assert_eq!(
        parse_public_key_pem(&pem).unwrap(),
        fx.signer().public_key()
    );
}

#[tokio::test]
async fn a_zero_checkpoint_interval_is_refused() {
    let fx = Fixture::new();
    let options = AuditOptions {
        checkpoint_every: Duration::ZERO,
        ..AuditOptions::default()
    };
    let err = AuditLog::open(&fx.dir(), fx.signer(), options)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("checkpoint_every"), "{err}");
}

// A sink whose writes and fsyncs fail on demand, and whose first fsync can be
// held until the test lets it go.

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Fault {
    #[default]
    None,
    /// Half the batch reaches the file, then the write fails (disk full).
    HalfWrite,
    /// The whole batch is written, then fsync fails (I/O error).
    Fsync,
    /// Writes fail, but cutting the file back still works (a quota or a
    /// read-only remount caught between the two).
    WriteOnly,
}

type Gate = (
    tokio::sync::oneshot::Sender<()>,
    std::sync::mpsc::Receiver<()>,
);

#[derive(Clone, Default)]
struct Control {
    fault: Arc<Mutex<Fault>>,
    syncs: Arc<AtomicUsize>,
    gate: Arc<Mutex<Option<Gate>>>,
}

struct FaultySink {
    file: File,
    ctl: Control,
}

impl FaultySink {
    fn fault(&self) -> Fault {
        *self.ctl.fault.lock().unwrap()
    }
}

impl Sink for FaultySink {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.fault() == Fault::HalfWrite {
            self.file.write_all(&bytes[..bytes.len() / 2])?;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: disk full",
            ));
        }
        if self.fault() == Fault::WriteOnly {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: write refused",
            ));
        }
        self.file.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.ctl.syncs.fetch_add(1, Ordering::SeqCst);
        let gate = self.ctl.gate.lock().unwrap().take();
        if let Some((entered, release)) = gate {
            let _ = entered.send(());
            let _ = release.recv();
        }
        if self.fault() == Fault::Fsync {
            return Err(io::Error::other("injected: fsync I/O error"));
        }
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if !matches!(self.fault(), Fault::None | Fault::WriteOnly) {
            return Err(io::Error::other("injected: the disk still fails"));
        }
        self.file.set_len(len)?;
        io::Seek::seek(&mut self.file, io::SeekFrom::Start(len))?;
        self.file.sync_data()
    }
}

async fn open_faulty(fx: &Fixture, ctl: &Control, every_records: u64) -> AuditLog {
    let ctl = ctl.clone();
    let options = AuditOptions {
        max_batch: NonZeroUsize::new(64).unwrap(),
        ..opts(every_records)
    };
    AuditLog::open_with_sink(&fx.dir(), fx.signer(), options, move |file| {
        Box::new(FaultySink {
            file,
            ctl: ctl.clone(),
        })
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn an_altered_audit_head_is_reported() {
    let fx = Fixture::with_records(30).await;
    let path = fx.dir().join(HEAD_FILE);
    let head = fs::read_to_string(&path).unwrap();
    fs::write(&path, head.replace("\"seq\":30", "\"seq\":40")).unwrap();
    let failure = fx.verify().unwrap_err();
    assert!(
        failure.what.contains("audit.head does not verify"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_verifies_while_it_is_being_written() {
    let fx = Fixture::new();
    // A checkpoint, and so a new audit.head, after every record.
    let log = fx.open(1).await;
    let writers: Vec<_> = (0..20u64)
        .map(|task| {
            let appends: Vec<_> = (0..25).map(|i| log.append(record(task * 25 + i))).collect();
            tokio::spawn(async move {
                for append in appends {
                    append.await.unwrap();
                }
            })
        })
        .collect();
    let dir = fx.dir();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let verifier = {
        let done = Arc::clone(&done);
        tokio::task::spawn_blocking(move || {
            let mut runs = 0;
            while !done.load(Ordering::SeqCst) || runs == 0 {
                // Checkpoints and audit.head change under it all along.
                if let Err(failure) = verify_file(&dir, None) {
                    panic!("verification of a live log failed: {failure}");
                }
                runs += 1;
            }
        })
    };
    for task in writers {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    verifier.await.unwrap();
    log.shutdown().await.unwrap();
    assert_eq!(fx.verify().unwrap().records, 500);
}

#[tokio::test]
async fn chain_hashes_and_the_latest_checkpoint_are_read_back_for_witnesses() {
    let fx = Fixture::new();
    let log = fx.open(2).await;
    let checkpoints = log.checkpoints();
    assert!(checkpoints.borrow().is_none());
    for i in 0..5 {
        log.append(sample(i, "001099012345")).await.unwrap();
    }
    let latest = checkpoints.borrow().clone().unwrap();
    assert_eq!(latest.seq, 4);
    assert!(latest.verify(&fx.signer().public_key()));
    assert_eq!(log.chain_hash_at(0).unwrap(), Some(chain::GENESIS));
    assert_eq!(log.chain_hash_at(4).unwrap(), Some(latest.hash));
    assert_eq!(log.chain_hash_at(6).unwrap(), None);
    // Every record's hash is the one verification recomputes.
    let mut seen = Vec::new();
    let scope = VerifyScope {
        dir: &fx.dir(),
        archive_dir: None,
        public_key: None,
        segments: None,
    };
    verify_log_observing(scope, &mut |seq, hash| seen.push((seq, *hash))).unwrap();
    assert_eq!(seen.len(), 5);
    for (seq, hash) in seen {
        assert_eq!(log.chain_hash_at(seq).unwrap(), Some(hash), "record {seq}");
    }
    log.shutdown().await.unwrap();
    // Reopened, the watch starts at the last checkpoint (the final one).
    let log = fx.open(2).await;
    assert_eq!(log.checkpoints().borrow().as_ref().map(|c| c.seq), Some(5));
    log.shutdown().await.unwrap();
}
