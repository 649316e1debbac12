"""Test-time augmentation views by name: small augment/deaugment pairs on NCHW tensors.

A view is a pair of small functions, `augment` on the NCHW batch and `deaugment`
on the model's output (class scores do not move when the image does, so it is
the identity for classification; a segmentation view would undo its flip there),
plus the `source` it reads: the image resized to the training size ('base'), to
another size ('scale_0.875': the model at another input size), or a seeded
random train-time augmentation ('aug0', 'aug1', ...). The names and their
grammar are medal.core.names'; inference makes the sources (medal.infer.sources).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from medal.core.names import check_view, expand_views  # noqa: F401  (expand_views: the one place to expand sets)

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


def get_view(name: str) -> View:
    """The view called `name`; raises ValueError naming it and what exists (medal.core.names.check_view)."""
    check_view(name)
    return VIEWS.get(name) or View(name, source=name)
