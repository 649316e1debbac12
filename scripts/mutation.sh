#!/usr/bin/env bash
# Mutation testing: mutmut mutates the modules pyproject.toml [tool.mutmut] names (the training loop and the blend
# methods), runs the fast tier (`-m "not slow"`) against each mutant in a copy under mutants/, and lists the
# mutants no test caught. Each survivor is a behaviour no test pins down: the next test to write.
#   scripts/mutation.sh                        every configured module (hours on 2 cores)
#   scripts/mutation.sh 'medal.train.losses*'  one module's mutants (mutmut's names are module.function__mutmut_N)
# Then `mutmut results` lists them again, `mutmut show NAME` shows one mutant's diff.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
# One torch thread: mutmut forks its workers from a process that has run torch, and a forked thread pool hangs.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
scripts/setup.sh
PYTHON=${PYTHON:-python3}
"$PYTHON" -m mutmut run "$@" || true  # a run with survivors still has results to show
"$PYTHON" -m mutmut results
