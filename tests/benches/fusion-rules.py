#!/usr/bin/env python3
"""Other fusion rules tried on the candidates the product's hybrid search scored.

Reads what `dochash eval retrieval --modes hybrid --pool FILE` wrote (per query, every candidate
in the product's order: mode, query number, position, wanted 0/1, cosine, BM25, the product's
score) and prints MRR@10 of each rule, ranking each query's candidates again (ties keep the
product's order):

  product             the product's own scores: the MRR@10 `eval retrieval` printed
  semantic, lexical   one side alone (over these candidates)
  zscore:A            the product's z-score fusion (A × z(cosine) + (1 − A) × z(BM25), standard
                      scores over each side's best 100; no BM25 counts as 0), recomputed here in
                      double precision: zscore:0.4 should match `product` to float rounding
  top1:A, gap:A       per-query weights: each side's weight A (or 1 − A) times how sure it is of
                      its own ranking, the standard score of its best candidate (top1) or the
                      gap between its 1st and 10th (gap)
  oracle              per query, the better of semantic and lexical alone (needs the labels:
                      the room a per-query choice of side has, not a rule)

  python3 tests/benches/fusion-rules.py POOL.tsv [POOL.tsv ...]

NumPy only; a measurement, not part of the product.
"""
import argparse
import collections

import numpy as np


def load(path):
    """Each query's candidates as rows (position, wanted, cosine, BM25, score); a query with
    none gives an empty array, so that it still counts."""
    qs = collections.defaultdict(list)
    with open(path) as f:
        for line in f:
            mode, q, pos, want, cos, bm, score = line.rstrip("\n").split("\t")
            if mode != "hybrid":
                continue
            rows = qs[int(q)]
            if pos != "0":
                num = lambda x: float(x) if x else np.nan
                rows.append((int(pos), int(want), num(cos), num(bm), num(score)))
    if not qs:
        raise SystemExit(f"{path}: no hybrid lines (run eval retrieval with --modes hybrid)")
    return [np.array(sorted(v), dtype=np.float64).reshape(-1, 5) for _, v in sorted(qs.items())]


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


def rank_of(x):
    """1-based rank of each candidate by x, best first (NaN: unranked)."""
    order = np.argsort(-np.nan_to_num(x, nan=-np.inf), kind="stable")
    r = np.empty(x.size)
    r[order] = np.arange(1, x.size + 1)
    return np.where(np.isnan(x), np.inf, r)


def rrf(k, a=0.5):
    def rule(c, b):
        return a / (k + rank_of(c)) + (1 - a) / (k + rank_of(b))

    return rule


def rr(score, want):
    top = np.argsort(-score, kind="stable")[:10]
    hit = np.nonzero(want[top] > 0)[0]
    return 1.0 / (hit[0] + 1) if hit.size else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pools", nargs="+")
    args = ap.parse_args()
    rules = [("product", None),
             ("semantic", lambda c, b: np.nan_to_num(c, nan=-9.0)),
             ("lexical", lambda c, b: np.nan_to_num(b, nan=-1.0))]
    rules += [(f"zscore:{a}", zscore(a)) for a in (0.4, 0.5, 0.6)]
    rules += [(f"{k}:{a}", confident(a, k)) for k in ("top1", "gap") for a in (0.4, 0.5)]
    rules += [("rrf:60", rrf(60)), ("rrf:10", rrf(10))]
    rules += [("oracle", None)]
    print("rule\t" + "\t".join(args.pools))
    data = [load(p) for p in args.pools]
    for name, rule in rules:
        row = []
        for qs in data:
            total = 0.0
            for q in qs:
                if q.size == 0:
                    continue
                want, c, b = q[:, 1], q[:, 2], q[:, 3]
                if name == "product":
                    total += rr(q[:, 4], want)
                elif name == "oracle":
                    total += max(rr(np.nan_to_num(c, nan=-9.0), want),
                                 rr(np.nan_to_num(b, nan=-1.0), want))
                else:
                    total += rr(rule(c, b), want)
            row.append(f"{total / len(qs):.4f}")
        print(name + "\t" + "\t".join(row))


if __name__ == "__main__":
    main()
