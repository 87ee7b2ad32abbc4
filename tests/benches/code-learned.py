#!/usr/bin/env python3
"""Can a *learned* 64-bit code beat ITQ under the weighted (asymmetric) filter?

The question `code-bounds.py` leaves open: it bounds codes of ITQ's linear projection; this
trains codes of learned projections — linear, or a residual MLP over the pooled embedding —
with losses aimed at the filter's measure, and reports the candidates each needs for
recall@10 >= TARGET, measured exactly as `bench recall --target` and `code-bounds.py` measure
it (a query's true top 10 by exact cosine, the filter's full ranking, ties to the smaller index).

Training sees the corpus only: each corpus passage is a training query whose teacher
neighbours are its 10 nearest other passages by cosine. 1,000 corpus passages are held out as
validation queries (they stay in the corpus, and are never trained on as queries), and the
step is picked on them; the test queries are only scored.

Scoring is the product's weighted filter: a query keeps its real-valued projection g(q), a
passage keeps sign(f(x)), and candidates are ordered by g(q) · sign(f(x)) (the same order as
summing |g_j(q)| where the bits disagree). Codes are trained through the sign with a
straight-through tanh.

Losses
  rank    mean log(1 + smooth rank) of each teacher neighbour among all non-neighbours
  tail    rank, plus the mean of the worst 5 % of pairs in the batch (the 0.99 point is
          set by the hardest pairs)
  kl      KL from the teacher's softmax over the corpus (cosine / 0.05) to the code's

  python3 tests/benches/code-learned.py CORPUS.f32 QUERIES.f32 [--bits 64] [--device cuda]
      [--configs all|grid|cpu|NAME,...] [--steps N] [--every N] [--seeds N] [--json FILE]

`--configs cpu` is the sweep the product's recipe (`train::ranked`) was chosen from: a pool of
sampled passages per step instead of the whole corpus, hidden widths 256 / 512 / 2048.

PyTorch (ran on a GPU lent for one session); a measurement, not part of the product.
"""
import argparse
import json
import math
import time

import numpy as np
import torch


def load(path, dim, device):
    a = np.fromfile(path, dtype="<f4").reshape(-1, dim).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    return torch.tensor(a, device=device)


def teacher_top(q, x, k, exclude_self=False, chunk=2048):
    out = []
    for s in range(0, len(q), chunk):
        sc = q[s : s + chunk] @ x.T
        if exclude_self:
            idx = torch.arange(s, min(s + chunk, len(q)), device=x.device)
            sc[torch.arange(len(idx)), idx] = -math.inf
        out.append(sc.topk(k, dim=1).indices)
    return torch.cat(out)


def candidates(score, true, target, self_idx=None):
    """Fewest candidates (a prefix of each query's ranking, higher score first, ties to the
    smaller index) holding `target` of all (query, true neighbour) pairs."""
    if self_idx is not None:
        score = score.clone()
        score[torch.arange(len(score)), self_idx] = -math.inf
    n = score.shape[1]
    idx = torch.arange(n, device=score.device)
    ranks = []
    for s in range(0, len(score), 256):
        sc, tr = score[s : s + 256], true[s : s + 256]
        st = sc.gather(1, tr).unsqueeze(2)
        above = (sc.unsqueeze(1) > st).sum(2)
        ties = ((sc.unsqueeze(1) == st) & (idx[None, None, :] < tr.unsqueeze(2))).sum(2)
        ranks.append((above + ties).flatten())
    pos = torch.cat(ranks).sort().values
    return int(pos[int(math.ceil(target * pos.numel())) - 1].item()) + 1


def itq(x, bits, seed, iters=50):
    g = torch.Generator(device="cpu").manual_seed(seed)
    mu = x.mean(0)
    _, _, vt = torch.linalg.svd(x - mu, full_matrices=False)
    p = vt[:bits].T
    v = (x - mu) @ p
    r = torch.linalg.qr(torch.randn(bits, bits, generator=g).to(x.device))[0]
    for _ in range(iters):
        u, _, wt = torch.linalg.svd(torch.sign(v @ r).T @ v)
        r = (u @ wt).T
    return mu, p @ r


class Head(torch.nn.Module):
    """ITQ's projection plus an optional residual MLP (zero-initialised, so training starts
    at ITQ exactly)."""

    def __init__(self, mu, w, scale, hidden):
        super().__init__()
        self.register_buffer("mu", mu.clone())
        self.register_buffer("scale", scale.clone())
        self.w = torch.nn.Parameter(w.clone())
        self.mlp = None
        if hidden:
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(w.shape[0], hidden),
                torch.nn.GELU(),
                torch.nn.Linear(hidden, w.shape[1]),
            )
            torch.nn.init.zeros_(self.mlp[2].weight)
            torch.nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x):
        z = (x - self.mu) @ self.w
        if self.mlp is not None:
            z = z + self.mlp(x) * self.scale
        return z


def score_all(code_head, query_head, x, q):
    with torch.no_grad():
        b = torch.sign(code_head(x))
        return query_head(q) @ b.T


def train(cfg, x, q, true_q, neigh, val, steps, device, log):
    bits = cfg["bits"]
    torch.manual_seed(cfg["seed"])
    mu, w = itq(x, bits, cfg["seed"])
    scale = ((x - mu) @ w).std(0)
    code_head = Head(mu, w, scale, cfg["hidden"]).to(device)
    query_head = Head(mu, w, scale, cfg["hidden"]).to(device) if cfg["separate"] else code_head
    params = list(code_head.parameters()) + (
        list(query_head.parameters()) if cfg["separate"] else []
    )
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg["lr"])
    n = len(x)
    train_idx = torch.tensor(
        sorted(set(range(n)) - set(val.tolist())), device=device
    )
    gen = torch.Generator(device="cpu").manual_seed(cfg["seed"])

    def evaluate():
        sv = score_all(code_head, query_head, x, x[val])
        sq = score_all(code_head, query_head, x, q)
        return candidates(sv, neigh[val], 0.99, self_idx=val), candidates(sq, true_q, 0.99)

    v0, t0 = evaluate()
    best = (v0, t0, 0)
    hist = [(0, v0, t0)]
    for step in range(1, steps + 1):
        pick = train_idx[torch.randint(len(train_idx), (cfg["batch"],), generator=gen).to(device)]
        pool = cfg.get("pool", 0)
        if pool and pool < n:
            cand = torch.randperm(n, generator=gen)[:pool].to(device)
        else:
            cand = torch.arange(n, device=device)
        z = code_head(x[cand])
        sd = z.detach().std(0, keepdim=True)

        def st_sign(z):
            t = torch.tanh(z / sd)
            return torch.sign(z).detach() + t - t.detach()

        b = st_sign(z)
        g = query_head(x[pick])
        s = g @ b.T  # batch × pool
        row_sd = s.detach().std(1, keepdim=True)
        s = s / row_sd
        if cfg["loss"] == "kl":
            s = s.clone()
            s[torch.arange(len(pick)), pick] = -1e4
            with torch.no_grad():
                tl = (x[pick] @ x.T) / 0.05
                tl[torch.arange(len(pick)), pick] = -1e4
                tp = torch.softmax(tl, 1)
            loss = -(tp * torch.log_softmax(s / cfg["temp"], 1)).sum(1).mean()
        else:
            nb = neigh[pick]  # batch × 10
            bt = st_sign(code_head(x[nb.flatten()])).view(len(pick), nb.shape[1], -1)
            st = (g.unsqueeze(1) * bt).sum(2) / row_sd  # batch × 10
            mask = (cand[None, :] != pick[:, None]) & ~(cand[None, None, :] == nb[:, :, None]).any(1)
            r = (torch.sigmoid((s.unsqueeze(1) - st.unsqueeze(2)) / cfg["temp"]) * mask.unsqueeze(1)).sum(2)
            r = r * (n / len(cand))
            lr_ = torch.log1p(r)
            loss = lr_.mean()
            if cfg["loss"] in ("tail", "cvar"):
                k = max(1, int(lr_.numel() * cfg.get("share", 0.05)))
                worst = lr_.flatten().topk(k).values.mean()
                loss = loss + worst if cfg["loss"] == "tail" else worst
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg["every"] == 0 or step == steps:
            v, te = evaluate()
            hist.append((step, v, te))
            if v < best[0]:
                best = (v, te, step)
    out = dict(cfg, start_val=v0, start_test=t0, best_val=best[0], test_at_best=best[1],
               best_step=best[2], hist=hist)
    log(out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("queries")
    ap.add_argument("--name", default="corpus")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--configs", default="all", help="comma list of config names, or all")
    ap.add_argument("--seeds", type=int, default=1, help="train each config with this many seeds")
    ap.add_argument("--json", help="append one JSON line per run to this file")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N corpus texts (smoke test)")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    x = load(a.corpus, a.dim, a.device)
    if a.limit:
        x = x[: a.limit]
    q = load(a.queries, a.dim, a.device)
    n = len(x)
    true_q = teacher_top(q, x, 10)
    neigh = teacher_top(x, x, 10, exclude_self=True)
    val = torch.randperm(n, generator=torch.Generator().manual_seed(7))[: min(1000, n // 5)].to(a.device)
    print(f"{a.name}: corpus {n}, queries {len(q)}, {a.bits} bits, device {a.device}", flush=True)
    for seed in range(3):
        mu, w = itq(x, a.bits, seed)
        px, pq = (x - mu) @ w, (q - mu) @ w
        print(f"  itq seed {seed}: weighted {candidates(pq @ torch.sign(px).T, true_q, 0.99)}, "
              f"hamming {candidates(torch.sign(pq) @ torch.sign(px).T, true_q, 0.99)}, "
              f"float {candidates(pq @ px.T, true_q, 0.99)}", flush=True)

    base = dict(bits=a.bits, seed=0, batch=512, every=a.every, lr=1e-3, temp=0.1)
    configs = {
        "lin-rank": dict(hidden=0, separate=False, loss="rank"),
        "lin-rank-sep": dict(hidden=0, separate=True, loss="rank"),
        "mlp-rank": dict(hidden=1024, separate=False, loss="rank"),
        "mlp-rank-sep": dict(hidden=1024, separate=True, loss="rank"),
        "mlp-tail": dict(hidden=1024, separate=False, loss="tail"),
        "mlp-kl": dict(hidden=1024, separate=False, loss="kl", temp=0.05),
        "mlp-rank-t03": dict(hidden=1024, separate=False, loss="rank", temp=0.3),
        "mlp-rank-lr3e-4": dict(hidden=1024, separate=False, loss="rank", lr=3e-4),
        "lin-rank-lr1e-4": dict(hidden=0, separate=False, loss="rank", lr=1e-4),
        "mlp-tail-sep": dict(hidden=1024, separate=True, loss="tail"),
        "mlp2048-tail-lr3e-4": dict(hidden=2048, separate=False, loss="tail", lr=3e-4),
    }
    for hidden in (0, 2048):
        for loss, share in (("tail", 0.05), ("cvar", 0.05), ("cvar", 0.02)):
            for lr in (3e-4, 1e-4):
                for sep in (False, True):
                    configs[f"h{hidden}-{loss}{share}-lr{lr}-{'sep' if sep else 'shared'}"] = dict(
                        hidden=hidden, separate=sep, loss=loss, share=share, lr=lr)
    for hidden in (256, 512, 2048):
        for pool in (4096, 0):
            for batch in (256, 512):
                configs[f"cpu-h{hidden}-pool{pool}-b{batch}"] = dict(
                    hidden=hidden, separate=False, loss="tail", share=0.05, lr=3e-4, pool=pool, batch=batch)
    names = list(configs) if a.configs == "all" else a.configs.split(",")
    if a.configs == "cpu":
        names = [k for k in configs if k.startswith("cpu-")]
    if a.configs == "grid":
        names = [k for k in configs if k.startswith("h")]
    first = list(names)
    for extra in range(1, a.seeds):
        for k in first:
            configs[f"{k}-s{extra}"] = dict(configs[k], seed=extra)
            names.append(f"{k}-s{extra}")

    def log(o):
        line = {k: v for k, v in o.items() if k != "hist"}
        print("  " + json.dumps(line), flush=True)
        print("    hist " + " ".join(f"{s}:{v}/{t}" for s, v, t in o["hist"]), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(dict(o, corpus=a.name)) + "\n")

    for name in names:
        t = time.time()
        train(dict(base, name=name, **configs[name]), x, q, true_q, neigh, val, a.steps, a.device, log)
        print(f"    {name}: {time.time() - t:.1f} s", flush=True)


if __name__ == "__main__":
    main()
