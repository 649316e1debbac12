#!/usr/bin/env bash
# Quickstart 1: the whole pipeline on the embedded demo (scikit-learn digits):
# two models x 5 folds, TTA measured on OOF, blend, a checked submission, and
# its score on the held-back solution. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
scripts/setup.sh
started=$(date +%s)

[ -f input/demo/train.csv ] || "$PYTHON" -m medal demo --out input/demo
scripts/run_all.sh configs/demo/resnet10t.yaml configs/demo/efficientnet.yaml
# Scored only now, after the submission is written: solution.csv never feeds training.
"$PYTHON" -m medal score submissions/demo.csv --solution input/demo/solution.csv -c configs/demo/resnet10t.yaml
echo "demo finished in $(( $(date +%s) - started )) s; submission: submissions/demo.csv"
