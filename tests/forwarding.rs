//! Forwarding to registry owners, end to end: two gateway processes over real
//! mutual TLS, each with its own CA. The owner serves its embedded store and
//! knows the front gateway as a relay; the front holds no registry and
//! forwards every registry service to the owner.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use interop_gateway::{
    client::Client,
    pki::{self, Validity},
    proto::{
        business::v1::GetEnterpriseRequest,
        citizen::v1::{GetCitizenRequest, VerifyCitizenRequest},
        common::v1::Date,
        land::v1::{GetParcelRequest, ListParcelsByHolderRequest, ParcelRef},
    },
};
use support::*;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// The front gateway's own agency code (a province's data-sharing platform).
const FRONT: &str = "000.00.00.H13";
/// Owners of the three registries, as the owner's gateway declares them.
const CITIZEN_OWNER: &str = "000.00.00.G04";
const LAND_OWNER: &str = "000.00.00.G16";
const BUSINESS_OWNER: &str = "000.00.00.G12";
const CITIZEN_SERVICE: &str = "interop.citizen.v1.CitizenRegistryService";
const UPSTREAM_TIMEOUT_MS: u64 = 1500;

/// Grants the owner gives the consumers. Its GetCitizen grant for the land
/// office is narrower than the front's (no date of birth, no address).
fn owner_config(port: u16) -> String {
    format!(
        r#"
listen = "127.0.0.1:{port}"
trust_domain = "{TRUST_DOMAIN}"
data_dir = "data"

[tls]
cert = "certs/gateway.pem"
key = "certs/gateway.key"
client_ca = "certs/ca.pem"

[[agency]]
code = "{FRONT}"
name = "Nền tảng chia sẻ dữ liệu TP Cần Thơ"
relay = true

[[agency]]
code = "{LAND_OFFICE}"
name = "Văn phòng Đăng ký đất đai TP Cần Thơ"

[[agency]]
code = "{BUSINESS_OFFICE}"
name = "Phòng Đăng ký kinh doanh"

[[registry]]
service = "interop.citizen.v1.CitizenRegistryService"
owner = "{CITIZEN_OWNER}"

[[registry]]
service = "interop.land.v1.LandRegistryService"
owner = "{LAND_OWNER}"

[[registry]]
service = "interop.business.v1.BusinessRegistryService"
owner = "{BUSINESS_OWNER}"

[[grant]]
agency = "{LAND_OFFICE}"
method = "interop.citizen.v1.CitizenRegistryService/GetCitizen"
procedures = ["{PROCEDURE_LAND}"]
fields = ["personal_id", "full_name"]

[[grant]]
agency = "{LAND_OFFICE}"
method = "interop.citizen.v1.CitizenRegistryService/VerifyCitizen"
procedures = ["{PROCEDURE_LAND}"]

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
agency = "{BUSINESS_OFFICE}"
method = "interop.business.v1.BusinessRegistryService/GetEnterprise"
procedures = ["{PROCEDURE_BUSINESS}"]
fields = ["enterprise_code", "name", "type", "status", "head_office.province_code", "legal_representatives"]
"#
    )
}

/// The front: the test suite's usual grants plus a GetCitizen grant for the
/// business office that the owner does not give, and every registry
/// forwarded to the owner.
fn front_config(owner_port: u16) -> String {
    let mut text = config_text(&[], "certs/ca.pem");
    text.push_str(&format!(
        r#"
[[grant]]
agency = "{BUSINESS_OFFICE}"
method = "interop.citizen.v1.CitizenRegistryService/GetCitizen"
procedures = ["{PROCEDURE_BUSINESS}"]
fields = ["full_name"]
"#
    ));
    // The admin listener, for the forwarding metrics.
    text.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    for (service, owner) in [
        ("interop.citizen.v1.CitizenRegistryService", CITIZEN_OWNER),
        ("interop.land.v1.LandRegistryService", LAND_OWNER),
        (
            "interop.business.v1.BusinessRegistryService",
            BUSINESS_OWNER,
        ),
    ] {
        text.push_str(&format!(
            r#"
[[registry]]
service = "{service}"
owner = "{owner}"
upstream = {{ address = "127.0.0.1:{owner_port}", server_name = "localhost", ca = "certs/owner-ca.pem", cert = "certs/relay.pem", key = "certs/relay.key", timeout_ms = {UPSTREAM_TIMEOUT_MS} }}
"#
        ));
    }
    text
}

/// A front gateway forwarding every registry service to the owner on
/// `owner_port`, whose CA is `owner_pki`'s.
fn start_front(owner_pki: &Pki, owner_port: u16) -> (tempfile::TempDir, Pki, ServeProcess) {
    // The front's client certificate toward the owner, from the owner's CA:
    // its SPIFFE id is the front's agency identity there.
    let front_dir = tempfile::tempdir().unwrap();
    let front_pki = Pki::new(front_dir.path());
    let relay = owner_pki
        .ca
        .issue_agency(TRUST_DOMAIN, FRONT, Validity::days_from_now(30))
        .unwrap();
    pki::write_issued(
        &front_pki.dir.join("relay.pem"),
        &front_pki.dir.join("relay.key"),
        &relay,
    )
    .unwrap();
    pki::write_file(
        &front_pki.dir.join("owner-ca.pem"),
        owner_pki.ca.cert_pem(),
        false,
    )
    .unwrap();
    let front_cfg = front_dir.path().join("gateway.toml");
    std::fs::write(&front_cfg, front_config(owner_port)).unwrap();
    let front = ServeProcess::start(&front_cfg, None);
    (front_dir, front_pki, front)
}

struct Pair {
    owner_dir: tempfile::TempDir,
    owner_pki: Pki,
    owner_port: u16,
    owner: Option<ServeProcess>,
    front_dir: tempfile::TempDir,
    front_pki: Pki,
    front: ServeProcess,
}

impl Pair {
    fn start() -> Pair {
        let owner_dir = tempfile::tempdir().unwrap();
        let owner_pki = Pki::new(owner_dir.path());
        let owner_cfg = owner_dir.path().join("gateway.toml");
        std::fs::write(&owner_cfg, owner_config(0)).unwrap();
        let cfg = interop_gateway::config::Config::load(&owner_cfg).unwrap();
        store_fixtures(owner_dir.path(), &cfg.store_path());
        let owner = ServeProcess::start(&owner_cfg, None);
        // The owner picked its port; a restart binds that same port again.
        let owner_port: u16 = owner
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the owner's address has a port");
        std::fs::write(&owner_cfg, owner_config(owner_port)).unwrap();

        let (front_dir, front_pki, front) = start_front(&owner_pki, owner_port);
        Pair {
            owner_dir,
            owner_pki,
            owner_port,
            owner: Some(owner),
            front_dir,
            front_pki,
            front,
        }
    }

    async fn front_client(&self, agency: &str) -> Client {
        let issued = self.front_pki.agency(agency);
        Client::connect(&self.front.addr, &self.front_pki.identity(&issued))
            .await
            .unwrap()
    }

    /// A client of the owner's gateway itself, with a certificate from the
    /// owner's CA.
    async fn owner_client(&self, agency: &str) -> Client {
        let issued = self.owner_pki.agency(agency);
        let addr = format!("https://127.0.0.1:{}", self.owner_port);
        Client::connect(&addr, &self.owner_pki.identity(&issued))
            .await
            .unwrap()
    }

    fn owner_config_path(&self) -> PathBuf {
        self.owner_dir.path().join("gateway.toml")
    }

    fn front_config_path(&self) -> PathBuf {
        self.front_dir.path().join("gateway.toml")
    }
}

/// Every record of a gateway's access log, oldest first, through `audit export`.
fn export(config: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_interop-gateway"))
        .args(["audit", "export", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_success(&out);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].clone())
        .collect()
}

fn record_with_id<'a>(records: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    records
        .iter()
        .find(|r| r["request_id"] == id)
        .unwrap_or_else(|| panic!("no record {id} in {records:#?}"))
}

fn request_id<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn forwarded_lookups_reach_the_owner_narrowed_and_are_logged_on_both_sides() {
    let pair = Pair::start();
    let mut land = pair.front_client(LAND_OFFICE).await;

    // The front grants four citizen fields, the owner two: the consumer gets
    // the intersection, without being denied for what it did not ask.
    let answer = land
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: CITIZEN_ID.into(),
            read_mask: None,
        })
        .await
        .unwrap();
    let citizen_rid = request_id(&answer);
    let body = answer.into_inner();
    let citizen = body.citizen.unwrap();
    assert_eq!(citizen.personal_id, CITIZEN_ID);
    assert_eq!(citizen.full_name, "Nguyễn Văn An");
    assert_eq!(citizen.date_of_birth, None);
    assert_eq!(citizen.permanent_address, None);
    let provenance = body.provenance.unwrap();
    assert_eq!(provenance.source_agency, CITIZEN_OWNER);
    let as_of = provenance.as_of.expect("as_of of an imported record");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - 3600..=now + 60).contains(&as_of.seconds),
        "{as_of:?}"
    );

    // A read mask naming a field the front grants and the owner does not:
    // the consumer receives the rest of what it asked for.
    let narrowed = land
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: CITIZEN_ID.into(),
            read_mask: Some(pbjson_types::FieldMask {
                paths: vec!["full_name".into(), "date_of_birth".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .citizen
        .unwrap();
    assert_eq!(narrowed.full_name, "Nguyễn Văn An");
    assert_eq!(narrowed.personal_id, "");
    assert_eq!(narrowed.date_of_birth, None);

    let parcel = land
        .land
        .get_parcel(GetParcelRequest {
            context: context(PROCEDURE_LAND),
            parcel: Some(ParcelRef {
                commune_code: COMMUNE.into(),
                map_sheet: 12,
                parcel_number: 101,
            }),
            read_mask: Some(pbjson_types::FieldMask {
                paths: vec!["area_m2".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(parcel.parcel.as_ref().unwrap().area_m2, 120.5);
    assert!(parcel.parcel.as_ref().unwrap().holders.is_empty());
    assert_eq!(parcel.provenance.unwrap().source_agency, LAND_OWNER);

    let list = land
        .land
        .list_parcels_by_holder(ListParcelsByHolderRequest {
            context: context(PROCEDURE_LAND),
            holder_id: CITIZEN_ID.into(),
            page_size: 2,
            page_token: String::new(),
            read_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.parcels.len(), 2);
    assert!(!list.next_page_token.is_empty());
    // The owner's page token works through the front.
    let rest = land
        .land
        .list_parcels_by_holder(ListParcelsByHolderRequest {
            context: context(PROCEDURE_LAND),
            holder_id: CITIZEN_ID.into(),
            page_size: 10,
            page_token: list.next_page_token.clone(),
            read_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.parcels.len(), HOLDER_PARCELS as usize - 2);

    let verified = land
        .citizen
        .verify_citizen(VerifyCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: CITIZEN_ID.into(),
            full_name: "Nguyễn Văn An".into(),
            date_of_birth: Some(Date {
                year: 1985,
                month: 3,
                day: 4,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.r#match);

    let mut business = pair.front_client(BUSINESS_OFFICE).await;
    let enterprise = business
        .business
        .get_enterprise(GetEnterpriseRequest {
            context: context(PROCEDURE_BUSINESS),
            enterprise_code: ENTERPRISE_CODE.into(),
            read_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        enterprise.enterprise.unwrap().name,
        "Công ty TNHH Thương mại Tây Đô"
    );
    assert_eq!(enterprise.provenance.unwrap().source_agency, BUSINESS_OWNER);

    // Both logs hold the call under the same request id; the owner's names
    // the consumer and the relay, and both name the fields actually given.
    let owner_log = export(&pair.owner_config_path());
    let front_log = export(&pair.front_config_path());
    let at_owner = record_with_id(&owner_log, &citizen_rid);
    assert_eq!(at_owner["agency_code"], LAND_OFFICE);
    assert_eq!(at_owner["relay_agency_code"], FRONT);
    assert_eq!(strings(&at_owner["fields"]), ["full_name", "personal_id"]);
    assert_eq!(strings(&at_owner["subjects"]), [CITIZEN_ID]);
    let at_front = record_with_id(&front_log, &citizen_rid);
    assert_eq!(at_front["agency_code"], LAND_OFFICE);
    assert!(at_front.get("relay_agency_code").is_none());
    assert_eq!(strings(&at_front["fields"]), ["full_name", "personal_id"]);
    assert_eq!(at_front["outcome"], "OK");
    assert_eq!(owner_log.len(), front_log.len());
    assert!(owner_log.iter().all(|r| r["relay_agency_code"] == FRONT));

    // The three services have one owner gateway: one connection to it,
    // health probes included.
    let front_pid = pair.front.child.id();
    assert_eq!(connections_to(front_pid, pair.owner_port), 1);
}

/// Established TCP connections of process `pid` to loopback port `port`
/// (Linux: its socket inodes in `/proc/<pid>/fd`, matched in `/proc/net/tcp`).
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let remote = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&remote) && f[3] == "01" && inodes.contains(f[9])
        })
        .count()
}

#[tokio::test]
async fn owner_statuses_reach_the_consumer_unchanged() {
    let pair = Pair::start();
    let mut land = pair.front_client(LAND_OFFICE).await;

    let status = land
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: ABSENT_CITIZEN_ID.into(),
            read_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(reason(&status), "RECORD_NOT_FOUND");
    assert!(status.metadata().get("x-request-id").is_some());

    // The front leaves record keys to their owner: the owner's BadRequest.
    let status = land
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: "09208500012".into(),
            read_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["personal_id"]);

    // The front grants the business office a citizen lookup; the owner
    // does not: the owner's own refusal, with its details.
    let mut business = pair.front_client(BUSINESS_OFFICE).await;
    let status = business
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_BUSINESS),
            personal_id: CITIZEN_ID.into(),
            read_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&status), "METHOD_NOT_GRANTED");
    assert!(status.message().contains(BUSINESS_OFFICE), "{status:?}");

    // A refusal of the front's own never reaches the owner.
    let before = export(&pair.owner_config_path()).len();
    let mut portal = pair.front_client(PORTAL).await;
    let status = portal
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_PORTAL),
            personal_id: CITIZEN_ID.into(),
            read_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "METHOD_NOT_GRANTED");
    let owner_log = export(&pair.owner_config_path());
    assert_eq!(owner_log.len(), before);
    let outcomes: Vec<&str> = owner_log
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["NOT_FOUND", "INVALID_ARGUMENT", "PERMISSION_DENIED"]
    );
    // Both logs name each refusal's reason: the owner's, passed on.
    let reasons = |log: &[serde_json::Value]| -> Vec<String> {
        log.iter()
            .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        reasons(&owner_log),
        ["RECORD_NOT_FOUND", "INVALID_ARGUMENT", "METHOD_NOT_GRANTED"]
    );
    assert_eq!(
        reasons(&export(&pair.front_config_path())),
        [
            "RECORD_NOT_FOUND",
            "INVALID_ARGUMENT",
            "METHOD_NOT_GRANTED",
            "METHOD_NOT_GRANTED"
        ]
    );
}

#[tokio::test]
async fn only_relays_may_call_on_behalf_of_another_agency() {
    let pair = Pair::start();
    let request = |on_behalf_of: Option<&str>| {
        let mut r = tonic::Request::new(GetCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: CITIZEN_ID.into(),
            read_mask: None,
        });
        if let Some(code) = on_behalf_of {
            r.metadata_mut()
                .insert("x-interop-on-behalf-of", code.parse().unwrap());
        }
        r
    };

    // A consumer calling the owner directly may not speak for another.
    let mut land = pair.owner_client(LAND_OFFICE).await;
    let status = land
        .citizen
        .get_citizen(request(Some(BUSINESS_OFFICE)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&status), "RELAY_NOT_ALLOWED");
    // Without the header it is itself, as always.
    assert!(land.citizen.get_citizen(request(None)).await.is_ok());

    // The relay may, for configured agencies only.
    let mut relay = pair.owner_client(FRONT).await;
    let status = relay
        .citizen
        .get_citizen(request(Some("000.00.99.H99")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&status), "UNKNOWN_AGENCY");
    assert!(relay
        .citizen
        .get_citizen(request(Some(LAND_OFFICE)))
        .await
        .is_ok());
    // A relay without the header is itself, and holds no grant of its own.
    let status = relay.citizen.get_citizen(request(None)).await.unwrap_err();
    assert_eq!(reason(&status), "METHOD_NOT_GRANTED");
    // Two agencies named: which one the call is for would be a guess.
    let mut twice = request(Some(LAND_OFFICE));
    twice
        .metadata_mut()
        .append("x-interop-on-behalf-of", BUSINESS_OFFICE.parse().unwrap());
    let status = relay.citizen.get_citizen(twice).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("more than once"), "{status:?}");
}

/// Waits, through the front's `grpc.health.v1` Watch stream (no polling),
/// until `service` reports `want`.
async fn await_health(client: &Client, service: &str, want: ServingStatus) {
    let mut health = HealthClient::new(client.channel.clone());
    let mut stream = health
        .watch(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let wait = async {
        while let Some(update) = stream.message().await.unwrap() {
            if update.status == want as i32 {
                return;
            }
        }
        panic!("health stream ended before {want:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("{service} never became {want:?}"));
}

#[tokio::test]
async fn an_owner_that_goes_down_fails_fast_and_is_followed_back_without_restart() {
    let mut pair = Pair::start();
    let mut land = pair.front_client(LAND_OFFICE).await;
    let lookup = || GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    };
    land.citizen.get_citizen(lookup()).await.unwrap();
    await_health(&land, CITIZEN_SERVICE, ServingStatus::Serving).await;

    let mut owner = pair.owner.take().unwrap();
    owner.child.kill().unwrap();
    owner.child.wait().unwrap();

    let started = Instant::now();
    let status = land.citizen.get_citizen(lookup()).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "UPSTREAM_UNAVAILABLE");
    // Addresses and socket errors are for the front's operator, not consumers.
    assert!(
        !status.message().contains("127.0.0.1") && !status.message().contains("tcp"),
        "{}",
        status.message()
    );
    {
        use tonic_types::StatusExt;
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.metadata["service"], CITIZEN_SERVICE);
        assert_eq!(info.metadata["owner"], CITIZEN_OWNER);
    }
    // Within timeout_ms and a margin (a generous one: machines are shared).
    assert!(
        took < Duration::from_millis(UPSTREAM_TIMEOUT_MS) + Duration::from_secs(3),
        "{took:?}"
    );
    await_health(&land, CITIZEN_SERVICE, ServingStatus::NotServing).await;
    // Other services of the front follow their own owner: same one here.
    // The failed call is in the front's log like any other.
    let front_log = export(&pair.front_config_path());
    assert_eq!(front_log.last().unwrap()["outcome"], "UNAVAILABLE");

    // The owner comes back on the same address; the front, never restarted,
    // notices by itself and serves again.
    let front_pid = pair.front.child.id();
    pair.owner = Some(ServeProcess::start(&pair.owner_config_path(), None));
    await_health(&land, CITIZEN_SERVICE, ServingStatus::Serving).await;
    let again = land
        .citizen
        .get_citizen(lookup())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.citizen.unwrap().personal_id, CITIZEN_ID);
    assert_eq!(pair.front.child.id(), front_pid);
    assert!(pair.front.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn forwarded_calls_and_failures_are_counted_per_owner() {
    let mut pair = Pair::start();
    let admin = pair.front.admin_addr().expect("the front's admin listener");
    let lookup = || GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: None,
    };
    let mut land = pair.front_client(LAND_OFFICE).await;
    land.citizen.get_citizen(lookup()).await.unwrap();
    land.citizen.get_citizen(lookup()).await.unwrap();
    // The front grants the business office a citizen lookup, the owner
    // does not: the owner's answer, counted as an answer.
    let mut business = pair.front_client(BUSINESS_OFFICE).await;
    let denied = business
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_BUSINESS),
            personal_id: CITIZEN_ID.into(),
            read_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let text = scrape(&admin).await;
    let forwarded = |text: &str, code: &str| {
        metric(
            text,
            "interop_gateway_forwarded_calls_total",
            &[("owner", CITIZEN_OWNER), ("code", code)],
        )
    };
    assert_eq!(forwarded(&text, "OK"), Some(2.0), "{text}");
    assert_eq!(forwarded(&text, "PERMISSION_DENIED"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "interop_gateway_forwarded_failures_total",
            &[("owner", CITIZEN_OWNER)]
        ),
        None
    );
    // The consumers' calls on the front, by the consumer's agency.
    assert_eq!(
        metric(
            &text,
            "interop_gateway_calls_total",
            &[
                ("agency", BUSINESS_OFFICE),
                (
                    "method",
                    "interop.citizen.v1.CitizenRegistryService/GetCitizen"
                ),
                ("code", "PERMISSION_DENIED")
            ]
        ),
        Some(1.0)
    );
    // The front's certificate toward the owner and the owner's CA.
    for certificate in [
        format!("upstream.{CITIZEN_OWNER}.cert"),
        format!("upstream.{CITIZEN_OWNER}.ca[0]"),
    ] {
        assert!(
            metric(
                &text,
                "interop_gateway_certificate_expiry_seconds",
                &[("certificate", &certificate)]
            )
            .is_some_and(|s| s > 0.0),
            "{certificate}: {text}"
        );
    }

    // The owner gone: no answer at all, a failure.
    let mut owner = pair.owner.take().unwrap();
    owner.child.kill().unwrap();
    owner.child.wait().unwrap();
    let status = land.citizen.get_citizen(lookup()).await.unwrap_err();
    assert_eq!(reason(&status), "UPSTREAM_UNAVAILABLE");
    let text = scrape(&admin).await;
    assert_eq!(
        metric(
            &text,
            "interop_gateway_forwarded_failures_total",
            &[("owner", CITIZEN_OWNER)]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(forwarded(&text, "UNAVAILABLE"), Some(1.0));
    assert_eq!(forwarded(&text, "OK"), Some(2.0));
}

/// An owner's gateway that does not keep the contract: for `CITIZEN_ID` it
/// answers with every field whatever the mask; for any other id it answers
/// within the mask but names another source and under-reports what it gave;
/// it never answers a verification.
#[derive(Clone)]
struct Misbehaving;

#[tonic::async_trait]
impl interop_gateway::proto::citizen::v1::citizen_registry_service_server::CitizenRegistryService
    for Misbehaving
{
    async fn get_citizen(
        &self,
        request: tonic::Request<GetCitizenRequest>,
    ) -> Result<
        tonic::Response<interop_gateway::proto::citizen::v1::GetCitizenResponse>,
        tonic::Status,
    > {
        let asked = request.into_inner().personal_id;
        if let Some(status) = owner_failure(&asked) {
            return Err(status);
        }
        let mut citizen = citizen();
        let mut answer =
            tonic::Response::new(interop_gateway::proto::citizen::v1::GetCitizenResponse {
                citizen: None,
                provenance: Some(interop_gateway::proto::common::v1::Provenance {
                    source_agency: "999.99.99.X99".into(),
                    as_of: Some(pbjson_types::Timestamp {
                        seconds: 1_790_000_000,
                        nanos: 0,
                    }),
                }),
            });
        if asked != CITIZEN_ID {
            citizen = interop_gateway::proto::citizen::v1::Citizen {
                personal_id: asked,
                full_name: citizen.full_name,
                ..Default::default()
            };
            answer
                .metadata_mut()
                .insert("x-interop-disclosed-fields", "full_name".parse().unwrap());
        }
        answer.get_mut().citizen = Some(citizen);
        Ok(answer)
    }

    async fn verify_citizen(
        &self,
        _: tonic::Request<VerifyCitizenRequest>,
    ) -> Result<
        tonic::Response<interop_gateway::proto::citizen::v1::VerifyCitizenResponse>,
        tonic::Status,
    > {
        std::future::pending().await
    }
}

/// The statuses [`Misbehaving`] answers for some ids: its own failure with
/// its internals in the message, a refusal of the relay, its own
/// unavailability.
fn owner_failure(asked: &str) -> Option<tonic::Status> {
    use tonic_types::{ErrorDetails, StatusExt};
    let with_reason = |code, message: &str, reason: &str| {
        tonic::Status::with_error_details(
            code,
            message,
            ErrorDetails::with_error_info(reason, "elsewhere", []),
        )
    };
    match asked {
        "092085000125" => Some(tonic::Status::internal(
            "stack trace /srv/owner/app.py line 42 db=postgres://admin:pw@10.0.0.5",
        )),
        "092085000126" => Some(with_reason(
            tonic::Code::Unauthenticated,
            "agency secret-name is not configured here",
            "UNKNOWN_AGENCY",
        )),
        "092085000127" => Some(with_reason(
            tonic::Code::Unavailable,
            "disk /dev/sdb3 full",
            "AUDIT_UNAVAILABLE",
        )),
        // A refusal passed on, with an endless message and a stack trace.
        "092085000128" => {
            let mut details = ErrorDetails::with_error_info("RECORD_NOT_FOUND", "elsewhere", []);
            details
                .set_resource_info("citizen", "092085000128", "", "")
                .set_debug_info(vec!["/srv/owner/app.py line 42".into()], "secret-name");
            Some(tonic::Status::with_error_details(
                tonic::Code::NotFound,
                "x".repeat(5000),
                details,
            ))
        }
        _ => None,
    }
}

#[tokio::test]
async fn an_owner_answering_beyond_the_mask_or_not_at_all_discloses_nothing() {
    use interop_gateway::proto::citizen::v1::citizen_registry_service_server::CitizenRegistryServiceServer;
    let owner_dir = tempfile::tempdir().unwrap();
    let owner_pki = Pki::new(owner_dir.path());
    let tls = interop_gateway::tls::server_config(&interop_gateway::config::TlsFiles {
        cert: owner_pki.dir.join("gateway.pem"),
        key: owner_pki.dir.join("gateway.key"),
        client_ca: owner_pki.dir.join("ca.pem"),
        crls: vec![],
        require_client_auth_eku: true,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let admission = interop_gateway::connections::Admission::new(Default::default(), None);
    let incoming = interop_gateway::server::tls_incoming(listener, tls, admission, stopped);
    // It does answer health checks, so the front keeps sending it calls.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(CITIZEN_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(CitizenRegistryServiceServer::new(Misbehaving))
            .serve_with_incoming(incoming),
    );
    let (front_dir, front_pki, front) = start_front(&owner_pki, port);
    let issued = front_pki.agency(LAND_OFFICE);
    let mut land = Client::connect(&front.addr, &front_pki.identity(&issued))
        .await
        .unwrap();

    let status = land
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: CITIZEN_ID.into(),
            read_mask: Some(pbjson_types::FieldMask {
                paths: vec!["full_name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert!(!format!("{status:?}").contains("1985"), "{status:?}");

    // Within the mask but under-reported, with another source named: the
    // front records what it passed on and names the configured owner.
    let answer = land
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: "092085000124".into(),
            read_mask: None,
        })
        .await
        .unwrap();
    let rid = request_id(&answer);
    let answer = answer.into_inner();
    assert_eq!(answer.citizen.unwrap().personal_id, "092085000124");
    let provenance = answer.provenance.unwrap();
    assert_eq!(provenance.source_agency, CITIZEN_OWNER);
    assert_eq!(provenance.as_of.unwrap().seconds, 1_790_000_000);

    // The owner's own failures: its text stays with it.
    let mut failed = Vec::new();
    for (id, code, why) in [
        ("092085000125", tonic::Code::Internal, "INTERNAL"),
        (
            "092085000126",
            tonic::Code::PermissionDenied,
            "UPSTREAM_REFUSED",
        ),
        (
            "092085000127",
            tonic::Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
        ),
    ] {
        let status = land
            .citizen
            .get_citizen(GetCitizenRequest {
                context: context(PROCEDURE_LAND),
                personal_id: id.into(),
                read_mask: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (code, why),
            "{status:?}"
        );
        let shown = format!("{status:?}");
        for secret in ["postgres://", "secret-name", "/dev/sdb3", "elsewhere"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(status.message().contains(CITIZEN_OWNER), "{status:?}");
        failed.push(status);
    }
    let refused = tonic_types::StatusExt::get_error_details(&failed[1]);
    let metadata = &refused.error_info().unwrap().metadata;
    assert_eq!(metadata["owner_reason"], "UNKNOWN_AGENCY");
    assert_eq!(metadata["owner"], CITIZEN_OWNER);
    // A refusal passes with what a client acts on, bounded; the debug
    // details stay with the owner.
    let status = land
        .citizen
        .get_citizen(GetCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: "092085000128".into(),
            read_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(reason(&status), "RECORD_NOT_FOUND");
    assert!(status.message().len() <= 1024, "{}", status.message().len());
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(
        details.resource_info().unwrap().resource_name,
        "092085000128"
    );
    assert!(details.debug_info().is_none());
    let shown = format!("{status:?}");
    assert!(
        !shown.contains("secret-name") && !shown.contains("app.py"),
        "{shown}"
    );
    assert!(status.details().len() < 2048, "{}", status.details().len());

    let started = Instant::now();
    let status = land
        .citizen
        .verify_citizen(VerifyCitizenRequest {
            context: context(PROCEDURE_LAND),
            personal_id: CITIZEN_ID.into(),
            full_name: "Nguyễn Văn An".into(),
            date_of_birth: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "UPSTREAM_UNAVAILABLE");
    assert!(started.elapsed() >= Duration::from_millis(UPSTREAM_TIMEOUT_MS));
    assert!(
        started.elapsed() < Duration::from_millis(UPSTREAM_TIMEOUT_MS) + Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let front_log = export(&front_dir.path().join("gateway.toml"));
    let outcomes: Vec<&str> = front_log
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "INTERNAL",
            "OK",
            "INTERNAL",
            "PERMISSION_DENIED",
            "UNAVAILABLE",
            "NOT_FOUND",
            "UNAVAILABLE"
        ]
    );
    let passed_on = record_with_id(&front_log, &rid);
    assert_eq!(strings(&passed_on["fields"]), ["full_name", "personal_id"]);
    drop(front);
    let _ = stop.send(true);
    server.abort();
}

#[tokio::test]
async fn registry_entries_are_checked_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let path = dir.path().join("gateway.toml");
    let base = config_text(&[], "certs/ca.pem");
    let error = |extra: &str| {
        let text = format!("{base}\n{extra}");
        interop_gateway::config::Config::parse(&text, &path)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let entry = |service: &str, upstream: &str| {
        format!("[[registry]]\nservice = \"{service}\"\nowner = \"{CITIZEN_OWNER}\"\n{upstream}\n")
    };
    let e = error(&entry("interop.citizen.v1.CitizenService", ""));
    assert!(
        e.contains("registry[0].service") && e.contains("not a registry service"),
        "{e}"
    );
    let e = error(&entry("interop.audit.v1.AccessLogService", ""));
    assert!(e.contains("never forwarded"), "{e}");
    let twice = entry(CITIZEN_SERVICE, "").repeat(2);
    let e = error(&twice);
    assert!(
        e.contains("registry[1].service") && e.contains("twice"),
        "{e}"
    );
    let e = error(&entry(
        CITIZEN_SERVICE,
        "upstream = { address = \"127.0.0.1:50061\", ca = \"certs/missing.pem\", cert = \"certs/gateway.pem\", key = \"certs/gateway.key\" }",
    ));
    assert!(
        e.contains("registry[0].upstream.ca") && e.contains("missing.pem"),
        "{e}"
    );
    let e = error(&entry(
        CITIZEN_SERVICE,
        "upstream = { address = \"127.0.0.1\", ca = \"certs/ca.pem\", cert = \"certs/gateway.pem\", key = \"certs/gateway.key\" }",
    ));
    assert!(e.contains("registry[0].upstream.address"), "{e}");
    let e = error(&entry(
        CITIZEN_SERVICE,
        "upstream = { address = \"127.0.0.1:1\", ca = \"certs/ca.pem\", cert = \"certs/gateway.pem\", key = \"certs/gateway.key\", retries = 3 }",
    ));
    assert!(e.contains("retries"), "{e}");
    let ok = format!(
        "{base}\n{}",
        entry(
            CITIZEN_SERVICE,
            "upstream = { address = \"localhost:50061\", ca = \"certs/ca.pem\", cert = \"certs/gateway.pem\", key = \"certs/gateway.key\" }"
        )
    );
    let config = interop_gateway::config::Config::parse(&ok, &path).unwrap();
    let upstream = config
        .registry(CITIZEN_SERVICE)
        .unwrap()
        .upstream
        .clone()
        .unwrap();
    assert_eq!(upstream.server_name, "localhost");
    assert_eq!(upstream.timeout, Duration::from_millis(2000));
    assert!(interop_gateway::upstream::Upstreams::from_config(&config).is_ok());

    // A key that is not the certificate's is named at start, as the key.
    let other = pki.agency(LAND_OFFICE);
    std::fs::write(pki.dir.join("other.key"), &other.key_pem).unwrap();
    let mismatched = ok.replace("certs/gateway.key", "certs/other.key");
    let config = interop_gateway::config::Config::parse(&mismatched, &path).unwrap();
    let e = interop_gateway::upstream::Upstreams::from_config(&config)
        .unwrap_err()
        .to_string();
    assert!(e.contains("upstream.key") && e.contains("other.key"), "{e}");

    // check-config says so too, as serve would, and names a missing store
    // while a service is still served from it.
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = gateway_cli(&["check-config"], &path);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = check(&mismatched);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("upstream.key") && stderr.contains("other.key"),
        "{stderr}"
    );
    let (code, stderr) = check(&ok);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("registry.sqlite") && stderr.contains("does not exist"),
        "{stderr}"
    );
    let store = interop_gateway::config::Config::parse(&ok, &path)
        .unwrap()
        .store_path();
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::write(&store, b"").unwrap();
    let (code, stderr) = check(&ok);
    assert_eq!(code, Some(0), "{stderr}");
    drop(pki);
}
