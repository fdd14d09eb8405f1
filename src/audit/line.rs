//! The bytes of one line of `audit.log` (and of `audit.head`, which holds one
//! checkpoint line): writing record and checkpoint lines, and reading a line
//! back into what it claims, before anything is checked.

use std::io;

use serde::{Deserialize, Serialize};

use super::{chain::Checkpoint, record::AuditRecord};

/// What one line of the log says.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every line is a record; boxing it would cost an allocation per line read to shrink the rare checkpoint"
)]
pub(crate) enum Line {
    Record {
        seq: u64,
        hash: [u8; 32],
        record: AuditRecord,
    },
    Checkpoint(Checkpoint),
}

/// The line of a record as serde writes it: the reference
/// [`write_encoded`] is checked against.
#[cfg(test)]
#[derive(Serialize)]
struct RecordOut<'a> {
    seq: u64,
    hash: String,
    record: &'a AuditRecord,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    seq: u64,
    hash: String,
    time_unix_ms: i64,
    signature: String,
}

#[derive(Serialize)]
struct CheckpointOut {
    checkpoint: CheckpointJson,
}

/// Either shape of line; which keys are present decides which it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnyLine {
    seq: Option<u64>,
    hash: Option<String>,
    record: Option<AuditRecord>,
    checkpoint: Option<CheckpointJson>,
}

/// Appends `{"seq":..,"hash":..,"record":{..}}\n` to `out`.
#[cfg(test)]
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    seq: u64,
    hash: &[u8; 32],
    record: &AuditRecord,
) -> io::Result<()> {
    let line = RecordOut {
        seq,
        hash: hex(hash),
        record,
    };
    serde_json::to_writer(&mut *out, &line).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

/// A record encoded before it has a seq: its canonical bytes (what the chain
/// hashes) and its JSON (what its line carries). Made in the caller's task,
/// so the single writer only chains and copies bytes.
pub(crate) struct Encoded {
    pub record: AuditRecord,
    pub canonical: Vec<u8>,
    json: Vec<u8>,
}

impl Encoded {
    pub fn new(record: AuditRecord) -> io::Result<Encoded> {
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        Ok(Encoded {
            canonical: record.canonical_bytes(),
            json,
            record,
        })
    }
}

/// Appends the line of `encoded` as record `seq` with chain hash `hash`:
/// byte for byte what [`write_record`] writes for the same record.
pub(crate) fn write_encoded(
    out: &mut Vec<u8>,
    seq: u64,
    hash: &[u8; 32],
    encoded: &Encoded,
) -> io::Result<()> {
    use io::Write;
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    write!(out, "{{\"seq\":{seq},\"hash\":\"")?;
    for b in hash {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    out.extend_from_slice(b"\",\"record\":");
    out.extend_from_slice(&encoded.json);
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// Appends `{"checkpoint":{..}}\n` to `out`.
pub(crate) fn write_checkpoint(out: &mut Vec<u8>, cp: &Checkpoint) -> io::Result<()> {
    let line = CheckpointOut {
        checkpoint: CheckpointJson {
            seq: cp.seq,
            hash: hex(&cp.hash),
            time_unix_ms: cp.time_unix_ms,
            signature: hex(&cp.signature),
        },
    };
    serde_json::to_writer(&mut *out, &line).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

/// Reads one line (without its `\n`). The error says what is malformed.
pub(crate) fn parse(bytes: &[u8]) -> Result<Line, String> {
    let any: AnyLine = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    match any {
        AnyLine {
            seq: Some(seq),
            hash: Some(hash),
            record: Some(record),
            checkpoint: None,
        } => Ok(Line::Record {
            seq,
            hash: unhex(&hash).ok_or("\"hash\" is not 64 hex digits")?,
            record,
        }),
        AnyLine {
            seq: None,
            hash: None,
            record: None,
            checkpoint: Some(cp),
        } => Ok(Line::Checkpoint(Checkpoint {
            seq: cp.seq,
            hash: unhex(&cp.hash).ok_or("checkpoint \"hash\" is not 64 hex digits")?,
            time_unix_ms: cp.time_unix_ms,
            signature: unhex(&cp.signature)
                .ok_or("checkpoint \"signature\" is not 128 hex digits")?,
        })),
        _ => Err(
            "neither a record line (seq, hash, record) nor a checkpoint line (checkpoint)".into(),
        ),
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Exactly `N` bytes of hex, either case.
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = [0; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::sample;

    #[test]
    fn record_line_round_trips_and_ends_in_one_newline() {
        let r = sample(3, "001099012345");
        let mut buf = Vec::new();
        write_record(&mut buf, 3, &[0xab; 32], &r).unwrap();
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(buf.starts_with(br#"{"seq":3,"hash":"abab"#));
        match parse(&buf[..buf.len() - 1]).unwrap() {
            Line::Record { seq, hash, record } => {
                assert_eq!((seq, hash, record), (3, [0xab; 32], r));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_encoded_record_writes_the_same_line_as_the_record() {
        let mut odd = sample(7, "tab\there \"quoted\" \\ back\u{1}slash");
        odd.officer_id = "cán bộ \u{2028} 017".into();
        odd.fields.clear();
        odd.relay_agency_code = "000.00.00.H13".into();
        odd.reason = "VERIFICATION_LIMIT".into();
        let mut negative = sample(0, "001099012345");
        negative.time_unix_ms = -1;
        negative.latency_us = u64::MAX;
        for (seq, r) in [
            (1, sample(1, "001099012345")),
            (u64::MAX, odd),
            (42, negative),
        ] {
            let hash: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37));
            let mut direct = Vec::new();
            write_record(&mut direct, seq, &hash, &r).unwrap();
            let encoded = Encoded::new(r.clone()).unwrap();
            assert_eq!(encoded.canonical, r.canonical_bytes());
            let mut ahead = Vec::new();
            write_encoded(&mut ahead, seq, &hash, &encoded).unwrap();
            assert_eq!(
                String::from_utf8(ahead).unwrap(),
                String::from_utf8(direct).unwrap()
            );
        }
    }

    #[test]
    fn checkpoint_line_round_trips() {
        let cp = Checkpoint {
            seq: 9,
            hash: [1; 32],
            time_unix_ms: -5,
            signature: [0xfe; 64],
        };
        let mut buf = Vec::new();
        write_checkpoint(&mut buf, &cp).unwrap();
        assert!(buf.starts_with(br#"{"checkpoint":{"seq":9,"#));
        match parse(buf.trim_ascii_end()).unwrap() {
            Line::Checkpoint(back) => assert_eq!(back, cp),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mixed_extra_or_short_lines_are_refused() {
        for bad in [
            r#"{"seq":1,"hash":"00","record":null}"#,
            r#"{"seq":1}"#,
            r#"{"checkpoint":{"seq":1,"hash":"","time_unix_ms":0,"signature":""},"seq":1}"#,
            r#"{"seq":1,"seq":2}"#,
            "not json",
            "",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let mut buf = Vec::new();
        write_record(&mut buf, 1, &[0; 32], &sample(1, "x")).unwrap();
        let mut text = String::from_utf8(buf).unwrap();
        text = text.replacen(r#""seq":1,"#, r#""seq":1,"extra":true,"#, 1);
        assert!(parse(text.trim_end().as_bytes()).is_err());
    }

    #[test]
    fn hex_round_trips_and_rejects_wrong_lengths_and_digits() {
        let bytes: [u8; 4] = [0x00, 0x7f, 0x80, 0xff];
        assert_eq!(hex(&bytes), "007f80ff");
        assert_eq!(unhex::<4>("007F80ff"), Some(bytes));
        assert_eq!(unhex::<4>("007f80f"), None);
        assert_eq!(unhex::<4>("007f80fg"), None);
        assert_eq!(unhex::<4>("+07f80ff"), None);
    }
}
