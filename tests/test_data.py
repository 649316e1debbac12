"""The competition folder, image loading, the Dataset, and the transforms it applies."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import noise, png, write_yaml

from medal.core.config import ConfigError, load_config
from medal.core.tables import class_names
from medal.images.augment import PRESETS, eval_transform, train_transform
from medal.images.dataset import ImageDataset, load_rgb
from medal.images.paths import image_path

STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture
def cfg(tmp_path):
    root = tmp_path / "comp"
    root.mkdir()
    path = write_yaml(tmp_path / "c.yaml", {"name": "x", "data": {"root": str(root), "train_dir": "tr", "test_dir": "te",
                                                                  "image_ext": ".jpg"}})
    return load_config(path)


def test_image_path_joins_root_split_folder_id_and_extension(cfg):
    assert image_path(cfg, "abc", "train") == cfg.data.root / "tr" / "abc.jpg"
    assert image_path(cfg, "abc", "test") == cfg.data.root / "te" / "abc.jpg"


def test_class_names_are_sorted_label_strings():
    assert class_names(pd.Series(["b", "a", "c", "a"])) == ["a", "b", "c"]
    assert class_names(pd.Series([10, 2, 2])) == ["10", "2"]


def test_load_rgb_decodes_a_file(tmp_path):
    bgr = noise(4, 6)
    (tmp_path / "a.png").write_bytes(png(bgr))
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), bgr[..., ::-1])


def test_load_rgb_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image .*gone.png does not exist"):
        load_rgb(tmp_path / "gone.png")


def test_load_rgb_names_an_undecodable_file_and_suggests_clean(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(OSError, match=r"cannot decode image .*bad.png: run `medal clean`"):
        load_rgb(tmp_path / "bad.png")


def test_dataset_yields_transformed_image_and_target(tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png(noise(10, 12, seed=i)))
    data = ImageDataset(paths, np.array([3, 1]), eval_transform(8, STATS))
    image, target = data[1]
    assert len(data) == 2 and target == 1
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32


def test_dataset_without_targets_yields_minus_one(tmp_path):
    (tmp_path / "a.png").write_bytes(png(noise(8, 8)))
    assert ImageDataset([tmp_path / "a.png"], None, eval_transform(8, STATS))[0][1] == -1


def test_eval_transform_resizes_and_normalises_with_the_backbones_stats():
    image = np.full((5, 7, 3), (255, 128, 0), dtype=np.uint8)
    out = eval_transform(4, STATS)(image=image)["image"]
    assert out.shape == (3, 4, 4)
    expected = [(255 / 255 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.25, (0 - 0.5) / 0.25]
    for c in range(3):
        assert torch.allclose(out[c], torch.full((4, 4), expected[c]), atol=1e-5)


def test_eval_transform_is_deterministic():
    image = noise(20, 20)
    t = eval_transform(16, STATS)
    assert torch.equal(t(image=image)["image"], t(image=image)["image"])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_gives_the_square_input_size(preset):
    out = train_transform(preset, 12, STATS)(image=noise(20, 30))["image"]
    assert out.shape == (3, 12, 12)


def test_train_transform_is_reproducible_from_its_seed():
    image = noise(24, 24)
    a, b = train_transform("light", 16, STATS), train_transform("light", 16, STATS)
    a.set_random_seed(5)
    b.set_random_seed(5)
    first = [a(image=image)["image"] for _ in range(3)]
    assert all(torch.equal(x, b(image=image)["image"]) for x in first)
    assert not all(torch.equal(first[0], x) for x in first[1:])  # it does augment


def test_none_preset_matches_the_eval_transform():
    image = noise(24, 24)
    assert torch.equal(train_transform("none", 16, STATS)(image=image)["image"], eval_transform(16, STATS)(image=image)["image"])


def test_unknown_preset_is_refused_in_the_config(cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.augment.*'heavy'"):
        load_config(tmp_path / "c.yaml", ["train.augment=heavy"])


def test_unknown_preset_is_refused_by_train_transform():
    with pytest.raises(ValueError, match="train.augment='heavy' is not a preset"):
        train_transform("heavy", 16, STATS)
