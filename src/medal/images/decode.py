"""Image decoding shared by clean, training and inference: OpenCV first, PIL as the fallback.

`decode_rgb` is the one function that turns a file's bytes into the HxWx3 uint8
RGB array every stage sees. Odd but valid images are normalised, not refused:

- greyscale and palette images are expanded to three channels;
- 16-bit images are scaled to 8 bits over their full range (0..65535 -> 0..255);
- CMYK (JPEG and TIFF, Adobe-inverted or not) is converted to RGB by the decoder;
- EXIF orientation is applied, so a phone photo stored sideways is seen upright;
- transparency is composited onto white, what an image viewer shows and so what
  a labeller saw; the colour under fully transparent pixels is often junk.
"""
from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
from PIL import Image, ImageOps

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

# OpenCV >= 4.11 decodes straight to RGB; older versions need a cvtColor.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)

# EXIF orientation tag value -> how to turn the stored pixels upright (PIL's exif_transpose table).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
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


def png_problem(data: bytes) -> tuple[str, str] | None:
    """('truncated' | 'corrupt', detail) when a PNG's chunk structure is broken, else None.

    Walks every chunk and checks its CRC: libpng refuses a bad CRC but PIL
    decodes the file anyway, so a damaged file would otherwise pass or fail
    depending on which decoder reads it.
    """
    view = memoryview(data)
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        end = pos + 12 + length
        if not kind.isalpha() or (pos == 8 and kind != b"IHDR"):
            return "corrupt", f"no valid PNG chunk at byte {pos} (found {kind!r})"
        if end > len(data):
            return "truncated", f"the {kind.decode('latin-1')} chunk at byte {pos} is cut short ({len(data)} bytes)"
        if zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return "corrupt", f"bad CRC in the {kind.decode('latin-1')} chunk at byte {pos}"
        if kind == b"IEND":
            return None
        pos = end
    return "truncated", f"no IEND chunk ({len(data)} bytes)"


def decode_rgb(data: bytes) -> np.ndarray | None:
    """Decode encoded bytes to HxWx3 uint8 RGB, normalised as the module says; None when
    neither OpenCV nor PIL can decode them."""
    if not data:
        return None
    fmt = sniff_format(data)
    try:
        image = _decode_cv2(data, fmt)
    except cv2.error:  # e.g. an image over OpenCV's pixel limit: PIL may still read it
        image = None
    return image if image is not None else _decode_pil(data)


def _decode_cv2(data: bytes, fmt: str | None) -> np.ndarray | None:
    buffer = np.frombuffer(data, dtype=np.uint8)
    if fmt == "jpeg":
        # No alpha in JPEG: the colour path converts grey and CMYK and applies EXIF orientation.
        if _IMREAD_RGB is not None:
            return cv2.imdecode(buffer, _IMREAD_RGB)
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    # Other formats may carry alpha or 16 bits, which only IMREAD_UNCHANGED keeps;
    # it skips EXIF orientation, so that is applied here.
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None  # float or 32-bit data: let PIL decide
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = composite_on_white(cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA))
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return orient(image, exif_orientation(data))


def _decode_pil(data: bytes) -> np.ndarray | None:
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            pil = ImageOps.exif_transpose(pil)
            if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
                wide = np.asarray(pil, dtype=np.int64).clip(0, 65535)
                return np.repeat(((wide + 128) // 257).astype(np.uint8)[..., None], 3, axis=2)
            if pil.mode in ("RGBA", "LA", "PA") or "transparency" in pil.info:
                return composite_on_white(np.asarray(pil.convert("RGBA")))
            return np.ascontiguousarray(np.asarray(pil.convert("RGB")))
    except Exception:  # PIL raises many types for bad data; all mean "cannot decode"
        return None


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """HxWx4 uint8 RGBA -> HxWx3 uint8 RGB over a white background, rounded to nearest."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    blended = rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha)
    return ((blended + 127) // 255).astype(np.uint8)


def jpeg_header(data: bytes) -> tuple[int, bool]:
    """(colour components, whether an EXIF segment is present) from a JPEG's marker segments; 0 components
    when no frame header is found. Reads a few dozen bytes, decodes nothing."""
    pos, has_exif = 2, False
    while pos + 10 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            has_exif = True
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            return data[pos + 9], has_exif  # after length (2), precision (1), height (2), width (2)
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return 0, has_exif


def exif_orientation(data: bytes, force: bool = False) -> int:
    """The EXIF orientation tag (1..8); 1 when there is none. Without `force`, files that show no EXIF
    marker are not parsed (the check decode_rgb makes for PNG, WebP and TIFF)."""
    if not force and b"Exif" not in data and b"eXIf" not in data and data[:4] not in (b"II*\x00", b"MM\x00*"):
        return 1
    try:
        with Image.open(io.BytesIO(data)) as pil:
            value = pil.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF is treated as no rotation, like every viewer does
        return 1
    return value if value in _ORIENT else 1


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF `orientation` (1..8) to HxWxC pixels as stored; contiguous result."""
    if orientation not in _ORIENT:
        return image
    return np.ascontiguousarray(_ORIENT[orientation](image))
