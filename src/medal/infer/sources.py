"""The inputs TTA views read: each image decoded once, turned into every source the views need."""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

from torch import Tensor
from torch.utils.data import Dataset

from medal.core.names import RANDOM_VIEW, SCALE_VIEW
from medal.images.augment import Stats, eval_transform, train_transform
from medal.images.dataset import load_rgb
from medal.modeling.views import BASE


def source_transforms(sources: list[str], image_size: int, stats: Stats, preset: str) -> dict[str, Callable]:
    """One albumentations pipeline per source: base and scale_<f> resize, aug<k> use the training preset."""
    transforms = {}
    for source in sources:
        if source == BASE:
            transforms[source] = eval_transform(image_size, stats)
        elif (scale := SCALE_VIEW.match(source)):
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
            if RANDOM_VIEW.match(source):
                key = f"{self.seed}/{source}/{self.paths[index].name}".encode()
                transform.set_random_seed(zlib.crc32(key))
            out[source] = transform(image=image)["image"]
        return out, -1
