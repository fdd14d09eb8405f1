//! Hostile clients: connections that never handshake, never speak HTTP/2,
//! name no agency, or pile up beyond an agency's share. Each is closed by the
//! gateway's connection limits while a well-behaved agency keeps getting
//! answers. Limits are set low through `[limits]` so the suite stays fast.

mod support;

use std::time::Duration;

use interop_gateway::pki::Validity;
use support::{raw::*, *};
use tokio::{io::AsyncReadExt, net::TcpStream};

/// Upper bound for the gateway to close a connection it must close; the
/// limits under test are far shorter, so passing never depends on it.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

async fn gateway(limits: &str) -> Gateway {
    Gateway::start_with(Options {
        extra_config: format!("\n[limits]\n{limits}\n"),
        ..Options::default()
    })
    .await
}

async fn answers(gw: &Gateway, client: &mut interop_gateway::client::Client) {
    let reply = client.citizen.get_citizen(citizen_request()).await;
    assert!(reply.is_ok(), "{reply:?} ({})", gw.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_are_closed_and_an_agency_keeps_its_answers() {
    let gw =
        gateway("max_connections = 12\nmax_handshakes_per_address = 4\nhandshake_timeout_ms = 300")
            .await;
    let mut land = gw.client(LAND_OFFICE).await;
    answers(&gw, &mut land).await;
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(TcpStream::connect(("127.0.0.1", port(&gw))).await.unwrap());
    }
    answers(&gw, &mut land).await;
    // Beyond the handshakes allowed from one address, closed at once; the
    // rest when the handshake deadline passes.
    for conn in &mut idle {
        assert!(closed_within(conn, CLOSE_WITHIN).await);
    }
    answers(&gw, &mut land).await;
    // Their slots are free again: a new connection is served.
    let mut fresh = gw.client(LAND_OFFICE).await;
    answers(&gw, &mut fresh).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_naming_no_agency_is_closed_right_after_the_handshake() {
    // A preface deadline far away: closing is the admission's doing.
    let gw = gateway("preface_timeout_ms = 600000\nidle_timeout_ms = 600000").await;
    let mut land = gw.client(LAND_OFFICE).await;
    let unknown = gw.pki.agency("000.00.99.H99");
    let no_uri = gw
        .pki
        .ca
        .issue_client("no agency", None, Validity::days_from_now(1))
        .unwrap();
    let mut idle = Vec::new();
    for issued in [&unknown, &no_uri].into_iter().cycle().take(20) {
        idle.push(tls_connect(&gw, issued).await);
    }
    for conn in &mut idle {
        assert!(closed_within(conn, CLOSE_WITHIN).await);
    }
    answers(&gw, &mut land).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_holds_no_more_connections_than_its_share() {
    let gw = Gateway::start_with(Options {
        extra_config: "\n[limits]\nmax_connections_per_agency = 2\npreface_timeout_ms = 600000\n\n[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    let mut land = gw.client(LAND_OFFICE).await;
    let business = gw.pki.agency(BUSINESS_OFFICE);
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let mut conn = tls_connect(&gw, &business).await;
        reads.spawn(async move { closed_within(&mut conn, Duration::MAX / 4).await });
    }
    // Four of six are closed at once; two are held open, idle.
    for _ in 0..4 {
        let closed = tokio::time::timeout(CLOSE_WITHIN, reads.join_next())
            .await
            .expect("connections beyond the agency's share are closed");
        assert!(closed.unwrap().unwrap());
    }
    assert_eq!(reads.len(), 2);
    let text = scrape(gw.admin.as_deref().expect("[admin] is configured")).await;
    assert_eq!(
        metric(
            &text,
            "interop_gateway_connections_closed_total",
            &[("reason", "AGENCY_CONNECTIONS")]
        ),
        Some(4.0),
        "{text}"
    );
    // The agency's share is used up, other agencies are not affected.
    answers(&gw, &mut land).await;
    // (Business has no grant for GetCitizen: served, it would be
    // PERMISSION_DENIED; turned away at the door, it is a transport error.)
    let third =
        interop_gateway::client::Client::connect(&gw.addr, &gw.pki.identity(&business)).await;
    if let Ok(mut c) = third {
        let status = c.citizen.get_citizen(citizen_request()).await.unwrap_err();
        assert_ne!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    // Once the idle ones go, the agency connects again.
    reads.shutdown().await;
    let mut served = false;
    for _ in 0..100 {
        let mut c = gw.client(BUSINESS_OFFICE).await;
        if c.citizen
            .get_citizen(citizen_request())
            .await
            .is_err_and(|s| s.code() == tonic::Code::PermissionDenied)
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the agency's connections were not given back");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_preface_or_without_calls_are_closed() {
    let gw = Gateway::start_with(Options {
        extra_config: "\n[limits]\npreface_timeout_ms = 200\nidle_timeout_ms = 300\n\n[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    })
    .await;
    let land = gw.pki.agency(LAND_OFFICE);
    // The handshake done, then silence.
    let mut silent = tls_connect(&gw, &land).await;
    assert!(closed_within(&mut silent, CLOSE_WITHIN).await);
    // HTTP/2 set up (preface, settings), then no call: the idle timeout ends
    // it, keepalive pings notwithstanding.
    let tls = tls_connect(&gw, &land).await;
    let (_send, connection) = h2::client::handshake(tls).await.unwrap();
    let ended = tokio::time::timeout(CLOSE_WITHIN, connection).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection was kept open");
    // A client that goes quiet between calls reconnects and is answered.
    let mut c = gw.client(LAND_OFFICE).await;
    answers(&gw, &mut c).await;
    answers(&gw, &mut c).await;
    // Each close is counted once, under its reason.
    let text = scrape(gw.admin.as_deref().expect("[admin] is configured")).await;
    let closed = |reason| {
        metric(
            &text,
            "interop_gateway_connections_closed_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(closed("NO_PREFACE"), Some(1.0), "{text}");
    assert!(closed("IDLE").is_some_and(|n| n >= 1.0), "{text}");
    gw.stop().await;
}

/// With a low open-file limit, connections are capped below it (keeping a
/// reserve for the store and the access log) rather than running accept
/// into "Too many open files": a flood is turned away at the door, calls
/// that do get in are answered, and the gateway serves again afterwards.
#[test]
fn a_low_file_limit_caps_connections_and_keeps_a_reserve() {
    let (dir, pki, config) = prepared_dir();
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[limits]\nmax_handshakes_per_address = 1000\nhandshake_timeout_ms = 600000\n";
    std::fs::write(&config, text).unwrap();
    // 160 descriptors, 64 kept in reserve: at most 96 connections.
    let serve = ServeProcess::start(&config, Some("ulimit -n 160;"));
    assert!(
        serve.log_text().contains("capping connections"),
        "{}",
        serve.log_text()
    );
    let addr = serve.addr.trim_start_matches("https://").to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let identity = pki.identity(&pki.agency(LAND_OFFICE));
        let mut land = interop_gateway::client::Client::connect(&serve.addr, &identity)
            .await
            .unwrap();
        land.citizen.get_citizen(citizen_request()).await.unwrap();
        let mut flood = Vec::new();
        for _ in 0..200 {
            flood.push(TcpStream::connect(&addr).await.unwrap());
        }
        // The connection already in is still answered, and the access
        // log (which needs descriptors to checkpoint) still takes records.
        for _ in 0..5 {
            land.citizen.get_citizen(citizen_request()).await.unwrap();
        }
        // Past the cap, connections were closed at once (the rest wait on
        // their handshake deadline, ten minutes away).
        let mut reads = tokio::task::JoinSet::new();
        for mut conn in flood {
            reads.spawn(async move { closed_within(&mut conn, Duration::from_secs(1)).await });
        }
        let closed = reads.join_all().await.into_iter().filter(|c| *c).count();
        assert!((100..200).contains(&closed), "{closed} of 200 turned away");
    });
    let (status, log) = serve.terminate_with_log();
    assert!(status.success(), "{log}");
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    drop(dir);
}

/// A peer that speaks HTTP/2 but never answers the gateway's keepalive
/// PINGs (a vanished host, a stuck proxy) is closed once the PING goes
/// unanswered, even though the idle timeout is far away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_answer_keepalive_pings_is_closed() {
    use tokio::io::AsyncWriteExt;
    let gw = gateway(
        "idle_timeout_ms = 600000\nkeepalive_interval_ms = 200\nkeepalive_timeout_ms = 200",
    )
    .await;
    let mut conn = tls_connect(&gw, &gw.pki.agency(LAND_OFFICE)).await;
    // The client preface and an empty SETTINGS frame; nothing after.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut seen_ping = false;
    let mut buf = Vec::new();
    let ended = tokio::time::timeout(CLOSE_WITHIN, async {
        let mut chunk = [0u8; 4096];
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            // Frames: 3-byte length, type, flags, 4-byte stream id, payload.
            while buf.len() >= 9 {
                let len =
                    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                // PING without the ACK flag: the gateway asking.
                if buf[3] == 0x6 && buf[4] & 0x1 == 0 {
                    seen_ping = true;
                }
                buf.drain(..9 + len);
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a peer ignoring PINGs was kept open");
    assert!(seen_ping, "the gateway sent no keepalive PING");
    gw.stop().await;
}

/// A call whose headers exceed `max_header_list_bytes` is refused; the
/// connection and ordinary calls on it carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let gw = gateway("max_header_list_bytes = 4096").await;
    let mut land = gw.client(LAND_OFFICE).await;
    let mut big = tonic::Request::new(citizen_request());
    big.metadata_mut()
        .insert("x-padding", "a".repeat(8192).parse().unwrap());
    let refused = land.citizen.get_citizen(big).await;
    assert!(refused.is_err(), "{refused:?}");
    answers(&gw, &mut land).await;
    gw.stop().await;
}
