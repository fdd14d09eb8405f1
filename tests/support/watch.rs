//! What the tests of `WatchAccessRecords` share: the portal's grant to
//! watch, lookups told apart by their dossier, and opening a watch.

use interop_gateway::{
    client::Client,
    proto::{
        audit::v1::{WatchAccessRecordsRequest, WatchAccessRecordsResponse},
        citizen::v1::GetCitizenRequest,
        common::v1::AccessContext,
    },
};
use tonic::Streaming;

use super::{context, CITIZEN_ID, PROCEDURE_LAND, PROCEDURE_PORTAL};

/// The portal's grant to watch (TOML, appended to a config).
pub const WATCH_GRANT: &str = r#"
[[grant]]
agency = "000.00.00.G22"
method = "interop.audit.v1.AccessLogService/WatchAccessRecords"
procedures = ["2.002154"]
"#;

pub const WATCH_METHOD: &str = "interop.audit.v1.AccessLogService/WatchAccessRecords";

/// The dossier of lookup `n`.
pub fn dossier(n: u32) -> String {
    format!("000.00.20.H13-241205-{n:04}")
}

/// GetCitizen for dossier `n`, with an officer id no event may show.
pub async fn lookup(c: &mut Client, n: u32) {
    c.citizen
        .get_citizen(GetCitizenRequest {
            context: Some(AccessContext {
                procedure_code: PROCEDURE_LAND.into(),
                dossier_id: dossier(n),
                officer_id: "officer-secret-017".into(),
            }),
            personal_id: CITIZEN_ID.into(),
            read_mask: None,
        })
        .await
        .unwrap();
}

/// Opens a watch from `cursor` as the portal.
pub async fn watch(portal: &mut Client, cursor: &str) -> Streaming<WatchAccessRecordsResponse> {
    open(portal, cursor).await.unwrap()
}

/// Opens a watch from `cursor` as the portal, which must be refused.
pub async fn watch_refused(portal: &mut Client, cursor: &str) -> tonic::Status {
    open(portal, cursor)
        .await
        .expect_err("the watch was not refused")
}

async fn open(
    portal: &mut Client,
    cursor: &str,
) -> Result<Streaming<WatchAccessRecordsResponse>, tonic::Status> {
    let request = WatchAccessRecordsRequest {
        context: context(PROCEDURE_PORTAL),
        cursor: cursor.into(),
    };
    let response = portal.access_log.watch_access_records(request).await?;
    Ok(response.into_inner())
}
