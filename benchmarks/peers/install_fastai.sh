#!/usr/bin/env bash
# Installs fastai for the peer benchmark benchmarks/peers/fastai_recipe.py into benchmarks/.fastai, a folder
# of its own (git-ignored) that only that script puts on sys.path: fastai never becomes a dependency of medal.
#
# Everything goes in with --no-deps, so pip never installs or upgrades torch, torchvision, numpy, pandas,
# pillow, scipy, scikit-learn, matplotlib and the rest into the folder: fastai uses the ones already installed.
# Only the pure-python packages missing beside them are listed, pinned: fastai's own little libraries,
# plum-dispatch (<2.10, as fastai asks) and beartype (which plum needs). spacy, which fastai lists but only
# fastai.text imports, is left out. Running it again does nothing once `from fastai.vision.all import *` works.
#
#     bash benchmarks/peers/install_fastai.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="$root/benchmarks/.fastai"
check() { PYTHONPATH="$target" python3 -c "from fastai.vision.all import *; import fastai; print('fastai', fastai.__version__)"; }

if [ -d "$target/fastai" ] && check >/dev/null 2>&1; then
    echo "fastai already installed in $target: $(check 2>/dev/null)"
    exit 0
fi

rm -rf "$target"
python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$target" \
    "fastai==2.8.12" \
    "fastcore==2.2.41" \
    "fasttransform==0.0.5" \
    "fastprogress==1.0.3" \
    "fastdownload==0.0.8" \
    "plum-dispatch==2.9.0" \
    "beartype==0.22.9"
check
echo "installed into $target ($(du -sh "$target" | cut -f1))"
