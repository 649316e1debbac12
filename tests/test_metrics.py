"""Metrics by name on probability arrays, and which direction is better."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medal.core.metrics import METRICS, is_better, score

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


@pytest.mark.parametrize("name", ["accuracy", "f1_macro", "f1_micro", "roc_auc", "qwk"])
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
        "accuracy": True, "f1_macro": True, "f1_micro": True, "log_loss": False, "roc_auc": True, "qwk": True}


def test_qwk_of_perfect_predictions_is_one_and_of_reversed_ordinal_predictions_is_minus_one():
    targets = np.array([0, 1, 2, 0, 1, 2])
    assert score("qwk", targets, np.eye(3)[targets]) == pytest.approx(1.0)
    assert score("qwk", targets, np.eye(3)[2 - targets]) == pytest.approx(-1.0)


def test_qwk_penalises_a_far_miss_more_than_a_near_miss():
    targets = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    near = targets.copy()
    near[0] = 1   # off by one
    far = targets.copy()
    far[0] = 3    # off by three
    assert score("qwk", targets, np.eye(4)[near]) > score("qwk", targets, np.eye(4)[far])


def test_qwk_matches_the_textbook_formula():
    from sklearn.metrics import confusion_matrix

    targets = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    predicted = np.array([0, 2, 2, 1, 1, 0, 0, 1])
    observed = confusion_matrix(targets, predicted, labels=[0, 1, 2])
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    weights = np.subtract.outer(np.arange(3), np.arange(3)) ** 2
    kappa = 1 - (weights * observed).sum() / (weights * expected).sum()
    assert score("qwk", targets, np.eye(3)[predicted]) == pytest.approx(kappa)


def test_multiclass_roc_auc_is_the_mean_one_vs_rest_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 50)
    probs = rng.dirichlet(np.ones(3), 50)
    assert score("roc_auc", targets, probs) == pytest.approx(roc_auc_score(targets, probs, multi_class="ovr"))
    # Rank blends are not distributions; one-vs-rest AUC reads each column's order alone.
    assert score("roc_auc", targets, probs * [1, 5, 0.2]) == pytest.approx(score("roc_auc", targets, probs))


def test_log_loss_renormalises_rows_that_do_not_sum_to_one():
    assert score("log_loss", TARGETS, PROBS * 3) == pytest.approx(score("log_loss", TARGETS, PROBS))


@pytest.mark.parametrize("name", list(METRICS))
@pytest.mark.parametrize("n_classes", [2, 5])
def test_batched_scores_equal_the_exact_metric_of_each_candidate(name, n_classes):
    from medal.core.metrics import score_many

    rng = np.random.default_rng(n_classes)
    targets = rng.integers(0, n_classes, 300)
    probs = rng.dirichlet(np.ones(n_classes), (6, 300)).transpose(0, 2, 1)  # (candidate, class, row)
    probs[0] = np.eye(n_classes)[targets].T  # a perfect one, with exact ties among the wrong classes
    expected = [score(name, targets, p.T) for p in probs]
    scale = rng.uniform(0.5, 8.0, (6, 1, 1))  # sums of k models: any positive scale per candidate
    np.testing.assert_allclose(score_many(name, targets, probs * scale), expected, rtol=1e-9, atol=1e-12)


def test_only_roc_auc_reads_scores():
    from medal.core.metrics import reads_scores

    assert [name for name in METRICS if reads_scores(name)] == ["roc_auc"]


@pytest.mark.parametrize("name", list(METRICS))
def test_a_metric_reads_scores_exactly_when_per_class_ranks_score_like_the_probabilities(name):
    # What reads_scores promises: a metric that reads scores is blind to replacing each class column by its
    # ranks (a rank blend); every other metric scores the ranks differently from the probabilities.
    from medal.core.metrics import reads_scores
    from medal.core.predictions import rank_scale

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 200)
    logits = np.eye(4)[targets] + rng.normal(scale=1.0, size=(200, 4)) + np.array([0.0, 0.5, -0.5, 1.0])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    same = score(name, targets, rank_scale(probs, axis=0)) == pytest.approx(score(name, targets, probs))
    assert same == reads_scores(name)


def test_reads_scores_refuses_an_unknown_metric_naming_it():
    from medal.core.metrics import reads_scores

    with pytest.raises(ValueError, match=r"unknown metric 'auc'"):
        reads_scores("auc")
