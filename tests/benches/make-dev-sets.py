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

- `faq-questions` and `linked-references` (with `--sources`): a question in a person's words ->
  its answer (the question removed), and a cross-reference's sentence -> the section it points to
  (the sentence removed), from the reStructuredText documentation in the source archives of four
  Python packages, unpacked into one folder:

    pip download --no-deps --no-binary :all: django==5.1.4 sqlalchemy==2.0.36 celery==5.4.0 \
        scrapy==2.12.0 -d SRC && for f in SRC/*.tar.gz; do tar xzf "$f" -C SRC; done

Usage: python3 tests/benches/make-dev-sets.py --shared ../shared --out target/dev-sets [--sources SRC]
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


# --- Sets from reStructuredText documentation (Python packages' source archives) -------------
#
# The documents are turned into Markdown line by line, so that every line number stays the
# source's: a section title becomes `#`… at its level and its underline (and overline) a blank
# line; `.. _label:` targets become blank lines; `:role:`text <target>`` becomes `text` (a
# cross-reference to a section becomes a Markdown link to its file and heading).

RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
RST_LABEL = re.compile(r"^\.\. _([^:`]+):\s*$")
RST_ROLE = re.compile(r":([a-z:]+):`([^`]+)`")
RST_REF_TEXT = re.compile(r"^(.*?)\s*<([^>]+)>$")


def rst_sections(lines):
    """Section titles of an rST file: [(line index, level, title)], levels by the order the
    underline styles first appear."""
    styles = []
    out = []
    i = 0
    while i + 1 < len(lines):
        over = RST_UNDERLINE.match(lines[i])
        if over and i + 2 < len(lines) and lines[i + 1].strip() and RST_UNDERLINE.match(lines[i + 2]):
            style, title, at = (lines[i][0], True), lines[i + 1].strip(), i + 1
            i += 3
        elif (lines[i].strip() and not lines[i].startswith(" ") and RST_UNDERLINE.match(lines[i + 1])
              and len(lines[i + 1].rstrip()) >= len(lines[i].rstrip()) and not RST_UNDERLINE.match(lines[i])):
            style, title, at = (lines[i + 1][0], False), lines[i].strip(), i
            i += 2
        else:
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        out.append((at, styles.index(style) + 1, title))
    return out


def rst_labels(rel, lines, sections):
    """`.. _label:` targets placed right before a section title: label -> (file, title line)."""
    at = {s[0] for s in sections}
    found = {}
    for i, l in enumerate(lines):
        m = RST_LABEL.match(l)
        if not m:
            continue
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or RST_LABEL.match(lines[j])
                                  or RST_UNDERLINE.match(lines[j])):
            if RST_UNDERLINE.match(lines[j]) and j + 1 in at:
                j += 1
                break
            j += 1
        if j in at:
            found[m.group(1).strip().lower()] = (rel, j)
    return found


def rst_role_text(role, body, titles):
    m = RST_REF_TEXT.match(body)
    text, target = (m.group(1), m.group(2)) if m else (None, body)
    if text is None:
        if role == "ref":
            text = titles.get(target.strip().lower(), target)
        else:
            text = target.lstrip("~!.").split(".")[-1] if role in ("class", "meth", "func", "attr", "mod", "exc", "data", "obj") else target
    return text, target.strip()


def rst_to_markdown(lines, sections, link=None, titles=None):
    """The Markdown text of an rST file, line for line. `link(target)` gives a Markdown link
    target for a `:ref:` label, or None."""
    titles = titles or {}
    heads = {at: level for at, level, _ in sections}
    out = []
    for i, l in enumerate(lines):
        if i in heads:
            out.append("#" * min(heads[i], 6) + " " + l.strip())
        elif RST_UNDERLINE.match(l) and (i - 1 in heads or i + 1 in heads):
            out.append("")
        elif RST_LABEL.match(l):
            out.append("")
        else:
            out.append(l)
    # Roles may run over a line end: replace them in the whole text, keeping its line ends.
    def role(m):
        text, target = rst_role_text(m.group(1), " ".join(m.group(2).split()), titles)
        dest = link(target) if (link and m.group(1) == "ref") else None
        if dest:
            text = f"[{text}]({dest})"
        elif m.group(1) not in ("ref", "doc", "term"):
            text = f"`{text}`"
        return text + "\n" * m.group(0).count("\n")
    return RST_ROLE.sub(role, "\n".join(out)).split("\n")


def section_end(sections, k, nlines, any_level=True):
    """The line index where section k's own text ends: the next title (of any level, or of the
    same or a higher level)."""
    at, level, _ = sections[k]
    for at2, level2, _ in sections[k + 1:]:
        if any_level or level2 <= level:
            return at2 - 1 if at2 > 0 else at2
    return nlines


def read_rst_tree(root, subdirs, exts=(".txt", ".rst")):
    files = {}
    for sub in subdirs:
        base = os.path.join(root, sub)
        if os.path.isfile(base):
            walk = [(os.path.dirname(base), [], [os.path.basename(base)])]
        else:
            walk = os.walk(base)
        for d, dirs, names in walk:
            dirs.sort()
            for n in sorted(names):
                if n.endswith(exts):
                    p = os.path.join(d, n)
                    rel = os.path.relpath(p, root)
                    with open(p, encoding="utf-8") as f:
                        files[rel] = f.read().split("\n")
    return files


def md_name(rel):
    return os.path.splitext(rel)[0] + ".md"


def faq(sources, out):
    """`faq-questions`: a question in a person's words -> its answer, the question itself
    removed. Docs are the FAQ pages of four projects (Django, SQLAlchemy, Celery, Scrapy),
    their titles removed, among those projects' user guides (titles kept)."""
    src = {
        "django": (find(sources, "Django-"), ["docs/faq"]),
        "sqlalchemy": (find(sources, "sqlalchemy-"), ["doc/build/faq"]),
        "celery": (find(sources, "celery-"), ["docs/faq.rst", "docs/userguide"]),
        "scrapy": (find(sources, "scrapy-"), ["docs/faq.rst", "docs/topics"]),
    }
    docs = {}
    queries = []
    for project, (root, subs) in src.items():
        for rel, lines in read_rst_tree(root, subs).items():
            sections = rst_sections(lines)
            md = rst_to_markdown(lines, sections)
            is_faq = "faq" in rel
            name = os.path.join(project, md_name(rel))
            if is_faq:
                for k, (at, level, title) in enumerate(sections):
                    words = title.split()
                    end = section_end(sections, k, len(lines))
                    body = [j for j in range(at + 2, end) if md[j].strip()]
                    if level < 2 or len(words) < 4 or len(body) < 2:
                        continue
                    q = RST_ROLE.sub(lambda m: rst_role_text(m.group(1), m.group(2), {})[0], title)
                    q = q.replace("``", "").replace("*", "")
                    md[at] = ""
                    queries.append((q, name, body[0] + 1, end))
            docs[name] = "\n".join(md)
    write_set(out, "faq-questions", docs, queries)


def linked(sources, out):
    """`linked-references`: the sentence of a cross-reference -> the section it points to.
    Docs are Django's topic guides, how-tos and reference; each query is a sentence that refers to a
    section elsewhere, with the reference shown as its text, and that sentence is removed from
    the docs (so the link is not in the corpus either). The other references stay, as Markdown
    links to the file and heading."""
    root = find(sources, "Django-")
    files = read_rst_tree(root, ["docs/topics", "docs/howto", "docs/ref"])
    sections = {rel: rst_sections(lines) for rel, lines in files.items()}
    labels = {}
    titles = {}
    for rel, lines in files.items():
        for label, (r, at) in rst_labels(rel, lines, sections[rel]).items():
            labels[label] = (r, at)
            titles[label] = lines[at].strip()

    def slug(t):
        return re.sub(r"[^a-z0-9 -]", "", t.lower()).strip().replace(" ", "-")

    def link(target):
        hit = labels.get(target.lower())
        if not hit:
            return None
        r, at = hit
        return f"/{md_name(r)}#{slug(files[r][at].strip())}"

    rng = random.Random(20261206)
    candidates = []
    for rel, lines in sorted(files.items()):
        secs = sections[rel]
        heads = {at for at, _, _ in secs}
        # Paragraphs of prose (not indented: no code, no directives' bodies).
        i = 0
        while i < len(lines):
            if not lines[i].strip() or lines[i].startswith((" ", "..", "\t")) or i in heads \
                    or RST_UNDERLINE.match(lines[i]):
                i += 1
                continue
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(" ") \
                    and i not in heads and not RST_UNDERLINE.match(lines[i]):
                para.append(i)
                i += 1
            text = flatten("\n".join(lines[p] for p in para))[0]
            for m in re.finditer(r"[^.!?]*?:ref:`[^`]+`[^.!?]*[.!?]", text):
                sent = m.group(0).strip()
                refs = re.findall(r":ref:`([^`]+)`", sent)
                targets = [rst_role_text("ref", b, titles)[1].lower() for b in refs]
                targets = [t for t in targets if t in labels]
                if len(targets) != 1 or len(sent.split()) < 8 or len(sent) > 400:
                    continue
                trel, tat = labels[targets[0]]
                k = next(k for k, s in enumerate(sections[trel]) if s[0] == tat)
                # The target's own text; a title followed at once by a subsection counts its
                # subsections.
                end = section_end(sections[trel], k, len(files[trel]))
                if not any(files[trel][j].strip() for j in range(tat + 2, end)):
                    end = section_end(sections[trel], k, len(files[trel]), any_level=False)
                if trel == rel and any(p >= tat and p < end for p in para):
                    continue
                candidates.append((rel, para, sent, trel, tat, end))
    everything = "\n".join(flatten("\n".join(ls))[0] for ls in files.values())
    candidates = [c for c in candidates if everything.count(c[2]) == 1]
    rng.shuffle(candidates)
    chosen = candidates[:300]
    removed = {}
    for rel, para, sent, *_ in chosen:
        removed.setdefault(rel, []).append((para, sent))
    md = {}
    for rel, lines in files.items():
        lines = list(lines)
        for para, sent in removed.get(rel, []):
            # Cut the sentence out of its paragraph's lines, keeping every line number.
            joined = "\n".join(lines[p] for p in para)
            flat, where = flatten(joined)
            start = flat.find(sent)
            if start < 0:
                continue
            cut = set()
            for k in range(len(sent)):
                cut.add(where[start + k])
            keep = [(ch, i in cut and ch != "\n") for i, ch in enumerate(joined)]
            new = "".join(c for c, gone in keep if not gone).split("\n")
            for p, l in zip(para, new):
                lines[p] = l
        md[md_name(rel)] = "\n".join(rst_to_markdown(lines, sections[rel], link, titles))
    queries = []
    for rel, para, sent, trel, tat, end in chosen:
        q = RST_ROLE.sub(lambda m: rst_role_text(m.group(1), m.group(2), titles)[0], sent)
        q = q.replace("``", "").replace("*", "")
        queries.append((q, md_name(trel), tat + 1, end))
    write_set(out, "linked-references", md, queries)


def flatten(text):
    """`text` with each run of white space as one space and the ends trimmed, and for each of
    its characters the index in `text` it came from."""
    flat, where = [], []
    for i, ch in enumerate(text):
        if ch.isspace():
            if flat and flat[-1] != " ":
                flat.append(" ")
                where.append(i)
        else:
            flat.append(ch)
            where.append(i)
    while flat and flat[-1] == " ":
        flat.pop()
        where.pop()
    return "".join(flat), where


def find(sources, prefix):
    for n in sorted(os.listdir(sources)):
        p = os.path.join(sources, n)
        if n.startswith(prefix) and os.path.isdir(p):
            return p
    raise SystemExit(f"{sources}: no unpacked {prefix}* source archive (see the module doc)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", default="target/dev-sets")
    ap.add_argument("--sources", help="a folder of unpacked source archives (see above) for "
                    "faq-questions and linked-references")
    a = ap.parse_args()
    stsb(a.shared, a.out)
    nodejs_lead(a.shared, a.out)
    if a.sources:
        faq(a.sources, a.out)
        linked(a.sources, a.out)


if __name__ == "__main__":
    main()
