#!/usr/bin/env bash
# medal infer for one experiment config; extra arguments pass through (key=value overrides)
# Usage: scripts/infer.sh CONFIG [ARGS ...]
set -euo pipefail
config=${1:?usage: scripts/infer.sh CONFIG [ARGS ...]}
shift
exec "${PYTHON:-python3}" -m medal infer -c "$config" "$@"
