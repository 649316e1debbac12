"""train: per-fold checkpoints, metrics and OOF; skipping finished folds; resuming; determinism.

Tests that read the session pipeline's outputs use it; tests that train again use the toy competition
(tests/train_toy.py) on one torch thread, which takes a second where the digits take a minute.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import EPOCHS, EXPERIMENTS, N_FOLDS, Pipeline
from train_toy import make_toy, own_outputs, toy_cfg

from medal.core.config import Config
from medal.core.io import read_csv
from medal.core.metrics import score
from medal.core.tables import read_folds
from medal.modeling.models import build_model
from medal.modeling.runtime import compute_threads
from medal.train.run import run_train
from medal.train.trainer import FoldTrainer

FOLD_FILES = ["best.pt", "last.pt", "metrics.csv", "steps.csv", "oof.csv", "done.json", "curves.png", "hardest_oof.png",
              "augment_16px.png", "manifest.json", ".train.lock"]


def fold_oof(cfg: Config, fold: int) -> pd.DataFrame:
    return read_csv(cfg.fold_dir(fold) / "oof.csv", "fold OOF", ["image_id", "fold", "target"], ["image_id"])


def fresh_outputs(pipeline: Pipeline, dest: Path) -> Path:
    """A new output_dir holding only the session's clean and folds outputs, with their manifests: nothing trained yet."""
    data_dir = dest / pipeline.data_dir.name
    data_dir.mkdir(parents=True)
    for path in pipeline.data_dir.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, data_dir / path.name)
    return dest


TOY_EPOCHS = 3
# Dropout and EMA make the same-seed and resume comparisons depend on every RNG the loop uses.
TOY = ["train.epochs=3", "model.drop_rate=0.2"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy(tmp_path_factory.mktemp("toy"))


def _toy_run(toy: Path, dest: Path, *overrides: str) -> Config:
    """The toy competition trained on fold 0 (one torch thread, as every comparison here)."""
    cfg = toy_cfg(toy, own_outputs(toy, dest), *TOY, *overrides)
    with compute_threads(torch.device("cpu"), 1):
        run_train(cfg, fold=0)
    return cfg


@pytest.fixture(scope="module")
def retrained(toy, tmp_path_factory) -> tuple[Config, Config]:
    """The same config (same seed) trained twice, fold 0 only, into separate output dirs."""
    return _toy_run(toy, tmp_path_factory.mktemp("first")), _toy_run(toy, tmp_path_factory.mktemp("second"))


@pytest.fixture(scope="module")
def resumed(toy, tmp_path_factory) -> tuple[Config, list[int]]:
    """The toy's fold 0 interrupted before its third epoch (loop index 2), then run again; returns the loop
    indices of the epochs the second run trained."""
    original = FoldTrainer._train_epoch
    trained: list[int] = []

    def crash_at_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(self, epoch)

    def record(self, epoch):
        trained.append(epoch)
        return original(self, epoch)

    dest = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FoldTrainer, "_train_epoch", crash_at_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            _toy_run(toy, dest)
    cfg = toy_cfg(toy, f"output_dir={dest}", *TOY)
    assert not (cfg.fold_dir(0) / "done.json").exists()
    assert torch.load(cfg.fold_dir(0) / "last.pt", weights_only=True)["epoch"] == 2  # epochs done
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FoldTrainer, "_train_epoch", record)
        with compute_threads(torch.device("cpu"), 1):
            run_train(cfg, fold=0)
    return cfg, trained


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_train_stage_exits_0(pipeline, name):
    assert pipeline.codes[f"train:{name}"] == 0


@pytest.mark.parametrize("name", list(EXPERIMENTS))
@pytest.mark.parametrize("fold", range(N_FOLDS))
def test_each_fold_writes_checkpoints_metrics_oof_and_done_marker(pipeline, name, fold):
    folder = pipeline.cfg(name).fold_dir(fold)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FOLD_FILES)


@pytest.mark.parametrize("fold", range(N_FOLDS))
def test_metrics_csv_has_one_row_per_epoch(pipeline, fold):
    metrics = pd.read_csv(pipeline.cfg().fold_dir(fold) / "metrics.csv")
    assert metrics["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert {"lr", "train_loss", "valid_loss", "accuracy"} <= set(metrics.columns)


def test_cosine_schedule_lowers_the_learning_rate_to_min_lr(pipeline):
    cfg = pipeline.cfg()
    lr = pd.read_csv(cfg.fold_dir(0) / "metrics.csv")["lr"].to_numpy()
    assert lr[0] < cfg.train.lr
    assert (np.diff(lr) < 0).all()
    assert lr[-1] == pytest.approx(cfg.train.min_lr)


def test_warmup_reaches_the_peak_lr_when_it_ends_then_cosine_decays(toy, tmp_path):
    cfg = _toy_run(toy, tmp_path, "train.warmup_epochs=1")
    lr = pd.read_csv(cfg.fold_dir(0) / "metrics.csv")["lr"].to_numpy()
    # After the one warmup epoch the LR is at its peak; the cosine then brings it down to min_lr.
    assert lr[0] == pytest.approx(cfg.train.lr)
    assert lr[1] < lr[0] and lr[2] == pytest.approx(cfg.train.min_lr)


@pytest.mark.parametrize("fold", range(N_FOLDS))
def test_fold_oof_holds_exactly_the_folds_validation_ids(pipeline, fold):
    cfg = pipeline.cfg()
    folds = read_folds(cfg)
    oof = fold_oof(cfg, fold)
    expected = folds.loc[folds["fold"] == fold, "image_id"]
    assert sorted(oof["image_id"]) == sorted(expected)
    assert len(oof) == len(expected)
    assert (oof["fold"] == fold).all()


def test_fold_oof_targets_are_the_class_indices_of_the_labels(pipeline, classes):
    cfg = pipeline.cfg()
    folds = read_folds(cfg).set_index("image_id")
    oof = fold_oof(cfg, 0)
    assert [classes[t] for t in oof["target"]] == folds.loc[oof["image_id"], "label"].tolist()


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_fold_oof_probabilities_sum_to_one(pipeline, classes, name):
    probs = fold_oof(pipeline.cfg(name), 0)[classes].to_numpy()
    assert probs.shape[1] == 10
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()


def test_best_checkpoint_is_the_epoch_with_the_best_validation_score(pipeline):
    folder = pipeline.cfg().fold_dir(0)
    metrics = pd.read_csv(folder / "metrics.csv")
    state = torch.load(folder / "best.pt", weights_only=True)
    # train.ema.oof=either (the default): each epoch offers the raw and the EMA weights.
    chosen = metrics[["accuracy", "ema_accuracy"]].max(axis=1)
    best = int(chosen.idxmax())  # first epoch reaching the maximum
    assert state["epoch"] == metrics.loc[best, "epoch"]
    assert state["score"] == pytest.approx(chosen.max())
    assert state["weights"] == ("ema" if metrics.loc[best, "ema_accuracy"] > metrics.loc[best, "accuracy"] else "raw")
    assert json.loads((folder / "done.json").read_text())["best_score"] == pytest.approx(chosen.max())


@pytest.mark.parametrize("metric, best_epoch", [("accuracy", 3), ("log_loss", 2)])
def test_best_checkpoint_follows_the_metrics_direction(toy, tmp_path, monkeypatch, metric, best_epoch):
    scripted = iter([0.5, 0.2, 0.9])  # validation scores of epochs 1, 2, 3
    monkeypatch.setattr(FoldTrainer, "_valid_score", lambda self, probs: next(scripted))
    cfg = _toy_run(toy, tmp_path, f"metric={metric}", "train.ema.enabled=false")
    done = json.loads((cfg.fold_dir(0) / "done.json").read_text())
    assert (done["best_score"], done["best_epoch"]) == ([0.5, 0.2, 0.9][best_epoch - 1], best_epoch)
    state = torch.load(cfg.fold_dir(0) / "best.pt", weights_only=True)
    assert (state["epoch"], state["score"]) == (best_epoch, [0.5, 0.2, 0.9][best_epoch - 1])
    assert pd.read_csv(cfg.fold_dir(0) / "metrics.csv")[metric].tolist() == [0.5, 0.2, 0.9]


def test_best_checkpoint_loads_safely_into_a_fresh_model(pipeline, classes):
    cfg = pipeline.cfg()
    state = torch.load(cfg.fold_dir(1) / "best.pt", weights_only=True)
    assert state["classes"] == classes and state["backbone"] == "test_resnet"
    model = build_model(cfg.model, len(classes))
    model.load_state_dict(state["model"])  # strict: every key and shape matches


def test_fold_oof_score_equals_the_best_checkpoints_score(pipeline):
    cfg = pipeline.cfg()
    for fold in range(N_FOLDS):
        oof = fold_oof(cfg, fold)
        probs = oof[sorted(c for c in oof.columns if c not in {"image_id", "fold", "target"})].to_numpy()
        best = torch.load(cfg.fold_dir(fold) / "best.pt", weights_only=True)["score"]
        assert score("accuracy", oof["target"].to_numpy(), probs) == pytest.approx(best)


def test_experiment_oof_concatenates_the_folds_and_cv_json_scores_it(pipeline, classes):
    cfg = pipeline.cfg()
    oof = read_csv(cfg.exp_dir / "oof.csv", "oof", ["image_id"], ["image_id"])
    parts = pd.concat([fold_oof(cfg, k) for k in range(N_FOLDS)], ignore_index=True)
    pd.testing.assert_frame_equal(oof, parts)
    cv = json.loads((cfg.exp_dir / "cv.json").read_text())
    assert cv["rows"] == len(read_folds(cfg)) and cv["n_folds"] == N_FOLDS
    assert cv["cv"] == pytest.approx(score("accuracy", oof["target"].to_numpy(), oof[classes].to_numpy()))


def test_training_learns_well_above_chance(pipeline):
    cv = json.loads((pipeline.cfg().exp_dir / "cv.json").read_text())["cv"]
    assert cv > 0.3  # ten classes: chance is 0.1


def test_rerunning_a_finished_experiment_skips_every_fold_untouched(pipeline, tmp_path):
    out = pipeline.copy_outputs(tmp_path / "copy")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}")
    files = [cfg.fold_dir(k) / name for k in range(N_FOLDS) for name in FOLD_FILES if not name.endswith(".lock")]
    before = {f: f.stat().st_mtime_ns for f in files}
    scores = run_train(cfg)
    assert {f: f.stat().st_mtime_ns for f in files} == before
    for k in range(N_FOLDS):
        assert scores[k] == pytest.approx(json.loads((cfg.fold_dir(k) / "done.json").read_text())["best_score"])


@pytest.mark.parametrize("fold", [-1, N_FOLDS])
def test_fold_out_of_range_is_refused_naming_the_valid_range(pipeline, tmp_path, fold):
    out = fresh_outputs(pipeline, tmp_path / "o")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}")
    with pytest.raises(ValueError, match=rf"--fold {fold} is out of range: folds.csv has folds 0..{N_FOLDS - 1}"):
        run_train(cfg, fold=fold)
    assert not any(cfg.fold_dir(k).exists() for k in range(N_FOLDS))


def test_fold_out_of_range_on_the_command_line_exits_2_with_the_message(pipeline, tmp_path, capsys):
    from medal.cli import main

    out = fresh_outputs(pipeline, tmp_path / "o")
    code = main(["train", "-c", str(pipeline.configs["tiny_resnet"]), "--fold", "7", f"output_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "medal train: error: --fold 7 is out of range" in err and "Traceback" not in err


def test_train_without_folds_csv_says_to_run_folds(pipeline, tmp_path):
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={tmp_path}")
    with pytest.raises(FileNotFoundError, match="medal folds"):
        run_train(cfg)


@pytest.mark.slow  # over 2 s on a quiet 2-core machine
def test_fold_option_trains_only_that_fold(retrained):
    cfg, _ = retrained
    assert (cfg.fold_dir(0) / "done.json").is_file()
    assert not cfg.fold_dir(1).exists()
    assert not (cfg.exp_dir / "oof.csv").exists()  # written only once every fold is done


def test_same_seed_gives_identical_oof_probabilities(retrained):
    first, second = retrained
    pd.testing.assert_frame_equal(fold_oof(first, 0), fold_oof(second, 0), check_exact=True)


def test_same_seed_gives_identical_metrics_history(retrained):
    a, b = (pd.read_csv(cfg.fold_dir(0) / "metrics.csv").drop(columns="seconds") for cfg in retrained)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_different_seed_gives_different_oof_probabilities(toy, tmp_path, retrained):
    cfg = _toy_run(toy, tmp_path, "seed=7")
    classes = ["diagonal", "horizontal", "vertical"]
    reference = fold_oof(retrained[0], 0)
    assert not np.allclose(fold_oof(cfg, 0)[classes].to_numpy(), reference[classes].to_numpy(), atol=1e-3)


def test_resumed_fold_continues_at_the_epoch_after_last_pt(resumed):
    _, trained = resumed
    assert trained == list(range(2, TOY_EPOCHS))


def test_resumed_fold_keeps_the_metrics_of_the_epochs_before_the_crash(resumed):
    cfg, _ = resumed
    assert pd.read_csv(cfg.fold_dir(0) / "metrics.csv")["epoch"].tolist() == list(range(1, TOY_EPOCHS + 1))


def test_resumed_fold_finishes_with_every_fold_file(resumed):
    cfg, _ = resumed
    assert sorted(p.name for p in cfg.fold_dir(0).iterdir()) == sorted(["best.pt", "last.pt", "metrics.csv", "steps.csv",
                                                                        "oof.csv", "done.json", "curves.png",
                                                                        "manifest.json", ".train.lock"])


def test_resumed_fold_matches_an_uninterrupted_run(retrained, resumed):
    cfg, _ = resumed
    pd.testing.assert_frame_equal(fold_oof(cfg, 0), fold_oof(retrained[0], 0), check_exact=True)
    a = pd.read_csv(cfg.fold_dir(0) / "metrics.csv").drop(columns="seconds")
    b = pd.read_csv(retrained[0].fold_dir(0) / "metrics.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_resuming_with_a_changed_recipe_is_refused_naming_the_key(toy, tmp_path):
    cfg = _toy_run(toy, tmp_path, "train.epochs=1")
    for name in ("done.json", "manifest.json"):  # as a run killed after its last epoch leaves the fold
        (cfg.fold_dir(0) / name).unlink()
    longer = toy_cfg(toy, f"output_dir={tmp_path}", *TOY)
    with pytest.raises(ValueError, match=r"fold 0: its unfinished run \(last.pt\) was written with train.epochs 1 -> 3"):
        run_train(longer, fold=0)
