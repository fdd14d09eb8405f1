//! `report verifications`: which agencies fail or are refused `VerifyCitizen`
//! calls, most failures first, so an operator sees an agency probing.
//!
//! Answers and refusals come from the access log (a refusal is a
//! `VerifyCitizen` record with outcome `RESOURCE_EXHAUSTED`); whether an
//! answered call failed comes from the verification budget's file, which
//! keeps failures for [`KEEP_DAYS`] days.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{csv, table, vn_day, Format};
use crate::{
    audit::AuditRecord,
    policy,
    verify_budget::{persist::KEEP_DAYS, FailureKind, FailureRow},
};

/// One agency's verifications.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerificationRow {
    pub agency_code: String,
    pub agency_name: String,
    /// Calls answered (`match` true or false).
    pub answered: u64,
    /// Answered with `match = false`.
    pub mismatches: u64,
    /// Personal ids not in the registry (NOT_FOUND).
    pub not_found: u64,
    /// Mismatches and not found: what the budget counts.
    pub failed: u64,
    /// Calls refused by the budget (RESOURCE_EXHAUSTED, `VERIFICATION_LIMIT`).
    pub refused: u64,
    /// Distinct personal ids with at least one failure.
    pub subjects_failed: u64,
    /// Distinct personal ids with at least one refusal.
    pub subjects_refused: u64,
}

#[derive(Default)]
struct Acc {
    row: VerificationRow,
    failed: BTreeSet<String>,
    refused: BTreeSet<String>,
}

type Day = (i32, u32, u32);

/// The rows for records and failures within `[from, to]` days, most failed
/// first, then most refused, then by agency code.
pub fn rows(
    records: impl IntoIterator<Item = AuditRecord>,
    failures: impl IntoIterator<Item = FailureRow>,
    from: Option<Day>,
    to: Option<Day>,
    agency_name: impl Fn(&str) -> String,
) -> Vec<VerificationRow> {
    let within = |ms: i64| {
        let day = vn_day(ms);
        !(from.is_some_and(|f| day < f) || to.is_some_and(|t| day > t))
    };
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for r in records {
        if r.method != policy::VERIFY_CITIZEN.name || !within(r.time_unix_ms) {
            continue;
        }
        let a = acc.entry(r.agency_code).or_default();
        match r.outcome.as_str() {
            "OK" => a.row.answered += 1,
            "RESOURCE_EXHAUSTED" => {
                a.row.refused += 1;
                a.refused.extend(r.subjects);
            }
            _ => {}
        }
    }
    for f in failures {
        if !within(f.at_ms) {
            continue;
        }
        let a = acc.entry(f.agency).or_default();
        match f.kind {
            FailureKind::Mismatch => a.row.mismatches += 1,
            FailureKind::NotFound => a.row.not_found += 1,
        }
        a.row.failed += 1;
        a.failed.insert(f.subject);
    }
    let mut rows: Vec<VerificationRow> = acc
        .into_iter()
        .map(|(agency_code, a)| VerificationRow {
            agency_name: agency_name(&agency_code),
            agency_code,
            subjects_failed: a.failed.len() as u64,
            subjects_refused: a.refused.len() as u64,
            ..a.row
        })
        .collect();
    rows.sort_by(|x, y| {
        (y.failed, y.refused)
            .cmp(&(x.failed, x.refused))
            .then_with(|| x.agency_code.cmp(&y.agency_code))
    });
    rows
}

const HEADER: [&str; 9] = [
    "agency",
    "agency name",
    "answered",
    "mismatches",
    "not found",
    "failed",
    "refused",
    "ids failed",
    "ids refused",
];

fn cells(r: &VerificationRow) -> Vec<String> {
    vec![
        r.agency_code.clone(),
        r.agency_name.clone(),
        r.answered.to_string(),
        r.mismatches.to_string(),
        r.not_found.to_string(),
        r.failed.to_string(),
        r.refused.to_string(),
        r.subjects_failed.to_string(),
        r.subjects_refused.to_string(),
    ]
}

/// Renders the rows in the chosen format.
pub fn render(rows: &[VerificationRow], format: Format) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    match format {
        Format::Json => serde_json::to_string_pretty(rows).unwrap_or_default() + "\n",
        Format::Csv => csv(&HEADER, &body),
        Format::Table => {
            let mut out = table(&HEADER, &body, 2);
            out.push_str(&format!(
                "\nfailed: mismatches and ids not in the registry, kept {KEEP_DAYS} days; refused: calls over the verification budget\n"
            ));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;
    // 2026-11-30 12:00 Vietnam time.
    const T: i64 = 1_764_478_800_000;

    fn record(agency: &str, outcome: &str, subject: &str, at: i64) -> AuditRecord {
        AuditRecord {
            time_unix_ms: at,
            request_id: "r".into(),
            agency_code: agency.into(),
            method: policy::VERIFY_CITIZEN.name.into(),
            procedure_code: "1.004227".into(),
            dossier_id: "d".into(),
            officer_id: String::new(),
            subjects: vec![subject.into()],
            fields: vec![],
            outcome: outcome.into(),
            latency_us: 1,
            relay_agency_code: String::new(),
            reason: String::new(),
        }
    }

    fn failure(agency: &str, subject: &str, kind: FailureKind, at: i64) -> FailureRow {
        FailureRow {
            agency: agency.into(),
            subject: subject.into(),
            kind,
            at_ms: at,
        }
    }

    #[test]
    fn agencies_are_listed_by_failures_then_refusals() {
        let mut records = vec![
            record("A", "OK", "1", T),
            record("A", "OK", "1", T),
            record("B", "OK", "2", T),
            record("B", "RESOURCE_EXHAUSTED", "2", T),
            record("B", "RESOURCE_EXHAUSTED", "3", T),
            record("C", "RESOURCE_EXHAUSTED", "4", T),
        ];
        // Other methods are not verifications.
        let mut other = record("C", "OK", "4", T);
        other.method = policy::GET_CITIZEN.name.into();
        records.push(other);
        let failures = vec![
            failure("B", "2", FailureKind::Mismatch, T),
            failure("B", "3", FailureKind::NotFound, T),
            failure("A", "1", FailureKind::Mismatch, T),
            // Outside --from.
            failure("A", "1", FailureKind::Mismatch, T - 2 * DAY_MS),
        ];
        let day = vn_day(T);
        let rows = rows(records, failures, Some(day), Some(day), |c| {
            format!("name {c}")
        });
        let order: Vec<&str> = rows.iter().map(|r| r.agency_code.as_str()).collect();
        assert_eq!(order, ["B", "A", "C"]);
        assert_eq!(
            rows[0],
            VerificationRow {
                agency_code: "B".into(),
                agency_name: "name B".into(),
                answered: 1,
                mismatches: 1,
                not_found: 1,
                failed: 2,
                refused: 2,
                subjects_failed: 2,
                subjects_refused: 2,
            }
        );
        assert_eq!((rows[1].answered, rows[1].failed), (2, 1));
        assert_eq!((rows[2].answered, rows[2].refused), (0, 1));
        let csv = render(&rows, Format::Csv);
        assert!(csv.starts_with("agency,agency name,answered,"), "{csv}");
        assert!(csv.contains("\nB,name B,1,1,1,2,2,2,2\n"), "{csv}");
        let text = render(&rows, Format::Table);
        assert!(text.lines().nth(1).unwrap().starts_with("B  "), "{text}");
    }
}
