//! The PostgreSQL access log store against a throwaway cluster: chains per
//! instance, group commit, recovery, cross-instance listing with cursors, the
//! shared page-token secret, one live process per instance, verification
//! (and what it catches), and failing while the database is down.

mod support;

use std::borrow::Cow;

use interop_gateway::audit::{
    chain::{self, Checkpoint, GENESIS},
    pg::{self, PgStore},
    AuditRecord, AuditStore, Entry, Signer,
};
use support::pg::PgCluster;

fn record(time: i64, subject: &str, n: u64) -> AuditRecord {
    AuditRecord {
        time_unix_ms: time,
        request_id: format!("req-{n}"),
        agency_code: "000.00.20.H13".into(),
        method: "interop.citizen.v1.CitizenRegistryService/GetCitizen".into(),
        procedure_code: "1.004227".into(),
        dossier_id: "000.00.20.H13-241205-0001".into(),
        officer_id: "officer-7".into(),
        subjects: vec![subject.into()],
        fields: vec!["full_name".into()],
        outcome: "OK".into(),
        latency_us: 10,
        relay_agency_code: String::new(),
        reason: String::new(),
    }
}

/// A chain group: `records` after (`seq`, `head`), with a checkpoint at the
/// end when `seal`. Returns the group and the new head.
fn group(
    signer: &Signer,
    mut seq: u64,
    mut head: [u8; 32],
    records: &[AuditRecord],
    seal: bool,
) -> (Vec<Entry<'static>>, u64, [u8; 32]) {
    let mut out = Vec::new();
    for r in records {
        seq += 1;
        head = chain::hash(&head, seq, r);
        out.push(Entry::Record {
            seq,
            hash: head,
            record: Cow::Owned(r.clone()),
        });
    }
    if seal {
        out.push(Entry::Checkpoint(Checkpoint::sign(signer, seq, head, 1)));
    }
    (out, seq, head)
}

struct Env {
    pg: PgCluster,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Env {
    fn start(test: &str) -> Option<Env> {
        Some(Env {
            pg: PgCluster::start_or_skip(test)?,
            rt: tokio::runtime::Runtime::new().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn signer(&self, name: &str) -> Signer {
        Signer::load_or_create(&self.dir.path().join(format!("{name}.key"))).unwrap()
    }

    fn connect(&self, instance: &str, signer: &Signer) -> Result<PgStore, String> {
        self.rt
            .block_on(PgStore::connect(&self.pg.url, 4, instance, signer))
            .map_err(|e| e.to_string())
    }
}

const A_SUBJECT: &str = "092085000123";
const B_SUBJECT: &str = "092085000124";

#[test]
fn instances_keep_their_own_chains_and_list_each_others_records_newest_first() {
    let Some(env) = Env::start("instances_keep_their_own_chains") else {
        return;
    };
    let (ka, kb) = (env.signer("a"), env.signer("b"));
    let mut a = env.connect("gw-a", &ka).unwrap();
    let mut b = env.connect("gw-b", &kb).unwrap();

    // A new chain: the genesis checkpoint, nothing after it.
    let rec = a.recover().unwrap();
    assert_eq!(
        rec.head.as_ref().map(|c| (c.seq, c.hash)),
        Some((0, GENESIS))
    );
    assert!(rec.head.unwrap().verify(&ka.public_key()));
    assert!(rec.tail.is_empty());
    b.recover().unwrap();

    // Interleaved times: a at 1000, 1002, 1004; b at 1001, 1003.
    let (ga, a_seq, a_head) = group(
        &ka,
        0,
        GENESIS,
        &[
            record(1000, A_SUBJECT, 1),
            record(1002, A_SUBJECT, 2),
            record(1004, B_SUBJECT, 3),
        ],
        true,
    );
    a.append(&ga).unwrap();
    let (gb, _, _) = group(
        &kb,
        0,
        GENESIS,
        &[record(1001, A_SUBJECT, 4), record(1003, A_SUBJECT, 5)],
        false,
    );
    b.append(&gb).unwrap();

    // Both see every instance's records, newest first, a page at a time.
    let (ra, rb) = (a.reader(), b.reader());
    let first = rb.subject_page(A_SUBJECT, None, 2).unwrap();
    let ids: Vec<_> = first.iter().map(|r| r.record.request_id.as_str()).collect();
    assert_eq!(ids, ["req-5", "req-2"]);
    // The cursor of one instance's page works on the other.
    let rest = ra
        .subject_page(A_SUBJECT, Some(&first[1].cursor), 10)
        .unwrap();
    let ids: Vec<_> = rest.iter().map(|r| r.record.request_id.as_str()).collect();
    assert_eq!(ids, ["req-4", "req-1"]);
    assert!(ra.subject_page(A_SUBJECT, Some("7"), 10).is_err());
    assert_eq!(
        ra.page_token_secret().unwrap(),
        rb.page_token_secret().unwrap()
    );
    assert!(ra.page_token_secret().unwrap().is_some());
    // Watchers read their own chain.
    let after: Vec<_> = ra
        .records_after(1, 10)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(after, [2, 3]);

    // A second live process with the same instance name is refused.
    let err = env.connect("gw-a", &ka).err().unwrap();
    assert!(err.contains("another running gateway"), "{err}");
    // Another key for a known instance is refused too.
    drop((a, ra));
    let err = env.connect("gw-a", &kb).err().unwrap();
    assert!(err.contains("another key"), "{err}");

    // Reopened, the chain continues from its last checkpoint.
    let mut a = env.connect("gw-a", &ka).unwrap();
    let rec = a.recover().unwrap();
    assert_eq!(rec.head.as_ref().map(|c| c.seq), Some(3));
    assert_eq!(rec.sealed_records, 3);
    assert!(matches!(rec.tail.as_slice(), [Entry::Checkpoint(cp)] if cp.hash == a_head));
    let (more, _, _) = group(&ka, a_seq, a_head, &[record(1005, A_SUBJECT, 6)], false);
    a.append(&more).unwrap();
    let rec = a.recover().unwrap();
    assert_eq!(rec.tail.len(), 2);

    // A group that does not continue the chain is refused whole.
    let (dup, _, _) = group(&ka, 0, GENESIS, &[record(1006, A_SUBJECT, 7)], false);
    assert!(a.append(&dup).is_err());
    assert_eq!(a.recover().unwrap().tail.len(), 2);

    // verify: both chains, and what it catches.
    let reports = env
        .rt
        .block_on(pg::verify_database(&env.pg.url, None))
        .unwrap();
    let summary: Vec<_> = reports
        .iter()
        .map(|r| (r.instance.as_str(), r.records, r.unsealed_tail))
        .collect();
    assert_eq!(summary, [("gw-a", 4, 1), ("gw-b", 2, 2)]);
    let err = env
        .rt
        .block_on(pg::verify_database(&env.pg.url, Some(&kb.public_key())))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gw-a") && err.contains("signature"), "{err}");

    // The subject index and the time column are checked against the
    // records: a read hidden from a citizen's listing, or moved in time.
    env.pg.psql(
        "CREATE TABLE s_backup AS SELECT * FROM audit_subjects; \
         CREATE TABLE r_backup AS SELECT * FROM audit_records",
    );
    let restore = "DELETE FROM audit_subjects; \
         UPDATE audit_records r SET time_unix_ms = b.time_unix_ms FROM r_backup b \
           WHERE b.instance = r.instance AND b.seq = r.seq; \
         INSERT INTO audit_subjects SELECT * FROM s_backup";
    for (tamper, wanted) in [
        (
            "DELETE FROM audit_subjects WHERE instance = 'gw-a' AND seq = 2",
            "lacks it",
        ),
        (
            "UPDATE audit_subjects SET time_unix_ms = time_unix_ms + 34560000000 \
             WHERE instance = 'gw-a' AND seq = 2",
            "another time",
        ),
        (
            "UPDATE audit_records SET time_unix_ms = time_unix_ms - 34560000000 \
             WHERE instance = 'gw-a' AND seq = 2",
            "time_unix_ms column",
        ),
        (
            "INSERT INTO audit_subjects SELECT '001099009999', time_unix_ms, instance, seq \
             FROM audit_records WHERE instance = 'gw-a' AND seq = 1",
            "name no record's subject",
        ),
    ] {
        env.pg.psql(tamper);
        let err = env
            .rt
            .block_on(pg::verify_database(&env.pg.url, None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gw-a") && err.contains(wanted),
            "{tamper}: {err}"
        );
        env.pg.psql(restore);
        env.rt
            .block_on(pg::verify_database(&env.pg.url, None))
            .unwrap();
    }

    env.pg.psql(
        "UPDATE audit_records SET record = replace(record, 'officer-7', 'officer-8') \
         WHERE instance = 'gw-b' AND seq = 1",
    );
    let err = env
        .rt
        .block_on(pg::verify_database(&env.pg.url, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gw-b") && err.contains("record 1"), "{err}");

    env.pg
        .psql("DELETE FROM audit_subjects WHERE instance = 'gw-b'");
    env.pg
        .psql("DELETE FROM audit_records WHERE instance = 'gw-b'");
    env.pg
        .psql("DELETE FROM audit_checkpoints WHERE instance = 'gw-b'");
    let err = env
        .rt
        .block_on(pg::verify_database(&env.pg.url, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gw-b") && err.contains("genesis"), "{err}");
}

#[test]
fn writes_fail_while_the_database_is_down_and_succeed_again_after() {
    let Some(env) = Env::start("writes_fail_while_the_database_is_down") else {
        return;
    };
    let key = env.signer("a");
    let mut a = env.connect("gw-a", &key).unwrap();
    a.recover().unwrap();
    let (g1, seq, head) = group(&key, 0, GENESIS, &[record(1, A_SUBJECT, 1)], false);
    a.append(&g1).unwrap();

    env.pg.stop();
    let (g2, _, _) = group(&key, seq, head, &[record(2, A_SUBJECT, 2)], false);
    let err = a.append(&g2).unwrap_err().to_string();
    assert!(err.contains("audit database"), "{err}");
    assert!(a.reader().subject_page(A_SUBJECT, None, 10).is_err());

    env.pg.start_again();
    // As if the failed write had committed without the answer arriving: it
    // was never acknowledged, and the retry at the same seq replaces it.
    env.pg.psql(
        "INSERT INTO audit_records (instance, seq, hash, time_unix_ms, record) \
         VALUES ('gw-a', 2, '\\x00', 2, '{}')",
    );
    // The pool and the instance lock reconnect by themselves.
    a.append(&g2).unwrap();
    let ids: Vec<_> = a
        .reader()
        .subject_page(A_SUBJECT, None, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.record.request_id)
        .collect();
    assert_eq!(ids, ["req-2", "req-1"]);
    let reports = env
        .rt
        .block_on(pg::verify_database(&env.pg.url, None))
        .unwrap();
    assert_eq!(reports[0].records, 2);
    // And the lock is this process's again: a second one is refused.
    let err = env.connect("gw-a", &key).err().unwrap();
    assert!(err.contains("another running gateway"), "{err}");
}

#[test]
fn countersigned_checkpoints_are_checked_against_each_instances_chain() {
    use interop_gateway::audit::witness::{append_line, Countersigned};
    let Some(env) = Env::start("countersigned_checkpoints_are_checked") else {
        return;
    };
    let (ka, witness) = (env.signer("a"), env.signer("witness"));
    let mut a = env.connect("gw-a", &ka).unwrap();
    a.recover().unwrap();
    let records: Vec<AuditRecord> = (1..=3).map(|n| record(n as i64, A_SUBJECT, n)).collect();
    let (g, seq, head) = group(&ka, 0, GENESIS, &records, true);
    a.append(&g).unwrap();

    // The chain hash at any seq, for a witness's consistency check.
    let reader = a.reader();
    assert_eq!(reader.chain_hash_at(0).unwrap(), Some(GENESIS));
    let second = match &g[1] {
        Entry::Record { hash, .. } => *hash,
        _ => unreachable!(),
    };
    assert_eq!(reader.chain_hash_at(2).unwrap(), Some(second));
    assert_eq!(reader.chain_hash_at(seq).unwrap(), Some(head));
    assert_eq!(reader.chain_hash_at(seq + 1).unwrap(), None);

    // `audit verify --witness-receipts` on the database.
    let receipts = env.dir.path().join("receipts");
    let countersign = |seq, hash| {
        let cp = Checkpoint::sign(&ka, seq, hash, 7);
        let c = Countersigned::sign(&witness, ka.public_key(), "gw-a", &cp, 8);
        append_line(&receipts.join("w.jsonl"), &c.to_line()).unwrap();
    };
    countersign(seq, head);
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_interop-gateway"))
            .args(["audit", "verify", "--database-url", &env.pg.url])
            .arg("--witness-receipts")
            .arg(&receipts)
            .output()
            .unwrap()
    };
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the latest at record 3, all in this log"),
        "{stdout}"
    );
    // A countersigned checkpoint past the end: the chain was rolled back.
    countersign(5, [5; 32]);
    let out = verify();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("instance gw-a")
            && stderr.contains("the log ends after record 3: the log was rolled back"),
        "{stderr}"
    );
}
