//! Who is calling: chains that fail the handshake, and trusted certificates
//! that do not name a known agency.

mod support;

use std::process::Command;

use interop_gateway::{
    client::{AgencyIdentity, Client},
    pki::{Ca, Validity},
    proto::citizen::v1::GetCitizenRequest,
};
use support::*;
use tonic::Code;

fn request() -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    }
}

/// Connects and calls; the handshake may fail at connect or at the first call
/// (TLS 1.3 clients learn of a rejected certificate only after sending it).
async fn try_call(addr: &str, identity: &AgencyIdentity) -> Result<(), String> {
    let mut c = Client::connect(addr, identity)
        .await
        .map_err(|e| e.to_string())?;
    c.citizen
        .get_citizen(request())
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test]
async fn certificate_from_unknown_ca_fails_the_handshake() {
    let gw = Gateway::start().await;
    let stranger = Ca::generate("stranger").unwrap();
    let issued = stranger
        .issue_agency(TRUST_DOMAIN, LAND_OFFICE, Validity::days_from_now(1))
        .unwrap();
    let mut id = gw.pki.identity(&issued);
    id.ca_pem = gw.pki.ca.cert_pem().as_bytes().to_vec();
    let err = try_call(&gw.addr, &id).await.unwrap_err();
    assert!(!err.contains("Ok"), "{err}");
    gw.stop().await;
}

#[tokio::test]
async fn expired_certificate_fails_the_handshake() {
    let gw = Gateway::start().await;
    let issued = gw
        .pki
        .ca
        .issue_agency(TRUST_DOMAIN, LAND_OFFICE, Validity::expired())
        .unwrap();
    assert!(try_call(&gw.addr, &gw.pki.identity(&issued)).await.is_err());
    gw.stop().await;
}

#[tokio::test]
async fn agency_certificates_need_client_auth_usage_unless_relaxed() {
    use rcgen::ExtendedKeyUsagePurpose as Eku;
    let gw = Gateway::start().await;
    let uri = format!("spiffe://{TRUST_DOMAIN}/agency/{LAND_OFFICE}");
    let issue = |usages: Vec<Eku>| {
        gw.pki
            .ca
            .issue_with_usages(LAND_OFFICE, Some(&uri), usages, Validity::days_from_now(1))
            .unwrap()
    };
    let no_eku = issue(vec![]);
    let server_only = issue(vec![Eku::ServerAuth]);
    let both = issue(vec![Eku::ServerAuth, Eku::ClientAuth]);
    // By default: clientAuth is required.
    assert!(try_call(&gw.addr, &gw.pki.identity(&no_eku)).await.is_err());
    assert!(try_call(&gw.addr, &gw.pki.identity(&server_only))
        .await
        .is_err());
    try_call(&gw.addr, &gw.pki.identity(&both)).await.unwrap();

    // Relaxed for a legacy CA: no extension passes; a server-only
    // certificate still does not.
    let mut config = gw.config.clone();
    config.tls.require_client_auth_eku = false;
    config.audit.dir = gw.dir.path().join("relaxed-audit");
    config.audit.signing_key = gw.dir.path().join("relaxed-audit.key");
    let relaxed = interop_gateway::server::start(config).await.unwrap();
    let addr = format!("https://localhost:{}", relaxed.addr.port());
    try_call(&addr, &gw.pki.identity(&no_eku)).await.unwrap();
    assert!(try_call(&addr, &gw.pki.identity(&server_only))
        .await
        .is_err());
    relaxed.shutdown().await.unwrap();
    gw.stop().await;
}

#[tokio::test]
async fn revoked_certificate_fails_the_handshake_and_others_pass() {
    let gw = Gateway::start().await;
    let good = gw.pki.agency(LAND_OFFICE);
    let bad = gw.pki.agency(LAND_OFFICE);
    let mut config = gw.config.clone();
    let crl = gw.pki.dir.join("test.crl.pem");
    std::fs::write(&crl, gw.pki.ca.crl_pem(&[bad.serial]).unwrap()).unwrap();
    config.tls.crls = vec![crl];
    let running = interop_gateway::server::start(config).await.unwrap();
    let addr = format!("https://127.0.0.1:{}", running.addr.port());
    assert!(try_call(&addr, &gw.pki.identity(&good)).await.is_ok());
    assert!(try_call(&addr, &gw.pki.identity(&bad)).await.is_err());
    running.shutdown().await.unwrap();
    gw.stop().await;
}

/// Certificates the CA signed that name no configured agency: the
/// connection is closed right after the handshake, so no call reaches a
/// service (each case's reason is in the gateway's log and in the identity
/// module's tests).
#[tokio::test]
async fn trusted_certificate_naming_no_configured_agency_is_closed_after_the_handshake() {
    let gw = Gateway::start().await;
    let cases = [
        gw.pki
            .ca
            .issue_client("no-uri", None, Validity::days_from_now(1))
            .unwrap(),
        gw.pki
            .ca
            .issue_agency("other.example.vn", LAND_OFFICE, Validity::days_from_now(1))
            .unwrap(),
        gw.pki
            .ca
            .issue_agency(TRUST_DOMAIN, "000.00.99.H13", Validity::days_from_now(1))
            .unwrap(),
        gw.pki
            .ca
            .issue_client(
                "wrong-path",
                Some(&format!("spiffe://{TRUST_DOMAIN}/workload/{LAND_OFFICE}")),
                Validity::days_from_now(1),
            )
            .unwrap(),
    ];
    for issued in cases {
        let err = match Client::connect(&gw.addr, &gw.pki.identity(&issued)).await {
            Ok(mut c) => c.citizen.get_citizen(request()).await.unwrap_err(),
            Err(_) => continue,
        };
        // A transport failure, not a status a service returned.
        assert!(reason(&err).is_empty(), "{err:?}");
        assert!(
            matches!(err.code(), Code::Unavailable | Code::Unknown),
            "{err:?}"
        );
    }
    // A configured agency on the same gateway is served.
    let mut land = gw.client(LAND_OFFICE).await;
    land.citizen.get_citizen(request()).await.unwrap();
    gw.stop().await;
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed to run this test");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn agency_certificates_from_openssl_with_rsa_and_p256_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The agency's own CA, RSA 3072, made with openssl.
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:3072",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Agency Own CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        d,
    );
    let ext = format!(
        "subjectAltName=URI:spiffe://{TRUST_DOMAIN}/agency/{LAND_OFFICE}\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    );
    std::fs::write(d.join("ext.cnf"), ext).unwrap();
    for (name, newkey) in [
        ("rsa", vec!["-newkey", "rsa:2048"]),
        (
            "ec",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let mut args = vec!["req"];
        args.extend(newkey.iter().copied());
        args.extend([
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=land office",
        ]);
        openssl(&args, d);
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "10",
                "-extfile",
                "ext.cnf",
            ],
            d,
        );
    }
    let agency_ca = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    let gw = Gateway::start_with(Options {
        extra_client_ca: Some(agency_ca),
        ..Options::default()
    })
    .await;
    for name in ["rsa", "ec"] {
        let id = AgencyIdentity {
            ca_pem: gw.pki.ca.cert_pem().as_bytes().to_vec(),
            cert_pem: std::fs::read(d.join(format!("{name}.pem"))).unwrap(),
            key_pem: std::fs::read(d.join(format!("{name}.key"))).unwrap(),
        };
        let mut c = Client::connect(&gw.addr, &id).await.unwrap();
        let got = c.citizen.get_citizen(request()).await.unwrap().into_inner();
        assert_eq!(got.citizen.unwrap().personal_id, CITIZEN_ID, "{name}");
    }
    gw.stop().await;
}
