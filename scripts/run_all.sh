#!/usr/bin/env bash
# The whole pipeline for one competition: clean and folds once, train and infer
# each experiment, then blend them all into one checked submission, and write
# each experiment's report.html and the blend's.
# Usage: scripts/run_all.sh CONFIG [CONFIG ...]
#   The first config's data and folds sections drive clean and folds; every
#   config is one experiment (model recipe); blend uses the first config's
#   blend section with every experiment's name.
# Copy this file per competition and edit it: it is meant to be read.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/run_all.sh CONFIG [CONFIG ...]" >&2; exit 2; }
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

scripts/clean.sh "$1"
scripts/folds.sh "$1"
names=()
for config in "$@"; do
  scripts/train.sh "$config"
  scripts/infer.sh "$config"
  names+=("$("${PYTHON:-python3}" -c "import sys; from medal.core.config import load_config; print(load_config(sys.argv[1]).name)" "$config")")
done
scripts/blend.sh "$1" "${names[@]}"
# One self-contained HTML page per experiment and one for the blend (medal report).
for config in "$@"; do
  "${PYTHON:-python3}" -m medal report -c "$config"
done
"${PYTHON:-python3}" -m medal report -c "$1" --blend
