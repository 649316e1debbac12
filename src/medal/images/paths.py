"""Where each image lives: the original in the competition folder, or its resized copy in the cache.
Torch-free, so `clean` reads it without loading torch."""
from __future__ import annotations

import os
from pathlib import Path

from medal.core.config import Config
from medal.images.cache import CacheSpec, cached_file


def image_folder(cfg: Config, split: str) -> Path:
    """The competition's folder of original images for split 'train' or 'test'."""
    return cfg.data.root / (cfg.data.train_dir if split == "train" else cfg.data.test_dir)


def source_path(cfg: Config, image_id: str, split: str) -> Path:
    """The original file of `image_id` in the competition folder; split is 'train' or 'test'."""
    return image_folder(cfg, split) / f"{image_id}{cfg.data.image_ext}"


def outside_folder(cfg: Config, ids: list[str], split: str) -> list[str]:
    """The ids whose file would resolve outside the split's image folder: an absolute id, one that climbs
    out through '..', or one whose path leads out through a symlink. Such a file is never to be opened."""
    base = str(image_folder(cfg, split))
    folder = os.path.realpath(base)
    ext = cfg.data.image_ext
    parents: dict[str, str] = {}  # resolving each file's folder once: ids share a few folders
    outside = []
    for image_id in ids:
        relative = os.path.normpath(f"{image_id}{ext}")
        # Climbing out as text counts even where a symlinked folder would lead the real path back inside:
        # the cache copy's path is built from the same text, without the link.
        if os.path.isabs(relative) or relative == ".." or relative.startswith(os.path.join("..", "")):
            outside.append(image_id)
            continue
        parent, name = os.path.split(os.path.join(base, f"{image_id}{ext}"))
        if parent not in parents:
            parents[parent] = os.path.realpath(parent)
        real = os.path.normpath(os.path.join(parents[parent], name))
        if os.path.islink(real):
            real = os.path.realpath(real)
        if os.path.commonpath([folder, real]) != folder:
            outside.append(image_id)
    return outside


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
