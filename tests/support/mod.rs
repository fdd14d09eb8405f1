//! Shared test scaffolding: a per-run PKI, a config, a small store with known
//! records, and a real gateway on 127.0.0.1:0 called over mTLS.
#![allow(dead_code)]

pub mod pg;

use std::path::{Path, PathBuf};

use interop_gateway::{
    client::{AgencyIdentity, Client},
    config::Config,
    pki::{self, Ca, IssuedCert, Validity},
    proto::{
        business::v1::{BusinessLine, Enterprise, Representative},
        citizen::v1::{Citizen, IdCard},
        common::v1::{AccessContext, Address, Date},
        land::v1::{Certificate, Holder, LandUse, Parcel, ParcelRef},
    },
    registry::{import::import_file, Registry},
    server::{self, Running},
};
use tempfile::TempDir;

pub mod raw;
pub mod stalled;
pub mod watch;

pub const TRUST_DOMAIN: &str = "interop.example.vn";
/// Land registration office: citizen lookups (some fields) and land.
pub const LAND_OFFICE: &str = "000.00.20.H13";
/// Business registration office: enterprise lookups.
pub const BUSINESS_OFFICE: &str = "000.00.12.H13";
/// A configured agency with no grants at all.
pub const PORTAL: &str = "000.00.00.G22";

pub const PROCEDURE_LAND: &str = "1.004227";
pub const PROCEDURE_BUSINESS: &str = "2.000815";
pub const PROCEDURE_PORTAL: &str = "2.002154";
pub const DOSSIER: &str = "000.00.20.H13-241205-0001";

pub const CITIZEN_ID: &str = "092085000123";
/// Well-formed (province 092, 1900s female, 1990) but not in the store.
pub const ABSENT_CITIZEN_ID: &str = "092190000999";
pub const ENTERPRISE_CODE: &str = "0300588569";
pub const COMMUNE: &str = "31117";
pub const HOLDER_PARCELS: u32 = 5;

pub fn context(procedure: &str) -> Option<AccessContext> {
    Some(AccessContext {
        procedure_code: procedure.to_owned(),
        dossier_id: DOSSIER.to_owned(),
        officer_id: "officer-7".to_owned(),
    })
}

/// GetCitizen of the stored citizen for the land office's procedure.
pub fn citizen_request() -> interop_gateway::proto::citizen::v1::GetCitizenRequest {
    interop_gateway::proto::citizen::v1::GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    }
}

fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

fn address() -> Option<Address> {
    Some(Address {
        address_line: "12 đường Hòa Bình".into(),
        commune_code: COMMUNE.into(),
        commune_name: "Phường Ninh Kiều".into(),
        province_code: "92".into(),
        province_name: "Cần Thơ".into(),
    })
}

pub fn citizen() -> Citizen {
    Citizen {
        personal_id: CITIZEN_ID.into(),
        full_name: "Nguyễn Văn An".into(),
        date_of_birth: date(1985, 3, 4),
        sex: 1,
        nationality: "Việt Nam".into(),
        ethnicity: "Kinh".into(),
        hometown: address(),
        permanent_address: address(),
        current_address: address(),
        household_id: "HK-92-000123".into(),
        id_card: Some(IdCard {
            issued_on: date(2021, 5, 10),
            expires_on: date(2025, 3, 4),
            issued_by: "Cục Cảnh sát quản lý hành chính về trật tự xã hội".into(),
        }),
        date_of_death: None,
    }
}

pub fn parcel(number: u32) -> Parcel {
    Parcel {
        r#ref: Some(ParcelRef {
            commune_code: COMMUNE.into(),
            map_sheet: 12,
            parcel_number: number,
        }),
        address: address(),
        area_m2: 120.5,
        land_uses: vec![LandUse {
            purpose_code: "ODT".into(),
            area_m2: 120.5,
            term_until: None,
        }],
        holders: vec![Holder {
            holder_id: CITIZEN_ID.into(),
            name: "Nguyễn Văn An".into(),
            kind: 1,
        }],
        certificate: Some(Certificate {
            serial: "AA 01224578".into(),
            registry_book_number: "CS01234".into(),
            issued_on: date(2024, 9, 1),
            issued_by: "Sở Nông nghiệp và Môi trường thành phố Cần Thơ".into(),
        }),
        encumbrances: vec![],
    }
}

pub fn enterprise() -> Enterprise {
    Enterprise {
        enterprise_code: ENTERPRISE_CODE.into(),
        name: "Công ty TNHH Thương mại Tây Đô".into(),
        foreign_name: "Tay Do Trading Company Limited".into(),
        short_name: "TAY DO TRADING".into(),
        r#type: 1,
        status: 1,
        founded_on: date(2010, 6, 1),
        charter_capital_vnd: 5_000_000_000,
        head_office: address(),
        legal_representatives: vec![Representative {
            personal_id: CITIZEN_ID.into(),
            full_name: "Nguyễn Văn An".into(),
            title: "Giám đốc".into(),
        }],
        business_lines: vec![BusinessLine {
            vsic_code: "4690".into(),
            description: "Bán buôn tổng hợp".into(),
            main: true,
        }],
    }
}

pub fn write_jsonl<T: serde::Serialize>(path: &Path, records: &[T]) {
    let lines: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A per-run dev PKI.
pub struct Pki {
    pub ca: Ca,
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca = Ca::generate("test CA").unwrap();
        let dir = dir.join("certs");
        pki::write_file(&dir.join("ca.pem"), ca.cert_pem(), false).unwrap();
        pki::write_file(&dir.join("ca.key"), &ca.key_pem(), true).unwrap();
        let server = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        pki::write_issued(&dir.join("gateway.pem"), &dir.join("gateway.key"), &server).unwrap();
        Pki { ca, dir }
    }

    pub fn agency(&self, code: &str) -> IssuedCert {
        self.ca
            .issue_agency(TRUST_DOMAIN, code, Validity::days_from_now(30))
            .unwrap()
    }

    pub fn identity(&self, issued: &IssuedCert) -> AgencyIdentity {
        AgencyIdentity {
            ca_pem: self.ca.cert_pem().as_bytes().to_vec(),
            cert_pem: issued.cert_pem.as_bytes().to_vec(),
            key_pem: issued.key_pem.as_bytes().to_vec(),
        }
    }
}

pub fn config_text(crls: &[&Path], client_ca: &str) -> String {
    let crls: Vec<String> = crls
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!(
        r#"
listen = "127.0.0.1:0"
trust_domain = "{TRUST_DOMAIN}"
data_dir = "data"

[tls]
cert = "certs/gateway.pem"
key = "certs/gateway.key"
client_ca = "{client_ca}"
crls = [{crls}]

[[agency]]
code = "{LAND_OFFICE}"
name = "Văn phòng Đăng ký đất đai TP Cần Thơ"

[[agency]]
code = "{BUSINESS_OFFICE}"
name = "Phòng Đăng ký kinh doanh, Sở Tài chính TP Cần Thơ"

[[agency]]
code = "{PORTAL}"
name = "Cổng Dịch vụ công quốc gia"

[[grant]]
agency = "{LAND_OFFICE}"
method = "interop.citizen.v1.CitizenRegistryService/GetCitizen"
procedures = ["{PROCEDURE_LAND}"]
fields = ["personal_id", "full_name", "date_of_birth", "permanent_address"]

[[grant]]
agency = "{LAND_OFFICE}"
method = "interop.land.v1.LandRegistryService/GetParcel"
procedures = ["{PROCEDURE_LAND}"]
fields = ["ref", "address", "area_m2", "land_uses", "holders", "certificate"]

[[grant]]
agency = "{LAND_OFFICE}"
method = "interop.land.v1.LandRegistryService/ListParcelsByHolder"
procedures = ["{PROCEDURE_LAND}"]
fields = ["ref", "area_m2", "holders"]

[[grant]]
agency = "{LAND_OFFICE}"
method = "interop.citizen.v1.CitizenRegistryService/VerifyCitizen"
procedures = ["{PROCEDURE_LAND}"]

[[grant]]
agency = "{PORTAL}"
method = "interop.audit.v1.AccessLogService/ListAccessRecords"
procedures = ["{PROCEDURE_PORTAL}"]

[[grant]]
agency = "{BUSINESS_OFFICE}"
method = "interop.business.v1.BusinessRegistryService/GetEnterprise"
procedures = ["{PROCEDURE_BUSINESS}"]
fields = ["enterprise_code", "name", "type", "status", "head_office.province_code", "legal_representatives"]
"#,
        crls = crls.join(", ")
    )
}

/// A running gateway with its folder, PKI and config.
pub struct Gateway {
    pub dir: TempDir,
    pub pki: Pki,
    pub config: Config,
    /// The config file's text as the gateway started with it.
    pub text: String,
    pub addr: String,
    /// `127.0.0.1:<port>` of the admin listener, when `[admin]` is configured.
    pub admin: Option<String>,
    running: Option<Running>,
    clock: Option<std::sync::Arc<dyn interop_gateway::clock::Clock>>,
}

#[derive(Default)]
pub struct Options {
    /// Extra PEM CA certificates appended to the client CA bundle.
    pub extra_client_ca: Option<String>,
    /// TOML appended to the config (tables such as `[limits]`, grants).
    pub extra_config: String,
    /// The clock the server reads instead of the system's.
    pub clock: Option<std::sync::Arc<dyn interop_gateway::clock::Clock>>,
}

async fn start_server(
    config: &Config,
    clock: &Option<std::sync::Arc<dyn interop_gateway::clock::Clock>>,
) -> Running {
    let mut options = server::StartOptions::default();
    if let Some(clock) = clock {
        options.clock = clock.clone();
    }
    server::start_with(config.clone(), options).await.unwrap()
}

pub fn store_fixtures(dir: &Path, store: &Path) {
    let citizens = dir.join("citizens.jsonl");
    write_jsonl(&citizens, &[citizen()]);
    let parcels = dir.join("parcels.jsonl");
    let list: Vec<Parcel> = (1..=HOLDER_PARCELS).map(|n| parcel(100 + n)).collect();
    write_jsonl(&parcels, &list);
    let enterprises = dir.join("enterprises.jsonl");
    write_jsonl(&enterprises, &[enterprise()]);
    import_file(store, Registry::Citizen, &citizens).unwrap();
    import_file(store, Registry::Land, &parcels).unwrap();
    import_file(store, Registry::Business, &enterprises).unwrap();
}

impl Gateway {
    pub async fn start() -> Gateway {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let client_ca = match &opts.extra_client_ca {
            Some(extra) => {
                let bundle = pki.dir.join("bundle.pem");
                std::fs::write(&bundle, format!("{}{}", pki.ca.cert_pem(), extra)).unwrap();
                "certs/bundle.pem"
            }
            None => "certs/ca.pem",
        };
        let path = dir.path().join("gateway.toml");
        let text = config_text(&[], client_ca) + &opts.extra_config;
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path).unwrap();
        store_fixtures(dir.path(), &config.store_path());
        let running = start_server(&config, &opts.clock).await;
        let addr = format!("https://127.0.0.1:{}", running.addr.port());
        let admin = running.admin_addr.map(|a| a.to_string());
        Gateway {
            dir,
            pki,
            config,
            text,
            addr,
            admin,
            running: Some(running),
            clock: opts.clock,
        }
    }

    /// Writes `text` as the config file and reloads it, as SIGHUP does.
    pub fn reload_with(
        &mut self,
        text: &str,
    ) -> Result<interop_gateway::snapshot::ReloadSummary, interop_gateway::config::ConfigError>
    {
        std::fs::write(&self.config.path, text).unwrap();
        let running = self.running.as_ref().expect("gateway running");
        let summary = running.reload()?;
        self.config = running.live().snapshot().config.clone();
        Ok(summary)
    }

    /// The stop signal: sending `true` starts the drain.
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.running
            .as_ref()
            .expect("gateway running")
            .shutdown_handle()
    }

    /// Waits until the server has stopped (after the stop signal); the
    /// folder is handed back for a look at what it left.
    pub async fn wait_stopped(mut self) -> TempDir {
        if let Some(r) = self.running.take() {
            r.wait().await.unwrap();
        }
        self.dir
    }

    /// Stops the server and starts it again on the same folder (and clock),
    /// on a new port.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
        let running = start_server(&self.config, &self.clock).await;
        self.addr = format!("https://127.0.0.1:{}", running.addr.port());
        self.admin = running.admin_addr.map(|a| a.to_string());
        self.running = Some(running);
    }

    /// Stops the server (sealing its access log) and keeps its folder and
    /// port, until [`Gateway::resume`]: a peer configured with its address
    /// finds it there again.
    pub async fn pause(&mut self) {
        if let Some(r) = self.running.take() {
            self.config.listen = r.addr;
            r.shutdown().await.unwrap();
        }
    }

    /// Starts the server again after [`Gateway::pause`], on the same port.
    pub async fn resume(&mut self) {
        let running = start_server(&self.config, &self.clock).await;
        self.addr = format!("https://127.0.0.1:{}", running.addr.port());
        self.admin = running.admin_addr.map(|a| a.to_string());
        self.running = Some(running);
    }

    /// A client with a fresh certificate for a configured agency.
    pub async fn client(&self, agency: &str) -> Client {
        let issued = self.pki.agency(agency);
        self.client_with(&issued).await
    }

    pub async fn client_with(&self, issued: &IssuedCert) -> Client {
        Client::connect(&self.addr, &self.pki.identity(issued))
            .await
            .unwrap()
    }

    /// The running server (its shutdown handle, its metrics).
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the gateway is running")
    }

    /// Waits for the server to stop after its shutdown signal was set.
    pub async fn wait(mut self) {
        if let Some(r) = self.running.take() {
            r.wait().await.unwrap();
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
    }

    /// Stops the server (sealing its access log) and hands back its folder.
    pub async fn stop_and_keep(mut self) -> TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
        self.dir
    }
}

/// A bare TLS connection (ALPN `h2`, nothing sent yet), for tests that
/// speak raw HTTP/2 or none at all.
#[allow(unused_imports)] // not every test binary speaks raw TLS
pub use raw::{port, tls_connect};

/// The `ErrorInfo.reason` of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// The `BadRequest` field names of a status.
pub fn bad_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The gateway binary running as a child process, killed if a test fails
/// before stopping it (so no process or pipe outlives the test).
pub struct ServeProcess {
    pub child: std::process::Child,
    pub addr: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    /// Starts `interop-gateway serve --config <config>` (through `sh -c` with
    /// `prefix` before it when given, e.g. `ulimit -f 8;`) and waits for its
    /// `serving ... addr=` line.
    pub fn start(config: &Path, prefix: Option<&str>) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let bin = env!("CARGO_BIN_EXE_interop-gateway");
        let mut cmd = match prefix {
            Some(p) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("{p} exec \"$0\" serve --config \"$1\""))
                    .arg(bin)
                    .arg(config);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.args(["serve", "--config"]).arg(config);
                c
            }
        };
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("serve exited before serving: {:?}", log.lock().unwrap());
            };
            log.lock().unwrap().push(line.clone());
            if line.contains("serving") {
                if let Some(rest) = line.split("addr=").nth(1) {
                    break rest.split_whitespace().next().unwrap().to_owned();
                }
            }
        };
        let sink = log.clone();
        let drain = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        ServeProcess {
            child,
            addr: format!("https://{addr}"),
            log,
            drain: Some(drain),
        }
    }

    /// Sends a signal (`HUP`, `TERM`) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until a log line contains `needle` (lines are read as the
    /// process writes them); panics with the log after 30 s.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}: {}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.terminate_with_log().0
    }

    /// SIGTERM, then the exit status and the whole log, to its last line.
    pub fn terminate_with_log(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        if let Some(drain) = self.drain.take() {
            drain.join().unwrap();
        }
        (status, self.log_text())
    }

    /// The admin listener's `host:port`, from its start-up line.
    pub fn admin_addr(&self) -> Option<String> {
        let log = self.log.lock().unwrap();
        log.iter().find_map(|line| {
            let rest = line.split(" admin=").nth(1)?;
            Some(rest.split_whitespace().next()?.to_owned())
        })
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder with a per-run PKI, a (non-dev) config and the fixture store.
pub fn prepared_dir() -> (TempDir, Pki, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text(&[], "certs/ca.pem")).unwrap();
    let cfg = Config::load(&config).unwrap();
    store_fixtures(dir.path(), &cfg.store_path());
    (dir, pki, config)
}

/// Asserts a command exited 0, showing its stderr if not.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET path` on a plain-HTTP listener (the admin listener): the status code
/// and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of one series in a Prometheus text exposition: `name` with
/// exactly `labels` (in any order). `None` when the series is absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, mut got) = match series.split_once('{') {
                Some((n, rest)) => (
                    n,
                    rest.trim_end_matches('}')
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| format!("{}\"", p.trim_end_matches('"')))
                        .collect::<Vec<_>>(),
                ),
                None => (series, Vec::new()),
            };
            got.sort();
            (series_name == name && got == wanted).then(|| value.parse().ok())?
        })
}

/// [`http_get`] of `/metrics`, checked to be a 200.
pub async fn scrape(admin: &str) -> String {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Asserts every request id in `answered` is among the records of an
/// `audit export` output (JSON lines with `record.request_id`).
pub fn assert_all_in_export(answered: &[String], export_stdout: &[u8]) {
    let logged: std::collections::HashSet<String> = String::from_utf8_lossy(export_stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["record"]["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} answered calls not in the log",
        missing.len()
    );
}

/// Runs `interop-gateway <args> --config <config>` and returns its output.
pub fn gateway_cli(args: &[&str], config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_interop-gateway"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}
