#!/usr/bin/env python3
"""Query-by-query comparison of two `dochash eval retrieval --ranks FILE` runs on one dev set.

Two models answer the same queries, so their MRR@10 difference is judged on the paired
per-query differences of reciprocal rank: their mean, its standard error, a bootstrap 95 %
interval, and how many queries went up and down. (The standard error of one MRR@10 on its own,
~1.8 points over 600 queries, overstates the noise of a difference between two models.)

  python3 tests/benches/paired.py BEFORE.tsv AFTER.tsv [--boot 10000] [--json]

Standard library only; a measurement, not part of the product.
"""
import argparse
import json
import math
import random


def load(path):
    rr = {}
    with open(path) as f:
        for line in f:
            mode, q, rank = line.rstrip("\n").split("\t")
            rr[(mode, int(q))] = 1.0 / int(rank) if int(rank) > 0 else 0.0
    return rr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--boot", type=int, default=10000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    b, t = load(a.before), load(a.after)
    rng = random.Random(0)
    for mode in sorted({m for m, _ in b} & {m for m, _ in t}):
        qs = sorted(q for m, q in b if m == mode and (m, q) in t)
        d = [t[(mode, q)] - b[(mode, q)] for q in qs]
        n = len(d)
        mean = sum(d) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
        boots = sorted(sum(rng.choice(d) for _ in range(n)) / n for _ in range(a.boot))
        lo, hi = boots[int(0.025 * a.boot)], boots[int(0.975 * a.boot) - 1]
        row = {
            "mode": mode,
            "queries": n,
            "before": sum(b[(mode, q)] for q in qs) / n,
            "after": sum(t[(mode, q)] for q in qs) / n,
            "delta": mean,
            "se": sd / math.sqrt(n),
            "ci95": [lo, hi],
            "up": sum(x > 0 for x in d),
            "down": sum(x < 0 for x in d),
        }
        if a.json:
            print(json.dumps(row))
        else:
            print(
                f"{mode:9} {row['before']:.4f} -> {row['after']:.4f}  "
                f"delta {100 * mean:+.2f} (se {100 * row['se']:.2f}, 95% {100 * lo:+.2f}..{100 * hi:+.2f})  "
                f"up {row['up']} down {row['down']} of {n}"
            )


if __name__ == "__main__":
    main()
