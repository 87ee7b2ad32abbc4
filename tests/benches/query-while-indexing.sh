#!/bin/bash
# Query latency through a running owner while it indexes, against the same owner idle.
#
#   tests/benches/query-while-indexing.sh DOCHASH MODELS_DIR NOTES_DIR WORK
#
# DOCHASH: the binary; MODELS_DIR: a home's `models` folder holding the default model (so that
# nothing is fetched); NOTES_DIR: a few Markdown files to index first; WORK: a scratch folder.
# Starts `dochash watch` over NOTES_DIR, times 20 one-shot `dochash query --json` (each answered
# by the owner over its socket), then copies 150 synthetic notes in (gen-notes.py, 10 sections of
# 40 words each) and times 40 more while the owner indexes them; prints p50 / p90 / max in ms.
set -eu
BIN=$1; MODELS=$2; NOTES=$3; WORK=$4
H=$WORK/home; DOCS=$WORK/docs
rm -rf "$WORK"; mkdir -p "$H" "$DOCS"
ln -s "$MODELS" "$H/models"
cp "$NOTES"/*.md "$DOCS/"
python3 "$(dirname "$0")/gen-notes.py" "$WORK/gen" 150 10 40
export DOCHASH_HOME=$H
field() { "$BIN" status --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
"$BIN" index "$DOCS" --offline -q >/dev/null
"$BIN" watch --no-train --offline -q >"$H/watch.log" 2>&1 &
W=$!
trap 'kill $W 2>/dev/null' EXIT
until [ "$(field "d.get('owner')")" = True ]; do sleep 1; done
q() {
    for i in $(seq 1 "$1"); do
        s=$(date +%s%N)
        "$BIN" query --json --offline "how do streams handle backpressure $i" >/dev/null
        e=$(date +%s%N)
        echo $(((e - s) / 1000000))
    done
}
q 20 >"$WORK/idle.txt"
cp -r "$WORK/gen/." "$DOCS/"
until [ "$(field "(d['job'] or {}).get('label')")" = indexing ]; do sleep 0.2; done
q 40 >"$WORK/busy.txt"
[ "$(field "(d['job'] or {}).get('label')")" = indexing ] || echo "warning: indexing ended before the last query"
for n in idle busy; do
    sort -n "$WORK/$n.txt" | awk -v n=$n '{v[NR]=$1} END {printf "%s: %d queries, p50 %d ms, p90 %d ms, max %d ms\n", n, NR, v[int(NR/2)+1], v[int(NR*0.9)+1], v[NR]}'
done
