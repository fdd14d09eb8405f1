#!/usr/bin/env python3
"""Draws the panels of grafana.json from a Prometheus that scraped a real gateway.

Each panel's PromQL expressions are sent unchanged to the Prometheus HTTP API (`query_range`
for time series, `query` at the end of the range for the bar gauge and the stat), with Grafana's
`$__rate_interval` replaced by --rate-interval and the `$instance` variable by --instance (a
regular expression; `.*` is Grafana's "All"), and drawn with matplotlib on a grid laid out from
the panels' `gridPos`. Panel titles, queries, legends and units are the dashboard's; the look is
matplotlib's. Used by docs/dashboard/run.sh to make docs/dashboard.png.

    render.py --prometheus http://127.0.0.1:9099 --start T0 --end T1 --out dashboard.png
"""

import argparse
import json
import pathlib
import re
import urllib.parse
import urllib.request
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent

# Grafana unit -> (axis label, factor applied to values).
UNITS = {
    "reqps": ("req/s", 1.0),
    "s": ("ms", 1000.0),
    "percentunit": ("%", 100.0),
    "short": ("", 1.0),
    "d": ("days", 1.0),
}


def api(base, path, params):
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"prometheus: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def short_method(name):
    # interop.citizen.v1.CitizenRegistryService/GetCitizen -> GetCitizen
    return re.sub(r"[\w.]+Service/", "", name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--step", default="4s")
    ap.add_argument("--rate-interval", default="20s")
    ap.add_argument("--instance", default=".*", help="regex for the dashboard's $instance")
    ap.add_argument("--dashboard", default=str(HERE / "grafana.json"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    dash = json.loads(pathlib.Path(args.dashboard).read_text(encoding="utf-8"))
    panels = dash["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(16, rows * 0.36), dpi=72)
    grid = fig.add_gridspec(rows, 24, hspace=2.2, wspace=1.6, left=0.04, right=0.99, top=0.95, bottom=0.03)
    fig.suptitle(
        f"{dash['title']}: {datetime.fromtimestamp(args.start):%Y-%m-%d %H:%M:%S} to "
        f"{datetime.fromtimestamp(args.end):%H:%M:%S}, gateway =~ \"{args.instance}\" (load run; "
        f"Prometheus {args.step} steps, rate window {args.rate_interval})",
        fontsize=11,
    )
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_subplot(grid[g["y"] : g["y"] + g["h"] - 1, g["x"] : g["x"] + g["w"]])
        ax.set_title(p["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        unit, factor = UNITS.get(p["fieldConfig"]["defaults"].get("unit", "short"), ("", 1.0))
        series = []
        for t in p["targets"]:
            expr = t["expr"].replace("$__rate_interval", args.rate_interval)
            expr = expr.replace("$instance", args.instance)
            if p["type"] == "timeseries":
                result = api(args.prometheus, "query_range",
                             {"query": expr, "start": args.start, "end": args.end, "step": args.step})
                for r in result:
                    points = [(float(ts), float(v)) for ts, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
                    series.append((legend(t["legendFormat"], r["metric"]), points))
            else:
                result = api(args.prometheus, "query", {"query": expr, "time": args.end})
                for r in result:
                    series.append((legend(t["legendFormat"], r["metric"]), float(r["value"][1])))
        if not series:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if p["type"] == "timeseries":
            for name, points in sorted(series, key=lambda s: s[0]):
                if not points:
                    continue
                xs = [datetime.fromtimestamp(ts) for ts, _ in points]
                ys = [v * factor for _, v in points]
                ax.plot(xs, ys, linewidth=1.2, label=short_method(name))
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
            ax.xaxis.set_major_locator(mdates.SecondLocator(bysecond=(0, 30)))
            ax.set_ylabel(unit, fontsize=7)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="upper left", ncol=2, framealpha=0.6)
        elif p["type"] == "stat":
            value = series[0][1]
            healthy = value >= 1
            ax.set_facecolor("#2e7d32" if healthy else "#c62828")
            ax.text(0.5, 0.5, "healthy" if healthy else "UNHEALTHY", ha="center", va="center",
                    transform=ax.transAxes, color="white", fontsize=16, weight="bold")
            ax.set_xticks([])
            ax.set_yticks([])
        elif p["type"] == "bargauge":
            series.sort(key=lambda s: s[0])
            names = [s[0] for s in series]
            values = [s[1] * factor for s in series]
            colours = ["#2e7d32" if v >= 30 else "#ef6c00" if v >= 14 else "#c62828" for v in values]
            ax.barh(names, values, color=colours)
            for i, v in enumerate(values):
                ax.text(v, i, f" {v:.0f} {unit}", va="center", fontsize=7)
            ax.invert_yaxis()
            ax.set_xlim(0, max(values) * 1.2)
            ax.tick_params(axis="y", labelsize=7)
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
