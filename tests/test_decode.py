"""medal.images.decode: format sniffing, truncation and CRC checks, and decoding every odd image kind to RGB."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from conftest import encode, gif, jpeg, noise, png
from PIL import Image, ImageOps

from medal.images.decode import (
    decode_rgb,
    is_truncated,
    jpeg_header,
    png_problem,
    sniff_format,
)


@pytest.mark.parametrize("ext, expected", [(".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp"),
                                           (".tiff", "tiff"), (".webp", "webp")])
def test_sniff_format_names_real_encodings(ext, expected):
    assert sniff_format(encode(noise(8, 8), ext)) == expected


def test_sniff_format_names_gif():
    assert sniff_format(gif(noise(8, 8))) == "gif"


@pytest.mark.parametrize("data", [b"", b"<html>404</html>", b"\x00" * 32, b"RIFF\x00\x00\x00\x00WAVE"])
def test_sniff_format_returns_none_for_non_images(data):
    assert sniff_format(data) is None


def test_complete_jpeg_is_not_truncated():
    data = jpeg()
    assert is_truncated("jpeg", data) is False


def test_jpeg_cut_in_half_is_truncated():
    data = jpeg()
    assert len(data) > 2000  # a noise image: the half is mostly entropy-coded data
    assert is_truncated("jpeg", data[: len(data) // 2]) is True


def test_jpeg_padded_after_its_end_marker_is_not_truncated():
    assert is_truncated("jpeg", jpeg() + b"\x00" * 100) is False


def test_complete_png_is_not_truncated():
    assert is_truncated("png", png()) is False


def test_png_padded_after_its_iend_chunk_is_not_truncated():
    # The file is complete and decodes; only zero bytes follow IEND (as some writers and downloads leave).
    data = png() + b"\x00" * 64
    assert decode_rgb(data) is not None
    assert is_truncated("png", data) is False


def test_png_cut_short_is_truncated():
    data = png()
    assert is_truncated("png", data[:-20]) is True


@pytest.mark.parametrize("fmt", [None, "gif", "bmp", "webp"])
def test_formats_without_an_end_check_are_never_called_truncated(fmt):
    assert is_truncated(fmt, b"anything at all") is False


def test_decode_returns_rgb_channel_order():
    bgr = np.zeros((4, 5, 3), dtype=np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    rgb = decode_rgb(png(bgr))
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()


def test_decode_expands_greyscale_to_three_equal_channels():
    grey = noise(6, 7, channels=1)
    rgb = decode_rgb(png(grey))
    assert rgb.shape == (6, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], grey)


def test_decode_composites_rgba_onto_white():
    bgra = noise(5, 5, channels=4)
    bgra[0, :, 3] = 255  # opaque: the colour as stored
    bgra[1, :, 3] = 0    # transparent: white, whatever colour hides under it
    bgra[2, :, 3] = 128  # half: halfway to white
    rgb = decode_rgb(png(bgra))
    assert rgb.shape == (5, 5, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0], bgra[0, :, 2::-1])
    assert (rgb[1] == 255).all()
    expected = (bgra[2, :, 2::-1].astype(int) * 128 + 255 * 127 + 127) // 255
    np.testing.assert_array_equal(rgb[2], expected)


def test_decode_reads_gif_colours():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2] = (0, 255, 0)
    rgb[2:] = (0, 0, 255)
    decoded = decode_rgb(gif(rgb))
    np.testing.assert_array_equal(decoded, rgb)


@pytest.mark.parametrize("data", [b"", b"<html>404</html>", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10])
def test_decode_returns_none_for_undecodable_bytes(data):
    assert decode_rgb(data) is None


# Odd but valid images: normalised to what a viewer shows, never refused.

def pil_encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_decode_scales_16_bit_greyscale_over_the_full_range():
    wide = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 0, 1, 128, 255 in 8 bits
    rgb = decode_rgb(encode(wide, ".png"))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_decode_scales_16_bit_colour_and_keeps_channel_order():
    bgr16 = np.zeros((2, 2, 3), dtype=np.uint16)
    bgr16[..., 2] = 65535  # red
    bgr16[..., 1] = 32896  # half green
    rgb = decode_rgb(encode(bgr16, ".png"))
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1] == 128).all() and (rgb[..., 2] == 0).all()


def test_decode_falls_back_to_pil_and_normalises_16_bit_the_same_way():
    data = bytearray(encode(np.array([[0, 257, 32896, 65535]], dtype=np.uint16), ".png"))
    idat = data.find(b"IDAT")
    length = int.from_bytes(data[idat - 4:idat], "big")
    data[idat + 4 + length] ^= 0xFF  # damage only the CRC: libpng (OpenCV) refuses it, PIL reads it
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED) is None
    rgb = decode_rgb(bytes(data))
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])


def test_decode_composites_palette_transparency_onto_white():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2] = (200, 0, 0)
    rgb[2:] = (0, 0, 200)
    palette = Image.fromarray(rgb).quantize(2)
    transparent = palette.getpixel((0, 0))  # the index of the top rows' colour
    decoded = decode_rgb(pil_encode(palette, "PNG", transparency=transparent))
    assert (decoded[:2] == 255).all()
    np.testing.assert_array_equal(decoded[2:], rgb[2:])


def test_decode_composites_grey_with_alpha_onto_white():
    la = np.zeros((2, 2, 2), dtype=np.uint8)
    la[..., 0] = 40
    la[0, :, 1] = 255
    decoded = decode_rgb(pil_encode(Image.fromarray(la, "LA"), "PNG"))
    assert (decoded[0] == 40).all() and (decoded[1] == 255).all()


def test_decode_converts_cmyk_jpeg_to_rgb():
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[:8] = (220, 40, 40)
    rgb[8:] = (40, 40, 220)
    data = pil_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    decoded = decode_rgb(data)
    assert decoded.shape == (16, 16, 3)
    assert np.abs(decoded.astype(int) - rgb).max() <= 12  # JPEG is lossy; a CMYK mix-up would be off by ~200


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_applies_every_exif_orientation_like_pil(orientation):
    stored = noise(5, 7)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = pil_encode(Image.fromarray(stored), "PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(decode_rgb(data), expected)


def test_decode_turns_an_exif_rotated_jpeg_upright():
    stored = np.zeros((32, 48, 3), dtype=np.uint8)
    stored[:16, :16] = 255  # a white block top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    decoded = decode_rgb(pil_encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95))
    assert decoded.shape == (48, 32, 3)
    assert decoded[:16, -16:].mean() > 200 and decoded[-16:, :16].mean() < 50  # now top-right


# PNG structure: every chunk's length and CRC.

def test_png_problem_accepts_a_complete_png_and_trailing_padding():
    assert png_problem(png()) is None
    assert png_problem(png() + b"\x00" * 64) is None


def test_png_problem_names_a_bad_crc_and_its_chunk():
    data = bytearray(png())
    idat = data.find(b"IDAT")
    data[idat + 20] ^= 0xFF
    assert png_problem(bytes(data)) == ("corrupt", f"bad CRC in the IDAT chunk at byte {idat - 4}")


def test_png_problem_calls_a_cut_file_truncated():
    data = png()
    assert png_problem(data[: len(data) // 2])[0] == "truncated"
    assert png_problem(data[:-12])[0] == "truncated"  # every chunk whole, IEND missing


def test_png_problem_calls_garbage_after_the_signature_corrupt():
    assert png_problem(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)[0] == "corrupt"


@pytest.mark.parametrize("mode, components", [("L", 1), ("RGB", 3), ("CMYK", 4)])
def test_jpeg_header_reads_the_component_count(mode, components):
    data = pil_encode(Image.fromarray(noise(8, 8)).convert(mode), "JPEG")
    assert jpeg_header(data) == (components, False)


def test_jpeg_header_sees_an_exif_segment():
    exif = Image.Exif()
    exif[0x0112] = 3
    assert jpeg_header(pil_encode(Image.fromarray(noise(8, 8)), "JPEG", exif=exif)) == (3, True)
