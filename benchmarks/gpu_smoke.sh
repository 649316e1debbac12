#!/usr/bin/env bash
# GPU smoke test for a machine with a GPU: medal's training at fp32, AMP, AMP + channels_last and compiled,
# each beside the bare model step, with img/s and peak GPU memory (benchmarks/gpu_smoke.py says how).
# Usage: bash benchmarks/gpu_smoke.sh [--backbone resnet18 --size 128 --batch 128 --epochs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv 2>/dev/null || echo "gpu_smoke: nvidia-smi found no GPU"
exec "${PYTHON:-python3}" benchmarks/gpu_smoke.py "$@"
