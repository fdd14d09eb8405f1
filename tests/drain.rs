//! Graceful drain: on the stop signal (SIGTERM in `serve`) health turns
//! NOT_SERVING at once, the listener closes, calls in flight finish and are
//! recorded, calls arriving meanwhile are refused with UNAVAILABLE, and the
//! access log is sealed.

mod support;

use interop_gateway::{audit, client::Client, proto::citizen::v1::GetCitizenRequest};
use prost::Message;
use support::*;
use tonic::{codegen::Bytes, Code};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

fn request() -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    }
}

/// A gRPC GetCitizen request head, for a raw HTTP/2 stream.
fn head() -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri("https://localhost/interop.citizen.v1.CitizenRegistryService/GetCitizen")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// The request as one length-prefixed gRPC message.
fn body() -> Bytes {
    let message = request().encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

/// Reads a raw response to its trailers; returns its `grpc-status`.
async fn grpc_status(response: h2::client::ResponseFuture) -> String {
    let response = response.await.unwrap();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    trailers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// A channel of the land office and a health watch on it, which has
/// already said SERVING.
async fn watch_health(
    gw: &Gateway,
) -> (
    tonic::transport::Channel,
    tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) {
    let land = gw.pki.agency(LAND_OFFICE);
    let channel = interop_gateway::client::endpoint(&gw.addr, &gw.pki.identity(&land))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone())
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = health.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    (channel, health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_calls_in_flight_and_refuses_new_ones() {
    let gw = Gateway::start().await;
    let land = gw.pki.agency(LAND_OFFICE);
    // A probe following health, and an agency's channel, both open before.
    let (channel, mut health) = watch_health(&gw).await;
    let mut open = Client::from_channel(channel);
    open.citizen.get_citizen(request()).await.unwrap();

    // Three calls in flight: their heads sent, their bodies not yet.
    let (send, connection) = h2::client::handshake(tls_connect(&gw, &land).await)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(send.send_request(head(), false).unwrap());
        send = send.ready().await.unwrap();
    }
    // A whole call after them on the same connection: once it is
    // answered, the server has taken the three before it.
    let (answered, mut stream) = send.send_request(head(), false).unwrap();
    stream.send_data(body(), true).unwrap();
    assert_eq!(grpc_status(answered).await, "0");

    let stop = gw.shutdown_handle();
    stop.send(true).unwrap();

    // Health says NOT_SERVING at once.
    let next = health.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(health);
    // A new call on a connection opened before the drain is not served:
    // refused with UNAVAILABLE when it reaches the gateway, never sent when
    // the client has already acted on the GOAWAY, or sent as the GOAWAY
    // crossed it (above its last stream id: tonic says INTERNAL, h2 names
    // the GOAWAY). The access log below shows that nothing was served.
    let refused = open.citizen.get_citizen(request()).await.unwrap_err();
    let text = format!("{refused:?}");
    match refused.code() {
        Code::Unavailable => {}
        Code::Cancelled => assert!(text.contains("connection closed"), "{refused:?}"),
        Code::Internal => assert!(
            text.contains("GoAway") && text.contains("NO_ERROR") && text.contains("Remote"),
            "{refused:?}"
        ),
        _ => panic!("{refused:?}"),
    }
    // The listener is closed: no new connection.
    assert!(Client::connect(&gw.addr, &gw.pki.identity(&land))
        .await
        .is_err());

    // The calls in flight finish, answered.
    for (response, mut stream) in held {
        stream.send_data(body(), true).unwrap();
        assert_eq!(grpc_status(response).await, "0");
    }
    drop(send);
    drop(open);
    let dir = gw.config.audit.dir.clone();
    let tempdir_guard = gw.wait_stopped().await;
    // Every answered call is in the log, and the log is sealed.
    let report = audit::verify_file(&dir, None).unwrap();
    assert_eq!(report.records, 5, "1 + 1 + 3 answered calls");
    assert_eq!(report.unsealed_tail, 0, "sealed with a checkpoint");
    drop(tempdir_guard);
}

#[test]
fn sigterm_drains_and_exits_zero_with_a_sealed_log() {
    let (dir, pki, config) = prepared_dir();
    let serve = ServeProcess::start(&config, None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = Client::connect(&serve.addr, &pki.identity(&pki.agency(LAND_OFFICE)))
            .await
            .unwrap();
        c.citizen.get_citizen(request()).await.unwrap();
    });
    let (status, log) = serve.terminate_with_log();
    assert!(status.success(), "{log}");
    assert!(log.contains("draining"), "{log}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_interop-gateway"))
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK, 1 records"), "{stdout}");
    assert!(!stdout.contains("not sealed"), "{stdout}");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_still_in_flight_at_the_drain_timeout_is_cut_off_and_the_log_sealed() {
    let gw = Gateway::start_with(Options {
        extra_config: "\n[limits]\ndrain_timeout_ms = 200\n".into(),
        ..Options::default()
    })
    .await;
    let land = gw.pki.agency(LAND_OFFICE);
    let (send, connection) = h2::client::handshake(tls_connect(&gw, &land).await)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    // One call whose body never comes, then one answered behind it.
    let (_stuck, _stream) = send.send_request(head(), false).unwrap();
    let mut send = send.ready().await.unwrap();
    let (answered, mut stream) = send.send_request(head(), false).unwrap();
    stream.send_data(body(), true).unwrap();
    assert_eq!(grpc_status(answered).await, "0");

    gw.shutdown_handle().send(true).unwrap();
    let dir = gw.config.audit.dir.clone();
    // Stops at the timeout although the stuck call never ends.
    let tempdir_guard = gw.wait_stopped().await;
    let report = audit::verify_file(&dir, None).unwrap();
    assert_eq!(report.records, 1);
    assert_eq!(report.unsealed_tail, 0, "sealed with a checkpoint");
    drop(tempdir_guard);
}

/// A probe following health does not hold the stop: its watch gets the
/// drain's NOT_SERVING, then ends with UNAVAILABLE, and the gateway stops
/// long before its (here ten-minute) drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_watch_ends_at_a_drain_instead_of_holding_it() {
    let gw = Gateway::start_with(Options {
        extra_config: "\n[limits]\ndrain_timeout_ms = 600000\n".into(),
        ..Options::default()
    })
    .await;
    let (channel, mut health) = watch_health(&gw).await;

    gw.shutdown_handle().send(true).unwrap();
    let next = health.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    let end = tokio::time::timeout(std::time::Duration::from_secs(60), health.message())
        .await
        .expect("the health watch did not end at the drain")
        .unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");

    // The probe keeps its channel; the gateway stops all the same.
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(60), gw.wait_stopped()).await;
    assert!(stopped.is_ok(), "the drain waited for the health watch");
    drop(channel);
}
