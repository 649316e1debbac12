"""tracking: each fold's W&B run, written offline and read back from its folder; the CV and blend runs; a run
without a key or a network that goes offline and finishes promptly; and no wandb import when tracking is off.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import EXPERIMENTS
from train_toy import make_toy, own_outputs, toy_cfg
from wandb_offline import read_run, run_folders

from medal.blend.run import run_blend
from medal.core.config import Config
from medal.core.log import LOGGER_NAME
from medal.modeling.runtime import compute_threads
from medal.tracking.tracker import Tracker, wandb_dir
from medal.train.run import run_train
from medal.train.trainer import FoldTrainer

TOY = ["train.epochs=3", "report.sample_grid=4", "report.gallery_size=4"]
# A port nothing listens on: any attempt to reach W&B fails at once, as with no network.
NO_NETWORK = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture
def medal_log(monkeypatch, caplog) -> pytest.LogCaptureFixture:
    """caplog seeing medal's INFO records: the CLI's log setup (run by the session pipeline) stops propagation."""
    monkeypatch.setattr(logging.getLogger(LOGGER_NAME), "propagate", True)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    return caplog


def isolate_wandb(mp: pytest.MonkeyPatch, home: Path) -> None:
    """No key, no netrc, no W&B settings or caches from the machine: HOME and wandb's folders under `home`.
    wandb reads its environment once per process, so an earlier test's wandb is torn down first."""
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    home.mkdir(parents=True, exist_ok=True)
    for variable in ["WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "KAGGLE_KERNEL_RUN_TYPE"]:
        mp.delenv(variable, raising=False)
    mp.setenv("HOME", str(home))
    for variable, folder in [("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")]:
        mp.setenv(variable, str(home / folder))


def train(toy: Path, dest: Path, *overrides: str, fold: int | None = None) -> Config:
    cfg = toy_cfg(toy, own_outputs(toy, dest), *TOY, *overrides)
    with compute_threads(torch.device("cpu"), 1):
        run_train(cfg, fold=fold)
    return cfg


def fold_run(cfg: Config, fold: int):
    run_id = json.loads((cfg.fold_dir(fold) / "done.json").read_text())["run_id"]
    folders = run_folders(wandb_dir(cfg), run_id)
    assert folders, f"no offline run {run_id} under {wandb_dir(cfg)}"
    return read_run(folders[-1])


@pytest.fixture(scope="module")
def tracked(toy, tmp_path_factory) -> Config:
    """Both toy folds trained with tracking on and WANDB_MODE=offline (so with the CV run too)."""
    base = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        isolate_wandb(mp, base / "home")
        mp.setenv("WANDB_MODE", "offline")
        return train(toy, base / "out", "tracking.wandb=true", "tracking.tags=[toy,ci]")


def test_each_fold_has_its_own_run_under_the_output_folder(tracked):
    for fold in range(2):
        run = fold_run(tracked, fold)
        assert run.folder.parent == tracked.data_dir / "wandb"
        assert run.run.run_id == json.loads((tracked.fold_dir(fold) / "done.json").read_text())["run_id"]
        assert (run.run.display_name, run.run.run_group, run.run.job_type) == (f"toy-fold{fold}", "toy", "train")
        assert list(run.run.tags) == ["toy", "ci"]
        assert run.exit_code == 0


def test_fold_run_config_is_the_resolved_config(tracked):
    config = fold_run(tracked, 1).config
    assert config["train"]["lr"] == tracked.train.lr == 3e-3
    assert config["train"]["epochs"] == 3
    assert config["model"]["backbone"] == "test_resnet"
    assert config["fold"] == 1


def test_epoch_metrics_are_metrics_csv(tracked):
    metrics = pd.read_csv(tracked.fold_dir(0) / "metrics.csv")
    rows = [row for row in fold_run(tracked, 0).history if "epoch" in row]
    assert [row["epoch"] for row in rows] == metrics["epoch"].tolist() == [1, 2, 3]
    for key in ["train_loss", "train_ce", "valid_loss", "accuracy", "ema_accuracy", "lr"]:
        assert [row[f"epoch/{key}"] for row in rows] == pytest.approx(metrics[key].tolist(), rel=1e-9), key


def test_step_loss_and_lr_are_steps_csv(tracked):
    steps = pd.read_csv(tracked.fold_dir(0) / "steps.csv")
    rows = [row for row in fold_run(tracked, 0).history if "global_step" in row]
    assert [row["global_step"] for row in rows] == list(range(len(steps)))
    assert [row["train/loss"] for row in rows] == pytest.approx(steps["loss"].tolist(), rel=1e-6)
    assert [row["train/lr"] for row in rows] == pytest.approx(steps["lr"].tolist(), rel=1e-9)


def test_fold_summary_is_done_json_with_the_diagnosis(tracked):
    done = json.loads((tracked.fold_dir(0) / "done.json").read_text())
    summary = fold_run(tracked, 0).summary
    assert summary["best_score"] == pytest.approx(done["best_score"])
    assert summary["diagnosis"] == done["diagnosis"]
    assert summary["diagnosis"]["verdict"] in {"healthy", "overfitting", "underfitting"}


def test_fold_run_logs_its_plots_and_its_oof_artifact(tracked):
    run = fold_run(tracked, 0)
    images = {key.split("/")[0]: row[key] for row in run.history for key in row if key.endswith("/_type")}
    assert images == {"curves": "image-file", "hardest_oof": "image-file", "augment_16px": "image-file"}
    for key in images:
        assert list((run.folder / "files" / "media" / "images").glob(f"{key}_*.png")), key
    assert [(a.name, a.type) for a in run.artifacts] == [("toy-oof-fold0", "oof")]


def test_cv_run_holds_the_cv_summary_and_the_full_oof(tracked):
    (folder,) = [f for f in (tracked.data_dir / "wandb").glob("offline-run-*") if read_run(f).run.display_name == "toy-cv"]
    run = read_run(folder)
    cv = json.loads((tracked.exp_dir / "cv.json").read_text())
    assert (run.run.run_group, run.summary["cv"], run.summary["rows"]) == ("toy", cv["cv"], 60)
    assert [(a.name, a.type) for a in run.artifacts] == [("toy-oof", "oof")]


def test_blend_logs_its_report_heatmap_and_weights_to_a_run_of_its_own(pipeline, tmp_path, monkeypatch, medal_log):
    isolate_wandb(monkeypatch, tmp_path / "home")
    out = pipeline.copy_outputs(tmp_path / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}", f"blend.submission_dir={tmp_path / 'subs'}",
                       "tracking.wandb=true", "tracking.mode=offline")
    report = run_blend(cfg, list(EXPERIMENTS), "tracked")
    assert "W&B:" not in medal_log.text  # no warning: it started offline as asked
    (folder,) = [f for f in wandb_dir(cfg).glob("offline-run-*") if read_run(f).run.display_name == "blend-tracked"]
    run = read_run(folder)
    assert (run.run.run_group, run.run.job_type, run.exit_code) == ("blend-tracked", "blend", 0)
    assert run.summary["weights"] == pytest.approx(report["weights"]) and set(run.summary["weights"]) == set(EXPERIMENTS)
    assert (run.summary["method"], run.summary["blend_cv"]) == (report["method"], pytest.approx(report["blend_cv"]))
    assert {row.get("correlation/_type") for row in run.history} >= {"image-file"}
    assert [(a.name, a.type) for a in run.artifacts] == [("blend-tracked-report", "blend-report")]


@pytest.mark.slow
def test_a_resumed_fold_continues_its_run_id(toy, tmp_path, monkeypatch):
    isolate_wandb(monkeypatch, tmp_path / "home")
    original = FoldTrainer._train_epoch

    def crash_at_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(self, epoch)

    overrides = ("tracking.wandb=true", "tracking.mode=offline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FoldTrainer, "_train_epoch", crash_at_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            train(toy, tmp_path / "out", *overrides, fold=0)
    # wandb names an offline run's folder by the second it starts and the run id: a resume within the same
    # second would share the crashed run's folder (a real resume comes minutes later).
    time.sleep(1.1)
    cfg = toy_cfg(toy, f"output_dir={tmp_path / 'out'}", *TOY, *overrides)
    with compute_threads(torch.device("cpu"), 1):
        run_train(cfg, fold=0)
    first, second = (read_run(f) for f in run_folders(wandb_dir(cfg), fold_run(cfg, 0).run.run_id))
    assert first.exit_code == 1 and second.exit_code == 0  # the crash is marked failed; the resumed start finishes
    assert [r["epoch"] for r in first.history if "epoch" in r] == [1, 2]
    assert [r["epoch"] for r in second.history if "epoch" in r] == [3]
    steps = [[r["global_step"] for r in run.history if "global_step" in r] for run in (first, second)]
    assert steps[0] + steps[1] == list(range(len(pd.read_csv(cfg.fold_dir(0) / "steps.csv"))))  # one count across


@pytest.mark.slow
def test_no_key_and_no_network_goes_offline_with_a_warning_and_finishes_promptly(toy, tmp_path, monkeypatch, medal_log):
    isolate_wandb(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("WANDB_BASE_URL", NO_NETWORK)
    started = time.perf_counter()
    train(toy, tmp_path / "plain", fold=0)
    untracked = time.perf_counter() - started
    started = time.perf_counter()
    cfg = train(toy, tmp_path / "tracked", "tracking.wandb=true", "tracking.mode=auto", fold=0)
    tracked = time.perf_counter() - started
    assert "no API key" in medal_log.text and "wandb sync" in medal_log.text
    run_id = fold_run(cfg, 0).run.run_id
    assert f"({run_id}, offline)" in medal_log.text and "start of run" not in medal_log.text  # offline at once, no attempt
    assert tracked < untracked + 10, f"tracked fold took {tracked:.1f}s against {untracked:.1f}s untracked"


@pytest.mark.slow
def test_online_start_that_cannot_connect_falls_back_offline_within_the_timeout(toy, tmp_path, monkeypatch, medal_log):
    isolate_wandb(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("WANDB_BASE_URL", NO_NETWORK)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    started = time.perf_counter()
    cfg = train(toy, tmp_path / "out", "tracking.wandb=true", "tracking.mode=online", "tracking.init_timeout=2", fold=0)
    assert time.perf_counter() - started < 30
    assert "online start of run toy-fold0 failed" in medal_log.text and "logging offline instead" in medal_log.text
    assert [r["epoch"] for r in fold_run(cfg, 0).history if "epoch" in r] == [1, 2, 3]


@pytest.mark.slow
def test_untracked_training_never_imports_wandb(toy, tmp_path):
    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from train_toy import own_outputs, toy_cfg
from medal.train.run import run_train
import medal.blend.run, medal.cli
run_train(toy_cfg(Path({str(toy)!r}), own_outputs(Path({str(toy)!r}), Path({str(tmp_path / "out")!r}))), fold=0)
print(sorted(m for m in sys.modules if m.split(".")[0] == "wandb"))
"""
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_tracking_without_wandb_installed_is_refused_naming_the_key(toy, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: `import wandb` raises ImportError
    tracker = Tracker(toy_cfg(toy, "tracking.wandb=true", "tracking.mode=offline"), "toy-fold0", "toy", "train")
    with pytest.raises(ImportError, match=r"tracking\.wandb is true but wandb is not installed: `pip install"):
        tracker.start()
