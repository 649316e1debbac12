"""Test-time augmentation views by name, the inputs they read, how their outputs are reduced, and
greedy selection on OOF.

A view is a pair of small functions, `augment` on the NCHW batch and `deaugment`
on the model's output (class scores do not move when the image does, so it is
the identity for classification; a segmentation view would undo its flip there),
plus the `source` it reads: the image resized to the training size ('base'), to
another size ('scale_0.875': the model at another input size), or a seeded
random train-time augmentation ('aug0', 'aug1', ...). Each image is decoded once
and every source is made from that one decode.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from medal.augment import Stats, eval_transform, train_transform
from medal.data import load_rgb

Tensor = torch.Tensor
BASE = "base"


def _same(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class View:
    name: str
    augment: Callable[[Tensor], Tensor] = _same
    deaugment: Callable[[Tensor], Tensor] = _same
    source: str = BASE


def _rot(k: int) -> Callable[[Tensor], Tensor]:
    return lambda x: torch.rot90(x, k, dims=(2, 3))


# The eight symmetries of the square (the dihedral group D4) on the image axes (H, W) = (2, 3).
VIEWS: dict[str, View] = {v.name: v for v in [
    View("identity"),
    View("hflip", lambda x: x.flip(3)),
    View("vflip", lambda x: x.flip(2)),
    View("transpose", lambda x: x.transpose(2, 3)),
    View("rot90", _rot(1)),
    View("rot180", _rot(2)),
    View("rot270", _rot(3)),
    View("antitranspose", lambda x: x.transpose(2, 3).flip(2, 3)),
]}
# Names that stand for several views.
VIEW_SETS: dict[str, list[str]] = {"d4": list(VIEWS), "flips": ["identity", "hflip", "vflip"]}
_SCALE = re.compile(r"^scale_(\d+(?:\.\d+)?)$")
_RANDOM = re.compile(r"^aug(\d{1,2})$")
VIEW_HELP = (f"views {', '.join(VIEWS)}; sets {', '.join(VIEW_SETS)}; scale_<factor> (model at image_size*factor, "
             f"factor 0.25..4, e.g. scale_0.875); aug<k> (seeded random train-time augmentation k, 0..99)")


def get_view(name: str) -> View:
    """The view called `name`; raises ValueError naming it and what exists."""
    if name in VIEWS:
        return VIEWS[name]
    scale = _SCALE.match(name)
    if scale and 0.25 <= float(scale.group(1)) <= 4.0:
        return View(name, source=name)
    if _RANDOM.match(name):
        return View(name, source=name)
    raise ValueError(f"{name!r} is not a TTA view; known: {VIEW_HELP}")


def expand_views(names: list[str]) -> list[str]:
    """Expand sets (d4) and drop repeats, keeping first-seen order; every name is checked."""
    out: list[str] = []
    for name in names:
        for item in VIEW_SETS.get(name, [name]):
            get_view(item)
            if item not in out:
                out.append(item)
    return out


def source_transforms(sources: list[str], image_size: int, stats: Stats, preset: str) -> dict[str, Callable]:
    """One albumentations pipeline per source: base and scale_<f> resize, aug<k> use the training preset."""
    transforms = {}
    for source in sources:
        if source == BASE:
            transforms[source] = eval_transform(image_size, stats)
        elif (scale := _SCALE.match(source)):
            transforms[source] = eval_transform(max(8, round(image_size * float(scale.group(1)))), stats)
        else:
            transforms[source] = train_transform(preset, image_size, stats)
    return transforms


class SourcesDataset(Dataset):
    """Each image decoded once and turned into every source: ({source: CHW tensor}, -1).

    Random sources are re-seeded per image from (seed, source, file name), so a view draws the
    same augmentation for an image whatever the batch size, worker count or row order.
    """

    def __init__(self, paths: list[Path], transforms: dict[str, Callable], seed: int) -> None:
        self.paths, self.transforms, self.seed = paths, transforms, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], int]:
        image = load_rgb(self.paths[index])
        out = {}
        for source, transform in self.transforms.items():
            if _RANDOM.match(source):
                key = f"{self.seed}/{source}/{self.paths[index].name}".encode()
                transform.set_random_seed(zlib.crc32(key))
            out[source] = transform(image=image)["image"]
        return out, -1


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _normalised(probs: np.ndarray) -> np.ndarray:
    return probs / probs.sum(axis=-1, keepdims=True)


# Reductions over the view axis of a (V, N, C) stack in probability space; over logits, mean and
# max act on the logits and a softmax follows.
REDUCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda p: p.mean(axis=0),
    "gmean": lambda p: _normalised(np.exp(np.log(np.clip(p, 1e-12, None)).mean(axis=0))),
    "max": lambda p: _normalised(p.max(axis=0)),
}
SPACES = ("probs", "logits")


def reduce_views(logits: list[np.ndarray], how: str = "mean", space: str = "probs") -> np.ndarray:
    """Combine per-view logits (each N x C) into one N x C probability array."""
    stack = np.stack(logits).astype(np.float64)
    if space == "logits":
        if how == "gmean":
            raise ValueError("the geometric mean over logits is the mean over logits; use mean with logits, "
                             "or gmean with probs")
        return _softmax(stack.mean(axis=0) if how == "mean" else stack.max(axis=0))
    return REDUCTIONS[how](_softmax(stack))


def select_greedy(view_outputs: dict[str, np.ndarray], evaluate: Callable[[np.ndarray], float],
                  higher_is_better: bool,
                  combine: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> list[str]:
    """Forward selection on OOF: start from identity and add the best view only while the combined
    score improves. `combine` turns the chosen views' arrays into what `evaluate` scores (default: mean)."""
    combine = combine or (lambda arrays: np.mean(arrays, axis=0))
    sign = 1.0 if higher_is_better else -1.0
    chosen = ["identity"] if "identity" in view_outputs else [next(iter(view_outputs))]
    best = sign * evaluate(combine([view_outputs[chosen[0]]]))
    while len(chosen) < len(view_outputs):
        trials = {name: sign * evaluate(combine([view_outputs[v] for v in chosen + [name]]))
                  for name in view_outputs if name not in chosen}
        name = max(trials, key=trials.get)
        if trials[name] <= best:
            break
        chosen.append(name)
        best = trials[name]
    return chosen
