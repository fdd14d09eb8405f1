//! The catalogue over real mTLS: what the gateway serves, described from its
//! proto contract, and each agency's own grants, to any configured agency and
//! to nobody else.

mod support;

use interop_gateway::{
    client::Client,
    pki::Validity,
    proto::catalog::v1::{ListMyGrantsRequest, ListServicesRequest},
};
use support::*;
use tonic::Code;

const REGISTRY_OWNERS: &str = r#"
[[registry]]
service = "interop.citizen.v1.CitizenRegistryService"
owner = "000.00.00.G04"
"#;

#[tokio::test]
async fn list_services_describes_every_method_and_field_path_from_the_contract() {
    let gw = Gateway::start_with(Options {
        extra_config: REGISTRY_OWNERS.into(),
        ..Options::default()
    })
    .await;
    // An agency without a single grant may read the catalogue.
    let mut c = gw.client(PORTAL).await;
    let services = c
        .catalog
        .list_services(ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services;
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "interop.citizen.v1.CitizenRegistryService",
            "interop.land.v1.LandRegistryService",
            "interop.business.v1.BusinessRegistryService",
            "interop.audit.v1.AccessLogService",
        ]
    );
    let citizen = &services[0];
    assert!(citizen
        .description
        .starts_with("Read access to citizen records."));
    let source = citizen.source.as_ref().unwrap();
    assert_eq!(source.owner_agency, "000.00.00.G04");
    assert!(!source.forwarded);
    assert_eq!(services[1].source.as_ref().unwrap().owner_agency, "");

    let get = &citizen.methods[0];
    assert_eq!(
        get.name,
        "interop.citizen.v1.CitizenRegistryService/GetCitizen"
    );
    assert!(get.description.starts_with("Returns the citizen"));
    assert_eq!(get.request_type, "interop.citizen.v1.GetCitizenRequest");
    assert_eq!(get.response_type, "interop.citizen.v1.GetCitizenResponse");
    assert_eq!(get.record_type, "interop.citizen.v1.Citizen");
    let field = |path: &str| get.fields.iter().find(|f| f.path == path).unwrap();
    let province = field("permanent_address.province_code");
    assert_eq!(province.r#type, "string");
    assert!(province.description.contains("province"), "{province:?}");
    assert_eq!(
        field("permanent_address").r#type,
        "interop.common.v1.Address"
    );
    assert_eq!(field("date_of_birth").r#type, "interop.common.v1.Date");
    assert!(get.fields.iter().all(|f| !f.description.is_empty()));

    let verify = &citizen.methods[1];
    assert_eq!(verify.record_type, "");
    assert!(verify.fields.is_empty());
    let parcel = &services[1].methods[0];
    let holders = parcel.fields.iter().find(|f| f.path == "holders").unwrap();
    assert!(holders.repeated);
    gw.stop().await;
}

#[tokio::test]
async fn list_my_grants_shows_the_callers_own_grants_and_nothing_of_others() {
    let gw = Gateway::start_with(Options {
        extra_config: REGISTRY_OWNERS.into(),
        ..Options::default()
    })
    .await;
    let mut c = gw.client(LAND_OFFICE).await;
    let mine = c
        .catalog
        .list_my_grants(ListMyGrantsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.agency_code, LAND_OFFICE);
    assert_eq!(mine.agency_name, "Văn phòng Đăng ký đất đai TP Cần Thơ");
    let methods: Vec<&str> = mine.grants.iter().map(|g| g.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "interop.citizen.v1.CitizenRegistryService/GetCitizen",
            "interop.citizen.v1.CitizenRegistryService/VerifyCitizen",
            "interop.land.v1.LandRegistryService/GetParcel",
            "interop.land.v1.LandRegistryService/ListParcelsByHolder",
        ]
    );
    let get = &mine.grants[0];
    assert_eq!(get.procedures, [PROCEDURE_LAND]);
    assert_eq!(
        get.fields,
        [
            "date_of_birth",
            "full_name",
            "permanent_address",
            "personal_id"
        ]
    );
    assert_eq!(get.source.as_ref().unwrap().owner_agency, "000.00.00.G04");
    // What any call may send and take; this agency has no share of its own.
    let names = |g: &interop_gateway::proto::catalog::v1::MethodGrant| {
        g.limits.iter().map(|l| l.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(get), ["max_request_bytes", "max_call_ms"]);
    assert_eq!(get.limits[0].value, 64 * 1024);
    assert_eq!(get.limits[1].exact_value, 30_000.0);
    let verify = &mine.grants[1];
    assert!(verify.fields.is_empty());
    let limit = |name: &str| {
        verify
            .limits
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value)
    };
    assert_eq!(limit("verify_failures_per_subject"), Some(5));
    assert_eq!(limit("verify_window_hours"), Some(24));
    assert_eq!(limit("verify_failures_per_agency_hour"), Some(100));
    let list = &mine.grants[3];
    assert_eq!(
        names(list),
        ["max_page_size", "max_request_bytes", "max_call_ms"]
    );
    // Nothing of another agency's grants: the business office's method and
    // the portal's procedure appear nowhere in the answer.
    let text = format!("{mine:?}");
    assert!(!text.contains("GetEnterprise"), "{text}");
    assert!(!text.contains(PROCEDURE_PORTAL), "{text}");
    assert!(!text.contains(PROCEDURE_BUSINESS), "{text}");

    let mut portal = gw.client(PORTAL).await;
    let theirs = portal
        .catalog
        .list_my_grants(ListMyGrantsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(theirs.agency_code, PORTAL);
    assert_eq!(theirs.grants.len(), 1);
    assert_eq!(
        theirs.grants[0].method,
        "interop.audit.v1.AccessLogService/ListAccessRecords"
    );
    assert_eq!(theirs.grants[0].procedures, [PROCEDURE_PORTAL]);
    gw.stop().await;
}

#[tokio::test]
async fn the_catalogue_is_closed_to_certificates_that_name_no_configured_agency() {
    let gw = Gateway::start().await;
    let unknown = gw
        .pki
        .ca
        .issue_agency(TRUST_DOMAIN, "000.00.99.H13", Validity::days_from_now(1))
        .unwrap();
    // The connection is closed right after the handshake: no catalogue
    // answer, only a transport failure (no status from a service).
    if let Ok(mut c) = Client::connect(&gw.addr, &gw.pki.identity(&unknown)).await {
        for err in [
            c.catalog
                .list_services(ListServicesRequest {})
                .await
                .unwrap_err(),
            c.catalog
                .list_my_grants(ListMyGrantsRequest {})
                .await
                .unwrap_err(),
        ] {
            assert!(reason(&err).is_empty(), "{err:?}");
            assert!(
                matches!(err.code(), Code::Unavailable | Code::Unknown),
                "{err:?}"
            );
        }
    }

    // An agency that is not a relay cannot ask about another agency's grants.
    let mut land = gw.client(LAND_OFFICE).await;
    let mut request = tonic::Request::new(ListMyGrantsRequest {});
    request
        .metadata_mut()
        .insert("x-interop-on-behalf-of", BUSINESS_OFFICE.parse().unwrap());
    let err = land.catalog.list_my_grants(request).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err), "RELAY_NOT_ALLOWED");
    gw.stop().await;
}
