"""Shared setup of the training benchmarks: a medal config over ../shared/data/flowers, with outputs in a
folder under /tmp (never the repository, never the shared data folder). Its folds.csv is made by the real
stages, `medal clean` then `medal folds` (run_clean, run_folds), so it carries the manifests that training
checks before any work; a folder whose folds.csv is still current is reused as it is."""
from __future__ import annotations

import logging
import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import yaml  # noqa: E402

from medal.clean import run_clean  # noqa: E402
from medal.core.config import Config, load_config  # noqa: E402
from medal.core.freshness import require_current_folds  # noqa: E402
from medal.folds import run_folds  # noqa: E402

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers"


def flowers_config(out: Path, name: str, overrides: list[str], n_folds: int = 5, seed: int = 42) -> Config:
    """A config named `name` over flowers with outputs in `out`; makes out/flowers/folds.csv (stratified
    k-fold of the rows `medal clean` keeps) unless a current one is there already."""
    if not FLOWERS.is_dir():
        raise SystemExit(f"{FLOWERS} is missing: the benchmark needs the shared flowers data set")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "output_dir": str(out),
                                    "data": {"root": str(FLOWERS), "image_ext": "", "name": "flowers"},
                                    "folds": {"n_folds": n_folds, "seed": seed}}))
    cfg = load_config(path, overrides)
    try:
        require_current_folds(cfg)
    except (FileNotFoundError, ValueError):  # none yet, or stale (StaleError is a ValueError)
        level = logging.getLogger("medal").level
        logging.getLogger("medal").setLevel(logging.WARNING)  # the stages' reports are not the benchmark's output
        try:
            run_clean(cfg)
            run_folds(cfg)
        finally:
            logging.getLogger("medal").setLevel(level)
    return cfg


def max_rss_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child (DataLoader workers), MiB."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
