//! Codes that say who asks and why: the electronic identification code of an
//! agency (`V1V2V3.Z1Z2.Y1Y2.MX1X2`), the dossier id of a one-stop system
//! (`<agency code>-<YYMMDD>-<NNNN>`) and the administrative procedure code
//! (`d.dddddd`, optionally followed by `.` and an agency code).
//!
//! Hand-written checks rather than regular expressions: each rule gets its own
//! message, and the crate needs no regex engine.

use std::fmt;

use super::{all_digits, calendar, IdError, IdKind};

/// Longest agency code the scheme allows.
pub const MAX_AGENCY_CODE_LEN: usize = 35;

/// An agency's electronic identification code, four dot-separated levels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgencyCode(String);

/// A dossier id: an agency code, the receiving date and a daily sequence.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DossierId {
    raw: String,
    date: (i32, u32, u32),
}

/// An administrative procedure code, national or with a province's suffix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcedureCode(String);

/// Shape of each level, left to right: its template and how many digits
/// follow an optional leading letter.
const LEVELS: [(&str, bool, usize); 4] = [
    ("V1V2V3", false, 3),
    ("Z1Z2", false, 2),
    ("Y1Y2", false, 2),
    ("MX1X2", true, 2),
];

/// Parses an agency code: at most 35 characters of `0-9`, `A-Z` and `.`, in
/// four levels `V1V2V3.Z1Z2.Y1Y2.MX1X2` (3 digits, 2 digits, 2 digits, then an
/// uppercase letter and 2 digits), for example `000.00.20.H13`.
pub fn parse_agency_code(s: &str) -> Result<AgencyCode, IdError> {
    check_agency_code(s).map_err(|problem| IdError::new(IdKind::AgencyCode, problem).showing(s))?;
    Ok(AgencyCode(s.to_owned()))
}

fn check_agency_code(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty; expected four levels like 000.00.20.H13".to_owned());
    }
    let len = s.chars().count();
    if len > MAX_AGENCY_CODE_LEN {
        return Err(format!(
            "must be at most {MAX_AGENCY_CODE_LEN} characters, got {len}"
        ));
    }
    if let Some((i, c)) = s
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_digit() || c.is_ascii_uppercase() || *c == '.'))
    {
        return Err(format!(
            "found {c:?} at position {}; only 0-9, A-Z and '.' are allowed",
            i + 1
        ));
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != LEVELS.len() {
        return Err(format!(
            "must have four dot-separated levels V1V2V3.Z1Z2.Y1Y2.MX1X2 (like 000.00.20.H13), got {}",
            parts.len()
        ));
    }
    for (n, (part, (template, letter, digits))) in parts.iter().zip(LEVELS).enumerate() {
        let rest = if letter {
            match part.as_bytes().first() {
                Some(b) if b.is_ascii_uppercase() => &part[1..],
                _ => "",
            }
        } else {
            part
        };
        let ok =
            rest.len() == digits && all_digits(rest) && part.len() == digits + usize::from(letter);
        if !ok {
            let shape = if letter {
                format!("an uppercase letter and {digits} digits")
            } else {
                format!("{digits} digits")
            };
            return Err(format!(
                "part {} ({template}) must be {shape}, got {part:?}",
                n + 1
            ));
        }
    }
    Ok(())
}

impl AgencyCode {
    /// The whole code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The level-1 body, `MX1X2` (for example `H13` a provincial People's
    /// Committee, `G01` the Ministry of Public Security).
    pub fn level1(&self) -> &str {
        // Parsing guarantees four ASCII levels, the last one 3 characters.
        &self.0[self.0.len() - 3..]
    }

    /// Whether the code names a level-1 body itself (`000.00.00.Hxx`).
    pub fn is_level1(&self) -> bool {
        self.0.starts_with("000.00.00.")
    }
}

impl fmt::Display for AgencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a dossier id `<agency code>-<YYMMDD>-<NNNN>`, for example
/// `000.00.20.H13-241205-0001`. `YYMMDD` must be a real date, read as 20YY
/// (one-stop systems date from this century).
pub fn parse_dossier_id(s: &str) -> Result<DossierId, IdError> {
    let err = |problem: String| IdError::new(IdKind::DossierId, problem).showing(s);
    let parts: Vec<&str> = s.split('-').collect();
    let [agency, date, seq] = parts[..] else {
        return Err(err(
            "must be <agency code>-<YYMMDD>-<4-digit sequence>, like 000.00.20.H13-241205-0001"
                .to_owned(),
        ));
    };
    if let Err(problem) = check_agency_code(agency) {
        return Err(err(format!("agency code part: {problem}")));
    }
    if date.len() != 6 || !all_digits(date) {
        return Err(err(format!(
            "date part must be 6 digits YYMMDD, got {date:?}"
        )));
    }
    // Six ASCII digits, so each pair parses.
    let num = |r: std::ops::Range<usize>| date[r].parse::<u32>().unwrap_or(0);
    let (yy, mm, dd) = (num(0..2), num(2..4), num(4..6));
    let year = 2000 + yy as i32;
    if !calendar::is_real_date(year, mm as i32, dd as i32) {
        return Err(err(format!("date part {date} is not a real date (YYMMDD)")));
    }
    if seq.len() != 4 || !all_digits(seq) {
        return Err(err(format!("sequence part must be 4 digits, got {seq:?}")));
    }
    Ok(DossierId {
        raw: s.to_owned(),
        date: (year, mm, dd),
    })
}

impl DossierId {
    /// The whole id.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The agency code part.
    pub fn agency_code(&self) -> &str {
        // Parsing guarantees the layout `<agency>-YYMMDD-NNNN`.
        &self.raw[..self.raw.len() - 12]
    }

    /// The receiving date as (year, month, day).
    pub fn date(&self) -> (i32, u32, u32) {
        self.date
    }

    /// The daily sequence number.
    pub fn sequence(&self) -> &str {
        &self.raw[self.raw.len() - 4..]
    }
}

impl fmt::Display for DossierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Parses a procedure code: `d.dddddd` (for example `1.004227`), optionally
/// followed by `.` and an agency code (`2.000815.000.00.00.H55`).
pub fn parse_procedure_code(s: &str) -> Result<ProcedureCode, IdError> {
    let err = |problem: String| IdError::new(IdKind::ProcedureCode, problem).showing(s);
    let b = s.as_bytes();
    let national_ok = b.len() >= 8
        && b[0].is_ascii_digit()
        && b[1] == b'.'
        && b[2..8].iter().all(u8::is_ascii_digit);
    if !national_ok {
        return Err(err(
            "must start with a digit, '.' and 6 digits (d.dddddd, like 1.004227)".to_owned(),
        ));
    }
    if b.len() > 8 {
        if b[8] != b'.' {
            return Err(err(
                "after d.dddddd expected '.' and an agency code (like 2.000815.000.00.00.H55)"
                    .to_owned(),
            ));
        }
        // Bytes 0..9 are ASCII, so index 9 is a char boundary.
        check_agency_code(&s[9..]).map_err(|p| err(format!("agency code part: {p}")))?;
    }
    Ok(ProcedureCode(s.to_owned()))
}

impl ProcedureCode {
    /// The whole code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The national part, `d.dddddd`.
    pub fn national_code(&self) -> &str {
        &self.0[..8]
    }

    /// The province's agency suffix, when present.
    pub fn agency_code(&self) -> Option<&str> {
        self.0.get(9..)
    }
}

impl fmt::Display for ProcedureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn agency_codes_have_four_levels() {
        let a = parse_agency_code("000.00.20.H13").unwrap();
        assert_eq!(a.as_str(), "000.00.20.H13");
        assert_eq!(a.level1(), "H13");
        assert!(!a.is_level1());
        let g = parse_agency_code("000.00.00.G22").unwrap();
        assert!(g.is_level1());
        assert_eq!(g.level1(), "G22");
    }

    #[test]
    fn agency_code_errors_say_which_rule() {
        let e = parse_agency_code("000.00.20").unwrap_err();
        assert!(e.problem().contains("four dot-separated levels"), "{e}");
        let e = parse_agency_code("000.00.20.h13").unwrap_err();
        assert_eq!(
            e.problem(),
            "found 'h' at position 11; only 0-9, A-Z and '.' are allowed"
        );
        let e = parse_agency_code("000.00.20.113").unwrap_err();
        assert_eq!(
            e.problem(),
            "part 4 (MX1X2) must be an uppercase letter and 2 digits, got \"113\""
        );
        let e = parse_agency_code("00.00.20.H13").unwrap_err();
        assert_eq!(e.problem(), "part 1 (V1V2V3) must be 3 digits, got \"00\"");
        assert!(parse_agency_code("000.0A.20.H13").is_err());
        assert!(parse_agency_code("000.00.20.H1").is_err());
        assert!(parse_agency_code("000.00.20.H134").is_err());
        assert!(parse_agency_code("").is_err());
        let long = format!("000.00.20.H13{}", "0".repeat(30));
        assert!(parse_agency_code(&long)
            .unwrap_err()
            .problem()
            .contains("at most 35"));
    }

    #[test]
    fn dossier_ids_carry_a_real_date() {
        let d = parse_dossier_id("000.00.20.H13-241205-0001").unwrap();
        assert_eq!(d.agency_code(), "000.00.20.H13");
        assert_eq!(d.date(), (2024, 12, 5));
        assert_eq!(d.sequence(), "0001");
        assert!(parse_dossier_id("000.00.20.H13-240229-0001").is_ok());
        let e = parse_dossier_id("000.00.20.H13-230229-0001").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dossier id 000.00.20.H13-230229-0001: date part 230229 is not a real date (YYMMDD)"
        );
        assert!(parse_dossier_id("000.00.20.H13-241305-0001").is_err());
        assert!(parse_dossier_id("000.00.20.H13-241205-001").is_err());
        assert!(parse_dossier_id("000.00.20.H13-24120-0001").is_err());
        assert!(parse_dossier_id("000.00.20.H13241205-0001").is_err());
        assert!(parse_dossier_id("000.00.20.H13-241205-0001-1").is_err());
        let e = parse_dossier_id("000.00.2.H13-241205-0001").unwrap_err();
        assert!(e.problem().starts_with("agency code part: part 3"), "{e}");
        assert!(parse_dossier_id("000.00.20.H13-2412٠5-0001").is_err());
    }

    #[test]
    fn procedure_codes_may_carry_an_agency_suffix() {
        let p = parse_procedure_code("1.004227").unwrap();
        assert_eq!(p.national_code(), "1.004227");
        assert_eq!(p.agency_code(), None);
        let p = parse_procedure_code("2.000815.000.00.00.H55").unwrap();
        assert_eq!(p.national_code(), "2.000815");
        assert_eq!(p.agency_code(), Some("000.00.00.H55"));
        assert!(parse_procedure_code("1.00422").is_err());
        assert!(parse_procedure_code("10.04227").is_err());
        assert!(parse_procedure_code("1.004227.").is_err());
        assert!(parse_procedure_code("1.004227-000.00.00.H55").is_err());
        assert!(parse_procedure_code("1.004227.000.00.H55").is_err());
        assert!(parse_procedure_code("").is_err());
        assert!(parse_procedure_code("1.00422é").is_err());
        assert!(parse_procedure_code("1.004227.é").is_err());
    }

    proptest! {
        #[test]
        fn built_codes_round_trip(
            v in 0u32..1000, z in 0u32..100, y in 0u32..100, m in "[A-Z]", x in 0u32..100,
            days in 0i64..36_500, seq in 0u32..10_000, p in 0u32..10, n in 0u32..1_000_000,
        ) {
            let agency = format!("{v:03}.{z:02}.{y:02}.{m}{x:02}");
            let a = parse_agency_code(&agency).unwrap();
            prop_assert_eq!(a.level1(), &agency[10..]);

            let (year, month, day) = calendar::from_days(calendar::to_days(2000, 1, 1) + days);
            let dossier = format!("{agency}-{:02}{month:02}{day:02}-{seq:04}", year % 100);
            let d = parse_dossier_id(&dossier).unwrap();
            prop_assert_eq!(d.agency_code(), agency.as_str());
            prop_assert_eq!(d.date(), (year, month, day));

            let national = format!("{p}.{n:06}");
            prop_assert!(parse_procedure_code(&national).is_ok());
            let local = parse_procedure_code(&format!("{national}.{agency}")).unwrap();
            prop_assert_eq!(local.agency_code(), Some(agency.as_str()));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_agency_code(&s);
            let _ = parse_dossier_id(&s);
            let _ = parse_procedure_code(&s);
        }
    }
}
