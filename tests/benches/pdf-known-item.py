#!/usr/bin/env python3
"""A known-item set over PDFs made from a Markdown set: the same queries, answers moved to the
lines of the text dochash reads from each PDF.

usage: pdf-known-item.py MD_DOCS QUERIES TEXT_DIR OUT_PDF_QUERIES OUT_MD_QUERIES

MD_DOCS/NAME.md and QUERIES (query, file, first line, last line) are a known-item set;
TEXT_DIR/NAME.txt is `dochash eval text --out` of NAME.pdf, made from NAME.md. An answer is
found in the text by its words: the first and the last N words it shows (HTML comments and
link targets are not shown), the end within 1.5 times the answer's length of the start. A query
whose answer is not found so is dropped from both outputs, so OUT_MD_QUERIES is the same subset
of the original set.
"""
import bisect, re, sys

N = 8
WORD = re.compile(r"[^\W_]+")

def shown(text):
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return text

def tokens_with_lines(lines):
    toks, at = [], []
    for i, l in enumerate(lines, 1):
        for w in WORD.findall(l):
            toks.append(w.lower())
            at.append(i)
    return toks, at

def find_all(toks, gram):
    n = len(gram)
    first = gram[0]
    return [i for i, t in enumerate(toks) if t == first and toks[i:i + n] == gram]

def main():
    md_dir, queries, text_dir, out_pdf, out_md = sys.argv[1:6]
    kept = dropped = 0
    cache = {}
    with open(queries) as q, open(out_pdf, "w") as op, open(out_md, "w") as om:
        for row in q:
            query, f, first, last = row.rstrip("\n").split("\t")
            first, last = int(first), int(last)
            stem = f.rsplit(".", 1)[0]
            if f not in cache:
                md = open(f"{md_dir}/{f}", encoding="utf-8").read().split("\n")
                try:
                    txt = open(f"{text_dir}/{stem}.txt", encoding="utf-8").read().split("\n")
                    cache[f] = (md, tokens_with_lines(txt))
                except FileNotFoundError:
                    cache[f] = (md, None)
            md, pdf = cache[f]
            answer = [w.lower() for w in WORD.findall(shown("\n".join(md[first - 1:last])))]
            if pdf is None or len(answer) < N:
                dropped += 1
                continue
            toks, at = pdf
            head, tail = answer[:N], answer[-N:]
            found = None
            for s in find_all(toks, head):
                window = toks[s:s + int(len(answer) * 1.5) + N]
                ends = find_all(window, tail)
                if ends:
                    found = (at[s], at[s + ends[0] + N - 1])
                    break
            if found is None:
                dropped += 1
                continue
            op.write(f"{query}\t{stem}.pdf\t{found[0]}\t{found[1]}\n")
            om.write(row)
            kept += 1
    print(f"kept {kept}, dropped {dropped}", file=sys.stderr)

main()
