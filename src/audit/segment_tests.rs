//! Scenarios of the segmented file log: sealing by size, verification across
//! segments and of a subset, tampering with sealed and archived segments,
//! retention (archive or attested deletion), migration of a single-file log,
//! and start-up that re-reads only what follows the last checkpoint.

use std::{fs, num::NonZeroU64, path::PathBuf, time::Duration};

use tempfile::TempDir;

use super::{
    chain::{self, Checkpoint, GENESIS},
    line,
    record::{sample, AuditRecord},
    segments::{self, FileOptions, FileStore},
    store::AuditStore,
    *,
};

const A: &str = "001099000001";
const B: &str = "001099000002";

struct Fx {
    root: TempDir,
}

impl Fx {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
        }
    }
    fn dir(&self) -> PathBuf {
        self.root.path().join("audit")
    }
    fn archive(&self) -> PathBuf {
        self.root.path().join("archive")
    }
    fn signer(&self) -> Signer {
        Signer::load_or_create(&self.root.path().join("audit.pk8")).unwrap()
    }
    fn files(&self, archive: bool) -> FileOptions {
        FileOptions {
            segment_bytes: 4096,
            segment_max_age: None,
            retain: Some(Duration::from_secs(86_400)),
            archive_dir: archive.then(|| self.archive()),
            index: Default::default(),
        }
    }
    fn opts(&self, every: u64, archive: bool) -> AuditOptions {
        AuditOptions {
            checkpoint_every_records: NonZeroU64::new(every).unwrap(),
            checkpoint_every: Duration::from_secs(3600),
            files: self.files(archive),
            ..AuditOptions::default()
        }
    }
    async fn open(&self, every: u64, archive: bool) -> AuditLog {
        AuditLog::open(&self.dir(), self.signer(), self.opts(every, archive))
            .await
            .unwrap()
    }
    fn segments(&self) -> Vec<segments::SegmentFile> {
        segments::list_segments(&self.dir(), Some(&self.archive())).unwrap()
    }
    /// `n` records, every third about A, the rest about B, in a log sealed
    /// every 10 records, with 4 KiB segments.
    async fn with_records(n: u64) -> Self {
        let fx = Self::new();
        let log = fx.open(10, false).await;
        for i in 1..=n {
            assert_eq!(log.append(record(i)).await.unwrap(), i);
        }
        log.shutdown().await.unwrap();
        fx
    }
}

fn record(i: u64) -> AuditRecord {
    sample(i, if i % 3 == 0 { A } else { B })
}

fn verify_in(
    dir: &std::path::Path,
    archive: Option<&std::path::Path>,
) -> Result<VerifyReport, VerifyFailure> {
    verify_log(VerifyScope {
        dir,
        archive_dir: archive,
        public_key: None,
        segments: None,
    })
}

#[tokio::test]
async fn segments_are_sealed_by_size_linked_and_verified_whole_or_in_part() {
    let fx = Fx::with_records(300).await;
    let segs = fx.segments();
    assert!(segs.len() >= 4, "{segs:?}");
    for seg in &segs[1..] {
        let first = fs::read_to_string(&seg.path).unwrap();
        let first = first.lines().next().unwrap();
        assert!(
            first.starts_with(&format!("{{\"checkpoint\":{{\"seq\":{},", seg.first - 1)),
            "{first}"
        );
    }
    let report = verify_in(&fx.dir(), None).unwrap();
    assert_eq!(
        (report.records, report.last_seq, report.unsealed_tail),
        (300, 300, 0)
    );
    assert_eq!(report.segments, segs.len() as u64);

    // A subset: each from its own signed opening checkpoint, links where adjacent.
    let picked = [segs[1].first, segs[2].first];
    let part = verify_log(VerifyScope {
        dir: &fx.dir(),
        archive_dir: None,
        public_key: None,
        segments: Some(&picked),
    })
    .unwrap();
    assert_eq!(part.segments, 2);
    assert_eq!(part.records, segs[3].first - segs[1].first);
    let missing = verify_log(VerifyScope {
        dir: &fx.dir(),
        archive_dir: None,
        public_key: None,
        segments: Some(&[7]),
    })
    .unwrap_err();
    assert!(
        missing.what.contains("no segment starting at record 7"),
        "{missing}"
    );

    // Reads cross segments: pages of a subject, and everything after a seq.
    let log = fx.open(10, false).await;
    assert_eq!(log.reverified_on_open(), 0);
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = log.records_for_subject(A, before.as_deref(), 7).unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.cursor.clone());
        seen.extend(page.into_iter().map(|r| r.cursor.parse::<u64>().unwrap()));
    }
    let expected: Vec<u64> = (1..=300).rev().filter(|i| i % 3 == 0).collect();
    assert_eq!(seen, expected);
    let after = log.records_after(5, 1000).unwrap();
    assert_eq!(after.len(), 295);
    assert!(after
        .iter()
        .zip(6..)
        .all(|((seq, r), i)| *seq == i && *r == record(i)));
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn tampering_in_a_sealed_segment_and_a_removed_segment_are_caught() {
    let fx = Fx::with_records(300).await;
    let segs = fx.segments();
    let victim = &segs[1];
    let original = fs::read_to_string(&victim.path).unwrap();
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("{\"seq\""))
        .unwrap();
    lines[at] = lines[at].replacen("\"latency_us\":", "\"latency_us\":1", 1);
    fs::write(&victim.path, lines.join("\n") + "\n").unwrap();
    let failure = verify_in(&fx.dir(), None).unwrap_err();
    assert_eq!(
        failure.file.as_deref(),
        Some(victim.path.as_path()),
        "{failure}"
    );
    assert!(failure.what.contains("hash does not match"), "{failure}");
    // A subset without it still verifies; with it, it fails.
    let other = [segs[2].first];
    assert!(verify_log(VerifyScope {
        dir: &fx.dir(),
        archive_dir: None,
        public_key: None,
        segments: Some(&other),
    })
    .is_ok());
    fs::write(&victim.path, &original).unwrap();
    verify_in(&fx.dir(), None).unwrap();

    // A middle segment removed.
    let kept = fs::read(&victim.path).unwrap();
    fs::remove_file(&victim.path).unwrap();
    let failure = verify_in(&fx.dir(), None).unwrap_err();
    assert!(
        failure.what.contains(&format!(
            "records {} to {} are missing",
            victim.first,
            segs[2].first - 1
        )),
        "{failure}"
    );
    let e = export(&fx.dir(), None, None, None, &mut Vec::new())
        .unwrap_err()
        .to_string();
    let missing = format!(
        "records {} to {} are missing",
        victim.first,
        segs[2].first - 1
    );
    assert!(e.contains(&missing), "{e}");
    fs::write(&victim.path, kept).unwrap();
    assert_eq!(
        export(&fx.dir(), None, None, None, &mut Vec::new()).unwrap(),
        300
    );

    // The newest segments removed (the very last may hold only its opening
    // checkpoint): audit.head names a checkpoint past the end.
    for seg in &segs[segs.len() - 2..] {
        fs::remove_file(&seg.path).unwrap();
    }
    let failure = verify_in(&fx.dir(), None).unwrap_err();
    assert!(failure.what.contains("truncation detected"), "{failure}");
    let refused = AuditLog::open(&fx.dir(), fx.signer(), fx.opts(10, false)).await;
    assert!(matches!(refused, Err(AuditError::Broken { .. })));
}

fn attest(signer: &Signer) -> impl Fn(u64, [u8; 32]) -> Checkpoint + '_ {
    move |seq, hash| Checkpoint::sign_retired(signer, seq, hash, 1)
}

#[tokio::test]
async fn retention_moves_sealed_segments_to_the_archive_and_verification_spans_both() {
    let fx = Fx::with_records(300).await;
    let before = fx.segments().len();
    let signer = fx.signer();
    let mut store = FileStore::new(&fx.dir(), signer.public_key(), fx.files(true));
    store.recover().unwrap();
    let later = writer::now_unix_ms() + 2 * 86_400_000;
    let moved = store.expire(later, &attest(&signer)).unwrap();
    assert_eq!(moved, before as u64 - 1);
    drop(store);
    let segs = fx.segments();
    assert_eq!(segs.iter().filter(|s| s.archived).count(), before - 1);
    let report = verify_in(&fx.dir(), Some(&fx.archive())).unwrap();
    assert_eq!(
        (report.records, report.archived_segments),
        (300, before as u64 - 1)
    );
    // Without the archive the gap is reported, by an export too.
    let failure = verify_in(&fx.dir(), None).unwrap_err();
    assert!(failure.what.contains("records 1 to"), "{failure}");
    let e = export(&fx.dir(), None, None, None, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("records 1 to") && e.contains("are missing"),
        "{e}"
    );

    // Tampering in the archive is caught there.
    let archived = &segs[0];
    let text = fs::read_to_string(&archived.path).unwrap();
    fs::write(
        &archived.path,
        text.replacen("\"latency_us\":", "\"latency_us\":1", 1),
    )
    .unwrap();
    let failure = verify_in(&fx.dir(), Some(&fx.archive())).unwrap_err();
    assert_eq!(failure.file.as_deref(), Some(archived.path.as_path()));
    fs::write(&archived.path, text).unwrap();

    // Records in the archive are still listed and exported.
    let log = fx.open(10, true).await;
    let page = log.records_for_subject(A, Some("10"), 5).unwrap();
    assert_eq!(
        page.iter().map(|r| r.cursor.as_str()).collect::<Vec<_>>(),
        ["9", "6", "3"]
    );
    log.shutdown().await.unwrap();
    let mut out = Vec::new();
    assert_eq!(
        export(&fx.dir(), Some(&fx.archive()), None, None, &mut out).unwrap(),
        300
    );

    // An index deleted (as the docs allow) is rebuilt at the next start
    // from the archive too, not only from the segments left in the folder.
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(fx.dir().join(name));
    }
    let log = fx.open(10, true).await;
    let page = log.records_for_subject(A, Some("10"), 5).unwrap();
    assert_eq!(
        page.iter().map(|r| r.cursor.as_str()).collect::<Vec<_>>(),
        ["9", "6", "3"]
    );
    log.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_without_an_archive_deletes_with_a_signed_statement() {
    let fx = Fx::with_records(300).await;
    let segs = fx.segments();
    // The chain hash after the last record retention will delete.
    let boundary = {
        let log = fx.open(10, false).await;
        let hash = log.reader().chain_hash_at(segs[segs.len() - 1].first - 1);
        log.shutdown().await.unwrap();
        hash.unwrap().unwrap()
    };
    let signer = fx.signer();
    let mut store = FileStore::new(&fx.dir(), signer.public_key(), fx.files(false));
    store.recover().unwrap();
    // An earlier try that deleted the oldest segment and then failed (at the
    // index, say) is finished by the next one instead of failing it forever.
    fs::remove_file(&segs[0].path).unwrap();
    let later = writer::now_unix_ms() + 2 * 86_400_000;
    assert_eq!(
        store.expire(later, &attest(&signer)).unwrap(),
        segs.len() as u64 - 1
    );
    drop(store);
    let newest = fx.segments();
    assert_eq!(newest.len(), 1);
    let report = verify_in(&fx.dir(), None).unwrap();
    assert_eq!(report.retired_through, Some(newest[0].first - 1));
    assert_eq!(report.last_seq, 300);
    assert_eq!(report.records, 300 - (newest[0].first - 1));

    // The deleted range's reads are gone from the index too; the log goes on.
    let log = fx.open(10, false).await;
    // A witness is shown the hash of the last record deleted (the statement
    // keeps it) and told apart from a rollback before it.
    let through = newest[0].first - 1;
    let reader = log.reader();
    assert_eq!(reader.retired_through().unwrap(), Some(through));
    assert_eq!(reader.chain_hash_at(through).unwrap(), Some(boundary));
    assert_eq!(reader.chain_hash_at(through - 1).unwrap(), None);
    assert_eq!(log.append(sample(301, A)).await.unwrap(), 301);
    assert!(reader.chain_hash_at(through + 1).unwrap().is_some());
    let page = log.records_for_subject(A, None, 1000).unwrap();
    assert!(page
        .iter()
        .all(|r| r.cursor.parse::<u64>().unwrap() >= newest[0].first));
    assert_eq!(page[0].cursor, "301");
    log.shutdown().await.unwrap();
    assert_eq!(verify_in(&fx.dir(), None).unwrap().last_seq, 301);

    // An altered statement is caught, and so is a missing one.
    let path = fx.dir().join(RETIRED_FILE);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("\"seq\":", "\"seq\":1", 1)).unwrap();
    assert!(verify_in(&fx.dir(), None)
        .unwrap_err()
        .what
        .contains(RETIRED_FILE));
    fs::remove_file(&path).unwrap();
    let failure = verify_in(&fx.dir(), None).unwrap_err();
    assert!(failure.what.contains("records 1 to"), "{failure}");
}

/// Writes a log in the single-file format of earlier versions, as the code
/// before segments wrote it: record and checkpoint lines in `audit.log`,
/// the last checkpoint in `audit.head`, the key in `audit.pub`.
fn write_single_file_log(dir: &std::path::Path, signer: &Signer, n: u64, every: u64) {
    fs::create_dir_all(dir).unwrap();
    let mut buf = Vec::new();
    let mut head = GENESIS;
    let mut last = Checkpoint::sign(signer, 0, GENESIS, 1);
    for seq in 1..=n {
        let r = record(seq);
        head = chain::hash(&head, seq, &r);
        line::write_record(&mut buf, seq, &head, &r).unwrap();
        if seq % every == 0 {
            last = Checkpoint::sign(signer, seq, head, 1_000 + seq as i64);
            line::write_checkpoint(&mut buf, &last).unwrap();
        }
    }
    fs::write(dir.join(LOG_FILE), buf).unwrap();
    let mut text = Vec::new();
    line::write_checkpoint(&mut text, &last).unwrap();
    fs::write(dir.join(HEAD_FILE), text).unwrap();
    fs::write(dir.join(PUB_FILE), signer.public_key_pem()).unwrap();
}

#[tokio::test]
async fn a_single_file_log_is_migrated_verified_and_kept_renamed() {
    let fx = Fx::new();
    let signer = fx.signer();
    // 105 records, sealed every 10: the last 5 were left unsealed by a crash.
    write_single_file_log(&fx.dir(), &signer, 105, 10);
    let old = fs::read(fx.dir().join(LOG_FILE)).unwrap();
    assert_eq!(verify_file(&fx.dir(), None).unwrap().records, 105);

    let log = fx.open(10, false).await;
    assert!(!fx.dir().join(LOG_FILE).exists());
    assert_eq!(fs::read(fx.dir().join(MIGRATED_FILE)).unwrap(), old);
    assert_eq!(log.last_seq(), 105);
    assert_eq!(log.append(record(106)).await.unwrap(), 106);
    let page = log.records_for_subject(A, None, 3).unwrap();
    assert_eq!(
        page.iter().map(|r| r.cursor.as_str()).collect::<Vec<_>>(),
        ["105", "102", "99"]
    );
    log.shutdown().await.unwrap();
    let report = verify_file(&fx.dir(), None).unwrap();
    assert_eq!((report.records, report.unsealed_tail), (106, 0));
}

#[tokio::test]
async fn a_broken_single_file_log_is_not_migrated() {
    let fx = Fx::new();
    let signer = fx.signer();
    write_single_file_log(&fx.dir(), &signer, 30, 10);
    let path = fx.dir().join(LOG_FILE);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("00109900000", "00109900009", 1)).unwrap();
    let refused = AuditLog::open(&fx.dir(), signer, fx.opts(10, false)).await;
    assert!(
        matches!(refused, Err(AuditError::Broken { .. })),
        "{:?}",
        refused.err()
    );
    assert!(path.exists());
    assert!(!fx.dir().join(SEGMENTS_DIR).exists());
}

#[test]
fn opening_rereads_only_what_follows_the_last_checkpoint() {
    let fx = Fx::new();
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // Segments large enough that only the count seals.
    let opts = || AuditOptions {
        files: FileOptions {
            segment_bytes: 64 << 20,
            ..fx.files(false)
        },
        ..fx.opts(100, false)
    };
    let dir = fx.dir();
    let open = || AuditLog::open(&dir, fx.signer(), opts());
    rt().block_on(async {
        let log = open().await.unwrap();
        for i in 1..=2_050 {
            log.append(record(i)).await.unwrap();
        }
        // A crash: 50 records after the checkpoint at 2,000.
        log.crash().await;
    });
    rt().block_on(async {
        let log = open().await.unwrap();
        assert_eq!(log.reverified_on_open(), 50);
        assert_eq!(log.last_seq(), 2_050);
        log.shutdown().await.unwrap();
    });
    // A lost index is rebuilt from the segments, and pages are the same.
    fs::remove_file(fx.dir().join(INDEX_FILE)).unwrap();
    let _ = fs::remove_file(fx.dir().join("index.sqlite-wal"));
    let _ = fs::remove_file(fx.dir().join("index.sqlite-shm"));
    rt().block_on(async {
        let log = open().await.unwrap();
        assert_eq!(log.reverified_on_open(), 0);
        let page = log.records_for_subject(A, None, 2).unwrap();
        assert_eq!(
            page.iter().map(|r| r.cursor.as_str()).collect::<Vec<_>>(),
            ["2049", "2046"]
        );
        assert_eq!(log.records_after(2_040, 100).unwrap().len(), 10);
        log.shutdown().await.unwrap();
    });
    assert_eq!(verify_file(&fx.dir(), None).unwrap().records, 2_050);
}

#[tokio::test]
async fn a_migration_never_replaces_the_copy_an_earlier_one_kept() {
    let fx = Fx::new();
    let signer = fx.signer();
    write_single_file_log(&fx.dir(), &signer, 12, 5);
    fs::write(fx.dir().join(MIGRATED_FILE), "kept").unwrap();
    let refused = AuditLog::open(&fx.dir(), signer, fx.opts(10, false)).await;
    let err = refused.err().unwrap();
    assert!(err.to_string().contains("already there"), "{err}");
    assert_eq!(
        fs::read_to_string(fx.dir().join(MIGRATED_FILE)).unwrap(),
        "kept"
    );
    assert!(fx.dir().join(LOG_FILE).exists());
}

/// The active segment is written ahead with zeros; its data ends at the
/// first of them for every reader, a reopened log writes right after its
/// data, and sealed segments keep their data only.
#[tokio::test]
async fn preallocated_space_is_not_part_of_the_log() {
    let fx = Fx::new();
    let mut opts = fx.opts(10, false);
    opts.files.segment_bytes = 64 << 20;
    let log = AuditLog::open(&fx.dir(), fx.signer(), opts.clone())
        .await
        .unwrap();
    for i in 1..=5 {
        assert_eq!(log.append(record(i)).await.unwrap(), i);
    }
    let active = fx.segments().pop().unwrap().path;
    let bytes = fs::read(&active).unwrap();
    let data = bytes.iter().position(|&b| b == 0).unwrap();
    assert!(bytes.len() >= 64 << 10, "{} bytes allocated", bytes.len());
    assert!(bytes[data..].iter().all(|&b| b == 0));
    assert_eq!(bytes[..data].iter().filter(|&&b| b == b'\n').count(), 5);
    // While the log is open: verification and reads stop at the zeros.
    let report = verify_in(&fx.dir(), None).unwrap();
    assert_eq!(report.records, 5);
    assert_eq!(log.records_for_subject(A, None, 10).unwrap().len(), 1);
    assert_eq!(log.records_after(0, 100).unwrap().len(), 5);
    log.shutdown().await.unwrap();
    // Stopped in order, the segment holds its data only; after a crash
    // the zeros stay: put them back.
    let closed = fs::read(&active).unwrap();
    assert!(!closed.contains(&0));
    let mut crashed = closed.clone();
    crashed.resize(closed.len() + (64 << 10), 0);
    fs::write(&active, &crashed).unwrap();

    // Reopened with the zeros there: appends go right after the data.
    let log = AuditLog::open(&fx.dir(), fx.signer(), opts.clone())
        .await
        .unwrap();
    for i in 6..=12 {
        assert_eq!(log.append(record(i)).await.unwrap(), i);
    }
    log.shutdown().await.unwrap();
    let report = verify_in(&fx.dir(), None).unwrap();
    assert_eq!((report.records, report.torn_tail_bytes), (12, 0));
    // Closed, the segment holds its lines only, one after the other.
    let text = fs::read(&active).unwrap();
    assert!(!text.contains(&0));
    assert_eq!(
        text.iter().filter(|&&b| b == b'\n').count() as u64,
        report.records + report.checkpoints
    );
}

#[tokio::test]
async fn sealed_segments_keep_their_data_only() {
    let fx = Fx::with_records(40).await;
    let segs = fx.segments();
    assert!(segs.len() > 2, "{} segments", segs.len());
    for seg in &segs[..segs.len() - 1] {
        let bytes = fs::read(&seg.path).unwrap();
        assert!(!bytes.contains(&0), "{} keeps zeros", seg.path.display());
        assert_eq!(bytes.last(), Some(&b'\n'));
    }
    assert_eq!(verify_in(&fx.dir(), None).unwrap().records, 40);
}

#[test]
fn lines_end_at_a_newline_and_data_at_a_nul() {
    use super::verify::{next_line, Line};
    let mut input: &[u8] = b"one\ntwo\n\0\0\0three\n";
    let mut buf = Vec::new();
    assert_eq!(next_line(&mut input, &mut buf).unwrap(), Line::Complete);
    assert_eq!(buf, b"one\n");
    assert_eq!(next_line(&mut input, &mut buf).unwrap(), Line::Complete);
    assert_eq!(next_line(&mut input, &mut buf).unwrap(), Line::End);
    // A write cut short inside preallocated space: bytes, then zeros.
    let mut torn: &[u8] = b"one\ntw\0\0\0";
    assert_eq!(next_line(&mut torn, &mut buf).unwrap(), Line::Complete);
    assert_eq!(next_line(&mut torn, &mut buf).unwrap(), Line::Torn);
    assert_eq!(buf, b"tw");
    let mut unterminated: &[u8] = b"one";
    assert_eq!(next_line(&mut unterminated, &mut buf).unwrap(), Line::Torn);
    let mut empty: &[u8] = b"";
    assert_eq!(next_line(&mut empty, &mut buf).unwrap(), Line::End);
}

/// An index that cannot be written (its write lock held by another
/// connection) does not grow memory without bound: rows past the limit are
/// dropped, listings fail instead of leaving records out, and once the lock
/// is gone the dropped records are indexed again from the segments (across
/// several sealed ones) so every record is listed, before and after a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_cannot_be_written_catches_up_from_the_segments() {
    let fx = Fx::new();
    let opts = || {
        let mut opts = fx.opts(10, false);
        opts.files.index = super::indexer::Tuning {
            flush_after: Duration::from_millis(1),
            max_rows: 8,
            busy_timeout: Duration::from_millis(5),
            retry_after: Duration::from_millis(5),
        };
        opts
    };
    let log = AuditLog::open(&fx.dir(), fx.signer(), opts())
        .await
        .unwrap();
    let reader = log.reader();
    let seqs_of = |rows: Vec<SubjectRow>| {
        rows.iter()
            .map(|r| r.cursor.parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    for i in 1..=6 {
        log.append(record(i)).await.unwrap();
    }
    let lock = rusqlite::Connection::open(fx.dir().join(INDEX_FILE)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    for i in 7..=60 {
        assert_eq!(log.append(record(i)).await.unwrap(), i);
    }
    let refused = reader.subject_page(A, None, 100).unwrap_err();
    assert!(
        matches!(&refused, AuditError::Unavailable(m) if m.contains("index lacks records")),
        "{refused:?}"
    );
    assert!(fx.segments().len() > 2, "the records span sealed segments");

    lock.execute_batch("ROLLBACK").unwrap();
    let expected: Vec<u64> = (1..=60).rev().filter(|i| i % 3 == 0).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        match reader.subject_page(A, None, 100) {
            Ok(rows) => break seqs_of(rows),
            Err(AuditError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("the index did not catch up: {e:?}"),
        }
    };
    assert_eq!(listed, expected);
    // Paged, across the boundary of what was dropped.
    let first = reader.subject_page(B, None, 30).unwrap();
    let rest = reader
        .subject_page(B, first.last().map(|r| r.cursor.as_str()), 100)
        .unwrap();
    let mut both = seqs_of(first);
    both.extend(seqs_of(rest));
    assert_eq!(
        both,
        (1..=60).rev().filter(|i| i % 3 != 0).collect::<Vec<_>>()
    );
    log.shutdown().await.unwrap();

    let log = AuditLog::open(&fx.dir(), fx.signer(), opts())
        .await
        .unwrap();
    assert_eq!(
        seqs_of(log.reader().subject_page(A, None, 100).unwrap()),
        expected
    );
    log.shutdown().await.unwrap();
    let report = verify_in(&fx.dir(), None).unwrap();
    assert_eq!(report.records, 60);
}

#[tokio::test]
async fn the_first_segment_ages_from_its_first_record_after_a_restart() {
    // Segment 1 opens with a record, not a checkpoint; a restart reads it
    // from its last checkpoint on, which must not reset its age.
    let fx = Fx::with_records(5).await;
    let segs = fx.segments();
    assert_eq!(segs.len(), 1, "{segs:?}");
    let first_ms = {
        let text = fs::read_to_string(&segs[0].path).unwrap();
        let line = text.lines().next().unwrap();
        assert!(line.starts_with("{\"seq\""), "{line}");
        serde_json::from_str::<serde_json::Value>(line).unwrap()["record"]["time_unix_ms"]
            .as_i64()
            .unwrap()
    };
    let mut files = fx.files(false);
    files.segment_bytes = 1 << 30;
    files.segment_max_age = Some(Duration::from_secs(3600));
    let mut store = FileStore::new(&fx.dir(), fx.signer().public_key(), files);
    store.recover().unwrap();
    assert!(!store.wants_checkpoint(first_ms + 3_599_000));
    assert!(store.wants_checkpoint(first_ms + 3_600_000));
}

#[tokio::test]
async fn verification_checks_the_subject_index_against_the_records() {
    let fx = Fx::with_records(300).await;
    let report = verify_in(&fx.dir(), None).unwrap();
    assert_eq!((report.index_entries, report.indexed_seq), (Some(300), 300));
    let index = fx.dir().join("index.sqlite");
    let original = fs::read(&index).unwrap();
    let tamper = |sql: &str| {
        fs::write(&index, &original).unwrap();
        let conn = rusqlite::Connection::open(&index).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        verify_in(&fx.dir(), None).unwrap_err()
    };
    // A read hidden from the citizen: its entry deleted, or moved.
    let failure = tamper("DELETE FROM subjects WHERE subject = '001099000001' AND seq = 99");
    assert_eq!(failure.seq, Some(99), "{failure}");
    assert!(failure.what.contains("lacks it"), "{failure}");
    let failure = tamper("UPDATE subjects SET offset = offset + 1 WHERE seq = 120");
    assert_eq!(failure.seq, Some(120), "{failure}");
    assert!(failure.what.contains("points elsewhere"), "{failure}");
    // A read shown that is not in the log.
    let failure = tamper("INSERT INTO subjects VALUES ('001099000001', 5, 1, 0)");
    assert!(
        failure.what.contains("1 entries that name no record"),
        "{failure}"
    );
    // Without an index there is nothing to check (it is rebuilt at start).
    fs::remove_file(&index).unwrap();
    let _ = fs::remove_file(fx.dir().join("index.sqlite-wal"));
    let _ = fs::remove_file(fx.dir().join("index.sqlite-shm"));
    assert_eq!(verify_in(&fx.dir(), None).unwrap().index_entries, None);
}
