"""Losses on soft targets: cross-entropy with label smoothing, BCE, MSE, and timm's Mixup/CutMix."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_toy import one_compute_thread  # noqa: F401 (autouse fixture)

from medal.core.config import TrainConfig
from medal.train.losses import Criterion

C = 4


@pytest.fixture
def batch():
    torch.manual_seed(0)
    np.random.seed(0)  # timm's Mixup draws from numpy's global RNG
    return torch.rand(8, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), torch.randn(8, C)


def test_targets_are_one_hot_without_smoothing(batch):
    images, labels, _ = batch
    _, target = Criterion(TrainConfig(label_smoothing=0.0), C).prepare(images, labels)
    assert torch.equal(target, F.one_hot(labels, C).float())


def test_label_smoothing_moves_mass_to_the_other_classes_and_matches_torch(batch):
    images, labels, logits = batch
    criterion = Criterion(TrainConfig(label_smoothing=0.2), C)
    _, target = criterion.prepare(images, labels)
    assert target[0].tolist() == pytest.approx([0.85, 0.05, 0.05, 0.05])
    expected = F.cross_entropy(logits, labels, label_smoothing=0.2, reduction="none")
    assert torch.allclose(criterion.per_sample(logits, target), expected, atol=1e-6)


def test_bce_is_binary_cross_entropy_per_class_on_the_target_vector(batch):
    images, labels, logits = batch
    criterion = Criterion(TrainConfig(loss="bce", label_smoothing=0.0), C)
    _, target = criterion.prepare(images, labels)
    expected = F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, C).float(), reduction="none").mean(1)
    assert torch.allclose(criterion.per_sample(logits, target), expected)
    ce = Criterion(TrainConfig(loss="ce", label_smoothing=0.0), C).per_sample(logits, target)
    assert not torch.allclose(criterion.per_sample(logits, target), ce)


def test_mse_regresses_the_outputs_onto_the_target_vector(batch):
    images, labels, _ = batch
    criterion = Criterion(TrainConfig(loss="mse", label_smoothing=0.0), C)
    _, target = criterion.prepare(images, labels)
    assert criterion.per_sample(target.clone(), target).abs().max() == 0  # exact outputs: no loss
    # Row i is off by i/10 in every class: its own loss is (i/10)^2, one value per sample (the loss the hard-example
    # tracker reads per row), not the batch mean (mutmut's surviving mutant: `.mean()` over the whole batch).
    offsets = torch.arange(8, dtype=torch.float32) / 10
    losses = criterion.per_sample(target + offsets[:, None], target)
    assert losses.shape == (8,)
    assert torch.allclose(losses, offsets ** 2)


def test_mixup_blends_images_and_targets_of_image_pairs(batch):
    images, labels, _ = batch
    mixed, target = Criterion(TrainConfig(label_smoothing=0.0, mixup={"mixup_alpha": 1.0}), C).prepare(images.clone(), labels)
    lam = target[0, labels[0]].item()  # batch mode: one lambda, image i mixed with image n-1-i
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0), atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(8))
    assert target[0, labels[-1]].item() == pytest.approx(1 - lam)


def test_cutmix_pastes_a_box_from_the_paired_image(batch):
    images, labels, _ = batch
    mixed, target = Criterion(TrainConfig(label_smoothing=0.0, mixup={"cutmix_alpha": 1.0}), C).prepare(images.clone(), labels)
    from_self = (mixed == images).all(dim=1)
    from_pair = (mixed == images.flip(0)).all(dim=1)
    assert (from_self | from_pair).all() and from_pair.any() and from_self.any()
    kept = from_self[0].float().mean().item()  # the target's weight is the share of pixels kept
    assert target[0, labels[0]].item() == pytest.approx(kept, abs=1e-6)


def test_mixup_probability_zero_leaves_batches_unmixed(batch):
    images, labels, _ = batch
    criterion = Criterion(TrainConfig(label_smoothing=0.0, mixup={"mixup_alpha": 1.0, "prob": 0.0}), C)
    assert criterion.mixup is None
    mixed, target = criterion.prepare(images.clone(), labels)
    assert torch.equal(mixed, images) and torch.equal(target, F.one_hot(labels, C).float())


def test_mixup_with_an_odd_batch_size_is_refused_by_the_config():
    with pytest.raises(ValueError, match="batch sizes must be even"):
        TrainConfig(batch_size=15, mixup={"mixup_alpha": 0.2})


def _mix_kinds(criterion: Criterion, draws: int = 60) -> dict[str, int]:
    """How many of `draws` batches came out unmixed, cut-mixed (every pixel exactly its own or its partner's,
    some of each) or mixed (blended pixels)."""
    np.random.seed(0)  # timm's Mixup draws from numpy's global RNG
    kinds = {"none": 0, "cutmix": 0, "mixup": 0}
    for _ in range(draws):
        images = torch.rand(8, 3, 16, 16)
        mixed, _ = criterion.prepare(images.clone(), torch.arange(8) % C)
        own, partner = mixed == images, mixed == images.flip(0)
        if own.all():
            kinds["none"] += 1
        elif (own | partner).all():
            kinds["cutmix"] += 1
        else:
            kinds["mixup"] += 1
    return kinds


def test_switch_prob_chooses_between_cutmix_and_mixup_and_prob_skips_batches():
    both = {"mixup_alpha": 1.0, "cutmix_alpha": 1.0}
    always_cutmix = _mix_kinds(Criterion(TrainConfig(mixup={**both, "switch_prob": 1.0}), C))
    never_cutmix = _mix_kinds(Criterion(TrainConfig(mixup={**both, "switch_prob": 0.0}), C))
    half = _mix_kinds(Criterion(TrainConfig(mixup={**both, "prob": 0.5}), C), draws=200)
    assert always_cutmix["cutmix"] >= 55 and always_cutmix["mixup"] == 0  # a tiny box may come out empty
    assert never_cutmix == {"none": 0, "cutmix": 0, "mixup": 60}
    assert 70 <= half["none"] <= 130  # Binomial(200, 0.5): 100 +- 15 at 3 sigma
