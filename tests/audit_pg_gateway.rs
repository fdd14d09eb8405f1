//! Two gateway instances (the built binary, on their own ports) sharing one
//! PostgreSQL access log: each answers with every instance's records and
//! accepts the other's page tokens; `kill -9` of one under load loses no
//! record of an answered call; the database stopped fails both closed
//! (UNAVAILABLE `AUDIT_UNAVAILABLE`, health NOT_SERVING) and they recover by
//! themselves when it is back.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use interop_gateway::{
    client::Client,
    proto::{audit::v1::ListAccessRecordsRequest, citizen::v1::GetCitizenRequest},
};
use support::{pg::PgCluster, *};
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

fn list(page_size: i32, page_token: String) -> ListAccessRecordsRequest {
    ListAccessRecordsRequest {
        context: context(PROCEDURE_PORTAL),
        subject_id: CITIZEN_ID.into(),
        page_size,
        page_token,
    }
}

/// A config for instance `name` in the prepared folder: the shared store and
/// PKI, the access log in the cluster.
fn instance_config(dir: &Path, pg: &PgCluster, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = config_text(&[], "certs/ca.pem")
        + &format!(
            "\n[audit]\ndatabase_url = \"{}\"\ninstance = \"{name}\"\ncheckpoint_every_seconds = 1\n",
            pg.url
        );
    std::fs::write(&path, text).unwrap();
    path
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn request_id(resp: &tonic::Response<impl Sized>) -> String {
    resp.metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// Every page of the citizen's listing, fetched from `clients` in turn (page
/// `i` from `clients[i % len]`): the number of pages and each record's method.
async fn list_all(clients: &mut [&mut Client], page_size: i32) -> (usize, Vec<String>) {
    let mut token = String::new();
    let (mut pages, mut records) = (0, Vec::new());
    loop {
        let n = clients.len();
        let page = clients[pages % n]
            .access_log
            .list_access_records(list(page_size, token))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        records.extend(page.records.into_iter().map(|r| r.method));
        if page.next_page_token.is_empty() {
            return (pages, records);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_postgresql_log() {
    let Some(pg) = PgCluster::start_or_skip("two_instances_share_one_postgresql_log") else {
        return;
    };
    let (dir, pki, _) = prepared_dir();
    let (config_a, config_b) = (
        instance_config(dir.path(), &pg, "gw-a"),
        instance_config(dir.path(), &pg, "gw-b"),
    );
    let a = ServeProcess::start(&config_a, None);
    let b = ServeProcess::start(&config_b, None);
    assert_ne!(a.addr, b.addr);

    // A second live process for an instance is refused, saying why.
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config_a)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another running gateway"), "{err}");

    // Calls through both.
    let land = pki.identity(&pki.agency(LAND_OFFICE));
    let portal = pki.identity(&pki.agency(PORTAL));
    let mut land_a = Client::connect(&a.addr, &land).await.unwrap();
    let mut land_b = Client::connect(&b.addr, &land).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(request_id(
            &land_a.citizen.get_citizen(request()).await.unwrap(),
        ));
        ids.push(request_id(
            &land_b.citizen.get_citizen(request()).await.unwrap(),
        ));
    }

    // Each instance lists both instances' records, newest first (each
    // listing is itself a record about the citizen, seen by the next one).
    let mut portal_a = Client::connect(&a.addr, &portal).await.unwrap();
    let mut portal_b = Client::connect(&b.addr, &portal).await.unwrap();
    for (seen, c) in [(6, &mut portal_a), (7, &mut portal_b)] {
        let page = c
            .access_log
            .list_access_records(list(100, String::new()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.records.len(), seen);
        let reads = page
            .records
            .iter()
            .filter(|r| r.method.ends_with("/GetCitizen"));
        assert_eq!(reads.count(), 6);
        let times: Vec<_> = page.records.iter().map(|r| r.time.unwrap()).collect();
        assert!(times
            .windows(2)
            .all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos)));
    }
    // A page token from one instance works on the other: pages of 2 taken
    // alternately from a and b list all eight records once (the six reads,
    // the two listings before; later pages start below the first).
    let (pages, methods) = list_all(&mut [&mut portal_a, &mut portal_b], 2).await;
    assert_eq!((pages, methods.len()), (4, 8), "{methods:?}");
    assert_eq!(
        methods
            .iter()
            .filter(|m| m.ends_with("/GetCitizen"))
            .count(),
        6
    );

    // kill -9 of a, under load on both.
    let answered = Arc::new(Mutex::new(ids));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for addr in [&a.addr, &b.addr, &a.addr, &b.addr] {
        let mut c = Client::connect(addr, &land).await.unwrap();
        let (answered, stop) = (answered.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.citizen.get_citizen(request()).await {
                    Ok(resp) => answered.lock().unwrap().push(request_id(&resp)),
                    Err(_) => break,
                }
            }
        }));
    }
    loop {
        tokio::task::yield_now().await;
        if answered.lock().unwrap().len() >= 300 || tasks.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let answered: Vec<String> = answered.lock().unwrap().clone();
    assert!(answered.len() >= 300, "only {} answers", answered.len());

    // a restarts on its chain (the killed process's lock is gone with it).
    let a = ServeProcess::start(&config_a, None);

    // Every answered call is in the export.
    let out = cli(&["audit", "export", "--database-url", &pg.url]);
    assert_success(&out);
    assert_all_in_export(&answered, &out.stdout);

    // The re-use report reads the same database (every instance), not the
    // config's file log.
    let lookups = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| {
            l["record"]["outcome"] == "OK"
                && l["record"]["method"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("/GetCitizen"))
        })
        .count();
    let report = cli(&[
        "report",
        "reuse",
        "--config",
        config_b.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_success(&report);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&report.stdout).unwrap();
    let reported: u64 = rows
        .iter()
        .map(|r| r["lookups_with_data"].as_u64().unwrap())
        .sum();
    assert_eq!(reported as usize, lookups);
    assert!(lookups >= answered.len());

    // The database stops: both fail closed, and say so in their health.
    let mut land_a = Client::connect(&a.addr, &land).await.unwrap();
    let mut health_a = HealthClient::new(land_a.channel.clone());
    let check = HealthCheckRequest {
        service: "interop.citizen.v1.CitizenRegistryService".into(),
    };
    pg.stop();
    for c in [&mut land_a, &mut land_b] {
        let status = c.citizen.get_citizen(request()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(reason(&status), "AUDIT_UNAVAILABLE");
    }
    let mut watch = health_a.watch(check.clone()).await.unwrap().into_inner();
    loop {
        if watch.message().await.unwrap().unwrap().status() == ServingStatus::NotServing {
            break;
        }
    }
    let status = portal_b
        .access_log
        .list_access_records(list(10, String::new()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Back: health returns by itself (the writer probes), calls are answered.
    pg.start_again();
    loop {
        if watch.message().await.unwrap().unwrap().status() == ServingStatus::Serving {
            break;
        }
    }
    land_a.citizen.get_citizen(request()).await.unwrap();
    land_b.citizen.get_citizen(request()).await.unwrap();

    // A health watch never ends by itself: let go of it before stopping.
    drop((watch, health_a));
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let out = cli(&["audit", "verify", "--database-url", &pg.url]);
    assert_success(&out);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("2 instances"), "{report}");
    assert!(
        report.contains("instance gw-a") && report.contains("instance gw-b"),
        "{report}"
    );

    // The key to keep apart: both instances sign with the config's key here.
    let out = cli(&[
        "audit",
        "public-key",
        "--config",
        config_a.to_str().unwrap(),
    ]);
    assert_success(&out);
    let pem = dir.path().join("kept.pem");
    std::fs::write(&pem, &out.stdout).unwrap();
    let out = cli(&[
        "audit",
        "verify",
        "--database-url",
        &pg.url,
        "--public-key",
        pem.to_str().unwrap(),
    ]);
    assert_success(&out);
}
