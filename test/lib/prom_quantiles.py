#!/usr/bin/env python3
"""prom_quantiles — what the histograms of a /metrics page measured between two scrapes.

    prom_quantiles.py BEFORE AFTER [NAME ...]

BEFORE and AFTER are two scrapes of the same process (Prometheus text format). For every
histogram series in AFTER whose metric name is one of NAMEs (all histograms when none are given),
the difference AFTER - BEFORE is taken bucket by bucket and summarised as one JSON object on
stdout, keyed by the series ('name{labels}'):

    {"count": N, "mean_ms": ..., "p50_ms": ..., "p90_ms": ..., "p99_ms": ..., "over_ms": null}

Quantiles are interpolated linearly inside their bucket, as Prometheus' histogram_quantile()
does, so they are as coarse as the buckets. A quantile that falls in the +Inf bucket is reported
as the last finite bound and named in over_ms. A series with no observations between the scrapes
has count 0 and null quantiles. Exit status 2 on a usage error, 1 when a file cannot be read.
"""
import json
import math
import re
import sys

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')


def parse(path):
    """{(name, labels without le): {"buckets": {le: cumulative}, "sum": s, "count": c}}"""
    series = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = SAMPLE.match(line)
            if not m:
                continue
            name, labels, value = m.group(1), m.group(3) or "", float(m.group(4))
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix):
                    base = name[: -len(suffix)]
                    break
            else:
                continue
            pairs = [p for p in re.findall(r'[a-zA-Z_]+="[^"]*"', labels)]
            le = None
            rest = []
            for p in pairs:
                if p.startswith('le="'):
                    le = p[4:-1]
                else:
                    rest.append(p)
            key = (base, ",".join(rest))
            s = series.setdefault(key, {"buckets": {}, "sum": 0.0, "count": 0.0})
            if suffix == "_bucket" and le is not None:
                s["buckets"][math.inf if le == "+Inf" else float(le)] = value
            elif suffix == "_sum":
                s["sum"] = value
            elif suffix == "_count":
                s["count"] = value
    return series


def quantile(q, bounds, cumulative, total):
    """histogram_quantile over (bound, cumulative count) pairs sorted by bound; None if empty."""
    if total <= 0:
        return None, False
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, cumulative):
        if count >= rank:
            if math.isinf(bound):
                return lower, True
            inside = count - below
            frac = (rank - below) / inside if inside > 0 else 1.0
            return lower + (bound - lower) * frac, False
        lower, below = (bound if not math.isinf(bound) else lower), count
    return lower, True


def summarise(before, after):
    bounds = sorted(after["buckets"])
    cumulative = [after["buckets"][b] - before["buckets"].get(b, 0.0) for b in bounds]
    total = after["count"] - before["count"]
    out = {"count": int(total),
           "mean_ms": round((after["sum"] - before["sum"]) / total * 1000, 3) if total > 0 else None}
    over = None
    for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)):
        v, beyond = quantile(q, bounds, cumulative, total)
        out[name] = round(v * 1000, 3) if v is not None else None
        if beyond:
            over = out[name]
    out["over_ms"] = over
    return out


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        before, after = parse(argv[1]), parse(argv[2])
    except OSError as e:
        print(f"prom_quantiles: {e}", file=sys.stderr)
        return 1
    wanted = set(argv[3:])
    result = {}
    for (name, labels), s in sorted(after.items()):
        if wanted and name not in wanted:
            continue
        if not s["buckets"]:
            continue
        empty = {"buckets": {}, "sum": 0.0, "count": 0.0}
        result[f"{name}{{{labels}}}" if labels else name] = summarise(
            before.get((name, labels), empty), s)
    json.dump(result, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
