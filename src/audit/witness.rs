//! Witnessed checkpoints, the part both sides share: the countersignature
//! formula, the line a countersignature is kept as (by the witness, and by
//! the log's gateway as its receipt), the witness's decision, the witness's
//! durable state, and the offline check of a log against countersignatures.
//!
//! - A countersignature is an Ed25519 signature by the witness's own access
//!   log key over `WITNESS_TAG || log key (32) || len(instance) as u32
//!   big-endian || instance || seq as u64 big-endian || hash (32) ||
//!   checkpoint time_unix_ms as i64 big-endian || witnessed_unix_ms as i64
//!   big-endian`. The instance is length-prefixed so that no two (instance,
//!   seq) pairs share bytes.
//! - A witness only moves forward per (calling agency, log key, instance):
//!   see [`decide`]. What it countersigned is appended, one self-contained
//!   JSON line each ([`Countersigned`]), to
//!   `<data_dir>/witness/<agency>-<log kid prefix>[-<instance>].jsonl`,
//!   written and fsynced before the answer leaves ([`WitnessStore`]).
//! - [`check_log`] is what `audit verify --witness-receipts` applies: every
//!   countersigned checkpoint of this log must be a point of its chain.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use super::{
    chain::{Checkpoint, GENESIS},
    files,
    line::{hex, unhex},
    signer::{fingerprint, verify_signature, Signer},
};

/// Domain tag of a countersignature (see the module documentation).
const WITNESS_TAG: &[u8] = b"interop-gateway/audit/witness/v1\0";

/// Folder of a witness's state under the data folder.
pub const WITNESS_DIR: &str = "witness";
/// Folder of the countersignatures a gateway received, under its audit folder.
pub const RECEIPTS_DIR: &str = "witness-receipts";

/// Hex digits of the log's kid in a witness's file name.
const KID_PREFIX: usize = 16;

/// One countersigned checkpoint: what a witness keeps and returns, and what
/// the log's gateway keeps as its receipt. Self-contained: it verifies with
/// the keys it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Countersigned {
    pub witness_key: [u8; 32],
    pub log_key: [u8; 32],
    /// `""` for a log kept in files.
    pub instance: String,
    pub checkpoint: Checkpoint,
    pub witnessed_unix_ms: i64,
    pub countersignature: [u8; 64],
}

/// The JSON line of a [`Countersigned`]; kids are there for people reading
/// the files, and checked against the keys when read back.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    witness_kid: String,
    witness_key: String,
    log_kid: String,
    log_key: String,
    instance: String,
    seq: u64,
    hash: String,
    time_unix_ms: i64,
    signature: String,
    witnessed_unix_ms: i64,
    countersignature: String,
}

fn message(log_key: &[u8; 32], instance: &str, cp: &Checkpoint, witnessed_unix_ms: i64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(WITNESS_TAG.len() + 128 + instance.len());
    msg.extend_from_slice(WITNESS_TAG);
    msg.extend_from_slice(log_key);
    msg.extend_from_slice(&(instance.len() as u32).to_be_bytes());
    msg.extend_from_slice(instance.as_bytes());
    msg.extend_from_slice(&cp.seq.to_be_bytes());
    msg.extend_from_slice(&cp.hash);
    msg.extend_from_slice(&cp.time_unix_ms.to_be_bytes());
    msg.extend_from_slice(&witnessed_unix_ms.to_be_bytes());
    msg
}

impl Countersigned {
    /// The witness's countersignature (by `signer`) over `cp` of the log
    /// `log_key`/`instance`, at `now_unix_ms`.
    pub fn sign(
        signer: &Signer,
        log_key: [u8; 32],
        instance: &str,
        cp: &Checkpoint,
        now_unix_ms: i64,
    ) -> Self {
        Self {
            witness_key: signer.public_key(),
            log_key,
            instance: instance.to_owned(),
            checkpoint: cp.clone(),
            witnessed_unix_ms: now_unix_ms,
            countersignature: signer.sign(&message(&log_key, instance, cp, now_unix_ms)),
        }
    }

    /// Whether the countersignature is the witness key's over this
    /// checkpoint, and the checkpoint the log key's.
    pub fn verify(&self) -> bool {
        self.checkpoint.verify(&self.log_key)
            && verify_signature(
                &self.witness_key,
                &message(
                    &self.log_key,
                    &self.instance,
                    &self.checkpoint,
                    self.witnessed_unix_ms,
                ),
                &self.countersignature,
            )
    }

    /// The witness key's id (as receipts name keys).
    pub fn witness_kid(&self) -> String {
        fingerprint(&self.witness_key)
    }

    /// One JSON line, without its newline.
    pub fn to_line(&self) -> String {
        let line = Line {
            witness_kid: fingerprint(&self.witness_key),
            witness_key: hex(&self.witness_key),
            log_kid: fingerprint(&self.log_key),
            log_key: hex(&self.log_key),
            instance: self.instance.clone(),
            seq: self.checkpoint.seq,
            hash: hex(&self.checkpoint.hash),
            time_unix_ms: self.checkpoint.time_unix_ms,
            signature: hex(&self.checkpoint.signature),
            witnessed_unix_ms: self.witnessed_unix_ms,
            countersignature: hex(&self.countersignature),
        };
        // Plain strings and integers: serialising cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Reads a line written by [`Countersigned::to_line`]; does not verify
    /// the signatures ([`Countersigned::verify`] does).
    pub fn parse_line(text: &str) -> Result<Self, String> {
        let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
        fn bytes<const N: usize>(key: &str, value: &str) -> Result<[u8; N], String> {
            unhex::<N>(value).ok_or_else(|| format!("{key}: not {} hex digits", 2 * N))
        }
        let out = Countersigned {
            witness_key: bytes("witness_key", &line.witness_key)?,
            log_key: bytes("log_key", &line.log_key)?,
            instance: line.instance,
            checkpoint: Checkpoint {
                seq: line.seq,
                hash: bytes("hash", &line.hash)?,
                time_unix_ms: line.time_unix_ms,
                signature: bytes("signature", &line.signature)?,
            },
            witnessed_unix_ms: line.witnessed_unix_ms,
            countersignature: bytes("countersignature", &line.countersignature)?,
        };
        if line.witness_kid != fingerprint(&out.witness_key) {
            return Err("witness_kid is not the id of witness_key".into());
        }
        if line.log_kid != fingerprint(&out.log_key) {
            return Err("log_kid is not the id of log_key".into());
        }
        Ok(out)
    }
}

/// Why a witness refuses a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The checkpoint's signature does not verify with the log key given.
    BadSignature,
    /// The checkpoint is older than the last one countersigned.
    RolledBack { witnessed_seq: u64, seq: u64 },
    /// The checkpoint (or the consistency hash) disagrees with the chain the
    /// witness countersigned, at `witnessed_seq`.
    Forked { witnessed_seq: u64 },
    /// `consistency` is absent or not at the last countersigned seq: resend
    /// with the chain hash at `witnessed_seq`.
    StateMismatch { witnessed_seq: u64 },
    /// The calling agency already has [`MAX_LOGS_PER_AGENCY`] logs here and
    /// this checkpoint would start another.
    TooManyLogs { max: usize },
}

/// Logs one agency may have witnessed here (each a file that lasts): a
/// gateway has one log, a PostgreSQL deployment one per instance, and a
/// key change starts another. An agency signing checkpoints with ever new
/// keys cannot fill the witness's disk.
pub const MAX_LOGS_PER_AGENCY: usize = 64;

/// What a witness does with a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Countersign it (and keep it).
    Accept,
    /// The checkpoint already countersigned (same seq and hash): answer
    /// with that countersignature again.
    Repeat(Box<Countersigned>),
    Refuse(Refusal),
}

/// The witness's rule, given the last checkpoint it countersigned for this
/// log (`None`: first contact, trusted as it comes) and the request's
/// `consistency` (the log's chain hash at the seq the log believes the
/// witness last countersigned).
pub fn decide(
    last: Option<&Countersigned>,
    log_key: &[u8; 32],
    cp: &Checkpoint,
    consistency: Option<(u64, [u8; 32])>,
) -> Verdict {
    if !cp.verify(log_key) {
        return Verdict::Refuse(Refusal::BadSignature);
    }
    let Some(last) = last else {
        return Verdict::Accept;
    };
    let seen = &last.checkpoint;
    if cp.seq < seen.seq {
        return Verdict::Refuse(Refusal::RolledBack {
            witnessed_seq: seen.seq,
            seq: cp.seq,
        });
    }
    if cp.seq == seen.seq {
        return match cp.hash == seen.hash {
            true => Verdict::Repeat(Box::new(last.clone())),
            false => Verdict::Refuse(Refusal::Forked {
                witnessed_seq: seen.seq,
            }),
        };
    }
    match consistency {
        Some((seq, hash)) if seq == seen.seq => match hash == seen.hash {
            true => Verdict::Accept,
            false => Verdict::Refuse(Refusal::Forked {
                witnessed_seq: seen.seq,
            }),
        },
        _ => Verdict::Refuse(Refusal::StateMismatch {
            witnessed_seq: seen.seq,
        }),
    }
}

/// A failure of the witness's own state (not the caller's fault).
#[derive(Debug, thiserror::Error)]
#[error("witness state {}: {what}", path.display())]
pub struct StateError {
    pub path: PathBuf,
    pub what: String,
}

/// What [`WitnessStore::countersign`] answers.
pub type Countersigning = Result<Result<Countersigned, Refusal>, StateError>;

/// The witness side: its key and its state, one file per (calling agency,
/// log key, instance) under `<data_dir>/witness/`.
pub struct WitnessStore {
    dir: PathBuf,
    signer: Signer,
    /// The last line of every file read so far. A std mutex held across the
    /// file append: countersignatures come once per checkpoint per log (every
    /// few seconds), run on the blocking pool, and one at a time is what
    /// keeps "read last, decide, append" atomic for a log.
    last: Mutex<HashMap<PathBuf, Option<Countersigned>>>,
}

impl std::fmt::Debug for WitnessStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitnessStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl WitnessStore {
    /// The store in `dir` (created when first written), countersigning
    /// with `signer`.
    pub fn new(dir: &Path, signer: Signer) -> WitnessStore {
        WitnessStore {
            dir: dir.to_owned(),
            signer,
            last: Mutex::default(),
        }
    }

    /// The file of one log as seen from one agency. `agency` is a configured
    /// agency code and `instance` a checked instance name, so the name is
    /// safe as a file name.
    pub fn file_of(&self, agency: &str, log_key: &[u8; 32], instance: &str) -> PathBuf {
        let kid = fingerprint(log_key);
        let mut name = format!("{agency}-{}", &kid[..KID_PREFIX]);
        if !instance.is_empty() {
            name.push('-');
            name.push_str(instance);
        }
        name.push_str(".jsonl");
        self.dir.join(name)
    }

    /// How many logs `agency` has files for here.
    fn logs_of(&self, agency: &str) -> usize {
        let prefix = format!("{agency}-");
        fs::read_dir(&self.dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with(&prefix) && name.ends_with(".jsonl")
                })
                .count()
        })
    }

    /// Decides on `cp` for the log `log_key`/`instance` as called by
    /// `agency` and, when it is accepted, appends and fsyncs its
    /// countersignature before returning it. Blocking.
    pub fn countersign(
        &self,
        agency: &str,
        log_key: [u8; 32],
        instance: &str,
        cp: &Checkpoint,
        consistency: Option<(u64, [u8; 32])>,
        now_unix_ms: i64,
    ) -> Countersigning {
        let path = self.file_of(agency, &log_key, instance);
        let mut cache = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // A file moved away by the operator (an accepted restore, see
        // docs/audit.md) starts that log afresh, without a restart.
        let last = match cache.get(&path) {
            Some(last) if last.is_none() || path.exists() => last.clone(),
            _ if !path.exists() && self.logs_of(agency) >= MAX_LOGS_PER_AGENCY => {
                return Ok(Err(Refusal::TooManyLogs {
                    max: MAX_LOGS_PER_AGENCY,
                }));
            }
            _ => {
                let last = last_line(&path)?;
                if let Some(l) = &last {
                    if l.log_key != log_key || l.instance != instance {
                        return Err(StateError {
                            path,
                            what: "its last line is about another log".into(),
                        });
                    }
                }
                cache.insert(path.clone(), last.clone());
                last
            }
        };
        match decide(last.as_ref(), &log_key, cp, consistency) {
            Verdict::Refuse(refusal) => Ok(Err(refusal)),
            Verdict::Repeat(done) => Ok(Ok(*done)),
            Verdict::Accept => {
                let signed = Countersigned::sign(&self.signer, log_key, instance, cp, now_unix_ms);
                append_line(&path, &signed.to_line()).map_err(|e| StateError {
                    path: path.clone(),
                    what: e.to_string(),
                })?;
                cache.insert(path, Some(signed.clone()));
                Ok(Ok(signed))
            }
        }
    }
}

/// Appends `line` and a newline to `path` in one write, then fsyncs it (and
/// the folder, when the file is new). A failed or partial append is cut off
/// again, so the file only ever holds complete lines.
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let created = !path.exists();
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let before = file.metadata()?.len();
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
        let _ = file.set_len(before);
        return Err(e);
    }
    if created {
        files::sync_parent(path)?;
    }
    Ok(())
}

/// The last complete line of a countersignature file (`None`: no file, or
/// no line yet). A final fragment without its newline was never
/// acknowledged and is ignored.
/// Read from the end: a witness keeps a line per checkpoint for years.
fn last_line(path: &Path) -> Result<Option<Countersigned>, StateError> {
    let fail = |what: String| StateError {
        path: path.to_owned(),
        what,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    let len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    // The bytes after the last newline are a fragment never acknowledged;
    // the line before it is the one wanted. Read back in growing windows
    // until the window holds a newline before that one (or the file's start).
    let mut window: u64 = 4096;
    loop {
        let start = len.saturating_sub(window);
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.seek(io::SeekFrom::Start(start))
            .and_then(|_| {
                io::Read::by_ref(&mut file)
                    .take(len - start)
                    .read_to_end(&mut tail)
            })
            .map_err(|e| fail(e.to_string()))?;
        let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
            if start == 0 {
                return Ok(None);
            }
            window *= 4;
            continue;
        };
        let begin = match tail[..end].iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                window *= 4;
                continue;
            }
        };
        let text = std::str::from_utf8(&tail[begin..end])
            .map_err(|e| fail(format!("its last line: {e}")))?;
        return Countersigned::parse_line(text)
            .map(Some)
            .map_err(|e| fail(format!("its last line: {e}")));
    }
}

/// Every complete line of one file, parsed, with its 1-based number. An
/// absent file has none.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(usize, Countersigned) -> Result<(), String>,
) -> Result<(), String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    let mut lineno = 0;
    loop {
        buf.clear();
        let n = reader
            .read_line(&mut buf)
            .map_err(|e| format!("line {}: {e}", lineno + 1))?;
        if n == 0 || !buf.ends_with('\n') {
            return Ok(());
        }
        lineno += 1;
        let line = Countersigned::parse_line(buf.trim_end_matches('\n'))
            .map_err(|e| format!("line {lineno}: {e}"))?;
        each(lineno, line)?;
    }
}

/// A countersignature read from a folder, with where it was.
#[derive(Clone, Debug)]
pub struct Found {
    pub file: PathBuf,
    pub line: usize,
    pub countersigned: Countersigned,
}

/// Every countersignature in the `*.jsonl` files of `dir` (a witness's
/// folder, or a gateway's `witness-receipts`), in file and line order.
/// A malformed line is an error naming its file and line.
pub fn read_folder(dir: &Path) -> Result<Vec<Found>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl") && p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        for_each_line(&path, |line, countersigned| {
            out.push(Found {
                file: path.clone(),
                line,
                countersigned,
            });
            Ok(())
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(out)
}

/// What [`check_log`] found, per witness kid: how many countersignatures of
/// this log it checked and the highest seq among them; and those it could
/// not check because retention removed the records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessReport {
    pub witnesses: BTreeMap<String, (u64, u64)>,
    pub retired: u64,
}

/// Checks the countersignatures in `found` that concern the log `log_key`
/// (and `instance`) against it: each must verify, and the log must hold
/// that checkpoint's seq with the same chain hash. `hash_at(seq)` is the
/// chain hash the log has after record `seq` (`None`: it has no such
/// record), `last_seq` the log's last record, and `retired_through` the
/// records retention deleted (their hashes are gone; such
/// countersignatures are counted apart).
pub fn check_log(
    found: &[Found],
    log_key: &[u8; 32],
    instance: &str,
    hash_at: impl Fn(u64) -> Option<[u8; 32]>,
    last_seq: u64,
    retired_through: u64,
) -> Result<WitnessReport, String> {
    let mut report = WitnessReport::default();
    for f in found {
        let c = &f.countersigned;
        if c.log_key != *log_key || c.instance != instance {
            continue;
        }
        let at = format!("{}: line {}", f.file.display(), f.line);
        let kid = c.witness_kid();
        if !c.verify() {
            return Err(format!(
                "{at}: the countersignature of witness {kid} for record {} does not verify: \
                 the line was altered or is not that witness's",
                c.checkpoint.seq
            ));
        }
        let seq = c.checkpoint.seq;
        let hash = if seq == 0 {
            Some(GENESIS)
        } else {
            hash_at(seq)
        };
        match hash {
            Some(h) if h == c.checkpoint.hash => {}
            Some(h) => {
                return Err(format!(
                    "{at}: witness {kid} countersigned a checkpoint at record {seq} with chain \
                     hash {}, but the log's chain hash at record {seq} is {}: the log was forked \
                     or rewritten after the witness saw it",
                    hex(&c.checkpoint.hash),
                    hex(&h)
                ))
            }
            None if seq <= retired_through => {
                report.retired += 1;
                continue;
            }
            None => {
                return Err(format!(
                    "{at}: witness {kid} countersigned a checkpoint at record {seq} (chain hash \
                     {}), but the log ends after record {last_seq}: the log was rolled back",
                    hex(&c.checkpoint.hash)
                ))
            }
        }
        let entry = report.witnesses.entry(kid).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = entry.1.max(seq);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(dir: &Path, name: &str) -> Signer {
        Signer::load_or_create(&dir.join(name)).unwrap()
    }

    #[test]
    fn a_countersignature_covers_every_field_and_round_trips_as_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let (log, witness) = (signer(dir.path(), "log"), signer(dir.path(), "w"));
        let cp = Checkpoint::sign(&log, 5, [7; 32], 1_000);
        let c = Countersigned::sign(&witness, log.public_key(), "gw-1", &cp, 2_000);
        assert!(c.verify());
        let back = Countersigned::parse_line(&c.to_line()).unwrap();
        assert_eq!(back, c);
        let altered = [
            Countersigned {
                instance: "gw-2".into(),
                ..c.clone()
            },
            Countersigned {
                witnessed_unix_ms: 2_001,
                ..c.clone()
            },
            Countersigned {
                checkpoint: Checkpoint::sign(&log, 6, [7; 32], 1_000),
                ..c.clone()
            },
        ];
        for a in altered {
            assert!(!a.verify());
        }
        assert!(Countersigned::parse_line("{}").is_err());
        let bad_kid = c.to_line().replace(&c.witness_kid(), &"0".repeat(64));
        assert!(Countersigned::parse_line(&bad_kid)
            .unwrap_err()
            .contains("witness_kid"));
    }

    #[test]
    fn the_witness_only_moves_forward_along_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (log, witness) = (signer(dir.path(), "log"), signer(dir.path(), "w"));
        let key = log.public_key();
        let cp = |seq, hash| Checkpoint::sign(&log, seq, [hash; 32], 1);
        let last = Countersigned::sign(&witness, key, "", &cp(10, 1), 2);

        // First contact: trusted as it comes.
        assert_eq!(decide(None, &key, &cp(10, 1), None), Verdict::Accept);
        // A signature by another key, or over other bytes.
        let mut forged = cp(11, 2);
        forged.signature[0] ^= 1;
        assert_eq!(
            decide(Some(&last), &key, &forged, Some((10, [1; 32]))),
            Verdict::Refuse(Refusal::BadSignature)
        );
        assert_eq!(
            decide(None, &witness.public_key(), &cp(1, 1), None),
            Verdict::Refuse(Refusal::BadSignature)
        );
        // Older than what was countersigned.
        assert_eq!(
            decide(Some(&last), &key, &cp(9, 1), None),
            Verdict::Refuse(Refusal::RolledBack {
                witnessed_seq: 10,
                seq: 9
            })
        );
        // The same seq: the same hash is answered again, another is a fork.
        assert_eq!(
            decide(Some(&last), &key, &cp(10, 1), None),
            Verdict::Repeat(Box::new(last.clone()))
        );
        assert_eq!(
            decide(Some(&last), &key, &cp(10, 2), None),
            Verdict::Refuse(Refusal::Forked { witnessed_seq: 10 })
        );
        // Later: consistency must be at the witnessed seq, with its hash.
        for consistency in [None, Some((9, [1; 32])), Some((11, [1; 32]))] {
            assert_eq!(
                decide(Some(&last), &key, &cp(12, 3), consistency),
                Verdict::Refuse(Refusal::StateMismatch { witnessed_seq: 10 })
            );
        }
        assert_eq!(
            decide(Some(&last), &key, &cp(12, 3), Some((10, [9; 32]))),
            Verdict::Refuse(Refusal::Forked { witnessed_seq: 10 })
        );
        assert_eq!(
            decide(Some(&last), &key, &cp(12, 3), Some((10, [1; 32]))),
            Verdict::Accept
        );
    }

    #[test]
    fn the_store_keeps_every_countersignature_durably_and_per_log() {
        let dir = tempfile::tempdir().unwrap();
        let (log, witness) = (signer(dir.path(), "log"), signer(dir.path(), "w"));
        let key = log.public_key();
        let store = WitnessStore::new(&dir.path().join("witness"), witness);
        let cp1 = Checkpoint::sign(&log, 3, [1; 32], 1);
        let cp2 = Checkpoint::sign(&log, 6, [2; 32], 2);
        let first = store
            .countersign("A", key, "", &cp1, None, 10)
            .unwrap()
            .unwrap();
        // Again: the same answer, nothing appended.
        let again = store
            .countersign("A", key, "", &cp1, None, 11)
            .unwrap()
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(
            store.countersign("A", key, "", &cp2, None, 12).unwrap(),
            Err(Refusal::StateMismatch { witnessed_seq: 3 })
        );
        store
            .countersign("A", key, "", &cp2, Some((3, [1; 32])), 12)
            .unwrap()
            .unwrap();
        // Another agency, another instance: separate state.
        store
            .countersign("B", key, "", &cp1, None, 13)
            .unwrap()
            .unwrap();
        store
            .countersign("A", key, "gw-2", &cp1, None, 13)
            .unwrap()
            .unwrap();

        // A new store on the same folder reads the state back from the file.
        let reopened = WitnessStore::new(&dir.path().join("witness"), signer(dir.path(), "w"));
        assert_eq!(
            reopened.countersign("A", key, "", &cp1, None, 14).unwrap(),
            Err(Refusal::RolledBack {
                witnessed_seq: 6,
                seq: 3
            })
        );
        let path = store.file_of("A", &key, "");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        // A torn final line (a crash mid-append) is ignored.
        fs::write(&path, format!("{text}{{\"witness_kid\":")).unwrap();
        let reopened = WitnessStore::new(&dir.path().join("witness"), signer(dir.path(), "w"));
        assert_eq!(
            reopened.countersign("A", key, "", &cp2, None, 15).unwrap(),
            Ok(Countersigned::parse_line(text.lines().nth(1).unwrap()).unwrap())
        );
        let found = read_folder(&dir.path().join("witness")).unwrap();
        assert_eq!(found.len(), 4);

        // The operator moves a log's file away: that log starts afresh.
        fs::rename(&path, dir.path().join("kept.jsonl")).unwrap();
        assert!(reopened
            .countersign("A", key, "", &cp1, None, 16)
            .unwrap()
            .is_ok());
    }

    #[test]
    fn a_log_is_checked_against_what_witnesses_countersigned() {
        let dir = tempfile::tempdir().unwrap();
        let (log, witness) = (signer(dir.path(), "log"), signer(dir.path(), "w"));
        let key = log.public_key();
        let kid = fingerprint(&witness.public_key());
        let found = |seqs: &[(u64, u8)]| -> Vec<Found> {
            seqs.iter()
                .enumerate()
                .map(|(i, (seq, h))| Found {
                    file: PathBuf::from("w.jsonl"),
                    line: i + 1,
                    countersigned: Countersigned::sign(
                        &witness,
                        key,
                        "",
                        &Checkpoint::sign(&log, *seq, [*h; 32], 1),
                        2,
                    ),
                })
                .collect()
        };
        // The log: records 1 to 20, hash [seq as u8; 32].
        let hash_at = |seq: u64| (seq <= 20).then_some([seq as u8; 32]);
        let report = check_log(&found(&[(5, 5), (20, 20)]), &key, "", hash_at, 20, 0).unwrap();
        assert_eq!(report.witnesses[&kid], (2, 20));
        // Countersignatures of another log or instance are not this log's.
        assert!(check_log(&found(&[(5, 5)]), &[0; 32], "", hash_at, 20, 0)
            .unwrap()
            .witnesses
            .is_empty());
        assert!(check_log(&found(&[(5, 5)]), &key, "gw-1", hash_at, 20, 0)
            .unwrap()
            .witnesses
            .is_empty());
        // Rolled back: the witness saw record 30.
        let e = check_log(&found(&[(5, 5), (30, 30)]), &key, "", hash_at, 20, 0).unwrap_err();
        assert!(e.starts_with("w.jsonl: line 2: witness "), "{e}");
        assert!(e.contains("record 30"), "{e}");
        assert!(
            e.contains("the log ends after record 20: the log was rolled back"),
            "{e}"
        );
        // Forked: another hash at record 12.
        let e = check_log(&found(&[(12, 99)]), &key, "", hash_at, 20, 0).unwrap_err();
        assert!(e.contains("the log's chain hash at record 12 is"), "{e}");
        // Retired records cannot be checked; they are counted.
        let report = check_log(
            &found(&[(5, 5)]),
            &key,
            "",
            |seq| (6..=20).contains(&seq).then_some([seq as u8; 32]),
            20,
            5,
        )
        .unwrap();
        assert_eq!(report.retired, 1);
        // An altered line does not verify.
        let mut bad = found(&[(5, 5)]);
        bad[0].countersigned.witnessed_unix_ms += 1;
        assert!(check_log(&bad, &key, "", hash_at, 20, 0)
            .unwrap_err()
            .contains("does not verify"));
    }

    #[test]
    fn the_last_line_is_read_from_the_end_of_a_long_file() {
        let dir = tempfile::tempdir().unwrap();
        let (log, witness) = (signer(dir.path(), "log"), signer(dir.path(), "w"));
        let key = log.public_key();
        let path = dir.path().join("long.jsonl");
        let mut text = String::new();
        for seq in 1..=200 {
            let cp = Checkpoint::sign(&log, seq, [seq as u8; 32], seq as i64);
            text.push_str(&Countersigned::sign(&witness, key, "", &cp, seq as i64).to_line());
            text.push('\n');
        }
        assert!(text.len() > 4 * 4096);
        fs::write(&path, &text).unwrap();
        assert_eq!(last_line(&path).unwrap().unwrap().checkpoint.seq, 200);
        // A fragment after it was never acknowledged.
        fs::write(&path, format!("{text}{{\"witness_kid\":")).unwrap();
        assert_eq!(last_line(&path).unwrap().unwrap().checkpoint.seq, 200);
        // One line only, and none.
        let one = text.lines().next().unwrap();
        fs::write(&path, format!("{one}\n")).unwrap();
        assert_eq!(last_line(&path).unwrap().unwrap().checkpoint.seq, 1);
        fs::write(&path, "").unwrap();
        assert_eq!(last_line(&path).unwrap(), None);
        assert_eq!(last_line(&dir.path().join("absent.jsonl")).unwrap(), None);
    }

    #[test]
    fn an_agency_cannot_start_logs_without_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = WitnessStore::new(&dir.path().join("witness"), signer(dir.path(), "w"));
        let mut first = None;
        for i in 0..MAX_LOGS_PER_AGENCY {
            let log = signer(dir.path(), &format!("log{i}"));
            let cp = Checkpoint::sign(&log, 1, [1; 32], 1);
            store
                .countersign("A", log.public_key(), "", &cp, None, 1)
                .unwrap()
                .unwrap();
            first.get_or_insert((log.public_key(), cp));
        }
        let one_more = signer(dir.path(), "one-more");
        let cp = Checkpoint::sign(&one_more, 1, [1; 32], 1);
        assert_eq!(
            store
                .countersign("A", one_more.public_key(), "", &cp, None, 2)
                .unwrap(),
            Err(Refusal::TooManyLogs {
                max: MAX_LOGS_PER_AGENCY
            })
        );
        // Its logs already witnessed go on; other agencies are not affected.
        let (key, cp1) = first.unwrap();
        assert!(store
            .countersign("A", key, "", &cp1, None, 3)
            .unwrap()
            .is_ok());
        assert!(store
            .countersign("B", one_more.public_key(), "", &cp, None, 4)
            .unwrap()
            .is_ok());
    }
}
