"""Where each image lives: the original in the competition folder, or its resized copy in the cache.
Torch-free, so `clean` reads it without loading torch."""
from __future__ import annotations

from pathlib import Path

from medal.core.config import Config
from medal.images.cache import CacheSpec, cached_file


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
