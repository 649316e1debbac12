"""Shared setup of the training benchmarks: a medal config over ../shared/data/flowers, with its folds.csv
written into an output folder under /tmp (never the repository, never the shared data folder)."""
from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from medal.core.config import Config, load_config  # noqa: E402

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers"


def flowers_config(out: Path, name: str, overrides: list[str], n_folds: int = 5, seed: int = 42) -> Config:
    """A config named `name` over flowers with outputs in `out`; writes out/flowers/folds.csv (stratified k-fold)."""
    if not FLOWERS.is_dir():
        raise SystemExit(f"{FLOWERS} is missing: the benchmark needs the shared flowers data set")
    table = pd.read_csv(FLOWERS / "train.csv", dtype=str)
    table["fold"] = -1
    for fold, (_, valid) in enumerate(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(table, table["label"])):
        table.loc[valid, "fold"] = fold
    folds = out / "flowers" / "folds.csv"
    folds.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(folds, index=False)
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "output_dir": str(out),
                                    "data": {"root": str(FLOWERS), "image_ext": "", "name": "flowers"}}))
    return load_config(path, overrides)


def max_rss_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child (DataLoader workers), MiB."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
