#!/usr/bin/env python3
"""Builds known-item retrieval dev sets from ../shared data for `dochash eval retrieval`.

Each set is a folder with `docs/` (the notes searched) and `queries.tsv` (query, file, first line,
last line; a hit is a result in that file whose lines overlap the range). Deterministic: the same
input gives the same sets.

- `stsb-paraphrase`: a question in other words. Docs are STS-B sentences (train + dev), one per
  paragraph, 40 to a file, grouped by genre; each query is the paraphrase (gold score >= 4) of a
  sentence that occurs once in the docs. Meaning decides; shared words help less.
- `nodejs-lead`: a synopsis of a section. Docs are the Node.js documents with the first sentence of
  400 sections removed; each query is that sentence, and the answer is the section's body.

Usage: python3 tests/benches/make-dev-sets.py --shared ../shared --out target/dev-sets
"""

import argparse
import os
import random
import re


def write_set(out, name, docs, queries):
    root = os.path.join(out, name)
    os.makedirs(os.path.join(root, "docs"), exist_ok=True)
    for rel, text in docs.items():
        path = os.path.join(root, "docs", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    with open(os.path.join(root, "queries.tsv"), "w", encoding="utf-8") as f:
        for q, rel, a, b in queries:
            f.write(f"{q}\t{rel}\t{a}\t{b}\n")
    print(f"{name}: {len(docs)} files, {len(queries)} queries -> {root}")


def stsb(shared, out):
    rows = []
    for split in ("sts-train.tsv", "sts-dev.tsv"):
        with open(os.path.join(shared, "data", "stsb", split), encoding="utf-8") as f:
            for line in f:
                cols = line.rstrip("\n").split("\t")
                if len(cols) < 7:
                    continue
                rows.append((cols[0], float(cols[4]), cols[5].strip(), cols[6].strip()))
    count = {}
    for _, _, s1, s2 in rows:
        for s in (s1, s2):
            count[s.lower()] = count.get(s.lower(), 0) + 1
    rng = random.Random(20261129)
    # The searched sentences: every first sentence, plus second sentences of pairs that are not
    # queries (distractors), each once.
    pairs = [(g, s1, s2) for g, score, s1, s2 in rows if score >= 4.0 and count[s1.lower()] == 1
             and s1.lower() != s2.lower()]
    rng.shuffle(pairs)
    chosen = pairs[:500]
    asked = {s1 for _, s1, _ in chosen}
    seen = set()
    by_genre = {}
    for g, score, s1, s2 in rows:
        for s in (s1, s2) if score < 4.0 else (s1,):
            if s.lower() in seen:
                continue
            seen.add(s.lower())
            by_genre.setdefault(g, []).append(s)
    docs = {}
    where = {}
    for g, sents in sorted(by_genre.items()):
        rng.shuffle(sents)
        for i in range(0, len(sents), 40):
            rel = f"{g}/{g}-{i // 40:03d}.md"
            lines = [f"# {g.replace('main-', '').title()} notes {i // 40}", ""]
            for s in sents[i:i + 40]:
                if s in asked:
                    where[s] = (rel, len(lines) + 1)
                lines.append(s)
                lines.append("")
            docs[rel] = "\n".join(lines)
    queries = [(s2, *where[s1], where[s1][1]) for _, s1, s2 in chosen if s1 in where]
    write_set(out, "stsb-paraphrase", docs, queries)


HEADING = re.compile(r"^(#{2,6})\s+\S")


def nodejs_lead(shared, out):
    src = os.path.join(shared, "data", "notes-nodejs")
    rng = random.Random(20261130)
    docs = {}
    candidates = []
    for name in sorted(os.listdir(src)):
        if not name.endswith(".md"):
            continue
        with open(os.path.join(src, name), encoding="utf-8") as f:
            lines = f.read().split("\n")
        fence = False
        sections = []  # (heading line index, body start, body end) in 0-based indices
        for i, l in enumerate(lines):
            if l.startswith("```"):
                fence = not fence
            if not fence and HEADING.match(l):
                sections.append(i)
        bounds = []
        for k, h in enumerate(sections):
            end = sections[k + 1] if k + 1 < len(sections) else len(lines)
            bounds.append((h, end))
        for h, end in bounds:
            # The first prose paragraph under the heading: blank lines, HTML comments (YAML
            # metadata blocks span several lines), quotes, lists and tables are skipped.
            j = h + 1
            in_comment = False
            while j < end:
                l = lines[j].strip()
                if in_comment:
                    in_comment = "-->" not in l
                    j += 1
                    continue
                if l.startswith("<!--"):
                    in_comment = "-->" not in l
                    j += 1
                    continue
                if not l or l.startswith((">", "*", "-", "|")):
                    j += 1
                    continue
                break
            if j >= end or lines[j].startswith("```"):
                continue
            para = []
            k = j
            while k < end and lines[k].strip() and not lines[k].startswith("```"):
                para.append(k)
                k += 1
            text = " ".join(lines[p].strip() for p in para)
            m = re.match(r"(.+?[.!?])(\s|$)", text)
            if not m:
                continue
            first = m.group(1)
            if len(first.split()) < 8 or len(first) > 300 or not first[0].isupper():
                continue
            candidates.append((name, h, end, para, first))
        docs[name] = lines
    # A sentence that also appears elsewhere has no one answer.
    everything = "\n".join(" ".join(l.strip() for l in ls) for ls in docs.values())
    candidates = [c for c in candidates if everything.count(c[4]) == 1]
    rng.shuffle(candidates)
    chosen = sorted(candidates[:400], key=lambda c: (c[0], c[1]))
    queries = []
    for name, h, end, para, first in chosen:
        lines = docs[name]
        # Remove the sentence from its paragraph, keeping the line structure (and so every line
        # number) intact.
        rest = first
        for p in para:
            if not rest:
                break
            line = lines[p].strip()
            if rest.startswith(line):
                lines[p] = ""
                rest = rest[len(line):].strip()
            elif line.startswith(rest):
                lines[p] = line[len(rest):].strip()
                rest = ""
            else:
                break
        queries.append((first, name, h + 2, end))
    write_set(out, "nodejs-lead", {n: "\n".join(l) for n, l in docs.items()}, queries)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", default="target/dev-sets")
    a = ap.parse_args()
    stsb(a.shared, a.out)
    nodejs_lead(a.shared, a.out)


if __name__ == "__main__":
    main()
