//! The twelve-digit personal identification number, `PPP C YY NNNNNN`: the
//! province (or country) where the birth was registered, a century-and-sex
//! digit, the last two digits of the birth year, and a serial.
//!
//! There is no check digit, so validation is the shape, the registration code
//! table, and (at import) agreement with the record's birth date and sex.

use std::fmt;
use std::str::FromStr;

use super::{expect_digits, IdError, IdKind};

/// Codes of the province where a birth was registered: the 63 pre-2025
/// province codes, zero-padded to three digits. These never change when
/// provinces merge, so the table keeps the old names.
pub const BIRTH_REGISTRATION_PROVINCES: &[(&str, &str)] = &[
    ("001", "Hà Nội"),
    ("002", "Hà Giang"),
    ("004", "Cao Bằng"),
    ("006", "Bắc Kạn"),
    ("008", "Tuyên Quang"),
    ("010", "Lào Cai"),
    ("011", "Điện Biên"),
    ("012", "Lai Châu"),
    ("014", "Sơn La"),
    ("015", "Yên Bái"),
    ("017", "Hòa Bình"),
    ("019", "Thái Nguyên"),
    ("020", "Lạng Sơn"),
    ("022", "Quảng Ninh"),
    ("024", "Bắc Giang"),
    ("025", "Phú Thọ"),
    ("026", "Vĩnh Phúc"),
    ("027", "Bắc Ninh"),
    ("030", "Hải Dương"),
    ("031", "Hải Phòng"),
    ("033", "Hưng Yên"),
    ("034", "Thái Bình"),
    ("035", "Hà Nam"),
    ("036", "Nam Định"),
    ("037", "Ninh Bình"),
    ("038", "Thanh Hóa"),
    ("040", "Nghệ An"),
    ("042", "Hà Tĩnh"),
    ("044", "Quảng Bình"),
    ("045", "Quảng Trị"),
    ("046", "Thừa Thiên Huế"),
    ("048", "Đà Nẵng"),
    ("049", "Quảng Nam"),
    ("051", "Quảng Ngãi"),
    ("052", "Bình Định"),
    ("054", "Phú Yên"),
    ("056", "Khánh Hòa"),
    ("058", "Ninh Thuận"),
    ("060", "Bình Thuận"),
    ("062", "Kon Tum"),
    ("064", "Gia Lai"),
    ("066", "Đắk Lắk"),
    ("067", "Đắk Nông"),
    ("068", "Lâm Đồng"),
    ("070", "Bình Phước"),
    ("072", "Tây Ninh"),
    ("074", "Bình Dương"),
    ("075", "Đồng Nai"),
    ("077", "Bà Rịa - Vũng Tàu"),
    ("079", "Hồ Chí Minh"),
    ("080", "Long An"),
    ("082", "Tiền Giang"),
    ("083", "Bến Tre"),
    ("084", "Trà Vinh"),
    ("086", "Vĩnh Long"),
    ("087", "Đồng Tháp"),
    ("089", "An Giang"),
    ("091", "Kiên Giang"),
    ("092", "Cần Thơ"),
    ("093", "Hậu Giang"),
    ("094", "Sóc Trăng"),
    ("095", "Bạc Liêu"),
    ("096", "Cà Mau"),
];

/// Codes used for births registered abroad. *(verify)*: DOMAIN.md says a
/// country code may stand in the first three digits, but the code list (an
/// annex of the Ministry of Public Security's circular) was not found, so the
/// table is empty and such ids are rejected rather than accepted on a guess.
/// Add `("NNN", "country")` rows here once the list is confirmed.
pub const BIRTH_ABROAD_CODES: &[(&str, &str)] = &[];

/// A well-formed personal identification number.
///
/// `Debug` prints the masked form, so a stray `{:?}` in a log line does not
/// leak the id; use [`PersonalId::as_str`] where the full value is needed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PersonalId(String);

/// Parses a personal id: 12 ASCII digits whose first three are a known
/// birth-registration code. Every century/sex digit is syntactically valid.
pub fn parse(s: &str) -> Result<PersonalId, IdError> {
    expect_digits(IdKind::PersonalId, s, 12)?;
    let code = &s[..3];
    if registration_place(code).is_none() {
        return Err(IdError::new(
            IdKind::PersonalId,
            format!(
                "first 3 digits {code} are not a province code of birth registration \
                 (001 Hà Nội to 096 Cà Mau, pre-2025 codes)"
            ),
        )
        .showing(&mask(s)));
    }
    Ok(PersonalId(s.to_owned()))
}

/// The province (or country) named by a three-digit registration code.
pub fn registration_place(code: &str) -> Option<&'static str> {
    BIRTH_REGISTRATION_PROVINCES
        .iter()
        .chain(BIRTH_ABROAD_CODES)
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
}

/// The century-and-sex digit for a birth year and sex; `None` for years
/// outside 1900..=2399, which the scheme cannot express.
pub fn century_digit(birth_year: i32, male: bool) -> Option<u8> {
    if !(1900..=2399).contains(&birth_year) {
        return None;
    }
    let century = u8::try_from((birth_year - 1900) / 100).ok()?;
    Some(century * 2 + u8::from(!male))
}

fn mask(s: &str) -> String {
    // Callers pass 12 ASCII digits, so byte slicing is on char boundaries.
    format!("{}*******{}", &s[..3], &s[10..])
}

impl PersonalId {
    /// The twelve digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The three-digit code of the birth-registration province.
    pub fn province_code(&self) -> &str {
        &self.0[..3]
    }

    /// The century-and-sex digit (the fourth digit).
    pub fn century_digit(&self) -> u8 {
        self.digit(3)
    }

    /// Birth year: 1900 + 100·⌊C/2⌋ + YY.
    pub fn birth_year(&self) -> i32 {
        let c = i32::from(self.century_digit());
        let yy = i32::from(self.digit(4)) * 10 + i32::from(self.digit(5));
        1900 + 100 * (c / 2) + yy
    }

    /// Whether the century digit says male (even digits).
    pub fn is_male(&self) -> bool {
        self.century_digit() % 2 == 0
    }

    /// The six-digit serial.
    pub fn serial(&self) -> &str {
        &self.0[6..]
    }

    /// A log-safe form showing only the first 3 and last 2 digits: `092*******45`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    fn digit(&self, i: usize) -> u8 {
        // Parsing guarantees 12 ASCII digits.
        self.0.as_bytes()[i] - b'0'
    }
}

impl fmt::Debug for PersonalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PersonalId").field(&self.masked()).finish()
    }
}

impl FromStr for PersonalId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl AsRef<str> for PersonalId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_can_tho_id() {
        let id = parse("092085000123").unwrap();
        assert_eq!(id.as_str(), "092085000123");
        assert_eq!(id.province_code(), "092");
        assert_eq!(id.birth_year(), 1985);
        assert!(id.is_male());
        assert_eq!(id.serial(), "000123");
        assert_eq!(id.masked(), "092*******23");
        assert_eq!(format!("{id:?}"), "PersonalId(\"092*******23\")");
    }

    #[test]
    fn century_digit_gives_year_and_sex() {
        let f2003 = parse("094303004567").unwrap();
        assert_eq!(f2003.birth_year(), 2003);
        assert!(!f2003.is_male());
        let m1999 = parse("001099000001").unwrap();
        assert_eq!(m1999.birth_year(), 1999);
        assert!(m1999.is_male());
        assert_eq!(parse("079912000001").unwrap().birth_year(), 2312);
    }

    #[test]
    fn wrong_length_is_reported_in_characters() {
        let e = parse("09208500012").unwrap_err();
        assert_eq!(
            e.to_string(),
            "personal id must be 12 digits, got 11 characters"
        );
        assert_eq!(
            parse("").unwrap_err().problem(),
            "must be 12 digits, got 0 characters"
        );
    }

    #[test]
    fn non_digits_are_rejected_with_their_position() {
        let e = parse("092O85000123").unwrap_err();
        assert_eq!(e.problem(), "must be 12 digits, found 'O' at position 4");
        // Twelve characters, but not twelve bytes: must not panic.
        assert!(parse("09208500012é").is_err());
    }

    #[test]
    fn unknown_province_is_rejected_and_masked() {
        let e = parse("003085000123").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("personal id 003*******23: first 3 digits 003"));
        assert!(parse("097085000123").is_err());
        assert!(parse("100085000123").is_err());
    }

    #[test]
    fn the_table_has_the_63_old_province_codes() {
        assert_eq!(BIRTH_REGISTRATION_PROVINCES.len(), 63);
        let mut codes: Vec<&str> = BIRTH_REGISTRATION_PROVINCES.iter().map(|p| p.0).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 63);
        // Each is a zero-padded pre-2025 province code known to `admin`.
        for (code, _) in BIRTH_REGISTRATION_PROVINCES {
            assert!(code.starts_with('0'), "{code}");
            assert!(
                crate::domain::admin::parse_province_code(&code[1..]).is_ok(),
                "{code}"
            );
        }
    }

    #[test]
    fn century_digit_encodes_year_and_sex() {
        assert_eq!(century_digit(1985, true), Some(0));
        assert_eq!(century_digit(1985, false), Some(1));
        assert_eq!(century_digit(2003, false), Some(3));
        assert_eq!(century_digit(2399, false), Some(9));
        assert_eq!(century_digit(1899, true), None);
        assert_eq!(century_digit(2400, true), None);
    }

    proptest! {
        #[test]
        fn built_ids_give_back_year_and_sex(
            p in 0..BIRTH_REGISTRATION_PROVINCES.len(),
            year in 1900i32..=2399,
            male in any::<bool>(),
            serial in 0u32..1_000_000,
        ) {
            let c = century_digit(year, male).unwrap();
            let s = format!(
                "{}{}{:02}{:06}",
                BIRTH_REGISTRATION_PROVINCES[p].0, c, year % 100, serial
            );
            let id = parse(&s).unwrap();
            prop_assert_eq!(id.birth_year(), year);
            prop_assert_eq!(id.is_male(), male);
            prop_assert_eq!(id.province_code(), BIRTH_REGISTRATION_PROVINCES[p].0);
            let masked = id.masked();
            prop_assert_eq!(&masked[..3], &s[..3]);
            prop_assert_eq!(&masked[10..], &s[10..]);
            prop_assert_eq!(&masked[3..10], "*******");
        }

        #[test]
        fn anything_but_twelve_digits_is_rejected(s in "\\PC{0,20}") {
            prop_assume!(!(s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())));
            prop_assert!(parse(&s).is_err());
        }

        #[test]
        fn twelve_digits_parse_exactly_when_the_code_is_known(s in "[0-9]{12}") {
            prop_assert_eq!(parse(&s).is_ok(), registration_place(&s[..3]).is_some());
        }
    }
}
