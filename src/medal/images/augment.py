"""Augmentation presets by name, built from albumentations.

A preset either works on the image already resized to the training size, or, when it crops, takes its
crop from the original image and resizes only that crop (CROPPING): a crop of an image shrunk first is
an upscaled blur of fewer pixels, which cost the `photo` preset 6 points of held-out accuracy (issue 12).
"""
from __future__ import annotations

from typing import Callable

import albumentations as A
from albumentations.pytorch import ToTensorV2

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def _none(size: int) -> list:
    return []


def _light(size: int) -> list:
    # Small geometric and lighting jitter that keeps orientation: safe for
    # digits, text and anything where a flip changes the class.
    return [
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10), p=0.7),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
    ]


def _flips(size: int) -> list:
    # For images with no natural orientation (microscopy, satellite, some medical).
    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5), *_light(size)]


def _photo(size: int) -> list:
    # Natural photos: a random crop of the original (half of its area or more), mirror, colour.
    return [
        A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0), p=1.0),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
    ]


PRESETS: dict[str, Callable[[int], list]] = {"none": _none, "light": _light, "flips": _flips, "photo": _photo}
# Presets whose first step crops the original image to the training size, so no Resize comes before them.
CROPPING = {"photo"}


def train_transform(preset: str, size: int, stats: Stats) -> A.Compose:
    if preset not in PRESETS:
        raise ValueError(f"train.augment={preset!r} is not a preset; choose one of {sorted(PRESETS)}")
    resize = [] if preset in CROPPING else [A.Resize(size, size)]
    return A.Compose([*resize, *PRESETS[preset](size), *_to_tensor(stats)])


def eval_transform(size: int, stats: Stats) -> A.Compose:
    return A.Compose([A.Resize(size, size), *_to_tensor(stats)])


def _to_tensor(stats: Stats) -> list:
    mean, std = stats
    return [A.Normalize(mean=mean, std=std), ToTensorV2()]
