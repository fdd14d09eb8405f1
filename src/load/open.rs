//! The open model's engine: requests due at a constant rate whatever the
//! server does, each measured from its due time (no coordinated omission),
//! at a cost per request close to the closed model's.
//!
//! Two parts share the schedule `due(k) = start + k / rate`:
//!
//! - **The timekeeper**, a thread of its own: tokio's timer wakes on
//!   millisecond ticks, and every microsecond a request is sent late is
//!   charged to the server. It sleeps until the next due time, then
//!   *releases* every request due by now (one counter, `released`) and
//!   wakes the dispatchers that own them. It wakes at most once a
//!   [`QUANTUM`], so a high rate costs it no more wake-ups than a low one;
//!   a request is released at most a quantum (plus the kernel's timer slack)
//!   after it is due.
//! - **Dispatchers**, one tokio task per connection (at least one per runtime
//!   worker), dispatcher `j` owning the requests `k ≡ j (mod n)`. Woken,
//!   it sends every released request of its share in one go, so they leave
//!   in one write on its connection, and keeps them in flight in a
//!   `FuturesUnordered` of its own: no task spawned per request, no lock,
//!   no wake-up crossing threads per request. Each holds its share of
//!   `--max-in-flight`; at its share, sending waits for an answer (and the
//!   wait counts in latency, as before).
//!
//! What the generator adds itself is measured: each dispatcher records how
//! late it handed each request over (`send_lag_ms`), and the rate it kept
//! (`sent_rps`), so a run where the generator fell behind says so.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use tokio::{sync::Notify, time::Instant};

use super::{stats, workload::Rng, Run, Stop, MAX_IN_FLIGHT};

/// Shortest time between two wake-ups of the timekeeper: the most a request
/// is sent after its due time because of batching.
pub const QUANTUM: Duration = Duration::from_micros(200);
/// Longest sleep of the timekeeper, so that a stop is seen even at low rates.
const LONGEST_SLEEP: Duration = Duration::from_millis(50);

/// What the dispatchers measured of the generator itself.
#[derive(Default)]
pub(super) struct Pacing {
    /// How late measured requests were handed over, in microseconds.
    pub(super) lag: Option<Histogram<u64>>,
    /// Measured requests sent.
    pub(super) sent: u64,
    /// When the last measured request was sent.
    pub(super) last_send: Option<Instant>,
}

impl Pacing {
    fn merge(&mut self, other: Pacing) {
        self.sent += other.sent;
        self.last_send = self.last_send.max(other.last_send);
        match (&mut self.lag, other.lag) {
            (Some(mine), Some(theirs)) => {
                let _ = mine.add(&theirs);
            }
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

/// The schedule as the timekeeper and the dispatchers share it.
struct Schedule {
    start: Instant,
    interval: Duration,
    /// Requests `0..released` are due and may be sent.
    released: AtomicU64,
    /// No request beyond `released` will be released.
    finished: AtomicBool,
    /// One per dispatcher: "requests of yours were released".
    wake: Vec<Notify>,
}

impl Schedule {
    fn due(&self, k: u64) -> Instant {
        self.start + self.interval.mul_f64(k as f64)
    }

    /// How many requests are due by `now`.
    fn due_by(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let mut n = (elapsed / self.interval.as_secs_f64()) as u64 + 1;
        // Exactly as `due` rounds, whatever the division said.
        while self.due(n) <= now {
            n += 1;
        }
        while n > 0 && self.due(n - 1) > now {
            n -= 1;
        }
        n
    }

    fn wake_owners(&self, from: u64, to: u64) {
        let n = self.wake.len() as u64;
        if to - from >= n {
            self.wake.iter().for_each(Notify::notify_one);
        } else {
            (from..to).for_each(|k| self.wake[(k % n) as usize].notify_one());
        }
    }

    fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.wake.iter().for_each(Notify::notify_one);
    }
}

/// Runs the open model at `rate` with at most `max_in_flight` requests
/// outstanding, and returns what it measured of its own pacing.
pub(super) async fn run(run: &Arc<Run>, rate: f64, max_in_flight: usize) -> Pacing {
    let max_in_flight = max_in_flight.clamp(1, MAX_IN_FLIGHT);
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let dispatchers = run.plan.connections.max(workers).clamp(1, max_in_flight);
    let schedule = Arc::new(Schedule {
        // The schedule starts with the run, not when the timekeeper gets a
        // core: on a busy machine that may be milliseconds later, and the
        // requests due meanwhile are sent late (and charged for it), not
        // dropped from the measured window.
        start: run
            .measure_from
            .checked_sub(run.plan.warmup)
            .unwrap_or(run.measure_from),
        interval: Duration::from_secs_f64(1.0 / rate),
        released: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        wake: (0..dispatchers).map(|_| Notify::new()).collect(),
    });
    // A timed run ends with the last request due before its end.
    let end = match run.plan.stop {
        Stop::After(d) => Some(schedule.due_by(run.measure_from + d - Duration::from_nanos(1))),
        Stop::Requests(_) => None,
    };
    let timekeeper = {
        let (run, schedule) = (Arc::clone(run), Arc::clone(&schedule));
        tokio::task::spawn_blocking(move || keep_time(&run, &schedule, end))
    };
    let mut tasks = Vec::with_capacity(dispatchers);
    for j in 0..dispatchers {
        let share = max_in_flight / dispatchers + usize::from(j < max_in_flight % dispatchers);
        let (run, schedule) = (Arc::clone(run), Arc::clone(&schedule));
        tasks.push(tokio::spawn(async move {
            dispatch(&run, &schedule, j, share).await
        }));
    }
    let mut pacing = Pacing::default();
    for t in tasks {
        if let Ok(p) = t.await {
            pacing.merge(p);
        }
    }
    let _ = timekeeper.await;
    pacing
}

/// The timekeeper's loop: releases requests as they come due, until the
/// schedule ends (`end`, for a timed run) or the run stops.
fn keep_time(run: &Run, schedule: &Schedule, end: Option<u64>) {
    let mut released = 0;
    loop {
        if run.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = std::time::Instant::now();
        let due = schedule.due_by(Instant::from_std(now));
        let due = end.map_or(due, |e| due.min(e));
        if due > released {
            schedule.released.store(due, Ordering::Release);
            schedule.wake_owners(released, due);
            released = due;
        }
        if end.is_some_and(|e| released >= e) {
            break;
        }
        let next = schedule.due(released).into_std();
        let until = next.max(now + QUANTUM);
        std::thread::sleep(
            until
                .saturating_duration_since(std::time::Instant::now())
                .min(LONGEST_SLEEP),
        );
    }
    schedule.finish();
}

/// Dispatcher `j` of `n`: sends its share of the released requests, keeps
/// them in flight (at most `share` at once) and records each answer.
async fn dispatch(run: &Run, schedule: &Schedule, j: usize, share: usize) -> Pacing {
    let n = schedule.wake.len() as u64;
    let channel = run.channel(j);
    let mut rng = Rng::new(run.plan.seed ^ (j as u64).wrapping_mul(0x9E37_79B9));
    let mut lag = stats::new_histogram();
    let mut pacing = Pacing::default();
    let mut in_flight = FuturesUnordered::new();
    let mut k = j as u64;
    let mut done = false;
    loop {
        // Everything of ours already due, in one go (up to our share of
        // slots); what does not fit waits for answers, late and charged.
        while !done && in_flight.len() < share && k < schedule.released.load(Ordering::Acquire) {
            let due = schedule.due(k);
            let Some(measured) = run.admit_due(due) else {
                done = true;
                break;
            };
            let call = run.workload.next(&mut rng);
            if measured {
                let now = Instant::now();
                lag.saturating_record(stats::micros(now.saturating_duration_since(due)));
                pacing.sent += 1;
                pacing.last_send = Some(now);
            }
            let i = k as usize;
            let fut = async move {
                let status = run.send(channel, call).await;
                (i, measured, due, status)
            };
            in_flight.push(fut);
            k += n;
        }
        if !done
            && schedule.finished.load(Ordering::Acquire)
            && k >= schedule.released.load(Ordering::Acquire)
        {
            done = true;
        }
        if done && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            // The answers first: that poll also sends what was just pushed.
            biased;
            Some((i, measured, due, status)) = in_flight.next(), if !in_flight.is_empty() => {
                run.finish(i, measured, due, status);
                // Every answer already in, before looking at the schedule.
                while let Some(Some((i, measured, due, status))) =
                    futures_util::FutureExt::now_or_never(in_flight.next())
                {
                    run.finish(i, measured, due, status);
                }
            }
            _ = schedule.wake[j].notified(), if !done => {}
        }
    }
    pacing.lag = Some(lag);
    pacing
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn schedule(rate: f64, dispatchers: usize) -> Schedule {
        Schedule {
            start: Instant::now(),
            interval: Duration::from_secs_f64(1.0 / rate),
            released: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            wake: (0..dispatchers).map(|_| Notify::new()).collect(),
        }
    }

    #[test]
    fn due_by_counts_exactly_the_requests_whose_due_time_has_come() {
        for rate in [3.0, 200.0, 7_777.7, 100_000.0] {
            let s = schedule(rate, 1);
            assert_eq!(s.due_by(s.start), 1, "request 0 is due at the start");
            for k in [1u64, 2, 10, 999, 123_456] {
                let due = s.due(k);
                assert_eq!(s.due_by(due), k + 1, "rate {rate}, k {k}");
                assert_eq!(
                    s.due_by(due - Duration::from_nanos(1)),
                    k,
                    "rate {rate}, k {k}"
                );
            }
        }
    }

    #[test]
    fn released_requests_wake_only_their_owners() {
        let s = schedule(1000.0, 4);
        let woken = |s: &Schedule| {
            (0..4)
                .map(|j| s.wake[j].notified().now_or_never().is_some())
                .collect::<Vec<_>>()
        };
        s.wake_owners(5, 7);
        assert_eq!(woken(&s), [false, true, true, false]);
        s.wake_owners(7, 11);
        assert_eq!(woken(&s), [true; 4]);
        s.finish();
        assert_eq!(woken(&s), [true; 4]);
        assert!(s.finished.load(Ordering::Acquire));
    }

    #[test]
    fn pacing_merges_counts_last_sends_and_lags() {
        let t = Instant::now();
        let one = |sent, after_ms, lag_us| {
            let mut lag = stats::new_histogram();
            lag.saturating_record(lag_us);
            Pacing {
                lag: Some(lag),
                sent,
                last_send: Some(t + Duration::from_millis(after_ms)),
            }
        };
        let mut p = Pacing::default();
        p.merge(one(3, 20, 100));
        p.merge(one(4, 10, 300));
        p.merge(Pacing::default());
        assert_eq!(p.sent, 7);
        assert_eq!(p.last_send, Some(t + Duration::from_millis(20)));
        let lag = p.lag.expect("merged lags");
        assert_eq!(lag.len(), 2);
        assert!(lag.max() >= 300);
    }
}
