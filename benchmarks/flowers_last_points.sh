#!/usr/bin/env bash
# The last points (issue 15) on ../shared/data/flowers, each quoted even where the gain is negative:
#   swa     one experiment trained with SWA and top-k averaging on: cv.json's weights_cv gives the OOF score of
#           the best epoch's weights, the final EMA, SWA and top-k, side by side on the same folds;
#   pseudo  that experiment's submission scored on solution.csv, one pseudo-labelling round from it (the
#           experiment retrained with the pseudo table, inferred, blended), and the new submission scored;
#           solution.csv is read only after each submission is written and checked;
#   tune    a 20-trial Optuna study on fold 0 (trial 0 is the recipe as configured), and the default recipe's
#           fold-0 score beside the best trial's.
#
#   bash benchmarks/flowers_last_points.sh [swa|pseudo|tune|all]     # default all, in that order
#
# Outputs go to $OUT (default /tmp/flowers_last_points), submissions to $SUBS: nothing lands in the
# repository. Finished folds and trials are kept, so a re-run resumes. Budget on 2 CPU cores: roughly
# 15 minutes for swa, 15 for pseudo, 30 for tune.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export NO_ALBUMENTATIONS_UPDATE=1
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/flowers_last_points}
SUBS=${SUBS:-$OUT/submissions}
DATA=${DATA:-../shared/data/flowers}
CFG=configs/flowers/testresnet.yaml  # timm's test_resnet at 48 px: a fifth of resnet10t's FLOPs
TRIALS=${TRIALS:-20}
SET=("output_dir=$OUT" "blend.submission_dir=$SUBS" "data.root=$DATA" "runtime.cpu_threads=${THREADS:-2}")
# 6 epochs, so that the last 3 (SWA's window) are past the steep part of the cosine; top-k over the 3 best.
AVG=(name=flowers_avg train.epochs=6 train.average.swa_epochs=3 train.average.top_k=3)
PSEUDO_TABLE="$OUT/flowers/pseudo_flowers_avg/pseudo.csv"

medal() { echo "+ medal $*" >&2; "$PY" -m medal "$@"; }
phase=${1:-all}

medal clean -c "$CFG" "${SET[@]}"
medal folds -c "$CFG" "${SET[@]}"

if [[ $phase == swa || $phase == all || $phase == pseudo ]]; then
  medal train -c "$CFG" "${SET[@]}" "${AVG[@]}"
  "$PY" -c "import json,sys; cv=json.load(open(sys.argv[1])); print('OOF accuracy by weights:', cv['weights_cv'])" \
    "$OUT/flowers/flowers_avg/cv.json"
fi

if [[ $phase == pseudo || $phase == all ]]; then
  medal infer -c "$CFG" "${SET[@]}" "${AVG[@]}"
  medal blend -c "$CFG" "${SET[@]}" "${AVG[@]}" --name flowers_avg flowers_avg
  medal score "$SUBS/flowers_avg.csv" --solution "$DATA/solution.csv" -c "$CFG" "${SET[@]}"
  medal pseudo -c "$CFG" "${SET[@]}" --from flowers_avg --threshold 0.9
  PL=(name=flowers_avg_pl train.epochs=6 train.average.swa_epochs=3 train.average.top_k=3
      "train.pseudo_labels=$PSEUDO_TABLE")
  medal train -c "$CFG" "${SET[@]}" "${PL[@]}"
  medal infer -c "$CFG" "${SET[@]}" "${PL[@]}"
  medal blend -c "$CFG" "${SET[@]}" "${PL[@]}" --name flowers_avg_pl flowers_avg_pl
  medal score "$SUBS/flowers_avg_pl.csv" --solution "$DATA/solution.csv" -c "$CFG" "${SET[@]}"
fi

if [[ $phase == tune || $phase == all ]]; then
  medal tune -c "$CFG" "${SET[@]}" --space configs/flowers/space.yaml --trials "$TRIALS" --folds 0
fi
