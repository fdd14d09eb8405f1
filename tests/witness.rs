//! Witnessed checkpoints, end to end: gateway A sends its access log's
//! checkpoints to gateway B (`[audit] witnesses`) over real mutual TLS, B
//! countersigns them, and a copy of A's log restored from an older backup
//! (log and head together) is refused by B and fails
//! `audit verify --witness-receipts`, while A keeps answering calls.

mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use interop_gateway::{audit::witness, pki};
use support::*;

/// Gateway A's own agency code, as B knows it.
const FRONT: &str = "000.00.00.H13";

/// Copies the folder `from` to `to` (which must not exist), files and folders.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The highest seq countersigned in a folder of countersignature files.
fn highest_seq(dir: &Path) -> Option<u64> {
    if !dir.exists() {
        return None;
    }
    witness::read_folder(dir)
        .unwrap()
        .iter()
        .map(|f| f.countersigned.checkpoint.seq)
        .max()
}

fn lines_in(dir: &Path) -> usize {
    witness::read_folder(dir).map_or(0, |f| f.len())
}

/// Polls `done` (a readiness condition: a file or a counter the gateways
/// write) until it holds, for at most 20 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of `interop_gateway_witness_countersign_total` for `result`.
async fn countersigned(gw: &Gateway, witness: &str, result: &str) -> f64 {
    let text = scrape(gw.admin.as_deref().unwrap()).await;
    metric(
        &text,
        "interop_gateway_witness_countersign_total",
        &[("witness", witness), ("result", result)],
    )
    .unwrap_or(0.0)
}

async fn until_counted(gw: &Gateway, witness: &str, result: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while countersigned(gw, witness, result).await < at_least {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {result} to be counted"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `calls` answered GetCitizen calls on `gw`.
async fn calls(gw: &Gateway, calls: usize) {
    let mut client = gw.client(LAND_OFFICE).await;
    for _ in 0..calls {
        client.citizen.get_citizen(citizen_request()).await.unwrap();
    }
}

fn verify(config: &Path, receipts: &Path) -> std::process::Output {
    gateway_cli(
        &[
            "audit",
            "verify",
            "--witness-receipts",
            receipts.to_str().unwrap(),
        ],
        config,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_log_is_refused_by_its_witness_and_fails_verification() {
    // B, the witness, knows A as an agency (no grant is needed).
    let mut b = Gateway::start_with(Options {
        extra_config: format!("\n[[agency]]\ncode = \"{FRONT}\"\nname = \"Gateway A\"\n"),
        ..Options::default()
    })
    .await;
    let b_addr = b.addr.trim_start_matches("https://").to_owned();
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("a.pem"), files.path().join("a.key"));
    pki::write_issued(&cert, &key, &b.pki.agency(FRONT)).unwrap();
    let b_ca = b.pki.dir.join("ca.pem");
    // The witness is down when A starts.
    b.pause().await;

    let mut a = Gateway::start_with(Options {
        extra_config: format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[audit]\ncheckpoint_every_records = 2\n\
             checkpoint_every_seconds = 1\nwitnesses = [{{ address = \"{b_addr}\", ca = {:?}, \
             cert = {:?}, key = {:?} }}]\n",
            b_ca.display().to_string(),
            cert.display().to_string(),
            key.display().to_string()
        ),
        ..Options::default()
    })
    .await;
    let b_dir: PathBuf = b.config.data_dir.join(witness::WITNESS_DIR);
    let receipts: PathBuf = a.config.audit.dir.join(witness::RECEIPTS_DIR);

    // A witness that is down never holds up a call: they are answered, the
    // failure is counted, and the checkpoints follow once it is back.
    calls(&a, 4).await;
    until_counted(&a, &b_addr, "unavailable", 1.0).await;
    assert_eq!(highest_seq(&b_dir), None);
    b.resume().await;
    until("B to countersign record 4", || {
        highest_seq(&b_dir) == Some(4)
    })
    .await;
    until("A to keep B's countersignature", || {
        highest_seq(&receipts) == Some(4)
    })
    .await;
    // The receipt is kept before the countersignature is counted.
    until_counted(&a, &b_addr, "ok", 1.0).await;

    // A backup of A's log at record 6, then more witnessed checkpoints.
    calls(&a, 2).await;
    a.pause().await;
    let backup = files.path().join("backup");
    copy_dir(&a.config.audit.dir, &backup);
    a.resume().await;
    calls(&a, 6).await;
    until("B to countersign record 12", || {
        highest_seq(&b_dir) == Some(12)
    })
    .await;
    a.pause().await;

    // The intact log agrees with what B countersigned.
    let out = verify(&a.config.path, &b_dir);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the latest at record 12, all in this log"),
        "{stdout}"
    );

    // Roll A back: the backup of log and head together replaces them.
    let intact = files.path().join("intact");
    std::fs::rename(&a.config.audit.dir, &intact).unwrap();
    copy_dir(&backup, &a.config.audit.dir);
    let b_lines = lines_in(&b_dir);
    a.resume().await;
    // B refuses A's checkpoint at record 6; A keeps answering calls.
    until_counted(&a, &b_addr, "log_rolled_back", 1.0).await;
    calls(&a, 1).await;
    assert_eq!(lines_in(&b_dir), b_lines, "B countersigned nothing more");
    let out = verify(&a.config.path, &b_dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BROKEN against the witnesses' countersignatures")
            && stderr.contains("the log ends after record 7: the log was rolled back"),
        "{stderr}"
    );

    // Once A's seq passes what B saw, with other records, it is a fork.
    calls(&a, 6).await;
    until_counted(&a, &b_addr, "log_forked", 1.0).await;
    assert_eq!(lines_in(&b_dir), b_lines);
    let out = verify(&a.config.path, &b_dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("but the log's chain hash at record")
            && stderr.contains("the log was forked or rewritten"),
        "{stderr}"
    );

    // The countersignatures A kept say the same as B's files.
    let out = verify(&a.config.path, &intact.join(witness::RECEIPTS_DIR));
    assert!(!out.status.success());
    a.stop().await;
    b.stop().await;
}

mod refusals {
    use interop_gateway::{
        audit::{witness::Countersigned, Checkpoint, Signer},
        proto::audit::v1::{
            witness_service_client::WitnessServiceClient, ChainPosition, CountersignRequest,
            CountersignResponse,
        },
        receipt::key_id,
    };
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;

    fn request(
        log: &Signer,
        instance: &str,
        seq: u64,
        hash: u8,
        consistency: Option<(u64, u8)>,
    ) -> CountersignRequest {
        let cp = Checkpoint::sign(log, seq, [hash; 32], 1_700_000_000_000 + seq as i64);
        CountersignRequest {
            log_public_key: log.public_key().to_vec(),
            log_instance: instance.to_owned(),
            checkpoint: Some(interop_gateway::proto::audit::v1::Checkpoint {
                seq,
                hash: cp.hash.to_vec(),
                time_unix_ms: cp.time_unix_ms,
                signature: cp.signature.to_vec(),
            }),
            consistency: consistency.map(|(seq, h)| ChainPosition {
                seq,
                hash: vec![h; 32],
            }),
        }
    }

    /// The code, `ErrorInfo` reason and `witnessed_seq` of a refusal.
    fn refusal(status: tonic::Status) -> (Code, String, Option<String>) {
        let details = status.get_error_details();
        let seq = details
            .error_info()
            .and_then(|i| i.metadata.get("witnessed_seq").cloned());
        (status.code(), reason(&status), seq)
    }

    fn checks_out(log: &Signer, req: &CountersignRequest, answer: &CountersignResponse) {
        let cp = req.checkpoint.as_ref().unwrap();
        let witness_key: [u8; 32] = answer.witness_public_key.as_slice().try_into().unwrap();
        assert_eq!(answer.witness_kid, key_id(&witness_key));
        let signed = Countersigned {
            witness_key,
            log_key: log.public_key(),
            instance: req.log_instance.clone(),
            checkpoint: Checkpoint {
                seq: cp.seq,
                hash: cp.hash.as_slice().try_into().unwrap(),
                time_unix_ms: cp.time_unix_ms,
                signature: cp.signature.as_slice().try_into().unwrap(),
            },
            witnessed_unix_ms: answer.witnessed_unix_ms,
            countersignature: answer.countersignature.as_slice().try_into().unwrap(),
        };
        assert!(signed.verify());
    }

    #[tokio::test]
    async fn the_witness_moves_forward_only_and_names_each_refusal() {
        let b = Gateway::start().await;
        let keys = tempfile::tempdir().unwrap();
        let log = Signer::load_or_create(&keys.path().join("log.key")).unwrap();
        let other = Signer::load_or_create(&keys.path().join("other.key")).unwrap();
        let mut w = WitnessServiceClient::new(b.client(LAND_OFFICE).await.channel);

        // Shape and signature.
        let mut bad_key = request(&log, "", 4, 4, None);
        bad_key.log_public_key.pop();
        let status = w.countersign(bad_key).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["log_public_key"]);
        let bad_instance = request(&log, "a/../b", 4, 4, None);
        let status = w.countersign(bad_instance).await.unwrap_err();
        assert_eq!(bad_fields(&status), ["log_instance"]);
        let mut forged = request(&log, "", 4, 4, None);
        forged.log_public_key = other.public_key().to_vec();
        let (code, why, _) = refusal(w.countersign(forged).await.unwrap_err());
        assert_eq!(
            (code, why.as_str()),
            (Code::InvalidArgument, "BAD_CHECKPOINT_SIGNATURE")
        );

        // First contact is trusted; the same checkpoint again gets the same answer.
        let first = request(&log, "", 4, 4, None);
        let answer = w.countersign(first.clone()).await.unwrap().into_inner();
        checks_out(&log, &first, &answer);
        let again = w.countersign(first).await.unwrap().into_inner();
        assert_eq!(again, answer);

        // Forward only with the chain hash at the witnessed seq.
        let cases = [
            (request(&log, "", 6, 6, None), "WITNESS_STATE_MISMATCH"),
            (
                request(&log, "", 6, 6, Some((3, 3))),
                "WITNESS_STATE_MISMATCH",
            ),
            (request(&log, "", 6, 6, Some((4, 9))), "LOG_FORKED"),
            (request(&log, "", 4, 5, None), "LOG_FORKED"),
            (request(&log, "", 3, 3, None), "LOG_ROLLED_BACK"),
        ];
        for (req, expected) in cases {
            let (code, why, seq) = refusal(w.countersign(req).await.unwrap_err());
            assert_eq!(code, Code::FailedPrecondition, "{expected}");
            assert_eq!(why, expected);
            assert_eq!(seq.as_deref(), Some("4"), "{expected}");
        }
        let next = request(&log, "", 6, 6, Some((4, 4)));
        let answer = w.countersign(next.clone()).await.unwrap().into_inner();
        checks_out(&log, &next, &answer);
        let (_, why, seq) = refusal(
            w.countersign(request(&log, "", 5, 5, None))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (why.as_str(), seq.as_deref()),
            ("LOG_ROLLED_BACK", Some("6"))
        );

        // State is per calling agency and per instance.
        let mut business = WitnessServiceClient::new(b.client(BUSINESS_OFFICE).await.channel);
        business
            .countersign(request(&log, "", 2, 2, None))
            .await
            .unwrap();
        let in_pg = request(&log, "gw-2", 1, 1, None);
        let answer = w.countersign(in_pg.clone()).await.unwrap().into_inner();
        checks_out(&log, &in_pg, &answer);
        let dir = b.config.data_dir.join(witness::WITNESS_DIR);
        assert_eq!(lines_in(&dir), 4);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let kid = &key_id(&log.public_key())[..16];
        assert_eq!(
            names,
            [
                format!("{BUSINESS_OFFICE}-{kid}.jsonl"),
                format!("{LAND_OFFICE}-{kid}-gw-2.jsonl"),
                format!("{LAND_OFFICE}-{kid}.jsonl"),
            ]
        );

        // A certificate naming no configured agency gets nothing.
        let stranger = b.pki.agency("000.00.99.H99");
        let mut s = WitnessServiceClient::new(b.client_with(&stranger).await.channel);
        let status = s.countersign(request(&log, "", 8, 8, None)).await;
        assert!(status.is_err());
        b.stop().await;
    }
}

#[test]
fn check_config_parses_each_witnesss_files() {
    let (_dir, _pki, config) = prepared_dir();
    let base = std::fs::read_to_string(&config).unwrap();
    let with = |cert: &str| {
        let text = format!(
            "{base}\n[audit]\nwitnesses = [{{ address = \"witness.example.vn:50051\", \
             ca = \"certs/ca.pem\", cert = \"{cert}\", key = \"certs/gateway.key\" }}]\n"
        );
        std::fs::write(&config, text).unwrap();
        gateway_cli(&["check-config"], &config)
    };
    assert_success(&with("certs/gateway.pem"));
    // A key where the certificate should be: refused before any start.
    let out = with("certs/ca.key");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit.witnesses[0].cert"), "{stderr}");
    // An entry without its certificate and key.
    let text = base.clone() + "\n[audit]\nwitnesses = [{ address = \"w:1\", ca = \"x\" }]\n";
    std::fs::write(&config, text).unwrap();
    let out = gateway_cli(&["check-config"], &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("missing field `cert`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_of_a_postgresql_log_is_witnessed_under_its_instance_name() {
    let Some(pg) = support::pg::PgCluster::start_or_skip("witnessed_postgresql_instance") else {
        return;
    };
    let b = Gateway::start_with(Options {
        extra_config: format!("\n[[agency]]\ncode = \"{FRONT}\"\nname = \"Gateway A\"\n"),
        ..Options::default()
    })
    .await;
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("a.pem"), files.path().join("a.key"));
    pki::write_issued(&cert, &key, &b.pki.agency(FRONT)).unwrap();
    let a = Gateway::start_with(Options {
        extra_config: format!(
            "\n[audit]\ndatabase_url = \"{}\"\ninstance = \"gw-a\"\ncheckpoint_every_records = 2\n\
             witnesses = [{{ address = \"{}\", ca = {:?}, cert = {:?}, key = {:?} }}]\n",
            pg.url,
            b.addr.trim_start_matches("https://"),
            b.pki.dir.join("ca.pem").display().to_string(),
            cert.display().to_string(),
            key.display().to_string()
        ),
        ..Options::default()
    })
    .await;
    calls(&a, 4).await;
    let b_dir = b.config.data_dir.join(witness::WITNESS_DIR);
    until("B to countersign record 4 of gw-a", || {
        highest_seq(&b_dir) == Some(4)
    })
    .await;
    let found = witness::read_folder(&b_dir).unwrap();
    assert!(found.iter().all(|f| f.countersigned.instance == "gw-a"));
    assert!(found[0].file.to_string_lossy().ends_with("-gw-a.jsonl"));
    let receipts = a.config.audit.dir.join(witness::RECEIPTS_DIR);
    until("A to keep the receipt", || {
        highest_seq(&receipts) == Some(4)
    })
    .await;

    let out = gateway_cli(
        &[
            "audit",
            "verify",
            "--database-url",
            &pg.url,
            "--witness-receipts",
            b_dir.to_str().unwrap(),
        ],
        &a.config.path,
    );
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("instance gw-a:"), "{stdout}");
    assert!(
        stdout.contains("the latest at record 4, all in this log"),
        "{stdout}"
    );
    a.stop().await;
    b.stop().await;
}
