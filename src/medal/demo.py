"""The embedded demo: a small Kaggle-style competition built from scikit-learn's handwritten digits.

No download: the 1,797 8x8 digit images ship inside scikit-learn. They are
upscaled to PNG files, split into train and test, and a few broken files are
planted among the training rows for `clean` to find.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from medal.core.io import write_bytes, write_csv, write_text

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Planted broken files: (id, label, what clean must call it).
PLANTED = [("broken_truncated", "three", "truncated"), ("broken_empty", "seven", "empty_file"),
           ("broken_text", "one", "not_an_image")]


def build_demo(out: Path, size: int = 32, per_class: int | None = None, test_fraction: float = 0.2, seed: int = 0) -> dict:
    """Write train/, test/, train.csv, sample_submission.csv and solution.csv under `out`; return counts."""
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(NAMES)[digits.target]
    keep = _subset(digits.target, per_class, seed)
    ids = np.asarray([f"digit_{i:04d}" for i in range(len(labels))])
    train_idx, test_idx = train_test_split(keep, test_size=test_fraction, stratify=labels[keep], random_state=seed)
    for split, index in (("train", train_idx), ("test", test_idx)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in index:
            big = cv2.resize(images[i], (size, size), interpolation=cv2.INTER_CUBIC)
            write_bytes(folder / f"{ids[i]}.png", cv2.imencode(".png", big)[1].tobytes())
    train = pd.DataFrame({"image_id": ids[train_idx], "label": labels[train_idx]})
    _plant_broken(out / "train", train_source=out / "train" / f"{ids[train_idx[0]]}.png")
    train = pd.concat([train, pd.DataFrame(PLANTED, columns=["image_id", "label", "reason"])[["image_id", "label"]]])
    write_csv(out / "train.csv", train)
    write_csv(out / "sample_submission.csv", pd.DataFrame({"image_id": ids[test_idx], "label": NAMES[0]}))
    write_csv(out / "solution.csv", pd.DataFrame({"image_id": ids[test_idx], "label": labels[test_idx]}))
    write_text(out / "README.md", "Demo competition built by `medal demo` from scikit-learn's digits. "
               "solution.csv is the held-back truth, read only for scoring after a submission is written.\n")
    return {"train": len(train), "test": len(test_idx), "planted": len(PLANTED)}


def _subset(target: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    if per_class is None:
        return np.arange(len(target))
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(target == c), per_class, replace=False)
                                   for c in np.unique(target)]))


def _plant_broken(folder: Path, train_source: Path) -> None:
    data = train_source.read_bytes()
    (folder / "broken_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "broken_empty.png").write_bytes(b"")
    (folder / "broken_text.png").write_text("<html><body>404 Not Found</body></html>\n")
