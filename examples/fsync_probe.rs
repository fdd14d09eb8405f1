//! Measures fsync latency on the disk holding a folder, the way the access
//! log syncs (300-byte append, then `fdatasync`), and prints it as JSON:
//! `{"samples": N, "p50_ms": .., "p99_ms": .., "max_ms": ..}`. The
//! side-by-side benchmark prints it beside the gateway's latency, since a
//! durable access log cannot answer faster than one fsync.
//!
//! ```text
//! cargo run --release --example fsync_probe -- DIR [SAMPLES]
//! ```

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fsync_probe DIR [SAMPLES]");
        return ExitCode::from(2);
    };
    let samples = match args.next().map(|s| s.to_string_lossy().parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("SAMPLES must be a whole number above 0");
            return ExitCode::from(2);
        }
    };
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let sorted = match interop_gateway::audit::fsync_latencies(&path, samples) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let at = |p: usize| sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1e3;
    let max = sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!(
        "{{\"samples\": {}, \"p50_ms\": {:.4}, \"p99_ms\": {:.4}, \"max_ms\": {:.4}}}",
        sorted.len(),
        at(50),
        at(99),
        max
    );
    ExitCode::SUCCESS
}
