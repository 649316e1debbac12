#!/usr/bin/env bash
# medal blend for one experiment config; extra arguments pass through (key=value overrides, experiment names)
# Usage: scripts/blend.sh CONFIG [ARGS ...]
set -euo pipefail
config=${1:?usage: scripts/blend.sh CONFIG [ARGS ...]}
shift
exec "${PYTHON:-python3}" -m medal blend -c "$config" "$@"
