#!/bin/bash
# eval-pdf.sh MODEL SET WORK [DOCHASH]: known-item search over the same documents as Markdown and
# as PDF. SET is a dev set (docs/*.md and queries.tsv); each document is made a PDF with pandoc
# (to groff ms) and groff -Tpdf, as a person's exported notes would be; dochash's text of each
# PDF is written by `dochash eval text`, and tests/benches/pdf-known-item.py moves each answer to
# the lines of that text (queries it cannot place are dropped from both sets). Prints the
# reading (pages, seconds, worst file) and one line per format and mode:
# format mode hit@1 hit@10 MRR@10
set -euo pipefail
MODEL=$1 SET=$2 WORK=$3 DOCHASH=${4:-target/release/dochash}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK/pdf" "$WORK/text"
for f in "$SET"/docs/*.md; do
  b=$(basename "$f" .md)
  [ -s "$WORK/pdf/$b.pdf" ] || pandoc -f gfm -t ms -s "$f" 2>/dev/null | groff -ms -k -Tpdf \
    > "$WORK/pdf/$b.pdf" 2>/dev/null
done
start=$(date +%s.%N)
"$DOCHASH" eval text --out "$WORK/text" "$WORK"/pdf/*.pdf > "$WORK/text.tsv"
end=$(date +%s.%N)
awk -F'\t' -v s="$start" -v e="$end" '{p += $2; if ($4 > w) {w = $4; n = $1}}
  END {printf "read %d pages in %.1f s (%.0f pages/s, helper process included); slowest %s %.0f ms\n",
       p, e - s, p / (e - s), n, w}' "$WORK/text.tsv"
python3 "$HERE/pdf-known-item.py" "$SET/docs" "$SET/queries.tsv" "$WORK/text" \
  "$WORK/queries-pdf.tsv" "$WORK/queries-md.tsv"
for fmt in md pdf; do
  docs="$SET/docs"; [ $fmt = pdf ] && docs="$WORK/pdf"
  "$DOCHASH" eval retrieval --docs "$docs" --queries "$WORK/queries-$fmt.tsv" \
    --home "$WORK/home-$fmt" --model "$MODEL" --offline --json --modes lexical,semantic,hybrid \
    2>"$WORK/eval-$fmt.err" | python3 -c "
import json, sys
for l in sys.stdin:
    d = json.loads(l)
    print('$fmt', d['mode'], '%.3f %.3f %.3f' % (d['hit_at_1'], d['hit_at_10'], d['mrr_at_10']))
"
done
