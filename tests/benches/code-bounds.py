#!/usr/bin/env python3
"""How far can any code of a given length beat ITQ under the weighted (asymmetric) filter?

Reads the unit-length embeddings `dochash bench recall --cache DIR` wrote (`DIR/emb-*.f32`,
little-endian f32, DIM floats a text: one file for the corpus, one for the queries) and prints
the candidates each scheme needs for recall@10 >= TARGET, measured as `bench recall --target`
measures it (a query's true top 10 by exact cosine; the filter's full ranking; ties to the
smaller index):

  itq-weighted   ITQ codes, the query's projections as weights (the product's filter)
  float-bound    the same projection left unquantised: no code that keeps one bit per projected
                 direction and is scored against the query's projections can need fewer
  lsq-decoder    the same bits, the query scored against the least-squares reconstruction of
                 each text from its bits (an MSE-optimal asymmetric decoder)
  pq4            product quantisation of the projection, 4 dims × 16 centroids per 4 bits
  sq-KxB         K ITQ-rotated principal directions, B bits each (equal-mass levels, bin means)

  python3 tests/benches/code-bounds.py CORPUS.f32 QUERIES.f32 [--bits 64] [--seeds 3]

NumPy only; a measurement, not part of the product.
"""
import argparse

import numpy as np


def load(path, dim):
    a = np.fromfile(path, dtype="<f4").reshape(-1, dim)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def candidates(score, true, n, target):
    """Fewest candidates (prefix of each query's ranking by score, higher first) holding
    `target` of all (query, true neighbour) pairs."""
    order = np.argsort(-score, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(len(order))[:, None], order] = np.arange(n)[None, :]
    pos = np.sort(np.take_along_axis(rank, true, axis=1).ravel())
    return int(pos[int(np.ceil(target * pos.size)) - 1] + 1)


def itq(x, bits, rng, iters=50):
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    p = vt[:bits].T
    v = (x - mu) @ p
    r = np.linalg.qr(rng.standard_normal((bits, bits)))[0]
    for _ in range(iters):
        u, _, wt = np.linalg.svd(np.sign(v @ r).T @ v)
        r = (u @ wt).T
    return mu, p @ r


def kmeans(x, k, rng, iters=25):
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        a = ((x**2).sum(1)[:, None] - 2 * x @ c.T + (c**2).sum(1)[None]).argmin(1)
        for j in range(k):
            if (a == j).any():
                c[j] = x[a == j].mean(0)
    return c, a


def scalar_quantised(v, levels):
    out = np.empty_like(v)
    for j in range(v.shape[1]):
        cuts = np.quantile(v[:, j], np.linspace(0, 1, levels + 1)[1:-1])
        b = np.searchsorted(cuts, v[:, j])
        out[:, j] = np.array([v[b == l, j].mean() for l in range(levels)])[b]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("queries")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.99)
    a = ap.parse_args()
    x, q = load(a.corpus, a.dim), load(a.queries, a.dim)
    n = len(x)
    true = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    print(f"corpus {n}, queries {len(q)}, {a.bits} bits, recall@10 >= {a.target}")
    for seed in range(a.seeds):
        rng = np.random.default_rng(seed)
        mu, w = itq(x, a.bits, rng)
        px, pq = (x - mu) @ w, (q - mu) @ w
        codes = np.sign(px)
        row = {
            "itq-weighted": candidates(pq @ codes.T, true, n, a.target),
            "float-bound": candidates(pq @ px.T, true, n, a.target),
        }
        dec = np.linalg.lstsq(codes, x - mu, rcond=None)[0]
        row["lsq-decoder"] = candidates((q - mu) @ dec.T @ codes.T, true, n, a.target)
        score = np.zeros((len(q), n), dtype=np.float32)
        for s in range(a.bits // 4):
            c, assign = kmeans(px[:, 4 * s : 4 * s + 4], 16, rng)
            score += (pq[:, 4 * s : 4 * s + 4] @ c.T)[:, assign]
        row["pq4"] = candidates(score, true, n, a.target)
        for per in (2, 4):
            k = a.bits // per
            mu_k, w_k = itq(x, k, rng)
            pk = (x - mu_k) @ w_k
            row[f"sq-{k}x{per}"] = candidates(
                ((q - mu_k) @ w_k) @ scalar_quantised(pk, 2**per).T, true, n, a.target
            )
        print(f"seed {seed}: " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
