"""`medal tune`: an Optuna study over config keys, each trial trained by the train stage as an experiment of its own."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from train_toy import make_toy, one_compute_thread  # noqa: F401

from medal.cli import main
from medal.core import layout
from medal.core.config import ConfigError, derive, load_config
from medal.core.provenance import StaleError
from medal.tune import TuneOptions, run_tune
from medal.tune.space import check_space, load_space
from medal.tune.study import epoch_reporter, open_study, trial_name, tune_dir

SRC = Path(__file__).resolve().parents[1] / "src"
COMPLETE, PRUNED, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy(tmp_path_factory.mktemp("tune"), per_class=20)


def lr_space(folder: Path, low: float = 1e-7, high: float = 1.0) -> Path:
    path = folder / "space.yaml"
    path.write_text(f"train.lr: {{float: [{low!r}, {high!r}], log: true}}\n")
    return path


def median(startup: int = 1):
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)


def epochs_trained(cfg, experiment: str, fold: int = 0) -> int:
    return len(pd.read_csv(cfg.data_dir / experiment / f"fold{fold}" / "metrics.csv"))


@pytest.fixture(scope="module")
def pruned_study(toy):
    """A study of three trials on fold 0, 4 epochs each: the baseline (the config's own LR, 1e-6: nothing learnt),
    LR 0.03 (learns) and LR 1e-7 (nothing learnt again, so below the median from its first epoch: pruned)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a module fixture runs before the per-test one_compute_thread
    try:
        cfg = load_config(toy, ["train.epochs=4", "train.lr=1e-6"])
        opts = TuneOptions(space=lr_space(toy.parent), trials=1, study="prune")
        first = run_tune(cfg, opts, pruner=median())
        study = open_study(cfg, opts, "prune")
        study.enqueue_trial({"train.lr": 0.03})
        study.enqueue_trial({"train.lr": 1e-7})
        summary = run_tune(cfg, TuneOptions(space=opts.space, trials=3, study="prune"), pruner=median())
    finally:
        torch.set_num_threads(threads)
    return cfg, study, first, summary


def test_a_trial_that_falls_below_the_median_is_pruned_after_its_first_epoch(pruned_study):
    cfg, study, first, summary = pruned_study
    trials = study.get_trials()
    assert [t.state for t in trials] == [COMPLETE, COMPLETE, PRUNED]
    # Trial 0 is the config as it is, enqueued before any other.
    assert trials[0].params == {"train.lr": pytest.approx(1e-6)} and trials[0].user_attrs["baseline"] is True
    assert first["trials"] == 1 and first["baseline_value"] == first["best_value"]
    # Every epoch of a complete trial was reported; the pruned one stopped after one of four.
    assert sorted(trials[1].intermediate_values) == [0, 1, 2, 3]
    assert list(trials[2].intermediate_values) == [0]
    assert epochs_trained(cfg, trials[2].user_attrs["experiment"]) == 1 < cfg.train.total_epochs
    assert epochs_trained(cfg, trials[1].user_attrs["experiment"]) == 4
    # The pruned fold keeps last.pt and no manifest: the same recipe resumes it, nothing takes it for complete.
    pruned = derive(cfg, [f"name={trials[2].user_attrs['experiment']}"])
    assert layout.last_checkpoint(pruned, 0).is_file() and not layout.fold_manifest(pruned, 0).is_file()
    # The objective is the fold's best score, as done.json records it.
    done = json.loads(layout.fold_done(derive(cfg, [f"name={trials[1].user_attrs['experiment']}"]), 0).read_text())
    assert trials[1].value == pytest.approx(done["best_score"])
    assert summary["best_trial"] == 1 and trials[1].value - trials[0].value > 0.2
    assert summary["gain"] == pytest.approx(trials[1].value - trials[0].value)


def test_each_epoch_reports_the_score_best_pt_follows_at_a_step_counted_over_folds(toy):
    cfg = load_config(toy, ["train.epochs=5"])
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    report = epoch_reporter(trial, cfg, (2, 4))
    report(4, {"epoch": 2, "accuracy": 0.5, "ema_accuracy": 0.7, "chosen": "ema"})
    report(2, {"epoch": 3, "accuracy": 0.6, "ema_accuracy": 0.4, "chosen": "raw"})
    report(2, {"epoch": 1, "accuracy": 0.2})  # no EMA: the raw weights'
    assert study.trials[0].intermediate_values == {1 * 5 + 1: 0.7, 2: 0.6, 0: 0.2}


def test_the_best_config_is_a_full_config_that_trains_the_best_trial_recipe(pruned_study, tmp_path):
    cfg, study, _, summary = pruned_study
    best = tune_dir(cfg, "prune") / "best.yaml"
    assert summary["best_config"] == best and "base:" not in best.read_text()
    tuned = load_config(best)
    assert tuned.name == "toy-tuned" and tuned.train.lr == pytest.approx(study.best_params["train.lr"]) == 0.03
    assert tuned.train.epochs == 4 and tuned.model.backbone == cfg.model.backbone
    assert main(["train", "-c", str(best), "--fold", "0"]) == 0
    trained = torch.load(layout.last_checkpoint(tuned, 0), weights_only=False)["recipe"]["train"]
    assert trained["lr"] == pytest.approx(0.03) and layout.fold_manifest(tuned, 0).is_file()
    # trials.csv is Optuna's table; study.html one offline page with the plots.
    table = pd.read_csv(tune_dir(cfg, "prune") / "trials.csv")
    assert table["state"].tolist() == ["COMPLETE", "COMPLETE", "PRUNED"]
    page = (tune_dir(cfg, "prune") / "study.html").read_text()
    assert page.count("Plotly.newPlot") == 3 and not re.search(r"<script[^>]*\bsrc=", page)  # nothing from the network


@pytest.mark.slow
def test_a_second_process_joins_the_same_sqlite_study_with_trials_of_its_own(toy):
    args = ["--space", str(lr_space(toy.parent, 1e-3, 0.1)), "--study", "shared", "--pruner", "none"]
    cfg = load_config(toy, ["train.epochs=1"])
    run_tune(cfg, TuneOptions(space=Path(args[1]), trials=1, study="shared", pruner="none"))
    env = {**os.environ, "PYTHONPATH": str(SRC), "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    worker = subprocess.run([sys.executable, "-m", "medal", "tune", "-c", str(toy), *args, "--trials", "3",
                             "train.epochs=1"], check=False, capture_output=True, text=True, env=env, timeout=300)
    assert worker.returncode == 0, worker.stderr[-3000:]
    trials = open_study(cfg, TuneOptions(space=Path(args[1]), study="shared"), "shared").get_trials()
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state == COMPLETE for t in trials)
    assert "tune trial 1" in worker.stderr and "tune trial 2" in worker.stderr and "tune trial 0 " not in worker.stderr
    names = [t.user_attrs["experiment"] for t in trials]
    assert names == [trial_name(cfg, "shared", n) for n in range(3)]
    for number, name in enumerate(names):  # each trial trained its own experiment, tagged for W&B
        assert (cfg.data_dir / name / "fold0" / "manifest.json").is_file()
        assert yaml.safe_load((cfg.data_dir / name / "config.yaml").read_text())["tracking"]["tags"] == [
            "tune:shared", f"trial:{number}"]
    lrs = [torch.load(cfg.data_dir / n / "fold0" / "last.pt", weights_only=False)["recipe"]["train"]["lr"] for n in names]
    assert lrs == pytest.approx([t.params["train.lr"] for t in trials])
    assert "tune trial 2" in (tune_dir(cfg, "shared") / "medal.log").read_text()


@pytest.mark.slow
def test_a_trial_folder_holding_a_fold_of_another_recipe_is_refused_not_overwritten(toy):
    space = lr_space(toy.parent)
    cfg = load_config(toy, ["train.epochs=1"])
    opts = TuneOptions(space=space, trials=1, study="stale", pruner="none")
    run_tune(cfg, opts)
    best_pt = layout.best_checkpoint(load_config(toy, [f"name={trial_name(cfg, 'stale', 0)}"]), 0)
    stamp = best_pt.stat().st_mtime_ns
    # The study remembers its base recipe: another one is refused before any trial.
    other = load_config(toy, ["train.epochs=1", "train.lr=0.01"])
    with pytest.raises(ConfigError, match=r"another base recipe \(train.lr 0.003 -> 0.01"):
        run_tune(other, opts)
    # The study deleted and restarted: the same recipe reuses trial 0's complete fold ...
    (tune_dir(cfg, "stale") / "study.db").unlink()
    assert run_tune(cfg, opts)["complete"] == 1 and best_pt.stat().st_mtime_ns == stamp
    # ... another recipe in the same folder is refused, and the fold is left as it was.
    (tune_dir(cfg, "stale") / "study.db").unlink()
    with pytest.raises(StaleError, match=r"tune trial 0: its folder .*stale-t0000 holds a fold trained under another "
                                         r"recipe or other folds, which tune never overwrites[\s\S]*train.lr 0.003 -> 0.01"):
        run_tune(other, opts)
    assert best_pt.stat().st_mtime_ns == stamp
    assert [t.state for t in open_study(other, opts, "stale").get_trials()] == [FAIL]


@pytest.mark.parametrize(("text", "message"), [
    ("train.lrr: {float: [1.0e-4, 1.0e-2]}", r"train\.lrr: .*unknown key \(did you mean 'lr'\?\)"),
    ("train.lr: {float: [1.0e-2, 1.0e-4]}", r"train\.lr: bad range \[0\.01, 0\.0001\]"),
    ("train.lr: {float: [0.0, 1.0e-2], log: true}", r"train\.lr: a log range must start above 0"),
    ("train.augment: {categorical: []}", r"train\.augment: categorical needs a non-empty list"),
    ("train.augment: {categorical: [light, flipz]}", r"train\.augment: the config refuses train\.augment='flipz'"),
    ("train.image_size: {int: [4, 32]}", r"train\.image_size: the config refuses train\.image_size=4"),
    ("train.lr: {float: [1.0e-4, 1.0e-2], lg: true}", r"train\.lr: unknown option\(s\) \['lg'\]"),
    ("runtime.num_workers: {int: [0, 4]}", r"runtime\.num_workers: only recipe keys"),
    ("model.backbone: {categorical: [test_resnet, resnt10t]}", r"'resnt10t' is not a timm model \(did you mean"),
])
def test_the_space_file_is_checked_before_any_trial_naming_the_key(toy, tmp_path, text, message):
    space = tmp_path / "space.yaml"
    space.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        check_space(load_config(toy), load_space(space), space)


def test_the_command_refuses_a_bad_space_at_once_and_starts_no_study(toy, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {float: [1.0e-4, 1.0e-2]}\ntrain.wieght_decay: {float: [0.0, 0.1]}\n")
    assert main(["tune", "-c", str(toy), "--space", str(space), "--study", "typo"]) == 2
    assert "train.wieght_decay: unknown key (did you mean 'weight_decay'?)" in capsys.readouterr().err
    assert not (tune_dir(load_config(toy), "typo") / "study.db").exists()


def test_tune_refuses_torchrun_and_names_the_install_without_optuna(toy, monkeypatch, capsys):
    space = lr_space(toy.parent)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["tune", "-c", str(toy), "--space", str(space)]) == 2
    assert "only `medal train` runs under torchrun" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    assert main(["tune", "-c", str(toy), "--space", str(space), "--study", "none"]) == 2
    assert "pip install optuna plotly" in capsys.readouterr().err
