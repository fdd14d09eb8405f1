//! Field masks: the set algebra on field paths (intersection of what was asked
//! with what is granted) and its application to an encoded record.
//!
//! Records are kept protobuf-encoded, so a mask is applied on the wire format:
//! fields are kept or dropped by number, recursing into sub-messages that are
//! only partly disclosed. This is generic over every record type and never
//! decodes what it is about to drop.

use std::collections::BTreeMap;

/// A set of field paths, each a list of names (`["permanent_address", "province_code"]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathSet {
    paths: Vec<Vec<String>>,
}

fn split(path: &str) -> Vec<String> {
    path.split('.').map(str::to_owned).collect()
}

impl PathSet {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(paths: I) -> Self {
        let mut set = PathSet {
            paths: paths.into_iter().map(|p| split(p.as_ref())).collect(),
        };
        set.normalise();
        set
    }

    /// Drops paths covered by a shorter one and duplicates.
    fn normalise(&mut self) {
        self.paths.sort();
        self.paths.dedup();
        let all = std::mem::take(&mut self.paths);
        for p in all {
            if !self.paths.iter().any(|q| is_prefix(q, &p)) {
                self.paths.push(p);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Dotted paths, sorted.
    pub fn to_strings(&self) -> Vec<String> {
        self.paths.iter().map(|p| p.join(".")).collect()
    }

    /// The paths of `self` that overlap nothing in `granted` at all.
    pub fn outside(&self, granted: &PathSet) -> Vec<String> {
        self.paths
            .iter()
            .filter(|p| {
                !granted
                    .paths
                    .iter()
                    .any(|g| is_prefix(g, p) || is_prefix(p, g))
            })
            .map(|p| p.join("."))
            .collect()
    }

    /// The intersection: a requested path under a granted one is kept as is; a
    /// requested path above granted ones narrows to those granted sub-paths.
    pub fn intersect(&self, granted: &PathSet) -> PathSet {
        let mut out = Vec::new();
        for r in &self.paths {
            for g in &granted.paths {
                if is_prefix(g, r) {
                    out.push(r.clone());
                } else if is_prefix(r, g) {
                    out.push(g.clone());
                }
            }
        }
        let mut set = PathSet { paths: out };
        set.normalise();
        set
    }

    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.paths.iter().map(|p| p.join("."))
    }
}

fn is_prefix(prefix: &[String], path: &[String]) -> bool {
    prefix.len() <= path.len() && prefix.iter().zip(path).all(|(a, b)| a == b)
}

/// A compiled mask: field numbers to keep, each either whole or partly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaskTree {
    children: BTreeMap<u32, MaskTree>,
    whole: bool,
}

impl MaskTree {
    /// Builds the tree from resolved paths (lists of field numbers).
    pub fn from_numbers<'a>(paths: impl IntoIterator<Item = &'a [u32]>) -> Self {
        let mut root = MaskTree::default();
        for path in paths {
            let mut node = &mut root;
            for n in path {
                if node.whole {
                    break;
                }
                node = node.children.entry(*n).or_default();
            }
            node.whole = true;
            node.children.clear();
        }
        root
    }

    /// Copies from `record` only the fields this mask keeps.
    pub fn apply(&self, record: &[u8]) -> Result<Vec<u8>, WireError> {
        if self.whole {
            return Ok(record.to_vec());
        }
        let mut out = Vec::with_capacity(record.len());
        self.prune(record, &mut out)?;
        Ok(out)
    }

    /// Whether `record` holds any field this mask keeps (a sub-message
    /// counts only if it holds a kept field), without copying anything.
    pub fn keeps_any(&self, mut record: &[u8]) -> Result<bool, WireError> {
        if self.whole {
            return Ok(!record.is_empty());
        }
        while !record.is_empty() {
            let field = next_field(record)?;
            if let Some(child) = self.children.get(&field.number) {
                if child.whole || field.wire_type != 2 || child.keeps_any(field.payload()?)? {
                    return Ok(true);
                }
            }
            record = record.get(field.end..).ok_or(WireError)?;
        }
        Ok(false)
    }

    fn prune(&self, mut buf: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        while !buf.is_empty() {
            let field = next_field(buf)?;
            let (start, header_len, end) = (buf, field.header_len, field.end);
            if let Some(child) = self.children.get(&field.number) {
                if child.whole || field.wire_type != 2 {
                    out.extend_from_slice(&start[..end]);
                } else {
                    let mut inner = Vec::new();
                    child.prune(field.payload()?, &mut inner)?;
                    // A sub-message with nothing left to disclose is left out
                    // entirely, so presence reveals nothing either.
                    if inner.is_empty() {
                        buf = start.get(end..).ok_or(WireError)?;
                        continue;
                    }
                    out.extend_from_slice(&start[..header_len]);
                    write_varint(inner.len() as u64, out);
                    out.extend_from_slice(&inner);
                }
            }
            buf = start.get(end..).ok_or(WireError)?;
        }
        Ok(())
    }
}

/// One field at the start of an encoded message.
struct Field<'a> {
    number: u32,
    wire_type: u8,
    /// Length of the key.
    header_len: usize,
    /// Length of key and value: where the next field starts.
    end: usize,
    /// The key and value.
    bytes: &'a [u8],
}

impl<'a> Field<'a> {
    /// The contents of a length-delimited value (without its length).
    fn payload(&self) -> Result<&'a [u8], WireError> {
        let mut value = self.bytes.get(self.header_len..).ok_or(WireError)?;
        let len = usize::try_from(read_varint(&mut value)?).map_err(|_| WireError)?;
        value.get(..len).ok_or(WireError)
    }
}

/// Reads the key of the first field of `start` and measures its value.
fn next_field(start: &[u8]) -> Result<Field<'_>, WireError> {
    let mut buf = start;
    let key = read_varint(&mut buf)?;
    let number = (key >> 3) as u32;
    let wire_type = (key & 7) as u8;
    let header_len = start.len() - buf.len();
    let value_len = match wire_type {
        0 => {
            let mut probe = buf;
            read_varint(&mut probe)?;
            buf.len() - probe.len()
        }
        1 => 8,
        2 => {
            let mut probe = buf;
            let len = usize::try_from(read_varint(&mut probe)?).map_err(|_| WireError)?;
            (buf.len() - probe.len())
                .checked_add(len)
                .ok_or(WireError)?
        }
        5 => 4,
        _ => return Err(WireError),
    };
    let end = header_len.checked_add(value_len).ok_or(WireError)?;
    let bytes = start.get(..end).ok_or(WireError)?;
    Ok(Field {
        number,
        wire_type,
        header_len,
        end,
        bytes,
    })
}

/// The stored record is not valid protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored record is not valid protobuf")]
pub struct WireError;

fn read_varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or(WireError)?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError)
}

fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::citizen::v1::{Citizen, IdCard};
    use crate::proto::common::v1::{Address, Date};
    use crate::schema::Schema;
    use proptest::prelude::*;
    use prost::Message;

    fn citizen() -> Citizen {
        Citizen {
            personal_id: "092085000123".into(),
            full_name: "Nguyễn Văn An".into(),
            date_of_birth: Some(Date {
                year: 1985,
                month: 3,
                day: 4,
            }),
            sex: 1,
            nationality: "Việt Nam".into(),
            ethnicity: "Kinh".into(),
            permanent_address: Some(Address {
                address_line: "12 Hòa Bình".into(),
                commune_code: "31117".into(),
                commune_name: "Ninh Kiều".into(),
                province_code: "92".into(),
                province_name: "Cần Thơ".into(),
            }),
            id_card: Some(IdCard {
                issued_on: Some(Date {
                    year: 2021,
                    month: 1,
                    day: 2,
                }),
                expires_on: None,
                issued_by: "C06".into(),
            }),
            ..Default::default()
        }
    }

    fn mask(paths: &[&str]) -> MaskTree {
        let s = Schema::gateway();
        let resolved: Vec<Vec<u32>> = paths
            .iter()
            .map(|p| s.resolve("interop.citizen.v1.Citizen", p).unwrap())
            .collect();
        MaskTree::from_numbers(resolved.iter().map(Vec::as_slice))
    }

    #[test]
    fn keeps_only_masked_fields_including_nested() {
        let bytes = citizen().encode_to_vec();
        let out = mask(&["full_name", "permanent_address.province_code"])
            .apply(&bytes)
            .unwrap();
        let c = Citizen::decode(out.as_slice()).unwrap();
        assert_eq!(c.full_name, "Nguyễn Văn An");
        assert_eq!(c.personal_id, "");
        assert_eq!(c.sex, 0);
        let addr = c.permanent_address.unwrap();
        assert_eq!(addr.province_code, "92");
        assert_eq!(addr.commune_code, "");
        assert!(c.id_card.is_none());
    }

    #[test]
    fn intersection_narrows_and_reports_outside() {
        let granted = PathSet::new(["full_name", "permanent_address.province_code"]);
        let asked = PathSet::new(["permanent_address", "full_name", "sex"]);
        assert_eq!(asked.outside(&granted), vec!["sex".to_owned()]);
        assert_eq!(
            asked.intersect(&granted).to_strings(),
            vec!["full_name", "permanent_address.province_code"]
        );
        let deeper = PathSet::new(["permanent_address.province_code"]);
        assert_eq!(
            deeper
                .intersect(&PathSet::new(["permanent_address"]))
                .to_strings(),
            vec!["permanent_address.province_code"]
        );
    }

    const FIELDS: &[&str] = &[
        "personal_id",
        "full_name",
        "date_of_birth",
        "date_of_birth.year",
        "sex",
        "nationality",
        "ethnicity",
        "permanent_address",
        "permanent_address.province_code",
        "permanent_address.commune_code",
        "id_card",
        "id_card.issued_on",
        "id_card.issued_by",
    ];

    proptest! {
        /// Applying the intersection never discloses a field outside the grant,
        /// and the result equals applying the two masks one after the other.
        #[test]
        fn intersection_never_exceeds_grant(
            g in proptest::sample::subsequence(FIELDS, 0..FIELDS.len()),
            r in proptest::sample::subsequence(FIELDS, 1..FIELDS.len()),
        ) {
            let bytes = citizen().encode_to_vec();
            let granted = PathSet::new(&g);
            let asked = PathSet::new(&r);
            let both: Vec<String> = asked.intersect(&granted).iter().collect();
            let both: Vec<&str> = both.iter().map(String::as_str).collect();
            let once = mask(&both).apply(&bytes).unwrap();
            let twice = mask(&r).apply(&mask(&g).apply(&bytes).unwrap()).unwrap();
            prop_assert_eq!(
                Citizen::decode(once.as_slice()).unwrap(),
                Citizen::decode(twice.as_slice()).unwrap()
            );
        }
    }

    proptest! {
        /// `keeps_any` says whether `apply` would keep anything, for any mask
        /// and any record, including partly disclosed sub-messages.
        #[test]
        fn keeps_any_agrees_with_apply(
            m in proptest::sample::subsequence(FIELDS, 1..FIELDS.len()),
            kept in proptest::sample::subsequence(FIELDS, 0..FIELDS.len()),
        ) {
            // A record holding only some fields: the full one cut by a mask.
            let full = citizen().encode_to_vec();
            let record = if kept.is_empty() { Vec::new() } else { mask(&kept).apply(&full).unwrap() };
            let m = mask(&m);
            prop_assert_eq!(m.keeps_any(&record).unwrap(), !m.apply(&record).unwrap().is_empty());
        }
    }

    #[test]
    fn truncated_record_is_an_error() {
        let bytes = citizen().encode_to_vec();
        assert_eq!(
            mask(&["full_name"]).apply(&bytes[..bytes.len() - 3]),
            Err(WireError)
        );
    }
}
