//! Hostile clients in numbers: thousands of sockets that never start TLS or
//! stop halfway through the handshake, connection churn, streams opened and
//! reset by the thousand, and an agency flooding at 20 times its rate. While
//! each attack runs, a well-behaved agency keeps calling and must keep
//! getting correct answers within its normal latency (its median compared
//! with a quiet run in the same test, generously); memory stays bounded,
//! nothing panics and the access log verifies afterwards.
//!
//! Sizes follow the issue; `HOSTILE_SCALE` (default 1) multiplies them for
//! longer runs by hand.

mod support;

use std::{net::Ipv4Addr, time::Duration};

use interop_gateway::{
    client::Client,
    load::{
        self,
        workload::{Distribution, ExtractFiles, Keys, Mix, Workload},
        Model, Plan, Stop,
    },
};
use support::{raw::*, *};
use tokio::io::AsyncWriteExt;

/// Calls of the well-behaved agency per measurement.
const PROBE_CALLS: usize = 40;

/// Limited to `FLOOD_RATE` calls/s.
const FLOODER: &str = "000.00.21.H13";
const FLOOD_RATE: u32 = 25;

fn scale() -> usize {
    std::env::var("HOSTILE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

async fn gateway(limits: &str) -> Gateway {
    count_panics();
    Gateway::start_with(Options {
        extra_config: format!(
            r#"
[limits]
{limits}

[[agency]]
code = "{FLOODER}"
name = "Flooder"
rate_per_second = {FLOOD_RATE}

[[grant]]
agency = "{FLOODER}"
method = "interop.citizen.v1.CitizenRegistryService/GetCitizen"
procedures = ["{PROCEDURE_LAND}"]
fields = ["personal_id", "full_name"]
"#
        ),
        ..Options::default()
    })
    .await
}

/// The well-behaved agency's latencies over `PROBE_CALLS` calls, each
/// answered with the right record.
async fn probe(client: &Client) -> Vec<Duration> {
    timed(PROBE_CALLS, || {
        let mut c = client.clone();
        async move {
            let got = c.citizen.get_citizen(citizen_request()).await?.into_inner();
            assert_eq!(
                got.citizen.map(|c| c.personal_id).as_deref(),
                Some(CITIZEN_ID)
            );
            Ok(())
        }
    })
    .await
}

/// Stops the gateway; its access log must verify, and nothing panicked.
async fn stop_and_check(gw: Gateway) {
    let dir = gw.stop_and_keep().await;
    interop_gateway::audit::verify_file(&dir.path().join("data/audit"), None)
        .expect("the access log verifies after the attack");
    assert_eq!(panics(), 0, "a panic happened during the attack");
}

fn assert_normal(quiet: &[Duration], loud: &[Duration], attack: &str) {
    let (q, l) = (median(quiet), median(loud));
    eprintln!("{attack}: median {q:?} quiet, {l:?} under attack");
    assert!(
        within_normal(q, l),
        "{attack}: the agency's median went from {q:?} to {l:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sockets_idle_or_halfway_through_the_handshake_deny_no_one() {
    let idle = 3000 * scale();
    let halfway = 1000 * scale();
    // Both ends of every socket are in this process, plus a margin.
    let want = 2 * (idle + halfway) as u64 + 1024;
    let limit = raise_open_file_limit(want);
    assert!(
        limit >= want,
        "open-file limit {limit}, {want} needed (raise `ulimit -n`)"
    );
    let gw = gateway(&format!(
        "max_connections = {}\nhandshake_timeout_ms = 4000",
        idle + halfway + 256
    ))
    .await;
    let land = gw.client(LAND_OFFICE).await;
    let quiet = probe(&land).await;
    let rss_before = rss_kib();

    // 30 sockets from each of many addresses: under the per-address
    // handshake cap, so each holds a connection slot and a handshake task.
    let address = |block: u8, i: usize| {
        Ipv4Addr::new(127, block, (i / 30 / 250) as u8, (i / 30 % 250) as u8 + 1)
    };
    let mut sockets = Vec::with_capacity(idle + halfway);
    for i in 0..idle {
        sockets.push(tcp_from(&gw, address(1, i)).await.unwrap());
    }
    let hello = client_hello(&gw);
    for i in 0..halfway {
        let mut s = tcp_from(&gw, address(2, i)).await.unwrap();
        s.write_all(&hello).await.unwrap();
        sockets.push(s);
    }
    // While they sit there, a new connection of the agency is served.
    let fresh = gw.client(LAND_OFFICE).await;
    let loud = probe(&fresh).await;
    let grown_mib = rss_kib().saturating_sub(rss_before) / 1024;
    eprintln!(
        "{} sockets held: memory grew {grown_mib} MiB",
        sockets.len()
    );
    assert!(
        grown_mib < 400,
        "memory grew {grown_mib} MiB for {} sockets",
        sockets.len()
    );
    assert_normal(&quiet, &loud, "idle and half-handshaken sockets");
    // Every one of them is closed at the handshake deadline.
    for s in &mut sockets {
        assert!(closed_within(s, Duration::from_secs(30)).await);
    }
    drop(sockets);
    probe(&land).await;
    stop_and_check(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_churn_from_one_source_denies_no_one() {
    let gw = gateway("").await;
    let land = gw.client(LAND_OFFICE).await;
    let quiet = probe(&land).await;
    let issued = gw.pki.agency(BUSINESS_OFFICE);
    let config = tls_config(&gw, Some(&issued));
    let churn = {
        let gw_port = port(&gw);
        tokio::spawn(async move {
            let connector = tokio_rustls::TlsConnector::from(config);
            let mut done = 0;
            let started = std::time::Instant::now();
            // Full handshakes, dropped at once, from one address.
            while started.elapsed() < Duration::from_secs(3) {
                let from = Ipv4Addr::new(127, 3, 0, 1);
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind((from, 0).into()).unwrap();
                let Ok(tcp) = socket.connect((Ipv4Addr::LOCALHOST, gw_port).into()).await else {
                    continue;
                };
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let _ = connector.connect(name, tcp).await;
                done += 1;
            }
            done
        })
    };
    let loud = probe(&land).await;
    let churned = churn.await.unwrap();
    assert!(churned > 10, "only {churned} connections churned");
    assert_normal(&quiet, &loud, &format!("{churned} connections churned"));
    stop_and_check(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_streams_reset_on_one_connection_deny_no_one() {
    let gw = gateway("").await;
    let land = gw.client(LAND_OFFICE).await;
    let quiet = probe(&land).await;
    let attacker = tls_connect(&gw, &gw.pki.agency(BUSINESS_OFFICE)).await;
    let (h2, connection) = h2::client::handshake(attacker).await.unwrap();
    let conn = tokio::spawn(connection);
    let streams = 5000 * scale();
    let attack = tokio::spawn(async move {
        let mut h2 = h2;
        let mut opened = 0;
        for _ in 0..streams {
            let Ok(ready) = h2.ready().await else { break };
            h2 = ready;
            let req = http::Request::post(
                "https://localhost/interop.citizen.v1.CitizenRegistryService/GetCitizen",
            )
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
            let Ok((response, mut send)) = h2.send_request(req, false) else {
                break;
            };
            // Opened, then reset at once (RST_STREAM CANCEL).
            send.send_reset(h2::Reason::CANCEL);
            drop(response);
            opened += 1;
        }
        opened
    });
    let loud = probe(&land).await;
    let opened = attack.await.unwrap();
    // Either every stream was opened and reset, or the gateway closed the
    // connection first (too many resets pending); it is closed either way
    // once the attacker goes, and no one else noticed.
    eprintln!("{opened} streams opened and reset");
    assert!(opened > 0);
    assert_normal(&quiet, &loud, "rapid reset");
    conn.abort();
    probe(&land).await;
    stop_and_check(gw).await;
}

fn flood_workload(dir: &std::path::Path) -> Workload {
    let mix = Mix::parse("GetCitizen").unwrap();
    let keys = Keys::load(&ExtractFiles::in_dir(dir), &mix).unwrap();
    Workload::new(
        mix,
        keys,
        Distribution::Uniform,
        context(PROCEDURE_LAND).unwrap(),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_flooding_at_twenty_times_its_rate_leaves_others_unaffected() {
    let gw = gateway("").await;
    let land = gw.client(LAND_OFFICE).await;
    let quiet = probe(&land).await;
    let plan = Plan {
        target: gw.addr.clone(),
        label: "flood".into(),
        model: Model::Open {
            rate: f64::from(20 * FLOOD_RATE),
            max_in_flight: 10_000,
        },
        stop: Stop::After(Duration::from_secs(2 * scale() as u64)),
        warmup: Duration::ZERO,
        connections: 2,
        new_connection_per_request: false,
        timeout: Duration::from_secs(10),
        seed: 1,
        progress: false,
        respect_retry_info: false,
    };
    let flood = tokio::spawn(load::run(
        plan,
        gw.pki.identity(&gw.pki.agency(FLOODER)),
        flood_workload(gw.dir.path()),
    ));
    let loud = probe(&land).await;
    let s = flood.await.unwrap().unwrap();
    eprintln!("{}", s.to_text());
    // The flooder got about its rate (plus its initial burst) and was told
    // to slow down for the rest (on a starved machine, some of it shed as
    // OVERLOADED by the gateway as a whole).
    let ok = s.status_counts.get("OK").copied().unwrap_or(0);
    let refused = s.resource_exhausted + s.unavailable;
    let allowed = (f64::from(FLOOD_RATE) * s.duration_s) as u64 + u64::from(FLOOD_RATE);
    assert!(ok <= allowed + 5, "{ok} answered, {allowed} allowed");
    assert_eq!(refused + ok, s.requests, "{:?}", s.status_counts);
    assert!(
        s.resource_exhausted > s.requests / 2,
        "{:?}",
        s.status_counts
    );
    assert_normal(&quiet, &loud, "an agency flooding at 20x its rate");
    stop_and_check(gw).await;
}

/// An HTTP/2 frame: 3-byte length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Streams the client makes the gateway itself reset (MadeYouReset,
/// CVE-2025-8671: here a WINDOW_UPDATE overflowing each new stream's send
/// window, a stream error) get the connection closed with GOAWAY ENHANCE_YOUR_CALM, while
/// the agency is answered throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_client_makes_the_gateway_reset_close_its_connection() {
    use tokio::io::AsyncReadExt;
    let gw = gateway("").await;
    let land = gw.client(LAND_OFFICE).await;
    let quiet = probe(&land).await;
    let mut conn = tls_connect(&gw, &gw.pki.agency(BUSINESS_OFFICE)).await;
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap();
    let (mut read, mut write) = tokio::io::split(conn);
    let writer = tokio::spawn(async move {
        // HEADERS (END_HEADERS) of a POST to /, from HPACK's static table,
        // then a WINDOW_UPDATE of 2^31 - 1 on the same stream, past the
        // largest window allowed; 2,000 streams at most.
        for i in 0..2000u32 {
            let stream = 1 + 2 * i;
            let mut batch = h2_frame(0x1, 0x4, stream, &[0x83, 0x87, 0x84]);
            batch.extend(h2_frame(0x8, 0, stream, &[0x7f, 0xff, 0xff, 0xff]));
            if write.write_all(&batch).await.is_err() {
                return i;
            }
        }
        2000
    });
    // Read frames until GOAWAY, noting its error code.
    let goaway = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let n = match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 9 {
                let len =
                    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                // GOAWAY: last stream id, then the error code.
                if buf[3] == 0x7 && len >= 8 {
                    return Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
                }
                buf.drain(..9 + len);
            }
        }
    })
    .await
    .expect("the connection was neither closed nor sent a GOAWAY");
    let loud = probe(&land).await;
    let sent = writer.await.unwrap();
    eprintln!("{sent} streams sent before the gateway stopped reading");
    assert_eq!(goaway, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM expected");
    assert_normal(&quiet, &loud, "provoked resets");
    stop_and_check(gw).await;
}
