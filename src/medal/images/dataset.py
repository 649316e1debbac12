"""Decoding an image file for training and inference, and the Dataset over a list of them."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from medal.images.decode import decode_rgb


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
