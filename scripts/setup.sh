#!/usr/bin/env bash
# Install what medal needs into the current Python, only where it is missing.
# On a Kaggle GPU image torch, torchvision and timm are already there and are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export NO_ALBUMENTATIONS_UPDATE=1

# Found, not imported (importing them costs 4 s of every test run). A torchvision that does not match its torch
# is not caught here: it fails at its first import ("operator torchvision::nms does not exist"); reinstall the pair.
if ! "$PYTHON" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('torch') and u.find_spec('torchvision')))" 2>/dev/null; then
  echo "setup: installing torch==2.14.1 torchvision==0.29.1 (a matched pair; see requirements.txt)"
  "$PYTHON" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
if ! "$PYTHON" - <<'PY' 2>/dev/null
import importlib.util, sys
from pathlib import Path
# Found, not imported: importing them all took 12 s, a fifth of a fast test run.
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
