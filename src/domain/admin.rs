//! Administrative-unit codes: the five-digit commune code and the two-digit
//! province code, with the 34 provinces in force since 1 July 2025 and the 29
//! codes closed by that merger (still found on records issued before it).
//!
//! Closed codes are never reissued, so a province code names one unit over a
//! period; treat codes as identifiers, not as location keys (DOMAIN.md).

use super::{expect_digits, IdError, IdKind};

/// The 34 provinces and centrally-run cities since 1 July 2025.
pub const CURRENT_PROVINCES: &[(&str, &str)] = &[
    ("01", "Hà Nội"),
    ("04", "Cao Bằng"),
    ("08", "Tuyên Quang"),
    ("11", "Điện Biên"),
    ("12", "Lai Châu"),
    ("14", "Sơn La"),
    ("15", "Lào Cai"),
    ("19", "Thái Nguyên"),
    ("20", "Lạng Sơn"),
    ("22", "Quảng Ninh"),
    ("24", "Bắc Ninh"),
    ("25", "Phú Thọ"),
    ("31", "Hải Phòng"),
    ("33", "Hưng Yên"),
    ("37", "Ninh Bình"),
    ("38", "Thanh Hóa"),
    ("40", "Nghệ An"),
    ("42", "Hà Tĩnh"),
    ("44", "Quảng Trị"),
    ("46", "Huế"),
    ("48", "Đà Nẵng"),
    ("51", "Quảng Ngãi"),
    ("52", "Gia Lai"),
    ("56", "Khánh Hòa"),
    ("66", "Đắk Lắk"),
    ("68", "Lâm Đồng"),
    ("75", "Đồng Nai"),
    ("79", "Hồ Chí Minh"),
    ("80", "Tây Ninh"),
    ("82", "Đồng Tháp"),
    ("86", "Vĩnh Long"),
    ("91", "An Giang"),
    ("92", "Cần Thơ"),
    ("96", "Cà Mau"),
];

/// The centrally-run cities among [`CURRENT_PROVINCES`] ("thành phố" rather
/// than "tỉnh" in full names).
pub const CENTRALLY_RUN_CITIES: &[&str] = &["01", "31", "46", "48", "79", "92"];

/// Province codes closed on 1 July 2025: `(code, former name, code of the
/// province it merged into)`. The successors follow Resolution 202/2025/QH15
/// and agree with the rule that a merged province keeps the code of the old
/// province hosting its People's Committee *(verify the successor column
/// before relying on it for anything but display)*.
pub const CLOSED_PROVINCES: &[(&str, &str, &str)] = &[
    ("02", "Hà Giang", "08"),
    ("06", "Bắc Kạn", "19"),
    ("10", "Lào Cai", "15"),
    ("17", "Hòa Bình", "25"),
    ("26", "Vĩnh Phúc", "25"),
    ("27", "Bắc Ninh", "24"),
    ("30", "Hải Dương", "31"),
    ("34", "Thái Bình", "33"),
    ("35", "Hà Nam", "37"),
    ("36", "Nam Định", "37"),
    ("45", "Quảng Trị", "44"),
    ("49", "Quảng Nam", "48"),
    ("54", "Phú Yên", "66"),
    ("58", "Ninh Thuận", "56"),
    ("60", "Bình Thuận", "68"),
    ("62", "Kon Tum", "51"),
    ("64", "Gia Lai", "52"),
    ("67", "Đắk Nông", "68"),
    ("70", "Bình Phước", "75"),
    ("72", "Tây Ninh", "80"),
    ("74", "Bình Dương", "79"),
    ("77", "Bà Rịa - Vũng Tàu", "79"),
    ("83", "Bến Tre", "86"),
    ("84", "Trà Vinh", "86"),
    ("87", "Đồng Tháp", "82"),
    ("89", "An Giang", "91"),
    ("93", "Hậu Giang", "92"),
    ("94", "Sóc Trăng", "92"),
    ("95", "Bạc Liêu", "96"),
];

/// Parses a commune, ward or special-zone code: five ASCII digits, not `00000`.
pub fn parse_commune_code(s: &str) -> Result<&str, IdError> {
    expect_digits(IdKind::CommuneCode, s, 5)?;
    if s == "00000" {
        return Err(IdError::new(
            IdKind::CommuneCode,
            "00000 is not a commune code (codes start at 00001)",
        ));
    }
    Ok(s)
}

/// Parses a province code: two digits naming a current province or a code
/// closed by the 2025 merger.
pub fn parse_province_code(s: &str) -> Result<&str, IdError> {
    expect_digits(IdKind::ProvinceCode, s, 2)?;
    if province_name(s).is_none() && !CLOSED_PROVINCES.iter().any(|(c, _, _)| *c == s) {
        return Err(IdError::new(
            IdKind::ProvinceCode,
            format!(
                "{s} is neither one of the 34 current province codes nor a closed pre-2025 code"
            ),
        ));
    }
    Ok(s)
}

/// Name of a current province; `None` for closed or unknown codes.
pub fn province_name(code: &str) -> Option<&'static str> {
    CURRENT_PROVINCES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
}

/// Whether `code` is one of the 34 current provinces.
pub fn is_current_province(code: &str) -> bool {
    province_name(code).is_some()
}

/// The current province that `code` is now part of: itself when current, the
/// merger's successor when closed, `None` when unknown.
pub fn successor_province(code: &str) -> Option<&'static str> {
    CURRENT_PROVINCES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(c, _)| *c)
        .or_else(|| {
            CLOSED_PROVINCES
                .iter()
                .find(|(c, _, _)| *c == code)
                .map(|(_, _, to)| *to)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tables_cover_the_63_old_codes_once() {
        assert_eq!(CURRENT_PROVINCES.len(), 34);
        assert_eq!(CLOSED_PROVINCES.len(), 29);
        let mut all: Vec<&str> = CURRENT_PROVINCES
            .iter()
            .map(|p| p.0)
            .chain(CLOSED_PROVINCES.iter().map(|p| p.0))
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 63);
    }

    #[test]
    fn every_closed_code_merged_into_a_current_one() {
        for (code, _, to) in CLOSED_PROVINCES {
            assert!(is_current_province(to), "{code} -> {to}");
            assert_eq!(successor_province(code), Some(*to));
        }
        for city in CENTRALLY_RUN_CITIES {
            assert!(is_current_province(city), "{city}");
        }
    }

    #[test]
    fn can_tho_absorbed_soc_trang_and_hau_giang() {
        assert_eq!(province_name("92"), Some("Cần Thơ"));
        assert_eq!(successor_province("94"), Some("92"));
        assert_eq!(successor_province("93"), Some("92"));
        assert_eq!(province_name("94"), None);
        assert_eq!(parse_province_code("94"), Ok("94"));
        assert_eq!(successor_province("92"), Some("92"));
        assert_eq!(successor_province("03"), None);
    }

    #[test]
    fn province_codes_are_checked_against_the_tables() {
        assert_eq!(parse_province_code("01"), Ok("01"));
        let e = parse_province_code("03").unwrap_err();
        assert_eq!(
            e.to_string(),
            "province code 03 is neither one of the 34 current province codes nor a closed pre-2025 code"
        );
        assert_eq!(
            parse_province_code("092").unwrap_err().problem(),
            "must be 2 digits, got 3 characters"
        );
        assert!(parse_province_code("9a").is_err());
    }

    #[test]
    fn commune_codes_are_five_digits() {
        assert_eq!(parse_commune_code("31117"), Ok("31117"));
        assert_eq!(parse_commune_code("00004"), Ok("00004"));
        assert!(parse_commune_code("00000").is_err());
        assert_eq!(
            parse_commune_code("3111").unwrap_err().to_string(),
            "commune code must be 5 digits, got 4 characters"
        );
        assert!(parse_commune_code("3111x").is_err());
        assert!(parse_commune_code(" 31117").is_err());
    }

    proptest! {
        #[test]
        fn any_nonzero_five_digits_is_a_commune_code(n in 1u32..100_000) {
            let s = format!("{n:05}");
            prop_assert_eq!(parse_commune_code(&s), Ok(s.as_str()));
        }

        #[test]
        fn two_digits_parse_exactly_when_listed(n in 0u32..100) {
            let s = format!("{n:02}");
            prop_assert_eq!(parse_province_code(&s).is_ok(), successor_province(&s).is_some());
        }

        #[test]
        fn other_lengths_are_never_province_or_commune_codes(s in "\\PC{0,8}") {
            prop_assume!(s.chars().count() != 2);
            prop_assert!(parse_province_code(&s).is_err());
            prop_assume!(s.chars().count() != 5);
            prop_assert!(parse_commune_code(&s).is_err());
        }
    }
}
