#!/usr/bin/env bash
# Install what medal needs into the current Python, only where it is missing.
# On a Kaggle GPU image torch, torchvision and timm are already there and are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export NO_ALBUMENTATIONS_UPDATE=1

if ! "$PYTHON" -c "import torchvision" 2>/dev/null; then  # imports torch too; fails on a mismatched pair
  echo "setup: installing torch==2.14.1 torchvision==0.29.1 (a matched pair; see requirements.txt)"
  "$PYTHON" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
if ! "$PYTHON" - <<'PY' 2>/dev/null
import importlib.util, sys
from pathlib import Path
# Found, not imported: importing them all took 12 s, most of a fast test run (torch is imported above).
needed = ["timm", "albumentations", "cv2", "pandas", "sklearn", "scipy", "yaml", "pydantic", "tqdm", "matplotlib",
          "wandb", "iterstrat", "optuna", "plotly", "pytest", "imagehash", "importlinter", "mutmut"]
missing = [name for name in needed if importlib.util.find_spec(name) is None]
import medal
# An editable install of another clone would shadow this one.
sys.exit(0 if not missing and Path(medal.__file__).resolve().parent == Path("src/medal").resolve() else 1)
PY
then
  echo "setup: installing medal and its requirements (pip install -e . -r requirements-dev.txt)"
  "$PYTHON" -m pip install --quiet -r requirements-dev.txt -e .
fi
