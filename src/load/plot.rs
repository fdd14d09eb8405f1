//! Latency-by-percentile charts as standalone SVG: one line per run, the
//! percentile axis spaced by `1 / (1 - p)` so that the tail (99%, 99.9%,
//! 99.99%) gets as much room as the median, as HdrHistogram plots do. A run
//! is drawn only as far into the tail as its sample size supports, and the
//! axis ends there; the legend gives each run's load shape (concurrency or
//! rate, connections), which is what makes two runs comparable.

use super::stats::Summary;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
/// Colour-blind-safe palette (Okabe-Ito).
const COLOURS: &[&str] = &[
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];
/// The x axis ends at 99.999% at most.
const MAX_NINES: f64 = 5.0;

/// How many nines of percentile `requests` samples support: a percentile
/// is drawn only when at least one sample lies beyond it (99.9% needs 1,000
/// samples); at least 90% (one nine) is always drawn.
fn supported_nines(requests: u64) -> f64 {
    (requests.max(1) as f64)
        .log10()
        .floor()
        .clamp(1.0, MAX_NINES)
}

fn nines_of(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0)
        .max(10f64.powf(-MAX_NINES))
        .log10()
}

fn x_of(percentile: f64, axis_nines: f64) -> f64 {
    LEFT + (WIDTH - LEFT - RIGHT) * (nines_of(percentile) / axis_nines).min(1.0)
}

/// A run's load shape for the legend: what differs between two runs of
/// the same gateway besides the gateway.
fn load_shape(run: &Summary) -> String {
    let offered = match (run.concurrency, run.rate_rps) {
        (Some(c), _) => format!("concurrency {c}"),
        (None, Some(r)) => format!("{} req/s offered", trim_float(r)),
        (None, None) => run.model.clone(),
    };
    let connections = if run.new_connection_per_request {
        "a new connection per request".to_owned()
    } else if run.connections == 1 {
        "1 connection".to_owned()
    } else {
        format!("{} connections", run.connections)
    };
    format!("{offered}, {connections}, n={}", run.requests)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" axis top and tick step for values up to `max`.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// The chart of `runs` (each needs its `percentiles`), with a title.
pub fn svg(title: &str, runs: &[Summary]) -> String {
    let max = runs
        .iter()
        .flat_map(|r| r.percentiles.iter().map(|p| p.latency_ms))
        .fold(0.0f64, f64::max);
    let min = runs
        .iter()
        .flat_map(|r| r.percentiles.iter().map(|p| p.latency_ms))
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let axis_nines = runs
        .iter()
        .map(|r| supported_nines(r.requests))
        .fold(1.0f64, f64::max);
    let plot_h = HEIGHT - TOP - BOTTOM;
    // Runs two orders of magnitude apart get a log axis, so the fast ones
    // are not flattened against zero by the slow.
    let log = min.is_finite() && max / min > 100.0;
    let (top, step) = nice_axis(max);
    let (log_lo, log_hi) = (min.max(1e-3).log10().floor(), max.max(1e-3).log10().ceil());
    let y_of = |ms: f64| {
        if log {
            let v = (ms.max(10f64.powf(log_lo)).log10() - log_lo) / (log_hi - log_lo).max(1.0);
            TOP + plot_h * (1.0 - v)
        } else {
            TOP + plot_h * (1.0 - ms / top)
        }
    };
    let mut s = String::new();
    s.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    ));
    // Grid and axis labels.
    let ticks: Vec<f64> = if log {
        (log_lo as i32..=log_hi as i32)
            .map(|e| 10f64.powi(e))
            .collect()
    } else {
        let mut t = Vec::new();
        let mut v = 0.0;
        while v <= top + step / 2.0 {
            t.push(v);
            v += step;
        }
        t
    };
    for v in ticks {
        let y = y_of(v);
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim_float(v)
        ));
    }
    for (nines, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        if nines > axis_nines {
            break;
        }
        let x = LEFT + (WIDTH - LEFT - RIGHT) * (nines / axis_nines);
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 18.0
        ));
    }
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>\n\
         <text x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\">latency (ms{})</text>\n",
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - BOTTOM + 40.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        if log { ", log scale" } else { "" }
    ));
    // One polyline per run, and its legend entry.
    for (i, run) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let supported = supported_nines(run.requests);
        let points: Vec<String> = run
            .percentiles
            .iter()
            .filter(|p| nines_of(p.percentile) <= supported + 1e-9)
            .map(|p| {
                format!(
                    "{:.1},{:.1}",
                    x_of(p.percentile, axis_nines),
                    y_of(p.latency_ms)
                )
            })
            .collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            points.join(" ")
        ));
        legend(
            &mut s,
            i,
            colour,
            &format!(
                "{} ({}; p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s)",
                run.label,
                load_shape(run),
                run.latency_ms.p50,
                run.latency_ms.p99,
                run.throughput_rps
            ),
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A line of the goodput chart: its name, colour, and value of a run.
type Series = (&'static str, &'static str, fn(&Summary) -> f64);

/// Goodput against offered load, one point per run: requests answered OK
/// per second and requests refused per second (RESOURCE_EXHAUSTED,
/// UNAVAILABLE), over the rate each run offered (its throughput for a
/// closed-model run), with the diagonal of everything offered answered.
pub fn goodput_svg(title: &str, runs: &[Summary]) -> String {
    let offered = |r: &Summary| r.rate_rps.unwrap_or(r.throughput_rps);
    let mut runs: Vec<&Summary> = runs.iter().collect();
    runs.sort_by(|a, b| offered(a).total_cmp(&offered(b)));
    let max = runs
        .iter()
        .map(|r| offered(r).max(r.throughput_rps))
        .fold(0.0f64, f64::max);
    let (top, step) = nice_axis(max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |v: f64| LEFT + plot_w * v / top;
    let y_of = |v: f64| TOP + plot_h * (1.0 - v / top);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    );
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let (x, y) = (x_of(v), y_of(v));
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
             <line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim_float(v),
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 18.0,
            trim_float(v)
        ));
        v += step;
    }
    s.push_str(&format!(
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"4 4\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">offered load (req/s)</text>\n\
         <text x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\">answered per second</text>\n",
        x_of(0.0),
        y_of(0.0),
        x_of(top),
        y_of(top),
        LEFT + plot_w / 2.0,
        HEIGHT - BOTTOM + 40.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
    ));
    let series: [Series; 2] = [
        ("answered OK (goodput)", COLOURS[0], |r| r.goodput_rps),
        (
            "refused (RESOURCE_EXHAUSTED, UNAVAILABLE)",
            COLOURS[1],
            |r| {
                let refused = (r.resource_exhausted + r.unavailable) as f64;
                if r.duration_s > 0.0 {
                    refused / r.duration_s
                } else {
                    0.0
                }
            },
        ),
    ];
    for (i, (name, colour, value)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> = runs
            .iter()
            .map(|r| (x_of(offered(r)), y_of(value(r))))
            .collect();
        let line: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            line.join(" ")
        ));
        for (x, y) in points {
            s.push_str(&format!(
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{colour}\"/>\n"
            ));
        }
        legend(&mut s, i, colour, name);
    }
    s.push_str("</svg>\n");
    s
}

/// The `i`th legend entry: a line of `colour` and `text` (escaped here).
fn legend(s: &mut String, i: usize, colour: &str, text: &str) {
    let ly = TOP + 16.0 + 18.0 * i as f64;
    s.push_str(&format!(
        "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"3\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
        LEFT + 12.0,
        LEFT + 36.0,
        LEFT + 42.0,
        ly + 4.0,
        escape(text)
    ));
}

fn trim_float(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::{CurvePoint, LatencyMs};

    fn run(label: &str, scale: f64) -> Summary {
        Summary {
            label: label.into(),
            target: "t".into(),
            model: "closed".into(),
            rate_rps: None,
            concurrency: Some(1),
            connections: 1,
            new_connection_per_request: false,
            mix: "GetCitizen=1".into(),
            distribution: "uniform".into(),
            requests: 1000,
            errors: 0,
            duration_s: 1.0,
            throughput_rps: 1.0,
            latency_ms: LatencyMs {
                p50: scale,
                p99: 3.0 * scale,
                ..LatencyMs::default()
            },
            status_counts: Default::default(),
            percentiles: vec![
                CurvePoint {
                    percentile: 0.0,
                    latency_ms: scale,
                },
                CurvePoint {
                    percentile: 99.0,
                    latency_ms: 3.0 * scale,
                },
            ],
            interrupted: false,
            ..Summary::default()
        }
    }

    #[test]
    fn goodput_chart_has_a_point_per_run_and_both_series() {
        let mut a = run("half", 1.0);
        a.rate_rps = Some(500.0);
        a.goodput_rps = 500.0;
        let mut b = run("double", 1.0);
        b.rate_rps = Some(2000.0);
        b.goodput_rps = 950.0;
        b.unavailable = 1050;
        let text = goodput_svg("overload <test>", &[b, a]);
        assert_eq!(text.matches("<circle").count(), 4, "{text}");
        assert!(text.contains("answered OK (goodput)"));
        assert!(text.contains("overload &lt;test&gt;"));
        assert!(text.ends_with("</svg>\n"));
    }

    #[test]
    fn chart_has_a_line_and_legend_per_run_and_escapes_labels() {
        let text = svg(
            "a <b> & c",
            &[run("gateway", 1.0), run("nginx \"proxy\"", 2.0)],
        );
        assert!(text.starts_with("<svg"));
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(text.contains("a &lt;b&gt; &amp; c"));
        assert!(text.contains("nginx &quot;proxy&quot;"));
        assert!(text.contains("99.9%"));
        // 1,000 samples each: the axis ends at 99.9%, not beyond.
        assert!(!text.contains("99.99%"));
        // p0 sits on the left edge, p99 two thirds across a 3-nines axis.
        assert!((x_of(0.0, 3.0) - LEFT).abs() < 1e-9);
        assert!((x_of(99.0, 3.0) - (LEFT + (WIDTH - LEFT - RIGHT) * 2.0 / 3.0)).abs() < 1e-6);
        // The legend gives the load shape.
        assert!(
            text.contains("concurrency 1, 1 connection, n=1000"),
            "{text}"
        );
    }

    #[test]
    fn the_tail_is_drawn_only_as_far_as_the_samples_support_it() {
        assert_eq!(supported_nines(0), 1.0);
        assert_eq!(supported_nines(999), 2.0);
        assert_eq!(supported_nines(1000), 3.0);
        assert_eq!(supported_nines(10_000_000), MAX_NINES);
        let mut small = run("small", 1.0);
        small.requests = 150;
        small.percentiles.push(CurvePoint {
            percentile: 99.99,
            latency_ms: 50.0,
        });
        let text = svg("t", &[small.clone()]);
        // Two points drawn (p0, p99), the unsupported p99.99 left out.
        let line = text.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(line.matches(',').count(), 2, "{line}");
        assert!(text.contains(">99%<") && !text.contains(">99.9%<"));
        let mut open = small;
        open.concurrency = None;
        open.rate_rps = Some(2000.0);
        open.connections = 4;
        assert_eq!(
            load_shape(&open),
            "2000 req/s offered, 4 connections, n=150"
        );
        open.new_connection_per_request = true;
        assert!(load_shape(&open).contains("a new connection per request"));
    }

    #[test]
    fn axis_tops_are_round() {
        let close = |(a, b): (f64, f64), (c, d): (f64, f64)| {
            assert!(
                (a - c).abs() < 1e-9 && (b - d).abs() < 1e-9,
                "{a},{b} vs {c},{d}"
            )
        };
        close(nice_axis(7.3), (8.0, 2.0));
        close(nice_axis(0.42), (0.5, 0.1));
        close(nice_axis(0.0), (1.0, 0.2));
    }

    #[test]
    fn runs_far_apart_get_a_log_axis() {
        let text = svg("t", &[run("fast", 1.0), run("slow", 1000.0)]);
        assert!(text.contains("latency (ms, log scale)"));
        assert!(text.contains(">1000<") && text.contains(">1<"));
        let text = svg("t", &[run("a", 1.0), run("b", 2.0)]);
        assert!(text.contains("latency (ms)"));
    }
}
