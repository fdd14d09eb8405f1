//! Data calls over real mTLS: grants, field filtering, argument checks and
//! the status codes with their `google.rpc` details.

mod support;

use interop_gateway::proto::{
    business::v1::GetEnterpriseRequest,
    citizen::v1::GetCitizenRequest,
    land::v1::{GetParcelRequest, ListParcelsByHolderRequest, ParcelRef},
};
use pbjson_types::FieldMask;
use support::*;
use tonic::Code;

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn get_citizen(id: &str, read_mask: Option<FieldMask>) -> GetCitizenRequest {
    GetCitizenRequest {
        context: context(PROCEDURE_LAND),
        personal_id: id.to_owned(),
        read_mask,
    }
}

#[tokio::test]
async fn empty_read_mask_returns_exactly_the_granted_fields() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let got = c
        .citizen
        .get_citizen(get_citizen(CITIZEN_ID, None))
        .await
        .unwrap();
    let citizen = got.into_inner().citizen.unwrap();
    let full = support::citizen();
    assert_eq!(citizen.personal_id, full.personal_id);
    assert_eq!(citizen.full_name, full.full_name);
    assert_eq!(citizen.date_of_birth, full.date_of_birth);
    assert_eq!(citizen.permanent_address, full.permanent_address);
    // Not granted: left empty.
    assert_eq!(citizen.sex, 0);
    assert_eq!(citizen.ethnicity, "");
    assert!(citizen.id_card.is_none());
    assert!(citizen.current_address.is_none());
    assert_eq!(citizen.household_id, "");
    gw.stop().await;
}

#[tokio::test]
async fn nested_read_mask_returns_only_that_subfield() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let got = c
        .citizen
        .get_citizen(get_citizen(
            CITIZEN_ID,
            mask(&["full_name", "permanent_address.province_code"]),
        ))
        .await
        .unwrap()
        .into_inner()
        .citizen
        .unwrap();
    assert_eq!(got.full_name, "Nguyễn Văn An");
    assert_eq!(got.personal_id, "");
    assert!(got.date_of_birth.is_none());
    let addr = got.permanent_address.unwrap();
    assert_eq!(addr.province_code, "92");
    assert_eq!(addr.commune_code, "");
    assert_eq!(addr.address_line, "");
    gw.stop().await;
}

#[tokio::test]
async fn read_mask_beyond_grant_is_permission_denied() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let err = c
        .citizen
        .get_citizen(get_citizen(
            CITIZEN_ID,
            mask(&["full_name", "id_card", "sex"]),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err), "FIELD_NOT_GRANTED");
    assert!(err.message().contains("id_card") && err.message().contains("sex"));
    use tonic_types::StatusExt;
    let details = err.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(
        info.metadata.get("fields").map(String::as_str),
        Some("id_card,sex")
    );
    gw.stop().await;
}

#[tokio::test]
async fn read_mask_with_unknown_path_is_invalid_argument() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let err = c
        .citizen
        .get_citizen(get_citizen(CITIZEN_ID, mask(&["full_name", "shoe_size"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&err), vec!["read_mask.paths[1]"]);
    gw.stop().await;
}

#[tokio::test]
async fn missing_or_malformed_context_is_invalid_argument() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let mut req = get_citizen(CITIZEN_ID, None);
    req.context = None;
    let err = c.citizen.get_citizen(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&err), vec!["context"]);

    let mut req = get_citizen(CITIZEN_ID, None);
    if let Some(ctx) = req.context.as_mut() {
        ctx.procedure_code = "1-004227".into();
        ctx.dossier_id = String::new();
    }
    let err = c.citizen.get_citizen(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields(&err),
        vec!["context.procedure_code", "context.dossier_id"]
    );
    gw.stop().await;
}

#[tokio::test]
async fn call_without_grant_for_method_is_permission_denied() {
    let gw = Gateway::start().await;
    let mut c = gw.client(PORTAL).await;
    let err = c
        .citizen
        .get_citizen(get_citizen(CITIZEN_ID, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err), "METHOD_NOT_GRANTED");
    // The business office may read enterprises, not citizens.
    let mut c = gw.client(BUSINESS_OFFICE).await;
    let err = c
        .citizen
        .get_citizen(get_citizen(CITIZEN_ID, None))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "METHOD_NOT_GRANTED");
    gw.stop().await;
}

#[tokio::test]
async fn call_for_another_procedure_is_permission_denied() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let mut req = get_citizen(CITIZEN_ID, None);
    req.context = context("1.000001");
    let err = c.citizen.get_citizen(req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err), "PROCEDURE_NOT_GRANTED");
    gw.stop().await;
}

#[tokio::test]
async fn invalid_personal_id_is_invalid_argument_and_absent_one_not_found() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    for bad in ["09208500012", "09208500012x", "999085000123", ""] {
        let err = c
            .citizen
            .get_citizen(get_citizen(bad, None))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(bad_fields(&err), vec!["personal_id"], "{bad:?}");
    }
    let err = c
        .citizen
        .get_citizen(get_citizen(ABSENT_CITIZEN_ID, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), "RECORD_NOT_FOUND");
    gw.stop().await;
}

#[tokio::test]
async fn get_parcel_and_its_errors() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let req = |commune: &str, sheet, number| GetParcelRequest {
        context: context(PROCEDURE_LAND),
        parcel: Some(ParcelRef {
            commune_code: commune.into(),
            map_sheet: sheet,
            parcel_number: number,
        }),
        read_mask: None,
    };
    let p = c
        .land
        .get_parcel(req(COMMUNE, 12, 101))
        .await
        .unwrap()
        .into_inner()
        .parcel
        .unwrap();
    assert_eq!(p.area_m2, 120.5);
    assert_eq!(p.holders[0].holder_id, CITIZEN_ID);
    assert_eq!(p.certificate.unwrap().serial, "AA 01224578");
    let err = c.land.get_parcel(req("3111", 0, 101)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields(&err),
        vec!["parcel.commune_code", "parcel.map_sheet"]
    );
    let err = c.land.get_parcel(req(COMMUNE, 12, 999)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    gw.stop().await;
}

#[tokio::test]
async fn list_parcels_by_holder_pages_with_opaque_tokens() {
    let gw = Gateway::start().await;
    let mut c = gw.client(LAND_OFFICE).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let resp = c
            .land
            .list_parcels_by_holder(ListParcelsByHolderRequest {
                context: context(PROCEDURE_LAND),
                holder_id: CITIZEN_ID.into(),
                page_size: 2,
                page_token: token.clone(),
                read_mask: mask(&["ref"]),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        for p in &resp.parcels {
            assert!(p.holders.is_empty(), "masked out");
            seen.push(p.r#ref.as_ref().unwrap().parcel_number);
        }
        if resp.next_page_token.is_empty() {
            break;
        }
        token = resp.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (101..=100 + HOLDER_PARCELS).collect::<Vec<_>>());

    // A token is bound to its holder.
    let first = c
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
    let err = c
        .land
        .list_parcels_by_holder(ListParcelsByHolderRequest {
            context: context(PROCEDURE_LAND),
            holder_id: ENTERPRISE_CODE.into(),
            page_size: 2,
            page_token: first.next_page_token,
            read_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&err), vec!["page_token"]);

    // A holder without parcels gets an empty list.
    let empty = c
        .land
        .list_parcels_by_holder(ListParcelsByHolderRequest {
            context: context(PROCEDURE_LAND),
            holder_id: ABSENT_CITIZEN_ID.into(),
            page_size: 0,
            page_token: String::new(),
            read_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.parcels.is_empty() && empty.next_page_token.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn get_enterprise_with_nested_grant_and_check_digit() {
    let gw = Gateway::start().await;
    let mut c = gw.client(BUSINESS_OFFICE).await;
    let req = |code: &str| GetEnterpriseRequest {
        context: context(PROCEDURE_BUSINESS),
        enterprise_code: code.into(),
        read_mask: None,
    };
    let e = c
        .business
        .get_enterprise(req(ENTERPRISE_CODE))
        .await
        .unwrap()
        .into_inner()
        .enterprise
        .unwrap();
    assert_eq!(e.name, "Công ty TNHH Thương mại Tây Đô");
    assert_eq!(e.head_office.as_ref().unwrap().province_code, "92");
    assert_eq!(
        e.head_office.as_ref().unwrap().address_line,
        "",
        "only province granted"
    );
    assert_eq!(e.charter_capital_vnd, 0, "not granted");
    assert!(e.business_lines.is_empty(), "not granted");
    assert_eq!(e.legal_representatives.len(), 1);

    let err = c
        .business
        .get_enterprise(req("0300588568"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("check digit"), "{}", err.message());
    let err = c
        .business
        .get_enterprise(req("0101248141"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    gw.stop().await;
}
