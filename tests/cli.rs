//! The binary as operators use it: atomic import, config errors, the dev
//! bootstrap, `call`, and a clean exit on SIGTERM.

mod support;

use std::{path::Path, process::Command};

use interop_gateway::{config::Config, registry::Store};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_interop-gateway");

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    Pki::new(dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text(&[], "certs/ca.pem")).unwrap();
    (dir, config)
}

fn import(config: &Path, registry: &str, file: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["import", "--config"])
        .arg(config)
        .args(["--registry", registry])
        .arg(file)
        .output()
        .unwrap()
}

#[tokio::test]
async fn import_with_one_bad_line_refuses_the_whole_file() {
    let (dir, config) = setup();
    let good = dir.path().join("good.jsonl");
    write_jsonl(&good, &[citizen()]);
    let out = import(&config, "citizen", &good);
    assert_success(&out);

    // Line 1 is a valid new citizen, line 2 disagrees with its own id (born 1985
    // per the id, 1986 in the record), line 3 is not JSON.
    let mut newcomer = citizen();
    newcomer.personal_id = "092085000777".into();
    let mut wrong_year = citizen();
    wrong_year.personal_id = "092085000888".into();
    wrong_year.date_of_birth.as_mut().unwrap().year = 1986;
    let bad = dir.path().join("bad.jsonl");
    let text = format!(
        "{}\n{}\n{{\"personalId\": \n",
        serde_json::to_string(&newcomer).unwrap(),
        serde_json::to_string(&wrong_year).unwrap()
    );
    std::fs::write(&bad, text).unwrap();
    let out = import(&config, "citizen", &bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = bad.display().to_string();
    assert!(stderr.contains(&format!("{shown}:2:")), "{stderr}");
    assert!(stderr.contains(&format!("{shown}:3:")), "{stderr}");
    assert!(!stderr.contains(&format!("{shown}:1:")), "{stderr}");

    let cfg = Config::load(&config).unwrap();
    let store = Store::open(&cfg.store_path()).unwrap();
    assert!(store.citizen(CITIZEN_ID).await.unwrap().is_some());
    assert!(
        store.citizen("092085000777").await.unwrap().is_none(),
        "line 1 must not be imported"
    );
}

#[test]
fn refused_first_import_leaves_no_store_behind() {
    let (dir, config) = setup();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"enterpriseCode\": \"0300588568\", \"name\": \"X\"}\n",
    )
    .unwrap();
    let out = import(&config, "business", &bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("check digit"));
    let cfg = Config::load(&config).unwrap();
    assert!(!cfg.store_path().exists());
    assert_eq!(
        std::fs::read_dir(&cfg.data_dir)
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

fn config_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    Config::parse(text, &path).unwrap_err().to_string()
}

#[test]
fn config_errors_name_the_key() {
    let good = config_text(&[], "certs/ca.pem");
    assert!(Config::parse(&good, Path::new("/x/gateway.toml")).is_ok());

    let e = config_error(&good.replace(
        "data_dir = \"data\"",
        "data_dir = \"data\"\nlisten_port = 1",
    ));
    assert!(e.contains("listen_port") && e.contains("line 5"), "{e}");
    let e = config_error(&good.replacen(
        "agency = \"000.00.20.H13\"",
        "agency = \"000.00.21.H13\"",
        1,
    ));
    assert!(
        e.contains("grant[0].agency") && e.contains("000.00.21.H13"),
        "{e}"
    );
    let e = config_error(&good.replacen(
        "CitizenRegistryService/GetCitizen",
        "CitizenRegistryService/GetCitizens",
        1,
    ));
    assert!(e.contains("grant[0].method"), "{e}");
    let e = config_error(&good.replacen(
        "\"full_name\", \"date_of_birth\"",
        "\"full_name\", \"birthday\"",
        1,
    ));
    assert!(
        e.contains("grant[0].fields[2]") && e.contains("birthday"),
        "{e}"
    );
    let e = config_error(&good.replacen("code = \"000.00.00.G22\"", "code = \"G22\"", 1));
    assert!(e.contains("agency[2].code"), "{e}");
    let e = config_error(&good.replacen(
        "procedures = [\"1.004227\"]",
        "procedures = [\"1004227\"]",
        1,
    ));
    assert!(e.contains("grant[0].procedures[0]"), "{e}");
}

#[test]
fn serve_with_missing_files_and_no_dev_mark_stops_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text(&[], "certs/ca.pem")).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tls.cert"), "{stderr}");
    assert!(!dir.path().join("certs").exists());
    assert!(!dir.path().join("data").exists());
}

#[test]
fn dev_config_bootstraps_serves_calls_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let text = config_text(&[], "certs/ca.pem").replacen(
        "data_dir = \"data\"",
        "data_dir = \"data\"\ndev = true",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let serve = ServeProcess::start(&config, None);
    let log = serve.log_text();
    assert!(log.contains("created dev CA"), "{log}");
    assert!(log.contains("imported"), "{log}");
    let addr = serve.addr.trim_start_matches("https://").to_owned();

    let first = std::fs::read_to_string(dir.path().join("data/demo/citizens.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let id = first["personalId"].as_str().unwrap().to_owned();
    let request = format!(
        r#"{{"context": {{"procedureCode": "{PROCEDURE_LAND}", "dossierId": "{DOSSIER}"}}, "personalId": "{id}", "readMask": "fullName,permanentAddress.provinceCode"}}"#
    );
    let out = Command::new(BIN)
        .args(["call", "--config"])
        .arg(&config)
        .args([
            "--addr",
            &addr,
            "--agency",
            LAND_OFFICE,
            "GetCitizen",
            &request,
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["citizen"]["fullName"], first["fullName"]);
    assert!(answer["citizen"].get("personalId").is_none());

    // An error prints its code and details as JSON and exits 1.
    let out = Command::new(BIN)
        .args(["call", "--config"])
        .arg(&config)
        .args(["--addr", &addr, "--agency", PORTAL, "GetCitizen", &request])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], "PERMISSION_DENIED");
    assert_eq!(err["details"]["errorInfo"]["reason"], "METHOD_NOT_GRANTED");

    // The catalogue needs no request body and no grant.
    let out = Command::new(BIN)
        .args(["call", "--config"])
        .arg(&config)
        .args(["--addr", &addr, "--agency", PORTAL, "ListMyGrants"])
        .output()
        .unwrap();
    assert_success(&out);
    let grants: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(grants["agencyCode"], PORTAL);
    assert_eq!(
        grants["grants"][0]["method"],
        "interop.audit.v1.AccessLogService/ListAccessRecords"
    );

    // The live stream is a method of its own, refused here for want of a grant.
    let watch = format!(
        r#"{{"context": {{"procedureCode": "{PROCEDURE_PORTAL}", "dossierId": "{DOSSIER}"}}}}"#
    );
    let out = Command::new(BIN)
        .args(["call", "--config"])
        .arg(&config)
        .args([
            "--addr",
            &addr,
            "--agency",
            PORTAL,
            "WatchAccessRecords",
            &watch,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["details"]["errorInfo"]["reason"], "METHOD_NOT_GRANTED");
    assert_eq!(
        err["details"]["errorInfo"]["metadata"]["method"],
        "interop.audit.v1.AccessLogService/WatchAccessRecords"
    );

    // Another agency's gateway is called with the four flags and no
    // config at all (none in the working folder, none named).
    let elsewhere = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(BIN)
        .current_dir(elsewhere.path())
        .env_remove("INTEROP_GATEWAY_CONFIG")
        .arg("call")
        .args(["--addr", &addr, "--ca"])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("agencies/{LAND_OFFICE}.pem")))
        .arg("--key")
        .arg(certs.join(format!("agencies/{LAND_OFFICE}.key")))
        .args(["GetCitizen", &request])
        .output()
        .unwrap();
    assert_success(&out);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["citizen"]["fullName"], first["fullName"]);
    // Without --ca it needs the config, and says which flags spare it.
    let out = Command::new(BIN)
        .current_dir(elsewhere.path())
        .env_remove("INTEROP_GATEWAY_CONFIG")
        .arg("call")
        .args([
            "--addr",
            &addr,
            "--agency",
            LAND_OFFICE,
            "GetCitizen",
            &request,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gateway.toml") && stderr.contains("give --addr, --ca, --cert and --key"),
        "{stderr}"
    );

    let (status, log) = serve.terminate_with_log();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    assert!(log.contains("stopped"), "{log}");
    // The access log line masks the personal id.
    assert!(log.contains("GetCitizen") && !log.contains(&id), "{log}");
}

#[test]
fn certs_init_and_issue_write_a_working_dev_pki() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        config_text(&[], "pki/ca.pem").replace("certs/gateway", "pki/gateway"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["certs", "init", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_success(&out);
    let pki = dir.path().join("pki");
    for f in ["ca.pem", "ca.key", "gateway.pem", "gateway.key"] {
        assert!(pki.join(f).is_file(), "{f}");
    }
    for code in [LAND_OFFICE, BUSINESS_OFFICE, PORTAL] {
        assert!(
            pki.join("agencies").join(format!("{code}.pem")).is_file(),
            "{code}"
        );
    }
    let ca_before = std::fs::read(pki.join("ca.pem")).unwrap();

    let out = Command::new(BIN)
        .args(["certs", "issue", "--agency", "000.00.31.H13", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in"),
        "warns about the unconfigured agency"
    );
    let pem = std::fs::read(pki.join("agencies/000.00.31.H13.pem")).unwrap();
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    assert_eq!(
        interop_gateway::identity::spiffe_uris(&der).unwrap(),
        vec![format!("spiffe://{TRUST_DOMAIN}/agency/000.00.31.H13")]
    );
    // init again keeps what exists
    let out = Command::new(BIN)
        .args(["certs", "init", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read(pki.join("ca.pem")).unwrap(), ca_before);

    let out = Command::new(BIN)
        .args(["certs", "issue", "--agency", "H13", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn committed_dev_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    let config = Config::load(&path).unwrap();
    assert!(config.dev);
    assert_eq!(config.agencies.len(), 3);
}

/// `call` with mixed-up certificate files: each failure names the file and
/// the cause, and a transport failure prints no invented gRPC status.
#[test]
fn call_names_the_file_and_cause_of_mixed_up_certificates() {
    let (dir, pki, config) = prepared_dir();
    let d = dir.path();
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let land = pki.agency(LAND_OFFICE);
    let business = pki.agency(BUSINESS_OFFICE);
    let unknown = pki.agency("000.00.99.H13");
    let land_pem = write("land.pem", &land.cert_pem);
    let land_key = write("land.key", &land.key_pem);
    let business_key = write("business.key", &business.key_pem);
    let unknown_pem = write("unknown.pem", &unknown.cert_pem);
    let unknown_key = write("unknown.key", &unknown.key_pem);
    let stranger = interop_gateway::pki::Ca::generate("stranger").unwrap();
    let stranger_ca = write("stranger-ca.pem", stranger.cert_pem());
    let ca = pki.dir.join("ca.pem");
    let ca_key = pki.dir.join("ca.key");

    let serve = ServeProcess::start(&config, None);
    let addr = serve.addr.trim_start_matches("https://").to_owned();
    let request = format!(
        r#"{{"context": {{"procedureCode": "{PROCEDURE_LAND}", "dossierId": "{DOSSIER}"}}, "personalId": "{CITIZEN_ID}"}}"#
    );
    let call = |ca: &Path, cert: &Path, key: &Path| {
        let out = Command::new(BIN)
            .args(["call", "--config"])
            .arg(&config)
            .args(["--addr", &addr, "--ca"])
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["GetCitizen", &request])
            .output()
            .unwrap();
        assert!(!out.status.success());
        // No gRPC status was received, so none is printed.
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    };

    let err = call(&ca, &ca, &ca_key);
    assert!(
        err.contains(&format!("{}: a CA certificate", ca.display())),
        "{err}"
    );
    let err = call(&ca, &land_pem, &business_key);
    assert!(
        err.contains(&format!(
            "{}: does not match the certificate {}",
            business_key.display(),
            land_pem.display()
        )),
        "{err}"
    );
    let err = call(&stranger_ca, &land_pem, &land_key);
    assert!(
        err.contains(&format!(
            "not issued by the CA in {}",
            stranger_ca.display()
        )),
        "{err}"
    );
    let err = call(&ca, &unknown_pem, &unknown_key);
    assert!(
        err.contains("closed the connection right after the TLS handshake"),
        "{err}"
    );
    assert!(err.contains(&unknown_pem.display().to_string()), "{err}");
    // The same files in the right places work.
    let ok = Command::new(BIN)
        .args(["call", "--config"])
        .arg(&config)
        .args(["--addr", &addr, "--ca"])
        .arg(&ca)
        .arg("--cert")
        .arg(&land_pem)
        .arg("--key")
        .arg(&land_key)
        .args(["GetCitizen", &request])
        .output()
        .unwrap();
    assert_success(&ok);
    assert!(serve.terminate().success());
}
