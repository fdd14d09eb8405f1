//! The `cursor` of `WatchAccessRecords`: where a watcher is in the log, as
//! it passes it back to resume. Two kinds, one per kind of log:
//!
//! - **One chain** (the embedded file log): the seq of the last record
//!   received, in decimal (`"1234"`), as it has always been.
//! - **Several chains** (a database shared by instances): `v1:` followed by
//!   `<instance>=<seq>` for each instance, sorted by instance and separated
//!   by `,` (`"v1:gw-a=17,gw-b=42"`): the seq of the last record received of
//!   each instance's chain. A chain the cursor does not name is read from its
//!   first record: an instance that is not named is one whose records the
//!   watch had not yet received any of (it joined after the watch began).
//!   `v1:` alone reads every chain from its start.
//!
//! Both are opaque to clients. A cursor of the other kind, or that does not
//! parse, is INVALID_ARGUMENT on `cursor`; so is one naming a position this
//! log does not have (checked by the caller, which knows the log's ends).

use crate::{audit::store::Positions, error::RequestError};

/// The prefix (and version) of a cursor of several chains.
const CHAINS_PREFIX: &str = "v1:";
/// The most instances one cursor may name.
pub(super) const MAX_INSTANCES: usize = 1024;

fn invalid(why: impl Into<String>) -> RequestError {
    RequestError::invalid("cursor", why)
}

/// The seq a one-chain cursor names, which must not be past `last`.
pub(super) fn parse_seq(cursor: &str, last: u64) -> Result<u64, RequestError> {
    if cursor.starts_with(CHAINS_PREFIX) {
        return Err(invalid(
            "a cursor of an access log shared by several gateway instances; this gateway keeps \
             a log of its own: pass a `cursor` this gateway sent, or nothing to start with the \
             next record",
        ));
    }
    let seq = (!cursor.is_empty()
        && cursor.len() <= 20
        && cursor.bytes().all(|b| b.is_ascii_digit()))
    .then(|| cursor.parse::<u64>().ok())
    .flatten()
    .ok_or_else(|| {
        invalid("not a cursor of this gateway: pass the `cursor` of the last event received, or nothing to start with the next record")
    })?;
    if seq > last {
        return Err(invalid(format!(
            "cursor {seq} is ahead of this gateway's access log (last record {last}): it came from another gateway"
        )));
    }
    Ok(seq)
}

/// The cursor of one chain at `seq`.
pub(super) fn seq_cursor(seq: u64) -> String {
    seq.to_string()
}

/// The positions a cursor of several chains names (its syntax only: the
/// caller checks them against the log).
pub(super) fn parse_chains(cursor: &str) -> Result<Positions, RequestError> {
    let Some(rest) = cursor.strip_prefix(CHAINS_PREFIX) else {
        let why = if !cursor.is_empty() && cursor.bytes().all(|b| b.is_ascii_digit()) {
            "a cursor of a single gateway's own access log; this gateway's log is shared by \
             several instances: watch with no cursor to start with the next record"
        } else {
            "not a cursor of this access log: pass the `cursor` of the last event received, or \
             nothing to start with the next record"
        };
        return Err(invalid(why));
    };
    let mut positions = Positions::new();
    if rest.is_empty() {
        return Ok(positions);
    }
    for (n, entry) in rest.split(',').enumerate() {
        if n >= MAX_INSTANCES {
            return Err(invalid(format!(
                "names more than {MAX_INSTANCES} instances: not a cursor of this access log"
            )));
        }
        let bad = |what: &str| {
            invalid(format!(
                "entry {} {what}: expected `v1:<instance>=<seq>,...`",
                n + 1
            ))
        };
        let (instance, seq) = entry.split_once('=').ok_or_else(|| bad("has no `=`"))?;
        crate::config::check_instance(instance)
            .map_err(|_| bad("does not start with an instance name"))?;
        let seq = (!seq.is_empty() && seq.len() <= 20 && seq.bytes().all(|b| b.is_ascii_digit()))
            .then(|| seq.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| bad("has no seq (a decimal number) after `=`"))?;
        if positions.insert(instance.to_owned(), seq).is_some() {
            return Err(bad("names an instance a second time"));
        }
    }
    Ok(positions)
}

/// The cursor of several chains at `positions`.
pub(super) fn chains_cursor(positions: &Positions) -> String {
    let mut out = String::from(CHAINS_PREFIX);
    for (i, (instance, seq)) in positions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(instance);
        out.push('=');
        out.push_str(&seq.to_string());
    }
    out
}

/// Checks parsed positions against the log's `heads` (every instance's last
/// seq): each named instance must be there, not past its end.
pub(super) fn check_against(positions: &Positions, heads: &Positions) -> Result<(), RequestError> {
    for (instance, &seq) in positions {
        match heads.get(instance) {
            None => {
                return Err(invalid(format!(
                    "names instance {instance:?}, which this access log does not have: it came \
                     from another log"
                )))
            }
            Some(&last) if seq > last => {
                return Err(invalid(format!(
                    "is ahead of instance {instance:?} (last record {last}, cursor {seq}): it \
                     came from another log"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(e: RequestError) -> (String, String) {
        match e {
            RequestError::InvalidArgument { violations, .. } => {
                assert_eq!(violations.len(), 1);
                (
                    violations[0].field.clone(),
                    violations[0].description.clone(),
                )
            }
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    fn positions(entries: &[(&str, u64)]) -> Positions {
        entries.iter().map(|(i, s)| ((*i).to_owned(), *s)).collect()
    }

    #[test]
    fn a_cursor_of_several_chains_round_trips_sorted_by_instance() {
        let p = positions(&[("gw-b", 42), ("gw-a", 17), ("gw.c_1", 0)]);
        let cursor = chains_cursor(&p);
        assert_eq!(cursor, "v1:gw-a=17,gw-b=42,gw.c_1=0");
        assert_eq!(parse_chains(&cursor).unwrap(), p);
        assert_eq!(chains_cursor(&Positions::new()), "v1:");
        assert_eq!(parse_chains("v1:").unwrap(), Positions::new());
        let max = format!("v1:a={}", u64::MAX);
        assert_eq!(parse_chains(&max).unwrap(), positions(&[("a", u64::MAX)]));
    }

    #[test]
    fn malformed_cursors_of_several_chains_are_refused_on_cursor() {
        let long_name = format!("v1:{}=1", "a".repeat(65));
        let too_many = format!(
            "v1:{}",
            (0..=MAX_INSTANCES)
                .map(|i| format!("i{i}=1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        for bad in [
            "",
            "12",
            "v2:gw-a=1",
            "V1:gw-a=1",
            "v1",
            "v1:gw-a",
            "v1:gw-a=",
            "v1:=5",
            "v1:gw-a=-1",
            "v1:gw-a=+1",
            "v1:gw-a=1x",
            "v1:gw-a=1,",
            "v1:,gw-a=1",
            "v1:gw-a=1,gw-a=2",
            "v1:gw:a=1",
            "v1:gw a=1",
            "v1:gw-a=1=2",
            "v1:gw-a=18446744073709551616",
            "v1:gw-a=000000000000000000001",
            &long_name,
            &too_many,
        ] {
            let (field, why) = violation(parse_chains(bad).unwrap_err());
            assert_eq!(field, "cursor", "{bad}");
            assert!(!why.is_empty(), "{bad}");
        }
        // A one-chain cursor is told apart from garbage.
        let (_, why) = violation(parse_chains("12").unwrap_err());
        assert!(why.contains("single gateway"), "{why}");
    }

    #[test]
    fn a_one_chain_cursor_is_a_decimal_seq_not_past_the_log() {
        assert_eq!(parse_seq("0", 5).unwrap(), 0);
        assert_eq!(parse_seq("5", 5).unwrap(), 5);
        for bad in ["", "6", "abc", "-1", "+1", " 1", "99999999999999999999"] {
            let (field, _) = violation(parse_seq(bad, 5).unwrap_err());
            assert_eq!(field, "cursor", "{bad}");
        }
        let (_, why) = violation(parse_seq("v1:gw-a=1", 5).unwrap_err());
        assert!(why.contains("shared by several"), "{why}");
        assert_eq!(seq_cursor(7), "7");
    }

    #[test]
    fn positions_must_be_within_the_log() {
        let heads = positions(&[("gw-a", 10), ("gw-b", 0)]);
        check_against(&positions(&[]), &heads).unwrap();
        check_against(&positions(&[("gw-a", 10), ("gw-b", 0)]), &heads).unwrap();
        let (field, why) =
            violation(check_against(&positions(&[("gw-a", 11)]), &heads).unwrap_err());
        assert_eq!(field, "cursor");
        assert!(why.contains("ahead of instance \"gw-a\""), "{why}");
        let (_, why) = violation(check_against(&positions(&[("gw-z", 1)]), &heads).unwrap_err());
        assert!(why.contains("does not have"), "{why}");
    }
}
