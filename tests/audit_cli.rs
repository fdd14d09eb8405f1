//! The access log from the operator's side, through the binary: tampering
//! caught by `audit verify`, a crash under load, and failing closed when the
//! log cannot be written.

mod support;

use std::{
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use interop_gateway::{client::Client, proto::citizen::v1::GetCitizenRequest};
use support::*;
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

const BIN: &str = env!("CARGO_BIN_EXE_interop-gateway");

fn request() -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    }
}

/// The first (here the only) segment of the log.
fn audit_log(dir: &Path) -> std::path::PathBuf {
    dir.join("data/audit/segments/00000000000000000001.log")
}

/// Copies the config folder's audit files to a fresh folder with the same layout.
fn copy_case(from: &Path, name: &str) -> std::path::PathBuf {
    let case = from.join("cases").join(name);
    std::fs::create_dir_all(case.join("data/audit/segments")).unwrap();
    for f in [
        "segments/00000000000000000001.log",
        "audit.head",
        "audit.pub",
    ] {
        std::fs::copy(
            from.join("data/audit").join(f),
            case.join("data/audit").join(f),
        )
        .unwrap();
    }
    std::fs::copy(from.join("gateway.toml"), case.join("gateway.toml")).unwrap();
    case
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_catches_edits_deletions_swaps_and_truncation() {
    let (dir, pki, config) = prepared_dir();
    // Checkpoints every 5 records, so there are several to truncate past.
    let text =
        std::fs::read_to_string(&config).unwrap() + "\n[audit]\ncheckpoint_every_records = 5\n";
    std::fs::write(&config, text).unwrap();
    let serve = ServeProcess::start(&config, None);
    let mut c = Client::connect(&serve.addr, &pki.identity(&pki.agency(LAND_OFFICE)))
        .await
        .unwrap();
    for _ in 0..23 {
        c.citizen.get_citizen(request()).await.unwrap();
    }
    drop(c);
    assert!(serve.terminate().success());

    let ok = gateway_cli(&["audit", "verify"], &config);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Its reader gone (`| head -1` having read its line): a quiet stop.
    for args in [&["audit", "verify"][..], &["audit", "export"][..]] {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        // Output lost otherwise (a full disk): said once, and exit 1.
        let full = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&full.stderr);
        assert_eq!(full.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr.matches("writing to standard output").count(),
            1,
            "{args:?}: {stderr}"
        );
    }
    assert!(stdout.contains("23 records"), "{stdout}");

    // The re-use report counts those lookups for the procedure and agency.
    let out = gateway_cli(&["report", "reuse", "--format", "csv"], &config);
    assert_success(&out);
    let csv = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        csv.lines().any(
            |l| l.starts_with(&format!("{PROCEDURE_LAND},{LAND_OFFICE},"))
                && l.ends_with(",23,0,0,0,1,1")
        ),
        "{csv}"
    );
    let out = gateway_cli(&["report", "reuse"], &config);
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("dossiers served from re-used data: 1 of 1 (100.0%)"));
    let out = gateway_cli(
        &[
            "report",
            "reuse",
            "--format",
            "json",
            "--from",
            "2999-01-01",
        ],
        &config,
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows, serde_json::json!([]));
    let out = gateway_cli(&["audit", "export", "--since", "2999-01-01"], &config);
    assert!(out.status.success() && out.stdout.is_empty());

    let lines: Vec<String> = std::fs::read_to_string(audit_log(dir.path()))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let record_lines: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("\"record\""))
        .collect();
    let write = |case: &Path, lines: &[String]| {
        std::fs::write(audit_log(case), lines.join("\n") + "\n").unwrap();
    };

    // 1. One byte of one record changed.
    let case = copy_case(dir.path(), "edit");
    let mut edited = lines.clone();
    let i = record_lines[7];
    edited[i] = edited[i].replacen(CITIZEN_ID, "092085000124", 1);
    write(&case, &edited);
    // 2. One record removed.
    let case2 = copy_case(dir.path(), "delete");
    let mut deleted = lines.clone();
    deleted.remove(record_lines[3]);
    write(&case2, &deleted);
    // 3. Two records swapped.
    let case3 = copy_case(dir.path(), "swap");
    let mut swapped = lines.clone();
    swapped.swap(record_lines[10], record_lines[11]);
    write(&case3, &swapped);
    // 4. The tail cut off, last checkpoint included.
    let case4 = copy_case(dir.path(), "truncate");
    let cut = record_lines[12];
    write(&case4, &lines[..cut]);

    for (case, name) in [
        (case, "edit"),
        (case2, "delete"),
        (case3, "swap"),
        (case4, "truncate"),
    ] {
        let out = gateway_cli(&["audit", "verify"], &case.join("gateway.toml"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains("BROKEN"), "{name}: {stderr}");
        assert!(
            stderr.contains("record") || stderr.contains("checkpoint"),
            "{name}: {stderr}"
        );
    }

    // Exported records carry the request ids clients got.
    let out = gateway_cli(&["audit", "export", "--subject", CITIZEN_ID], &config);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 23);

    // A public key kept elsewhere: another key fails the signatures.
    let other = tempfile::tempdir().unwrap();
    let other_key =
        interop_gateway::audit::Signer::load_or_create(&other.path().join("k")).unwrap();
    std::fs::write(other.path().join("pub.pem"), other_key.public_key_pem()).unwrap();
    let out = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .arg("--public-key")
        .arg(other.path().join("pub.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_under_load_every_answered_call_is_in_the_log() {
    let (dir, pki, config) = prepared_dir();
    let serve = ServeProcess::start(&config, None);
    let identity = pki.identity(&pki.agency(LAND_OFFICE));
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = Client::connect(&serve.addr, &identity).await.unwrap();
        let answered = answered.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 2,000 calls per task, and it stops at the first error.
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.citizen.get_citizen(request()).await {
                    Ok(resp) => {
                        let id = resp
                            .metadata()
                            .get("x-request-id")
                            .unwrap()
                            .to_str()
                            .unwrap()
                            .to_owned();
                        answered.lock().unwrap().push(id);
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    // Kill once a good number of answers are in, while calls are in flight.
    loop {
        tokio::task::yield_now().await;
        if answered.lock().unwrap().len() >= 400 {
            break;
        }
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    let mut serve = serve;
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let answered: Vec<String> = answered.lock().unwrap().clone();
    assert!(answered.len() >= 400, "only {} answers", answered.len());

    // Restart: the log is recovered and sealed; then a clean stop.
    let again = ServeProcess::start(&config, None);
    assert!(again.terminate().success());
    let out = gateway_cli(&["audit", "verify"], &config);
    assert_success(&out);

    let out = gateway_cli(&["audit", "export"], &config);
    assert_all_in_export(&answered, &out.stdout);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_access_log_fails_closed_and_turns_health_not_serving() {
    let (_dir, pki, config) = prepared_dir();
    // A file-size limit of 64 KiB (room for SQLite's 32 KiB shared-memory
    // file): the log fills after about a hundred records and every further
    // write fails (EFBIG), as on a full disk.
    let serve = ServeProcess::start(&config, Some("ulimit -f 64;"));
    let mut c = Client::connect(&serve.addr, &pki.identity(&pki.agency(LAND_OFFICE)))
        .await
        .unwrap();
    let mut health = HealthClient::new(c.channel.clone());
    let check = HealthCheckRequest {
        service: "interop.citizen.v1.CitizenRegistryService".into(),
    };
    assert_eq!(
        health
            .check(check.clone())
            .await
            .unwrap()
            .into_inner()
            .status(),
        ServingStatus::Serving
    );

    let mut ok = 0;
    let mut failure = None;
    for _ in 0..2000 {
        match c.citizen.get_citizen(request()).await {
            Ok(_) => ok += 1,
            Err(status) => {
                failure = Some(status);
                break;
            }
        }
    }
    let status = failure.expect("the log never filled up");
    assert!(ok > 0, "some calls succeed before the limit");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "AUDIT_UNAVAILABLE");
    // Health follows the log.
    let mut watch = health.watch(check.clone()).await.unwrap().into_inner();
    loop {
        let s = watch.message().await.unwrap().unwrap();
        if s.status() == ServingStatus::NotServing {
            break;
        }
    }
    // Still no data while the log cannot be written.
    let again = c.citizen.get_citizen(request()).await.unwrap_err();
    assert_eq!(again.code(), Code::Unavailable);
    // The log collector may still be reading serve's stderr: wait for it.
    serve.wait_for_log("access log write failed");
    drop(serve);

    // What was written holds: nothing of the failed batches counts.
    let out = gateway_cli(&["audit", "verify"], &config);
    assert_success(&out);
}
