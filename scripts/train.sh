#!/usr/bin/env bash
# medal train for one experiment config; extra arguments pass through (key=value overrides, --fold K)
# Usage: scripts/train.sh CONFIG [ARGS ...]
set -euo pipefail
config=${1:?usage: scripts/train.sh CONFIG [ARGS ...]}
shift
exec "${PYTHON:-python3}" -m medal train -c "$config" "$@"
