"""Training batches: seeded batch sampling, hard-example weights, and reproducible augmentation across workers."""
from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest
import torch
from train_toy import make_toy, make_trainer, one_compute_thread, toy_cfg  # noqa: F401 (autouse fixture)

from medal.modeling.runtime import make_loader
from medal.train.sampler import (
    LossTracker,
    SeededBatchSampler,
    hard_example_weights,
    weight_summary,
)


def test_hard_examples_get_larger_weights_than_easy_ones():
    losses = np.array([0.1, 0.2, 1.0, 3.0])
    weights = hard_example_weights(losses, strength=1.0, cap=100.0)
    assert list(np.argsort(weights)) == [0, 1, 2, 3]
    assert weights == pytest.approx(losses / losses.mean())


def test_strength_sharpens_and_zero_strength_is_uniform():
    losses = np.array([0.5, 1.0, 2.0])
    assert hard_example_weights(losses, 0.0, 10.0) == pytest.approx([1.0, 1.0, 1.0])
    soft, sharp = hard_example_weights(losses, 1.0, 10.0), hard_example_weights(losses, 2.0, 10.0)
    assert sharp[2] / sharp[0] == pytest.approx((soft[2] / soft[0]) ** 2)


def test_cap_bounds_the_weights_both_ways():
    weights = hard_example_weights(np.array([1e-6, 1.0, 1.0, 1000.0]), 1.0, 3.0)
    assert weights.min() == pytest.approx(1 / 3) and weights.max() == pytest.approx(3.0)


def test_unseen_samples_count_as_average():
    weights = hard_example_weights(np.array([np.nan, 1.0, 3.0]), 1.0, 10.0)
    assert weights[0] == pytest.approx(1.0)


def test_weighted_sampler_draws_hard_samples_more_often():
    sampler = SeededBatchSampler(4, batch_size=100, drop_last=False)
    sampler.n = 4000  # draws per pass, over 4 samples weighted 1:1:1:5
    sampler.set_epoch(0, np.array([1.0, 1.0, 1.0, 5.0]))
    counts = Counter(sampler.order())
    assert counts[3] / counts[0] == pytest.approx(5.0, rel=0.15)


def test_weight_summary_reports_the_skew():
    summary = weight_summary(np.array([1.0] * 9 + [11.0]))
    assert summary["w_max"] == pytest.approx(5.5) and summary["top10_share"] == pytest.approx(0.55)
    assert weight_summary(np.ones(10)) == pytest.approx({"w_min": 1, "w_median": 1, "w_max": 1, "top10_share": 0.1, "ess": 1})


def test_batches_carry_one_seed_each_and_the_epoch_seed_fixes_order_and_seeds():
    sampler = SeededBatchSampler(10, batch_size=4, drop_last=True)
    sampler.set_epoch(7)
    first = list(sampler)
    assert len(first) == 2 and all(len(b) == 4 for b in first)
    assert all(b[0][1] >= 0 and all(seed == -1 for _, seed in b[1:]) for b in first)
    assert list(sampler) == first
    sampler.set_epoch(8)
    assert list(sampler) != first


def test_loss_tracker_state_round_trips():
    tracker = LossTracker(5)
    tracker.record(torch.tensor([1, 3]), torch.tensor([0.5, 2.0]))
    other = LossTracker(5)
    other.load_state_dict(tracker.state_dict())
    np.testing.assert_array_equal(other.losses, tracker.losses)
    assert np.isnan(other.losses[0]) and other.losses[3] == 2.0
    with pytest.raises(ValueError, match="has 5 samples, the fold has 6"):
        LossTracker(6).load_state_dict(tracker.state_dict())


class _Threads(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return cv2.getNumThreads()


def test_workers_run_opencv_single_threaded():
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)  # what a forked worker would inherit without seed_worker's cv2.setNumThreads(0)
    try:
        loader = make_loader(_Threads(), 2, 1, torch.device("cpu"))
        assert next(iter(loader)).tolist() == [1, 1]  # 0 = run sequentially, reported as one thread
    finally:
        cv2.setNumThreads(before)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("sampler"))


def _epoch_batches(cfg, epochs=2) -> list[torch.Tensor]:
    trainer = make_trainer(cfg)
    trainer._enter_stage(0)
    batches = []
    for epoch in range(epochs):
        trainer.sampler.set_epoch(epoch)
        batches += [images for images, _, _ in trainer.loader]
    return batches


def test_augmentations_do_not_depend_on_workers_or_their_persistence(toy):
    """Seeds travel with the batches: 0 workers, 2 workers, and 2 persistent workers see the same images."""
    base = ["train.augment=photo"]
    serial = _epoch_batches(toy_cfg(toy, *base, "runtime.num_workers=0"))
    persistent = _epoch_batches(toy_cfg(toy, *base, "runtime.num_workers=2", "runtime.persistent_workers=true"))
    fresh = _epoch_batches(toy_cfg(toy, *base, "runtime.num_workers=2", "runtime.persistent_workers=false"))
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(serial, persistent, fresh))
    assert not torch.equal(serial[0], serial[len(serial) // 2])  # epoch 2's first batch differs from epoch 1's
