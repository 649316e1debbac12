"""scripts/train_parallel.sh: every fold of every config as a job, the jobs spread over GPU slots run at once.
On CPU the slots are processes (CUDA_VISIBLE_DEVICES is moot), which is enough to check the script's promises:
all folds trained, a failed job fails the script, and one fold asked for twice is refused before any work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_toy import make_toy

from medal.core import layout
from medal.core.config import load_config
from medal.core.locks import exclusive

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_parallel.sh"
pytestmark = pytest.mark.slow  # every test runs scripts/train_parallel.sh


def run_script(*args: str, log_dir: Path, devices: str = "5,7") -> subprocess.CompletedProcess:
    """The script with two GPU slots, as if CUDA_VISIBLE_DEVICES allowed GPUs 5 and 7 (moot on a CPU)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices, "LOG_DIR": str(log_dir), "PYTHON": sys.executable}
    env.pop("GPUS", None)
    return subprocess.run(["bash", str(SCRIPT), *args, "--", "runtime.cpu_threads=1"], env=env, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.fixture
def toy(tmp_path) -> Path:
    return make_toy(tmp_path / "base")


def test_every_fold_trains_in_its_own_slot_and_the_oof_is_gathered(toy, tmp_path):
    done = run_script(str(toy), log_dir=tmp_path / "logs")
    assert done.returncode == 0, done.stdout + done.stderr
    cfg = load_config(toy)
    assert [json.loads(layout.fold_done(cfg, k).read_text())["epochs_trained"] for k in (0, 1)] == [1, 1]
    assert layout.oof_csv(cfg).is_file() and json.loads(layout.cv_json(cfg).read_text())["n_folds"] == 2
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["toy-fold0.log", "toy-fold1.log"]
    assert "2 job(s) on 2 GPU slot(s)" in done.stdout
    assert "GPU 5: toy fold 0 done" in done.stdout and "GPU 7: toy fold 1 done" in done.stdout


def test_a_failed_job_fails_the_script_and_the_others_still_finish(toy, tmp_path):
    cfg = load_config(toy)
    with exclusive(layout.lock_file(cfg.fold_dir(1), "train"), "fold 1 of 'toy'"):  # as if another run trains it
        done = run_script(str(toy), log_dir=tmp_path / "logs")
    assert done.returncode == 1
    assert "toy fold 1 FAILED" in done.stderr and "is in use by" in done.stderr
    assert layout.fold_done(cfg, 0).is_file() and not layout.fold_done(cfg, 1).is_file()


def test_one_fold_asked_for_twice_is_refused_before_any_work(toy, tmp_path):
    done = run_script(str(toy), str(toy), log_dir=tmp_path / "logs")
    assert done.returncode != 0
    assert "fold 0 of experiment 'toy' is asked for twice" in done.stderr and "nothing was started" in done.stderr
    assert not any((tmp_path / "logs").iterdir()) if (tmp_path / "logs").exists() else True
    assert not load_config(toy).fold_dir(0).exists()
