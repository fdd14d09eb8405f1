//! The access log over real mTLS: every call recorded, citizens' view of it,
//! verification instead of reading, and the log's integrity checks.

mod support;

use interop_gateway::proto::{
    audit::v1::ListAccessRecordsRequest,
    citizen::v1::{GetCitizenRequest, VerifyCitizenRequest},
    common::v1::Date,
    land::v1::{GetParcelRequest, ParcelRef},
};
use pbjson_types::FieldMask;
use prost::Message;
use support::*;
use tonic::Code;

fn get_citizen(mask: &[&str]) -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        read_mask: Some(FieldMask {
            paths: mask.iter().map(|p| (*p).to_owned()).collect(),
        }),
    }
}

fn list(subject: &str, page_size: i32, page_token: String) -> ListAccessRecordsRequest {
    ListAccessRecordsRequest {
        context: context(PROCEDURE_PORTAL),
        subject_id: subject.into(),
        page_size,
        page_token,
    }
}

#[tokio::test]
async fn subject_sees_every_read_of_its_records_newest_first_without_officer_ids() {
    let gw = Gateway::start().await;
    let mut land = gw.client(LAND_OFFICE).await;
    let ok = land
        .citizen
        .get_citizen(get_citizen(&["full_name"]))
        .await
        .unwrap();
    assert!(ok.metadata().get("x-request-id").is_some());
    let denied = land
        .citizen
        .get_citizen(get_citizen(&["sex"]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // A parcel the citizen holds: the holder sees that read too.
    land.land
        .get_parcel(GetParcelRequest {
            context: context(PROCEDURE_LAND),
            parcel: Some(ParcelRef {
                commune_code: COMMUNE.into(),
                map_sheet: 12,
                parcel_number: 101,
            }),
            read_mask: None,
        })
        .await
        .unwrap();

    let mut portal = gw.client(PORTAL).await;
    let mut records = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = portal
            .access_log
            .list_access_records(list(CITIZEN_ID, 2, token))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 2);
    let methods: Vec<&str> = records.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        vec![
            "interop.land.v1.LandRegistryService/GetParcel",
            "interop.citizen.v1.CitizenRegistryService/GetCitizen",
            "interop.citizen.v1.CitizenRegistryService/GetCitizen",
        ]
    );
    assert_eq!(records[1].outcome, "PERMISSION_DENIED");
    assert!(records[1].fields.is_empty());
    assert_eq!(records[2].outcome, "OK");
    assert_eq!(records[2].fields, vec!["full_name"]);
    for r in &records {
        assert_eq!(r.agency_code, LAND_OFFICE);
        assert_eq!(r.agency_name, "Văn phòng Đăng ký đất đai TP Cần Thơ");
        assert_eq!(r.procedure_code, PROCEDURE_LAND);
        assert_eq!(r.dossier_id, DOSSIER);
        assert!(r.time.is_some());
        let bytes = r.encode_to_vec();
        assert!(
            !bytes.windows(9).any(|w| w == b"officer-7"),
            "officer id must not reach the subject"
        );
    }
    // Newest first.
    let times: Vec<_> = records.iter().map(|r| r.time.unwrap()).collect();
    assert!(times
        .windows(2)
        .all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos)));

    // A token is bound to its subject; the method is granted like any other.
    let first = portal
        .access_log
        .list_access_records(list(CITIZEN_ID, 1, String::new()))
        .await
        .unwrap()
        .into_inner();
    let err = portal
        .access_log
        .list_access_records(list(ENTERPRISE_CODE, 1, first.next_page_token))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["page_token"]);
    let err = land
        .access_log
        .list_access_records(list(CITIZEN_ID, 1, String::new()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "METHOD_NOT_GRANTED");
    gw.stop().await;
}

/// Page tokens are sealed: the same position gives a different token each
/// time, so a portal cannot read from them how far into the log a page
/// starts; a token changed anywhere is refused.
#[tokio::test]
async fn page_tokens_are_encrypted_and_refused_when_changed() {
    let gw = Gateway::start().await;
    let mut land = gw.client(LAND_OFFICE).await;
    for _ in 0..3 {
        land.citizen
            .get_citizen(get_citizen(&["full_name"]))
            .await
            .unwrap();
    }
    let mut portal = gw.client(PORTAL).await;
    let first_page = || {
        let mut portal = portal.clone();
        async move {
            portal
                .access_log
                .list_access_records(list(CITIZEN_ID, 1, String::new()))
                .await
                .unwrap()
                .into_inner()
        }
    };
    // (Each listing is itself recorded under the subject, so the two first
    // pages start one record apart.)
    let (a, b) = (first_page().await, first_page().await);
    assert_ne!(a.next_page_token, b.next_page_token);
    assert_eq!(a.next_page_token.len(), b.next_page_token.len());
    for page in [&a, &b] {
        let raw: Vec<u8> = (0..page.next_page_token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&page.next_page_token[i..i + 2], 16).unwrap())
            .collect();
        // Not the kind and position in clear, as tokens used to be.
        assert!(!raw.starts_with(b"a1\x1f"));
        let second = portal
            .access_log
            .list_access_records(list(CITIZEN_ID, 1, page.next_page_token.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(second.records.len(), 1);
        assert_ne!(second.records, page.records);
    }
    // One hex digit changed, anywhere: INVALID_ARGUMENT naming page_token.
    let token = a.next_page_token;
    for i in [0, token.len() / 2, token.len() - 1] {
        let mut changed = token.clone().into_bytes();
        changed[i] = if changed[i] == b'0' { b'1' } else { b'0' };
        let err = portal
            .access_log
            .list_access_records(list(CITIZEN_ID, 1, String::from_utf8(changed).unwrap()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&err), vec!["page_token"]);
    }
    gw.stop().await;
}

fn verify(name: &str, dob: Option<Date>) -> VerifyCitizenRequest {
    VerifyCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.into(),
        full_name: name.into(),
        date_of_birth: dob,
    }
}

#[tokio::test]
async fn verify_citizen_answers_match_or_mismatch_and_never_record_data() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let dob = Some(Date {
        year: 1985,
        month: 3,
        day: 4,
    });
    let r = c
        .citizen
        .verify_citizen(verify("Nguyễn Văn An", dob))
        .await
        .unwrap()
        .into_inner();
    assert!(r.r#match && r.mismatched_fields.is_empty());
    // NFD input and extra whitespace still match (NFC + whitespace folding).
    let nfd = "  Nguye\u{302}\u{303}n   Va\u{306}n An ";
    let r = c
        .citizen
        .verify_citizen(verify(nfd, dob))
        .await
        .unwrap()
        .into_inner();
    assert!(r.r#match, "{r:?}");
    // Diacritics matter.
    let wrong_dob = Some(Date {
        year: 1985,
        month: 3,
        day: 5,
    });
    let r = c
        .citizen
        .verify_citizen(verify("Nguyen Van An", wrong_dob))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.r#match);
    assert_eq!(r.mismatched_fields, vec!["full_name", "date_of_birth"]);
    let bytes = r.encode_to_vec();
    for secret in ["Nguyễn Văn An", "1985", "Kinh"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} leaked"
        );
    }
    // Only the name is compared when only the name is given.
    let r = c
        .citizen
        .verify_citizen(verify("Nguyễn Văn An", None))
        .await
        .unwrap()
        .into_inner();
    assert!(r.r#match);
    let err = c
        .citizen
        .verify_citizen(verify("", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut absent = verify("X", None);
    absent.personal_id = ABSENT_CITIZEN_ID.into();
    assert_eq!(
        c.citizen.verify_citizen(absent).await.unwrap_err().code(),
        Code::NotFound
    );
    // Granted separately from GetCitizen.
    let mut biz = gw.client(BUSINESS_OFFICE).await;
    let mut req = verify("Nguyễn Văn An", None);
    req.context = context(PROCEDURE_BUSINESS);
    let err = biz.citizen.verify_citizen(req).await.unwrap_err();
    assert_eq!(reason(&err), "METHOD_NOT_GRANTED");
    gw.stop().await;
}
