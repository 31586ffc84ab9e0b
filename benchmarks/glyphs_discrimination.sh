#!/usr/bin/env bash
# Does `glyphs` discriminate? (issue 13, point 2) Natural accuracy of cnn28 targets after a few
# epoch counts and of the lenet28 evaluation model, then GMI and LOMMA+GMI against the
# undefended target on a seeded subset of the private identities, judged by the evaluation model.
# Top-1 should lie clearly between chance (1/num_private) and 100%.
#
# Usage: benchmarks/glyphs_discrimination.sh OUT [EPOCHS] [CLASSES] [ITERATIONS] [PRIOR_STEPS]
#   full:    benchmarks/glyphs_discrimination.sh runs/glyphs-p2 "10 20 40" 0-99 1500 1500
#   reduced: benchmarks/glyphs_discrimination.sh runs/glyphs-p2 "10" 0-19 300 600   (2 CPU cores, about 1 h)
# Each line of OUT/results.jsonl is one command's JSON; `time` lines go to stderr.
set -euo pipefail
OUT=${1:?usage: $0 OUT [EPOCHS] [CLASSES] [ITERATIONS] [PRIOR_STEPS]}
EPOCHS=${2:-"10 20 40"}
CLASSES=${3:-0-19}
ITERATIONS=${4:-1500}
PRIOR_STEPS=${5:-1500}
mkdir -p "$OUT"
log() { tee -a "$OUT/results.jsonl"; }

for e in $EPOCHS; do
  /usr/bin/time -f "target epochs=$e: %e s wall, %U s user" \
    re-analysis train --dataset glyphs --epochs "$e" --seed 0 --out "$OUT/target-e$e" --quiet | log
done
LAST=$(echo $EPOCHS | awk '{print $NF}')
/usr/bin/time -f "eval epochs=$LAST: %e s wall, %U s user" \
  re-analysis train --dataset glyphs --role eval --epochs "$LAST" --seed 0 --out "$OUT/eval" --quiet | log

for attack in gmi lomma-gmi; do
  run="$OUT/$attack-e$LAST"
  /usr/bin/time -f "$attack: %e s wall, %U s user" \
    re-analysis attack --attack "$attack" --target "$OUT/target-e$LAST" --classes "$CLASSES" \
      --iterations "$ITERATIONS" --prior-steps "$PRIOR_STEPS" --cache "$OUT/cache" --out "$run" --quiet | log
  re-analysis evaluate --attack-run "$run" --eval-model "$OUT/eval" --out "$run" | log
done
