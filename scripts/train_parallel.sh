#!/usr/bin/env bash
# Fill a multi-GPU box during CV: every fold of every config is one job, and each GPU runs its share of the
# jobs one after another (CUDA_VISIBLE_DEVICES=<gpu>), all GPUs at once. Waits for every job; exits 1 if
# any failed, naming it and its log. Refuses, before starting anything, a job list that holds one fold twice
# (the same config given twice, or two configs with the same name). Each fold's own lock also stops a job
# from training a fold that another run is training.
# Usage: scripts/train_parallel.sh CONFIG [CONFIG ...] [-- key=value ...]
#   GPUS        how many job slots (GPUs) to use; default: one per GPU in CUDA_VISIBLE_DEVICES, else per GPU
#               nvidia-smi lists, else 1. Slot g gets GPU devices[g % number of GPUs].
#   FOLDS       which folds, e.g. "0 2"; default: every fold in folds.csv
#   LOG_DIR     where each job's output goes, <name>-fold<k>.log; default: outputs/train_parallel
# Overrides after -- apply to every job, e.g. -- train.epochs=3. Runs `medal folds` must have run first.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}

configs=() overrides=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; overrides=("$@"); break; fi
  configs+=("$1"); shift
done
[ ${#configs[@]} -ge 1 ] || { echo "usage: scripts/train_parallel.sh CONFIG [CONFIG ...] [-- key=value ...]" >&2; exit 2; }
# The GPUs to hand out: those CUDA_VISIBLE_DEVICES already allows, else every one nvidia-smi lists.
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -r -a devices <<< "$CUDA_VISIBLE_DEVICES"
else
  mapfile -t devices < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
fi
[ ${#devices[@]} -ge 1 ] || devices=(0)  # no GPU: the slots run on the CPU (CUDA_VISIBLE_DEVICES is then moot)
GPUS=${GPUS:-${#devices[@]}}
LOG_DIR=${LOG_DIR:-outputs/train_parallel}
mkdir -p "$LOG_DIR"

# One line per job: experiment name, fold, config. Duplicate folds are refused here, before any work.
jobs_file=$(mktemp)
trap 'rm -f "$jobs_file"' EXIT
"$PYTHON" - "${#configs[@]}" "${configs[@]}" "${overrides[@]+"${overrides[@]}"}" > "$jobs_file" <<'PY'
import os, sys
from medal.core.config import ConfigError, load_config
from medal.core.tables import fold_count, read_folds

count = int(sys.argv[1])
configs, overrides = sys.argv[2:2 + count], sys.argv[2 + count:]
wanted = os.environ.get("FOLDS", "").split()
seen = {}
try:
    for path in configs:
        cfg = load_config(path, overrides)
        folds = range(fold_count(read_folds(cfg)))
        for fold in ([int(f) for f in wanted] if wanted else folds):
            if fold not in folds:
                sys.exit(f"train_parallel: fold {fold} is out of range for {path} (folds 0..{len(folds) - 1})")
            key = (str(cfg.exp_dir), fold)
            if key in seen:
                sys.exit(f"train_parallel: fold {fold} of experiment {cfg.name!r} is asked for twice ({seen[key]} and "
                         f"{path}): two jobs would train the same fold; nothing was started")
            seen[key] = path
            print(cfg.name, fold, path, sep="\t")
except (ConfigError, FileNotFoundError, ValueError) as err:
    sys.exit(f"train_parallel: {err}")
PY
total=$(wc -l < "$jobs_file")
echo "train_parallel: $total job(s) on $GPUS GPU slot(s); logs in $LOG_DIR"

# Slot g takes jobs g, g+GPUS, g+2*GPUS, ... in order; a failed job does not stop the slot's next ones.
pids=()
for ((gpu = 0; gpu < GPUS; gpu++)); do
  device=${devices[gpu % ${#devices[@]}]}
  (
    failed=0
    index=0
    while IFS=$'\t' read -r name fold config; do
      if (( index++ % GPUS == gpu )); then
        log="$LOG_DIR/$name-fold$fold.log"
        echo "train_parallel: GPU $device: $name fold $fold -> $log"
        if CUDA_VISIBLE_DEVICES=$device "$PYTHON" -m medal train -c "$config" --fold "$fold" \
             "${overrides[@]+"${overrides[@]}"}" > "$log" 2>&1; then
          echo "train_parallel: GPU $device: $name fold $fold done"
        else
          echo "train_parallel: GPU $device: $name fold $fold FAILED (exit $?); see $log" >&2
          tail -3 "$log" >&2
          failed=1
        fi
      fi
    done < "$jobs_file"
    exit $failed
  ) &
  pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
if [ $status -ne 0 ]; then
  echo "train_parallel: at least one job failed" >&2
  exit 1
fi
echo "train_parallel: all $total job(s) done"
