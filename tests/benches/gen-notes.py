#!/usr/bin/env python3
"""Synthetic notes for indexing-scale measurements: FILES files of SECTIONS sections, each a
heading and a paragraph of WORDS made-up words (seed 42), in folders of 500 files.

    python3 tests/benches/gen-notes.py OUT FILES SECTIONS WORDS
"""
import os, random, sys
out, files, sections, words = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(42)
syl = ["ka","lo","mi","ren","to","sa","vi","dun","el","or","pa","zu","qi","bar","nel","fo","ty","gra","sen","wu"]
lex = ["".join(rng.choice(syl) for _ in range(rng.randint(1,4))) for _ in range(20000)]
for f in range(files):
    d = os.path.join(out, f"d{f//500:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"note{f:06d}.md"), "w") as fh:
        fh.write(f"# Note {f} {rng.choice(lex)}\n\n")
        for s in range(sections):
            fh.write(f"## {rng.choice(lex)} {rng.choice(lex)}\n\n")
            fh.write(" ".join(rng.choice(lex) for _ in range(words)) + ".\n\n")
