"""Ids that lead out of the data folder: dropped as outside_data_dir, and the file they name is never opened,
so none of its bytes reach clean's outputs. Cached copies are written only under the cache folder."""
from __future__ import annotations

import os

import pytest
from conftest import noise, png
from test_clean import competition

from medal.clean.run import run_clean
from medal.images.cache import CacheSpec, cached_file

SECRET = b"TOP-SECRET-7f3a9 password=hunter2\n"  # text: if clean read it, not_an_image would quote its first bytes


def secret_competition(tmp_path, rows, *overrides):
    """A competition whose train/ holds a good image and a symlink to a secret file beside the folder."""
    cfg = competition(tmp_path, [("good.png", "a"), *rows], {"good.png": png(noise(seed=3))}, *overrides)
    secret = cfg.data.root / "secret.txt"
    secret.write_bytes(SECRET)
    (cfg.data.root / "train" / "link.png").symlink_to(secret)
    return cfg, secret


def every_output(cfg) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in cfg.data_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("cache", [0, 32])
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_an_id_outside_the_training_folder_is_dropped_and_its_file_never_read(tmp_path, kind, cache):
    image_id = {"dotdot": "../secret.txt", "absolute": str(tmp_path / "comp" / "secret.txt"),
                "symlink": "link.png"}[kind]
    cfg, _ = secret_competition(tmp_path, [(image_id, "a")], f"data.cache_max_side={cache}")
    kept, dropped = run_clean(cfg)
    assert kept["image_id"].tolist() == ["good.png"]
    assert dropped[["image_id", "reason"]].values.tolist() == [[image_id, "outside_data_dir"]]
    assert dropped["detail"].iat[0] == f"{image_id} resolves outside the training folder {cfg.data.root / 'train'}"
    outputs = every_output(cfg)
    assert len(outputs) > 5
    leaks = [name for name, data in outputs.items() if SECRET[:10] in data]
    assert leaks == []


def test_an_id_that_climbs_out_as_text_is_outside_even_where_a_folder_link_leads_back_in(tmp_path):
    # train/jump -> train/deep/inner, so the kernel reads jump/../../x.png as train/x.png, but the cached copy's
    # path, built from the same text, would be cache/x.png.jpg: outside the cache folder.
    cfg = competition(tmp_path, [("good.png", "a"), ("jump/../../x.png", "a")],
                      {"good.png": png(noise(seed=3)), "x.png": png(noise(seed=4))}, "data.cache_max_side=32")
    (cfg.data.root / "train" / "deep" / "inner").mkdir(parents=True)
    (cfg.data.root / "train" / "jump").symlink_to(cfg.data.root / "train" / "deep" / "inner")
    _, dropped = run_clean(cfg)
    assert dropped[["image_id", "reason"]].values.tolist() == [["jump/../../x.png", "outside_data_dir"]]
    assert not any(p.name.startswith("x.png") for p in (cfg.data_dir / "cache").rglob("*"))


def test_cached_file_stays_inside_the_cache_folder(tmp_path):
    spec = CacheSpec(64, "jpg")
    folder = tmp_path / "cache" / "train_64px_jpg"
    assert cached_file(tmp_path, "train", spec, "a/b.png") == folder / "a" / "b.png.jpg"
    assert cached_file(tmp_path, "train", spec, "a/../b.png") == folder / "a" / ".." / "b.png.jpg"


@pytest.mark.parametrize("name", ["../../escape.png", "a/../../x.png", "/etc/passwd", "../train_64px_jpg_x/a.png"])
def test_cached_file_refuses_a_name_that_leads_outside_the_cache_folder(tmp_path, name):
    with pytest.raises(ValueError) as err:
        cached_file(tmp_path, "train", CacheSpec(64, "jpg"), name)
    assert f"image {name!r}" in str(err.value)
    assert f"outside the cache folder {tmp_path / 'cache' / 'train_64px_jpg'}" in str(err.value)
    assert not os.path.exists(tmp_path / "cache")
