//! Per-agency limits (`rate_per_second`, `burst`, `max_in_flight`) and the
//! gateway-wide ones (`max_in_flight`, `max_request_bytes`, `max_call_ms`),
//! driven through the real gRPC interface over mTLS. Calls are held in
//! progress by forwarding them to an owner that never answers.

mod support;

use std::time::Duration;

use interop_gateway::proto::business::v1::GetEnterpriseRequest;
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

/// Limited to 0.5 calls/s with a burst of 2: a third call at once is over.
const FLOODER: &str = "000.00.21.H13";
/// At most one call in flight.
const ONE_AT_A_TIME: &str = "000.00.22.H13";
const BUSINESS: &str = "interop.business.v1.BusinessRegistryService";

fn agencies() -> String {
    format!(
        r#"
[[agency]]
code = "{FLOODER}"
name = "Flooder"
rate_per_second = 0.5
burst = 2

[[agency]]
code = "{ONE_AT_A_TIME}"
name = "One at a time"
max_in_flight = 1

[[grant]]
agency = "{FLOODER}"
method = "interop.citizen.v1.CitizenRegistryService/GetCitizen"
procedures = ["{PROCEDURE_LAND}"]
fields = ["personal_id", "full_name"]

[[grant]]
agency = "{ONE_AT_A_TIME}"
method = "interop.business.v1.BusinessRegistryService/GetEnterprise"
procedures = ["{PROCEDURE_BUSINESS}"]
fields = ["enterprise_code", "name"]
"#
    )
}

async fn gateway(limits: &str, extra: &str) -> Gateway {
    Gateway::start_with(Options {
        extra_config: format!("\n[limits]\n{limits}\n{}{extra}", agencies()),
        ..Options::default()
    })
    .await
}

fn enterprise() -> GetEnterpriseRequest {
    GetEnterpriseRequest {
        context: context(PROCEDURE_BUSINESS),
        enterprise_code: ENTERPRISE_CODE.into(),
        read_mask: None,
    }
}

fn retry_delay(status: &tonic::Status) -> Duration {
    let info = status.get_error_details();
    let delay = info
        .retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo: {status:?}"));
    delay
}

/// The access records of the stopped gateway's log, as exported.
fn records(gw_dir: &std::path::Path) -> Vec<serde_json::Value> {
    let dir = gw_dir.join("data/audit");
    interop_gateway::audit::verify_file(&dir, None).expect("the access log verifies");
    let mut out = Vec::new();
    interop_gateway::audit::export(&dir, None, None, None, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].take())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_over_its_rate_is_refused_with_retry_info_and_recorded() {
    let gw = gateway("", "").await;
    let mut flooder = gw.client(FLOODER).await;
    let mut land = gw.client(LAND_OFFICE).await;
    for _ in 0..2 {
        flooder
            .citizen
            .get_citizen(citizen_request())
            .await
            .unwrap();
    }
    let refused = flooder
        .citizen
        .get_citizen(citizen_request())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "RATE_LIMITED");
    let delay = retry_delay(&refused);
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    // The refusal was recorded: it carries a request id.
    assert!(refused.metadata().get("x-request-id").is_some());
    // Another agency is not limited by the flooder's share.
    for _ in 0..10 {
        land.citizen.get_citizen(citizen_request()).await.unwrap();
    }
    let dir = gw.stop_and_keep().await;
    let records = records(dir.path());
    let limited: Vec<_> = records
        .iter()
        .filter(|r| r["agency_code"] == FLOODER && r["outcome"] == "RESOURCE_EXHAUSTED")
        .collect();
    assert_eq!(limited.len(), 1, "{records:#?}");
    assert_eq!(limited[0]["reason"], "RATE_LIMITED");
    // A refused call never reaches the store: it discloses no field.
    assert_eq!(limited[0]["fields"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_past_its_max_in_flight_is_refused_while_others_are_served() {
    let owner = stalled::start().await;
    let gw = gateway("", &owner.registry(BUSINESS, BUSINESS_OFFICE)).await;
    let mut one = gw.client(ONE_AT_A_TIME).await;
    let held = {
        let mut one = one.clone();
        tokio::spawn(async move { one.business.get_enterprise(enterprise()).await })
    };
    owner.holding(1).await;
    let refused = one.business.get_enterprise(enterprise()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "TOO_MANY_IN_FLIGHT");
    assert!(retry_delay(&refused) > Duration::ZERO);
    // Other agencies are served meanwhile.
    let mut land = gw.client(LAND_OFFICE).await;
    land.citizen.get_citizen(citizen_request()).await.unwrap();
    held.abort();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_gateway_sheds_calls_at_once_and_serves_again_after() {
    let owner = stalled::start().await;
    // Two calls in flight at most; every call ends within 1.5 s.
    let gw = gateway(
        "max_in_flight = 2\nmax_call_ms = 1500",
        &owner.registry(BUSINESS, BUSINESS_OFFICE),
    )
    .await;
    let business = gw.client(BUSINESS_OFFICE).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut b = business.clone();
        held.push(tokio::spawn(async move {
            b.business.get_enterprise(enterprise()).await
        }));
    }
    owner.holding(2).await;
    let mut land = gw.client(LAND_OFFICE).await;
    let shed = land
        .citizen
        .get_citizen(citizen_request())
        .await
        .unwrap_err();
    assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");
    assert_eq!(reason(&shed), "OVERLOADED");
    assert!(retry_delay(&shed) > Duration::ZERO);
    // The held calls end at max_call_ms with DEADLINE_EXCEEDED...
    for h in held {
        let status = h.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(reason(&status), "DEADLINE_EXCEEDED");
    }
    // ...and their slots are free again.
    land.citizen.get_citizen(citizen_request()).await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_request_bytes_are_refused() {
    let gw = gateway("max_request_bytes = 1024", "").await;
    let mut land = gw.client(LAND_OFFICE).await;
    let mut big = citizen_request();
    big.personal_id = "9".repeat(4096);
    let refused = land.citizen.get_citizen(big).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "REQUEST_TOO_LARGE");
    // No RetryInfo: the same request would be refused again.
    assert!(refused.get_error_details().retry_info().is_none());
    // Just under the limit is read (and refused for what it says).
    let mut near = citizen_request();
    near.personal_id = "9".repeat(900);
    let status = land.citizen.get_citizen(near).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    land.citizen.get_citizen(citizen_request()).await.unwrap();
    gw.stop().await;
}

/// Shedding answers before the request body is read. A client whose body
/// comes a moment after its headers (as it may on any busy network) gets
/// its refusal and keeps its connection, shed after shed: the refusals are
/// not stream resets (h2 closes a connection after 1024 of those in its
/// life).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_does_not_cost_a_client_its_connection() {
    use prost::Message;
    let owner = stalled::start().await;
    let gw = gateway(
        "max_in_flight = 1",
        &owner.registry(BUSINESS, BUSINESS_OFFICE),
    )
    .await;
    let mut business = gw.client(BUSINESS_OFFICE).await;
    let held = tokio::spawn(async move { business.business.get_enterprise(enterprise()).await });
    owner.holding(1).await;

    let tls = raw::tls_connect(&gw, &gw.pki.agency(LAND_OFFICE)).await;
    let (h2, connection) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(connection);
    let body = bytes_of(raw::grpc_frame(&citizen_request().encode_to_vec()));
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(50));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..1200 {
        let permit = slots.clone().acquire_owned().await.unwrap();
        let mut h2 = h2.clone().ready().await.expect("the connection was closed");
        let body = body.clone();
        calls.spawn(async move {
            let req = http::Request::post(
                "https://localhost/interop.citizen.v1.CitizenRegistryService/GetCitizen",
            )
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
            let (response, mut send) = h2.send_request(req, false).map_err(|e| e.to_string())?;
            // The body a moment after the headers.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = send.send_data(body, true);
            let response = response.await.map_err(|e| e.to_string())?;
            drop(permit);
            Ok::<_, String>(
                response
                    .headers()
                    .get("grpc-status")
                    .map(|v| v.as_bytes().to_vec()),
            )
        });
    }
    let mut shed = 0;
    while let Some(done) = calls.join_next().await {
        let status = done.unwrap().expect("a call lost its connection");
        assert_eq!(status.as_deref(), Some(&b"14"[..]));
        shed += 1;
    }
    assert_eq!(shed, 1200);
    assert!(!conn.is_finished(), "the connection was closed");
    conn.abort();
    held.abort();
    gw.stop().await;
}

fn bytes_of(v: Vec<u8>) -> tonic::codegen::Bytes {
    tonic::codegen::Bytes::from(v)
}

#[tokio::test]
async fn an_agency_reads_its_own_limits_in_list_my_grants() {
    use interop_gateway::proto::catalog::v1::ListMyGrantsRequest;
    let gw = gateway("max_request_bytes = 4096\nmax_call_ms = 2500", "").await;
    let limits_of = |agency: &'static str| {
        let gw = &gw;
        async move {
            let mut c = gw.client(agency).await;
            let mine = c
                .catalog
                .list_my_grants(ListMyGrantsRequest {})
                .await
                .unwrap()
                .into_inner();
            mine.grants[0]
                .limits
                .iter()
                .map(|l| (l.name.clone(), l.value, l.exact_value))
                .collect::<Vec<_>>()
        }
    };
    let own = |name: &str, value: u64, exact: f64| (name.to_owned(), value, exact);
    assert_eq!(
        limits_of(FLOODER).await,
        [
            own("rate_per_second", 0, 0.5),
            own("burst", 2, 2.0),
            own("max_request_bytes", 4096, 4096.0),
            own("max_call_ms", 2500, 2500.0),
        ]
    );
    assert_eq!(
        limits_of(ONE_AT_A_TIME).await,
        [
            own("max_in_flight", 1, 1.0),
            own("max_request_bytes", 4096, 4096.0),
            own("max_call_ms", 2500, 2500.0),
        ]
    );
    gw.stop().await;
}

/// Calls that send their headers and never end their request are counted
/// in their agency's `max_in_flight` before the request is read:
/// past it they are refused at once, so an agency cannot take the
/// gateway-wide places from the others with stalled bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_of_one_agency_do_not_take_the_gateway() {
    let gw = gateway("max_in_flight = 4", "").await;
    let tls = raw::tls_connect(&gw, &gw.pki.agency(ONE_AT_A_TIME)).await;
    let (h2, connection) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(connection);
    let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let mut bodies = Vec::new();
    for i in 0..12 {
        let mut h2 = h2.clone().ready().await.expect("the connection was closed");
        let req = http::Request::post(
            "https://localhost/interop.business.v1.BusinessRegistryService/GetEnterprise",
        )
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let (response, mut body) = h2.send_request(req, false).unwrap();
        // Half the calls: a prefix announcing 16 bytes, then 2 of them, then
        // nothing. The others: a whole (empty) message, the stream left open.
        let sent = if i % 2 == 0 {
            vec![0, 0, 0, 0, 16, 10, 2]
        } else {
            vec![0, 0, 0, 0, 0]
        };
        body.send_data(bytes_of(sent), false).unwrap();
        bodies.push(body);
        let answered = answered.clone();
        tokio::spawn(async move {
            let _ = answered.send((i, response.await));
        });
    }
    // One call (whichever the gateway saw first) holds the agency's one
    // place; the eleven others are answered at once, where without the
    // bound they would wait for max_call_ms (30 s) holding the gateway's
    // places.
    let mut refused = std::collections::HashSet::new();
    for _ in 0..11 {
        let (i, response) = tokio::time::timeout(Duration::from_secs(10), answers.recv())
            .await
            .expect("refused at once")
            .unwrap();
        let response = response.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason(&status), "TOO_MANY_IN_FLIGHT");
        assert!(retry_delay(&status) > Duration::ZERO);
        refused.insert(i);
    }
    let held = (0..12).find(|i| !refused.contains(i)).unwrap();
    // Other agencies keep the gateway's other places.
    let mut land = gw.client(LAND_OFFICE).await;
    for _ in 0..5 {
        land.citizen.get_citizen(citizen_request()).await.unwrap();
    }
    // Once its request ends, the held call is answered (MALFORMED_REQUEST
    // or INVALID_ARGUMENT), and the agency's place is back.
    let rest = if held % 2 == 0 { vec![0; 14] } else { vec![] };
    bodies[held].send_data(bytes_of(rest), true).unwrap();
    let (i, response) = tokio::time::timeout(Duration::from_secs(10), answers.recv())
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(i, held);
    assert_eq!(response.unwrap().status(), http::StatusCode::OK);
    let mut one = gw.client(ONE_AT_A_TIME).await;
    one.business.get_enterprise(enterprise()).await.unwrap();
    conn.abort();
    gw.stop().await;
}
