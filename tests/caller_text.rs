//! Caller text that failed validation, from the call to the people who read
//! the log: the access record keeps a placeholder, never the text; the
//! citizens' view and the operator's reports show nothing that could act as
//! a formula or a terminal escape; made-up subjects are recorded, not indexed.

mod support;

use std::{path::Path, process::Command};

use interop_gateway::{
    client::Client,
    proto::{
        audit::v1::ListAccessRecordsRequest, citizen::v1::GetCitizenRequest,
        common::v1::AccessContext,
    },
};
use support::*;
use tonic::Code;

const FORMULA: &str = "=HYPERLINK(\"http://evil.example/x\",\"1.004227\")";
const ESCAPES: &str = "\u{1b}[2J\u{1b}[31mCALL 0900000000 FOR REFUND\r\u{7}";

fn gateway(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_interop-gateway"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn is_placeholder(s: &str) -> bool {
    s.strip_prefix("invalid:")
        .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_failed_validation_is_recorded_as_a_placeholder_and_shown_nowhere() {
    let (_dir, pki, config) = prepared_dir();
    let serve = ServeProcess::start(&config, None);
    // An agency with no grant for GetCitizen, with a formula for a procedure
    // code and terminal escapes for a dossier id and an officer id.
    let mut business = Client::connect(&serve.addr, &pki.identity(&pki.agency(BUSINESS_OFFICE)))
        .await
        .unwrap();
    let refused = business
        .citizen
        .get_citizen(GetCitizenRequest {
            context: Some(AccessContext {
                procedure_code: FORMULA.into(),
                dossier_id: ESCAPES.into(),
                officer_id: ESCAPES.into(),
            }),
            personal_id: CITIZEN_ID.into(),
            read_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    // Made-up subjects: refused, recorded, never indexed.
    for i in 0..20 {
        let denied = business
            .citizen
            .get_citizen(GetCitizenRequest {
                context: context(PROCEDURE_LAND),
                personal_id: format!("=cmd|' /C calc'!A{i}"),
                read_mask: None,
            })
            .await
            .unwrap_err();
        assert_ne!(denied.code(), Code::Ok);
    }

    // The citizens' portal sees the refused call, without the caller's text.
    let mut portal = Client::connect(&serve.addr, &pki.identity(&pki.agency(PORTAL)))
        .await
        .unwrap();
    let listed = portal
        .access_log
        .list_access_records(ListAccessRecordsRequest {
            context: context(PROCEDURE_PORTAL),
            subject_id: CITIZEN_ID.into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let record = listed
        .records
        .iter()
        .find(|r| r.agency_code == BUSINESS_OFFICE)
        .expect("the refused call is in the citizen's view");
    assert_eq!(record.outcome, "INVALID_ARGUMENT");
    assert!(is_placeholder(&record.procedure_code), "{record:?}");
    assert!(is_placeholder(&record.dossier_id), "{record:?}");
    drop((business, portal));
    assert!(serve.terminate().success());

    // The log holds placeholders only, and still verifies.
    let export = gateway(&["audit", "export"], &config);
    assert_success(&export);
    let export = String::from_utf8(export.stdout).unwrap();
    assert!(
        !export.contains("HYPERLINK") && !export.contains("calc"),
        "{export}"
    );
    assert!(
        !export.contains("\\u001b") && !export.contains("REFUND"),
        "{export}"
    );
    let records: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 22);
    let made_up = records
        .iter()
        .filter(|r| r["record"]["procedure_code"] == PROCEDURE_LAND)
        .count();
    assert_eq!(made_up, 20);
    for r in &records {
        for s in r["record"]["subjects"].as_array().unwrap() {
            let s = s.as_str().unwrap();
            assert!(s == CITIZEN_ID || is_placeholder(s), "{s}");
        }
    }
    assert_success(&gateway(&["audit", "verify"], &config));

    // Reports: no cell a spreadsheet would run, no control character.
    let csv = gateway(&["report", "reuse", "--format", "csv"], &config);
    assert_success(&csv);
    let csv = String::from_utf8(csv.stdout).unwrap();
    for cell in csv.lines().flat_map(|l| l.split(',')) {
        let cell = cell.trim_start_matches('"');
        assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "{csv}");
    }
    let table = gateway(&["report", "reuse"], &config);
    assert_success(&table);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );
}
