//! The verification budget: it keeps `VerifyCitizen` from being an oracle.
//!
//! A verification *fails* when it is answered with `match = false` or when
//! the personal id is not in the registry (NOT_FOUND tells a prober that the
//! id does not exist, so it is a guess too). Each failure is counted against
//! the calling agency twice:
//!
//! - per personal id: at most `verify_failures_per_subject` within the
//!   sliding `verify_window`;
//! - over all personal ids: at most `verify_failures_per_agency_hour` within
//!   the sliding last hour, so a sweep of one or two guesses per subject is
//!   bounded too.
//!
//! Successful verifications cost nothing. Once a count is used up, further
//! calls are refused *before the registry is read* (also those that would
//! have matched: otherwise the refusal itself would be the oracle), with
//! RESOURCE_EXHAUSTED, reason `VERIFICATION_LIMIT` and a `RetryInfo` for when
//! the oldest counted failure leaves its window.
//!
//! A call takes a [`Reservation`] before reading the registry; reservations
//! count against both limits until they settle, so concurrent guesses cannot
//! overrun a budget. A reservation dropped without [`Reservation::fail`]
//! (a match, an invalid request, an unavailable store) costs nothing.
//!
//! Memory: only failures within their window are held; idle entries are
//! swept every minute; at most [`MAX_TRACKED_SUBJECTS`] (agency, personal
//! id) pairs are tracked, and past that, verifications of untracked ids are
//! refused (scope `gateway`) until entries expire: the budget fails closed.
//!
//! Persistence: each failure is a row in `verify-budget.sqlite` (see
//! [`persist`]) before its answer leaves; on start the rows within the
//! window are loaded, so a restart does not reset a budget. Instances that
//! share the data folder read each other's failures when they start; while
//! running, each counts its own.

pub mod persist;

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use persist::{BudgetError, FailureKind, FailureRow};

use crate::{
    clock::Clock,
    config::Limits,
    error::{reason, RequestError},
};

/// Most (agency, personal id) pairs tracked at once. Each is held only while
/// it has failures in the window; the agency ceiling bounds how fast one
/// agency can add them (at the defaults, 2,400 a day).
pub const MAX_TRACKED_SUBJECTS: usize = 200_000;
const HOUR_MS: i64 = 3600 * 1000;
const SWEEP_EVERY_MS: i64 = 60 * 1000;
/// Retry hint when a refusal is due to calls still in flight, or to the
/// tracking cap.
const RETRY_SOON: Duration = Duration::from_secs(60);

/// Which limit refused a call (`ErrorInfo.metadata["scope"]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// This agency's failures for this personal id.
    Subject,
    /// This agency's failures over all personal ids in the last hour.
    Agency,
    /// The gateway tracks as many (agency, personal id) pairs as it may.
    Gateway,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Subject => "subject",
            Scope::Agency => "agency",
            Scope::Gateway => "gateway",
        }
    }
}

/// A call the budget refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub scope: Scope,
    /// The limit reached (failures), 0 for [`Scope::Gateway`].
    pub limit: u32,
    pub window: Duration,
    /// When a slot frees.
    pub retry_after: Duration,
}

impl From<Refusal> for RequestError {
    fn from(r: Refusal) -> Self {
        let hours = r.window.as_secs() / 3600;
        let wait = format_wait(r.retry_after);
        let message = match r.scope {
            Scope::Subject => format!(
                "VerifyCitizen refused: your agency has used its {} failed verifications of this personal id for {hours} h; check the declared data with the applicant; the next verification of this id is possible in {wait}",
                r.limit
            ),
            Scope::Agency => format!(
                "VerifyCitizen refused: your agency has used its {} failed verifications for this hour, over all personal ids; the next verification is possible in {wait}",
                r.limit
            ),
            Scope::Gateway => format!(
                "VerifyCitizen refused: the gateway is tracking as many failed verifications as it may; retry in {wait}"
            ),
        };
        RequestError::ResourceExhausted {
            reason: reason::VERIFICATION_LIMIT,
            message,
            metadata: vec![
                ("scope".into(), r.scope.as_str().into()),
                ("limit".into(), r.limit.to_string()),
                ("window_seconds".into(), r.window.as_secs().to_string()),
            ],
            retry_after: r.retry_after,
        }
    }
}

fn format_wait(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// Failures within one window, and calls in flight that may add to them.
#[derive(Debug, Default)]
struct Window {
    /// Failure times (Unix ms), oldest first.
    failures: VecDeque<i64>,
    pending: u32,
}

impl Window {
    /// Drops failures at or before `cutoff_ms`.
    fn expire(&mut self, cutoff_ms: i64) {
        while self.failures.front().is_some_and(|&t| t <= cutoff_ms) {
            self.failures.pop_front();
        }
    }

    fn is_idle(&self) -> bool {
        self.failures.is_empty() && self.pending == 0
    }

    /// `None` while a slot is free; otherwise how long until one frees.
    fn full(&self, limit: u32, window_ms: i64, now_ms: i64) -> Option<Duration> {
        let used = self.failures.len() + self.pending as usize;
        if used < limit as usize {
            return None;
        }
        // Failures leave oldest first: the one whose leaving brings the count
        // below the limit.
        let Some(&at) = self.failures.get(used - limit as usize) else {
            return Some(RETRY_SOON);
        };
        let ms = (at + window_ms - now_ms).max(0) as u64;
        // Whole seconds, rounded up: retrying at the hint must succeed.
        Some(Duration::from_secs(ms.div_ceil(1000).max(1)))
    }
}

#[derive(Debug, Default)]
struct State {
    subjects: HashMap<(String, String), Window>,
    agencies: HashMap<String, Window>,
    next_sweep_ms: i64,
    next_prune_ms: i64,
}

/// Failed-verification counts per agency and per (agency, personal id).
pub struct VerifyBudget {
    per_subject: u32,
    window_ms: i64,
    per_agency_hour: u32,
    /// [`MAX_TRACKED_SUBJECTS`], smaller in tests.
    max_tracked: usize,
    clock: Arc<dyn Clock>,
    // A std Mutex: held for map updates only, never across an await.
    state: Mutex<State>,
    store: persist::FailureStore,
}

impl std::fmt::Debug for VerifyBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyBudget")
            .field("per_subject", &self.per_subject)
            .field("window_ms", &self.window_ms)
            .field("per_agency_hour", &self.per_agency_hour)
            .finish_non_exhaustive()
    }
}

impl VerifyBudget {
    /// Opens the budget's file at `path` and loads the failures still
    /// within their windows.
    pub fn open(path: &Path, limits: &Limits, clock: Arc<dyn Clock>) -> Result<Self, BudgetError> {
        let now = clock.now_unix_ms();
        let store = persist::FailureStore::open(path, now)?;
        let window_ms = i64::try_from(limits.verify_window.as_millis()).unwrap_or(i64::MAX);
        let budget = VerifyBudget {
            per_subject: limits.verify_failures_per_subject.get(),
            window_ms,
            per_agency_hour: limits.verify_failures_per_agency_hour.get(),
            max_tracked: MAX_TRACKED_SUBJECTS,
            clock,
            state: Mutex::default(),
            store: store.clone(),
        };
        let rows = store.since(now - window_ms.max(HOUR_MS))?;
        {
            let mut st = budget.lock();
            for row in rows {
                budget.count(&mut st, row.agency, row.subject, row.at_ms, now);
            }
            st.next_sweep_ms = now + SWEEP_EVERY_MS;
            st.next_prune_ms = now + HOUR_MS;
        }
        Ok(budget)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one failure at `at_ms` (within its windows as seen at `now_ms`).
    fn count(&self, st: &mut State, agency: String, subject: String, at_ms: i64, now_ms: i64) {
        if at_ms > now_ms - HOUR_MS {
            st.agencies
                .entry(agency.clone())
                .or_default()
                .failures
                .push_back(at_ms);
        }
        let key = (agency, subject);
        if at_ms > now_ms - self.window_ms
            && (st.subjects.contains_key(&key) || st.subjects.len() < self.max_tracked)
        {
            st.subjects
                .entry(key)
                .or_default()
                .failures
                .push_back(at_ms);
        }
    }

    /// Takes a slot for one verification of `subject` by `agency`, or says
    /// why not. Call before the registry is read.
    pub fn reserve(&self, agency: &str, subject: &str) -> Result<Reservation<'_>, Refusal> {
        let now = self.clock.now_unix_ms();
        let mut guard = self.lock();
        let st = &mut *guard;
        if now >= st.next_sweep_ms {
            let (window_ms, subject_cut) = (self.window_ms, now - self.window_ms);
            st.subjects.retain(|_, w| {
                w.expire(subject_cut);
                !w.is_idle()
            });
            st.agencies.retain(|_, w| {
                w.expire(now - HOUR_MS);
                !w.is_idle()
            });
            st.next_sweep_ms = now + SWEEP_EVERY_MS.min(window_ms);
        }
        let key = (agency.to_owned(), subject.to_owned());
        let refusal = |scope, limit, window_ms: i64, retry_after| Refusal {
            scope,
            limit,
            window: Duration::from_millis(window_ms as u64),
            retry_after,
        };
        if let Some(w) = st.subjects.get_mut(&key) {
            w.expire(now - self.window_ms);
            if let Some(retry) = w.full(self.per_subject, self.window_ms, now) {
                return Err(refusal(
                    Scope::Subject,
                    self.per_subject,
                    self.window_ms,
                    retry,
                ));
            }
        } else if st.subjects.len() >= self.max_tracked {
            return Err(refusal(Scope::Gateway, 0, self.window_ms, RETRY_SOON));
        }
        let a = st.agencies.entry(key.0.clone()).or_default();
        a.expire(now - HOUR_MS);
        if let Some(retry) = a.full(self.per_agency_hour, HOUR_MS, now) {
            return Err(refusal(Scope::Agency, self.per_agency_hour, HOUR_MS, retry));
        }
        a.pending += 1;
        st.subjects.entry(key.clone()).or_default().pending += 1;
        Ok(Reservation {
            budget: self,
            key,
            settled: false,
        })
    }

    /// Gives back a slot taken by `reserve`, counting a failure at `failed_at`.
    fn settle(&self, key: &(String, String), failed_at: Option<i64>) {
        let mut st = self.lock();
        if let Some(a) = st.agencies.get_mut(&key.0) {
            a.pending = a.pending.saturating_sub(1);
            if let Some(t) = failed_at {
                a.failures.push_back(t);
            }
        }
        if let Some(s) = st.subjects.get_mut(key) {
            s.pending = s.pending.saturating_sub(1);
            if let Some(t) = failed_at {
                s.failures.push_back(t);
            }
        }
    }
}

/// A slot taken for one verification in flight. Dropping it without
/// [`fail`](Reservation::fail) gives the slot back at no cost.
#[must_use = "a reservation is given back when dropped"]
pub struct Reservation<'a> {
    budget: &'a VerifyBudget,
    key: (String, String),
    settled: bool,
}

impl Reservation<'_> {
    /// Counts this verification as failed, in memory and in the budget's
    /// file. An error means the failure is counted here but may not survive
    /// a restart: the caller should not give out the answer.
    pub async fn fail(mut self, kind: FailureKind) -> Result<(), BudgetError> {
        let budget = self.budget;
        let now = budget.clock.now_unix_ms();
        budget.settle(&self.key, Some(now));
        self.settled = true;
        let prune = {
            let mut st = budget.lock();
            (now >= st.next_prune_ms).then(|| {
                st.next_prune_ms = now + HOUR_MS;
                persist::keep_cutoff(now)
            })
        };
        let (agency, subject) = std::mem::take(&mut self.key);
        budget
            .store
            .insert(
                FailureRow {
                    agency,
                    subject,
                    kind,
                    at_ms: now,
                },
                prune,
            )
            .await
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.budget.settle(&self.key, None);
        }
    }
}

#[cfg(test)]
mod tests;
