"""A toy competition for the training tests: 3 classes of striped 24 px PNGs, folds.csv written directly.

Small enough that one epoch of test_resnet takes well under a second on a CPU, and
learnable (horizontal, vertical and diagonal stripes) so that training moves the weights.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from medal.core import provenance
from medal.core.config import Config, load_config
from medal.core.tables import class_names, read_folds
from medal.modeling.models import build_model
from medal.modeling.runtime import seed_everything
from medal.train.fold import split_fold
from medal.train.trainer import FoldTrainer

CLASSES = ["diagonal", "horizontal", "vertical"]


@pytest.fixture(autouse=True)
def one_compute_thread():
    """Tiny models gain nothing from more threads, and on a busy machine spinning threads slow them badly.
    Modules that import this fixture run each test on one torch thread, then restore the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stripes(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    period, phase = rng.integers(4, 8), rng.integers(0, 8)
    coord = {"horizontal": y, "vertical": x, "diagonal": x + y}[kind]
    base = ((coord + phase) // (period // 2) % 2) * 160 + 40
    image = base[..., None] + rng.normal(0, 25, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_toy(base: Path, per_class: int = 20, size: int = 24, n_folds: int = 2, seed: int = 0) -> Path:
    """Write the competition under base/toy and its folds under base/outputs/toy; returns the config's path."""
    rng = np.random.default_rng(seed)
    root = base / "toy"
    (root / "train").mkdir(parents=True)
    rows = []
    for label in CLASSES:
        for i in range(per_class):
            image_id = f"{label}_{i:03d}"
            cv2.imwrite(str(root / "train" / f"{image_id}.png"), _stripes(label, size, rng))
            rows.append({"image_id": image_id, "label": label, "fold": i % n_folds})
    table = pd.DataFrame(rows)
    table[["image_id", "label"]].to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": ["t0"], "label": [CLASSES[0]]}).to_csv(root / "sample_submission.csv", index=False)
    out = base / "outputs" / "toy"
    out.mkdir(parents=True)
    table.to_csv(out / "folds.csv", index=False)
    write_folds_manifest(out)
    config = {
        "name": "toy", "seed": 3, "output_dir": str(base / "outputs"),
        "data": {"root": str(root), "image_ext": ".png"},
        "model": {"backbone": "test_resnet"},
        "train": {"image_size": 16, "epochs": 1, "batch_size": 10, "lr": 3e-3, "warmup_epochs": 0.0, "augment": "light"},
        "runtime": {"num_workers": 0, "device": "cpu"},
        "report": {"sample_grid": 0, "gallery_size": 0},
    }
    path = base / "toy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_folds_manifest(data_dir: Path) -> None:
    """The manifest `medal folds` writes beside folds.csv, for a folds.csv a test wrote by hand (no clean.csv
    above it): without one, every stage that reads folds.csv refuses it."""
    provenance.write_manifest(data_dir / "folds.manifest.json", None, "folds", made="folds.csv was made",
                              settings={}, inputs=[], outputs=[data_dir / "folds.csv"])


def own_outputs(config: Path, dest: Path) -> str:
    """An output_dir override for `dest`, holding a copy of the toy's folds.csv and nothing trained."""
    (dest / "toy").mkdir(parents=True)
    (dest / "toy" / "folds.csv").write_bytes((config.parent / "outputs" / "toy" / "folds.csv").read_bytes())
    write_folds_manifest(dest / "toy")
    return f"output_dir={dest}"


def toy_cfg(path: Path, *overrides: str) -> Config:
    return load_config(path, list(overrides))


def make_trainer(cfg: Config, fold: int = 0) -> FoldTrainer:
    """A FoldTrainer set up as train_fold sets it up, for driving single epochs and steps in tests."""
    table = read_folds(cfg)
    classes = class_names(table["label"])
    seed_everything(cfg.seed + fold)
    model = build_model(cfg.model, len(classes))
    return FoldTrainer(cfg, model, torch.device("cpu"), split_fold(cfg, table, classes, fold), classes, fold)


def state_copy(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
