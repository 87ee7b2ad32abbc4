#!/usr/bin/env python3
"""Other fusion rules tried on the candidates the product's hybrid search scored.

Reads what `dochash eval retrieval --modes hybrid --pool FILE` wrote (per query, every candidate
in the product's order: mode, query number, position, wanted 0/1, cosine, BM25) and prints
MRR@10 of each rule, ranking each query's candidates again (ties keep the product's order):

  semantic, lexical   one side alone (over these candidates)
  zscore:A            the product's z-score fusion (A × z(cosine) + (1 − A) × z(BM25), standard
                      scores over each side's best 100; no BM25 counts as 0); zscore:0.4 must
                      give the MRR@10 `eval retrieval` printed
  top1:A, gap:A       per-query weights: each side's weight A (or 1 − A) times how sure it is of
                      its own ranking, the standard score of its best candidate (top1) or the
                      gap between its 1st and 10th (gap)
  oracle              per query, the better of semantic and lexical alone (needs the labels:
                      the room a per-query choice of side has, not a rule)

  python3 tests/benches/fusion-rules.py POOL.tsv [POOL.tsv ...] [--queries N]

NumPy only; a measurement, not part of the product.
"""
import argparse
import collections

import numpy as np


def load(path):
    qs = collections.defaultdict(list)
    with open(path) as f:
        for line in f:
            mode, q, pos, want, cos, bm = line.rstrip("\n").split("\t")
            if mode != "hybrid":
                continue
            qs[int(q)].append(
                (int(pos), int(want), float(cos) if cos else np.nan, float(bm) if bm else np.nan)
            )
    return [np.array(sorted(v), dtype=np.float64) for _, v in sorted(qs.items())], max(qs)


def stats(x, depth=100):
    x = x[~np.isnan(x)]
    if x.size == 0:
        return 0.0, 1e-6
    x = np.sort(x)[::-1][:depth]
    return x.mean(), max(x.std(), 1e-6)


def zs(c, b):
    (cm, cs), (bm, bs) = stats(c), stats(b)
    return np.where(np.isnan(c), 0.0, (c - cm) / cs), (np.nan_to_num(b, nan=0.0) - bm) / bs


def zscore(a):
    def rule(c, b):
        zc, zb = zs(c, b)
        return a * zc + (1 - a) * zb

    return rule


def confident(a, kind):
    def rule(c, b):
        zc, zb = zs(c, b)

        def sure(z):
            s = np.sort(z)[::-1]
            g = s[0] if kind == "top1" else s[0] - s[min(9, s.size - 1)]
            return max(g, 1e-3)

        w = a * sure(zc) / (a * sure(zc) + (1 - a) * sure(zb))
        return w * zc + (1 - w) * zb

    return rule


def rr(score, want):
    top = np.argsort(-score, kind="stable")[:10]
    hit = np.nonzero(want[top] > 0)[0]
    return 1.0 / (hit[0] + 1) if hit.size else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pools", nargs="+")
    ap.add_argument("--queries", type=int, help="queries asked (default: the last one seen)")
    args = ap.parse_args()
    rules = [("semantic", lambda c, b: np.nan_to_num(c, nan=-9.0)),
             ("lexical", lambda c, b: np.nan_to_num(b, nan=-1.0))]
    rules += [(f"zscore:{a}", zscore(a)) for a in (0.4, 0.5, 0.6)]
    rules += [(f"{k}:{a}", confident(a, k)) for k in ("top1", "gap") for a in (0.4, 0.5)]
    print("rule\t" + "\t".join(args.pools))
    data = [load(p) for p in args.pools]
    for name, rule in rules + [("oracle", None)]:
        row = []
        for qs, last in data:
            total = 0.0
            for q in qs:
                want, c, b = q[:, 1], q[:, 2], q[:, 3]
                if rule is None:
                    total += max(rr(np.nan_to_num(c, nan=-9.0), want),
                                 rr(np.nan_to_num(b, nan=-1.0), want))
                else:
                    total += rr(rule(c, b), want)
            row.append(f"{total / (args.queries or last):.4f}")
        print(name + "\t" + "\t".join(row))


if __name__ == "__main__":
    main()
