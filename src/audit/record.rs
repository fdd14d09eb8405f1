//! One audit record: who read what, for which procedure and dossier, and how
//! it ended; plus its canonical byte encoding, which is what the hash chain
//! covers.
//!
//! The canonical encoding does not go through JSON, so it cannot drift with
//! serde_json's map ordering, escaping or number formatting. It is the fields
//! in this fixed order, each written as:
//!
//! | field            | encoding                                        |
//! |------------------|-------------------------------------------------|
//! | `time_unix_ms`   | i64, 8 bytes big-endian (two's complement)      |
//! | `request_id`     | string                                          |
//! | `agency_code`    | string                                          |
//! | `method`         | string                                          |
//! | `procedure_code` | string                                          |
//! | `dossier_id`     | string                                          |
//! | `officer_id`     | string                                          |
//! | `subjects`       | list                                            |
//! | `fields`         | list                                            |
//! | `outcome`        | string                                          |
//! | `latency_us`     | u64, 8 bytes big-endian                         |
//! | `relay_agency_code` | string \ both only when either is not empty |
//! | `reason`         | string /                                        |
//!
//! where a *string* is its UTF-8 byte length as u64 big-endian followed by the
//! bytes, and a *list* is its element count as u64 big-endian followed by each
//! element as a string. Every variable-length part carries its length, so two
//! different records never encode to the same bytes. `relay_agency_code` and
//! `reason` came later: a record with neither (a direct call answered OK, or
//! any record written before they existed) encodes exactly as before, so older
//! logs still verify; a record with either carries both, each length-prefixed,
//! so it is longer than any record without them that shares its other fields
//! and the two can never be mistaken for each other.

use serde::{Deserialize, Serialize};

/// One call through the gateway, as the audit log keeps it.
///
/// Unknown JSON fields are rejected when reading a record back: a field the
/// canonical encoding does not cover must not be able to ride along unhashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// When the call arrived, milliseconds since the Unix epoch.
    pub time_unix_ms: i64,
    pub request_id: String,
    /// The calling agency, from its certificate.
    pub agency_code: String,
    /// Full gRPC method name.
    pub method: String,
    /// Administrative procedure the call serves.
    pub procedure_code: String,
    pub dossier_id: String,
    pub officer_id: String,
    /// Whose records were read: personal ids, enterprise codes, parcel keys.
    pub subjects: Vec<String>,
    /// The fields returned (the granted intersection of the read mask).
    pub fields: Vec<String>,
    /// gRPC status code name, such as `OK` or `PERMISSION_DENIED`.
    pub outcome: String,
    pub latency_us: u64,
    /// The gateway that relayed the call on behalf of `agency_code`; empty
    /// for a direct call.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub relay_agency_code: String,
    /// The `ErrorInfo.reason` of a refused or failed call (`METHOD_NOT_GRANTED`,
    /// `VERIFICATION_LIMIT`, ...); empty for an answered call.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl AuditRecord {
    /// The subjects the subject index holds for this record, each once:
    /// valid identifiers only (a refused call's made-up values are
    /// recorded, but nobody can list records under them). The one rule
    /// every index writer and verifier follows.
    pub fn indexed_subjects(&self) -> impl Iterator<Item = &str> {
        self.subjects
            .iter()
            .enumerate()
            .filter(|(i, s)| crate::domain::is_subject_key(s) && !self.subjects[..*i].contains(s))
            .map(|(_, s)| s.as_str())
    }

    /// The canonical encoding described in the module doc.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&self.time_unix_ms.to_be_bytes());
        for s in [
            &self.request_id,
            &self.agency_code,
            &self.method,
            &self.procedure_code,
            &self.dossier_id,
            &self.officer_id,
        ] {
            put_str(&mut out, s);
        }
        put_list(&mut out, &self.subjects);
        put_list(&mut out, &self.fields);
        put_str(&mut out, &self.outcome);
        out.extend_from_slice(&self.latency_us.to_be_bytes());
        if !self.relay_agency_code.is_empty() || !self.reason.is_empty() {
            put_str(&mut out, &self.relay_agency_code);
            put_str(&mut out, &self.reason);
        }
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u64).to_be_bytes());
    for item in items {
        put_str(out, item);
    }
}

#[cfg(test)]
pub(crate) fn sample(n: u64, subject: &str) -> AuditRecord {
    AuditRecord {
        time_unix_ms: 1_733_400_000_000 + n as i64,
        request_id: format!("req-{n:06}"),
        agency_code: "000.00.20.H13".into(),
        method: "interop.citizen.v1.CitizenRegistryService/GetCitizen".into(),
        procedure_code: "1.004227".into(),
        dossier_id: format!("000.00.20.H13-241205-{n:04}"),
        officer_id: "cb-017".into(),
        subjects: vec![subject.to_owned()],
        fields: vec!["fullName".into(), "permanentAddress.provinceCode".into()],
        outcome: "OK".into(),
        latency_us: 850 + n,
        relay_agency_code: String::new(),
        reason: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_start_with_time_and_end_with_latency() {
        let r = sample(1, "001099012345");
        let bytes = r.canonical_bytes();
        assert_eq!(bytes[..8], r.time_unix_ms.to_be_bytes());
        assert_eq!(bytes[bytes.len() - 8..], r.latency_us.to_be_bytes());
    }

    #[test]
    fn moving_bytes_between_list_elements_changes_the_encoding() {
        let mut a = sample(1, "ab");
        a.subjects = vec!["ab".into(), "c".into()];
        let mut b = a.clone();
        b.subjects = vec!["a".into(), "bc".into()];
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
    }

    #[test]
    fn moving_an_element_between_lists_changes_the_encoding() {
        let mut a = sample(1, "x");
        a.subjects = vec!["x".into(), "fullName".into()];
        a.fields = vec![];
        let mut b = a.clone();
        b.subjects = vec!["x".into()];
        b.fields = vec!["fullName".into()];
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
    }

    #[test]
    fn a_relay_extends_the_encoding_and_a_direct_call_keeps_the_old_one() {
        let direct = sample(1, "x");
        let old_layout_len = direct.canonical_bytes().len();
        let mut relayed = direct.clone();
        relayed.relay_agency_code = "000.00.00.H99".into();
        let bytes = relayed.canonical_bytes();
        assert_eq!(bytes[..old_layout_len], direct.canonical_bytes()[..]);
        assert!(bytes.len() > old_layout_len);
        let json = serde_json::to_value(&direct).unwrap();
        assert!(json.get("relay_agency_code").is_none());
        let back: AuditRecord =
            serde_json::from_value(serde_json::to_value(&relayed).unwrap()).unwrap();
        assert_eq!(back, relayed);
    }

    #[test]
    fn a_relay_and_a_reason_never_encode_alike() {
        let mut relayed = sample(1, "x");
        relayed.relay_agency_code = "X".into();
        let mut refused = sample(1, "x");
        refused.reason = "X".into();
        assert_ne!(relayed.canonical_bytes(), refused.canonical_bytes());
        let json = serde_json::to_value(&refused).unwrap();
        assert_eq!(json["reason"], "X");
        assert_eq!(
            serde_json::from_value::<AuditRecord>(json).unwrap(),
            refused
        );
    }

    #[test]
    fn json_with_an_unknown_field_is_rejected() {
        let mut v = serde_json::to_value(sample(1, "x")).unwrap();
        v["note"] = "unhashed".into();
        assert!(serde_json::from_value::<AuditRecord>(v).is_err());
    }
}
