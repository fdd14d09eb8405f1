//! The access log at scale, without going through gRPC.
//!
//! ```sh
//! cargo build --release --example audit_bench
//! B=target/release/examples/audit_bench
//! $B build /tmp/log-5m 5000000     # a 5,000,000-record log, written through the store
//! $B build /tmp/log-empty 0        # an empty one
//! flock /tmp/bench.lock $B compare /tmp/log-empty /tmp/log-5m
//! ```
//!
//! `build` writes records the way the gateway's writer does (chain hashes,
//! a signed checkpoint every 1,000 records, groups of 1,000 through
//! `FileStore::append`, default 64 MiB segments): 500,000 distinct citizens,
//! plus one citizen named in exactly 1,000 records spread over the whole log.
//! `open` opens a log in this process and prints, as one JSON line, the time
//! from process start to the log being open (ready to serve), the records it
//! re-verified, the resident memory after opening and after 2,000
//! `ListAccessRecords` page reads for that citizen (pages of 20 from random
//! positions in its 1,000 records, through the same call the service makes),
//! and those reads' p50/p99. `compare` runs `open` in fresh processes on
//! both logs, alternately, five times each, and prints medians and ratios,
//! with bytes on disk per record.

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use interop_gateway::audit::{
    chain, AuditLog, AuditOptions, AuditRecord, AuditStore, Checkpoint, Entry, FileOptions,
    FileStore, Signer, PUB_FILE,
};

/// The citizen named in exactly 1,000 records.
const HOT: &str = "001099999999";
const HOT_RECORDS: u64 = 1_000;
const DISTINCT: u64 = 500_000;

fn record(seq: u64) -> AuditRecord {
    AuditRecord {
        time_unix_ms: 1_760_000_000_000 + seq as i64 * 7,
        request_id: format!("{seq:016x}-5c1d-4c1e-9a7b-2f8e0b6d4a1c"),
        agency_code: "000.00.20.H13".into(),
        method: "interop.citizen.v1.CitizenRegistryService/GetCitizen".into(),
        procedure_code: "1.004227".into(),
        dossier_id: format!("000.00.20.H13-241205-{:04}", seq % 10_000),
        officer_id: format!("officer-{}", seq % 300),
        subjects: vec![format!("0010{:08}", seq % DISTINCT)],
        fields: vec![
            "full_name".into(),
            "date_of_birth".into(),
            "permanent_address".into(),
        ],
        outcome: "OK".into(),
        latency_us: 400 + seq % 900,
        relay_agency_code: String::new(),
        reason: String::new(),
    }
}

fn build(dir: &Path, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let signer = Signer::load_or_create(&dir.join("bench-signing.key"))?;
    let audit = dir.join("audit");
    std::fs::create_dir_all(&audit)?;
    std::fs::write(audit.join(PUB_FILE), signer.public_key_pem())?;
    let mut store = FileStore::new(&audit, signer.public_key(), FileOptions::default());
    let recovered = store.recover()?;
    if !recovered.tail.is_empty() || recovered.head.is_some() {
        return Err(format!("{} is not a new log", audit.display()).into());
    }
    store.keep_genesis(&Checkpoint::sign(&signer, 0, chain::GENESIS, 0))?;
    let hot_every = (n / HOT_RECORDS).max(1);
    let started = Instant::now();
    let mut head = chain::GENESIS;
    let mut seq = 0;
    while seq < n {
        let upto = (seq + 1_000).min(n);
        let records: Vec<AuditRecord> = (seq + 1..=upto)
            .map(|s| {
                let mut r = record(s);
                if s % hot_every == 0 && s / hot_every <= HOT_RECORDS {
                    r.subjects.push(HOT.into());
                }
                r
            })
            .collect();
        let mut group = Vec::with_capacity(records.len() + 1);
        for r in &records {
            seq += 1;
            head = chain::hash(&head, seq, r);
            group.push(Entry::Record {
                seq,
                hash: head,
                record: Cow::Borrowed(r),
            });
        }
        group.push(Entry::Checkpoint(Checkpoint::sign(
            &signer,
            seq,
            head,
            records.last().map_or(0, |r| r.time_unix_ms),
        )));
        store.append(&group)?;
        if seq % 500_000 == 0 {
            eprintln!("{seq} records, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    eprintln!(
        "built {n} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Time since this process started, from /proc (exec to now).
fn since_exec() -> Duration {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let start_ticks: f64 = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_owned();
            after
                .split_whitespace()
                .nth(19)
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    Duration::from_secs_f64((uptime - start_ticks / 100.0).max(0.0))
}

fn open(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let signer = Signer::load_or_create(&dir.join("bench-signing.key"))?;
        let t = Instant::now();
        let log = AuditLog::open(&dir.join("audit"), signer, AuditOptions::default()).await?;
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        let ready_ms = since_exec().as_secs_f64() * 1e3;
        let rss_open = rss_kib();
        let mut lat = Vec::with_capacity(2_000);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut found = 0;
        let last = log.last_seq();
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let before = (last > 0).then(|| (seed % last + 1).to_string());
            let t = Instant::now();
            let page = log.records_for_subject(HOT, before.as_deref(), 21)?;
            lat.push(t.elapsed());
            found += page.len();
        }
        lat.sort();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "{}",
            serde_json::json!({
                "records": last,
                "reverified": log.reverified_on_open(),
                "open_ms": open_ms,
                "ready_ms": ready_ms,
                "rss_open_kib": rss_open,
                "rss_after_reads_kib": rss_kib(),
                "list_p50_ms": pct(0.50),
                "list_p99_ms": pct(0.99),
                "rows_read": found,
            })
        );
        log.shutdown().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                du(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    total
}

fn compare(empty: &Path, full: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let mut runs: [Vec<serde_json::Value>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (i, dir) in [empty, full].iter().enumerate() {
            let out = Command::new(&me).arg("open").arg(dir).output()?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
            }
            runs[i].push(serde_json::from_slice(&out.stdout)?);
        }
    }
    let median = |i: usize, key: &str| {
        let mut v: Vec<f64> = runs[i].iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let records = runs[1][0]["records"].as_u64().unwrap_or(0);
    for key in [
        "ready_ms",
        "open_ms",
        "rss_open_kib",
        "rss_after_reads_kib",
        "list_p50_ms",
        "list_p99_ms",
    ] {
        let (e, f) = (median(0, key), median(1, key));
        println!(
            "{key:>20}: empty {e:>10.2}  {records} records {f:>10.2}  ratio {:.2}  diff {:+.2}",
            f / e.max(1e-9),
            f - e
        );
    }
    println!("{:>20}: {}", "reverified", runs[1][0]["reverified"]);
    let audit = full.join("audit");
    let segments = du(&audit.join("segments"));
    let index = du(&audit) - segments;
    println!(
        "bytes on disk per record: {:.0} (segments {:.0}, index {:.0})",
        (segments + index) as f64 / records.max(1) as f64,
        segments as f64 / records.max(1) as f64,
        index as f64 / records.max(1) as f64
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["build", dir, n] => build(&PathBuf::from(dir), n.parse()?),
        ["open", dir] => open(Path::new(dir)),
        ["compare", empty, full] => compare(Path::new(empty), Path::new(full)),
        _ => Err("usage: audit_bench build DIR N | open DIR | compare EMPTY_DIR FULL_DIR".into()),
    }
}
