//! The enterprise code (equal to the tax code): 10 digits `N1..N10` with a
//! weighted mod-11 check digit, plus a `-NNN` suffix for a dependent unit
//! (branch, representative office).
//!
//! The weights come from a widely used open-source validator; no regulation
//! text stating them was found (DOMAIN.md). They live in [`WEIGHTS`] alone.

use std::fmt;
use std::str::FromStr;

use super::{all_digits, first_non_digit, IdError, IdKind};

/// Weights of `N1..N9` in the check sum.
pub const WEIGHTS: [u32; 9] = [31, 29, 23, 19, 17, 13, 7, 5, 3];

/// A well-formed enterprise code, with or without a branch suffix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnterpriseCode(String);

/// The check digit `N10` for the first nine digits, or `None` when no code
/// with them can ever be issued: the weighted sum is divisible by 11 (the
/// formula would give 10), or `N3..N9` are all zero. Also `None` when
/// `first9` is not nine ASCII digits.
pub fn check_digit(first9: &str) -> Option<u8> {
    if first9.len() != 9 || !all_digits(first9) || &first9[2..] == "0000000" {
        return None;
    }
    let sum: u32 = first9
        .bytes()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    match sum % 11 {
        0 => None,
        // 1..=10, so the digit is 0..=9.
        r => u8::try_from(10 - r).ok(),
    }
}

/// Parses an enterprise code: 10 digits, or 10 digits, `-` and a 3-digit
/// branch number; the check digit must match, `N3..N9` must not be all zero
/// and the branch number must not be `000`.
pub fn parse(s: &str) -> Result<EnterpriseCode, IdError> {
    let err = |problem: String| IdError::new(IdKind::EnterpriseCode, problem).showing(s);
    let len = s.chars().count();
    if len != 10 && len != 14 {
        return Err(err(format!(
            "must be 10 digits, or 10 digits, '-' and a 3-digit branch number, got {len} characters"
        )));
    }
    // Both lengths are now ASCII-only unless a non-digit appears; check first.
    let (base, branch) = if len == 14 {
        match s.split_once('-') {
            Some((base, branch)) if base.chars().count() == 10 => (base, Some(branch)),
            _ => {
                return Err(err(
                    "a branch code must be 10 digits, '-' and a 3-digit branch number".to_owned(),
                ))
            }
        }
    } else {
        (s, None)
    };
    if let Some((pos, c)) = first_non_digit(base) {
        return Err(err(format!(
            "must start with 10 digits, found {c:?} at position {pos}"
        )));
    }
    if let Some(branch) = branch {
        if let Some((pos, c)) = first_non_digit(branch) {
            return Err(err(format!(
                "branch number must be 3 digits, found {c:?} at position {}",
                pos + 11
            )));
        }
    }
    if &base[2..9] == "0000000" {
        return Err(err(
            "digits 3 to 9 are all zero; no such code is issued".to_owned()
        ));
    }
    let given = base.as_bytes()[9] - b'0';
    match check_digit(&base[..9]) {
        None => {
            return Err(err(
                "digits 1 to 9 give a check sum divisible by 11; no such code is issued".to_owned(),
            ))
        }
        Some(expected) if expected != given => {
            return Err(err(format!("check digit is {given}, expected {expected}")));
        }
        Some(_) => {}
    }
    if branch == Some("000") {
        return Err(err("branch number 000 is never issued".to_owned()));
    }
    Ok(EnterpriseCode(s.to_owned()))
}

impl EnterpriseCode {
    /// The whole code, as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ten-digit code of the enterprise itself (without a branch suffix).
    pub fn base(&self) -> &str {
        &self.0[..10]
    }

    /// The three-digit branch number of a dependent unit.
    pub fn branch(&self) -> Option<&str> {
        self.0.get(11..)
    }

    /// The two digits of the province of first registration (tax-office
    /// numbering, which differs from administrative province codes).
    pub fn province_prefix(&self) -> &str {
        &self.0[..2]
    }
}

impl fmt::Display for EnterpriseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EnterpriseCode {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl AsRef<str> for EnterpriseCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn real_codes_are_accepted() {
        for code in ["0300588569", "0101248141", "0100109106", "0100233488"] {
            let c = parse(code).unwrap();
            assert_eq!(c.as_str(), code);
            assert_eq!(c.branch(), None);
        }
        let branch = parse("0314409058-002").unwrap();
        assert_eq!(branch.base(), "0314409058");
        assert_eq!(branch.branch(), Some("002"));
        assert_eq!(branch.province_prefix(), "03");
    }

    #[test]
    fn wrong_check_digit_names_the_expected_one() {
        assert_eq!(
            parse("0300588568").unwrap_err().to_string(),
            "enterprise code 0300588568: check digit is 8, expected 9"
        );
    }

    #[test]
    fn check_digit_matches_the_formula() {
        assert_eq!(check_digit("030058856"), Some(9));
        assert_eq!(check_digit("010124814"), Some(1));
        assert_eq!(check_digit("03005885"), None);
        assert_eq!(check_digit("03005885x"), None);
        assert_eq!(check_digit("010000000"), None);
    }

    #[test]
    fn never_issued_codes_are_rejected() {
        // Any prefix whose weighted sum is divisible by 11 will do.
        let never = (0..1_000_000_000u32)
            .step_by(7919)
            .map(|n| format!("{n:09}"))
            .find(|p| &p[2..] != "0000000" && check_digit(p).is_none())
            .unwrap();
        for d in 0..10 {
            let e = parse(&format!("{never}{d}")).unwrap_err();
            assert!(e.problem().contains("divisible by 11"), "{e}");
        }
        let e = parse("0100000001").unwrap_err();
        assert!(e.problem().contains("all zero"), "{e}");
        let e = parse("0314409058-000").unwrap_err();
        assert_eq!(e.problem(), "branch number 000 is never issued");
    }

    #[test]
    fn malformed_shapes_are_explained() {
        assert_eq!(
            parse("031440905").unwrap_err().problem(),
            "must be 10 digits, or 10 digits, '-' and a 3-digit branch number, got 9 characters"
        );
        assert!(parse("0314409058 002")
            .unwrap_err()
            .problem()
            .contains("'-'"));
        assert!(parse("031440905-8002").is_err());
        assert_eq!(
            parse("0314409058-0a2").unwrap_err().problem(),
            "branch number must be 3 digits, found 'a' at position 13"
        );
        assert!(parse("03144090é8").is_err());
        assert!(parse("0314409058-").is_err());
    }

    proptest! {
        #[test]
        fn issued_prefixes_round_trip(prefix in "[0-9]{9}") {
            match check_digit(&prefix) {
                Some(c) => {
                    let code = format!("{prefix}{c}");
                    prop_assert!(parse(&code).is_ok());
                    let branch = format!("{code}-001");
                    prop_assert!(parse(&branch).is_ok());
                    for d in (0..10u8).filter(|d| *d != c) {
                        let other = format!("{prefix}{d}");
                        prop_assert!(parse(&other).is_err());
                    }
                }
                None => {
                    for d in 0..10u8 {
                        let other = format!("{prefix}{d}");
                        prop_assert!(parse(&other).is_err());
                    }
                }
            }
        }

        #[test]
        fn a_single_digit_change_is_caught_unless_the_check_digit_is_recomputed(
            prefix in "[0-9]{9}", pos in 0usize..10, delta in 1u8..10,
        ) {
            let Some(c) = check_digit(&prefix) else { return Ok(()) };
            let mut digits: Vec<u8> = format!("{prefix}{c}").into_bytes();
            digits[pos] = b'0' + (digits[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(digits).unwrap();
            prop_assert!(parse(&changed).is_err(), "{} accepted", changed);
            if pos < 9 {
                if let Some(c2) = check_digit(&changed[..9]) {
                    let fixed = format!("{}{}", &changed[..9], c2);
                    prop_assert!(parse(&fixed).is_ok());
                }
            }
        }
    }
}
