"""`medal recipe-check`: the current recipe, the plain one and an LR grid trained on one fold, side by side."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from medal.cli import main
from medal.core.config import load_config
from medal.train.recipe_check import candidates
from train_toy import make_toy, one_compute_thread  # noqa: F401


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("check"), per_class=6)


def test_candidates_change_only_what_they_name(toy):
    cfg = load_config(toy, ["train.lr=0.01"])
    found = {c.name: c.overrides for c in candidates(cfg, (0.5, 2.0), ["flips:train.augment=flips,train.epochs=2"])}
    assert list(found) == ["current", "plain", "lr/2", "lr*2", "flips"]
    assert found["current"] == ()
    assert found["lr/2"] == ("train.lr=0.005",) and found["lr*2"] == ("train.lr=0.02",)
    assert "train.min_lr=0.01" in found["plain"] and "train.augment=none" in found["plain"]
    assert found["flips"] == ("train.augment=flips", "train.epochs=2")
    with pytest.raises(ValueError, match="NAME:key=value"):
        candidates(cfg, (), ["flips"])


@pytest.mark.slow
def test_recipe_check_trains_each_recipe_on_one_fold_and_a_rerun_trains_nothing(toy, capsys):
    args = ["recipe-check", "-c", str(toy), "--fold", "1", "--lr-factors", "3", "--try", "flips:train.augment=flips"]
    assert main(args) == 0
    cfg = load_config(toy)
    table = pd.read_csv(cfg.exp_dir / "recipe_check.csv")
    assert table["recipe"].tolist() == ["current", "plain", "lr*3", "flips"]
    recipes = {}
    for row in table.itertuples():
        fold = cfg.exp_dir.parent / row.experiment / "fold1"
        done = json.loads((fold / "done.json").read_text())
        assert row.score == pytest.approx(done["best_score"])
        assert not (cfg.exp_dir.parent / row.experiment / "fold0").exists()  # one split only
        recipes[row.recipe] = torch.load(fold / "last.pt", weights_only=False)["recipe"]["train"]
    # What each experiment really trained with, as its checkpoint records it.
    assert recipes["lr*3"]["lr"] == pytest.approx(3 * recipes["current"]["lr"])
    assert recipes["plain"]["augment"] == "none" and recipes["plain"]["label_smoothing"] == 0
    assert recipes["plain"]["min_lr"] == recipes["plain"]["lr"] and not recipes["plain"]["ema"]["enabled"]
    assert recipes["flips"]["augment"] == "flips" and recipes["current"]["augment"] == "light"
    printed = capsys.readouterr().out
    assert "lr*3" in printed and "plain" in printed
    stamps = {p: p.stat().st_mtime_ns for p in cfg.exp_dir.parent.glob("toy-check-*/fold1/best.pt")}
    assert len(stamps) == 4
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # A changed recipe: every check experiment is stale and retrained, none refused.
    assert main([*args, "train.weight_decay=0.02"]) == 0
    assert all(p.stat().st_mtime_ns != stamp for p, stamp in stamps.items())
