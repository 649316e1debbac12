"""The resized-image cache: written once by clean, found by image_path, read by training and inference."""
from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import noise, png, write_yaml

from medal.clean.run import run_clean
from medal.core.config import load_config
from medal.images.cache import resize_longest
from medal.images.dataset import load_rgb
from medal.images.decode import decode_rgb
from medal.images.paths import image_path, source_path


def smooth(seed: int) -> np.ndarray:
    """A 120x80 picture with structure (upscaled coarse noise), unlike every other seed's."""
    return cv2.resize(noise(10, 15, seed=seed), (120, 80), interpolation=cv2.INTER_CUBIC)


def make_competition(tmp_path, *overrides: str):
    """Three training images (one broken) and two test images of 120x80 px, ids without extension."""
    root = tmp_path / "comp"
    for folder in ("train", "test"):
        (root / folder).mkdir(parents=True)
    for i in range(2):
        (root / "train" / f"t{i}.png").write_bytes(png(smooth(i)))
        (root / "test" / f"s{i}.png").write_bytes(png(smooth(10 + i)))
    (root / "train" / "bad.png").write_bytes(b"")
    pd.DataFrame({"image_id": ["t0", "t1", "bad"], "label": ["a", "b", "a"]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": ["s0", "s1"], "label": ["a", "a"]}).to_csv(root / "sample_submission.csv", index=False)
    config = {"name": "x", "output_dir": str(tmp_path / "out"), "data": {"root": str(root), "image_ext": ".png"}}
    return load_config(write_yaml(tmp_path / "c.yaml", config), ["data.cache_max_side=48", *overrides])


def test_clean_writes_resized_copies_that_image_path_returns(tmp_path):
    cfg = make_competition(tmp_path)
    run_clean(cfg)
    for split, image_id in (("train", "t1"), ("test", "s0")):
        path = image_path(cfg, image_id, split)
        assert path == cfg.data_dir / "cache" / f"{split}_48px_jpg" / f"{image_id}.png.jpg"
        cached = load_rgb(path)
        assert cached.shape == (32, 48, 3)  # longest side 48, aspect kept
        expected = resize_longest(decode_rgb(source_path(cfg, image_id, split).read_bytes()), 48)
        assert np.abs(cached.astype(int) - expected).mean() < 4  # JPEG at quality 95 of the area-resized image


def test_training_and_inference_read_the_cache_not_the_originals(tmp_path):
    cfg = make_competition(tmp_path)
    run_clean(cfg)
    shutil.rmtree(cfg.data.root / "train")
    shutil.rmtree(cfg.data.root / "test")
    # The paths train.py and infer.py build still load, from the cache alone.
    for split, ids in (("train", ["t0", "t1"]), ("test", ["s0", "s1"])):
        assert all(load_rgb(image_path(cfg, i, split)).shape == (32, 48, 3) for i in ids)


def test_png_cache_is_lossless_and_never_enlarges(tmp_path):
    cfg = make_competition(tmp_path, "data.cache_max_side=500", "data.cache_format=png")
    run_clean(cfg)
    path = image_path(cfg, "t0", "train")
    assert path.suffix == ".png" and path.parent.name == "train_500px_png"
    np.testing.assert_array_equal(load_rgb(path), decode_rgb(source_path(cfg, "t0", "train").read_bytes()))


def test_a_second_clean_reuses_the_cache_and_refreshes_a_changed_source(tmp_path):
    cfg = make_competition(tmp_path)
    run_clean(cfg)
    t0, t1 = image_path(cfg, "t0", "train"), image_path(cfg, "t1", "train")
    old = {p: p.stat().st_mtime_ns for p in (t0, t1)}
    source = source_path(cfg, "t1", "train")
    source.write_bytes(png(smooth(99)))
    later = old[t1] + 10**9
    os.utime(source, ns=(later, later))
    run_clean(cfg)
    assert t0.stat().st_mtime_ns == old[t0]  # untouched
    assert t1.stat().st_mtime_ns != old[t1]
    expected = resize_longest(decode_rgb(source.read_bytes()), 48)
    assert np.abs(load_rgb(t1).astype(int) - expected).mean() < 4


def test_an_unreadable_row_has_no_cache_entry_and_asking_for_it_names_the_fix(tmp_path):
    cfg = make_competition(tmp_path)
    run_clean(cfg)
    with pytest.raises(FileNotFoundError, match=r"bad.png.jpg is not in the resized-image cache .*run `medal clean"):
        image_path(cfg, "bad", "train")


def test_cache_is_off_by_default(tmp_path):
    cfg = make_competition(tmp_path, "data.cache_max_side=0")
    run_clean(cfg)
    assert image_path(cfg, "t0", "train") == cfg.data.root / "train" / "t0.png"
    assert not (cfg.data_dir / "cache").exists()
