#!/usr/bin/env python3
"""Render the main panels of deploy/grafana/sipfront.json from real /metrics scrapes.

Grafana cannot be installed on the build machine, so this computes the dashboard's queries
itself from a directory of OpenMetrics scrapes taken at a fixed interval (files named
`<unix-time>.txt`, written by perf/grafana-panels while sipfront runs under load): counter
rates between consecutive scrapes, gauge values, and histogram_quantile() with Prometheus'
own algorithm (linear interpolation inside the bucket, over the buckets' rates summed by the
grouping labels). Usage: perf/grafana_panels.py SCRAPE_DIR OUT.png
"""
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value} of one scrape."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def load(directory):
    scrapes = []
    for f in sorted(os.listdir(directory), key=lambda f: float(f[:-4]) if f.endswith(".txt") else 0):
        if f.endswith(".txt"):
            with open(os.path.join(directory, f)) as fh:
                scrapes.append((float(f[:-4]), parse(fh.read())))
    return scrapes


def select(sample_map, name, match):
    for (n, labels), v in sample_map.items():
        d = dict(labels)
        if n == name and all(d.get(k) == val for k, val in match.items()):
            yield d, v


def rate(scrapes, name, by, match=None, window=5):
    """sum by (by) (rate(name[window scrapes])) -> {group: ([t], [v])}"""
    match = match or {}
    series = {}
    for i in range(window, len(scrapes)):
        (t0, a), (t1, b) = scrapes[i - window], scrapes[i]
        sums = {}
        for d, v in select(b, name, match):
            key = tuple(d.get(k, "") for k in by)
            prev = a.get((name, frozenset(d.items())), 0.0)
            sums[key] = sums.get(key, 0.0) + max(v - prev, 0.0) / (t1 - t0)
        for key, v in sums.items():
            series.setdefault(key, ([], []))
            series[key][0].append(t1)
            series[key][1].append(v)
    return series


def gauge(scrapes, name, by):
    series = {}
    for t, s in scrapes:
        sums = {}
        for d, v in select(s, name, {}):
            key = tuple(d.get(k, "") for k in by)
            sums[key] = sums.get(key, 0.0) + v
        for key, v in sums.items():
            series.setdefault(key, ([], []))
            series[key][0].append(t)
            series[key][1].append(v)
    return series


def quantile(q, buckets):
    """Prometheus histogram_quantile over [(le, cumulative rate)] sorted by le."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def histogram_quantile(scrapes, q, name, by, match, window=5):
    per_bucket = rate(scrapes, name + "_bucket", by + ["le"], match, window)
    groups = {}
    for key, (ts, vs) in per_bucket.items():
        group, le = key[:-1], float(key[-1].replace("+Inf", "inf"))
        for t, v in zip(ts, vs):
            groups.setdefault(group, {}).setdefault(t, []).append((le, v))
    out = {}
    for group, by_t in groups.items():
        ts = sorted(by_t)
        vs = [quantile(q, sorted(by_t[t])) for t in ts]
        out[group] = (ts, vs)
    return out


def plot(ax, title, series_sets, unit, t0):
    for label_fmt, series in series_sets:
        for key, (ts, vs) in sorted(series.items()):
            ax.plot([t - t0 for t in ts], vs, label=label_fmt.format(*key) if key else label_fmt)
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def main():
    directory, out = sys.argv[1], sys.argv[2]
    scrapes = load(directory)
    if len(scrapes) < 10:
        sys.exit("need at least 10 scrapes, have %d" % len(scrapes))
    t0 = scrapes[0][0]
    plt.style.use("dark_background")
    fig, axes = plt.subplots(3, 2, figsize=(14, 11))
    ms = lambda s: {k: (ts, [v * 1e3 for v in vs]) for k, (ts, vs) in s.items()}
    us = lambda s: {k: (ts, [v * 1e6 for v in vs]) for k, (ts, vs) in s.items()}
    plot(axes[0][0], "Requests and responses received", [
        ("requests", rate(scrapes, "sipfront_sip_requests_received_total", [])),
        ("responses", rate(scrapes, "sipfront_sip_responses_received_total", [])),
    ], "datagrams/s", t0)
    plot(axes[0][1], "Responses sent by class", [
        ("{}", rate(scrapes, "sipfront_sip_responses_sent_total", ["class"])),
    ], "responses/s", t0)
    req = {"kind": "request"}
    plot(axes[1][0], "Proxy processing time per request (p50 / p99)", [
        ("p50 {}", us(histogram_quantile(scrapes, 0.5, "sipfront_processing_seconds", ["method"], req))),
        ("p99 {}", us(histogram_quantile(scrapes, 0.99, "sipfront_processing_seconds", ["method"], req))),
    ], "µs", t0)
    final = {"response": "final"}
    plot(axes[1][1], "Asterisk response time, final response (p50 / p99)", [
        ("p50 {}", ms(histogram_quantile(scrapes, 0.5, "sipfront_upstream_response_seconds", ["upstream"], final))),
        ("p99 {}", ms(histogram_quantile(scrapes, 0.99, "sipfront_upstream_response_seconds", ["upstream"], final))),
    ], "ms", t0)
    plot(axes[2][0], "Digest authentication", [
        ("{}", rate(scrapes, "sipfront_auth_total", ["result"])),
    ], "ops/s", t0)
    plot(axes[2][1], "Registered contacts / transactions in flight", [
        ("contacts", gauge(scrapes, "sipfront_registrar_contacts", [])),
        ("in flight {}", gauge(scrapes, "sipfront_transactions_in_flight", ["kind"])),
    ], "count", t0)
    fig.suptitle("sipfront dashboard panels, computed from real /metrics scrapes "
                 "(perf/grafana-panels)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print("wrote", out)


if __name__ == "__main__":
    main()
