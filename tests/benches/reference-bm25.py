#!/usr/bin/env python3
"""A plain BM25 (and dense, RRF) over windows: the references the lexical side is measured against (issue #32).

Every file of a dev set is cut into half-overlapping windows of 12 lines (a window every 6
lines); words are lower-cased runs of letters and digits, a short stop list removed, no
stemming; BM25 with k1 0.9 and b 0.4 (Anserini's defaults). A query's hit is the first window in
its file whose lines overlap its range, as `dochash eval retrieval` counts. Prints hit@1,
hit@10 and MRR@10 (JSON with --json), and with --ranks FILE each query's rank in the format of
`eval retrieval --ranks` (mode `reference`), for tests/benches/paired.py.

  python3 tests/benches/reference-bm25.py --docs D/docs --queries D/queries.tsv [--k1 0.9 --b 0.4]

With --dochash BIN --model M it also ranks the same windows by exact cosine of the model's f32
vectors (`dochash embed`, each window and query as one line; NumPy) and by reciprocal rank fusion
of the two lists (k 60): the issue's three reference rankers.

Pure Python (NumPy for the dense rankers); a measurement, not part of the product.
"""
import argparse
import collections
import json
import math
import os
import re

STOP = set("""a an and are as at be but by for if in into is it no not of on or such that the their
then there these they this to was will with""".split())
WORD = re.compile(r"[^\W_]+", re.UNICODE)


STEM = None
USE_STOP = True


def words(text):
    ws = [w for w in WORD.findall(text.lower()) if not (USE_STOP and w in STOP)]
    return STEM.stemWords(ws) if STEM else ws


def windows(docs, size=12, step=6):
    out = []  # (file, first line, last line, words)
    for d, dirs, names in os.walk(docs):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(d, n)
            rel = os.path.relpath(p, docs)
            try:
                with open(p, encoding="utf-8") as f:
                    lines = f.read().split("\n")
            except (UnicodeDecodeError, OSError):
                continue
            start = 0
            while True:
                chunk = lines[start:start + size]
                out.append((rel, start + 1, start + len(chunk), words("\n".join(chunk))))
                if start + size >= len(lines):
                    break
                start += step
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--k1", type=float, default=0.9)
    ap.add_argument("--b", type=float, default=0.4)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--ranks")
    ap.add_argument("--no-stop", action="store_true", help="keep the stop words")
    ap.add_argument("--stem", action="store_true", help="Snowball English stems (needs snowballstemmer)")
    ap.add_argument("--lines", type=int, default=12, help="window size in lines (a window every half)")
    ap.add_argument("--dochash", help="a dochash binary: also the dense and RRF references")
    ap.add_argument("--model", help="the model folder for --dochash")
    a = ap.parse_args()
    global STEM, USE_STOP
    USE_STOP = not a.no_stop
    if a.stem:
        import snowballstemmer
        STEM = snowballstemmer.stemmer("english")
    wins = windows(a.docs, a.lines, max(a.lines // 2, 1))
    n = len(wins)
    df = collections.Counter()
    postings = collections.defaultdict(list)
    for i, (_, _, _, ws) in enumerate(wins):
        for w, tf in collections.Counter(ws).items():
            df[w] += 1
            postings[w].append((i, tf))
    avg = sum(len(w[3]) for w in wins) / max(n, 1)
    norm = [a.k1 * (1 - a.b + a.b * len(w[3]) / avg) for w in wins]
    queries = [l.rstrip("\n").split("\t") for l in open(a.queries, encoding="utf-8") if l.strip()]
    bm25 = []
    for q, *_ in queries:
        score = collections.defaultdict(float)
        for w in set(words(q)):
            if w not in df:
                continue
            idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
            for i, tf in postings[w]:
                score[i] += idf * tf * (a.k1 + 1) / (tf + norm[i])
        bm25.append([i for i, _ in sorted(score.items(), key=lambda x: (-x[1], x[0]))[:100]])
    lists = {"bm25": bm25}
    if a.dochash:
        lists.update(dense_lists(a, wins, queries, bm25))
    ranks = {}
    for name, tops in lists.items():
        hit1 = hit10 = rr = 0.0
        ranks[name] = []
        for (q, rel, first, last), top in zip(queries, tops):
            first, last = int(first), int(last)
            rank = 0
            for r, i in enumerate(top[:10], 1):
                f, lo, hi, _ = wins[i]
                if f == rel and lo <= last and hi >= first:
                    rank = r
                    break
            ranks[name].append(rank)
            if rank:
                hit10 += 1
                hit1 += rank == 1
                rr += 1 / rank
        m = len(queries)
        res = {"mode": name, "hit_at_1": hit1 / m, "hit_at_10": hit10 / m,
               "mrr_at_10": rr / m, "queries": m, "windows": n}
        print(json.dumps(res) if a.json else
              f"{name} over windows: hit@1 {res['hit_at_1']:.4f}  hit@10 {res['hit_at_10']:.4f}  "
              f"MRR@10 {res['mrr_at_10']:.4f}  ({m} queries, {n} windows)")
    if a.ranks:
        with open(a.ranks, "w") as f:
            for name, rs in ranks.items():
                for i, r in enumerate(rs, 1):
                    f.write(f"{name}\t{i}\t{r}\n")


def embed(a, lines):
    import subprocess

    import numpy as np
    cmd = [a.dochash, "embed", "--model", a.model, "--offline", "--normalize", "--quiet"]
    text = "".join(" ".join(l.split()) + "\n" for l in lines)
    out = subprocess.run(cmd, input=text, capture_output=True, text=True, check=True).stdout
    return np.array([json.loads(l) for l in out.splitlines() if l.strip()], dtype=np.float32)


def dense_lists(a, wins, queries, bm25):
    """Exact cosine over the windows' text, and RRF (k 60) of it with BM25's best 100."""
    import numpy as np
    texts = {}
    for d, _, names in os.walk(a.docs):
        for n in names:
            p = os.path.join(d, n)
            try:
                with open(p, encoding="utf-8") as f:
                    texts[os.path.relpath(p, a.docs)] = f.read().split("\n")
            except (UnicodeDecodeError, OSError):
                pass
    w = embed(a, ["\n".join(texts[f][lo - 1:hi]) for f, lo, hi, _ in wins])
    qv = embed(a, [q for q, *_ in queries])
    dense, fused = [], []
    for i in range(len(queries)):
        s = w @ qv[i]
        top = [int(j) for j in np.argsort(-s, kind="stable")[:100]]
        dense.append(top)
        score = collections.defaultdict(float)
        for lst in (top, bm25[i]):
            for r, j in enumerate(lst, 1):
                score[j] += 1 / (60 + r)
        fused.append([j for j, _ in sorted(score.items(), key=lambda x: (-x[1], x[0]))])
    return {"dense": dense, "rrf": fused}


if __name__ == "__main__":
    main()
