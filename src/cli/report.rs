//! `interop-gateway report reuse`: the data re-use figures provinces are
//! measured on, per procedure code and per agency, from the access log;
//! `report verifications` (in [`verifications`]): agencies by failed and
//! refused `VerifyCitizen` calls.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{load_config, parse_date, vn_day, ConfigArg, Failure, EXIT_CONFIG, EXIT_FAILED};
use crate::{audit::AuditRecord, policy};

pub mod verifications;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Per procedure and agency: lookups served with data, verifications,
    /// denials, other errors, and distinct dossiers.
    Reuse(Span),
    /// Per agency, most failures first: `VerifyCitizen` calls answered,
    /// failed (mismatch or not found) and refused by the verification
    /// budget, and the personal ids concerned.
    Verifications(Span),
}

/// What every report takes: the config, the days, the output format.
#[derive(Debug, clap::Args)]
pub struct Span {
    #[command(flatten)]
    config: ConfigArg,
    /// First day included, YYYY-MM-DD (Vietnam time).
    #[arg(long)]
    from: Option<String>,
    /// Last day included, YYYY-MM-DD (Vietnam time).
    #[arg(long)]
    to: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// One row of the re-use report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReuseRow {
    pub procedure_code: String,
    pub agency_code: String,
    pub agency_name: String,
    /// Calls answered with registry data.
    pub lookups_with_data: u64,
    /// Successful `VerifyCitizen` calls.
    pub verifications: u64,
    /// PERMISSION_DENIED and UNAUTHENTICATED.
    pub denials: u64,
    /// Other failed calls (invalid arguments, not found, unavailable).
    pub other_errors: u64,
    /// Distinct dossiers that called at all (valid dossier ids only; a
    /// refused call's invalid id is no dossier).
    pub dossiers: u64,
    /// Distinct dossiers served from re-used data (a lookup with data or a
    /// successful verification).
    pub dossiers_served: u64,
}

#[derive(Default)]
struct Acc {
    row: ReuseRow,
    dossiers: BTreeSet<String>,
    served: BTreeSet<String>,
}

fn is_data_method(method: &str) -> bool {
    policy::METHODS
        .iter()
        .any(|m| m.name == method && m.record.is_some())
}

/// The report: its rows, and the dossier totals over all of them.
///
/// A dossier is one dossier id, however many agencies and procedures used
/// it: one dossier served by two agencies appears in both agencies' rows but
/// once in the totals, so the totals are not the sums of the columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reuse {
    pub rows: Vec<ReuseRow>,
    /// Distinct dossier ids in the period.
    pub dossiers: u64,
    /// Distinct dossier ids served from re-used data by any agency.
    pub dossiers_served: u64,
}

/// Builds the report from log records, counting those within `[from, to]` days.
pub fn reuse<I: IntoIterator<Item = AuditRecord>>(
    records: I,
    from: Option<(i32, u32, u32)>,
    to: Option<(i32, u32, u32)>,
    agency_name: impl Fn(&str) -> String,
) -> Reuse {
    let mut acc: BTreeMap<(String, String), Acc> = BTreeMap::new();
    let mut all = Acc::default();
    for r in records {
        let day = vn_day(r.time_unix_ms);
        if from.is_some_and(|f| day < f) || to.is_some_and(|t| day > t) {
            continue;
        }
        let a = acc
            .entry((r.procedure_code.clone(), r.agency_code.clone()))
            .or_default();
        let ok = r.outcome == "OK";
        let served = ok
            && ((is_data_method(&r.method) && !r.fields.is_empty())
                || r.method == policy::VERIFY_CITIZEN.name);
        if ok && is_data_method(&r.method) && !r.fields.is_empty() {
            a.row.lookups_with_data += 1;
        } else if ok && r.method == policy::VERIFY_CITIZEN.name {
            a.row.verifications += 1;
        } else if r.outcome == "PERMISSION_DENIED" || r.outcome == "UNAUTHENTICATED" {
            a.row.denials += 1;
        } else if !ok {
            a.row.other_errors += 1;
        }
        if crate::domain::agency::parse_dossier_id(&r.dossier_id).is_err() {
            continue;
        }
        a.dossiers.insert(r.dossier_id.clone());
        all.dossiers.insert(r.dossier_id.clone());
        if served {
            a.served.insert(r.dossier_id.clone());
            all.served.insert(r.dossier_id);
        }
    }
    let rows = acc
        .into_iter()
        .map(|((procedure_code, agency_code), a)| ReuseRow {
            agency_name: agency_name(&agency_code),
            procedure_code,
            agency_code,
            dossiers: a.dossiers.len() as u64,
            dossiers_served: a.served.len() as u64,
            ..a.row
        })
        .collect();
    Reuse {
        rows,
        dossiers: all.dossiers.len() as u64,
        dossiers_served: all.served.len() as u64,
    }
}

const HEADER: [&str; 9] = [
    "procedure",
    "agency",
    "agency name",
    "lookups with data",
    "verifications",
    "denials",
    "other errors",
    "dossiers",
    "dossiers served",
];

fn cells(r: &ReuseRow) -> [String; 9] {
    [
        r.procedure_code.clone(),
        r.agency_code.clone(),
        r.agency_name.clone(),
        r.lookups_with_data.to_string(),
        r.verifications.to_string(),
        r.denials.to_string(),
        r.other_errors.to_string(),
        r.dossiers.to_string(),
        r.dossiers_served.to_string(),
    ]
}

/// A CSV cell that no spreadsheet runs as a formula: a value starting with
/// `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'` (OWASP's
/// CSV-injection advice); control characters are shown as in a table cell;
/// then the usual quoting.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{}", table_cell(s))
    } else {
        table_cell(s)
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// A table cell with every control character shown as `\u{..}`, so no
/// value can move the cursor, clear the screen or recolour a terminal.
fn table_cell(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Renders the rows in the chosen format.
pub fn render(report: &Reuse, format: Format) -> String {
    let rows = &report.rows;
    if format == Format::Json {
        return serde_json::to_string_pretty(rows).unwrap_or_default() + "\n";
    }
    let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r).to_vec()).collect();
    if format == Format::Csv {
        return csv(&HEADER, &body);
    }
    let mut out = table(&HEADER, &body, 3);
    let (served, total) = (report.dossiers_served, report.dossiers);
    if total > 0 {
        out.push_str(&format!(
            "\ndossiers served from re-used data: {served} of {total} ({:.1}%)\n\
             (each dossier id counted once, however many agencies and procedures used it)\n",
            served as f64 * 100.0 / total as f64
        ));
    }
    out
}

/// A CSV document: the header line, then one line per row.
fn csv(header: &[&str], body: &[Vec<String>]) -> String {
    let mut out = header.join(",") + "\n";
    for row in body {
        let c: Vec<String> = row.iter().map(|s| csv_cell(s)).collect();
        out.push_str(&c.join(","));
        out.push('\n');
    }
    out
}

/// An aligned text table: the first `text_cols` columns left-aligned, the
/// others (figures) right-aligned; control characters in cells are shown
/// escaped.
fn table(header: &[&str], body: &[Vec<String>], text_cols: usize) -> String {
    let body: Vec<Vec<String>> = body
        .iter()
        .map(|row| row.iter().map(|c| table_cell(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<&str>| {
        let padded: Vec<String> = cols
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = w - c.chars().count();
                if i >= text_cols {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in body {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn run(args: Args) -> Result<(), Failure> {
    let (ReportCommand::Reuse(span) | ReportCommand::Verifications(span)) = &args.command;
    let Span {
        config,
        from,
        to,
        format,
    } = span;
    let config = load_config(&config.config)?;
    let day = |v: &Option<String>, flag: &str| {
        v.as_deref()
            .map(parse_date)
            .transpose()
            .map_err(|e| Failure::new(EXIT_CONFIG, format!("{flag}: {e}")))
    };
    let (from, to) = (day(from, "--from")?, day(to, "--to")?);
    let agency_name = |code: &str| {
        config
            .agencies
            .get(code)
            .map(|a| a.name.clone())
            .unwrap_or_default()
    };
    let out = match args.command {
        ReportCommand::Reuse(_) => {
            let report = with_records(&config, |records| reuse(records, from, to, agency_name))?;
            render(&report, *format)
        }
        ReportCommand::Verifications(_) => {
            let path = config.verify_budget_path();
            let failures = crate::verify_budget::persist::read_all(&path)
                .map_err(|e| Failure::new(EXIT_FAILED, e))?;
            let rows = with_records(&config, |records| {
                verifications::rows(records, failures, from, to, agency_name)
            })?;
            verifications::render(&rows, *format)
        }
    };
    out!("{out}");
    Ok(())
}

/// Runs `consume` over every record of the access log `config` names
/// (its PostgreSQL database, or its segments and archive alike), streamed
/// from a reader thread: memory stays bounded whatever the log's size (a
/// report keeps only its counters and distinct ids). Every record must
/// parse and none may be missing; a torn tail left by a crash is repaired
/// when the gateway next starts.
fn with_records<T>(
    config: &crate::config::Config,
    consume: impl FnOnce(&mut dyn Iterator<Item = AuditRecord>) -> T,
) -> Result<T, Failure> {
    use crate::audit::AuditError;
    /// The consumer stopped reading (it never does before the end today).
    const GONE: &str = "the report stopped reading";
    let (sender, receiver) = std::sync::mpsc::sync_channel::<AuditRecord>(1024);
    let database = config.audit.database.as_ref().map(|db| db.url.clone());
    let (dir, archive) = (
        config.audit.dir.clone(),
        config.audit.files.archive_dir.clone(),
    );
    let reader = std::thread::spawn(move || -> Result<(), AuditError> {
        let gone = |_| AuditError::Unavailable(GONE.into());
        match database {
            Some(url) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        AuditError::Unavailable(format!("cannot start the runtime: {e}"))
                    })?;
                runtime
                    .block_on(crate::audit::pg::for_each_database_record(&url, |r| {
                        sender.send(r).map_err(gone)
                    }))
                    .map(drop)
            }
            None => crate::audit::for_each_record(&dir, archive.as_deref(), |_, r| {
                sender.send(r).map_err(|_| std::io::Error::other(GONE))
            }),
        }
    });
    let out = consume(&mut receiver.iter());
    drop(receiver);
    let read = reader
        .join()
        .map_err(|_| Failure::new(EXIT_FAILED, "the access log's reader failed"))?;
    read.map_err(|e| match e {
        AuditError::Unavailable(_) => Failure::new(EXIT_FAILED, e),
        e => Failure::new(EXIT_FAILED, format!("{e} (run `audit verify`)")),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditRecord;

    fn record(agency: &str, procedure: &str, dossier: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            time_unix_ms: 1_733_400_000_000,
            request_id: "r".into(),
            agency_code: agency.into(),
            method: "interop.citizen.v1.CitizenRegistryService/GetCitizen".into(),
            procedure_code: procedure.into(),
            dossier_id: dossier.into(),
            officer_id: String::new(),
            subjects: vec![],
            fields: vec!["full_name".into()],
            outcome: outcome.into(),
            latency_us: 1,
            relay_agency_code: String::new(),
            reason: String::new(),
        }
    }

    #[test]
    fn a_dossier_used_by_two_agencies_is_one_dossier() {
        let dossier = "000.00.20.H13-241205-0001";
        let report = reuse(
            [
                record("000.00.20.H13", "1.004227", dossier, "OK"),
                record("000.00.21.H13", "1.004227", dossier, "OK"),
                record(
                    "000.00.21.H13",
                    "1.004227",
                    "invalid:0123abcd",
                    "INVALID_ARGUMENT",
                ),
            ],
            None,
            None,
            |_| String::new(),
        );
        assert_eq!(report.rows.len(), 2);
        assert!(report.rows.iter().all(|r| r.dossiers == 1));
        assert_eq!((report.dossiers, report.dossiers_served), (1, 1));
        let table = render(&report, Format::Table);
        assert!(
            table.contains("served from re-used data: 1 of 1 (100.0%)"),
            "{table}"
        );
        assert!(table.contains("counted once"), "{table}");
    }

    #[test]
    fn cells_cannot_become_formulas_or_terminal_escapes() {
        let report = reuse(
            [record(
                "000.00.20.H13",
                "=HYPERLINK(\"http://evil.example/x\",\"1\")\u{1b}[2J",
                "\u{1b}[2J\u{1b}[31mCALL\r",
                "INVALID_ARGUMENT",
            )],
            None,
            None,
            |_| "@SUM(1)".into(),
        );
        let csv = render(&report, Format::Csv);
        for cell in csv.lines().nth(1).unwrap().split(',') {
            let cell = cell.trim_start_matches('"');
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "{csv}");
        }
        assert!(csv.contains("\"'=HYPERLINK("), "{csv}");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("\tx"), "'\\u{9}x");
        let table = render(&report, Format::Table);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert!(table.contains("\\u{1b}[2J"), "{table}");
    }
}
