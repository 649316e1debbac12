#!/usr/bin/env bash
# medal folds for one experiment config; extra arguments pass through (key=value overrides)
# Usage: scripts/folds.sh CONFIG [ARGS ...]
set -euo pipefail
config=${1:?usage: scripts/folds.sh CONFIG [ARGS ...]}
shift
exec "${PYTHON:-python3}" -m medal folds -c "$config" "$@"
