#!/usr/bin/env bash
# Quickstart 2: the test suite. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
