#!/usr/bin/env bash
# medal clean for one experiment config; extra arguments pass through (key=value overrides)
# Usage: scripts/clean.sh CONFIG [ARGS ...]
set -euo pipefail
config=${1:?usage: scripts/clean.sh CONFIG [ARGS ...]}
shift
exec "${PYTHON:-python3}" -m medal clean -c "$config" "$@"
