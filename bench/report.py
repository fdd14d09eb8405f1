#!/usr/bin/env python3
"""The table of bench/side-by-side: reads the JSON files of one run (OUT folder)
and prints Markdown with every figure's ratio to the baseline, and the targets
checked against them. Standard library only."""

import json
import os
import sys


def load(out, name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ok(run):
    """Requests answered OK per second: a refusal is not throughput."""
    return run.get("goodput_rps") or (0.0 if run.get("errors") else run["throughput_rps"])


def okl(run):
    """Latency of the requests answered OK (all of them in older files)."""
    lat = run.get("ok_latency_ms")
    return lat if lat and lat.get("p50") else run["latency_ms"]


def div(a, b):
    return a / b if b else 0.0


def ratio(value, base):
    return f"{value / base:.2f}x" if base else "-"


def mib(kib):
    return f"{kib / 1024:.0f} MiB"


def check(ok):
    return "met" if ok else "MISSED"


def saturation_rounds(out):
    """(baseline, gateway) OK/s of each saturation round: the first pass, then
    the two again, alternating (ROUNDS). Targets are judged on the sums."""
    rounds = [(ok(load(out, "baseline-closed")), ok(load(out, "gateway-closed")))]
    n = 2
    while True:
        b, g = load(out, f"baseline-closed-r{n}"), load(out, f"gateway-closed-r{n}")
        if not (b and g):
            return rounds
        rounds.append((ok(b), ok(g)))
        n += 1


def main(out):
    lines = []
    emit = lines.append
    with open(os.path.join(out, "machine.txt")) as f:
        machine = f.read().strip()
    fsync = load(out, "fsync")
    emit("## Side-by-side, one run")
    emit("")
    emit("```")
    emit(machine)
    emit("```")
    emit("")
    setups = ["baseline", "gateway", "proxy"]
    closed = {s: load(out, s + "-closed") for s in setups}
    opened = {s: load(out, s + "-open") for s in setups}
    hands = {s: load(out, s + "-handshake") for s in setups}
    memory = {s: load(out, s + "-memory") for s in setups}
    base = closed["baseline"]
    emit(
        f"Workload: `{base['mix']}`, keys {base['distribution']}; closed model "
        f"{base['concurrency']} in flight over {base['connections']} connections; open model at "
        f"{opened['baseline']['rate_rps']:.0f} req/s (half the baseline's saturation); "
        f"handshakes: {hands['baseline']['concurrency']} in flight, a new TLS connection per request."
    )
    emit("")
    emit(
        "| setup | saturation req/s | vs baseline | p50 at half load | p99 at half load | p99 vs baseline "
        "| new connections/s | vs baseline | peak RSS | vs baseline |"
    )
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {
        "baseline": "baseline (bare tonic)",
        "gateway": "gateway (full path)",
        "proxy": "nginx mTLS proxy + baseline",
    }
    for s in setups:
        c, o, h, m = closed[s], opened[s], hands[s], memory[s]
        emit(
            f"| {names[s]} | {ok(c):.0f} | {ratio(ok(c), ok(base))} "
            f"| {okl(o)['p50']:.2f} ms | {okl(o)['p99']:.2f} ms "
            f"| {ratio(okl(o)['p99'], okl(opened['baseline'])['p99'])} "
            f"| {ok(h):.0f} | {ratio(ok(h), ok(hands['baseline']))} "
            f"| {mib(m['peak_kib'])} | {ratio(m['peak_kib'], memory['baseline']['peak_kib'])} |"
        )
    emit("")
    emit(
        f"fsync on the same disk (300-byte append + fdatasync, {fsync['samples']} samples): "
        f"p50 {fsync['p50_ms']:.3f} ms, p99 {fsync['p99_ms']:.3f} ms, max {fsync['max_ms']:.3f} ms."
    )
    errors = {
        f"{s}-{k}": r["errors"]
        for s in setups
        for k, r in (("closed", closed[s]), ("open", opened[s]), ("handshake", hands[s]))
        if r["errors"]
    }
    if errors:
        emit(f"Requests that did not end OK: {errors}.")
    rounds = saturation_rounds(out)
    base_sum, gw_sum = sum(b for b, _ in rounds), sum(g for _, g in rounds)
    gw_mean = gw_sum / len(rounds)
    sat_ratio = div(gw_sum, base_sum)
    ratios = [div(g, b) for b, g in rounds]
    if len(rounds) > 1:
        emit("")
        emit("Saturation, baseline and gateway measured alternately:")
        emit("")
        emit("| round | baseline OK/s | gateway OK/s | ratio |")
        emit("|---|---:|---:|---:|")
        for i, (b, g_r) in enumerate(rounds, 1):
            emit(f"| {i} | {b:.0f} | {g_r:.0f} | {div(g_r, b):.2f}x |")
        emit(f"| all | {base_sum:.0f} | {gw_sum:.0f} | {sat_ratio:.2f}x |")
    emit("")
    emit("### Targets")
    emit("")
    g, p = closed["gateway"], closed["proxy"]
    gp99 = okl(opened["gateway"])["p99"]
    bp99 = okl(opened["baseline"])["p99"]
    pp99 = okl(opened["proxy"])["p99"]
    # Issue 12's targets for the embedded access log.
    bound = 2 * bp99 + fsync["p99_ms"]
    emit("| target | measured | |")
    emit("|---|---|---|")
    spread = (
        f" over {len(rounds)} alternating rounds (each {min(ratios):.2f}-{max(ratios):.2f} x)"
        if len(rounds) > 1
        else ""
    )
    emit(
        f"| gateway saturation >= 0.85 x baseline | {sat_ratio:.2f} x{spread} "
        f"| {check(sat_ratio >= 0.85)} |"
    )
    emit(
        f"| gateway p99 at half load <= 2 x baseline p99 + fsync p99 | {gp99:.2f} ms vs "
        f"2 x {bp99:.2f} + {fsync['p99_ms']:.2f} = {bound:.2f} ms | {check(gp99 <= bound)} |"
    )
    emit(
        f"| gateway saturation >= nginx proxy's | {ok(g):.0f} vs {ok(p):.0f} req/s "
        f"({div(ok(g), ok(p)):.2f} x) | {check(ok(g) >= ok(p))} |"
    )
    emit(
        f"| gateway p99 at half load < nginx proxy's | {gp99:.2f} vs {pp99:.2f} ms "
        f"| {check(gp99 < pp99)} |"
    )
    fwd, fwd_open, direct_open = (
        load(out, "forwarded-closed"),
        load(out, "forwarded-open"),
        load(out, "direct-open-fhalf"),
    )
    if fwd and fwd_open and direct_open:
        r = div(ok(fwd), gw_mean)
        against = f"the direct gateway's {'mean ' if len(rounds) > 1 else ''}{gw_mean:.0f}"
        emit(
            f"| forwarded saturation >= 0.45 x direct gateway | {ok(fwd):.0f} vs "
            f"{against} req/s ({r:.2f} x) | {check(r >= 0.45)} |"
        )
        fp50, dp50 = okl(fwd_open)["p50"], okl(direct_open)["p50"]
        emit(
            f"| forwarded p50 <= direct p50 + 1 ms at {fwd_open['rate_rps']:.0f} req/s (half the "
            f"forwarded saturation) | {fp50:.2f} vs {dp50:.2f} ms (p99 {okl(fwd_open)['p99']:.2f} "
            f"vs {okl(direct_open)['p99']:.2f} ms) | {check(fp50 <= dp50 + 1.0)} |"
        )
    small, big = load(out, "store-10000"), load(out, "store-1000000")
    small_m, big_m = load(out, "store-10000-memory"), load(out, "store-1000000-memory")
    if small and big and small_m and big_m:
        emit(
            f"| 1M-citizen store: RSS beyond the page cache < 300 MiB | RssAnon {mib(big_m['anon_kib'])} "
            f"(peak RSS {mib(big_m['peak_kib'])}; 10k store: {mib(small_m['anon_kib'])}) "
            f"| {check(big_m['anon_kib'] < 300 * 1024)} |"
        )
        emit(
            f"| 1M-citizen store: start-up to serving < 2 s | {big_m['startup_s']:.3f} s "
            f"(10k store: {small_m['startup_s']:.3f} s) | {check(big_m['startup_s'] < 2.0)} |"
        )
        r = div(ok(big), ok(small))
        emit(
            f"| 1M-citizen throughput within 10% of a 10k store | {ok(big):.0f} vs "
            f"{ok(small):.0f} req/s ({r:.2f} x) | {check(r >= 0.9)} |"
        )
    emit("")
    emit("Charts: closed.svg, open.svg, handshake.svg, forwarded.svg in this folder.")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: report.py OUT_FOLDER")
    main(sys.argv[1])
