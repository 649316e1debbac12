"""The optional resized-image cache: decoded, normalised images stored at most N px on the longest side.

Kaggle photos are often 2-12 MP while models train at 224-512 px; decoding the
full JPEG every epoch then bounds training. `clean` writes each image once,
already decoded by `decode_rgb` (EXIF orientation, alpha and 16-bit handled)
and shrunk with area interpolation; training and inference find the copy
through `medal.images.paths.image_path`. A copy older than its source is rewritten.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medal.core.io import write_bytes

JPEG_QUALITY = 95  # visually lossless at training sizes; decodes far faster than PNG
# Full-resolution colour (4:4:4): the default 4:2:0 halves chroma detail, which small training images cannot spare.
_FULL_CHROMA = ([cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
                if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_444") else [])


@dataclass(frozen=True)
class CacheSpec:
    max_side: int
    fmt: str  # "jpg" or "png"


def cache_dir(data_dir: Path, split: str, spec: CacheSpec) -> Path:
    """<data_dir>/cache/<split>_<N>px_<fmt>: one folder per size and format, so two sizes can coexist."""
    return data_dir / "cache" / f"{split}_{spec.max_side}px_{spec.fmt}"


def cached_file(data_dir: Path, split: str, spec: CacheSpec, file_name: str) -> Path:
    """The cached copy of `file_name` (the id plus image_ext); the format's suffix is appended, not swapped,
    so that a.png and a.jpg cannot collide. ValueError when the name would lead outside the cache folder."""
    return Path(cached_name(str(cache_dir(data_dir, split, spec)), file_name, spec.fmt))


def cached_name(folder: str, file_name: str, fmt: str) -> str:
    """cached_file as text under the cache folder `folder` (clean builds thousands: pathlib costs more per
    file than the scan). ValueError naming the id when an absolute name or '..' would leave `folder`."""
    target = os.path.join(folder, f"{file_name}.{fmt}")
    # Lexical, not realpath: the cache folder is medal's own and holds no links; only the name comes from a CSV.
    if not os.path.normpath(target).startswith(os.path.join(os.path.normpath(folder), "")):
        raise ValueError(f"the cached copy of image {file_name!r} would be written to {os.path.normpath(target)}, "
                         f"outside the cache folder {folder}: an id must not be an absolute path or climb out "
                         "with '..'")
    return target


def is_fresh(target: Path, source: Path) -> bool:
    """True when `target` exists and is not older than `source`."""
    try:
        return target.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def resize_longest(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longest side is at most `max_side` (area interpolation); never enlarge."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def write_cached(image: np.ndarray, target: Path, source: Path, spec: CacheSpec) -> bool:
    """Write the resized RGB `image` to `target` atomically unless a fresh copy is there; True once it exists."""
    if is_fresh(target, source):
        return True
    small = cv2.cvtColor(resize_longest(image, spec.max_side), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, *_FULL_CHROMA] if spec.fmt == "jpg" else []
    ok, encoded = cv2.imencode(f".{spec.fmt}", small, params)
    if not ok:
        raise OSError(f"OpenCV could not encode the cached copy {target}")
    write_bytes(target, encoded.tobytes())
    return True
