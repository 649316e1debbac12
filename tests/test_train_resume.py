"""A run with most switches on, killed with SIGKILL and resumed, against the same run uninterrupted.

The recipe: two progressive stages, warm restarts, Mixup and CutMix, head dropout, EMA, hard-example
oversampling, gradient accumulation and clipping; the uninterrupted run uses two persistent workers, the
killed and resumed ones none. The same outputs then prove the switches that show in the logs.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from train_toy import make_toy, write_folds_manifest

from medal.core.config import load_config
from medal.core.log import get_logger
from medal.train.run import run_train

pytestmark = pytest.mark.slow  # every test reads `runs`: a `python -m medal train` killed and resumed

SRC = Path(__file__).resolve().parents[1] / "src"
RECIPE = [
    "train.stages=[{image_size: 16, epochs: 2, batch_size: 6}, {image_size: 20, epochs: 1, batch_size: 10}]",
    "train.image_size=20", "train.schedule=restarts", "train.restarts.cycle_epochs=1", "train.restarts.cycle_mul=1",
    "train.mixup.mixup_alpha=0.4", "train.mixup.cutmix_alpha=1.0", "model.drop_rate=0.2",
    "train.hard_mining.start_epoch=1", "train.hard_mining.cap=3", "train.accumulate=2", "train.clip_grad_norm=5",
    "report.sample_grid=4", "report.gallery_size=6",
]
N_TRAIN = 30  # fold 0's training rows in the toy competition


def _fold(out: Path) -> Path:
    return out / "toy" / "toy" / "fold0"


def _copy_folds(base: Path, out: Path) -> None:
    (out / "toy").mkdir(parents=True)
    (out / "toy" / "folds.csv").write_bytes((base / "outputs" / "toy" / "folds.csv").read_bytes())
    write_folds_manifest(out / "toy")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _kill_after_first_checkpoint(process: subprocess.Popen, last: Path) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 300
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)  # right after epoch 1's checkpoint, during epoch 2

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The killed run is a separate process (SIGKILL); the uninterrupted reference and the resume run here.
    Every run uses one compute thread, so that all three do the same arithmetic."""
    base = tmp_path_factory.mktemp("resume")
    config = make_toy(base)
    ref_out, kill_out = base / "reference", base / "killed"
    for out in (ref_out, kill_out):
        _copy_folds(base, out)
    env = {**os.environ, "PYTHONPATH": str(SRC), "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "medal", "train", "-c", str(config), "--fold", "0", f"output_dir={kill_out}", *RECIPE]
    killed = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watcher = _kill_after_first_checkpoint(killed, _fold(kill_out) / "last.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    handler, level = _Lines(), get_logger().level
    get_logger().addHandler(handler)
    get_logger().setLevel(logging.INFO)
    try:
        run_train(load_config(config, [f"output_dir={ref_out}", *RECIPE, "runtime.num_workers=2",
                                       "runtime.persistent_workers=true"]), fold=0)
        watcher.join()
        killed.wait()
        after_kill = {p.name: p for p in sorted(_fold(kill_out).iterdir()) if p.suffix != ".lock"}
        lock = (_fold(kill_out) / ".train.lock").read_text()
        result = {"after_kill": after_kill, "killed_state": torch.load(_fold(kill_out) / "last.pt", weights_only=True),
                  "loadable": {name: _loads(path) for name, path in after_kill.items()}, "lock": lock}
        # A write that a kill interrupts leaves its temporary file behind (the real file is untouched); plant one.
        (_fold(kill_out) / ".last.pt.interrupted.tmp").write_bytes(b"half a checkpoint")
        handler.lines.clear()
        run_train(load_config(config, [f"output_dir={kill_out}", *RECIPE]), fold=0)
    finally:
        torch.set_num_threads(threads)
        get_logger().removeHandler(handler)
        get_logger().setLevel(level)
    result.update(reference=_fold(ref_out), resumed=_fold(kill_out), log="\n".join(handler.lines))
    return result


def _loads(path: Path) -> bool:
    """Whether a file the killed run left is complete: it parses as what its name says."""
    if path.suffix == ".pt":
        return isinstance(torch.load(path, weights_only=True), dict)
    if path.suffix == ".csv":
        return len(pd.read_csv(path)) > 0
    if path.suffix == ".json":
        return isinstance(json.loads(path.read_text()), dict)
    if path.suffix == ".png":
        return cv2.imread(str(path)) is not None
    return False


def test_the_kill_interrupted_training_after_the_first_epoch(runs):
    assert "done.json" not in runs["after_kill"] and "oof.csv" not in runs["after_kill"]
    assert runs["killed_state"]["epoch"] < 3  # epochs done, of 3


def test_every_file_the_killed_run_left_is_complete(runs):
    assert runs["loadable"] and all(runs["loadable"].values()), runs["loadable"]


def test_resume_removes_temporaries_of_interrupted_writes(runs):
    assert not list(runs["resumed"].glob("*.tmp")) and [p.name for p in runs["resumed"].glob(".*")] == [".train.lock"]


def test_the_killed_runs_lock_names_it_and_the_resume_takes_it_over(runs):
    assert runs["lock"].startswith("process ") and "train" in runs["lock"]
    assert "took over the lock of fold 0 of 'toy': process " in runs["log"]
    assert (runs["resumed"] / ".train.lock").read_text() == ""  # released when the resume finished
    assert "removed 1 unfinished temporary file" in runs["log"]


def test_resumed_run_ends_with_the_same_weights_as_the_uninterrupted_one(runs):
    ref = torch.load(runs["reference"] / "last.pt", weights_only=True)
    res = torch.load(runs["resumed"] / "last.pt", weights_only=True)
    for key in ["model", "ema"]:
        assert ref[key].keys() == res[key].keys()
        assert all(torch.equal(ref[key][k], res[key][k]) for k in ref[key]), key
    assert all(torch.equal(a, b) for a, b in zip(ref["sampler"].values(), res["sampler"].values()))
    assert ref["step"] == res["step"] and ref["epoch"] == res["epoch"] == 3


def test_resumed_run_writes_the_same_oof_and_logs(runs):
    ref, res = runs["reference"], runs["resumed"]
    pd.testing.assert_frame_equal(pd.read_csv(ref / "oof.csv"), pd.read_csv(res / "oof.csv"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(ref / "steps.csv"), pd.read_csv(res / "steps.csv"), check_exact=True)
    drop = ["seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(ref / "metrics.csv").drop(columns=drop),
                                  pd.read_csv(res / "metrics.csv").drop(columns=drop), check_exact=True)


def test_resume_keeps_the_tracking_run_id(runs):
    run_id = runs["killed_state"]["run_id"]
    assert len(run_id) == 32
    assert json.loads((runs["resumed"] / "done.json").read_text())["run_id"] == run_id
    assert torch.load(runs["resumed"] / "best.pt", weights_only=True)["run_id"] == run_id


def test_last_checkpoint_holds_everything_a_resume_needs(runs):
    state = torch.load(runs["reference"] / "last.pt", weights_only=True)
    assert {"model", "ema", "optimizer", "scheduler", "scaler", "rng", "epoch", "step", "sampler", "run_id",
            "best_score", "best_epoch", "best_weights", "history", "recipe"} <= set(state)
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    assert state["rng"]["numpy"]["keys"].shape == (624,) and state["rng"]["python"]["internal"].shape == (625,)
    assert state["sampler"]["losses"].shape == (N_TRAIN,) and torch.isfinite(state["sampler"]["losses"]).all()
    assert state["optimizer"]["state"]  # Adam moments, not a fresh optimizer


def test_progressive_stages_train_at_the_configured_batch_and_image_sizes(runs):
    steps = pd.read_csv(runs["reference"] / "steps.csv")
    per_epoch = steps.groupby("epoch").agg(n=("step", "size"), bs=("batch_size", "unique"), px=("image_size", "unique"))
    assert per_epoch["n"].tolist() == [N_TRAIN // 6, N_TRAIN // 6, N_TRAIN // 10]
    assert [list(v) for v in per_epoch["bs"]] == [[6], [6], [10]]
    assert [list(v) for v in per_epoch["px"]] == [[16], [16], [20]]


def test_logged_lr_curve_shows_the_configured_restarts(runs):
    steps = pd.read_csv(runs["reference"] / "steps.csv")
    rises = steps.index[steps["lr"].diff() > 0].tolist()
    starts = steps.index[steps["step"] == 0].tolist()
    assert rises == starts[1:]  # a restart at every epoch (cycle_epochs=1), nowhere else
    assert steps.loc[starts, "lr"].tolist() == pytest.approx([3e-3] * 3)


def test_hard_example_weights_are_logged_from_the_start_epoch(runs):
    metrics = pd.read_csv(runs["reference"] / "metrics.csv")
    assert metrics["w_max"].isna().tolist() == [True, False, False]
    assert (metrics.loc[1:, "w_max"] > 1).all() and (metrics.loc[1:, "w_min"] < 1).all()
    assert (metrics.loc[1:, "w_max"] <= 3 * 1.5).all()  # capped at 3x the unclipped mean (the summary renormalises)
    assert (metrics.loc[1:, "ess"] < 1).all()


def test_ema_weights_differ_from_the_raw_weights(runs):
    state = torch.load(runs["reference"] / "last.pt", weights_only=True)
    differs = [k for k, v in state["model"].items() if v.is_floating_point() and not torch.equal(v, state["ema"][k])]
    assert len(differs) > len(state["model"]) // 2


def test_a_grid_of_augmented_samples_is_saved_per_image_size(runs):
    for size in (16, 20):
        image = cv2.imread(str(runs["reference"] / f"augment_{size}px.png"))
        assert image is not None and image.std() > 10


def test_hardest_oof_gallery_holds_the_highest_loss_validation_images(runs):
    oof = pd.read_csv(runs["reference"] / "oof.csv", dtype={"image_id": str})
    classes = [c for c in oof.columns if c not in {"image_id", "fold", "target"}]
    # The highest-loss rows are those whose true class gets the lowest probability.
    p_true = pd.Series(oof[classes].to_numpy()[np.arange(len(oof)), oof["target"].to_numpy()], index=oof["image_id"])
    listed = json.loads((runs["reference"] / "done.json").read_text())["hardest_oof"]
    assert len(set(listed)) == 6
    assert (np.diff(p_true[listed].to_numpy()) >= -1e-6).all()  # hardest first (oof.csv rounds a little)
    assert p_true.drop(listed).min() >= p_true[listed].max() - 1e-6  # no row left out is harder
    assert cv2.imread(str(runs["reference"] / "hardest_oof.png")) is not None


def test_fold_end_diagnosis_states_what_the_last_epochs_losses_show(runs):
    last = pd.read_csv(runs["reference"] / "metrics.csv").iloc[-1]
    done = json.loads((runs["reference"] / "done.json").read_text())
    train, valid = last["train_ce"], last["valid_loss"]
    # The documented rule: overfitting when train x 10 <= valid, underfitting when train > valid, else healthy.
    expected = "overfitting" if train * 10 <= valid else "underfitting" if train > valid else "healthy"
    assert done["diagnosis"]["verdict"] == expected
    assert done["diagnosis"]["ratio"] == pytest.approx(valid / train, rel=1e-4)
    assert done["diagnosis"]["train_loss"] == pytest.approx(last["train_ce"])
    assert cv2.imread(str(runs["reference"] / "curves.png")) is not None
    assert np.isfinite(last["train_accuracy"]) and np.isfinite(last["accuracy"])
