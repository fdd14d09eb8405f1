//! The bytes of one line of a log segment (and of `audit.head`, which holds
//! one checkpoint line, and `audit.retired`, one retirement statement):
//! writing record and checkpoint lines, and reading a line back into what it
//! claims, before anything is checked.

use std::io;

use serde::{Deserialize, Serialize};

use std::borrow::Cow;

use super::{chain::Checkpoint, record::AuditRecord, store::Entry};

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

/// Appends `{"checkpoint":{..}}\n` to `out`.
pub(crate) fn write_checkpoint(out: &mut Vec<u8>, cp: &Checkpoint) -> io::Result<()> {
    let line = CheckpointOut {
        checkpoint: checkpoint_json(cp),
    };
    serde_json::to_writer(&mut *out, &line).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

/// Appends the line of `entry` to `out`.
pub(crate) fn write_entry(out: &mut Vec<u8>, entry: &Entry<'_>) -> io::Result<()> {
    match entry {
        Entry::Record { seq, hash, record } => write_record(out, *seq, hash, record),
        Entry::Checkpoint(cp) => write_checkpoint(out, cp),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetiredLine {
    retired: CheckpointJson,
}

fn checkpoint_json(cp: &Checkpoint) -> CheckpointJson {
    CheckpointJson {
        seq: cp.seq,
        hash: hex(&cp.hash),
        time_unix_ms: cp.time_unix_ms,
        signature: hex(&cp.signature),
    }
}

fn from_json(cp: CheckpointJson) -> Result<Checkpoint, String> {
    Ok(Checkpoint {
        seq: cp.seq,
        hash: unhex(&cp.hash).ok_or("checkpoint \"hash\" is not 64 hex digits")?,
        time_unix_ms: cp.time_unix_ms,
        signature: unhex(&cp.signature).ok_or("checkpoint \"signature\" is not 128 hex digits")?,
    })
}

/// Appends `{"retired":{..}}\n`, a retirement statement (see
/// [`Checkpoint::sign_retired`]), to `out`.
pub(crate) fn write_retired(out: &mut Vec<u8>, statement: &Checkpoint) -> io::Result<()> {
    let line = RetiredLine {
        retired: checkpoint_json(statement),
    };
    serde_json::to_writer(&mut *out, &line).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

/// Reads a retirement statement line (without its `\n`).
pub(crate) fn parse_retired(bytes: &[u8]) -> Result<Checkpoint, String> {
    let line: RetiredLine =
        serde_json::from_slice(bytes).map_err(|e| format!("not a retirement statement: {e}"))?;
    from_json(line.retired)
}

/// Reads one line (without its `\n`) as a store entry.
pub(crate) fn parse_entry(bytes: &[u8]) -> Result<Entry<'static>, String> {
    Ok(match parse(bytes)? {
        Line::Record { seq, hash, record } => Entry::Record {
            seq,
            hash,
            record: Cow::Owned(record),
        },
        Line::Checkpoint(cp) => Entry::Checkpoint(cp),
    })
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
        } => Ok(Line::Checkpoint(from_json(cp)?)),
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
pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
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

    proptest::proptest! {
        /// Fuzz target: lines as `audit verify` reads them from a file it
        /// cannot trust. Arbitrary bytes and mutated record and checkpoint
        /// lines parse or are refused; never a panic, and what parses as a
        /// record writes back to the same line.
        #[test]
        fn fuzz_audit_lines(bytes in proptest::prop_oneof![
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            crate::fuzz::mutated_bytes(seed_record(), 8),
            crate::fuzz::mutated_bytes(seed_checkpoint(), 8),
        ]) {
            if let Ok(Line::Record { seq, hash, record }) = parse(&bytes) {
                let mut again = Vec::new();
                write_record(&mut again, seq, &hash, &record).unwrap();
                let same = matches!(
                    parse(&again[..again.len() - 1]),
                    Ok(Line::Record { seq: s, .. }) if s == seq
                );
                proptest::prop_assert!(same, "record line {} did not read back", seq);
            }
        }
    }

    fn seed_record() -> Vec<u8> {
        let mut buf = Vec::new();
        write_record(&mut buf, 7, &[0x5a; 32], &sample(7, "092085000123")).unwrap();
        buf.pop();
        buf
    }

    fn seed_checkpoint() -> Vec<u8> {
        let cp = Checkpoint {
            seq: 9,
            hash: [1; 32],
            time_unix_ms: 5,
            signature: [0xfe; 64],
        };
        let mut buf = Vec::new();
        write_checkpoint(&mut buf, &cp).unwrap();
        buf.pop();
        buf
    }
}
