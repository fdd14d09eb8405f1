//! Identifiers of the registries and their validation: personal ids,
//! enterprise codes, administrative units, agency, dossier and procedure
//! codes, land identifiers, and the calendar rules they lean on.
//!
//! Everything here is a pure function over strings and const tables; this
//! layer knows nothing of gRPC, protobuf or storage. Facts marked *(verify)* in
//! `shared/DOMAIN.md` live in one table or one function each, so a correction
//! is a one-line change.

pub mod admin;
pub mod agency;
pub mod calendar;
pub mod enterprise_code;
pub mod land;
pub mod personal_id;

use std::fmt;

/// Which identifier an [`IdError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// Twelve-digit personal identification number.
    PersonalId,
    /// Enterprise code (tax code), with or without a branch suffix.
    EnterpriseCode,
    /// Five-digit commune, ward or special-zone code.
    CommuneCode,
    /// Two-digit province code.
    ProvinceCode,
    /// Electronic identification code of an agency.
    AgencyCode,
    /// Dossier id of a one-stop system.
    DossierId,
    /// Administrative procedure code.
    ProcedureCode,
    /// Serial of a land-use right certificate.
    CertificateSerial,
    /// Number in the certificate registry book.
    RegistryBookNumber,
}

impl IdKind {
    /// The identifier's name as it starts an error message.
    pub fn noun(self) -> &'static str {
        match self {
            IdKind::PersonalId => "personal id",
            IdKind::EnterpriseCode => "enterprise code",
            IdKind::CommuneCode => "commune code",
            IdKind::ProvinceCode => "province code",
            IdKind::AgencyCode => "agency code",
            IdKind::DossierId => "dossier id",
            IdKind::ProcedureCode => "procedure code",
            IdKind::CertificateSerial => "certificate serial",
            IdKind::RegistryBookNumber => "registry book number",
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// A malformed identifier: which kind, what is wrong and what is expected.
///
/// The offending value is shown only when it is short printable ASCII, and a
/// personal id only in its masked form, so the message is safe to log and to
/// return to a caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct IdError {
    kind: IdKind,
    shown: Option<String>,
    problem: String,
}

impl IdError {
    pub(crate) fn new(kind: IdKind, problem: impl Into<String>) -> Self {
        IdError {
            kind,
            shown: None,
            problem: problem.into(),
        }
    }

    /// Names the offending value in the message, when it is safe to print.
    pub(crate) fn showing(mut self, value: &str) -> Self {
        let printable = !value.is_empty()
            && value.len() <= 40
            && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        self.shown = printable.then(|| value.to_owned());
        self
    }

    /// Which identifier the error is about.
    pub fn kind(&self) -> IdKind {
        self.kind
    }

    /// What is wrong, without the identifier's name (for messages that name
    /// the field instead, such as `personalId: must be 12 digits, got 11 characters`).
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shown {
            Some(v) => write!(f, "{} {}: {}", self.kind, v, self.problem),
            None => write!(f, "{} {}", self.kind, self.problem),
        }
    }
}

/// Checks that `s` is exactly `n` ASCII digits, saying which rule it breaks.
pub(crate) fn expect_digits(kind: IdKind, s: &str, n: usize) -> Result<(), IdError> {
    let len = s.chars().count();
    if len != n {
        return Err(IdError::new(
            kind,
            format!("must be {n} digits, got {len} characters"),
        ));
    }
    match first_non_digit(s) {
        Some((pos, c)) => Err(IdError::new(
            kind,
            format!("must be {n} digits, found {c:?} at position {pos}"),
        )),
        None => Ok(()),
    }
}

/// The first character of `s` that is not an ASCII digit, with its 1-based position.
pub(crate) fn first_non_digit(s: &str) -> Option<(usize, char)> {
    s.chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_digit())
        .map(|(i, c)| (i + 1, c))
}

/// Whether `s` is non-empty and all ASCII digits.
pub(crate) fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` is a key the access log files records under: a personal id,
/// an enterprise code, or a parcel as `commune/map_sheet/parcel_number`.
/// Anything else is caller text that failed validation.
pub fn is_subject_key(s: &str) -> bool {
    if personal_id::parse(s).is_ok() || enterprise_code::parse(s).is_ok() {
        return true;
    }
    let mut parts = s.split('/');
    let (Some(commune), Some(sheet), Some(number), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let in_range = |text: &str, max: u32| {
        !text.starts_with('0')
            && text.bytes().all(|b| b.is_ascii_digit())
            && text.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n))
    };
    admin::parse_commune_code(commune).is_ok()
        && in_range(sheet, land::MAX_MAP_SHEET)
        && in_range(number, land::MAX_PARCEL_NUMBER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_kind_and_the_problem() {
        let e = IdError::new(IdKind::PersonalId, "must be 12 digits, got 11 characters");
        assert_eq!(
            e.to_string(),
            "personal id must be 12 digits, got 11 characters"
        );
        assert_eq!(e.problem(), "must be 12 digits, got 11 characters");
        assert_eq!(e.kind(), IdKind::PersonalId);
    }

    #[test]
    fn message_shows_printable_values_only() {
        let e = IdError::new(IdKind::EnterpriseCode, "check digit is 8, expected 9")
            .showing("0300588568");
        assert_eq!(
            e.to_string(),
            "enterprise code 0300588568: check digit is 8, expected 9"
        );
        let hidden = IdError::new(IdKind::AgencyCode, "bad").showing("A\nB");
        assert_eq!(hidden.to_string(), "agency code bad");
        let long = IdError::new(IdKind::AgencyCode, "bad").showing(&"A".repeat(41));
        assert_eq!(long.to_string(), "agency code bad");
    }

    #[test]
    fn expect_digits_reports_length_then_first_bad_character() {
        let e = expect_digits(IdKind::CommuneCode, "1234", 5).unwrap_err();
        assert_eq!(e.problem(), "must be 5 digits, got 4 characters");
        let e = expect_digits(IdKind::CommuneCode, "12a45", 5).unwrap_err();
        assert_eq!(e.problem(), "must be 5 digits, found 'a' at position 3");
        let e = expect_digits(IdKind::CommuneCode, "1234١", 5).unwrap_err();
        assert_eq!(e.problem(), "must be 5 digits, found '١' at position 5");
        assert!(expect_digits(IdKind::CommuneCode, "31117", 5).is_ok());
    }
}
