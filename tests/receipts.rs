//! Signed receipts over real mTLS: every answered data call carries, in its
//! trailers, a JWS signed with the access log's key that names the call and
//! the SHA-256 of the response message bytes; refusals carry none; the
//! `receipt verify` command checks one offline.

mod support;

use interop_gateway::{
    audit,
    proto::{
        citizen::v1::GetCitizenRequest,
        land::v1::{GetParcelRequest, ParcelRef},
    },
    receipt::{self, ReceiptError, RECEIPT_TRAILER},
};
use prost::Message;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_interop-gateway");

fn public_key(gw: &Gateway) -> [u8; 32] {
    let pem = std::fs::read_to_string(gw.config.audit.dir.join(audit::PUB_FILE)).unwrap();
    audit::parse_public_key_pem(&pem).unwrap()
}

fn get_citizen() -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: CITIZEN_ID.to_owned(),
        read_mask: None,
    }
}

#[tokio::test]
async fn an_answer_carries_a_receipt_naming_the_call_and_the_exact_response() {
    let gw = receipting().await;
    let key = public_key(&gw);
    let mut c = gw.client(LAND_OFFICE).await;
    let response = c.citizen.get_citizen(get_citizen()).await.unwrap();
    let request_id = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let jws = response
        .metadata()
        .get(RECEIPT_TRAILER)
        .expect("a receipt in the trailers")
        .to_str()
        .unwrap()
        .to_owned();
    // prost encodes deterministically: these are the bytes the gateway sent.
    let bytes = response.get_ref().encode_to_vec();
    let claims = receipt::verify(&key, &jws, Some(&bytes)).unwrap();
    assert_eq!(claims.rid, request_id);
    assert_eq!(claims.agency, LAND_OFFICE);
    assert_eq!(
        claims.method,
        "interop.citizen.v1.CitizenRegistryService/GetCitizen"
    );
    assert_eq!(claims.procedure, PROCEDURE_LAND);
    assert_eq!(claims.dossier, DOSSIER);
    assert_eq!(claims.subjects, [CITIZEN_ID]);
    assert_eq!(
        claims.fields,
        [
            "date_of_birth",
            "full_name",
            "permanent_address",
            "personal_id"
        ]
    );
    assert_eq!(claims.outcome, "OK");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - claims.iat).abs() < 600, "iat {}", claims.iat);

    // Any other response bytes do not match it.
    let mut other = response.into_inner();
    other.citizen.as_mut().unwrap().full_name.push('x');
    assert!(matches!(
        receipt::verify(&key, &jws, Some(&other.encode_to_vec())),
        Err(ReceiptError::ResponseMismatch { .. })
    ));

    // Each answer has its own receipt, naming its own record.
    let parcel = c
        .land
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
    let jws2 = parcel
        .metadata()
        .get(RECEIPT_TRAILER)
        .unwrap()
        .to_str()
        .unwrap();
    let claims2 = receipt::verify(&key, jws2, Some(&parcel.get_ref().encode_to_vec())).unwrap();
    assert_eq!(
        claims2.method,
        "interop.land.v1.LandRegistryService/GetParcel"
    );
    assert_ne!(claims2.rid, claims.rid);
    gw.stop().await;
}

#[tokio::test]
async fn refused_calls_carry_no_receipt() {
    let gw = receipting().await;
    let mut c = gw.client(PORTAL).await;
    let err = c.citizen.get_citizen(get_citizen()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.metadata().get(RECEIPT_TRAILER).is_none());
    let mut land = gw.client(LAND_OFFICE).await;
    let mut absent = get_citizen();
    absent.personal_id = ABSENT_CITIZEN_ID.into();
    let err = land.citizen.get_citizen(absent).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.metadata().get(RECEIPT_TRAILER).is_none());
    gw.stop().await;
}

#[tokio::test]
async fn receipt_verify_checks_the_signature_and_the_response_file() {
    let gw = receipting().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let response = c.citizen.get_citizen(get_citizen()).await.unwrap();
    let jws = response
        .metadata()
        .get(RECEIPT_TRAILER)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let dir = gw.dir.path();
    let receipt_file = dir.join("receipt.jws");
    std::fs::write(&receipt_file, &jws).unwrap();
    let response_file = dir.join("response.bin");
    std::fs::write(&response_file, response.get_ref().encode_to_vec()).unwrap();
    let public_key = gw.config.audit.dir.join(audit::PUB_FILE);
    let run = |receipt: &str, response: &std::path::Path| {
        std::process::Command::new(BIN)
            .args(["receipt", "verify", "--public-key"])
            .arg(&public_key)
            .args(["--receipt", receipt, "--response-file"])
            .arg(response)
            .output()
            .unwrap()
    };
    let out = run(receipt_file.to_str().unwrap(), &response_file);
    assert_success(&out);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["agency"], LAND_OFFICE);
    // The JWS given inline works the same.
    assert_success(&run(&jws, &response_file));

    let tampered = dir.join("tampered.bin");
    let mut bytes = response.get_ref().encode_to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&tampered, bytes).unwrap();
    let out = run(&jws, &tampered);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("response does not match the receipt"), "{err}");
    gw.stop().await;
}

/// A gateway configured to give receipts (`[audit] receipts = true`).
async fn receipting() -> Gateway {
    Gateway::start_with(Options {
        extra_config: "\n[audit]\nreceipts = true\n".into(),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn receipts_are_off_unless_configured() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let response = c.citizen.get_citizen(get_citizen()).await.unwrap();
    assert!(response.metadata().get("x-request-id").is_some());
    assert!(response.metadata().get(RECEIPT_TRAILER).is_none());
    gw.stop().await;
}
