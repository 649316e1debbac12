"""medal.decode: format sniffing, truncation by end marker, and decoding to RGB."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import encode, gif, jpeg, noise, png

from medal.decode import decode_rgb, is_truncated, sniff_format


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


def test_decode_drops_the_alpha_channel_of_rgba():
    bgra = noise(5, 5, channels=4)
    rgb = decode_rgb(png(bgra))
    assert rgb.shape == (5, 5, 3)
    np.testing.assert_array_equal(rgb, bgra[..., 2::-1])


def test_decode_reads_gif_colours():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2] = (0, 255, 0)
    rgb[2:] = (0, 0, 255)
    decoded = decode_rgb(gif(rgb))
    np.testing.assert_array_equal(decoded, rgb)


@pytest.mark.parametrize("data", [b"", b"<html>404</html>", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10])
def test_decode_returns_none_for_undecodable_bytes(data):
    assert decode_rgb(data) is None
