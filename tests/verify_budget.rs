//! The verification budget over real mTLS: `VerifyCitizen` cannot be used to
//! find what a verification grant withholds.

mod support;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use interop_gateway::{
    clock::ManualClock,
    proto::{
        audit::v1::ListAccessRecordsRequest,
        citizen::v1::{VerifyCitizenRequest, VerifyCitizenResponse},
        common::v1::Date,
    },
};
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);

/// Lets the business office verify citizens too (for its own procedure).
fn business_verify_grant() -> String {
    format!(
        r#"
[[grant]]
agency = "{BUSINESS_OFFICE}"
method = "interop.citizen.v1.CitizenRegistryService/VerifyCitizen"
procedures = ["{PROCEDURE_BUSINESS}"]
"#
    )
}

async fn start(extra_config: String) -> (Gateway, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let gw = Gateway::start_with(Options {
        extra_config,
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    (gw, clock)
}

fn verify(procedure: &str, id: &str, dob: Date) -> VerifyCitizenRequest {
    VerifyCitizenRequest {
        context: context(procedure),
        personal_id: id.into(),
        full_name: String::new(),
        date_of_birth: Some(dob),
    }
}

fn true_dob() -> Date {
    citizen().date_of_birth.unwrap()
}

fn wrong_dob(day: i32) -> Date {
    Date {
        year: 1985,
        month: 12,
        day,
    }
}

/// Every date of 1985 in a fixed shuffled order (a multiplicative
/// permutation of the days of the year).
fn shuffled_year() -> Vec<Date> {
    const MONTHS: [i32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut dates = Vec::new();
    for (m, len) in MONTHS.iter().enumerate() {
        for day in 1..=*len {
            dates.push(Date {
                year: 1985,
                month: m as i32 + 1,
                day,
            });
        }
    }
    assert_eq!(dates.len(), 365);
    (0..365).map(|i| dates[(i * 173) % 365]).collect()
}

fn scope(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get("scope").cloned())
        .unwrap_or_default()
}

fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
}

fn assert_refused(
    result: Result<tonic::Response<VerifyCitizenResponse>, tonic::Status>,
    want_scope: &str,
) -> tonic::Status {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "VERIFICATION_LIMIT");
    assert_eq!(scope(&status), want_scope);
    status
}

#[tokio::test]
async fn enumerating_a_birth_year_stops_at_the_budget_without_finding_the_date() {
    let (gw, clock) = start(business_verify_grant()).await;
    let mut land = gw.client(LAND_OFFICE).await;
    let guesses = shuffled_year();
    let truth = true_dob();
    let position = guesses.iter().position(|d| *d == truth).unwrap();
    assert!(position >= 5, "the true date must lie beyond the budget");

    // Dates no one is born on are malformed requests: refused as such, and
    // they spend nothing of the budget below.
    for bad in [
        Date {
            year: 2002,
            month: 2,
            day: 30,
        },
        Date::default(),
        Date {
            year: 1970,
            month: 0,
            day: 0,
        },
        Date {
            year: 0,
            month: 6,
            day: 5,
        },
    ] {
        let status = land
            .citizen
            .verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, bad))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{bad:?}: {status:?}"
        );
    }

    let (mut answered, mut refused) = (0, 0);
    for dob in &guesses {
        match land
            .citizen
            .verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, *dob))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                assert!(!r.r#match, "the enumeration confirmed {dob:?}");
                // One field supplied: which one failed is not told.
                assert!(r.mismatched_fields.is_empty());
                answered += 1;
            }
            Err(status) => {
                assert_refused(Err(status.clone()), "subject");
                // The clock stands still: the first failure frees a slot a
                // whole window after it was made.
                assert_eq!(retry_delay(&status), Some(DAY));
                refused += 1;
            }
        }
    }
    assert_eq!((answered, refused), (5, 360));
    // Even the right answer is refused now: a refusal says nothing.
    let status = assert_refused(
        land.citizen
            .verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, truth))
            .await,
        "subject",
    );
    assert!(status.message().contains("24 h"), "{}", status.message());

    // Another agency, and another subject of this agency, are unaffected.
    let mut business = gw.client(BUSINESS_OFFICE).await;
    let r = business
        .citizen
        .verify_citizen(verify(PROCEDURE_BUSINESS, CITIZEN_ID, truth))
        .await
        .unwrap()
        .into_inner();
    assert!(r.r#match);
    let absent = land
        .citizen
        .verify_citizen(verify(PROCEDURE_LAND, ABSENT_CITIZEN_ID, truth))
        .await
        .unwrap_err();
    assert_eq!(absent.code(), Code::NotFound);

    // A window later, the budget frees.
    clock.advance(DAY - Duration::from_secs(1));
    assert_refused(
        land.citizen
            .verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, truth))
            .await,
        "subject",
    );
    clock.advance(Duration::from_secs(1));
    let r = land
        .citizen
        .verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, truth))
        .await
        .unwrap()
        .into_inner();
    assert!(r.r#match);
    gw.stop().await;
}

#[tokio::test]
async fn concurrent_guesses_cannot_overrun_the_budget() {
    let (gw, _clock) = start(String::new()).await;
    let land = gw.client(LAND_OFFICE).await;
    let mut tasks = Vec::new();
    for day in 1..=31 {
        let mut c = land.citizen.clone();
        tasks.push(tokio::spawn(async move {
            c.verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, wrong_dob(day)))
                .await
        }));
    }
    let mut answered = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert!(!r.into_inner().r#match);
                answered += 1;
            }
            Err(status) => {
                assert_refused(Err(status), "subject");
            }
        }
    }
    assert_eq!(answered, 5);
    gw.stop().await;
}

#[tokio::test]
async fn the_agency_ceiling_bounds_a_sweep_over_many_subjects() {
    let extra = format!(
        "{}\n[limits]\nverify_failures_per_agency_hour = 3\n",
        business_verify_grant()
    );
    let (gw, clock) = start(extra).await;
    let mut land = gw.client(LAND_OFFICE).await;
    // One guess each about ids that are not in the registry: NOT_FOUND
    // tells a prober something, so it counts.
    for serial in ["000990", "000991", "000992"] {
        let id = format!("092190{serial}");
        let status = land
            .citizen
            .verify_citizen(verify(PROCEDURE_LAND, &id, true_dob()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        clock.advance(Duration::from_secs(60));
    }
    // The fourth subject is refused before the registry is read, even with
    // the right data.
    let status = assert_refused(
        land.citizen
            .verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, true_dob()))
            .await,
        "agency",
    );
    assert_eq!(retry_delay(&status), Some(HOUR - Duration::from_secs(180)));
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.metadata["limit"], "3");
    assert_eq!(info.metadata["window_seconds"], "3600");

    let mut business = gw.client(BUSINESS_OFFICE).await;
    assert!(
        business
            .citizen
            .verify_citizen(verify(PROCEDURE_BUSINESS, CITIZEN_ID, true_dob()))
            .await
            .unwrap()
            .into_inner()
            .r#match
    );

    clock.advance(HOUR - Duration::from_secs(180));
    assert!(
        land.citizen
            .verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, true_dob()))
            .await
            .unwrap()
            .into_inner()
            .r#match
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_restart_does_not_reset_the_budget_and_refusals_are_logged_and_reported() {
    let (mut gw, _clock) = start(String::new()).await;
    let mut land = gw.client(LAND_OFFICE).await;
    for day in 1..=5 {
        let r = land
            .citizen
            .verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, wrong_dob(day)))
            .await
            .unwrap();
        assert!(!r.into_inner().r#match);
    }
    gw.restart().await;
    let mut land = gw.client(LAND_OFFICE).await;
    let status = assert_refused(
        land.citizen
            .verify_citizen(verify(PROCEDURE_LAND, CITIZEN_ID, true_dob()))
            .await,
        "subject",
    );
    assert_eq!(retry_delay(&status), Some(DAY));

    // The refusal is in the access log like any other call.
    let mut portal = gw.client(PORTAL).await;
    let records = portal
        .access_log
        .list_access_records(ListAccessRecordsRequest {
            context: context(PROCEDURE_PORTAL),
            subject_id: CITIZEN_ID.into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let outcomes: Vec<&str> = records
        .iter()
        .filter(|r| r.method.ends_with("/VerifyCitizen"))
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(
        outcomes,
        ["RESOURCE_EXHAUSTED", "OK", "OK", "OK", "OK", "OK"]
    );

    // The operator's export names the refusal's reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_interop-gateway"))
        .args(["audit", "export", "--config"])
        .arg(&gw.config.path)
        .output()
        .unwrap();
    assert_success(&out);
    let reasons: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].clone())
        .filter(|r| r["outcome"] == "RESOURCE_EXHAUSTED")
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(reasons, ["VERIFICATION_LIMIT"]);

    // And the operator sees the agency probing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_interop-gateway"))
        .args(["report", "verifications", "--format", "json", "--config"])
        .arg(&gw.config.path)
        .output()
        .unwrap();
    assert_success(&out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &rows[0];
    assert_eq!(first["agency_code"], LAND_OFFICE);
    assert_eq!(first["answered"], 5);
    assert_eq!(first["mismatches"], 5);
    assert_eq!(first["failed"], 5);
    assert_eq!(first["refused"], 1);
    assert_eq!(first["subjects_refused"], 1);
    gw.stop().await;
}
