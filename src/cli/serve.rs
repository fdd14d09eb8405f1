//! `interop-gateway serve`.

use super::{load_config, runtime, ConfigArg, Failure, EXIT_CONFIG, EXIT_FAILED};
use crate::{dev, logging, server};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let config = load_config(&args.config.config)?;
    // Flushes the log when `run` returns, whichever way.
    let log_guard = logging::init(config.log_format);
    let log = &log_guard;
    if config.dev {
        let mut done = dev::ensure_pki(&config)
            .map_err(|e| Failure::new(EXIT_FAILED, format!("dev PKI: {e}")))?;
        // A gateway that forwards every registry holds no data of its own.
        if !config.forwards_every_registry() {
            done.extend(
                dev::ensure_store(&config)
                    .map_err(|e| Failure::new(EXIT_FAILED, format!("dev store: {e:#}")))?,
            );
        }
        for line in done {
            tracing::info!("dev config: {line}");
        }
    }
    config
        .check_files()
        .map_err(|e| Failure::new(EXIT_CONFIG, e))?;
    let rt = runtime()?;
    rt.block_on(async move {
        ignore_file_size_signal();
        let agencies = config.agencies.len();
        let trust_domain = config.trust_domain.clone();
        let signal = server::termination_signal();
        let running = server::start(config)
            .await
            .map_err(|e| Failure::new(EXIT_FAILED, e))?;
        if let Some(admin) = running.admin_addr {
            tracing::info!(
                admin = %admin,
                "admin listener (plain HTTP): /metrics, /readyz, /livez"
            );
        }
        // Before the line supervisors wait for: a SIGHUP right after it
        // must find the handler.
        reload_on_hangup(&running);
        tracing::info!(
            addr = %running.addr,
            %trust_domain,
            agencies,
            "serving (mutual TLS; health and reflection on the same port)"
        );
        // Supervisors and scripts wait for this line: no buffering delay.
        log.flush();
        let stop = running.shutdown_handle();
        tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down: no new connections; finishing calls in flight");
            // The one stop signal: readiness and health turn at once, then
            // the drain (server.rs).
            let _ = stop.send(true);
        });

        running
            .wait()
            .await
            .map_err(|e| Failure::new(EXIT_FAILED, e))?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Reloads the config on every SIGHUP ([`server::reload`]; a config that
/// does not validate is refused and logged, the old one stays in force).
fn reload_on_hangup(running: &server::Running) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let live = running.live();
        let metrics = running.metrics();
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the config");
                        let live = std::sync::Arc::clone(&live);
                        let metrics = metrics.clone();
                        // Reading files and building verifiers blocks.
                        let _ = tokio::task::spawn_blocking(move || {
                            server::reload(&live, metrics.as_deref())
                        })
                        .await;
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; config reload is off"),
        }
    }
    #[cfg(not(unix))]
    let _ = running;
}

/// With a file-size limit (`ulimit -f`) the kernel sends SIGXFSZ on a write
/// past it, which would kill the process. Catching it turns the limit into a
/// plain write error, which the access log handles by failing closed.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        const SIGXFSZ: i32 = 25;
        if let Ok(mut sig) = signal(SignalKind::from_raw(SIGXFSZ)) {
            tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    tracing::warn!("file size limit reached (SIGXFSZ)");
                }
            });
        }
    }
}
