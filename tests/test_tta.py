"""TTA views on NCHW batches, and the greedy choice of views on OOF."""
from __future__ import annotations

import numpy as np
import torch

from medal.metrics import score
from medal.tta import VIEWS, select_greedy

# A 1x1x2x3 batch: rows [0 1 2] and [3 4 5].
X = torch.arange(6.0).reshape(1, 1, 2, 3)


def test_identity_view_returns_the_batch_unchanged():
    assert torch.equal(VIEWS["identity"](X), X)


def test_hflip_reverses_the_width_axis():
    assert VIEWS["hflip"](X)[0, 0].tolist() == [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]


def test_vflip_reverses_the_height_axis():
    assert VIEWS["vflip"](X)[0, 0].tolist() == [[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]


def test_transpose_swaps_height_and_width():
    out = VIEWS["transpose"](X)
    assert out.shape == (1, 1, 3, 2)
    assert out[0, 0].tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]


def test_views_leave_batch_and_channel_axes_alone():
    x = torch.arange(2 * 3 * 4 * 4.0).reshape(2, 3, 4, 4)
    for name, view in VIEWS.items():
        out = view(x)
        for n in range(2):
            for c in range(3):
                assert torch.equal(out[n, c], view(x[n:n + 1, c:c + 1])[0, 0]), name


def test_flips_are_their_own_inverse():
    x = torch.randn(2, 3, 5, 5)
    for name in ["hflip", "vflip", "transpose"]:
        assert torch.equal(VIEWS[name](VIEWS[name](x)), x), name


def test_known_view_names():
    assert set(VIEWS) == {"identity", "hflip", "vflip", "transpose"}


# Greedy selection on synthetic OOF probabilities (2 classes, 4 rows).
TARGETS = np.array([0, 1, 0, 1])
IDENTITY = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55], [0.3, 0.7]])  # row 2 narrowly wrong: 3/4
HELPS = np.array([[0.7, 0.3], [0.4, 0.6], [0.8, 0.2], [0.4, 0.6]])      # right everywhere, fixes row 2 in the mean
HURTS = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])      # wrong everywhere


def accuracy(probs: np.ndarray) -> float:
    return score("accuracy", TARGETS, probs)


def test_greedy_keeps_identity_alone_when_the_other_view_hurts():
    assert select_greedy({"identity": IDENTITY, "hflip": HURTS}, accuracy, True) == ["identity"]


def test_greedy_adds_a_view_that_raises_the_score():
    assert select_greedy({"identity": IDENTITY, "hflip": HELPS}, accuracy, True) == ["identity", "hflip"]


def test_greedy_adds_the_helpful_view_and_stops_before_the_harmful_one():
    views = {"identity": IDENTITY, "vflip": HURTS, "hflip": HELPS}
    assert select_greedy(views, accuracy, True) == ["identity", "hflip"]


def test_greedy_does_not_add_a_view_that_only_ties():
    assert select_greedy({"identity": IDENTITY, "hflip": IDENTITY.copy()}, accuracy, True) == ["identity"]


def test_greedy_starts_from_identity_even_when_it_is_listed_last():
    views = {"hflip": HURTS, "identity": IDENTITY}
    assert select_greedy(views, accuracy, True) == ["identity"]


def test_greedy_starts_from_the_first_view_when_identity_is_absent():
    assert select_greedy({"hflip": IDENTITY, "vflip": HURTS}, accuracy, True) == ["hflip"]


def test_greedy_minimises_a_lower_is_better_metric():
    loss = lambda p: score("log_loss", TARGETS, p)  # noqa: E731
    sharper = np.array([[0.99, 0.01], [0.01, 0.99], [0.6, 0.4], [0.01, 0.99]])
    blurry = np.full((4, 2), 0.5)
    assert loss(np.mean([IDENTITY, sharper], axis=0)) < loss(IDENTITY) < loss(np.mean([IDENTITY, blurry], axis=0))
    assert select_greedy({"identity": IDENTITY, "hflip": blurry, "vflip": sharper}, loss, False) == ["identity", "vflip"]


def test_greedy_adds_the_best_remaining_view_each_round_while_the_mean_improves():
    # Score: closeness of the mean to 0. identity=3; +vflip -> 0.5 (beats +hflip -> 1.0); +hflip -> 0.0.
    views = {"identity": np.array([[3.0]]), "hflip": np.array([[-1.0]]), "vflip": np.array([[-2.0]])}
    closeness = lambda p: -float(np.abs(p).sum())  # noqa: E731
    assert select_greedy(views, closeness, True) == ["identity", "vflip", "hflip"]
