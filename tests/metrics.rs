//! The admin listener over real calls: `/metrics` counts what the gateway
//! answered over mutual TLS (exact values, parsed from the exposition),
//! `/readyz` follows the stop signal and the access log, `/livez` the
//! process.

mod support;

use std::{future::Future, time::Duration};

use interop_gateway::{
    client::{AgencyIdentity, Client},
    pki::{Ca, Validity},
    proto::{business::v1::GetEnterpriseRequest, citizen::v1::GetCitizenRequest},
};
use support::*;

const GET_CITIZEN: &str = "interop.citizen.v1.CitizenRegistryService/GetCitizen";
const GET_ENTERPRISE: &str = "interop.business.v1.BusinessRegistryService/GetEnterprise";
/// Bound on waiting for a count that the server makes after the client has
/// seen the outcome (a refused handshake); passing never depends on it.
const WITHIN: Duration = Duration::from_secs(10);

/// A relay (another gateway) among the configured agencies.
const RELAY: &str = "000.00.00.H13";

async fn gateway() -> Gateway {
    Gateway::start_with(Options {
        extra_config: format!(
            "\n[[agency]]\ncode = \"{RELAY}\"\nname = \"Relay\"\nrelay = true\n\n[admin]\nlisten = \"127.0.0.1:0\"\n"
        ),
        ..Options::default()
    })
    .await
}

fn citizen_request() -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    }
}

/// Scrapes until `check` holds of the exposition (or panics after [`WITHIN`]).
async fn scrape_until<F: Fn(&str) -> bool>(admin: &str, check: F) -> String {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let text = scrape(admin).await;
        if check(&text) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ignore<T, E>(f: impl Future<Output = Result<T, E>>) {
    let _ = f.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_agency_method_and_code() {
    let gw = gateway().await;
    let admin = gw.admin.clone().expect("[admin] is configured");
    let mut land = gw.client(LAND_OFFICE).await;
    for _ in 0..3 {
        land.citizen.get_citizen(citizen_request()).await.unwrap();
    }
    // The land office has no grant for enterprises.
    let denied = land
        .business
        .get_enterprise(GetEnterpriseRequest {
            context: context(PROCEDURE_LAND),
            enterprise_code: ENTERPRISE_CODE.into(),
            read_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let text = scrape(&admin).await;
    let calls = |method: &str, code: &str| {
        metric(
            &text,
            "interop_gateway_calls_total",
            &[("agency", LAND_OFFICE), ("method", method), ("code", code)],
        )
    };
    assert_eq!(calls(GET_CITIZEN, "OK"), Some(3.0), "{text}");
    assert_eq!(calls(GET_ENTERPRISE, "PERMISSION_DENIED"), Some(1.0));
    assert_eq!(calls(GET_CITIZEN, "PERMISSION_DENIED"), None);
    assert_eq!(
        metric(
            &text,
            "interop_gateway_call_duration_seconds_count",
            &[("method", GET_CITIZEN)]
        ),
        Some(3.0)
    );
    // Every call, refused or not, wrote one access record.
    assert_eq!(
        metric(
            &text,
            "interop_gateway_audit_append_duration_seconds_count",
            &[]
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &text,
            "interop_gateway_in_flight",
            &[("agency", LAND_OFFICE)]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "interop_gateway_audit_healthy", &[]),
        Some(1.0)
    );
    for result in ["ok", "error"] {
        assert_eq!(
            metric(
                &text,
                "interop_gateway_config_reloads_total",
                &[("result", result)]
            ),
            Some(0.0)
        );
    }
    // The test PKI's certificates: the gateway's for a year, the CA's for
    // ten (rcgen's defaults through `pki`), both in the future.
    for certificate in ["tls.cert", "tls.client_ca[0]"] {
        let left = metric(
            &text,
            "interop_gateway_certificate_expiry_seconds",
            &[("certificate", certificate)],
        )
        .unwrap_or_else(|| panic!("no expiry for {certificate}: {text}"));
        assert!(
            left > 86_400.0 && left < 11.0 * 366.0 * 86_400.0,
            "{certificate}: {left}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_callers_are_counted_by_reason_under_fixed_labels() {
    let gw = gateway().await;
    let admin = gw.admin.clone().unwrap();

    // A certificate from the gateway's CA naming an agency it does not know:
    // the handshake succeeds, admission closes the connection.
    // One connection exactly (a gRPC client would try again).
    let stranger = gw.pki.agency("000.00.99.H99");
    let mut conn = tls_connect(&gw, &stranger).await;
    let mut buf = [0u8; 256];
    while !matches!(
        tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await,
        Ok(0) | Err(_)
    ) {}
    // A certificate from another CA: the handshake fails.
    let other_ca = Ca::generate("another CA").unwrap();
    let foreign = other_ca
        .issue_agency(TRUST_DOMAIN, LAND_OFFICE, Validity::days_from_now(1))
        .unwrap();
    let identity = AgencyIdentity {
        ca_pem: gw.pki.ca.cert_pem().as_bytes().to_vec(),
        cert_pem: foreign.cert_pem.as_bytes().to_vec(),
        key_pem: foreign.key_pem.as_bytes().to_vec(),
    };
    if let Ok(mut c) = Client::connect(&gw.addr, &identity).await {
        ignore(c.citizen.get_citizen(citizen_request())).await;
    }

    // A relay calling for an agency that is not configured: answered
    // UNAUTHENTICATED, counted by the answer's reason.
    let mut relay = gw.client(RELAY).await;
    let mut call = tonic::Request::new(citizen_request());
    call.metadata_mut()
        .insert("x-interop-on-behalf-of", "000.00.98.H98".parse().unwrap());
    let status = relay.citizen.get_citizen(call).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let text = scrape_until(&admin, |t| {
        metric(
            t,
            "interop_gateway_handshake_failures_total",
            &[("reason", "UNKNOWN_ISSUER")],
        )
        .is_some()
    })
    .await;
    assert_eq!(
        metric(
            &text,
            "interop_gateway_unauthenticated_total",
            &[("reason", "UNKNOWN_AGENCY")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "interop_gateway_calls_total",
            &[
                ("agency", RELAY),
                ("method", GET_CITIZEN),
                ("code", "UNAUTHENTICATED")
            ]
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &text,
            "interop_gateway_handshake_failures_total",
            &[("reason", "UNKNOWN_ISSUER")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // No series names what a refused caller presented.
    assert!(
        !text.contains("000.00.99.H99") && !text.contains("000.00.98.H98"),
        "{text}"
    );
    // A served agency's call to a method that does not exist is counted
    // under `unknown`, not under the path it sent.
    let land = gw.client(LAND_OFFICE).await;
    let mut grpc = tonic::client::Grpc::new(land.channel.clone());
    grpc.ready().await.unwrap();
    let path = "/interop.citizen.v1.CitizenRegistryService/NoSuchMethod"
        .parse()
        .unwrap();
    let status = grpc
        .unary::<_, (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let text = scrape(&admin).await;
    assert_eq!(
        metric(
            &text,
            "interop_gateway_calls_total",
            &[
                ("agency", LAND_OFFICE),
                ("method", "unknown"),
                ("code", "UNIMPLEMENTED")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("NoSuchMethod"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_at_the_stop_signal_while_calls_drain() {
    let gw = gateway().await;
    let admin = gw.admin.clone().unwrap();
    assert_eq!(http_get(&admin, "/readyz").await.0, 200);
    assert_eq!(http_get(&admin, "/livez").await.0, 200);
    assert_eq!(http_get(&admin, "/nothing").await.0, 404);

    // A call in flight: its request headers sent, its body not finished.
    let tls = tls_connect(&gw, &gw.pki.agency(LAND_OFFICE)).await;
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::post(format!("https://localhost/{GET_CITIZEN}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (_response, body) = send.send_request(request, false).unwrap();
    scrape_until(&admin, |t| {
        metric(t, "interop_gateway_in_flight", &[("agency", LAND_OFFICE)]) == Some(1.0)
    })
    .await;

    // The stop signal: not ready at once, still live, still answering while
    // the call drains.
    gw.running().shutdown_handle().send(true).unwrap();
    let (status, why) = http_get(&admin, "/readyz").await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("draining"), "{why}");
    assert_eq!(http_get(&admin, "/livez").await.0, 200);

    // The call goes away; the server stops.
    drop(body);
    drop(send);
    conn.abort();
    gw.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_while_the_access_log_cannot_be_written() {
    let (_dir, pki, config) = prepared_dir();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&config, text).unwrap();
    // A file-size limit the access log soon reaches.
    let serve = ServeProcess::start(&config, Some("ulimit -f 64;"));
    let admin = serve.admin_addr().expect("the admin listener's address");
    assert_eq!(http_get(&admin, "/readyz").await.0, 200);
    let mut c = Client::connect(&serve.addr, &pki.identity(&pki.agency(LAND_OFFICE)))
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..2000 {
        if let Err(status) = c.citizen.get_citizen(citizen_request()).await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("the log never filled up");
    assert_eq!(reason(&status), "AUDIT_UNAVAILABLE");
    // The log reports itself unhealthy before the failed call is answered.
    let (code, why) = http_get(&admin, "/readyz").await;
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("access log"), "{why}");
    assert_eq!(http_get(&admin, "/livez").await.0, 200);
    let text = scrape(&admin).await;
    assert_eq!(
        metric(&text, "interop_gateway_audit_healthy", &[]),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "interop_gateway_calls_total",
            &[
                ("agency", LAND_OFFICE),
                ("method", GET_CITIZEN),
                ("code", "UNAVAILABLE")
            ]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn without_admin_there_is_no_listener_and_nothing_is_counted() {
    let gw = Gateway::start().await;
    assert_eq!(gw.admin, None);
    assert!(gw.running().metrics().is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_by_result() {
    let mut gw = gateway().await;
    let admin = gw.admin.clone().expect("[admin] is configured");
    let good = gw.text.clone();
    // A key the config does not know: refused whole, the old config stays.
    gw.reload_with(&format!("{good}\nno_such_key = 1\n"))
        .unwrap_err();
    gw.reload_with(&good).unwrap();
    gw.reload_with(&good).unwrap();
    let text = scrape(&admin).await;
    for (result, count) in [("ok", 2.0), ("error", 1.0)] {
        assert_eq!(
            metric(
                &text,
                "interop_gateway_config_reloads_total",
                &[("result", result)]
            ),
            Some(count),
            "{text}"
        );
    }
    // The gateway still answers under the reloaded config.
    let mut land = gw.client(LAND_OFFICE).await;
    land.citizen.get_citizen(citizen_request()).await.unwrap();
}
