//! What the load generator measures: latencies in HdrHistograms (sharded so
//! concurrent callers rarely meet on a lock), counts by gRPC status, and the
//! summary made of them (text for people, JSON for machines).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, 1 µs to 10 minutes, 3 significant digits.
const HIGHEST_US: u64 = 600_000_000;
const SHARDS: usize = 16;

/// An empty latency histogram (microseconds, 1 µs to 10 minutes).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants known to be valid.
    Histogram::new_with_bounds(1, HIGHEST_US, 3).unwrap_or_else(|_| unreachable!())
}

struct Shard {
    latencies: Histogram<u64>,
    /// Requests answered OK: what the server got done (goodput).
    ok: Histogram<u64>,
    /// Requests refused for load (RESOURCE_EXHAUSTED, UNAVAILABLE): a
    /// gateway under overload should refuse at once.
    refused: Histogram<u64>,
    statuses: BTreeMap<&'static str, u64>,
}

/// A latency as the histograms record it: whole microseconds, within bounds.
pub fn micros(latency: Duration) -> u64 {
    (latency.as_micros() as u64).clamp(1, HIGHEST_US)
}

/// Whether `status` is a refusal for load, which a well-behaved client
/// retries after a while.
pub fn is_refusal(status: &str) -> bool {
    matches!(status, "RESOURCE_EXHAUSTED" | "UNAVAILABLE")
}

/// The recorder's figures merged over its shards.
pub struct Snapshot {
    pub all: Histogram<u64>,
    pub ok: Histogram<u64>,
    pub refused: Histogram<u64>,
    pub statuses: BTreeMap<String, u64>,
}

/// Collects the outcome of every measured request.
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
    completed: AtomicU64,
    errors: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        latencies: new_histogram(),
                        ok: new_histogram(),
                        refused: new_histogram(),
                        statuses: BTreeMap::new(),
                    })
                })
                .collect(),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

impl Recorder {
    /// Records one request: `hint` spreads callers over the shards.
    pub fn record(&self, hint: usize, latency: Duration, status: &'static str) {
        let us = micros(latency);
        if let Ok(mut shard) = self.shards[hint % SHARDS].lock() {
            shard.latencies.saturating_record(us);
            if status == "OK" {
                shard.ok.saturating_record(us);
            } else if is_refusal(status) {
                shard.refused.saturating_record(us);
            }
            *shard.statuses.entry(status).or_insert(0) += 1;
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
        if status != "OK" {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// All shards merged.
    pub fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot {
            all: new_histogram(),
            ok: new_histogram(),
            refused: new_histogram(),
            statuses: BTreeMap::new(),
        };
        for shard in &self.shards {
            if let Ok(shard) = shard.lock() {
                let _ = out.all.add(&shard.latencies);
                let _ = out.ok.add(&shard.ok);
                let _ = out.refused.add(&shard.refused);
                for (k, v) in &shard.statuses {
                    *out.statuses.entry((*k).to_owned()).or_insert(0) += v;
                }
            }
        }
        out
    }
}

/// Latency figures in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyMs {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One point of the latency-by-percentile curve.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    pub percentile: f64,
    pub latency_ms: f64,
}

/// The result of a run, as printed by `--output json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// `--label`, or the target address.
    pub label: String,
    pub target: String,
    /// `closed` or `open`.
    pub model: String,
    /// Open model: the requested arrival rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_rps: Option<f64>,
    /// Closed model: callers in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    pub connections: usize,
    pub new_connection_per_request: bool,
    /// The method mix, `name=weight`.
    pub mix: String,
    pub distribution: String,
    /// Measured requests (the warm-up is not counted).
    pub requests: u64,
    /// Requests that did not end in OK.
    pub errors: u64,
    /// From the start of the measured window to the last measured answer.
    pub duration_s: f64,
    pub throughput_rps: f64,
    pub latency_ms: LatencyMs,
    /// Counts by gRPC status name (`OK`, `PERMISSION_DENIED`, ...).
    pub status_counts: BTreeMap<String, u64>,
    /// Latency by percentile, for plots.
    pub percentiles: Vec<CurvePoint>,
    /// Requests answered OK per second of the measured window.
    #[serde(default)]
    pub goodput_rps: f64,
    /// Requests refused RESOURCE_EXHAUSTED (an agency's limits, request
    /// size) and UNAVAILABLE (gateway overloaded, store or owner down).
    #[serde(default)]
    pub resource_exhausted: u64,
    #[serde(default)]
    pub unavailable: u64,
    /// Latency of the requests answered OK, and of those refused for load.
    #[serde(default)]
    pub ok_latency_ms: LatencyMs,
    #[serde(default)]
    pub refused_latency_ms: LatencyMs,
    /// `--respect-retry-info`: refused requests were sent again after the
    /// RetryInfo delay (within their deadline); `retries` counts the resends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub respect_retry_info: bool,
    #[serde(default)]
    pub retries: u64,
    /// Open model: measured requests the generator sent per second, to set
    /// against `rate_rps`. Below it, the generator could not keep its own
    /// schedule and the latencies include its backlog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_rps: Option<f64>,
    /// Open model: how long after its due time each measured request was
    /// handed to the connection (the generator's own delay, including any
    /// wait for a `--max-in-flight` slot; it is part of every latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_ms: Option<LatencyMs>,
    /// Open model: the generator fell behind its schedule (see
    /// [`Summary::behind_schedule`]): the latencies then measure the
    /// generator as much as the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_schedule: Option<bool>,
    /// The run was stopped early (Ctrl-C or SIGTERM); the figures cover
    /// what was measured until then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The percentiles of the plotted curve: dense where tails live, spaced
/// evenly on a `1 / (1 - p)` scale up to 99.999.
pub fn curve_percentiles() -> Vec<f64> {
    let mut out = Vec::new();
    let steps = 100;
    for i in 0..=steps {
        // x from 1 to 10^5 on a log scale; p = 1 - 1/x.
        let x = 10f64.powf(5.0 * i as f64 / steps as f64);
        out.push(100.0 * (1.0 - 1.0 / x));
    }
    out
}

/// Latency figures of a histogram.
pub fn latency_ms(h: &Histogram<u64>) -> LatencyMs {
    if h.is_empty() {
        return LatencyMs::default();
    }
    LatencyMs {
        min: ms(h.min()),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// The plotted curve of a histogram.
pub fn curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    curve_percentiles()
        .into_iter()
        .map(|p| CurvePoint {
            percentile: p,
            latency_ms: ms(h.value_at_percentile(p)),
        })
        .collect()
}

/// A duration as people read it: `850 µs`, `12.3 ms`, `1.52 s`.
pub fn human_ms(value_ms: f64) -> String {
    if value_ms < 1.0 {
        format!("{:.0} µs", value_ms * 1000.0)
    } else if value_ms < 1000.0 {
        format!("{value_ms:.2} ms")
    } else {
        format!("{:.2} s", value_ms / 1000.0)
    }
}

/// Below this share of the asked rate, the open model's generator did not
/// keep its schedule.
pub const KEPT_RATE: f64 = 0.95;
/// A send lag p99 above this share of the latency p99 (and above
/// [`LAG_FLOOR_MS`]) is a visible part of the measured tail.
pub const LAG_SHARE: f64 = 0.1;
pub const LAG_FLOOR_MS: f64 = 1.0;

impl Summary {
    /// Whether an open-model run's generator fell behind: it sent less than
    /// [`KEPT_RATE`] of the rate asked, or its own send lag is a visible
    /// part of the latency tail (p99 above [`LAG_FLOOR_MS`] and above
    /// [`LAG_SHARE`] of the latency p99). `None` for the closed model.
    pub fn behind_schedule(&self) -> Option<bool> {
        let (rate, sent, lag) = (self.rate_rps?, self.sent_rps?, self.send_lag_ms.as_ref()?);
        Some(
            sent < KEPT_RATE * rate
                || (lag.p99 > LAG_FLOOR_MS && lag.p99 > LAG_SHARE * self.latency_ms.p99),
        )
    }

    /// What a person should know when the generator fell behind, if it did.
    pub fn behind_warning(&self) -> Option<String> {
        if self.behind_schedule() != Some(true) {
            return None;
        }
        let lag = self.send_lag_ms.as_ref().map_or(0.0, |l| l.p99);
        let (sent, asked) = (
            self.sent_rps.unwrap_or_default(),
            self.rate_rps.unwrap_or_default(),
        );
        if sent < KEPT_RATE * asked {
            return Some(format!(
                "the generator fell behind its schedule: it sent {sent:.0} of the {asked:.0} req/s \
                 asked, {} late at p99; the latencies measure the generator as much as the server \
                 (give it its own cores, or a lower --rate)",
                human_ms(lag)
            ));
        }
        Some(format!(
            "the generator sent the {asked:.0} req/s asked, but up to {} late at p99, more than a \
             tenth of the latency p99 ({}): part of the latencies is its own delay in sending \
             (a busy machine, or its own cores too few)",
            human_ms(lag),
            human_ms(self.latency_ms.p99)
        ))
    }

    /// The summary for people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let model = match (self.rate_rps, self.concurrency) {
            (Some(r), _) => format!("open model, {r} req/s constant arrival"),
            (None, Some(c)) => format!("closed model, {c} in flight"),
            _ => self.model.clone(),
        };
        let conns = if self.new_connection_per_request {
            "a new connection per request".to_owned()
        } else {
            format!("{} connection(s)", self.connections)
        };
        s.push_str(&format!(
            "Summary ({}): {} ({model}, {conns})\n  mix {}, keys {}\n",
            self.label, self.target, self.mix, self.distribution
        ));
        if self.interrupted {
            s.push_str("  (interrupted: figures cover the requests measured until then)\n");
        }
        s.push_str(&format!(
            "  requests     {}\n  errors       {}\n  duration     {:.2} s\n  throughput   {:.1} req/s\n  goodput      {:.1} req/s (answered OK)\n",
            self.requests, self.errors, self.duration_s, self.throughput_rps, self.goodput_rps
        ));
        s.push_str(&format!(
            "  refused      {} RESOURCE_EXHAUSTED, {} UNAVAILABLE\n",
            self.resource_exhausted, self.unavailable
        ));
        if self.respect_retry_info {
            s.push_str(&format!(
                "  retries      {} (after RetryInfo delays)\n",
                self.retries
            ));
        }
        let l = &self.latency_ms;
        s.push_str("Latency");
        if self.rate_rps.is_some() {
            s.push_str(" (from each request's intended send time)");
        }
        s.push('\n');
        for (name, v) in [
            ("min", l.min),
            ("mean", l.mean),
            ("p50", l.p50),
            ("p90", l.p90),
            ("p99", l.p99),
            ("p99.9", l.p999),
            ("max", l.max),
        ] {
            s.push_str(&format!("  {name:<7} {}\n", human_ms(v)));
        }
        for (what, l, n) in [
            (
                "answered OK",
                &self.ok_latency_ms,
                self.requests - self.errors,
            ),
            (
                "refused",
                &self.refused_latency_ms,
                self.resource_exhausted + self.unavailable,
            ),
        ] {
            if n > 0 && n < self.requests {
                s.push_str(&format!(
                    "  {what}: p50 {}, p99 {}, max {}\n",
                    human_ms(l.p50),
                    human_ms(l.p99),
                    human_ms(l.max)
                ));
            }
        }
        s.push_str("Status codes\n");
        for (code, n) in &self.status_counts {
            s.push_str(&format!("  {code:<20} {n}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_into_one_distribution_and_status_counts() {
        let r = Recorder::default();
        for i in 0..1000u64 {
            let status = if i % 100 == 0 { "UNAVAILABLE" } else { "OK" };
            r.record(i as usize, Duration::from_micros(i + 1), status);
        }
        assert_eq!(r.completed(), 1000);
        assert_eq!(r.errors(), 10);
        let snap = r.snapshot();
        let (h, statuses) = (snap.all, snap.statuses);
        assert_eq!(h.len(), 1000);
        assert_eq!(snap.ok.len(), 990);
        assert_eq!(snap.refused.len(), 10);
        assert_eq!(statuses["OK"], 990);
        assert_eq!(statuses["UNAVAILABLE"], 10);
        let l = latency_ms(&h);
        assert!((l.p50 - 0.5).abs() < 0.002, "{l:?}");
        assert!((l.p99 - 0.99).abs() < 0.002, "{l:?}");
        assert!((l.max - 1.0).abs() < 0.002, "{l:?}");
        let c = curve(&h);
        assert_eq!(c.first().map(|p| p.percentile), Some(0.0));
        assert!(c.windows(2).all(|w| w[0].latency_ms <= w[1].latency_ms));
    }

    #[test]
    fn text_names_every_status_and_the_figures() {
        let r = Recorder::default();
        r.record(0, Duration::from_millis(2), "OK");
        r.record(1, Duration::from_millis(4), "PERMISSION_DENIED");
        let snap = r.snapshot();
        let (h, statuses) = (snap.all, snap.statuses);
        let s = Summary {
            label: "gw".into(),
            target: "127.0.0.1:1".into(),
            model: "closed".into(),
            rate_rps: None,
            concurrency: Some(2),
            connections: 1,
            new_connection_per_request: false,
            mix: "GetCitizen=1".into(),
            distribution: "uniform".into(),
            requests: 2,
            errors: 1,
            duration_s: 1.0,
            throughput_rps: 2.0,
            latency_ms: latency_ms(&h),
            status_counts: statuses,
            percentiles: curve(&h),
            interrupted: false,
            goodput_rps: 1.0,
            resource_exhausted: 3,
            unavailable: 4,
            ..Summary::default()
        };
        let text = s.to_text();
        assert!(
            text.contains("3 RESOURCE_EXHAUSTED, 4 UNAVAILABLE"),
            "{text}"
        );
        assert!(text.contains("goodput      1.0 req/s"), "{text}");
        assert!(text.contains("PERMISSION_DENIED    1"), "{text}");
        assert!(text.contains("closed model, 2 in flight"), "{text}");
        assert!(text.contains("p99.9"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        for key in [
            "requests",
            "duration_s",
            "throughput_rps",
            "latency_ms",
            "status_counts",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(json["latency_ms"].get(key).is_some(), "{key}");
        }
        assert_eq!(s.behind_schedule(), None, "closed model");
        assert_eq!(human_ms(0.25), "250 µs");
        assert_eq!(human_ms(12.345), "12.35 ms");
        assert_eq!(human_ms(1520.0), "1.52 s");
    }

    #[test]
    fn an_open_run_is_behind_when_it_sent_less_or_its_lag_shows_in_the_tail() {
        let run = |sent: f64, lag_p99: f64, p99: f64| Summary {
            model: "open".into(),
            rate_rps: Some(1000.0),
            sent_rps: Some(sent),
            send_lag_ms: Some(LatencyMs {
                p99: lag_p99,
                ..LatencyMs::default()
            }),
            latency_ms: LatencyMs {
                p99,
                ..LatencyMs::default()
            },
            ..Summary::default()
        };
        assert_eq!(run(999.0, 0.3, 2.0).behind_schedule(), Some(false));
        assert_eq!(run(940.0, 0.3, 2.0).behind_schedule(), Some(true));
        // A lag under a millisecond is not counted against a fast server...
        assert_eq!(run(999.0, 0.9, 2.0).behind_schedule(), Some(false));
        // ...nor one small beside the tail; a large share of it is.
        assert_eq!(run(999.0, 4.0, 50.0).behind_schedule(), Some(false));
        assert_eq!(run(999.0, 6.0, 50.0).behind_schedule(), Some(true));
        let w = run(500.0, 2000.0, 2100.0).behind_warning().unwrap();
        assert!(
            w.contains("sent 500 of the 1000 req/s asked, 2.00 s late at p99"),
            "{w}"
        );
        assert!(run(999.0, 0.3, 2.0).behind_warning().is_none());
    }
}
