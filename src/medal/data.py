"""The competition folder: which files hold which images, and a Dataset over them."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, get_worker_info

from medal.config import Config
from medal.decode import decode_rgb
from medal.image_cache import CacheSpec, cached_file
from medal.io import read_csv


def image_folder(cfg: Config, split: str) -> Path:
    """The competition's folder of original images for split 'train' or 'test'."""
    return cfg.data.root / (cfg.data.train_dir if split == "train" else cfg.data.test_dir)


def source_path(cfg: Config, image_id: str, split: str) -> Path:
    """The original file of `image_id` in the competition folder; split is 'train' or 'test'."""
    return image_folder(cfg, split) / f"{image_id}{cfg.data.image_ext}"


def cache_spec(cfg: Config) -> CacheSpec | None:
    """The resized-image cache the config asks for, or None when it is off."""
    d = cfg.data
    return CacheSpec(d.cache_max_side, d.cache_format) if d.cache_max_side > 0 else None


def image_path(cfg: Config, image_id: str, split: str) -> Path:
    """The file training and inference read for `image_id`: the resized copy when data.cache_max_side is set
    (which `medal clean` must have written), else the original."""
    spec = cache_spec(cfg)
    if spec is None:
        return source_path(cfg, image_id, split)
    path = cached_file(cfg.data_dir, split, spec, f"{image_id}{cfg.data.image_ext}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the resized-image cache (data.cache_max_side={spec.max_side}): "
                                "run `medal clean -c CONFIG` with this config to build it")
    return path


def read_train_table(cfg: Config) -> pd.DataFrame:
    """train.csv with every column read as text, so clean.csv and folds.csv repeat its values exactly
    (ids like 007, group ids, numeric targets)."""
    d = cfg.data
    path = d.root / d.train_csv
    columns = list(pd.read_csv(path, nrows=0).columns) if path.is_file() else [d.id_col, d.label_col]
    return read_csv(path, "training CSV", [d.id_col, d.label_col], columns)


def read_sample_submission(cfg: Config) -> pd.DataFrame:
    d = cfg.data
    return read_csv(d.root / d.sample_submission, "sample submission", [d.id_col], [d.id_col])


def read_folds(cfg: Config) -> pd.DataFrame:
    d = cfg.data
    path = cfg.data_dir / "folds.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `medal folds -c CONFIG` first")
    return read_csv(path, "folds file", [d.id_col, d.label_col, "fold"], [d.id_col, d.label_col])


def class_names(labels: pd.Series) -> list[str]:
    """The class order used by every probability column: sorted label strings."""
    return sorted(labels.astype(str).unique())


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image to HxWx3 uint8 RGB; names the file when it cannot."""
    try:
        image = decode_rgb(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    if image is None:
        raise OSError(f"cannot decode image {path}: run `medal clean` to find and drop broken files")
    return image


class ImageDataset(Dataset):
    """Images by path with an albumentations transform; targets are class indices or -1."""

    def __init__(self, paths: list[Path], targets: np.ndarray | None, transform) -> None:
        self.paths = paths
        self.targets = targets if targets is not None else np.full(len(paths), -1, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.transform(image=load_rgb(self.paths[index]))["image"]
        return image, int(self.targets[index])


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own augmentation stream, reproducible from the loader's seed.

    albumentations 2.x keeps its own generators; forked workers would otherwise
    all inherit the same state and draw identical augmentations.
    """
    cv2.setNumThreads(0)  # one decode thread per worker; the workers are the parallelism
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)
