//! Audit log throughput: group commit against one fsync per record, on the
//! same disk in the same run, with the latency of a bare fsync for scale.
//!
//! `cargo bench --bench audit_throughput`. Sizes can be changed with
//! `AUDIT_BENCH_RECORDS` (group commit, default 20000), `AUDIT_BENCH_BASELINE`
//! (one fsync per record, default 2000: at up to a few ms per fsync, more only
//! takes longer) and `AUDIT_BENCH_INDEX` (if set, also writes that many
//! records, reopens the log and reports the time and memory of opening it;
//! for a 5,000,000-record log against an empty one, see
//! `examples/audit_bench.rs`). The log goes in a temp folder under the target dir,
//! on the disk the build uses (the system temp dir may be a RAM disk).

use std::{
    env,
    error::Error,
    fs,
    num::NonZeroUsize,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use interop_gateway::audit::{fsync_latencies, AuditLog, AuditOptions, AuditRecord, Signer};

const TASKS: u64 = 64;

type Res<T> = Result<T, Box<dyn Error>>;

fn main() -> Res<()> {
    let records = env_u64("AUDIT_BENCH_RECORDS", 20_000)?;
    let baseline = env_u64("AUDIT_BENCH_BASELINE", 2_000)?;
    let index_records = env_u64("AUDIT_BENCH_INDEX", 0)?;
    let root = tempfile::Builder::new()
        .prefix("audit-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let signer_path = root.path().join("audit.pk8");

    let fsync = fsync_latencies(&root.path().join("fsync-probe"), 200)?;

    let group = rt.block_on(run(
        &root.path().join("group"),
        Signer::load_or_create(&signer_path)?,
        AuditOptions::default(),
        records,
    ))?;
    let single = rt.block_on(run(
        &root.path().join("single"),
        Signer::load_or_create(&signer_path)?,
        AuditOptions {
            max_batch: NonZeroUsize::MIN,
            ..AuditOptions::default()
        },
        baseline,
    ))?;

    println!(
        "audit_throughput: {TASKS} concurrent tasks, log in {}",
        root.path().display()
    );
    println!(
        "fsync alone (300-byte append + fdatasync, {} samples): p50 {}, p99 {}",
        fsync.len(),
        ms(percentile(&fsync, 50)),
        ms(percentile(&fsync, 99)),
    );
    println!();
    println!(
        "{:<32} {:>8} {:>9} {:>11} {:>12} {:>12}",
        "mode", "records", "seconds", "records/s", "append p50", "append p99"
    );
    for (name, r) in [
        ("group commit (max_batch 1024)", &group),
        ("fsync per record (max_batch 1)", &single),
    ] {
        println!(
            "{:<32} {:>8} {:>9.2} {:>11.0} {:>12} {:>12}",
            name,
            r.records,
            r.elapsed.as_secs_f64(),
            r.per_second(),
            ms(percentile(&r.latencies, 50)),
            ms(percentile(&r.latencies, 99)),
        );
    }
    println!(
        "group commit / fsync per record: {:.1}x",
        group.per_second() / single.per_second()
    );

    if index_records > 0 {
        let dir = root.path().join("index");
        rt.block_on(run(
            &dir,
            Signer::load_or_create(&signer_path)?,
            AuditOptions::default(),
            index_records,
        ))?;
        let size: u64 = fs::read_dir(dir.join(interop_gateway::audit::SEGMENTS_DIR))?
            .map(|e| e.and_then(|e| e.metadata()).map(|m| m.len()))
            .sum::<Result<u64, _>>()?;
        let before = rss_kib();
        let started = Instant::now();
        let log = rt.block_on(AuditLog::open(
            &dir,
            Signer::load_or_create(&signer_path)?,
            AuditOptions::default(),
        ))?;
        let opened = started.elapsed();
        let after = rss_kib();
        println!();
        println!(
            "reopen of {index_records} records ({:.0} MB of segments, {} distinct subjects): \
             opened in {:.2} s; resident memory grew by {}",
            size as f64 / 1e6,
            index_records.div_ceil(4),
            opened.as_secs_f64(),
            match (before, after) {
                (Some(b), Some(a)) => format!("{:.1} MB", a.saturating_sub(b) as f64 / 1024.0),
                _ => "(unknown: no /proc)".into(),
            }
        );
        rt.block_on(log.shutdown())?;
    }
    Ok(())
}

struct RunResult {
    records: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl RunResult {
    fn per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// Appends `records` from [`TASKS`] tasks, each awaiting its appends one by
/// one as a request handler would.
async fn run(dir: &Path, signer: Signer, opts: AuditOptions, records: u64) -> Res<RunResult> {
    let log = Arc::new(AuditLog::open(dir, signer, opts).await?);
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for n in (task..records).step_by(TASKS as usize) {
                    let append = log.append(record(n));
                    let t = Instant::now();
                    append.await?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, interop_gateway::audit::AuditError>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(records as usize);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    Arc::into_inner(log)
        .ok_or("the log is still shared")?
        .shutdown()
        .await?;
    latencies.sort();
    Ok(RunResult {
        records,
        elapsed,
        latencies,
    })
}

/// A record the size of a real one; every 4th record shares a subject.
fn record(n: u64) -> AuditRecord {
    AuditRecord {
        time_unix_ms: 1_733_400_000_000 + n as i64,
        request_id: format!("01JEBQ{n:020}"),
        agency_code: "000.00.20.H13".into(),
        method: "interop.citizen.v1.CitizenRegistryService/GetCitizen".into(),
        procedure_code: "1.004227".into(),
        dossier_id: format!("000.00.20.H13-241205-{n:04}"),
        officer_id: "cb-017".into(),
        subjects: vec![format!("001{:09}", n / 4)],
        fields: vec![
            "fullName".into(),
            "dateOfBirth".into(),
            "permanentAddress.provinceCode".into(),
        ],
        outcome: "OK".into(),
        latency_us: 850,
        relay_agency_code: String::new(),
        reason: String::new(),
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn env_u64(name: &str, default: u64) -> Res<u64> {
    match env::var(name) {
        Ok(v) => Ok(v.parse().map_err(|e| format!("{name}={v}: {e}"))?),
        Err(_) => Ok(default),
    }
}

/// Resident set size in KiB, from /proc (Linux).
fn rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
