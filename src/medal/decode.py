"""Image decoding shared by clean, training and inference: OpenCV first, PIL as the fallback."""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

# File signatures of the formats a competition ships; anything else is "not an image".
_SIGNATURES = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}


def sniff_format(data: bytes) -> str | None:
    """The format named by the file's first bytes, or None when no image format matches."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for signature, name in _SIGNATURES.items():
        if data.startswith(signature):
            return name
    return None


def is_truncated(fmt: str | None, data: bytes) -> bool:
    """True when a JPEG lacks its end-of-image marker or a PNG its IEND chunk.

    Decoders often fill a cut-off image with grey instead of failing, so the
    file's end is checked directly. EOI (FFD9) cannot occur inside JPEG entropy
    data, and some writers pad after the end marker, hence the search in the tail.
    """
    if fmt == "jpeg":
        return data.rfind(b"\xff\xd9", max(0, len(data) - 4096)) < 0
    if fmt == "png":
        return data.rfind(b"IEND", max(0, len(data) - 4096)) < 0
    return False


def decode_rgb(data: bytes) -> np.ndarray | None:
    """Decode encoded bytes to HxWx3 uint8 RGB, or None when neither OpenCV nor PIL can."""
    array = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(array, cv2.IMREAD_COLOR) if array.size else None
    if image is not None:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    try:
        with Image.open(io.BytesIO(data)) as pil:
            return np.asarray(pil.convert("RGB"))
    except Exception:  # PIL raises many types for bad data; all mean "cannot decode"
        return None
