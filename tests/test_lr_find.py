"""`medal lr-find`: the exponential LR sweep, the suggestion rules, the plot, and untouched model state."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from train_toy import make_toy, one_compute_thread  # noqa: F401 (autouse fixture)

from medal.cli import main
from medal.core.config import LrFindConfig, ModelConfig, TrainConfig
from medal.modeling.models import build_model
from medal.train.lr_find import lr_range_test, suggest, valley_index
from medal.train.optim import build_optimizer


def _batches(n: int = 4):
    torch.manual_seed(1)
    return [(torch.rand(8, 3, 16, 16), torch.randint(0, 3, (8,))) for _ in range(n)]


@pytest.fixture
def trained():
    """A model and an AdamW with state in it (moments, step counts), as after some training."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="test_resnet"), 3)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3, body_lr_scale=0.5))
    for images, labels in _batches(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model, optimizer


def test_range_test_restores_the_model_and_optimizer_it_swept(trained):
    model, optimizer = trained
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    moments = {k: {n: t.clone() for n, t in v.items()} for k, v in opt_state["state"].items()}
    seen = []

    def loss_fn(images, labels):
        seen.append(model.fc.weight.detach().clone())
        return torch.nn.functional.cross_entropy(model(images), labels)

    curve = lr_range_test(model, optimizer, _batches(), loss_fn, LrFindConfig(start_lr=1e-5, end_lr=1e-1, steps=9, diverge=1e9))
    assert not torch.equal(seen[0], seen[-1])  # the sweep did train
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    after = optimizer.state_dict()
    assert [g["lr"] for g in after["param_groups"]] == [g["lr"] for g in opt_state["param_groups"]]
    assert all(torch.equal(t, after["state"][k][n]) for k, v in moments.items() for n, t in v.items())
    assert curve["lr"] == pytest.approx(list(np.logspace(-5, -1, 9)))  # exponential, start to end
    assert len(curve["loss"]) == len(curve["smoothed"]) == 9


def test_range_test_gives_each_group_its_share_of_the_swept_lr(trained):
    model, optimizer = trained
    lrs = []

    def loss_fn(images, labels):
        lrs.append(sorted({g["lr"] for g in optimizer.param_groups}))
        return torch.nn.functional.cross_entropy(model(images), labels)

    lr_range_test(model, optimizer, _batches(), loss_fn, LrFindConfig(start_lr=1e-4, end_lr=1e-2, steps=5, diverge=1e9))
    assert lrs[0] == pytest.approx([0.5e-4, 1e-4]) and lrs[-1] == pytest.approx([0.5e-2, 1e-2])  # body x body_lr_scale


def test_range_test_stops_when_the_loss_diverges(trained):
    model, optimizer = trained
    calls = iter(range(100))

    def exploding(images, labels):
        i = next(calls)
        return model(images).sum() * 0 + (1.0 if i < 5 else 10.0 ** (i - 4))

    curve = lr_range_test(model, optimizer, _batches(), exploding, LrFindConfig(steps=50, diverge=4.0))
    assert len(curve["lr"]) < 10


def _curve():
    lrs = np.logspace(-6, 0, 61)
    x = np.log10(lrs)
    loss = 2.0 - 1.0 / (1.0 + np.exp(-(x + 3.0) * 3.0)) + np.exp((x + 0.5) * 6.0) * 0.05
    return list(lrs), list(loss)


def test_steepest_rule_finds_the_fastest_fall():
    lrs, loss = _curve()
    assert math.log10(suggest(lrs, loss, "steepest")) == pytest.approx(-3.0, abs=0.15)


def test_valley_rule_lands_inside_the_longest_fall():
    lrs, loss = _curve()
    bottom = int(np.argmin(loss))
    index = valley_index(np.asarray(loss))
    assert 0 < index < bottom and loss[index] < loss[0]
    assert index == pytest.approx(bottom / 2, abs=2)  # fastai: half-way along the falling stretch
    assert suggest(lrs, loss, "valley") == lrs[index]


def test_too_short_a_sweep_is_refused():
    with pytest.raises(ValueError, match="too few to suggest an LR"):
        suggest([1e-3, 1e-2], [1.0, 0.9], "valley")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("lrfind"))


def test_lr_find_command_writes_plot_curve_and_suggestion(toy, capsys):
    code = main(["lr-find", "-c", str(toy), "--fold", "1", "lr_find.steps=12", "lr_find.diverge=100"])
    out = capsys.readouterr().out
    stem = toy.parent / "outputs" / "toy" / "toy" / "lr_find_fold1"
    report = json.loads(stem.with_suffix(".json").read_text())
    assert code == 0 and f"suggested lr {report['suggested_lr']:.3g}" in out
    curve = pd.read_csv(stem.with_suffix(".csv"))
    assert len(curve) == report["steps"] == 12 and report["suggested_lr"] in curve["lr"].tolist()
    assert cv2.imread(str(stem.with_suffix(".png"))) is not None
    assert not (toy.parent / "outputs" / "toy" / "toy" / "fold1").exists()  # no training outputs


def test_lr_find_refuses_a_fold_out_of_range(toy, capsys):
    code = main(["lr-find", "-c", str(toy), "--fold", "5"])
    assert code == 2 and "--fold 5 is out of range" in capsys.readouterr().err


def test_lr_find_help_lists_its_settings(capsys):
    with pytest.raises(SystemExit):
        main(["lr-find", "--help"])
    out = capsys.readouterr().out
    assert "lr_find.rule" in out and "--fold" in out
