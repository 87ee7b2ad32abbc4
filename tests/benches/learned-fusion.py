#!/usr/bin/env python3
"""Does a small learned combination of both sides' evidence fuse better than one weight? (issue #32)

Reads the candidates `dochash eval retrieval --modes hybrid --pool FILE` wrote for several dev
sets (with each set's queries.tsv, for the query's form) and fits a linear scorer over a few
features of each candidate — each side's standard score (as the product computes it), its
reciprocal rank, whether the side found it at all — and the same scores scaled by features of
the query and of the two lists (how sure each side is of its first candidate, the query's
length, a question's form, identifiers). The loss is listwise (softmax cross-entropy of the
wanted candidates against the query's others), each set weighing the same, with an L2 penalty.

It is judged leaving one set out: fitted on the others, scored on the one it never saw, which is
what a default shipped to notes no one here has seen must survive. Prints MRR@10 of the product's
z-score fusion at 0.4 and of the learned scorer per left-out set, and the paired difference.

  python3 tests/benches/learned-fusion.py --set NAME POOL.tsv QUERIES.tsv [--set ...] [--features base|query|all]

NumPy only; a measurement, not part of the product.
"""
import argparse
import importlib.util
import math
import pathlib
import re

import numpy as np

# The pool reader, the standard scores and MRR's reciprocal rank are fusion-rules.py's own.
_spec = importlib.util.spec_from_file_location(
    "fusion_rules", pathlib.Path(__file__).with_name("fusion-rules.py"))
fr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fr)
stats, rank_of, rr = fr.stats, fr.rank_of, fr.rr

QUESTION = re.compile(r"^(how|what|why|when|where|which|who|can|do|does|is|are|should|i |my )", re.I)
IDENT = re.compile(r"[A-Za-z0-9]+[_./:][A-Za-z0-9]|[a-z][A-Z]|\w\(\)")


def load_queries(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t")[0] for line in f if line.strip()]


def features(c, b, text, kind):
    (cm, cs), (bm, bs) = stats(c), stats(b)
    zc = np.where(np.isnan(c), 0.0, (c - cm) / cs)
    zb = (np.nan_to_num(b, nan=0.0) - bm) / bs
    rc, rb = rank_of(c), rank_of(b)
    base = [zc, zb, 10.0 / (10 + rc), 10.0 / (10 + rb), (~np.isnan(b)).astype(float)]
    if kind == "base":
        return np.stack(base, 1)
    sc = np.sort(zc)[::-1]
    sb = np.sort(zb)[::-1]
    q = [
        sc[0] - sc[min(1, sc.size - 1)],  # how far the semantic side's first stands out
        sb[0] - sb[min(1, sb.size - 1)],
        sc[0],
        sb[0],
        math.log(1 + len(text.split())),
        1.0 if QUESTION.match(text) or text.rstrip().endswith("?") else 0.0,
        1.0 if IDENT.search(text) else 0.0,
    ]
    if kind == "query":
        q = q[4:]
    inter = [zc * v for v in q] + [zb * v for v in q]
    return np.stack(base + inter, 1)


def fit(sets, dim, l2=1e-2, steps=400, lr=0.2):
    """Listwise softmax over each query's candidates, full-batch gradient descent (Adam)."""
    w = np.zeros(dim)
    w[0], w[1] = 0.4, 0.6  # start at the product's fusion
    m = np.zeros(dim)
    v = np.zeros(dim)
    for t in range(1, steps + 1):
        g = l2 * (w - np.r_[0.4, 0.6, np.zeros(dim - 2)])
        for qs in sets:
            gs = np.zeros(dim)
            n = 0
            for X, want in qs:
                if want.sum() == 0:
                    continue
                s = X @ w
                p = np.exp(s - s.max())
                p /= p.sum()
                y = want / want.sum()
                gs += X.T @ (p - y)
                n += 1
            g += gs / max(n, 1) / len(sets)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", nargs=3, action="append", metavar=("NAME", "POOL", "QUERIES"), required=True)
    ap.add_argument("--features", default="all", choices=["base", "query", "all"])
    ap.add_argument("--l2", type=float, default=1e-2)
    a = ap.parse_args()
    data = []
    for name, pool, queries in a.set:
        texts = load_queries(queries)
        qs = fr.load(pool)
        if len(qs) != len(texts):
            raise SystemExit(f"{pool}: {len(qs)} queries, {queries}: {len(texts)}")
        rows = []
        for arr, text in zip(qs, texts):
            if arr.size == 0:
                rows.append((None, None, None))
                continue
            X = features(arr[:, 2], arr[:, 3], text, a.features)
            rows.append((X, arr[:, 1], arr[:, 4]))
        data.append((name, rows))
    dim = next(X.shape[1] for _, rows in data for X, _, _ in rows if X is not None)
    print(f"features: {a.features} ({dim}), l2 {a.l2}")
    print("left out\tqueries\tz-score 0.4\tlearned\tdiff (se)\tup/down")
    for i, (name, rows) in enumerate(data):
        train = [[(X, y) for X, y, _ in r if X is not None] for j, (_, r) in enumerate(data) if j != i]
        w = fit(train, dim, a.l2)
        base, new = [], []
        for X, y, _ in rows:
            if X is None:
                base.append(0.0)
                new.append(0.0)
                continue
            base.append(rr(0.4 * X[:, 0] + 0.6 * X[:, 1], y))
            new.append(rr(X @ w, y))
        d = np.array(new) - np.array(base)
        se = d.std(ddof=1) / math.sqrt(d.size)
        print(f"{name}\t{len(rows)}\t{np.mean(base):.4f}\t{np.mean(new):.4f}\t{100 * d.mean():+.2f} ({100 * se:.2f})"
              f"\t{int((d > 0).sum())}/{int((d < 0).sum())}")
        print("  w = " + " ".join(f"{x:+.2f}" for x in w))


if __name__ == "__main__":
    main()
