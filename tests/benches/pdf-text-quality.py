#!/usr/bin/env python3
"""How close a PDF reader's text is to the document the PDF was made from.

usage: pdf-text-quality.py SOURCES_DIR TEXT_DIR [TEXT_DIR ...]

SOURCES_DIR holds the originals (NAME.md); each TEXT_DIR holds one reader's text of NAME.pdf
as NAME.txt. Words are runs of letters and digits, lower-cased. Printed per TEXT_DIR: word
recall and precision (as multisets, so a word counts as often as it occurs), the share of the
source's word pairs (two words in a row) also found in a row in the text (reading order: a
multi-column page read across its columns loses them), and words split by a line-end hyphen
left in ("wher-" "ever").
"""
import collections, os, re, sys

WORD = re.compile(r"[^\W_]+", re.UNICODE)

def words(text):
    return [w.lower() for w in WORD.findall(text)]

def main():
    src, outs = sys.argv[1], sys.argv[2:]
    names = sorted(f[:-3] for f in os.listdir(src) if f.endswith(".md"))
    for out in outs:
        hit = total_src = total_out = 0
        pairs_hit = pairs = 0
        split = 0
        files = 0
        for n in names:
            p = os.path.join(out, n + ".txt")
            if not os.path.exists(p):
                continue
            files += 1
            s = words(open(os.path.join(src, n + ".md"), encoding="utf-8", errors="replace").read())
            t_text = open(p, encoding="utf-8", errors="replace").read()
            t = words(t_text)
            cs, ct = collections.Counter(s), collections.Counter(t)
            hit += sum((cs & ct).values())
            total_src += len(s)
            total_out += len(t)
            sp = collections.Counter(zip(s, s[1:]))
            tp = collections.Counter(zip(t, t[1:]))
            pairs_hit += sum((sp & tp).values())
            pairs += max(len(s) - 1, 0)
            split += len(re.findall(r"[a-z]-\s*\n\s*[a-z]", t_text))
        if files == 0:
            print(f"{out}: no text files")
            continue
        print(f"{out}\tfiles {files}\trecall {hit/total_src:.4f}\tprecision {hit/max(total_out,1):.4f}"
              f"\tpairs {pairs_hit/max(pairs,1):.4f}\thyphen-splits {split}")

main()
