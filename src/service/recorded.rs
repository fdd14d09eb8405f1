//! What the access log keeps of a call's caller-supplied text. A value that
//! passed validation is kept as it is; one that did not is kept as
//! `invalid:` and the first 8 hex digits of its SHA-256, so a record of a
//! refused call still tells two attempts apart without ever carrying text
//! (formulas, terminal escapes, made-up identifiers) that someone later reads
//! in a report, a spreadsheet or a citizens' portal.

use crate::{domain, proto::common::v1::AccessContext};

/// Prefix of a recorded value that failed validation.
pub const INVALID_PREFIX: &str = "invalid:";

/// The context of a call as the access log records it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecordedContext {
    pub procedure_code: String,
    pub dossier_id: String,
    pub officer_id: String,
}

/// `invalid:` and a short hash of `raw`: recognisable, never data.
pub fn placeholder(raw: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{INVALID_PREFIX}{hex}")
}

/// Whether `value` is a placeholder made by [`placeholder`].
pub fn is_placeholder(value: &str) -> bool {
    value.strip_prefix(INVALID_PREFIX).is_some_and(|h| {
        h.len() == 8
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `value` if `valid` says so (or it is already a placeholder), else its
/// placeholder.
pub fn kept_if(value: String, valid: impl FnOnce(&str) -> bool) -> String {
    if is_placeholder(&value) || valid(&value) {
        value
    } else {
        placeholder(&value)
    }
}

/// Whether an officer id is acceptable: at most `max` characters, none of
/// them control characters or invisible formatting that could make it read
/// as something else (bidirectional overrides and isolates, zero-width
/// characters, line and paragraph separators, the byte-order mark).
pub fn officer_id_ok(id: &str, max: usize) -> bool {
    id.chars().count() <= max && !id.chars().any(|c| c.is_control() || is_invisible_format(c))
}

/// Unicode's format characters (general category Cf, Unicode 15.1: they
/// change how text displays or is read without showing themselves, tag
/// characters and interlinear annotation included), the line and
/// paragraph separators, and the Mongolian vowel separator.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod officer_id_tests {
    use super::officer_id_ok;

    #[test]
    fn officer_ids_refuse_controls_and_invisible_formatting() {
        assert!(officer_id_ok("cb-017", 64));
        assert!(officer_id_ok("Nguyễn Văn An (phòng 2)", 64));
        for bad in [
            "cb\u{1b}[31m",
            "cb\u{202E}710-bc",
            "cb\u{200B}017",
            "cb\u{2028}",
            "\u{FEFF}cb",
            "cb\u{2066}x",
            // Tag characters, inhibit-symmetric-swapping, interlinear
            // annotation, musical and hieroglyph format controls, number signs.
            "cb\u{E0001}017",
            "cb\u{E0041}017",
            "cb\u{206A}017",
            "cb\u{206F}017",
            "cb\u{FFF9}017",
            "cb\u{FFFB}017",
            "cb\u{1D173}017",
            "cb\u{13430}017",
            "cb\u{0600}017",
            "cb\u{110BD}017",
        ] {
            assert!(!officer_id_ok(bad, 64), "{bad:?}");
        }
        assert!(!officer_id_ok(&"x".repeat(65), 64));
    }
}

/// The recordable form of a call's context. An absent field stays empty.
/// Takes the context by value: its strings move into the record.
pub fn context(ctx: AccessContext, max_officer_id: usize) -> RecordedContext {
    let non_empty = |s: &str, ok: bool| s.is_empty() || ok;
    RecordedContext {
        procedure_code: kept_if(ctx.procedure_code, |s| {
            non_empty(s, domain::agency::parse_procedure_code(s).is_ok())
        }),
        dossier_id: kept_if(ctx.dossier_id, |s| {
            non_empty(s, domain::agency::parse_dossier_id(s).is_ok())
        }),
        officer_id: kept_if(ctx.officer_id, |s| officer_id_ok(s, max_officer_id)),
    }
}

/// The recordable form of a call's subjects: keys that are valid
/// identifiers, and placeholders for the rest.
pub fn subjects(subjects: Vec<String>) -> Vec<String> {
    subjects
        .into_iter()
        .map(|s| kept_if(s, domain::is_subject_key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_are_kept_and_invalid_ones_become_placeholders() {
        let ctx = AccessContext {
            procedure_code: "=HYPERLINK(\"http://evil.example/x\",\"1.004227\")".into(),
            dossier_id: "\u{1b}[2J\u{1b}[31mCALL 0900000000 FOR REFUND\r".into(),
            officer_id: "cb-017".into(),
        };
        let r = context(ctx.clone(), 64);
        assert!(is_placeholder(&r.procedure_code), "{r:?}");
        assert!(is_placeholder(&r.dossier_id), "{r:?}");
        assert_eq!(r.officer_id, "cb-017");
        assert_eq!(r.dossier_id, placeholder(&ctx.dossier_id));
        assert_ne!(r.dossier_id, placeholder("other"));

        let good = AccessContext {
            procedure_code: "1.004227".into(),
            dossier_id: "000.00.20.H13-241205-0001".into(),
            officer_id: "bell\u{7}".into(),
        };
        let r = context(good, 64);
        assert_eq!(r.procedure_code, "1.004227");
        assert_eq!(r.dossier_id, "000.00.20.H13-241205-0001");
        assert!(is_placeholder(&r.officer_id));
        assert_eq!(
            context(AccessContext::default(), 64),
            RecordedContext::default()
        );
    }

    #[test]
    fn subjects_keep_identifiers_only() {
        let kept = subjects(vec![
            "001099012345".into(),
            "0300588569".into(),
            "26734/12/101".into(),
            "x".repeat(20),
            "26734/0/101".into(),
            "invalid:0123abcd".into(),
        ]);
        assert_eq!(kept[..3], ["001099012345", "0300588569", "26734/12/101"]);
        assert!(kept[3..].iter().all(|s| is_placeholder(s)), "{kept:?}");
        assert_eq!(kept[5], "invalid:0123abcd");
    }
}
