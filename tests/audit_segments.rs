//! The access log over years, through the real server over mTLS and the
//! binary: listing across sealed segments and restarts, start-up that
//! re-verifies only what follows the last checkpoint, retention into an
//! archive or deleted under a signed statement, migration of a single-file
//! log, and `audit verify` catching tampering in segments and the archive.

mod support;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use interop_gateway::{
    audit::{self, chain, AuditRecord, Checkpoint},
    client::Client,
    clock::ManualClock,
    proto::{audit::v1::ListAccessRecordsRequest, citizen::v1::GetCitizenRequest},
};
use support::*;

fn get_citizen() -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    }
}

/// Every request id `ListAccessRecords` shows for the citizen, newest
/// first, in pages of `size`.
async fn listed(portal: &mut Client, size: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = portal
            .access_log
            .list_access_records(ListAccessRecordsRequest {
                context: context(PROCEDURE_PORTAL),
                subject_id: CITIZEN_ID.into(),
                page_size: size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(
            page.records
                .iter()
                .map(|r| format!("{}:{}", r.time.as_ref().map_or(0, |t| t.seconds), r.method)),
        );
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    files
}

const SMALL_SEGMENTS: &str = "\n[audit]\nsegment_bytes = 4096\ncheckpoint_every_records = 5\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_access_records_pages_across_segments_and_after_a_restart() {
    let mut gw = Gateway::start_with(Options {
        extra_config: SMALL_SEGMENTS.into(),
        ..Options::default()
    })
    .await;
    let mut land = gw.client(LAND_OFFICE).await;
    for _ in 0..40 {
        land.citizen.get_citizen(get_citizen()).await.unwrap();
    }
    let segments = gw.config.audit.dir.join(audit::SEGMENTS_DIR);
    assert!(
        segment_files(&segments).len() >= 4,
        "{:?}",
        segment_files(&segments)
    );
    let mut portal = gw.client(PORTAL).await;
    let before = listed(&mut portal, 7).await;
    assert_eq!(before.len(), 40);
    // A page token issued before the restart is refused after it (tokens
    // are sealed with a key of the process), and a new listing is the same.
    gw.restart().await;
    let mut portal = gw.client(PORTAL).await;
    let after = listed(&mut portal, 7).await;
    // Listing is itself a call about the citizen: the first listing's pages
    // are now the newest records; the reads before them are unchanged.
    assert!(before.iter().all(|r| r.ends_with("/GetCitizen")));
    assert_eq!(after[after.len() - before.len()..], before[..]);
    assert!(after[..after.len() - before.len()]
        .iter()
        .all(|r| r.ends_with("/ListAccessRecords")));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_many_records_reverifies_only_what_follows_the_last_checkpoint() {
    let (dir, pki, config) = prepared_dir();
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[audit]\ncheckpoint_every_records = 50\ncheckpoint_every_seconds = 3600\n";
    std::fs::write(&config, text).unwrap();
    let serve = ServeProcess::start(&config, None);
    let mut c = Client::connect(&serve.addr, &pki.identity(&pki.agency(LAND_OFFICE)))
        .await
        .unwrap();
    for _ in 0..620 {
        c.citizen.get_citizen(get_citizen()).await.unwrap();
    }
    drop(c);
    // A crash: the 20 records after the checkpoint at 600 are left unsealed.
    let mut serve = serve;
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    let again = ServeProcess::start(&config, None);
    let (status, log) = again.terminate_with_log();
    assert!(status.success(), "{log}");
    let opened = log
        .lines()
        .find(|l| l.contains("access log opened"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(opened.contains("last_record=620"), "{opened}");
    assert!(opened.contains("reverified=20"), "{opened}");
    // Sealed at that start and at its stop: the next start re-reads nothing.
    let third = ServeProcess::start(&config, None);
    let (_, log) = third.terminate_with_log();
    assert!(log.contains("reverified=0"), "{log}");
    assert_success(&gateway_cli(&["audit", "verify"], &config));
    drop(dir);
}

async fn retention_scenario(archive: bool) -> (Gateway, Vec<String>) {
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let mut extra = String::from(
        "\n[audit]\nsegment_bytes = 4096\ncheckpoint_every_records = 5\ncheckpoint_every_seconds = 1\nretain_days = 1\n",
    );
    if archive {
        extra.push_str("archive_dir = \"archive\"\n");
    }
    let gw = Gateway::start_with(Options {
        extra_config: extra,
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    let mut land = gw.client(LAND_OFFICE).await;
    for _ in 0..30 {
        land.citizen.get_citizen(get_citizen()).await.unwrap();
    }
    let mut portal = gw.client(PORTAL).await;
    let before = listed(&mut portal, 50).await;
    let segments = gw.config.audit.dir.join(audit::SEGMENTS_DIR);
    let sealed = segment_files(&segments).len() - 1;
    assert!(sealed >= 3);
    // Two days later, the next checkpoint tick applies retention.
    clock.advance(Duration::from_secs(2 * 86_400));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while segment_files(&segments).len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (gw, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_sealed_segments_to_the_archive_and_verify_spans_both() {
    let (gw, before) = retention_scenario(true).await;
    let archive = gw.dir.path().join("archive");
    let archived = segment_files(&archive);
    assert!(archived.len() >= 3, "{archived:?}");
    // Reads in the archive are still listed.
    let mut portal = gw.client(PORTAL).await;
    let after = listed(&mut portal, 50).await;
    assert_eq!(after[after.len() - before.len()..], before[..]);
    // Checked from the files while the gateway runs, as an auditor would.
    let config = gw.config.path.clone();
    let out = gateway_cli(&["audit", "verify"], &config);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("({} archived)", archived.len())),
        "{stdout}"
    );
    assert!(stdout.contains("records/s"), "{stdout}");
    let exported = gateway_cli(&["audit", "export", "--subject", CITIZEN_ID], &config);
    let reads = String::from_utf8_lossy(&exported.stdout)
        .lines()
        .filter(|l| l.contains("/GetCitizen"))
        .count();
    assert_eq!(reads, 30);

    // Tampering in the archive is caught, naming the file.
    let victim = &archived[1];
    let text = std::fs::read_to_string(victim).unwrap();
    std::fs::write(
        victim,
        text.replacen("\"latency_us\":", "\"latency_us\":9", 1),
    )
    .unwrap();
    let out = gateway_cli(&["audit", "verify"], &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&victim.file_name().unwrap().to_string_lossy().to_string()),
        "{stderr}"
    );
    // A subset of segments without it still verifies.
    let first = archived[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert_success(&gateway_cli(
        &["audit", "verify", "--segment", &first],
        &config,
    ));
    // A segment no file starts at is a usage error naming those that exist.
    let out = gateway_cli(&["audit", "verify", "--segment", "2"], &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no segment starts at record 2; they start at: 1,"),
        "{stderr}"
    );
    std::fs::write(victim, text).unwrap();
    // A removed archived segment is a gap.
    std::fs::remove_file(victim).unwrap();
    let out = gateway_cli(&["audit", "verify"], &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("are missing: a segment was removed"),
        "{stderr}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_without_an_archive_deletes_under_a_signed_statement_and_verify_proves_the_rest()
{
    let (gw, _) = retention_scenario(false).await;
    let config = gw.config.path.clone();
    let retired = gw.config.audit.dir.join(audit::RETIRED_FILE);
    assert!(retired.exists());
    let out = gateway_cli(&["audit", "verify"], &config);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("were deleted under retention"), "{stdout}");
    std::fs::remove_file(&retired).unwrap();
    let out = gateway_cli(&["audit", "verify"], &config);
    assert_eq!(out.status.code(), Some(1));
    gw.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn checkpoint_line(cp: &Checkpoint) -> String {
    serde_json::json!({"checkpoint": {
        "seq": cp.seq, "hash": hex(&cp.hash), "time_unix_ms": cp.time_unix_ms,
        "signature": hex(&cp.signature)}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_file_log_of_earlier_versions_is_migrated_on_first_start() {
    let (dir, pki, config) = prepared_dir();
    let cfg = interop_gateway::config::Config::load(&config).unwrap();
    let audit_dir = cfg.audit.dir.clone();
    std::fs::create_dir_all(&audit_dir).unwrap();
    let signer = audit::Signer::load_or_create(&cfg.audit.signing_key).unwrap();
    // The format earlier versions wrote: one audit.log, audit.head, audit.pub.
    let mut text = String::new();
    let mut head = chain::GENESIS;
    let mut last = None;
    for seq in 1..=12u64 {
        let record = AuditRecord {
            time_unix_ms: 1_700_000_000_000 + seq as i64,
            request_id: format!("old-{seq}"),
            agency_code: LAND_OFFICE.into(),
            method: "interop.citizen.v1.CitizenRegistryService/GetCitizen".into(),
            procedure_code: PROCEDURE_LAND.into(),
            dossier_id: "000.00.20.H13-241205-0001".into(),
            officer_id: "officer-1".into(),
            subjects: vec![CITIZEN_ID.into()],
            fields: vec!["full_name".into()],
            outcome: "OK".into(),
            latency_us: 500,
            relay_agency_code: String::new(),
            reason: String::new(),
        };
        head = chain::hash(&head, seq, &record);
        text.push_str(
            &serde_json::json!({"seq": seq, "hash": hex(&head), "record": record}).to_string(),
        );
        text.push('\n');
        if seq % 5 == 0 {
            let cp = Checkpoint::sign(&signer, seq, head, 1_700_000_000_000);
            text.push_str(&checkpoint_line(&cp));
            text.push('\n');
            last = Some(cp);
        }
    }
    std::fs::write(audit_dir.join(audit::LOG_FILE), &text).unwrap();
    std::fs::write(
        audit_dir.join(audit::HEAD_FILE),
        checkpoint_line(&last.unwrap()) + "\n",
    )
    .unwrap();
    std::fs::write(audit_dir.join(audit::PUB_FILE), signer.public_key_pem()).unwrap();
    assert_success(&gateway_cli(&["audit", "verify"], &config));

    let serve = ServeProcess::start(&config, None);
    let mut portal = Client::connect(&serve.addr, &pki.identity(&pki.agency(PORTAL)))
        .await
        .unwrap();
    let listed = listed(&mut portal, 5).await;
    assert_eq!(listed.len(), 12);
    let (status, log) = serve.terminate_with_log();
    assert!(status.success());
    assert!(log.contains("migrated the access log to segments"), "{log}");
    assert!(!audit_dir.join(audit::LOG_FILE).exists());
    assert_eq!(
        std::fs::read_to_string(audit_dir.join(audit::MIGRATED_FILE)).unwrap(),
        text
    );
    let out = gateway_cli(&["audit", "verify"], &config);
    assert_success(&out);
    // 12 old records, and the portal's listing calls after them.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK, 15 records"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(dir);
}
