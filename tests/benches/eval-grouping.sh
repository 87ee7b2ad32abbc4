#!/bin/bash
# eval-grouping.sh MODEL SETS HOMES [DOCHASH]: known-item measures of each grouping (none, place,
# file) on the dev sets under SETS (each a folder with docs/ and queries.tsv, as
# tests/benches/make-dev-sets.py writes them), on one kept index per set under HOMES, so that
# only the grouping differs between runs. One line per set, grouping and mode:
# set grouping mode hit@1 hit@10 MRR@10 files-in-top-10 MRR@10-of-the-shown-passage
set -euo pipefail
MODEL=$1 SETS=$2 HOMES=$3 DOCHASH=${4:-target/release/dochash}
for D in "$SETS"/*/; do
  S=$(basename "$D")
  for g in none place file; do
    "$DOCHASH" eval retrieval --docs "$D/docs" --queries "$D/queries.tsv" --home "$HOMES/$S" \
      --model "$MODEL" --offline --json --modes lexical,semantic,hybrid --group $g \
      2>"$HOMES/$S-$g.err" | python3 -c "
import json, sys
for l in sys.stdin:
    d = json.loads(l)
    print('$S', '$g', d['mode'], '%.3f %.3f %.3f %.2f %.3f' % (d['hit_at_1'], d['hit_at_10'],
          d['mrr_at_10'], d['distinct_files_at_10'], d['mrr_at_10_shown']))
"
  done
done
