"""The default recipe's choices, checked through what training does: the LR the loop really steps with, and
crops the photo preset takes from the original image (not from an image shrunk first)."""
from __future__ import annotations

import numpy as np
import pytest
from train_toy import make_toy, make_trainer, one_compute_thread, toy_cfg  # noqa: F401

from medal.core.config import AUTO_LR, AUTO_LR_BATCH, ConfigError
from medal.images.augment import eval_transform, train_transform

STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("defaults"), per_class=6)


def first_step_lr(cfg) -> float:
    trainer = make_trainer(cfg)
    trainer._enter_stage(0)
    trainer._train_epoch(0)
    return trainer.steps[0]["lr"]


@pytest.mark.parametrize("optimizer, expected", [("adamw", 3e-3), ("sgd", 0.1)])
def test_auto_lr_from_scratch_is_the_optimizers_and_follows_the_batch(toy, optimizer, expected):
    cfg = toy_cfg(toy, "train.lr=auto", f"train.optimizer={optimizer}")
    assert cfg.train.lr == expected == AUTO_LR[(optimizer, "scratch")]
    # The toy's batch of 10 against the 64 the table is for: the linear rule scales the step's LR.
    assert first_step_lr(cfg) == pytest.approx(expected * 10 / AUTO_LR_BATCH)


def test_an_explicit_lr_is_used_as_given_without_batch_scaling(toy):
    cfg = toy_cfg(toy, "train.lr=0.02")
    assert cfg.train.lr_reference_batch is None
    assert first_step_lr(cfg) == pytest.approx(0.02)


def test_auto_lr_for_a_pretrained_body_is_the_fine_tuning_one_with_a_slower_body(toy, tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")  # the config only needs the key set; nothing loads it here
    cfg = toy_cfg(toy, "train.lr=auto", f"model.pretrained_file={weights}")
    assert cfg.train.lr == AUTO_LR[("adamw", "pretrained")] < AUTO_LR[("adamw", "scratch")]
    assert cfg.train.body_lr_scale == 0.1


def test_a_bad_lr_names_the_key(toy):
    with pytest.raises(ConfigError, match=r"train\.lr"):
        toy_cfg(toy, "train.lr=fast")


def neighbour_difference(image: np.ndarray) -> float:
    """Mean absolute difference of horizontally adjacent pixels: high for detail, low for an upscaled blur."""
    return float(np.abs(np.diff(image.astype(np.float32), axis=1)).mean())


def test_photo_crops_come_from_the_original_image_not_from_a_shrunk_copy():
    # Fine random detail at 512 px: a crop of the original resized down to 64 px keeps pixel-level detail,
    # while a crop of a 64 px copy is upscaled (by up to 1.4x at scale 0.5) and blurs neighbouring pixels.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    plain = neighbour_difference(eval_transform(64, STATS)(image=image)["image"].numpy())
    crops = [neighbour_difference(train_transform("photo", 64, STATS)(image=image)["image"].numpy()) for _ in range(20)]
    assert np.mean(crops) > 0.9 * plain
    assert train_transform("photo", 64, STATS)(image=image)["image"].shape == (3, 64, 64)
