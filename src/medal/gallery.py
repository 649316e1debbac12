"""Image grids for a person to look at: augmented training samples per size, and the hardest OOF examples."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medal.augment import Stats
from medal.data import load_rgb
from medal.io import atomic_path


def _grid(images: list[np.ndarray], titles: list[str], path: Path, suptitle: str, cell: float = 1.8) -> None:
    from matplotlib.figure import Figure

    cols = min(8, len(images))
    rows = math.ceil(len(images) / cols)
    fig = Figure(figsize=(cols * cell, rows * (cell + 0.15 * (1 + titles[0].count("\n")))), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def denormalise(tensor, stats: Stats) -> np.ndarray:
    """A normalised CxHxW tensor back to HxWx3 floats in [0, 1]."""
    mean, std = (np.asarray(v, dtype=np.float32) for v in stats)
    return np.clip(tensor.permute(1, 2, 0).numpy() * std + mean, 0.0, 1.0)


def save_augment_grid(dataset, stats: Stats, count: int, seed: int, path: Path, title: str) -> None:
    """`count` training images through the training transform (seeded), as they reach the model."""
    picks = np.random.default_rng(seed).choice(len(dataset), size=min(count, len(dataset)), replace=False)
    dataset.transform.set_random_seed(seed)
    images, titles = [], []
    for index in picks:
        image, _ = dataset[int(index)]
        images.append(denormalise(image, stats))
        titles.append(Path(dataset.paths[int(index)]).name[:18])
    _grid(images, titles, path, title)


def hardest(targets: np.ndarray, probs: np.ndarray, count: int) -> np.ndarray:
    """Row indices of the `count` highest-loss rows (-log p of the true class), hardest first."""
    loss = -np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, None))
    return np.argsort(-loss, kind="stable")[:count]


def save_hardest_oof(paths: list[Path], ids: list[str], targets: np.ndarray, probs: np.ndarray,
                     classes: list[str], count: int, path: Path, title: str) -> list[str]:
    """The fold's hardest validation images with true and predicted class; returns their ids."""
    rows = hardest(targets, probs, count)
    images, titles = [], []
    for r in rows:
        images.append(load_rgb(Path(paths[r])))
        guess = int(probs[r].argmax())
        titles.append(f"{str(ids[r])[:16]}\ntrue {classes[targets[r]]} ({probs[r, targets[r]]:.2f})\n"
                      f"pred {classes[guess]} ({probs[r, guess]:.2f})")
    _grid(images, titles, path, title, cell=2.0)
    return [str(ids[r]) for r in rows]
