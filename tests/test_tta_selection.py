"""infer's greedy TTA selection scores each candidate set under the configured tta_reduce and tta_space.

Planted per-view OOF logits, no model: in each case the configured reduction and the mean of logits
keep different views, so a selection that scored the wrong combination picks the wrong set.
"""
from __future__ import annotations

import numpy as np
import pytest

from medal.core.config import Config
from medal.infer.run import choose_views


def cfg(metric: str, reduce: str, space: str) -> Config:
    return Config.model_validate({"name": "tta", "data": {"root": "."}, "metric": metric,
                                  "infer": {"tta_select": "greedy", "tta_reduce": reduce, "tta_space": space}})


def logits_of(probs: list[list[float]]) -> np.ndarray:
    """Logits whose softmax is `probs`: the log-probabilities."""
    return np.log(np.array(probs))


# Log loss, mean over probabilities. Targets 0, 1, 0. identity says 0.5 everywhere; hflip is right with
# 0.98 on rows 0 and 1 and wrong with 0.98 on row 2.
LOSS_TARGETS = np.array([0, 1, 0])
LOSS_VIEWS = {
    "identity": logits_of([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]),
    "hflip": logits_of([[0.98, 0.02], [0.02, 0.98], [0.02, 0.98]]),
}


def test_greedy_keeps_a_view_that_lowers_the_log_loss_of_the_mean_of_probabilities():
    # identity alone: -ln 0.5 = 0.6931.
    # Mean of probabilities, true-class p = (0.5 + 0.98) / 2 = 0.74 on rows 0 and 1, (0.5 + 0.02) / 2 = 0.26
    # on row 2: -(2 ln 0.74 + ln 0.26) / 3 = (0.6022 + 1.3471) / 3 = 0.6498 < 0.6931, so hflip is kept.
    # The mean of logits would give sqrt(.5 * .98) / (sqrt(.5 * .98) + sqrt(.5 * .02)) = 7/8 and 1/8:
    # -(2 ln 0.875 + ln 0.125) / 3 = (0.2671 + 2.0794) / 3 = 0.7822 > 0.6931, and would keep identity alone.
    report = choose_views(cfg("log_loss", "mean", "probs"), LOSS_VIEWS, LOSS_TARGETS, {})
    assert report["chosen"] == ["identity", "hflip"]
    assert report["oof_identity"] == pytest.approx(np.log(2), abs=1e-6)
    assert report["oof_tta"] == pytest.approx(-(2 * np.log(0.74) + np.log(0.26)) / 3, abs=1e-6)


def test_greedy_drops_the_same_view_when_the_mean_is_over_logits():
    # The same views under tta_space=logits: 0.7822 > 0.6931 (above), so identity stays alone.
    report = choose_views(cfg("log_loss", "mean", "logits"), LOSS_VIEWS, LOSS_TARGETS, {})
    assert report["chosen"] == ["identity"]
    assert report["oof_tta"] == pytest.approx(np.log(2), abs=1e-6)


# Accuracy, max over logits. Targets 0, 1, 1; logits per row (class 0, class 1):
#            row 0    row 1       row 2
# identity   [5, 0]   [2, 0]  x   [3, 2.9]    x     (x: argmax wrong)
# hflip      [5, 0]   [2, 0]      [3.45, 3.5]
# vflip      [5, 0]   [-4, 1]     [3, 2.9]
MAX_TARGETS = np.array([0, 1, 1])
MAX_VIEWS = {
    "identity": np.array([[5.0, 0.0], [2.0, 0.0], [3.0, 2.9]]),
    "hflip": np.array([[5.0, 0.0], [2.0, 0.0], [3.45, 3.5]]),
    "vflip": np.array([[5.0, 0.0], [-4.0, 1.0], [3.0, 2.9]]),
}


def test_greedy_over_the_max_of_logits_keeps_the_view_the_max_rewards():
    # identity alone: row 0 right -> 1/3.
    # Round 1 under max: +hflip: row 1 max [2, 0] wrong, row 2 max [3.45, 3.5] right -> 2/3;
    #                    +vflip: row 1 max [2, 1] wrong, row 2 [3, 2.9] wrong -> 1/3. Keep hflip.
    # Round 2: +vflip: row 1 max [2, 1] wrong, row 2 [3.45, 3.5] right -> 2/3, not above 2/3: stop.
    # Under the mean of logits the choice differs: +hflip gives row 2 [3.225, 3.2] wrong -> 1/3, +vflip gives
    # row 1 [-1, 0.5] right -> 2/3; then +hflip: row 1 [0, 1/3] right, row 2 [3.15, 3.1] wrong -> 2/3: stop.
    # So the mean of logits would choose identity + vflip.
    report = choose_views(cfg("accuracy", "max", "logits"), MAX_VIEWS, MAX_TARGETS, {})
    assert report["chosen"] == ["identity", "hflip"]
    assert report["oof_identity"] == pytest.approx(1 / 3)
    assert report["oof_tta"] == pytest.approx(2 / 3)
    assert report["gain"] == pytest.approx(1 / 3)


def test_greedy_over_the_mean_of_logits_keeps_the_other_view():
    # The same views, configured as the mean over logits: identity + vflip (rounds worked out above).
    report = choose_views(cfg("accuracy", "mean", "logits"), MAX_VIEWS, MAX_TARGETS, {})
    assert report["chosen"] == ["identity", "vflip"]
    assert report["oof_tta"] == pytest.approx(2 / 3)


def test_per_view_scores_are_each_view_alone_whatever_the_reduction():
    # One view reduces to its own softmax under every reduction: the per-view accuracies are 1/3, 2/3, 2/3
    # (hflip right on rows 0 and 2, vflip on rows 0 and 1).
    for reduce, space in [("max", "logits"), ("mean", "logits"), ("mean", "probs"), ("max", "probs")]:
        report = choose_views(cfg("accuracy", reduce, space), MAX_VIEWS, MAX_TARGETS, {})
        assert report["per_view"] == pytest.approx({"identity": 1 / 3, "hflip": 2 / 3, "vflip": 2 / 3})
