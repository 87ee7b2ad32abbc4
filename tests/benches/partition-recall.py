#!/usr/bin/env python3
"""How much of the exact top 10 the lists nearest a query hold, at each share of rows scanned.

The question behind the partitioned first stage (`index::partition`): if the vectors are split
into lists by spherical k-means and a query scans only the lists whose centroids are nearest to
it, how many of its true 10 nearest vectors (exact cosine) are in the lists it scans? This is
the partition's own loss, before the code filter's: the rows of scanned lists are ranked
exactly here.

Reads raw little-endian f32 vectors (what `dochash bench recall --cache DIR` stores: one
`emb-*.f32` file of the corpus's sentences, one of the queries), 384 wide unless told:

  python3 tests/benches/partition-recall.py --vectors S.f32 --queries Q.f32 --sides 16,32

and prints, per partition, recall@10 at shares of 5, 10, 15, 20, 25 and 30 % of the rows:
`flat K` (one level of K lists, each row in its nearest list), `two-level A×A` (the product's
layout: A coarse lists, A fine lists under each, a row in the nearest fine list under its two
nearest coarse ones) and the same fine centroids with every row in its nearest one of all.

NumPy only; a measurement, not part of the product.
"""
import argparse

import numpy as np

SHARES = [0.05, 0.10, 0.15, 0.20, 0.25, 0.30]


def kmeans(x, k, rng, rounds=8):
    k = min(k, len(x))
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(rounds):
        a = nearest(x, c)
        for j in range(k):
            m = x[a == j]
            if len(m):
                s = m.sum(0)
                c[j] = s / max(np.linalg.norm(s), 1e-9)
    return c


def nearest(x, c, top=1):
    out = []
    for s in range(0, len(x), 20000):
        sc = x[s:s + 20000] @ c.T
        out.append(np.argsort(-sc, axis=1)[:, :top] if top > 1 else np.argmax(sc, axis=1))
    return np.concatenate(out)


def report(name, lists, query_scores, exact, n):
    k = query_scores.shape[1]
    sizes = np.bincount(lists, minlength=k)
    order = np.argsort(-query_scores, axis=1)
    cells = []
    for share in SHARES:
        hit = scanned = 0
        for qi in range(len(exact)):
            cum = np.cumsum(sizes[order[qi]])
            m = min(int(np.searchsorted(cum, share * n)) + 1, k)
            probed = np.zeros(k, bool)
            probed[order[qi][:m]] = True
            scanned += cum[m - 1]
            hit += probed[lists[exact[qi]]].sum()
        cells.append(f"{scanned / len(exact) / n:.3f}: {hit / exact.size:.4f}")
    print(f"{name:34s}", "  ".join(cells), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--sides", default="16,32", help="A for A×A lists, comma-separated")
    ap.add_argument("--sample", type=int, default=100000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    s = np.fromfile(a.vectors, dtype="<f4").reshape(-1, a.dim)
    q = np.fromfile(a.queries, dtype="<f4").reshape(-1, a.dim)
    n = len(s)
    exact = np.argsort(-(q @ s.T), axis=1)[:, :10]
    print(f"{n} vectors, {len(q)} queries; cells: share of rows scanned: recall@10")
    for side in [int(x) for x in a.sides.split(",")]:
        sample = s[rng.choice(n, min(n, a.sample), replace=False)]
        flat = kmeans(sample, side * side, rng)
        report(f"flat {side * side}", nearest(s, flat), q @ flat.T, exact, n)
        coarse = kmeans(sample, side, rng)
        of = nearest(sample, coarse)
        fine = np.zeros((side * side, a.dim), np.float32)
        for c in range(side):
            f = kmeans(sample[of == c], side, rng) if (of == c).any() else coarse[c:c + 1]
            fine[c * side:c * side + side] = f[np.arange(side) % len(f)]
        two = nearest(s, coarse, top=2)
        lists = np.empty(n, np.int64)
        for i in range(0, n, 20000):
            block = s[i:i + 20000]
            best = np.full(len(block), -np.inf)
            for col in range(2):
                cs = two[i:i + 20000, col]
                for c in np.unique(cs):
                    rows = np.where(cs == c)[0]
                    sc = block[rows] @ fine[c * side:(c + 1) * side].T
                    arg = np.argmax(sc, axis=1)
                    val = sc[np.arange(len(rows)), arg]
                    better = val > best[rows]
                    best[rows[better]] = val[better]
                    lists[i + rows[better]] = c * side + arg[better]
        report(f"two-level {side}x{side}", lists, q @ fine.T, exact, n)
        report(f"  same centroids, nearest of all", nearest(s, fine), q @ fine.T, exact, n)


if __name__ == "__main__":
    main()
