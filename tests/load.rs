//! `interop-gateway load` against a real gateway over real mTLS: the library
//! engine in both models, and the binary as operators run it (JSON summary,
//! charts, and its errors).

mod support;

use std::{path::Path, process::Command, time::Duration};

use interop_gateway::{
    audit,
    load::{
        self,
        stats::Summary,
        workload::{Distribution, ExtractFiles, Keys, Mix, Workload},
        Model, Plan, Stop,
    },
};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_interop-gateway");

fn workload(dir: &Path, mix: &str, distribution: Distribution) -> Workload {
    let mix = Mix::parse(mix).unwrap();
    let keys = Keys::load(&ExtractFiles::in_dir(dir), &mix).unwrap();
    let context = context(PROCEDURE_LAND).unwrap();
    Workload::new(mix, keys, distribution, context, None)
}

fn plan(target: &str, model: Model, stop: Stop) -> Plan {
    Plan {
        target: target.to_owned(),
        label: "test".into(),
        model,
        stop,
        warmup: Duration::ZERO,
        connections: 2,
        new_connection_per_request: false,
        timeout: Duration::from_secs(10),
        seed: 7,
        progress: false,
        respect_retry_info: false,
    }
}

fn audit_records(gw: &Gateway) -> u64 {
    audit::verify_file(&gw.config.audit.dir, None)
        .unwrap()
        .records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_counts_every_request_by_status_and_each_is_audited() {
    let gw = Gateway::start().await;
    let identity = gw.pki.identity(&gw.pki.agency(LAND_OFFICE));
    // The land office holds no GetEnterprise grant: those calls are refused,
    // and counted as such.
    let w = workload(
        gw.dir.path(),
        "GetCitizen=2,VerifyCitizen=1,GetParcel=2,ListParcelsByHolder=1,GetEnterprise=1",
        Distribution::Zipf(1.1),
    );
    let before = audit_records(&gw);
    let s = load::run(
        plan(
            &gw.addr,
            Model::Closed { concurrency: 8 },
            Stop::Requests(300),
        ),
        identity,
        w,
    )
    .await
    .unwrap();
    assert_eq!(s.requests, 300);
    let ok = s.status_counts["OK"];
    let denied = s.status_counts["PERMISSION_DENIED"];
    assert_eq!(ok + denied, 300, "{:?}", s.status_counts);
    assert!(denied > 10 && ok > 200, "{:?}", s.status_counts);
    assert_eq!(s.errors, denied);
    assert!(s.throughput_rps > 0.0 && s.duration_s > 0.0);
    let l = &s.latency_ms;
    assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999);
    assert!(l.p999 <= l.max);
    assert_eq!(s.model, "closed");
    assert_eq!(s.concurrency, Some(8));
    // Every request reached the gateway's full path: one access record each.
    assert_eq!(audit_records(&gw) - before, 300);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_sends_at_the_set_rate_whatever_the_answers() {
    let gw = Gateway::start().await;
    let identity = gw.pki.identity(&gw.pki.agency(LAND_OFFICE));
    let w = workload(gw.dir.path(), "GetCitizen", Distribution::Uniform);
    let s = load::run(
        plan(
            &gw.addr,
            Model::Open {
                rate: 200.0,
                max_in_flight: 100,
            },
            Stop::After(Duration::from_secs(1)),
        ),
        identity,
        w,
    )
    .await
    .unwrap();
    // Requests are due every 5 ms over one second: the count follows from
    // the schedule, not from how fast answers came.
    assert!((199..=201).contains(&s.requests), "{}", s.requests);
    assert_eq!(s.status_counts["OK"], s.requests);
    assert_eq!(s.model, "open");
    assert_eq!(s.rate_rps, Some(200.0));
    // The generator says how well it kept its schedule: at 200 req/s it
    // sends every request within (a fraction of) its interval.
    let sent = s.sent_rps.expect("sent_rps in the open model");
    assert!(sent > 100.0 && sent <= 200.5, "sent {sent} req/s");
    let lag = s
        .send_lag_ms
        .as_ref()
        .expect("send_lag_ms in the open model");
    assert!(lag.p50 < 1000.0 && lag.p50 <= lag.max, "{lag:?}");
    assert!(s.behind_schedule.is_some());
    assert!(s.latency_ms.min > 0.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connection_per_request_makes_a_full_handshake_each_time() {
    let gw = Gateway::start().await;
    let identity = gw.pki.identity(&gw.pki.agency(LAND_OFFICE));
    let w = workload(gw.dir.path(), "GetParcel", Distribution::Uniform);
    let mut p = plan(
        &gw.addr,
        Model::Closed { concurrency: 2 },
        Stop::Requests(20),
    );
    p.new_connection_per_request = true;
    let s = load::run(p, identity, w).await.unwrap();
    assert_eq!(s.requests, 20);
    assert_eq!(s.status_counts["OK"], 20);
    assert!(s.new_connection_per_request);
    assert_eq!(s.connections, 0);
    gw.stop().await;
}

/// A served gateway, an agency certificate on disk and the fixture extract.
struct Served {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    server: ServeProcess,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ca: std::path::PathBuf,
}

fn serve() -> Served {
    let (dir, pki, config) = prepared_dir();
    let root = dir.path().to_owned();
    let issued = pki.agency(LAND_OFFICE);
    let cert = root.join("agency.pem");
    let key = root.join("agency.key");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let server = ServeProcess::start(&config, None);
    Served {
        ca: pki.dir.join("ca.pem"),
        _dir: dir,
        root,
        server,
        cert,
        key,
    }
}

/// `load` against `addr` with the given certificate, the test CA and the
/// fixture extract.
fn load_to(s: &Served, addr: &str, cert: &Path, key: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(["load", "--addr", addr, "--ca"])
        .arg(&s.ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--extract")
        .arg(&s.root);
    c
}

fn gateway_addr(s: &Served) -> &str {
    s.server.addr.trim_start_matches("https://")
}

/// `load` against the served gateway as the land office, with its context.
fn load_cmd(s: &Served) -> Command {
    let mut c = load_to(s, gateway_addr(s), &s.cert, &s.key);
    c.args(["--procedure", PROCEDURE_LAND, "--dossier", DOSSIER])
        .args(["--warmup", "0s", "--quiet"]);
    c
}

#[test]
fn the_binary_prints_json_and_draws_runs_side_by_side() {
    let s = serve();
    let first = s.root.join("first.json");
    let out = load_cmd(&s)
        .args(["--method", "GetCitizen", "--requests", "100"])
        .args(["--concurrency", "4", "--output", "json", "--label", "first"])
        .args(["--read-mask", "fullName,permanentAddress.provinceCode"])
        .output()
        .unwrap();
    assert_success(&out);
    std::fs::write(&first, &out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["requests"], 100);
    assert_eq!(json["status_counts"]["OK"], 100);
    for key in ["duration_s", "throughput_rps"] {
        assert!(json[key].as_f64().unwrap() > 0.0, "{key}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_ms"][key].as_f64().unwrap() > 0.0, "{key}");
    }

    let chart = s.root.join("runs.svg");
    let out = load_cmd(&s)
        .args([
            "--method",
            "GetCitizen",
            "--rate",
            "100",
            "--duration",
            "1s",
        ])
        .args(["--label", "second", "--plot"])
        .arg(&chart)
        .arg("--plot-goodput")
        .arg(s.root.join("goodput.svg"))
        .arg("--plot-with")
        .arg(&first)
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("open model, 100 req/s"), "{text}");
    assert!(text.contains("throughput"), "{text}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    // Each legend entry gives the run's load shape and sample count.
    assert!(
        svg.contains("first (concurrency 4, 1 connection, n=100; p50"),
        "{svg}"
    );
    assert!(svg.contains("second (100 req/s offered, "), "{svg}");
    // Goodput and refusals by offered load: a point per run in each series.
    let goodput = std::fs::read_to_string(s.root.join("goodput.svg")).unwrap();
    assert_eq!(goodput.matches("<circle").count(), 4, "{goodput}");
    assert_eq!(s.server.terminate().code(), Some(0));
}

#[test]
fn bad_arguments_and_refused_certificates_are_clear_errors() {
    let s = serve();
    let run = |args: &[&str]| {
        let out = load_cmd(&s).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--method", "GetCitizens", "--requests", "1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown method \"GetCitizens\""), "{err}");
    let (code, err) = run(&["--mix", "GetCitizen=0", "--requests", "1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("weight"), "{err}");
    let (code, err) = run(&["--rate", "-5", "--requests", "1"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--duration", "ten", "--method", "GetCitizen"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--duration"), "{err}");
    let (code, err) = run(&[
        "--enterprises",
        "/nonexistent/enterprises.jsonl",
        "--method",
        "GetEnterprise",
        "--requests",
        "1",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/enterprises.jsonl"), "{err}");

    // A dossier the gateway would refuse on every call is refused up front.
    let out = load_to(&s, "127.0.0.1:1", &s.cert, &s.key)
        .args(["--procedure", PROCEDURE_LAND, "--dossier", "dossier-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dossier"));

    // Nothing listening: exit 1 naming the address.
    let out = load_to(&s, "127.0.0.1:1", &s.cert, &s.key)
        .args(["--procedure", PROCEDURE_LAND, "--dossier", DOSSIER])
        .args(["--requests", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:1"), "{err}");

    // A certificate from a CA the gateway does not trust: every call fails,
    // the summary says how, and the exit code says no request succeeded.
    let foreign = interop_gateway::pki::Ca::generate("foreign CA").unwrap();
    let issued = foreign
        .issue_agency(
            TRUST_DOMAIN,
            LAND_OFFICE,
            interop_gateway::pki::Validity::days_from_now(1),
        )
        .unwrap();
    std::fs::write(s.root.join("foreign.pem"), &issued.cert_pem).unwrap();
    std::fs::write(s.root.join("foreign.key"), &issued.key_pem).unwrap();
    let out = load_to(
        &s,
        gateway_addr(&s),
        &s.root.join("foreign.pem"),
        &s.root.join("foreign.key"),
    )
    .args(["--procedure", PROCEDURE_LAND, "--dossier", DOSSIER])
    .args(["--requests", "5", "--warmup", "0s", "--quiet"])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("no request succeeded") || err.contains("cannot connect"),
        "{err}\n{text}"
    );
    assert_eq!(s.server.terminate().code(), Some(0));
}

#[test]
fn ctrl_c_stops_a_long_run_with_the_summary_so_far() {
    use std::process::Stdio;
    let s = serve();
    let child = load_cmd(&s)
        .args([
            "--method",
            "GetCitizen",
            "--duration",
            "10m",
            "--concurrency",
            "2",
        ])
        .args(["--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the gateway has logged a call of this run, load is sending, so
    // its signal handlers (set up before the first request) are in place.
    while !s.server.log_text().contains("interop_gateway::access") {
        std::thread::sleep(Duration::from_millis(10));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["interrupted"], true);
    assert!(json["requests"].as_u64().unwrap() > 0);
    assert_eq!(json["status_counts"]["OK"], json["requests"]);
    assert_eq!(s.server.terminate().code(), Some(0));
}

#[test]
fn summaries_read_back_for_charts() {
    // `--plot-with` reads what `--output json` wrote: the format round-trips.
    let text = r#"{"label":"x","target":"t","model":"closed","concurrency":1,"connections":1,
        "new_connection_per_request":false,"mix":"GetCitizen=1","distribution":"uniform",
        "requests":1,"errors":0,"duration_s":1.0,"throughput_rps":1.0,
        "latency_ms":{"min":1.0,"mean":1.0,"p50":1.0,"p90":1.0,"p99":1.0,"p999":1.0,"max":1.0},
        "status_counts":{"OK":1},"percentiles":[{"percentile":0.0,"latency_ms":1.0}]}"#;
    let s: Summary = serde_json::from_str(text).unwrap();
    assert_eq!(
        serde_json::from_str::<Summary>(&serde_json::to_string(&s).unwrap()).unwrap(),
        s
    );
}

/// An agency limited to 50 calls/s (burst 5), for the refusal counts.
const LIMITED: &str = "000.00.21.H13";

fn limited_gateway_config() -> String {
    format!(
        r#"
[[agency]]
code = "{LIMITED}"
name = "Limited"
rate_per_second = 50
burst = 5

[[grant]]
agency = "{LIMITED}"
method = "interop.citizen.v1.CitizenRegistryService/GetCitizen"
procedures = ["{PROCEDURE_LAND}"]
fields = ["personal_id", "full_name"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_apart_and_retry_info_can_be_honoured() {
    let gw = Gateway::start_with(Options {
        extra_config: limited_gateway_config(),
        ..Options::default()
    })
    .await;
    let identity = gw.pki.identity(&gw.pki.agency(LIMITED));
    let w = || workload(gw.dir.path(), "GetCitizen", Distribution::Uniform);
    // Far over the agency's rate: most calls are refused, and counted so.
    let s = load::run(
        plan(
            &gw.addr,
            Model::Closed { concurrency: 4 },
            Stop::Requests(200),
        ),
        identity.clone(),
        w(),
    )
    .await
    .unwrap();
    assert!(s.resource_exhausted > 50, "{:?}", s.status_counts);
    assert_eq!(s.unavailable, 0, "{:?}", s.status_counts);
    assert_eq!(
        s.resource_exhausted + s.status_counts["OK"],
        200,
        "{:?}",
        s.status_counts
    );
    assert!(s.goodput_rps > 0.0 && s.goodput_rps < s.throughput_rps);
    assert!(s.refused_latency_ms.max > 0.0 && s.ok_latency_ms.max > 0.0);
    assert_eq!(s.retries, 0);
    // Honouring RetryInfo, the same load is all answered, only later.
    let mut p = plan(
        &gw.addr,
        Model::Closed { concurrency: 4 },
        Stop::Requests(60),
    );
    p.respect_retry_info = true;
    let s = load::run(p, identity.clone(), w()).await.unwrap();
    assert_eq!(
        s.status_counts.get("OK"),
        Some(&60),
        "{:?}",
        s.status_counts
    );
    assert_eq!(s.resource_exhausted, 0);
    assert!(s.retries > 0);
    assert!(s.to_text().contains("retries"));
    // The open model resends the same way, and a cap on requests in flight
    // below its number of dispatchers still holds: exactly the count asked.
    let mut p = plan(
        &gw.addr,
        Model::Open {
            rate: 400.0,
            max_in_flight: 1,
        },
        Stop::Requests(60),
    );
    p.respect_retry_info = true;
    let s = load::run(p, identity, w()).await.unwrap();
    assert_eq!(s.requests, 60, "{:?}", s.status_counts);
    assert_eq!(
        s.status_counts.get("OK"),
        Some(&60),
        "{:?}",
        s.status_counts
    );
    assert!(s.retries > 0);
    // One in flight at a time behind a 50/s limit: the sends fell behind
    // the 400/s asked, and the summary says so.
    assert!(s.sent_rps.is_some_and(|r| r < 400.0), "{:?}", s.sent_rps);
    assert_eq!(s.behind_schedule, Some(true));
    assert!(s
        .behind_warning()
        .is_some_and(|w| w.contains("of the 400 req/s asked")));
    gw.stop().await;
}
