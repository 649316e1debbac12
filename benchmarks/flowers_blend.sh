#!/usr/bin/env bash
# The blend demonstration (issue 5) on ../shared/data/flowers: three models that differ in architecture,
# image size and seed, trained with the ordinary stages; each one's CV and TTA gain, their OOF
# correlation, every blend method's in-sample and nested CV, the submission written and checked, and
# only then its accuracy on the held-back solution.csv.
#
#   bash benchmarks/flowers_blend.sh            # from anywhere; runs in the repository root
#   OUT=/tmp/x SUBS=/tmp/y bash benchmarks/flowers_blend.sh
#
# Outputs go to $OUT (default /tmp/flowers_outputs), the submission to $SUBS (default
# /tmp/flowers_submissions): nothing lands in the repository. A finished fold is skipped, so a re-run
# resumes; delete $OUT to start over. Budget: about 15 CPU minutes on 2 cores.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export NO_ALBUMENTATIONS_UPDATE=1
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/flowers_outputs}
SUBS=${SUBS:-/tmp/flowers_submissions}
DATA=${DATA:-../shared/data/flowers}
SET=("output_dir=$OUT" "blend.submission_dir=$SUBS" "data.root=$DATA")
MODELS=(configs/flowers/resnet10t.yaml configs/flowers/testresnet.yaml configs/flowers/resnet10t_s7.yaml)
FIRST=${MODELS[0]}

medal() { echo "+ medal $*" >&2; "$PY" -m medal "$@"; }
started=$(date +%s)

medal clean -c "$FIRST" "${SET[@]}"
medal folds -c "$FIRST" "${SET[@]}"
for cfg in "${MODELS[@]}"; do
  medal train -c "$cfg" "${SET[@]}"
  medal infer -c "$cfg" "${SET[@]}"
done
# blend.method is `compare` in configs/flowers/base.yaml: every method, picked by nested CV.
medal blend -c "$FIRST" "${SET[@]}"
medal check-submission "$SUBS/flowers.csv" -c "$FIRST" "${SET[@]}"
# Only now, with the submission written and checked, are the held-back labels read.
medal score "$SUBS/flowers.csv" --solution "$DATA/solution.csv" -c "$FIRST" "${SET[@]}"

echo "wall seconds: $(( $(date +%s) - started ))"
echo "CPU seconds (user, system) of this shell and of the stages:"
times
