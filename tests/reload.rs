//! Operating without restarts: a reload (what SIGHUP does) applies grants,
//! agencies, CRLs, per-agency CAs and the gateway's certificate to the next
//! call on every connection, open ones included; a config that does not
//! validate changes nothing.

mod support;

use interop_gateway::{
    client::Client,
    pki::{self, Ca, IssuedCert, Validity},
    proto::{
        business::v1::GetEnterpriseRequest,
        citizen::v1::{GetCitizenRequest, GetCitizenResponse},
    },
};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use support::*;
use tonic::Code;

fn citizen_request(procedure: &str) -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(procedure),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    }
}

async fn get_citizen(
    c: &mut Client,
    procedure: &str,
) -> Result<tonic::Response<GetCitizenResponse>, tonic::Status> {
    c.citizen.get_citizen(citizen_request(procedure)).await
}

async fn get_enterprise(c: &mut Client) -> Result<(), tonic::Status> {
    c.business
        .get_enterprise(GetEnterpriseRequest {
            context: context(PROCEDURE_BUSINESS),
            enterprise_code: ENTERPRISE_CODE.into(),
            read_mask: None,
        })
        .await
        .map(drop)
}

/// `text` without the `[[agency]]` table of `code` and its grants.
fn without_agency(text: &str, code: &str) -> String {
    text.split("\n[[")
        .filter(|table| !table.contains(&format!("\"{code}\"")))
        .collect::<Vec<_>>()
        .join("\n[[")
}

const PORTAL_CITIZEN_GRANT: &str = r#"
[[grant]]
agency = "000.00.00.G22"
method = "interop.citizen.v1.CitizenRegistryService/GetCitizen"
procedures = ["2.002154"]
fields = ["full_name"]
"#;

#[tokio::test]
async fn a_reload_adds_a_grant_and_removes_an_agency_on_open_channels() {
    let mut gw = Gateway::start().await;
    let mut portal = gw.client(PORTAL).await;
    let mut business = gw.client(BUSINESS_OFFICE).await;
    let denied = get_citizen(&mut portal, PROCEDURE_PORTAL)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    get_enterprise(&mut business).await.unwrap();

    let text = without_agency(&gw.text, BUSINESS_OFFICE) + PORTAL_CITIZEN_GRANT;
    let summary = gw.reload_with(&text).unwrap();
    assert_eq!(summary.generation, 2);
    assert_eq!(summary.agencies, 2);
    assert!(summary.restart_needed.is_empty(), "{summary:?}");

    // The grant works on the next call of the channel opened before it.
    let answer = get_citizen(&mut portal, PROCEDURE_PORTAL)
        .await
        .unwrap()
        .into_inner();
    let citizen = answer.citizen.unwrap();
    assert_eq!(citizen.full_name, "Nguyễn Văn An");
    assert!(citizen.personal_id.is_empty(), "only the granted field");
    // The removed agency's open connection answers its next call with a
    // gRPC status (a new connection would be closed at the door).
    let gone = get_enterprise(&mut business).await.unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated, "{gone:?}");
    assert_eq!(reason(&gone), "UNKNOWN_AGENCY");
    // Others are unaffected.
    let mut land = gw.client(LAND_OFFICE).await;
    get_citizen(&mut land, PROCEDURE_LAND).await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn an_invalid_reload_leaves_the_old_config_serving() {
    let mut gw = Gateway::start().await;
    let mut land = gw.client(LAND_OFFICE).await;
    get_citizen(&mut land, PROCEDURE_LAND).await.unwrap();

    // Unknown key: refused whole, naming the file and the line; the grant
    // that came with it does not apply.
    let bad = format!(
        "{}{PORTAL_CITIZEN_GRANT}\n[limits]\nmax_conections = 5\n",
        gw.text
    );
    let e = gw.reload_with(&bad).unwrap_err();
    assert!(e.file.ends_with("gateway.toml"), "{e}");
    assert!(
        e.message.contains("line") && e.message.contains("max_conections"),
        "{e}"
    );
    // A CRL file that is not one: names the key and the file.
    std::fs::write(gw.dir.path().join("certs/crl.pem"), "garbage").unwrap();
    let bad = gw.text.replace("crls = []", "crls = [\"certs/crl.pem\"]");
    let e = gw.reload_with(&bad).unwrap_err();
    assert!(
        e.message.starts_with("tls.crls (") && e.message.contains("crl.pem"),
        "{e}"
    );
    // A grant for an agency that does not exist.
    let bad = gw.text.replace(
        &format!("agency = \"{PORTAL}\""),
        "agency = \"000.00.00.Z99\"",
    );
    let e = gw.reload_with(&bad).unwrap_err();
    assert!(
        e.message.contains("grant[") && e.message.contains(".agency"),
        "{e}"
    );

    // Still the old config: the land office is served, the portal's grant
    // was never applied.
    get_citizen(&mut land, PROCEDURE_LAND).await.unwrap();
    let mut portal = gw.client(PORTAL).await;
    let denied = get_citizen(&mut portal, PROCEDURE_PORTAL)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // A good file after bad ones is taken.
    let good = gw.text.clone() + PORTAL_CITIZEN_GRANT;
    assert_eq!(gw.reload_with(&good).unwrap().generation, 2);
    get_citizen(&mut portal, PROCEDURE_PORTAL).await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn revoked_certificate_is_refused_on_an_open_connection() {
    let mut gw = Gateway::start().await;
    let revoked = gw.pki.agency(LAND_OFFICE);
    let mut open = gw.client_with(&revoked).await;
    get_citizen(&mut open, PROCEDURE_LAND).await.unwrap();

    let crl = gw.dir.path().join("certs/crl.pem");
    pki::write_file(&crl, &gw.pki.ca.crl_pem(&[revoked.serial]).unwrap(), false).unwrap();
    let text = gw.text.replace("crls = []", "crls = [\"certs/crl.pem\"]");
    assert_eq!(gw.reload_with(&text).unwrap().crl_files, 1);

    // The connection opened with it: its next call is refused.
    for _ in 0..2 {
        let status = get_citizen(&mut open, PROCEDURE_LAND).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(reason(&status), "CERTIFICATE_REVOKED");
    }
    // A new handshake with it fails.
    let fresh = Client::connect(&gw.addr, &gw.pki.identity(&revoked)).await;
    if let Ok(mut c) = fresh {
        let status = get_citizen(&mut c, PROCEDURE_LAND).await.unwrap_err();
        assert_eq!(
            reason(&status),
            "",
            "refused by TLS, not answered: {status:?}"
        );
        assert!(
            format!("{status:?}").contains("CertificateRevoked"),
            "{status:?}"
        );
    }
    // Another certificate of the same agency is served.
    let mut other = gw.client(LAND_OFFICE).await;
    get_citizen(&mut other, PROCEDURE_LAND).await.unwrap();
    gw.stop().await;
}

/// Adds `ca = "<file>"` to the `[[agency]]` table of `code`.
fn with_agency_ca(text: &str, code: &str, file: &str) -> String {
    text.replacen(
        &format!("code = \"{code}\""),
        &format!("code = \"{code}\"\nca = \"{file}\""),
        1,
    )
}

#[tokio::test]
async fn an_agency_with_its_own_ca_refuses_certificates_of_another_trusted_ca() {
    let land_ca = Ca::generate("land office CA").unwrap();
    let mut gw = Gateway::start_with(Options {
        extra_client_ca: Some(land_ca.cert_pem().to_owned()),
        ..Options::default()
    })
    .await;
    pki::write_file(
        &gw.dir.path().join("certs/agencies/land-office-ca.pem"),
        land_ca.cert_pem(),
        false,
    )
    .unwrap();
    // Before `ca` is set, the gateway's own CA vouches for the land office.
    let from_shared_ca = gw.pki.agency(LAND_OFFICE);
    let mut open = gw.client_with(&from_shared_ca).await;
    get_citizen(&mut open, PROCEDURE_LAND).await.unwrap();

    let text = with_agency_ca(&gw.text, LAND_OFFICE, "certs/agencies/land-office-ca.pem");
    let text = with_agency_ca(&text, BUSINESS_OFFICE, "certs/ca.pem");
    let summary = gw.reload_with(&text).unwrap();
    // Two CAs trusted, and the portal has none of its own: warned.
    assert_eq!(summary.warnings.len(), 1, "{summary:?}");
    assert!(summary.warnings[0].contains(PORTAL), "{summary:?}");

    let status = get_citizen(&mut open, PROCEDURE_LAND).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status), "WRONG_ISSUER");
    assert!(
        status.message().contains("land-office-ca.pem"),
        "{status:?}"
    );

    let own: IssuedCert = land_ca
        .issue_agency(TRUST_DOMAIN, LAND_OFFICE, Validity::days_from_now(1))
        .unwrap();
    let mut right = gw.client_with(&own).await;
    get_citizen(&mut right, PROCEDURE_LAND).await.unwrap();
    // The land office's CA cannot vouch for another agency that has its
    // own CA either: closed after the handshake, nothing served.
    let forged = land_ca
        .issue_agency(TRUST_DOMAIN, BUSINESS_OFFICE, Validity::days_from_now(1))
        .unwrap();
    if let Ok(mut c) = Client::connect(&gw.addr, &gw.pki.identity(&forged)).await {
        assert!(get_enterprise(&mut c).await.is_err());
    }
    gw.stop().await;
}

/// The certificate the gateway presents to a new handshake.
async fn served_certificate(gw: &Gateway) -> CertificateDer<'static> {
    let tls = tls_connect(gw, &gw.pki.agency(LAND_OFFICE)).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn a_rotated_gateway_certificate_is_served_to_new_handshakes() {
    let mut gw = Gateway::start().await;
    let mut open = gw.client(LAND_OFFICE).await;
    let before = served_certificate(&gw).await;
    let rotated = gw.pki.ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    let certs = gw.dir.path().join("certs");
    pki::write_issued(
        &certs.join("gateway.pem"),
        &certs.join("gateway.key"),
        &rotated,
    )
    .unwrap();
    let text = gw.text.clone();
    gw.reload_with(&text).unwrap();
    let after = served_certificate(&gw).await;
    assert_ne!(before, after);
    assert_eq!(
        after,
        CertificateDer::from_pem_slice(rotated.cert_pem.as_bytes()).unwrap()
    );
    // The connection opened before the rotation is still served.
    get_citizen(&mut open, PROCEDURE_LAND).await.unwrap();
    gw.stop().await;
}

#[test]
fn sighup_reloads_the_running_binary_and_a_bad_file_is_refused() {
    let (dir, pki, config) = prepared_dir();
    let serve = ServeProcess::start(&config, None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let identity = pki.identity(&pki.agency(PORTAL));
    let mut portal = rt
        .block_on(Client::connect(&serve.addr, &identity))
        .unwrap();
    let denied = rt
        .block_on(get_citizen(&mut portal, PROCEDURE_PORTAL))
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\nlisten_port = 1\n")).unwrap();
    serve.signal("HUP");
    let refused = serve.wait_for_log("config reload refused");
    assert!(
        refused.contains("gateway.toml") && refused.contains("listen_port"),
        "{refused}"
    );
    std::fs::write(&config, format!("{text}{PORTAL_CITIZEN_GRANT}")).unwrap();
    serve.signal("HUP");
    serve.wait_for_log("generation=2");
    rt.block_on(get_citizen(&mut portal, PROCEDURE_PORTAL))
        .unwrap();
    let status = serve.terminate();
    assert!(status.success());
    drop(dir);
}

const PORTAL_WATCH_GRANT: &str = r#"
[[grant]]
agency = "000.00.00.G22"
method = "interop.audit.v1.AccessLogService/WatchAccessRecords"
procedures = ["2.002154"]
"#;

#[tokio::test]
async fn an_open_watch_ends_when_a_reload_revokes_its_certificate() {
    use interop_gateway::proto::audit::v1::WatchAccessRecordsRequest;
    let mut gw = Gateway::start_with(Options {
        extra_config: PORTAL_WATCH_GRANT.into(),
        ..Options::default()
    })
    .await;
    let revoked = gw.pki.agency(PORTAL);
    let mut portal = gw.client_with(&revoked).await;
    let mut events = portal
        .access_log
        .watch_access_records(WatchAccessRecordsRequest {
            context: context(PROCEDURE_PORTAL),
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut land = gw.client(LAND_OFFICE).await;
    get_citizen(&mut land, PROCEDURE_LAND).await.unwrap();
    assert!(events.message().await.unwrap().is_some());

    let crl = gw.dir.path().join("certs/crl.pem");
    pki::write_file(&crl, &gw.pki.ca.crl_pem(&[revoked.serial]).unwrap(), false).unwrap();
    let text = gw.text.replace("crls = []", "crls = [\"certs/crl.pem\"]");
    gw.reload_with(&text).unwrap();
    // Events of records made after the reload are not sent: the watch
    // ends, saying why (those queued before it may still arrive).
    get_citizen(&mut land, PROCEDURE_LAND).await.unwrap();
    let ended = async {
        loop {
            match events.message().await {
                Ok(Some(event)) => assert!(event.cursor.parse::<u64>().unwrap() <= 2, "{event:?}"),
                Ok(None) => panic!("the watch ended without a status"),
                Err(status) => break status,
            }
        }
    };
    // A bound for a failing gateway only: ending takes milliseconds.
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), ended)
        .await
        .expect("the watch went on after its certificate was revoked");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status), "CERTIFICATE_REVOKED");
    gw.stop().await;
}

#[tokio::test]
async fn a_dev_config_reload_creates_no_files() {
    let mut gw = Gateway::start().await;
    let certs = gw.dir.path().join("certs");
    let dev = format!("dev = true\n{}", gw.text);
    let text = format!("{dev}\n[[agency]]\ncode = \"000.00.00.H99\"\nname = \"Một cơ quan mới\"\n");
    gw.reload_with(&text).unwrap();
    // `serve` would have issued the new agency a certificate; a reload does not.
    assert!(!certs.join("agencies/000.00.00.H99.pem").exists());
    // Nor does it replace a missing file: the reload is refused instead.
    std::fs::rename(certs.join("gateway.pem"), certs.join("gateway.old")).unwrap();
    let e = gw.reload_with(&text).unwrap_err();
    assert!(e.message.contains("tls.cert"), "{e}");
    assert!(!certs.join("gateway.pem").exists());
    gw.stop().await;
}

#[tokio::test]
async fn per_connection_limits_apply_to_the_next_connection_and_the_rest_need_a_restart() {
    let mut gw = Gateway::start().await;
    let mut first = gw.client(LAND_OFFICE).await;
    get_citizen(&mut first, PROCEDURE_LAND).await.unwrap();
    let text = format!("{}\n[limits]\nmax_connections_per_agency = 1\n", gw.text);
    let summary = gw.reload_with(&text).unwrap();
    assert!(summary.restart_needed.is_empty(), "{summary:?}");
    // The agency already holds its one connection: a second is closed at
    // the door (no gRPC status), the first is still served.
    let second = Client::connect(&gw.addr, &gw.pki.identity(&gw.pki.agency(LAND_OFFICE))).await;
    if let Ok(mut c) = second {
        let status = get_citizen(&mut c, PROCEDURE_LAND).await.unwrap_err();
        assert_eq!(reason(&status), "", "closed, not answered: {status:?}");
    }
    get_citizen(&mut first, PROCEDURE_LAND).await.unwrap();

    let text = format!("{}\n[limits]\nmax_connections = 10\n", gw.text);
    let summary = gw.reload_with(&text).unwrap();
    assert_eq!(summary.restart_needed, vec!["limits.max_connections"]);
    // Back to what it started with: nothing waits for a restart any more.
    let summary = gw.reload_with(&gw.text.clone()).unwrap();
    assert!(summary.restart_needed.is_empty(), "{summary:?}");
    // Limits read per call are not start-only (no `limits.verify_*`).
    let text = format!(
        "{}\n[limits]\nmax_in_flight = 5\nmax_call_ms = 9000\n",
        gw.text
    );
    let summary = gw.reload_with(&text).unwrap();
    assert!(summary.restart_needed.is_empty(), "{summary:?}");
    let text = format!("{}\n[limits]\nverify_window_hours = 2\n", gw.text);
    let summary = gw.reload_with(&text).unwrap();
    assert_eq!(summary.restart_needed, vec!["limits.verify_*"]);
    // The admin listener is bound at start.
    let text = format!("{}\n[admin]\nlisten = \"127.0.0.1:0\"\n", gw.text);
    let summary = gw.reload_with(&text).unwrap();
    assert_eq!(summary.restart_needed, vec!["admin.listen"]);
    gw.stop().await;
}
