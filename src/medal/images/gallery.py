"""Image grids for a person to look at: augmented training samples per size, and the hardest OOF examples."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from medal.core.io import write_bytes
from medal.images.augment import Stats
from medal.images.dataset import load_rgb

LINE = 13  # caption line height in pixels


def _grid(images: list[np.ndarray], titles: list[str], path: Path, suptitle: str, cell: int = 112) -> None:
    write_bytes(path, grid_png(images, titles, suptitle, cell))


def grid_png(images: list[np.ndarray], titles: list[str], suptitle: str, cell: int = 112) -> bytes:
    """Tile RGB images (uint8, or floats in [0, 1]) into one PNG, each with its caption lines underneath.
    Drawn with OpenCV: a matplotlib figure of many subplots costs seconds per grid."""
    cols = min(8, len(images))
    rows = math.ceil(len(images) / cols)
    lines = max(t.count("\n") + 1 for t in titles)
    cap_h, head_h = LINE * lines + 4, LINE + 8
    canvas = np.full((head_h + rows * (cell + cap_h), cols * cell, 3), 255, dtype=np.uint8)
    _text(canvas, suptitle, 4, LINE + 2)
    for k, (image, title) in enumerate(zip(images, titles)):
        y, x = head_h + (k // cols) * (cell + cap_h), (k % cols) * cell
        canvas[y:y + cell, x:x + cell] = _fit(image, cell)
        for i, line in enumerate(title.split("\n")):
            _text(canvas, line, x + 3, y + cell + LINE * (i + 1))
    ok, png = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode the image grid {suptitle!r}")
    return png.tobytes()


def _text(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (20, 20, 20), 1, cv2.LINE_AA)


def _fit(image: np.ndarray, cell: int) -> np.ndarray:
    """The image scaled (aspect kept) into a white cell x cell square with a 2 px margin; small images are
    enlarged with nearest-neighbour, so that their pixels stay visible."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    inner = cell - 4
    h, w = image.shape[:2]
    scale = inner / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
    out = np.full((cell, cell, 3), 255, dtype=np.uint8)
    top, left = (cell - size[1]) // 2, (cell - size[0]) // 2
    out[top:top + size[1], left:left + size[0]] = resized
    return out


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
    """The fold's hardest validation images with true and predicted class, as a PNG file; returns their ids."""
    png, picked = hardest_png(paths, ids, targets, probs, classes, count, title)
    write_bytes(path, png)
    return picked


def hardest_png(paths: list[Path], ids: list[str], targets: np.ndarray, probs: np.ndarray,
                classes: list[str], count: int, title: str) -> tuple[bytes, list[str]]:
    """The `count` highest-loss images with true and predicted class (and their probabilities), as PNG bytes;
    and their ids, hardest first."""
    rows = hardest(targets, probs, count)
    images, titles = [], []
    for r in rows:
        images.append(load_rgb(Path(paths[r])))
        guess = int(probs[r].argmax())
        titles.append(f"{str(ids[r])[:18]}\ntrue {classes[targets[r]][:10]} ({probs[r, targets[r]]:.2f})\n"
                      f"pred {classes[guess][:10]} ({probs[r, guess]:.2f})")
    return grid_png(images, titles, title, cell=128), [str(ids[r]) for r in rows]
