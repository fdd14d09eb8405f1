//! Fairness under load: each agency's share of the gateway (a token bucket
//! of `rate_per_second` and `burst`, and `max_in_flight` calls at once), and
//! the gateway-wide bounds on every call ([`layers`]: calls in flight, request
//! size, deadline).
//!
//! The configured values are read per call from the config the call uses;
//! the runtime state (buckets, counts) lives here, keyed by agency code, and
//! outlives any one config: a changed rate applies to an agency's bucket the
//! next time it is used. Only configured agencies reach [`AgencyLimiter`]
//! (identity comes first), so its map is bounded by the config.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::{
    config::{AgencyLimits, Rate},
    error::{reason, RequestError},
};

pub mod layers;

/// What a caller over `max_in_flight` is told to wait: a call takes a few
/// milliseconds, so a slot is usually free again well within this.
pub const IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_millis(50);

const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// A token bucket: `tokens` as of `at`, refilled at the rate given on each
/// use (so a new rate applies from the next call, without losing state).
#[derive(Clone, Debug, Default)]
pub struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    /// Takes one token at `now`, or says how long until one is there.
    /// A bucket starts full; it never holds more than `rate.burst`.
    pub fn take(&mut self, now: Instant, rate: Rate) -> Result<(), Duration> {
        let burst = f64::from(rate.burst.max(1));
        let tokens = match self.at {
            None => burst,
            Some(at) => {
                let refill = now.saturating_duration_since(at).as_secs_f64() * rate.per_second;
                (self.tokens + refill).min(burst)
            }
        };
        // Time never runs backwards for the bucket.
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
        if tokens >= 1.0 {
            self.tokens = tokens - 1.0;
            Ok(())
        } else {
            self.tokens = tokens;
            let wait = (1.0 - tokens) / rate.per_second;
            // At least a millisecond: RetryInfo is read in milliseconds. The
            // config bounds the rate; a wait past any duration is a year.
            let wait = Duration::try_from_secs_f64(wait).unwrap_or(YEAR).min(YEAR);
            Err(wait.max(Duration::from_millis(1)))
        }
    }
}

/// One agency's runtime state.
#[derive(Debug, Default)]
struct AgencyState {
    /// A std `Mutex`: held for a few arithmetic operations, never across
    /// an `.await`.
    bucket: Mutex<Bucket>,
    in_flight: Arc<AtomicUsize>,
}

/// The runtime state of every agency's limits.
#[derive(Debug, Default)]
pub struct AgencyLimiter {
    agencies: Mutex<HashMap<String, Arc<AgencyState>>>,
}

/// One call counted in its agency's `max_in_flight` until dropped.
#[derive(Debug)]
pub struct InFlight(Option<Arc<AtomicUsize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = &self.0 {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counts and buckets only: a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AgencyLimiter {
    fn state(&self, agency: &str) -> Arc<AgencyState> {
        let mut map = lock(&self.agencies);
        match map.get(agency) {
            Some(s) => Arc::clone(s),
            None => {
                let s = Arc::new(AgencyState::default());
                map.insert(agency.to_owned(), Arc::clone(&s));
                s
            }
        }
    }

    /// Admits one call of `agency` under `limits` (its configured share, as
    /// the call's config has it): a slot among its calls in flight, then a
    /// token. The slot is held until the returned guard drops; a refused
    /// call takes neither.
    pub fn admit(
        &self,
        agency: &str,
        limits: &AgencyLimits,
        now: Instant,
    ) -> Result<InFlight, RequestError> {
        if limits.rate.is_none() && limits.max_in_flight.is_none() {
            return Ok(InFlight(None));
        }
        let state = self.state(agency);
        let slot = match limits.max_in_flight {
            None => InFlight(None),
            Some(max) => {
                let before = state.in_flight.fetch_add(1, Ordering::AcqRel);
                let slot = InFlight(Some(Arc::clone(&state.in_flight)));
                if before >= max {
                    drop(slot);
                    return Err(RequestError::ResourceExhausted {
                        reason: reason::TOO_MANY_IN_FLIGHT,
                        message: format!(
                            "agency {agency} already has {max} calls in progress (its max_in_flight); wait for answers before sending more, or retry after the delay given"
                        ),
                        metadata: vec![
                            ("agency".into(), agency.to_owned()),
                            ("max_in_flight".into(), max.to_string()),
                        ],
                        retry_after: IN_FLIGHT_RETRY_AFTER,
                    });
                }
                slot
            }
        };
        if let Some(rate) = limits.rate {
            if let Err(wait) = lock(&state.bucket).take(now, rate) {
                return Err(RequestError::ResourceExhausted {
                    reason: reason::RATE_LIMITED,
                    message: format!(
                        "agency {agency} is over its rate of {} calls per second (burst {}); retry after the delay given",
                        rate.per_second, rate.burst
                    ),
                    metadata: vec![
                        ("agency".into(), agency.to_owned()),
                        ("rate_per_second".into(), rate.per_second.to_string()),
                    ],
                    retry_after: wait,
                });
            }
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests;
