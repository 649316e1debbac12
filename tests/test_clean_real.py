"""clean and folds on the shared real datasets: flowers' duplicates, hymenoptera's oddities.

Expected values are computed here from the files themselves (content hashes,
train.csv), not copied from clean's output.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_yaml
from PIL import Image

from medal.clean.run import run_clean
from medal.core.config import load_config
from medal.folds.run import run_folds
from medal.images.dataset import load_rgb
from medal.images.paths import image_path, source_path

DATA = Path("/work/shared/data")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DATA.is_dir(), reason="the shared real datasets are not on this machine")]
TEXT = {"dtype": str, "keep_default_na": False}


def cleaned(tmp_path_factory, name: str, *overrides: str):
    base = tmp_path_factory.mktemp(name)
    cfg = load_config(write_yaml(base / "c.yaml", {"name": "x", "output_dir": str(base / "out"),
                                                   "data": {"root": str(DATA / name)}}), list(overrides))
    run_clean(cfg)
    return cfg


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
    return cleaned(tmp_path_factory, "flowers", "folds.repeats=2")


@pytest.fixture(scope="module")
def hymenoptera(tmp_path_factory):
    """Cleaned with the resized-image cache on (64 px), so test images are read and cached too."""
    return cleaned(tmp_path_factory, "hymenoptera", "data.cache_max_side=64")


@pytest.fixture(scope="module")
def flowers_identical() -> list[tuple[str, ...]]:
    """Sets of byte-identical flowers training files, by MD5 computed here."""
    by_hash = defaultdict(list)
    for path in sorted((DATA / "flowers" / "train").iterdir()):
        by_hash[hashlib.md5(path.read_bytes()).hexdigest()].append(path.name)
    return sorted(tuple(ids) for ids in by_hash.values() if len(ids) > 1)


def test_flowers_clean_finds_the_six_sets_of_byte_identical_images(flowers, flowers_identical):
    dups = pd.read_csv(flowers.data_dir / "duplicates.csv", **TEXT)
    exact = dups[dups["exact_group"] != ""].groupby("exact_group")["image_id"].apply(lambda s: tuple(sorted(s)))
    assert len(flowers_identical) == 6
    assert sorted(exact) == flowers_identical
    assert json.loads((flowers.data_dir / "clean_report.json").read_text())["duplicates"]["exact_groups"] == 6


def test_flowers_clean_flags_the_four_groups_whose_labels_conflict_and_drops_their_copies(flowers, flowers_identical):
    train = pd.read_csv(DATA / "flowers" / "train.csv", **TEXT).set_index("image_id")["label"]
    conflicting = [ids for ids in flowers_identical if train[list(ids)].nunique() > 1]
    assert len(conflicting) == 4 and all(set(train[list(ids)]) == {"rose", "tulip"} for ids in conflicting)
    dropped = pd.read_csv(flowers.data_dir / "dropped.csv", **TEXT)
    assert sorted(dropped["image_id"]) == sorted(i for ids in conflicting for i in ids)
    assert set(dropped["reason"]) == {"duplicate_conflict"}
    report = json.loads((flowers.data_dir / "clean_report.json").read_text())
    assert report["duplicates"]["conflicting_groups"] == 4
    markdown = (flowers.data_dir / "clean_report.md").read_text()
    for ids in conflicting:  # each conflicting group is listed with all its members on one line
        assert any(all(f"`{i}`" in line for i in ids) for line in markdown.splitlines())
    agreeing = [ids for ids in flowers_identical if ids not in conflicting]
    clean = set(pd.read_csv(flowers.data_dir / "clean.csv", **TEXT)["image_id"])
    assert all(set(ids) <= clean for ids in agreeing)  # same-label copies stay (folds keeps them together)


def test_flowers_clean_and_dropped_equal_train_csv_row_for_row(flowers):
    train = pd.read_csv(DATA / "flowers" / "train.csv", **TEXT)
    clean = pd.read_csv(flowers.data_dir / "clean.csv", **TEXT)
    dropped = pd.read_csv(flowers.data_dir / "dropped.csv", **TEXT)
    together = pd.concat([clean, dropped[clean.columns]])
    assert sorted(map(tuple, together.to_numpy())) == sorted(map(tuple, train.to_numpy()))


def test_flowers_folds_keep_every_duplicate_group_in_one_fold(flowers):
    folds = run_folds(flowers)
    dups = pd.read_csv(flowers.data_dir / "duplicates.csv", **TEXT)
    linked = dups.merge(folds, on="image_id")
    assert linked["group"].nunique() >= 12  # exact and near groups with at least two kept rows
    for column in ("fold", "fold_s1"):
        assert (linked.groupby("group")[column].nunique() == 1).all(), column
    assert not (folds["fold"] == folds["fold_s1"]).all()


def test_hymenoptera_placeholder_gif_is_dropped_as_blank_and_nothing_else(hymenoptera):
    dropped = pd.read_csv(hymenoptera.data_dir / "dropped.csv", **TEXT)
    assert dropped[["image_id", "label", "reason"]].to_numpy().tolist() == [["imageNotFound.gif", "ants", "blank"]]
    assert "one colour covers 94" in dropped["detail"].iat[0]
    report = json.loads((hymenoptera.data_dir / "clean_report.json").read_text())
    assert report["normalised"] == {"palette": 1}  # the GIF: decodable, normalised, then judged a placeholder
    assert report["findings"] == {"blank": 1}  # no unlisted file, no duplicate
    assert report["test_cache"] == {"images": 153, "cached": 153, "unreadable": []}


@pytest.mark.parametrize("split, name", [("train", "formica.jpeg"), ("train", "ant photos.jpg"),
                                         ("test", "F.pergan.28(f).jpg")])
def test_hymenoptera_odd_names_load_from_the_source_and_from_the_cache(hymenoptera, split, name):
    """A `.jpeg` extension, a space, brackets: found, decoded, and cached under the same name."""
    if split == "train":
        assert name in set(pd.read_csv(hymenoptera.data_dir / "clean.csv", **TEXT)["image_id"])
    with Image.open(DATA / "hymenoptera" / split / name) as pil:
        original = np.asarray(pil.convert("RGB"))
    assert load_rgb(source_path(hymenoptera, name, split)).shape == original.shape
    cached = image_path(hymenoptera, name, split)
    assert cached.name == f"{name}.jpg" and cached.parent.name == f"{split}_64px_jpg"
    small = load_rgb(cached)
    assert max(small.shape[:2]) == 64
    np.testing.assert_allclose(small.mean(), original.mean(), atol=2.0)
