//! The access log in a PostgreSQL server reached over TLS, as libpq's URL
//! parameters say (`sslmode`, `sslrootcert`): the gateway (the built binary)
//! commits its records over TLS, refuses a server whose certificate does
//! not chain to `sslrootcert` or (with `verify-full`) does not name the
//! host, and `audit verify --database-url` reads over the same TLS.

mod support;

use std::{
    path::Path,
    process::{Command, Output},
};

use interop_gateway::{client::Client, proto::citizen::v1::GetCitizenRequest};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use support::{pg::PgCluster, *};

const BIN: &str = env!("CARGO_BIN_EXE_interop-gateway");

/// A CA and a server certificate it issued for `names`, as PEM.
struct ServerPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn server_pki(names: &[&str]) -> ServerPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "audit database test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    ServerPki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn read() -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// `serve` with `config`, which must stop at start: what it said.
fn refused_start(config: &Path) -> String {
    let out = cli(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success(), "{} started", config.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config whose access log is at `url`.
fn config_with(dir: &Path, name: &str, url: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = config_text(&[], "certs/ca.pem")
        + &format!(
            "\n[audit]\ndatabase_url = \"{url}\"\ninstance = \"{name}\"\ncheckpoint_every_seconds = 1\n"
        );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_written_over_verified_tls() {
    // The server's certificate names `localhost` only.
    let server = server_pki(&["localhost"]);
    let Some(pg) = PgCluster::start_tls_or_skip(
        "the_access_log_is_written_over_verified_tls",
        &server.cert_pem,
        &server.key_pem,
    ) else {
        return;
    };
    let (dir, pki, _) = prepared_dir();
    std::fs::create_dir_all(dir.path().join("certs/db")).unwrap();
    std::fs::write(dir.path().join("certs/db/ca.pem"), &server.ca_pem).unwrap();
    let other = server_pki(&["localhost"]);
    std::fs::write(dir.path().join("certs/db/other-ca.pem"), &other.ca_pem).unwrap();
    let port = pg.port;
    // `sslrootcert` is relative to the config's folder, as every path there.
    let full = format!(
        "postgresql://postgres@localhost:{port}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert=certs/db/ca.pem"
    );

    let gw = ServeProcess::start(&config_with(dir.path(), "gw-tls", &full), None);
    let land = pki.identity(&pki.agency(LAND_OFFICE));
    let mut client = Client::connect(&gw.addr, &land).await.unwrap();
    for _ in 0..3 {
        client.citizen.get_citizen(read()).await.unwrap();
    }
    // The gateway's connections are encrypted, seen from the server.
    let encrypted = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND application_name = 'interop-gateway'",
    );
    assert_ne!(encrypted, "0", "no TLS connection from the gateway");
    let plain = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE NOT ssl AND application_name = 'interop-gateway'",
    );
    assert_eq!(plain, "0");
    assert_eq!(
        pg.psql("SELECT count(*) FROM audit_records WHERE instance = 'gw-tls'"),
        "3"
    );

    // `audit verify` takes the same URL (its paths as the shell gives them).
    let abs = full.replace(
        "certs/db/ca.pem",
        &dir.path().join("certs/db/ca.pem").display().to_string(),
    );
    let out = cli(&["audit", "verify", "--database-url", &abs]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("gw-tls"), "{text}");
    drop(gw);

    // A server whose certificate chains to another CA is refused: the
    // gateway does not start, and says why.
    let wrong_ca = full.replace("certs/db/ca.pem", "certs/db/other-ca.pem");
    let err = refused_start(&config_with(dir.path(), "gw-wrong-ca", &wrong_ca));
    assert!(err.contains("invalid peer certificate"), "{err}");

    // verify-full checks the name: the server is not `127.0.0.1` by its
    // certificate. verify-ca checks the chain only, and connects.
    let by_ip = format!(
        "postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert=certs/db/ca.pem"
    );
    let err = refused_start(&config_with(dir.path(), "gw-by-ip", &by_ip));
    assert!(err.contains("not valid for name"), "{err}");
    let chain_only = by_ip.replace("verify-full", "verify-ca");
    let gw = ServeProcess::start(&config_with(dir.path(), "gw-ca", &chain_only), None);
    let mut client = Client::connect(&gw.addr, &land).await.unwrap();
    client.citizen.get_citizen(read()).await.unwrap();
    assert_eq!(
        pg.psql("SELECT count(*) FROM audit_records WHERE instance = 'gw-ca'"),
        "1"
    );
}

#[test]
fn bad_tls_parameters_are_config_errors_naming_the_key() {
    let (dir, _pki, _) = prepared_dir();
    let check = |name: &str, url: &str| {
        let config = config_with(dir.path(), name, url);
        let out = cli(&["check-config", "--config", config.to_str().unwrap()]);
        assert!(!out.status.success(), "{url} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for (name, url, wanted) in [
        (
            "no-root",
            "postgresql://gw@db.example/audit?sslmode=verify-full",
            &["audit.database_url", "needs sslrootcert"][..],
        ),
        (
            "missing-root",
            "postgresql://gw@db.example/audit?sslmode=verify-full&sslrootcert=certs/db/none.pem",
            &["audit.database_url: sslrootcert", "certs/db/none.pem"],
        ),
        (
            "bad-mode",
            "postgresql://gw@db.example/audit?sslmode=always",
            &["sslmode=\"always\""],
        ),
    ] {
        let err = check(name, url);
        for w in wanted {
            assert!(err.contains(w), "{url}: {err}");
        }
    }
}
