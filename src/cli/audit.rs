//! `interop-gateway audit verify | export | public-key`: checking and reading
//! the access log offline, from its files alone, or from its PostgreSQL
//! database (every instance's chain).

use std::{io::Write, path::PathBuf};

use super::{load_config, parse_day_start, ConfigArg, Failure, EXIT_CONFIG, EXIT_FAILED};
use crate::audit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Walk the whole log, segments and archive: every hash link, checkpoint
    /// signature and link between segments. Exits 1 naming the first broken
    /// record when anything was changed, removed, reordered or truncated
    /// past a checkpoint.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Verify only the segment starting at this record (its file name,
        /// leading zeros optional), from its own signed opening checkpoint;
        /// repeat it for several, whose links are checked where adjacent.
        #[arg(long = "segment", value_name = "FIRST_SEQ")]
        segments: Vec<u64>,
        /// Public key (PEM) to check signatures with; by default the
        /// `audit.pub` beside the log. Pass a copy kept elsewhere to detect a
        /// log re-signed with a swapped key.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Verify the log kept in this PostgreSQL database (every instance's
        /// chain) instead of the config's; by default the config's
        /// `[audit] database_url` when it has one.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Also check the log against the countersignatures in this folder
        /// (a witness's `witness/` folder, or this gateway's
        /// `witness-receipts/`): fails when the log does not reach a
        /// countersigned checkpoint, or its chain hash there differs (the log
        /// was rolled back or forked).
        #[arg(long, value_name = "DIR")]
        witness_receipts: Option<PathBuf>,
    },
    /// Print access records as JSON lines.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// Only records at or after this time: `YYYY-MM-DD` (start of that day,
        /// Vietnam time) or milliseconds since the Unix epoch.
        #[arg(long)]
        since: Option<String>,
        /// Only records about this subject (personal id, enterprise code, or
        /// parcel `commune/sheet/number`).
        #[arg(long)]
        subject: Option<String>,
        /// Export from this PostgreSQL database (every instance) instead of
        /// the config's log; by default the config's `[audit] database_url`
        /// when it has one.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Print the log's signing public key (PEM), to keep apart from the log.
    PublicKey {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        AuditCommand::Verify {
            config,
            public_key,
            database_url,
            segments,
            witness_receipts,
        } => {
            let witnessed = witness_receipts
                .as_deref()
                .map(|dir| {
                    audit::witness::read_folder(dir)
                        .map(|found| (dir.to_owned(), found))
                        .map_err(|e| Failure::new(EXIT_CONFIG, format!("--witness-receipts: {e}")))
                })
                .transpose()?;
            let key = match public_key {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| {
                        Failure::new(EXIT_CONFIG, format!("--public-key {}: {e}", p.display()))
                    })?;
                    Some(audit::parse_public_key_pem(&text).map_err(|e| {
                        Failure::new(EXIT_CONFIG, format!("--public-key {}: {e}", p.display()))
                    })?)
                }
                None => None,
            };
            let config = match source(&config, database_url)? {
                Source::Database(url) => {
                    return verify_database(&url, key.as_ref(), witnessed.as_ref())
                }
                Source::Files(config) => config,
            };
            if let Some(absent) = audit::verify::no_log_in(&config.audit.dir) {
                return Err(Failure::new(EXIT_FAILED, absent));
            }
            // A --segment that names no segment is a typo, not a broken log.
            if !segments.is_empty() {
                let archive = config.audit.files.archive_dir.as_deref();
                let present: Vec<u64> = audit::segments::list_segments(&config.audit.dir, archive)
                    .map_err(|e| {
                        Failure::new(EXIT_FAILED, format!("{}: {e}", config.audit.dir.display()))
                    })?
                    .iter()
                    .map(|s| s.first)
                    .collect();
                if let Some(missing) = segments.iter().find(|s| !present.contains(s)) {
                    let shown: Vec<String> = present.iter().take(20).map(u64::to_string).collect();
                    return Err(Failure::new(
                        EXIT_CONFIG,
                        format!(
                            "--segment {missing}: no segment starts at record {missing}; they start at: {}{}",
                            shown.join(", "),
                            if present.len() > 20 { ", ..." } else { "" }
                        ),
                    ));
                }
            }
            let started = std::time::Instant::now();
            let scope = audit::VerifyScope {
                dir: &config.audit.dir,
                archive_dir: config.audit.files.archive_dir.as_deref(),
                public_key: key.as_ref(),
                segments: (!segments.is_empty()).then_some(segments.as_slice()),
            };
            // The chain hashes at the seqs witnesses countersigned, read in
            // the same pass.
            let wanted: std::collections::BTreeSet<u64> = witnessed
                .iter()
                .flat_map(|(_, found)| found.iter().map(|f| f.countersigned.checkpoint.seq))
                .collect();
            let mut hashes = std::collections::BTreeMap::new();
            let verified = audit::verify_log_observing(scope, &mut |seq, hash| {
                if wanted.contains(&seq) {
                    hashes.insert(seq, *hash);
                }
            });
            match verified {
                Ok(report) => {
                    let took = started.elapsed().as_secs_f64();
                    outln!(
                        "access log {}: OK, {} records, {} checkpoints{}",
                        config.audit.dir.display(),
                        report.records,
                        report.checkpoints,
                        match (report.segments, segments.is_empty()) {
                            (0, _) => String::new(),
                            (n, true) =>
                                format!(", {n} segments ({} archived)", report.archived_segments),
                            (n, false) => format!(
                                ", {n} selected segments and the links between adjacent ones"
                            ),
                        }
                    );
                    if let Some(through) = report.retired_through {
                        outln!(
                            "records 1 to {through} were deleted under retention, as the signed statement in {} attests",
                            audit::RETIRED_FILE
                        );
                    }
                    outln!(
                        "verified in {took:.2} s ({:.0} records/s)",
                        report.records as f64 / took.max(1e-9)
                    );
                    match report.index_entries {
                        Some(n) => outln!(
                            "subject index: {n} entries, each pointing at its record (records up to {} indexed)",
                            report.indexed_seq
                        ),
                        None => outln!(
                            "subject index: none (it is rebuilt from the segments at the next start)"
                        ),
                    }
                    match report.last_checkpoint {
                        Some((seq, time)) => outln!(
                            "last checkpoint: after record {seq}, at {}",
                            super::format_time(time)
                        ),
                        None => outln!("no checkpoint yet"),
                    }
                    for line in tail_lines(report.unsealed_tail, report.torn_tail_bytes) {
                        outln!("{line}");
                    }
                    let Some((dir, found)) = &witnessed else {
                        return Ok(());
                    };
                    let log_key = match key {
                        Some(k) => k,
                        None => audit::files::read_public_key(&config.audit.dir)
                            .ok()
                            .flatten()
                            .ok_or_else(|| {
                                Failure::new(EXIT_FAILED, "the log's public key cannot be read")
                            })?,
                    };
                    // A subset of segments: only countersignatures inside it.
                    let found: Vec<_> = match segments.is_empty() {
                        true => found.clone(),
                        false => found
                            .iter()
                            .filter(|f| hashes.contains_key(&f.countersigned.checkpoint.seq))
                            .cloned()
                            .collect(),
                    };
                    let checked = audit::witness::check_log(
                        &found,
                        &log_key,
                        "",
                        |seq| hashes.get(&seq).copied(),
                        report.last_seq,
                        report.retired_through.unwrap_or(0),
                    );
                    witness_lines(&config.audit.dir.display().to_string(), dir, checked)
                }
                Err(failure) => Err(Failure::new(
                    EXIT_FAILED,
                    format!(
                        "access log {}: BROKEN: {failure}",
                        config.audit.dir.display()
                    ),
                )),
            }
        }
        AuditCommand::Export {
            config,
            since,
            subject,
            database_url,
        } => {
            let since = since
                .as_deref()
                .map(parse_day_start)
                .transpose()
                .map_err(|e| Failure::new(EXIT_CONFIG, format!("--since: {e}")))?;
            let source = source(&config, database_url)?;
            let mut out = std::io::BufWriter::new(super::Stdout);
            let exported = match source {
                Source::Database(url) => super::runtime()?
                    .block_on(audit::pg::export_database(
                        &url,
                        since,
                        subject.as_deref(),
                        &mut out,
                    ))
                    .map(drop),
                Source::Files(config) => audit::export(
                    &config.audit.dir,
                    config.audit.files.archive_dir.as_deref(),
                    since,
                    subject.as_deref(),
                    &mut out,
                )
                .map(drop),
            };
            let flushed = out.flush();
            match exported {
                // The reader went away (`| head`): it has what it wanted.
                Err(audit::AuditError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(())
                }
                // Said once already, by `Stdout`.
                Err(audit::AuditError::Io { path, .. })
                    if path == std::path::Path::new("standard output") =>
                {
                    Err(Failure::new(EXIT_FAILED, "the export is incomplete"))
                }
                Err(e) => Err(Failure::new(EXIT_FAILED, e)),
                Ok(()) => match flushed {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        Err(Failure::new(EXIT_FAILED, "the export is incomplete"))
                    }
                    _ => Ok(()),
                },
            }
        }
        AuditCommand::PublicKey { config } => {
            let config = load_config(&config.config)?;
            if config.audit.database.is_some() {
                // No audit.pub in a database: the key is the signing key's.
                let key = &config.audit.signing_key;
                if !key.exists() {
                    return Err(Failure::new(
                        EXIT_FAILED,
                        format!(
                            "{}: not found (the gateway creates it on first start)",
                            key.display()
                        ),
                    ));
                }
                let signer =
                    audit::Signer::load_or_create(key).map_err(|e| Failure::new(EXIT_FAILED, e))?;
                out!("{}", signer.public_key_pem());
                return Ok(());
            }
            let path = config.audit.dir.join(audit::PUB_FILE);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                Failure::new(
                    EXIT_FAILED,
                    format!(
                        "{}: {e} (the gateway writes it on first start)",
                        path.display()
                    ),
                )
            })?;
            audit::parse_public_key_pem(&pem)
                .map_err(|e| Failure::new(EXIT_FAILED, format!("{}: {e}", path.display())))?;
            out!("{pem}");
            Ok(())
        }
    }
}

/// Where the log to read is.
enum Source {
    Files(Box<crate::config::Config>),
    Database(String),
}

/// `--database-url` when given (no config is read then), else the config's
/// `[audit] database_url`, else the config's files.
fn source(config: &ConfigArg, database_url: Option<String>) -> Result<Source, Failure> {
    if let Some(url) = database_url {
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return Err(Failure::new(
                EXIT_CONFIG,
                "--database-url: expected postgresql://user[:password]@host[:port]/database",
            ));
        }
        return Ok(Source::Database(url));
    }
    let config = load_config(&config.config)?;
    Ok(match &config.audit.database {
        Some(db) => Source::Database(db.url.clone()),
        None => Source::Files(Box::new(config)),
    })
}

/// What `audit verify --witness-receipts` prints for one log, or its failure.
fn witness_lines(
    log: &str,
    dir: &std::path::Path,
    checked: Result<audit::witness::WitnessReport, String>,
) -> Result<(), Failure> {
    let report = checked.map_err(|e| {
        Failure::new(
            EXIT_FAILED,
            format!("access log {log}: BROKEN against the witnesses' countersignatures: {e}"),
        )
    })?;
    if report.witnesses.is_empty() && report.retired == 0 {
        outln!(
            "witnesses: no countersignature in {} is for this log",
            dir.display()
        );
    }
    for (kid, (count, seq)) in &report.witnesses {
        outln!(
            "witness {}: {count} countersigned checkpoints, the latest at record {seq}, all in this log",
            &kid[..16]
        );
    }
    if report.retired > 0 {
        outln!(
            "{} countersigned checkpoints fall in records deleted under retention and cannot be checked",
            report.retired
        );
    }
    Ok(())
}

/// `audit verify` on a database: every instance's chain.
fn verify_database(
    url: &str,
    key: Option<&[u8; 32]>,
    witnessed: Option<&(PathBuf, Vec<audit::witness::Found>)>,
) -> Result<(), Failure> {
    let shown = audit::pg::redacted(url);
    let reports = super::runtime()?
        .block_on(audit::pg::verify_database(url, key))
        .map_err(|e| match e {
            audit::pg::DatabaseVerifyError::Unavailable(e) => {
                Failure::new(EXIT_FAILED, format!("access log {shown}: {e}"))
            }
            broken => Failure::new(EXIT_FAILED, format!("access log {shown}: BROKEN: {broken}")),
        })?;
    let records: u64 = reports.iter().map(|r| r.records).sum();
    outln!(
        "access log {shown}: OK, {} instances, {records} records",
        reports.len()
    );
    for r in &reports {
        outln!(
            "instance {}: {} records, {} checkpoints, last after record {} at {}",
            r.instance,
            r.records,
            r.checkpoints,
            r.last_checkpoint.0,
            super::format_time(r.last_checkpoint.1)
        );
        for line in tail_lines(r.unsealed_tail, 0) {
            outln!("  {line}");
        }
    }
    let Some((dir, found)) = witnessed else {
        return Ok(());
    };
    let mut wanted = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for f in found {
        let c = &f.countersigned;
        wanted
            .entry(c.instance.clone())
            .or_default()
            .push(c.checkpoint.seq);
    }
    let points = super::runtime()?
        .block_on(audit::pg::chain_points(url, &wanted))
        .map_err(|e| Failure::new(EXIT_FAILED, format!("access log {shown}: {e}")))?;
    for p in points {
        let checked = audit::witness::check_log(
            found,
            &p.public_key,
            &p.instance,
            |seq| p.hashes.get(&seq).copied(),
            p.last_seq,
            0,
        );
        outln!("instance {}:", p.instance);
        witness_lines(&format!("{shown} instance {}", p.instance), dir, checked)?;
    }
    Ok(())
}

/// What `audit verify` says about the end of the log past its last
/// checkpoint. On a running gateway that is the normal state between
/// checkpoints, not damage; only after a crash is it left until the next
/// start.
fn tail_lines(unsealed: u64, torn_bytes: u64) -> Vec<String> {
    let mut lines = Vec::new();
    if unsealed > 0 {
        lines.push(format!(
            "{unsealed} records after the last checkpoint, not yet sealed by one: normal while \
             the gateway runs (a checkpoint follows within [audit] checkpoint_every_seconds); \
             if it stopped by crashing, its next start seals them"
        ));
    }
    if torn_bytes > 0 {
        lines.push(format!(
            "{torn_bytes} bytes of an unfinished last line: a write in progress, or one a crash \
             cut short (never acknowledged to a client; removed at the next start)"
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::tail_lines;

    #[test]
    fn a_tail_past_the_checkpoint_is_not_called_a_crash() {
        assert!(tail_lines(0, 0).is_empty());
        let lines = tail_lines(3, 0);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("3 records after the last checkpoint"));
        assert!(lines[0].contains("normal while the gateway runs"));
        assert!(!lines[0].contains("left by a crash"));
        assert_eq!(tail_lines(1, 17).len(), 2);
    }
}
