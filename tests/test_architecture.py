"""The layout's promises, each checked: the import rules (lint-imports), clean and folds without torch, the config's
registry names equal to the registries', one module naming the inter-stage files, and resume under runtime changes."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_yaml

from medal.core import names
from medal.core.config import ReportConfig, RuntimeConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@pytest.mark.slow
def test_the_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    assert lint, "lint-imports is not installed: pip install -r requirements-dev.txt"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: 3 kept, 0 broken", result.stdout), result.stdout


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("notorch")
    subprocess.run([sys.executable, "-m", "medal", "demo", "--out", str(base / "comp"), "--per-class", "6"],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    return write_yaml(base / "exp.yaml", {"name": "exp", "output_dir": str(base / "outputs"),
                                          "data": {"root": str(base / "comp"), "image_ext": ".png"},
                                          "folds": {"n_folds": 3}, "clean": {"workers": 2}})


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["clean", "folds"])
def test_clean_and_folds_run_without_importing_torch(stage, demo_config):
    # One process per stage: the stage's whole run, then a look at what it imported. clean's scan workers are
    # forked from it, so they cannot hold torch either.
    script = ("import sys\nfrom medal.cli import main\n"
              f"code = main(['{stage}', '-c', r'{demo_config}'])\n"
              "print('exit', code, 'torch' in sys.modules, 'torchvision' in sys.modules, 'albumentations' in sys.modules)")
    if stage == "folds":
        script = script.replace("code = main(['folds'", "main(['clean', '-c', r'%s'])\ncode = main(['folds'" % demo_config)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "exit 0 False False False", result.stdout + result.stderr


@pytest.mark.slow
def test_a_config_with_every_registry_name_validates_without_importing_torch(demo_config):
    script = ("import sys\nfrom medal.core.config import load_config\n"
              f"load_config(r'{demo_config}', ['train.augment=photo', 'infer.tta=[d4, scale_0.875, aug3]', "
              "'infer.tta_augment=flips', 'metric=qwk', 'blend.method=caruana', 'folds.strategy=kfold'])\n"
              "print(sorted(m for m in ('torch', 'albumentations', 'sklearn', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_config_names_equal_the_registries():
    from medal.blend.methods import METHODS
    from medal.core.metrics import METRICS
    from medal.folds.run import STRATEGIES
    from medal.images.augment import PRESETS
    from medal.infer.reduce import REDUCTIONS
    from medal.modeling.views import VIEWS

    assert names.AUGMENT_PRESETS == tuple(PRESETS)
    assert names.METRICS == tuple(METRICS)
    assert names.FOLD_STRATEGIES == tuple(STRATEGIES)
    assert names.BLEND_METHODS == tuple(METHODS)
    assert names.TTA_REDUCTIONS == tuple(REDUCTIONS)
    assert names.TTA_VIEWS == tuple(VIEWS)
    assert set(names.TTA_VIEW_SETS["d4"]) == set(VIEWS)


@pytest.mark.parametrize("name, valid", [("scale_0.875", True), ("scale_4", True), ("scale_4.5", False),
                                         ("scale_0.2", False), ("aug0", True), ("aug99", True), ("aug100", False),
                                         ("hflip", True), ("hflipp", False), ("d4", False)])
def test_the_view_grammar_accepts_exactly_the_views_inference_can_make(name, valid):
    from medal.modeling.views import get_view

    if valid:
        assert names.check_view(name) == name and get_view(name).name == name
    else:
        with pytest.raises(ValueError, match="is not a TTA view"):
            names.check_view(name)
        with pytest.raises(ValueError, match="is not a TTA view"):
            get_view(name)


def test_every_package_hands_on_the_names_it_lists():
    import importlib

    for package in ["core", "images", "modeling", "clean", "folds", "train", "infer", "blend"]:
        module = importlib.import_module(f"medal.{package}")
        for name in module.__all__:
            assert getattr(module, name) is not None, f"medal.{package}.{name}"
        with pytest.raises(AttributeError):
            module.no_such_name  # noqa: B018


# Files one stage hands to another: only medal.core.layout spells them.
CONTRACT_FILES = ["clean.csv", "dropped.csv", "duplicates.csv", "folds.csv", "best.pt", "last.pt", "oof.csv",
                  "done.json", "cv.json", "oof_tta.csv", "test_pred.csv", "tta.json"]


def test_only_the_layout_module_spells_the_files_between_stages():
    quoted = re.compile(r"""(["'])(?:[^"'\n]*/)?(%s)\1""" % "|".join(map(re.escape, CONTRACT_FILES)))
    offenders = [f"{path.relative_to(SRC)}:{n}: {line.strip()}"
                 for path in sorted((SRC / "medal").rglob("*.py")) if path != SRC / "medal" / "core" / "layout.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if quoted.search(line)]
    assert offenders == []


def test_resume_recipe_ignores_every_runtime_and_report_key_and_keeps_every_train_key(tmp_path):
    from medal.modeling.checkpoint import recipe

    root = tmp_path / "comp"
    root.mkdir()
    config = write_yaml(tmp_path / "exp.yaml", {"name": "exp", "data": {"root": str(root)}})
    base = recipe(load_config(config))
    changed = {"num_workers": 7, "persistent_workers": False, "cpu_threads": 3, "device": "cpu", "amp": False,
               "amp_dtype": "fp16", "sync_bn": True, "channels_last": False, "compile": True,
               "sample_grid": 0, "gallery_size": 2, "overfit_ratio": 3.0, "progress_steps": 5, "progress_seconds": 2.0}
    assert set(changed) == set(RuntimeConfig.model_fields) | set(ReportConfig.model_fields)
    for key, value in changed.items():
        section = "runtime" if key in RuntimeConfig.model_fields else "report"
        assert recipe(load_config(config, [f"{section}.{key}={value}"])) == base, key
    for override in ["train.lr=0.5", "train.patience=2", "train.ema.decay=0.9", "model.backbone=resnet18", "seed=1"]:
        assert recipe(load_config(config, [override])) != base, override


def test_an_old_config_is_told_where_a_moved_key_went(tmp_path):
    from medal.core.config import ConfigError

    root = tmp_path / "comp"
    root.mkdir()
    config = write_yaml(tmp_path / "exp.yaml", {"name": "exp", "data": {"root": str(root)}, "train": {"num_workers": 0}})
    with pytest.raises(ConfigError, match=r"train\.num_workers: moved to runtime\.num_workers"):
        load_config(config)
    with pytest.raises(ConfigError, match=r"train\.lr_find: moved to lr_find"):
        load_config(config, ["train.num_workers=null", "train.lr_find.steps=10"])
