"""Fold-level switches: which weights (EMA or raw) become best.pt and the OOF, early stopping, progressive
stages under one schedule, and the end-of-fold diagnosis."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from train_toy import make_toy, make_trainer, one_compute_thread, own_outputs, toy_cfg  # noqa: F401 (autouse fixture)

from medal.core.config import ConfigError
from medal.modeling.predict import predict_probs
from medal.train.diagnosis import diagnose
from medal.train.run import run_train
from medal.train.trainer import FoldTrainer


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("fold"))


def _oof_probs(cfg) -> np.ndarray:
    oof = pd.read_csv(cfg.fold_dir(0) / "oof.csv")
    return oof[[c for c in oof.columns if c not in {"image_id", "fold", "target"}]].to_numpy()


def test_ema_weights_become_best_pt_and_the_oof_when_chosen(toy, tmp_path):
    cfg = toy_cfg(toy, own_outputs(toy, tmp_path), "train.ema.oof=ema")
    run_train(cfg, fold=0)
    last = torch.load(cfg.fold_dir(0) / "last.pt", weights_only=True)  # one epoch: best epoch = last epoch
    best = torch.load(cfg.fold_dir(0) / "best.pt", weights_only=True)
    assert best["weights"] == "ema" and json.loads((cfg.fold_dir(0) / "done.json").read_text())["weights"] == "ema"
    assert all(torch.equal(best["model"][k], last["ema"][k]) for k in best["model"])
    assert not all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])
    trainer = make_trainer(cfg)
    trainer.model.load_state_dict(last["ema"])
    ema_probs, _ = predict_probs(trainer.model, trainer.valid_loader, trainer.device, False)
    trainer.model.load_state_dict(last["model"])
    raw_probs, _ = predict_probs(trainer.model, trainer.valid_loader, trainer.device, False)
    np.testing.assert_allclose(_oof_probs(cfg), ema_probs, atol=1e-6)
    assert not np.allclose(_oof_probs(cfg), raw_probs, atol=1e-4)


@pytest.mark.parametrize("choice, expected", [("raw", "raw"), ("ema", "ema")])
def test_ema_oof_switch_picks_whose_weights_are_saved(toy, tmp_path, choice, expected):
    trainer = make_trainer(toy_cfg(toy, own_outputs(toy, tmp_path), f"train.ema.oof={choice}"))
    trainer._enter_stage(0)
    trainer._train_epoch(0)
    trainer._validate(0)
    source = trainer.ema.module if expected == "ema" else trainer.model
    best = torch.load(trainer.out / "best.pt", weights_only=True)
    assert best["weights"] == expected
    assert all(torch.equal(v, best["model"][k]) for k, v in source.state_dict().items())


def test_either_takes_whichever_weights_validate_better(toy, tmp_path, monkeypatch):
    scores = iter([0.4, 0.7])  # raw, then EMA
    monkeypatch.setattr(FoldTrainer, "_valid_score", lambda self, probs: next(scores))
    trainer = make_trainer(toy_cfg(toy, own_outputs(toy, tmp_path), "train.ema.oof=either"))
    trainer._enter_stage(0)
    trainer._train_epoch(0)
    assert trainer._validate(0)["chosen"] == "ema" and trainer.best_score == 0.7


def test_early_stopping_stops_after_patience_epochs_without_improvement(toy, tmp_path, monkeypatch):
    scores = iter([0.5, 0.6, 0.55, 0.58, 0.9, 0.9])  # epochs 2 and 3 do not beat epoch 1
    monkeypatch.setattr(FoldTrainer, "_valid_score", lambda self, probs: next(scores))
    cfg = toy_cfg(toy, own_outputs(toy, tmp_path), "train.ema.enabled=false", "train.epochs=6", "train.patience=2")
    assert run_train(cfg, fold=0) == {0: 0.6}
    done = json.loads((cfg.fold_dir(0) / "done.json").read_text())
    assert (done["epochs_trained"], done["stopped_early"], done["best_epoch"]) == (4, True, 2)
    assert pd.read_csv(cfg.fold_dir(0) / "metrics.csv")["epoch"].tolist() == [1, 2, 3, 4]


def test_progressive_stages_continue_one_schedule_and_validate_at_the_final_size(toy, tmp_path):
    stages = "train.stages=[{image_size: 16, epochs: 1, batch_size: 6}, {image_size: 20, epochs: 1, batch_size: 10}]"
    cfg = toy_cfg(toy, own_outputs(toy, tmp_path), stages, "train.image_size=20", "train.ema.enabled=false")
    run_train(cfg, fold=0)
    steps = pd.read_csv(cfg.fold_dir(0) / "steps.csv")
    assert steps.groupby("epoch")["batch_size"].unique().map(list).tolist() == [[6], [10]]
    lr = steps["lr"].to_numpy()
    assert (np.diff(lr) < 0).all()  # one cosine across the stage boundary: no restart, no jump
    first_of_stage_2 = lr[steps["epoch"].to_numpy() == 2][0]
    assert first_of_stage_2 == pytest.approx((cfg.train.lr + cfg.train.min_lr) / 2)  # half-way down the cosine
    assert torch.load(cfg.fold_dir(0) / "best.pt", weights_only=True)["image_size"] == 20


def test_stages_must_end_at_the_inference_image_size(toy):
    with pytest.raises(ConfigError, match=r"train.stages: the last stage's image_size \(16\) must equal train.image_size \(20\)"):
        toy_cfg(toy, "train.stages=[{image_size: 16, epochs: 1, batch_size: 6}]", "train.image_size=20")


@pytest.mark.parametrize("train, valid, verdict", [
    (0.08, 2.0, "overfitting"),   # an order of magnitude below
    (0.8, 0.9, "healthy"),        # a normal gap
    (0.5, 2.0, "healthy"),        # a gap, but not an order of magnitude
    (1.2, 0.9, "underfitting"),   # train above validation
])
def test_diagnosis(train, valid, verdict):
    assert diagnose(train, valid)["verdict"] == verdict


def test_overfit_ratio_sets_how_far_below_counts_as_overfitting():
    assert diagnose(0.8, 2.0, overfit_ratio=2.5)["verdict"] == "overfitting"  # TECHNIQUES.md's example
    assert diagnose(0.8, 2.0)["verdict"] == "healthy"
