//! Rehearsing revocation end to end with the binary: `certs revoke` writes a
//! CRL from the dev CA, `check-config` accepts the config naming it, SIGHUP
//! applies it, and the connection opened with the revoked certificate is
//! refused on its next call.

mod support;

use std::process::{Command, Output};

use interop_gateway::{client::Client, pki, proto::citizen::v1::GetCitizenRequest};
use support::*;
use tonic::Code;

fn gateway(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_interop-gateway"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn request() -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    }
}

#[test]
fn check_config_names_the_file_key_and_problem() {
    let (dir, _pki, config) = prepared_dir();
    let out = gateway(&["check-config"], &config);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK (3 agencies"));

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("crls = []", "crls = [\"certs/missing.pem\"]"),
    )
    .unwrap();
    let out = gateway(&["check-config"], &config);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gateway.toml")
            && stderr.contains("tls.crls")
            && stderr.contains("missing.pem"),
        "{stderr}"
    );
    // Several CAs trusted and agencies without their own: warnings, exit 0.
    let other = pki::Ca::generate("other").unwrap();
    let bundle = dir.path().join("certs/bundle.pem");
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.pem")).unwrap();
    std::fs::write(&bundle, ca + other.cert_pem()).unwrap();
    std::fs::write(&config, text.replace("certs/ca.pem", "certs/bundle.pem")).unwrap();
    let out = gateway(&["check-config"], &config);
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("warning: agency").count(), 3, "{stderr}");
}

#[test]
fn certs_revoke_and_sighup_refuse_the_certificate_on_its_open_connection() {
    let (dir, pki, config) = prepared_dir();
    let issued = pki.agency(LAND_OFFICE);
    let cert_file = dir.path().join("land.pem");
    std::fs::write(&cert_file, &issued.cert_pem).unwrap();
    let serve = ServeProcess::start(&config, None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut open = rt
        .block_on(Client::connect(&serve.addr, &pki.identity(&issued)))
        .unwrap();
    rt.block_on(open.citizen.get_citizen(request())).unwrap();

    // Not a certificate of the dev CA: refused, nothing written.
    let stranger = pki::Ca::generate("stranger").unwrap();
    let foreign = dir.path().join("foreign.pem");
    let other = stranger
        .issue_agency(TRUST_DOMAIN, LAND_OFFICE, pki::Validity::days_from_now(1))
        .unwrap();
    std::fs::write(&foreign, other.cert_pem).unwrap();
    let out = gateway(
        &["certs", "revoke", "--cert", foreign.to_str().unwrap()],
        &config,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!dir.path().join("certs/crl.pem").exists());

    let out = gateway(
        &["certs", "revoke", "--cert", cert_file.to_str().unwrap()],
        &config,
    );
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hex = pki::serial_hex(&pki::serial_of(&issued.cert_pem).unwrap());
    assert!(
        stdout.contains(&format!("revoked serial {hex}")),
        "{stdout}"
    );
    assert!(stdout.contains("add it to [tls] crls"), "{stdout}");
    // By serial too (already revoked: said so, the CRL written again).
    let out = gateway(&["certs", "revoke", "--serial", &hex], &config);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already revoked"));

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("crls = []", "crls = [\"certs/crl.pem\"]"),
    )
    .unwrap();
    assert_success(&gateway(&["check-config"], &config));
    serve.signal("HUP");
    serve.wait_for_log("generation=2");

    let status = rt
        .block_on(open.citizen.get_citizen(request()))
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status), "CERTIFICATE_REVOKED");

    // A fresh CRL (the weekly re-issue) still lists it.
    let out = gateway(&["certs", "crl"], &config);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(1 revoked"));
    serve.signal("HUP");
    serve.wait_for_log("generation=3");
    let status = rt
        .block_on(open.citizen.get_citizen(request()))
        .unwrap_err();
    assert_eq!(reason(&status), "CERTIFICATE_REVOKED");
    // Another certificate of the agency is served.
    let mut fresh = rt
        .block_on(Client::connect(
            &serve.addr,
            &pki.identity(&pki.agency(LAND_OFFICE)),
        ))
        .unwrap();
    rt.block_on(fresh.citizen.get_citizen(request())).unwrap();
    assert!(serve.terminate().success());
    drop(dir);
}
