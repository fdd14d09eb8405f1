//! Land identifiers: parcel-number bounds, land-use right certificate serials
//! and registry-book numbers, and the land-use purpose codes of the national
//! land classification, kept as data.

use super::{all_digits, first_non_digit, IdError, IdKind};

/// Highest cadastral map sheet number (up to 6 digits).
pub const MAX_MAP_SHEET: u32 = 999_999;

/// Highest parcel number on a map sheet (up to 7 digits).
pub const MAX_PARCEL_NUMBER: u32 = 9_999_999;

/// Which certificate form a serial belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertificateForm {
    /// Form issued since 1 August 2024: two letters, a space and 8 digits
    /// (`AA 01224578`).
    Since2024,
    /// Older forms: two letters, a space and 6 digits (`DA 123456`).
    Legacy,
}

/// Prefixes of registry-book numbers. *(verify)*: DOMAIN.md gives `CS01234`;
/// older books are reported to use other two-letter prefixes (such as `CH`
/// for households), which are not accepted until confirmed.
pub const REGISTRY_BOOK_PREFIXES: &[&str] = &["CS"];

/// Most digits after the registry-book prefix. *(verify)*
pub const MAX_REGISTRY_BOOK_DIGITS: usize = 8;

/// Land-use purpose codes with their Vietnamese names: the codes listed in
/// DOMAIN.md plus the other codes of the land classification of Circular
/// 27/2018/TT-BTNMT in common use. Circular 08/2024/TT-BTNMT revised the
/// classification under the 2024 Land Law *(verify codes it added or retired)*.
pub const PURPOSE_CODES: &[(&str, &str)] = &[
    // Agricultural land.
    ("LUC", "Đất chuyên trồng lúa nước"),
    ("LUK", "Đất trồng lúa nước còn lại"),
    ("LUN", "Đất trồng lúa nương"),
    ("BHK", "Đất bằng trồng cây hằng năm khác"),
    ("NHK", "Đất nương rẫy trồng cây hằng năm khác"),
    ("CLN", "Đất trồng cây lâu năm"),
    ("RSX", "Đất rừng sản xuất"),
    ("RPH", "Đất rừng phòng hộ"),
    ("RDD", "Đất rừng đặc dụng"),
    ("NTS", "Đất nuôi trồng thủy sản"),
    ("LMU", "Đất làm muối"),
    ("NKH", "Đất nông nghiệp khác"),
    // Residential land.
    ("ONT", "Đất ở tại nông thôn"),
    ("ODT", "Đất ở tại đô thị"),
    // Other non-agricultural land.
    ("TSC", "Đất xây dựng trụ sở cơ quan"),
    ("CQP", "Đất quốc phòng"),
    ("CAN", "Đất an ninh"),
    ("DTS", "Đất xây dựng trụ sở của tổ chức sự nghiệp"),
    ("DVH", "Đất xây dựng cơ sở văn hóa"),
    ("DXH", "Đất xây dựng cơ sở dịch vụ xã hội"),
    ("DYT", "Đất xây dựng cơ sở y tế"),
    ("DGD", "Đất xây dựng cơ sở giáo dục và đào tạo"),
    ("DTT", "Đất xây dựng cơ sở thể dục thể thao"),
    ("DKH", "Đất xây dựng cơ sở khoa học và công nghệ"),
    ("DNG", "Đất xây dựng cơ sở ngoại giao"),
    ("DSK", "Đất xây dựng công trình sự nghiệp khác"),
    ("SKK", "Đất khu công nghiệp"),
    ("SKN", "Đất cụm công nghiệp"),
    ("SKT", "Đất khu chế xuất"),
    ("TMD", "Đất thương mại, dịch vụ"),
    ("SKC", "Đất cơ sở sản xuất phi nông nghiệp"),
    ("SKS", "Đất sử dụng cho hoạt động khoáng sản"),
    ("SKX", "Đất sản xuất vật liệu xây dựng, làm đồ gốm"),
    ("DGT", "Đất giao thông"),
    ("DTL", "Đất thủy lợi"),
    ("DDT", "Đất có di tích lịch sử - văn hóa"),
    ("DDL", "Đất có danh lam thắng cảnh"),
    ("DSH", "Đất sinh hoạt cộng đồng"),
    ("DKV", "Đất khu vui chơi, giải trí công cộng"),
    ("DNL", "Đất công trình năng lượng"),
    ("DBV", "Đất công trình bưu chính, viễn thông"),
    ("DCH", "Đất chợ"),
    ("DRA", "Đất bãi thải, xử lý chất thải"),
    ("TON", "Đất cơ sở tôn giáo"),
    ("TIN", "Đất cơ sở tín ngưỡng"),
    (
        "NTD",
        "Đất làm nghĩa trang, nghĩa địa, nhà tang lễ, nhà hỏa táng",
    ),
    ("SON", "Đất sông, ngòi, kênh, rạch, suối"),
    ("MNC", "Đất có mặt nước chuyên dùng"),
    ("PNK", "Đất phi nông nghiệp khác"),
    // Unused land.
    ("BCS", "Đất bằng chưa sử dụng"),
    ("DCS", "Đất đồi núi chưa sử dụng"),
    ("NCS", "Núi đá không có rừng cây"),
];

/// Whether `code` is a land-use purpose code of [`PURPOSE_CODES`].
pub fn is_known_purpose_code(code: &str) -> bool {
    purpose_name(code).is_some()
}

/// The Vietnamese name of a land-use purpose code.
pub fn purpose_name(code: &str) -> Option<&'static str> {
    PURPOSE_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
}

/// Parses a certificate serial: two uppercase letters, a space, then 8 digits
/// (form issued since 1 August 2024) or 6 digits (older forms).
pub fn parse_certificate_serial(s: &str) -> Result<CertificateForm, IdError> {
    let err = |problem: &str| {
        IdError::new(
            IdKind::CertificateSerial,
            format!("{problem}; expected two uppercase letters, a space and 8 digits (AA 01224578) or 6 digits on older forms (DA 123456)"),
        )
        .showing(s)
    };
    let b = s.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_uppercase() || !b[1].is_ascii_uppercase() {
        return Err(err("must start with two uppercase letters"));
    }
    if b[2] != b' ' {
        return Err(err("the letters must be followed by one space"));
    }
    // Bytes 0..3 are ASCII, so index 3 is a char boundary.
    let digits = &s[3..];
    if !all_digits(digits) {
        return Err(err("the letters and space must be followed by digits only"));
    }
    match digits.len() {
        8 => Ok(CertificateForm::Since2024),
        6 => Ok(CertificateForm::Legacy),
        n => Err(err(&format!("got {n} digits"))),
    }
}

/// Parses a registry-book number: a prefix of [`REGISTRY_BOOK_PREFIXES`]
/// followed by 1 to [`MAX_REGISTRY_BOOK_DIGITS`] digits (`CS01234`).
pub fn parse_registry_book_number(s: &str) -> Result<&str, IdError> {
    let err = |problem: String| IdError::new(IdKind::RegistryBookNumber, problem).showing(s);
    let Some(digits) = REGISTRY_BOOK_PREFIXES
        .iter()
        .find_map(|p| s.strip_prefix(p))
    else {
        return Err(err(format!(
            "must start with {} (like CS01234)",
            REGISTRY_BOOK_PREFIXES.join(" or ")
        )));
    };
    if digits.is_empty() || digits.chars().count() > MAX_REGISTRY_BOOK_DIGITS {
        return Err(err(format!(
            "must have 1 to {MAX_REGISTRY_BOOK_DIGITS} digits after the prefix, got {}",
            digits.chars().count()
        )));
    }
    if let Some((pos, c)) = first_non_digit(digits) {
        return Err(err(format!(
            "found {c:?} at position {} where a digit belongs",
            pos + 2
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn serials_of_both_forms_are_accepted() {
        assert_eq!(
            parse_certificate_serial("AA 01224578"),
            Ok(CertificateForm::Since2024)
        );
        assert_eq!(
            parse_certificate_serial("DA 123456"),
            Ok(CertificateForm::Legacy)
        );
    }

    #[test]
    fn malformed_serials_are_explained() {
        let e = parse_certificate_serial("AA 0122457").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("certificate serial AA 0122457: got 7 digits; expected"),
            "{e}"
        );
        assert!(parse_certificate_serial("aa 01224578").is_err());
        assert!(parse_certificate_serial("AA01224578").is_err());
        assert!(parse_certificate_serial("AA  1224578").is_err());
        assert!(parse_certificate_serial("A1 01224578").is_err());
        assert!(parse_certificate_serial("ĐA 123456").is_err());
        assert!(parse_certificate_serial("AA ").is_err());
        assert!(parse_certificate_serial("").is_err());
        assert!(parse_certificate_serial("AA 1234567é").is_err());
    }

    #[test]
    fn registry_book_numbers_need_the_prefix_and_digits() {
        assert_eq!(parse_registry_book_number("CS01234"), Ok("CS01234"));
        assert!(parse_registry_book_number("CS1").is_ok());
        assert!(parse_registry_book_number("CS12345678").is_ok());
        assert!(parse_registry_book_number("CS123456789").is_err());
        assert!(parse_registry_book_number("CS").is_err());
        assert_eq!(
            parse_registry_book_number("CS01a34").unwrap_err().problem(),
            "found 'a' at position 5 where a digit belongs"
        );
        assert!(parse_registry_book_number("cs01234").is_err());
        assert!(parse_registry_book_number("01234").is_err());
    }

    #[test]
    fn purpose_codes_are_unique_and_include_the_documented_ones() {
        let mut codes: Vec<&str> = PURPOSE_CODES.iter().map(|p| p.0).collect();
        codes.sort_unstable();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n);
        for code in [
            "LUC", "BHK", "CLN", "RSX", "RPH", "RDD", "NTS", "ONT", "ODT", "TMD", "SKC", "DGT",
            "DGD", "DYT", "TON", "NTD", "SON",
        ] {
            assert!(is_known_purpose_code(code), "{code}");
        }
        assert!(!is_known_purpose_code("odt"));
        assert!(!is_known_purpose_code("XYZ"));
        assert_eq!(purpose_name("ODT"), Some("Đất ở tại đô thị"));
    }

    proptest! {
        #[test]
        fn built_serials_parse_with_their_form(l in "[A-Z]{2}", n in 0u32..100_000_000, legacy in any::<bool>()) {
            let (s, form) = if legacy {
                (format!("{l} {:06}", n % 1_000_000), CertificateForm::Legacy)
            } else {
                (format!("{l} {n:08}"), CertificateForm::Since2024)
            };
            prop_assert_eq!(parse_certificate_serial(&s), Ok(form));
        }

        #[test]
        fn registry_numbers_of_one_to_eight_digits_parse(d in "[0-9]{1,8}") {
            let s = format!("CS{d}");
            prop_assert_eq!(parse_registry_book_number(&s), Ok(s.as_str()));
        }

        #[test]
        fn land_parsers_never_panic(s in "\\PC{0,16}") {
            let _ = parse_certificate_serial(&s);
            let _ = parse_registry_book_number(&s);
        }
    }
}
