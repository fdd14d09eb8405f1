//! The load generator behind `interop-gateway load`: drives a gateway (or any
//! server of the same protos) with a workload ([`workload`]) in a closed or an
//! open model, records latencies ([`stats`]) and draws them ([`plot`]).
//!
//! Closed model: `concurrency` callers, each sending its next request when
//! the previous answer arrives, spread over `connections` HTTP/2 connections.
//! Open model: requests are due at a constant rate whatever the server does;
//! latency runs from each request's intended send time, so a stalled server
//! is charged for the requests it kept from being sent (no coordinated
//! omission).

mod open;
pub mod plot;
pub mod stats;
pub mod workload;

use std::{
    io::{IsTerminal, Write},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::time::Instant;
use tonic::transport::Channel;

use crate::{
    client::{endpoint, error_chain, AgencyIdentity, Client},
    error::code_name,
    proto::{
        business::v1::business_registry_service_client::BusinessRegistryServiceClient,
        citizen::v1::citizen_registry_service_client::CitizenRegistryServiceClient,
        land::v1::land_registry_service_client::LandRegistryServiceClient,
    },
};
use stats::{Recorder, Summary};
use workload::{Call, Rng, Workload};

/// How requests are issued.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Model {
    Closed { concurrency: usize },
    Open { rate: f64, max_in_flight: usize },
}

/// When the measured part of a run ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    After(Duration),
    Requests(u64),
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Plan {
    pub target: String,
    pub label: String,
    pub model: Model,
    pub stop: Stop,
    pub warmup: Duration,
    pub connections: usize,
    pub new_connection_per_request: bool,
    pub timeout: Duration,
    pub seed: u64,
    /// Print a live progress line to stderr (only when it is a terminal).
    pub progress: bool,
    /// Send a request refused with a `google.rpc.RetryInfo` again after its
    /// delay, as a well-behaved client would, while its deadline allows.
    pub respect_retry_info: bool,
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Connect(String),
    #[error("cannot watch for Ctrl-C: {0}")]
    Signal(String),
}

/// Shared state of a run.
struct Run {
    workload: Workload,
    plan: Plan,
    identity: AgencyIdentity,
    channels: Vec<Channel>,
    recorder: Recorder,
    /// Measured requests handed out (for `Stop::Requests`).
    tickets: AtomicU64,
    stop: AtomicBool,
    measure_from: Instant,
    /// Time of the last measured answer, as nanoseconds after `measure_from`.
    last_answer_ns: AtomicU64,
    /// Requests sent again after a RetryInfo delay.
    retries: AtomicU64,
    /// Draws of [`jittered`], one per RetryInfo refusal.
    jitter_draws: AtomicU64,
}

impl Run {
    /// Whether a request starting (or due) at `t` is measured, and whether
    /// the run is over. `None` means stop issuing.
    fn admit(&self, t: Instant) -> Option<bool> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        if t < self.measure_from {
            return Some(false);
        }
        match self.plan.stop {
            Stop::After(d) => {
                if t >= self.measure_from + d {
                    self.stop.store(true, Ordering::Relaxed);
                    None
                } else {
                    Some(true)
                }
            }
            Stop::Requests(n) => {
                if self.tickets.fetch_add(1, Ordering::Relaxed) < n {
                    Some(true)
                } else {
                    self.stop.store(true, Ordering::Relaxed);
                    None
                }
            }
        }
    }

    /// [`Run::admit`] for a request of the open model's schedule, which ends
    /// by itself at the end of a timed run (see [`open`]): whether the
    /// request due at `due` is measured; `None` once the run is stopped (by
    /// a signal, or the last ticket of `Stop::Requests` handed out).
    fn admit_due(&self, due: Instant) -> Option<bool> {
        match self.plan.stop {
            Stop::After(_) if self.stop.load(Ordering::Relaxed) => None,
            Stop::After(_) => Some(due >= self.measure_from),
            Stop::Requests(_) => self.admit(due),
        }
    }

    /// Sends one request on `channel` (or on a new connection), again after
    /// each RetryInfo delay when the plan says so and its deadline allows,
    /// and returns the status name of its outcome.
    async fn send(&self, channel: Option<&Channel>, call: Call) -> &'static str {
        let deadline = Instant::now() + self.plan.timeout;
        if !self.plan.respect_retry_info {
            // Sent once: the request needs no copy kept for a resend.
            return match self.send_once(channel, call, deadline).await {
                Ok(()) => "OK",
                Err(status) => code_name(status.code()),
            };
        }
        loop {
            let status = match self.send_once(channel, call.clone(), deadline).await {
                Ok(()) => return "OK",
                Err(status) => status,
            };
            // A draw of its own per refusal: two tasks refused at once on
            // two threads never share one.
            let delay = retry_delay(&status)
                .map(|d| jittered(d, self.jitter_draws.fetch_add(1, Ordering::Relaxed)));
            match delay.filter(|d| Instant::now() + *d < deadline) {
                // Within its deadline whatever else happens: a run that has
                // issued its last request still waits for those in flight.
                Some(delay) => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                }
                None => return code_name(status.code()),
            }
        }
    }

    async fn send_once(
        &self,
        channel: Option<&Channel>,
        call: Call,
        deadline: Instant,
    ) -> Result<(), tonic::Status> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let outcome = tokio::time::timeout(timeout, async move {
            let channel = match channel {
                Some(c) => c.clone(),
                // A new endpoint has its own TLS client config and so no
                // session to resume: every request pays a full handshake
                // (inside the request's deadline).
                None => match endpoint(&self.plan.target, &self.identity) {
                    Ok(ep) => ep
                        .connect()
                        .await
                        .map_err(|_| tonic::Status::unavailable("connect failed"))?,
                    Err(e) => return Err(tonic::Status::invalid_argument(e.to_string())),
                },
            };
            // Only the stub the call needs: a channel clone per stub is
            // work on every request.
            macro_rules! go {
                ($stub:ident, $method:ident, $req:expr) => {{
                    let mut request = tonic::Request::new($req);
                    request.set_timeout(timeout);
                    $stub::new(channel).$method(request).await.map(|_| ())
                }};
            }
            match call {
                Call::GetCitizen(r) => go!(CitizenRegistryServiceClient, get_citizen, r),
                Call::VerifyCitizen(r) => go!(CitizenRegistryServiceClient, verify_citizen, r),
                Call::GetParcel(r) => go!(LandRegistryServiceClient, get_parcel, r),
                Call::ListParcelsByHolder(r) => {
                    go!(LandRegistryServiceClient, list_parcels_by_holder, r)
                }
                Call::GetEnterprise(r) => go!(BusinessRegistryServiceClient, get_enterprise, r),
            }
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer in time")),
        }
    }

    fn finish(&self, hint: usize, measured: bool, from: Instant, status: &'static str) {
        if !measured {
            return;
        }
        let now = Instant::now();
        self.recorder.record(hint, now - from, status);
        let ns = (now - self.measure_from).as_nanos() as u64;
        self.last_answer_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn channel(&self, i: usize) -> Option<&Channel> {
        if self.plan.new_connection_per_request {
            None
        } else {
            self.channels.get(i % self.channels.len())
        }
    }
}

/// The `google.rpc.RetryInfo` delay of a refusal, if it carries one.
/// `delay` stretched by a factor in [1, 1.5) that differs from one resend
/// to the next (a hash of `n`): every caller refused at one moment is told
/// the same delay, and resending all at once at its end would be refused
/// again together.
fn jittered(delay: Duration, n: u64) -> Duration {
    // splitmix64's finaliser: well spread for consecutive n.
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    delay.mul_f64(1.0 + unit / 2.0)
}

fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
}

/// Most requests in flight the open model allows, and most callers of the
/// closed model.
pub const MAX_IN_FLIGHT: usize = 1_000_000;
/// Longest duration `parse_duration` accepts (a year), so that deadlines
/// computed from it cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Runs a plan against its target and returns the summary.
pub async fn run(
    plan: Plan,
    identity: AgencyIdentity,
    workload: Workload,
) -> Result<Summary, LoadError> {
    // Connect first (and fail early with the reason): one HTTP/2 connection each.
    let mut channels = Vec::new();
    let wanted = if plan.new_connection_per_request {
        1
    } else {
        plan.connections.max(1)
    };
    for _ in 0..wanted {
        let client = Client::connect(&plan.target, &identity)
            .await
            .map_err(|e| LoadError::Connect(error_chain(&e)))?;
        channels.push(client.channel);
    }
    if plan.new_connection_per_request {
        channels.clear();
    }
    let measure_from = Instant::now() + plan.warmup;
    let run = Arc::new(Run {
        workload,
        identity,
        channels,
        recorder: Recorder::default(),
        tickets: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        measure_from,
        last_answer_ns: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        jitter_draws: AtomicU64::new(0),
        plan,
    });
    // Ctrl-C or SIGTERM ends the run early with the summary of what was
    // measured, as an operator stopping a long run expects.
    let interrupted = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = interruption()?;
        let run = Arc::clone(&run);
        let interrupted = Arc::clone(&interrupted);
        tokio::spawn(async move {
            stop.await;
            interrupted.store(true, Ordering::Relaxed);
            run.stop.store(true, Ordering::Relaxed);
        })
    };
    if run.plan.progress {
        eprintln!(
            "load: {} to {} ({}); Ctrl-C stops early with a summary",
            run.workload.mix,
            run.plan.target,
            match run.plan.model {
                Model::Closed { concurrency } => format!("closed model, {concurrency} in flight"),
                Model::Open { rate, .. } => format!("open model, {rate} req/s"),
            }
        );
    }
    let progress = (run.plan.progress && std::io::stderr().is_terminal())
        .then(|| tokio::spawn(show_progress(Arc::clone(&run))));

    let pacing = match run.plan.model {
        Model::Closed { concurrency } => {
            closed(&run, concurrency).await;
            None
        }
        Model::Open {
            rate,
            max_in_flight,
        } => Some(open::run(&run, rate, max_in_flight).await),
    };
    run.stop.store(true, Ordering::Relaxed);
    watcher.abort();
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
        eprint!("\r\x1b[K");
    }
    let mut summary = summarise(&run, pacing.as_ref());
    summary.behind_schedule = summary.behind_schedule();
    summary.interrupted = interrupted.load(Ordering::Relaxed);
    Ok(summary)
}

/// Resolves on SIGINT or SIGTERM; the handlers are in place when this returns.
fn interruption() -> Result<impl std::future::Future<Output = ()>, LoadError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let failed = |e: std::io::Error| LoadError::Signal(e.to_string());
        let mut int = signal(SignalKind::interrupt()).map_err(failed)?;
        let mut term = signal(SignalKind::terminate()).map_err(failed)?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

async fn closed(run: &Arc<Run>, concurrency: usize) {
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency.max(1) {
        let run = Arc::clone(run);
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new(run.plan.seed ^ (w as u64).wrapping_mul(0x9E37_79B9));
            loop {
                let start = Instant::now();
                let Some(measured) = run.admit(start) else {
                    break;
                };
                let call = run.workload.next(&mut rng);
                let status = run.send(run.channel(w), call).await;
                run.finish(w, measured, start, status);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}

async fn show_progress(run: Arc<Run>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0u64;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let done = run.recorder.completed();
        let h = run.recorder.snapshot().all;
        let phase = if now < run.measure_from {
            "warm-up".to_owned()
        } else {
            format!("{:.0} s", (now - run.measure_from).as_secs_f64())
        };
        let p99 = if h.is_empty() {
            "-".to_owned()
        } else {
            stats::human_ms(h.value_at_quantile(0.99) as f64 / 1000.0)
        };
        eprint!(
            "\r\x1b[K  {phase}  {done} requests  {} req/s  errors {}  p99 {p99}",
            done - last,
            run.recorder.errors()
        );
        let _ = std::io::stderr().flush();
        last = done;
    }
}

fn summarise(run: &Run, pacing: Option<&open::Pacing>) -> Summary {
    let snap = run.recorder.snapshot();
    let (h, status_counts) = (&snap.all, snap.statuses);
    let requests = h.len();
    let duration_s = Duration::from_nanos(run.last_answer_ns.load(Ordering::Relaxed)).as_secs_f64();
    let per_second = |n: u64| {
        if duration_s > 0.0 {
            n as f64 / duration_s
        } else {
            0.0
        }
    };
    let plan = &run.plan;
    let (model, rate_rps, concurrency) = match plan.model {
        Model::Closed { concurrency } => ("closed", None, Some(concurrency)),
        Model::Open { rate, .. } => ("open", Some(rate), None),
    };
    Summary {
        label: plan.label.clone(),
        target: plan.target.clone(),
        model: model.into(),
        rate_rps,
        concurrency,
        connections: if plan.new_connection_per_request {
            0
        } else {
            plan.connections
        },
        new_connection_per_request: plan.new_connection_per_request,
        mix: run.workload.mix.to_string(),
        distribution: run.workload.distribution.to_string(),
        requests,
        errors: requests - status_counts.get("OK").copied().unwrap_or(0),
        duration_s,
        throughput_rps: per_second(requests),
        goodput_rps: per_second(snap.ok.len()),
        resource_exhausted: status_counts
            .get("RESOURCE_EXHAUSTED")
            .copied()
            .unwrap_or(0),
        unavailable: status_counts.get("UNAVAILABLE").copied().unwrap_or(0),
        latency_ms: stats::latency_ms(h),
        ok_latency_ms: stats::latency_ms(&snap.ok),
        refused_latency_ms: stats::latency_ms(&snap.refused),
        status_counts,
        percentiles: stats::curve(h),
        interrupted: false,
        respect_retry_info: plan.respect_retry_info,
        retries: run.retries.load(Ordering::Relaxed),
        sent_rps: pacing
            .zip(rate_rps)
            .map(|(p, rate)| sent_rate(run, p, rate)),
        send_lag_ms: pacing.and_then(|p| p.lag.as_ref()).map(stats::latency_ms),
        behind_schedule: None,
    }
}

/// Measured requests the open model sent per second: their count over the
/// time from the start of the measured window to the last send, plus one
/// interval (the schedule's own span for that count). On schedule, that is
/// the rate asked; behind it, less.
fn sent_rate(run: &Run, pacing: &open::Pacing, rate: f64) -> f64 {
    let Some(last) = pacing.last_send else {
        return 0.0;
    };
    let span = last
        .saturating_duration_since(run.measure_from)
        .as_secs_f64()
        + 1.0 / rate;
    pacing.sent as f64 / span
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration (for example 30s, 500ms, 2m)");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
    if d > MAX_DURATION {
        return Err(format!("{text:?} is longer than a year"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_wait_at_least_the_delay_given_and_spread_over_half_of_it() {
        let d = Duration::from_millis(100);
        let waits: Vec<Duration> = (0..1000).map(|n| jittered(d, n)).collect();
        assert!(waits.iter().all(|w| *w >= d && *w < d.mul_f64(1.5)));
        // Spread, not a few values: each tenth of the range is used.
        let mut tenths = [0u32; 5];
        for w in &waits {
            tenths[((w.as_secs_f64() / d.as_secs_f64() - 1.0) * 10.0) as usize] += 1;
        }
        assert!(tenths.iter().all(|&n| n > 100), "{tenths:?}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3000000000000000h").is_err());
    }
}
