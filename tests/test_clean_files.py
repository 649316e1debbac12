"""clean, one file kind at a time: every broken kind gets its reason, every odd but valid kind is kept.

Each test builds its files at test time. Checks relative to the median need
peers, so those tests put the odd file among twenty-odd ordinary ones.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import encode, noise, png
from PIL import Image
from test_clean import competition, reason_of

from medal.clean.checks import REASONS
from medal.clean.run import run_clean
from medal.core.config import CleanConfig, ConfigError


def peers(n: int = 24, size: int = 64) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    """n distinct noise PNGs of size x size, labelled a/b alternately."""
    rows = [(f"p{i:02d}.png", "ab"[i % 2]) for i in range(n)]
    return rows, {name: png(noise(size, size, seed=100 + i)) for i, (name, _) in enumerate(rows)}


def run_with_peers(tmp_path, rows, files, *overrides):
    peer_rows, peer_files = peers()
    cfg = competition(tmp_path, [*peer_rows, *rows], {**peer_files, **files}, *overrides)
    kept, dropped = run_clean(cfg)
    return cfg, kept, dropped


def findings(cfg) -> pd.DataFrame:
    return pd.read_csv(cfg.data_dir / "findings.csv", dtype=str, keep_default_na=False)


def pil_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# Broken files.

def test_png_with_a_bad_crc_is_corrupt_even_though_pil_decodes_it(tmp_path):
    data = bytearray(png())
    idat = data.find(b"IDAT")
    data[idat + 4 + int.from_bytes(data[idat - 4:idat], "big")] ^= 0xFF  # the CRC only; the pixels are intact
    assert Image.open(io.BytesIO(bytes(data))).load() is not None
    assert reason_of(tmp_path, [("crc.png", "a")], {"crc.png": bytes(data)}, "crc.png") == "corrupt"


def test_png_cut_short_is_truncated(tmp_path):
    data = png()
    assert reason_of(tmp_path, [("cut.png", "a")], {"cut.png": data[: len(data) * 2 // 3]}, "cut.png") == "truncated"


def test_jpeg_missing_only_its_end_marker_is_truncated(tmp_path):
    data = encode(noise(), ".jpg")
    assert reason_of(tmp_path, [("cut.jpg", "a")], {"cut.jpg": data[:-2]}, "cut.jpg") == "truncated"


def test_jpeg_signature_followed_by_garbage_is_corrupt(tmp_path):
    data = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"
    assert reason_of(tmp_path, [("junk.jpg", "a")], {"junk.jpg": data}, "junk.jpg") == "corrupt"


def test_html_saved_as_jpg_is_not_an_image_and_the_detail_shows_its_start(tmp_path):
    cfg = competition(tmp_path, [("good.png", "a"), ("page.jpg", "a")],
                      {"good.png": png(), "page.jpg": b"<!DOCTYPE html><html>Access denied</html>"})
    _, dropped = run_clean(cfg)
    assert dropped["reason"].tolist() == ["not_an_image"]
    assert "page.jpg starts with b'<!DOCTYPE html><'" in dropped["detail"].iat[0]


def test_a_folder_named_like_an_image_is_unreadable(tmp_path):
    cfg = competition(tmp_path, [("good.png", "a"), ("dir.png", "a")], {"good.png": png()})
    (cfg.data.root / "train" / "dir.png").mkdir()
    _, dropped = run_clean(cfg)
    assert dropped[["image_id", "reason"]].to_numpy().tolist() == [["dir.png", "unreadable"]]


def test_extreme_aspect_ratio_is_flagged_and_the_limit_is_configurable(tmp_path):
    files = {"strip.png": png(noise(8, 120))}  # 15:1
    assert reason_of(tmp_path / "a", [("strip.png", "a")], files, "strip.png") == "extreme_aspect"
    assert reason_of(tmp_path / "b", [("strip.png", "a")], files, "strip.png", "clean.max_aspect=20") is None


def test_file_far_smaller_than_its_peers_is_small_file_and_blank(tmp_path):
    flat = png(np.full((64, 64, 3), 90, dtype=np.uint8))  # a few hundred bytes beside 12 kB of noise
    cfg, _, dropped = run_with_peers(tmp_path, [("flat.png", "a")], {"flat.png": flat})
    assert dropped[["image_id", "reason"]].to_numpy().tolist() == [["flat.png", "small_file"]]
    found = findings(cfg)
    assert found.loc[found["image_id"] == "flat.png", "reason"].tolist() == ["small_file", "blank"]


def test_image_with_far_fewer_pixels_than_its_peers_is_small_image_and_kept_by_default(tmp_path):
    cfg, kept, dropped = run_with_peers(tmp_path, [("tiny.png", "a")], {"tiny.png": png(noise(8, 8, seed=7))},
                                        "clean.small_bytes_ratio=0")
    assert dropped.empty and "tiny.png" in kept["image_id"].tolist()  # a small photo that decodes is data
    found = findings(cfg)
    assert found.loc[found["image_id"] == "tiny.png", "reason"].tolist() == ["small_image"]


def test_small_image_is_dropped_when_the_policy_says_so(tmp_path):
    cfg, _, dropped = run_with_peers(tmp_path, [("tiny.png", "a")], {"tiny.png": png(noise(8, 8, seed=7))},
                                     "clean.small_bytes_ratio=0", "clean.policy.small_image=drop")
    assert dropped[["image_id", "reason"]].to_numpy().tolist() == [["tiny.png", "small_image"]]
    assert "8x8 px, 0.016 of the median 4096 px" in dropped["detail"].iat[0]


def test_size_checks_are_off_without_enough_peers(tmp_path):
    assert reason_of(tmp_path, [("tiny.png", "a")], {"tiny.png": png(noise(8, 8, seed=7))}, "tiny.png") is None


def placeholder(cover: float) -> bytes:
    """A 100x100 'image not found' card: one grey, with dark 'text' on (1 - cover) of the pixels."""
    image = np.full((100, 100, 3), 247, dtype=np.uint8)
    rng = np.random.default_rng(0)
    text = rng.permutation(100 * 100)[: round((1 - cover) * 100 * 100)]
    image.reshape(-1, 3)[text] = rng.integers(0, 90, size=(len(text), 3))
    return png(image)


def test_placeholder_card_is_blank(tmp_path):
    assert reason_of(tmp_path, [("card.png", "a")], {"card.png": placeholder(0.95)}, "card.png") == "blank"


def test_photo_on_a_mostly_white_background_is_not_blank(tmp_path):
    assert reason_of(tmp_path, [("studio.png", "a")], {"studio.png": placeholder(0.8)}, "studio.png") is None


def test_label_outside_clean_classes_is_unknown(tmp_path):
    cfg = competition(tmp_path, [("a.png", "cat"), ("b.png", "dgo")], {"a.png": png(noise(seed=1)), "b.png": png(noise(seed=2))},
                      "clean.classes=[cat, dog]")
    _, dropped = run_clean(cfg)
    assert dropped[["image_id", "reason"]].to_numpy().tolist() == [["b.png", "unknown_label"]]


def test_label_differing_only_in_case_or_spaces_is_flagged_with_the_common_spelling(tmp_path):
    rows = [(f"{i}.png", "rose") for i in range(3)] + [("odd.png", "Rose ")]
    cfg = competition(tmp_path, rows, {name: png(noise(seed=i)) for i, (name, _) in enumerate(rows)})
    _, dropped = run_clean(cfg)
    assert dropped["image_id"].tolist() == ["odd.png"] and dropped["reason"].tolist() == ["unknown_label"]
    assert "'Rose ' looks like a variant of 'rose'" in dropped["detail"].iat[0]


def test_multilabel_rows_are_checked_label_by_label(tmp_path):
    cfg = competition(tmp_path, [("a.png", "cat dog"), ("b.png", "cat eel"), ("c.png", "  ")],
                      {n: png(noise(seed=i)) for i, n in enumerate(["a.png", "b.png", "c.png"])},
                      "data.label_sep=' '", "clean.classes=[cat, dog]")
    _, dropped = run_clean(cfg)
    assert dropped[["image_id", "reason"]].to_numpy().tolist() == [["b.png", "unknown_label"], ["c.png", "missing_label"]]


def test_unlisted_files_are_reported_not_dropped(tmp_path):
    cfg = competition(tmp_path, [("a.png", "x")], {"a.png": png(), "stray.png": png(noise(seed=3)), "notes.txt": b"hi"})
    (cfg.data.root / "train" / "sub").mkdir()
    (cfg.data.root / "train" / "sub" / "deep.png").write_bytes(png(noise(seed=4)))
    kept, dropped = run_clean(cfg)
    assert kept["image_id"].tolist() == ["a.png"] and dropped.empty
    found = findings(cfg)
    unlisted = found[found["reason"] == "unlisted_file"]
    assert sorted(unlisted["image_id"]) == ["notes.txt", "stray.png", "sub/deep.png"]
    assert set(unlisted["action"]) == {"reported"}
    assert json.loads((cfg.data_dir / "clean_report.json").read_text())["findings"]["unlisted_file"] == 3


# Odd but valid images: kept, and counted as normalised.

ODD = {
    "grey.jpg": lambda: pil_bytes(Image.fromarray(noise(32, 32, channels=1)), "JPEG"),
    "cmyk.jpg": lambda: pil_bytes(Image.fromarray(noise(32, 32)).convert("CMYK"), "JPEG"),
    "rgba.png": lambda: pil_bytes(Image.fromarray(noise(32, 32, channels=4), "RGBA"), "PNG"),
    "palette.png": lambda: pil_bytes(Image.fromarray(noise(32, 32)).quantize(64), "PNG"),
    "wide.png": lambda: encode((noise(32, 32).astype(np.uint16) * 257), ".png"),
    "rotated.jpg": lambda: pil_bytes(Image.fromarray(noise(32, 48)), "JPEG", exif=_exif(6)),
    "palette.gif": lambda: pil_bytes(Image.fromarray(noise(32, 32)).quantize(32), "GIF"),
}


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_odd_but_valid_images_are_kept_and_reported_as_normalised(tmp_path):
    files = {name: make() for name, make in ODD.items()}
    cfg = competition(tmp_path, [(name, "a") for name in files], files)
    kept, dropped = run_clean(cfg)
    assert dropped.empty and sorted(kept["image_id"]) == sorted(files)
    report = json.loads((cfg.data_dir / "clean_report.json").read_text())
    assert report["normalised"] == {"greyscale": 1, "cmyk": 1, "alpha": 1, "palette": 2, "16-bit": 1, "exif-rotated": 1}


# Duplicates and the policy.

def test_byte_identical_copies_with_different_labels_are_all_dropped_by_default(tmp_path):
    same = png(noise(seed=5))
    cfg = competition(tmp_path, [("a.png", "cat"), ("b.png", "dog"), ("c.png", "cat"), ("d.png", "cat")],
                      {"a.png": same, "b.png": same, "c.png": same, "d.png": png(noise(seed=6))})
    kept, dropped = run_clean(cfg)
    assert kept["image_id"].tolist() == ["d.png"]
    assert dropped["reason"].tolist() == ["duplicate_conflict"] * 3
    dups = pd.read_csv(cfg.data_dir / "duplicates.csv", dtype=str)
    assert dups[["image_id", "group", "kind", "exact_group"]].to_numpy().tolist() == [
        ["a.png", "g0001", "exact", "e0001"], ["b.png", "g0001", "exact", "e0001"], ["c.png", "g0001", "exact", "e0001"]]


def test_majority_resolution_keeps_the_copies_that_agree(tmp_path):
    same = png(noise(seed=5))
    cfg = competition(tmp_path, [("a.png", "cat"), ("b.png", "dog"), ("c.png", "cat")],
                      {"a.png": same, "b.png": same, "c.png": same}, "clean.conflict_resolution=majority")
    kept, dropped = run_clean(cfg)
    assert kept["image_id"].tolist() == ["a.png", "c.png"]
    assert dropped[["image_id", "reason"]].to_numpy().tolist() == [["b.png", "duplicate_conflict"]]
    found = findings(cfg)
    assert found.loc[found["image_id"] == "c.png", ["reason", "action"]].to_numpy().tolist() == [["duplicate_copy", "kept"]]


def test_duplicate_copies_are_kept_by_default_and_dropped_by_policy(tmp_path):
    same = png(noise(seed=5))
    rows, files = [("a.png", "cat"), ("b.png", "cat")], {"a.png": same, "b.png": same}
    kept, _ = run_clean(competition(tmp_path / "keep", rows, files))
    assert kept["image_id"].tolist() == ["a.png", "b.png"]
    kept, dropped = run_clean(competition(tmp_path / "drop", rows, files, "clean.policy.duplicate_copy=drop"))
    assert kept["image_id"].tolist() == ["a.png"] and dropped["reason"].tolist() == ["duplicate_copy"]


def photo() -> np.ndarray:
    """A smooth synthetic scene (perceptual hashes need structure, not noise)."""
    y, x = np.mgrid[0:96, 0:128]
    image = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    image[30:60, 40:90] = (250, 30, 30)
    return image


def test_resized_recompressed_copy_is_a_near_duplicate_and_its_label_conflict_is_reported_not_dropped(tmp_path):
    original = photo()
    smaller = encode(np.ascontiguousarray(original[::2, ::2]), ".jpg")
    cfg = competition(tmp_path, [("a.png", "cat"), ("b.jpg", "dog"), ("c.png", "cat")],
                      {"a.png": png(original), "b.jpg": smaller, "c.png": png(noise(seed=9))})
    kept, dropped = run_clean(cfg)
    assert dropped.empty
    dups = pd.read_csv(cfg.data_dir / "duplicates.csv", dtype=str, keep_default_na=False)
    assert dups[["image_id", "group", "kind", "exact_group"]].to_numpy().tolist() == [
        ["a.png", "g0001", "near", ""], ["b.jpg", "g0001", "near", ""]]
    found = findings(cfg)
    assert sorted(found.loc[found["reason"] == "near_duplicate_conflict", "image_id"]) == ["a.png", "b.jpg"]
    off = competition(tmp_path / "off", [("a.png", "cat"), ("b.jpg", "dog")], {"a.png": png(original), "b.jpg": smaller},
                      "clean.near_duplicates=false")
    run_clean(off)
    assert pd.read_csv(off.data_dir / "duplicates.csv").empty


def test_policy_keep_keeps_the_row_and_still_reports_the_finding(tmp_path):
    cfg = competition(tmp_path, [("good.png", "a"), ("card.png", "a")], {"good.png": png(), "card.png": placeholder(0.95)},
                      "clean.policy.blank=keep")
    kept, dropped = run_clean(cfg)
    assert dropped.empty and "card.png" in set(kept["image_id"])
    found = findings(cfg)
    assert found[["image_id", "reason", "action"]].to_numpy().tolist() == [["card.png", "blank", "kept"]]
    assert "## Findings kept by the policy" in (cfg.data_dir / "clean_report.md").read_text()


def test_policy_refuses_unknown_reasons_and_keeping_unreadable_rows(tmp_path):
    with pytest.raises(ConfigError, match=r"clean\.policy: 'truncated' has no policy"):
        competition(tmp_path / "a", [("a.png", "x")], {"a.png": png()}, "clean.policy.truncated=keep")
    with pytest.raises(ConfigError, match=r"clean\.policy\.blank: Input should be 'drop' or 'keep'"):
        competition(tmp_path / "b", [("a.png", "x")], {"a.png": png()}, "clean.policy.blank=maybe")


def test_every_policy_key_is_a_documented_reason():
    assert set(CleanConfig.DEFAULT_POLICY) <= set(REASONS)
