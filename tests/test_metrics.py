"""Metrics by name on probability arrays, and which direction is better."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medal.metrics import METRICS, is_better, score

TARGETS = np.array([0, 1, 2, 1])
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2]])  # row 2 wrong


def test_accuracy_counts_argmax_hits():
    assert score("accuracy", TARGETS, PROBS) == pytest.approx(0.75)


def test_log_loss_is_the_mean_negative_log_probability_of_the_target():
    expected = -np.mean(np.log([0.7, 0.8, 0.2, 0.6]))
    assert score("log_loss", TARGETS, PROBS) == pytest.approx(expected)


def test_log_loss_knows_every_class_even_if_targets_miss_one():
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    assert score("log_loss", np.array([0, 1]), probs) == pytest.approx(-np.mean(np.log([0.9, 0.8])))


def test_f1_macro_averages_per_class_f1():
    # Per class: 0 -> p=1/2, r=1 -> 2/3; 1 -> 1; 2 -> 0.
    assert score("f1_macro", TARGETS, PROBS) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_f1_micro_equals_accuracy_for_single_label():
    assert score("f1_micro", TARGETS, PROBS) == pytest.approx(0.75)


def test_roc_auc_of_a_perfect_binary_ranking_is_one():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert score("roc_auc", np.array([0, 1, 0, 1]), probs) == 1.0


def test_roc_auc_of_a_reversed_binary_ranking_is_zero():
    probs = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert score("roc_auc", np.array([0, 1]), probs) == 0.0


@pytest.mark.parametrize("name", ["accuracy", "f1_macro", "f1_micro", "roc_auc"])
def test_higher_is_better_for_score_metrics(name):
    assert is_better(name, 0.9, 0.8) is True
    assert is_better(name, 0.7, 0.8) is False


def test_lower_is_better_for_log_loss():
    assert is_better("log_loss", 0.2, 0.5) is True
    assert is_better("log_loss", 0.6, 0.5) is False


@pytest.mark.parametrize("name", list(METRICS))
def test_an_equal_value_is_not_better(name):
    assert is_better(name, 0.5, 0.5) is False


@pytest.mark.parametrize("name", list(METRICS))
def test_anything_beats_no_previous_value(name):
    assert is_better(name, math.inf if name == "log_loss" else -math.inf, None) is True


def test_metric_directions():
    assert {name: higher for name, (_, higher) in METRICS.items()} == {
        "accuracy": True, "f1_macro": True, "f1_micro": True, "log_loss": False, "roc_auc": True}
