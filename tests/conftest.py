"""Shared fixtures: a tiny demo competition and one pipeline run through the CLI, built once per session.

Every path a config names is absolute and under pytest's tmp folders, so the
suite does not depend on the working directory and never writes into the repo.
"""
from __future__ import annotations

import os

# Before anything imports albumentations: no update check over the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import contextlib  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from medal.core.config import Config, load_config  # noqa: E402
from medal.core.log import LOGGER_NAME  # noqa: E402

# The session pipeline: small enough for two CPU cores, long enough to learn digits.
PER_CLASS = 30
IMAGE_SIZE = 16
EPOCHS = 6
N_FOLDS = 2
EXPERIMENTS = {"tiny_resnet": "test_resnet", "tiny_effnet": "test_efficientnet"}
TTA = ["identity", "hflip", "vflip"]


def reset_medal_logging() -> None:
    """Drop the CLI's log handler so the next `main()` binds a fresh one to the current stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


# Tiers: `slow` marks every test that runs the session pipeline (below, by fixture use, so a new test that asks
# for `pipeline`, `classes` or any fixture built on them is marked without saying so), spawns a process (python -m
# medal, torchrun, a bash script, Chromium, the W&B service: marked by hand, per test or per module, or by a
# fixture below), reads the real datasets under /work/shared/data (by hand), or trains several models end to end
# (a tune study, a recipe-check: the same), or takes over 2 s on a quiet 2-core machine (by hand, with that
# comment; `--durations=20` on the fast tier finds them). `scripts/test.sh -m "not slow"` is the fast tier, under a
# minute.
# The fixtures that make their users slow: the pipeline; test_tracking's W&B-tracked training (the W&B service
# is a process of its own); test_tune's pruned study (three trainings).
SLOW_FIXTURES = {"pipeline", "tracked", "pruned_study"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """A test that uses the pipeline re-runs its stages on copies (infer, train --force, blend): on one torch
    thread, as the fixture itself, setup and teardown of its module fixtures included."""
    if "pipeline" not in getattr(item, "fixturenames", ()):
        return (yield)
    with torch_threads(1):
        return (yield)


@pytest.fixture(autouse=True)
def _fresh_logging():
    reset_medal_logging()
    yield
    reset_medal_logging()


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# Small real image files, encoded with OpenCV and PIL.


def noise(height: int = 64, width: int = 64, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok, ext
    return buffer.tobytes()


def png(image: np.ndarray | None = None) -> bytes:
    return encode(noise() if image is None else image, ".png")


def jpeg(image: np.ndarray | None = None) -> bytes:
    return encode(noise() if image is None else image, ".jpg")


def gif(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="GIF")
    return buffer.getvalue()


@dataclass
class Pipeline:
    """Where the session pipeline put everything, and what each CLI stage returned."""
    root: Path                    # the demo competition (train/, test/, train.csv, ...)
    out: Path                     # output_dir
    submissions: Path             # blend.submission_dir
    configs: dict[str, Path]      # experiment name -> YAML file
    codes: dict[str, int] = field(default_factory=dict)   # stage -> CLI exit code
    stdout: dict[str, str] = field(default_factory=dict)  # stage -> what it printed
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time (`--durations` shows only the total)

    def cfg(self, name: str = "tiny_resnet", *overrides: str) -> Config:
        return load_config(self.configs[name], list(overrides))

    @property
    def data_dir(self) -> Path:
        return self.out / self.root.name

    @property
    def submission(self) -> Path:
        return self.submissions / "e2e.csv"

    def copy_outputs(self, dest: Path) -> Path:
        """A private copy of output_dir for tests that modify outputs; returns the new output_dir."""
        shutil.copytree(self.out, dest)
        return dest


def _cli(pipeline: Pipeline, stage: str, argv: list[str]) -> None:
    from medal.cli import main

    buffer = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buffer):
        pipeline.codes[stage] = main(argv)
    pipeline.seconds[stage] = time.perf_counter() - start
    pipeline.stdout[stage] = buffer.getvalue()
    reset_medal_logging()


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Pipeline:
    """demo -> clean -> folds -> train x2 -> infer x2 -> blend -> report x3 -> check -> score, all via `medal.cli.main`.

    Stages that fail leave their exit code in `codes`; later stages still run so
    that tests report the first broken stage rather than a fixture error.
    """
    base = tmp_path_factory.mktemp("pipeline")
    root, out, subs = base / "demo", base / "outputs", base / "submissions"
    shared = {
        "seed": 42,
        "metric": "accuracy",
        "output_dir": str(out),
        "data": {"root": str(root), "image_ext": ".png"},
        "folds": {"n_folds": N_FOLDS, "seed": 42},
        "train": {"image_size": IMAGE_SIZE, "epochs": EPOCHS, "batch_size": 16, "lr": 3.0e-3,
                  "warmup_epochs": 0.0, "augment": "light"},
        # One thread: the fixture's cost stays flat when the cores are busy (torch's default, a thread per core,
        # made it 10x slower under load). cpu_threads covers train (and any test that retrains a copy of these
        # outputs); the torch_threads(1) around the stages below covers infer, blend and report.
        "runtime": {"num_workers": 0, "device": "cpu", "cpu_threads": 1},
        "clean": {"workers": 1},
        "infer": {"tta": TTA, "tta_select": "greedy", "batch_size": 64},
        "blend": {"experiments": list(EXPERIMENTS), "submission_name": "e2e", "submission_dir": str(subs),
                  "method": "mean"},  # the tests check the mean's arithmetic; test_blend.py's `compared` covers compare
    }
    cfg_dir = base / "configs"
    write_yaml(cfg_dir / "base.yaml", shared)
    # Head dropout draws from torch's global RNG, so resume must restore it to match an uninterrupted run.
    configs = {name: write_yaml(cfg_dir / f"{name}.yaml", {"base": "base.yaml", "name": name,
                                                           "model": {"backbone": backbone, "drop_rate": 0.1}})
               for name, backbone in EXPERIMENTS.items()}
    p = Pipeline(root=root, out=out, submissions=subs, configs=configs)
    first = str(configs["tiny_resnet"])
    with torch_threads(1):
        _run_stages(p, configs, root, first)
    return p


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to `n` inside, restored on exit (other tests keep torch's default)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_stages(p: Pipeline, configs: dict[str, Path], root: Path, first: str) -> None:
    _cli(p, "demo", ["demo", "--out", str(root), "--size", str(IMAGE_SIZE), "--per-class", str(PER_CLASS)])
    _cli(p, "clean", ["clean", "-c", first])
    _cli(p, "folds", ["folds", "-c", first])
    for name, path in configs.items():
        _cli(p, f"train:{name}", ["train", "-c", str(path)])
        _cli(p, f"infer:{name}", ["infer", "-c", str(path)])
    _cli(p, "blend", ["blend", "-c", first])
    for name, path in configs.items():  # as scripts/run_all.sh ends: a page per experiment and one for the blend
        _cli(p, f"report:{name}", ["report", "-c", str(path)])
    _cli(p, "report:blend", ["report", "-c", first, "--blend"])
    _cli(p, "check-submission", ["check-submission", str(p.submission), "-c", first])
    _cli(p, "score", ["score", str(p.submission), "--solution", str(root / "solution.csv"), "-c", first])


@pytest.fixture(scope="session")
def classes(pipeline) -> list[str]:
    from medal.core.tables import class_names, read_folds

    return class_names(read_folds(pipeline.cfg())["label"])
