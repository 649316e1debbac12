"""Blend methods on synthetic OOF with known structure: duplicates, diverse models, noise, a harmful model."""
from __future__ import annotations

import numpy as np
import pytest

from medal.blend.methods import (
    METHODS,
    FitContext,
    apply_weights,
    evaluate_method,
    fit_caruana,
    fit_greedy,
    fit_optimize,
)
from medal.blend.search import AdditionScorer, class_slabs, hill_climb
from medal.core.config import BlendConfig
from medal.core.metrics import confusion_score, confusions, score, score_many
from medal.core.predictions import rank_scale

N, C = 600, 3
TARGETS = np.random.default_rng(0).integers(0, C, N)
FOLDS = np.arange(N) % 5


def model(noise: float, seed: int, targets: np.ndarray = TARGETS) -> np.ndarray:
    """Softmax of the one-hot truth plus this model's own Gaussian noise: independent errors."""
    z = np.eye(C)[targets] + np.random.default_rng(seed).normal(scale=noise, size=(len(targets), C))
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


GOOD, DIVERSE, WEAK = model(1.0, 1), model(1.0, 2), model(1.6, 3)


def ctx(metric: str = "accuracy", **settings) -> FitContext:
    return FitContext(metric, BlendConfig(**settings), seed=0)


def test_the_synthetic_models_have_the_structure_the_tests_rely_on():
    acc = {name: score("accuracy", TARGETS, p) for name, p in [("good", GOOD), ("diverse", DIVERSE), ("weak", WEAK)]}
    assert 0.55 < acc["good"] < 0.7 and 0.55 < acc["diverse"] < 0.7 and acc["weak"] < 0.55
    # Independent errors: the pair's mean beats either model.
    assert score("accuracy", TARGETS, (GOOD + DIVERSE) / 2) > max(acc["good"], acc["diverse"]) + 0.04


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 0, 2], [2, 1, 0]])
def test_caruana_drops_a_duplicate_and_keeps_the_diverse_model(order):
    members = [GOOD, GOOD.copy(), DIVERSE]  # 0 and 1 are the same model
    preds = np.stack([members[i] for i in order])
    weights = dict(zip(order, fit_caruana(preds, TARGETS, ctx())))
    assert min(weights[0], weights[1]) == 0.0 and max(weights[0], weights[1]) > 0.0
    assert weights[2] > 0.0


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_greedy_skips_a_duplicate_above_the_correlation_threshold_and_keeps_the_diverse_model(metric):
    weights = fit_greedy(np.stack([GOOD, GOOD.copy(), DIVERSE]), TARGETS, ctx(metric, greedy_max_corr=0.97))
    assert weights[1] == 0.0 and weights[0] == weights[2] == 0.5


def twins() -> tuple[np.ndarray, np.ndarray]:
    """Two models equal to GOOD on 95% of rows; on 2.5% each is confidently right where the other is
    narrowly wrong, so their mean beats both, yet they are highly correlated."""
    rows = np.random.default_rng(9).permutation(N)
    first, second = rows[:15], rows[15:30]
    right = np.eye(C)[TARGETS] * 0.8 + 0.1
    narrowly_wrong = np.roll(np.eye(C)[TARGETS], 1, axis=1) * 0.15 + np.eye(C)[TARGETS] * 0.1 + 0.25
    a, b = GOOD.copy(), GOOD.copy()
    a[first], b[first] = right[first], narrowly_wrong[first]
    a[second], b[second] = narrowly_wrong[second], right[second]
    return a, b


def test_greedy_skips_a_candidate_correlated_above_the_threshold_even_when_it_would_help():
    a, b = twins()
    preds = np.stack([a, b])
    r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert 0.9 < r < 0.99
    assert score("accuracy", TARGETS, (a + b) / 2) > max(score("accuracy", TARGETS, p) for p in preds)
    assert fit_greedy(preds, TARGETS, ctx(greedy_max_corr=0.99)).tolist() == [0.5, 0.5]
    assert sorted(fit_greedy(preds, TARGETS, ctx(greedy_max_corr=0.9)).tolist()) == [0.0, 1.0]


def test_greedy_stops_when_no_model_raises_the_score():
    harmful = np.roll(np.eye(C)[TARGETS], 1, axis=1) * 0.9 + 0.05  # confidently wrong everywhere
    weights = fit_greedy(np.stack([GOOD, harmful]), TARGETS, ctx(greedy_max_corr=1.0))
    assert weights.tolist() == [1.0, 0.0]


def test_caruana_bagging_averages_bags_over_random_pools():
    preds = np.stack([GOOD, DIVERSE, WEAK, model(1.2, 4)])
    weights = fit_caruana(preds, TARGETS, ctx(caruana_bags=6, caruana_bag_fraction=0.5, caruana_iters=20))
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0)
    assert (weights > 0).sum() >= 3  # different bags, different members
    again = fit_caruana(preds, TARGETS, ctx(caruana_bags=6, caruana_bag_fraction=0.5, caruana_iters=20))
    np.testing.assert_array_equal(weights, again)  # seeded


def test_caruana_weights_are_pick_counts_at_the_best_step():
    weights = hill_climb(class_slabs(np.stack([GOOD, DIVERSE, WEAK])), TARGETS, "accuracy", iters=30, init=1)
    assert weights.sum() == pytest.approx(1.0)
    # Counts over a whole number of picks (1 initial + at most 30 steps).
    assert any(np.allclose(weights * picks, np.round(weights * picks)) for picks in range(1, 32))
    blend = score("accuracy", TARGETS, apply_weights(np.stack([GOOD, DIVERSE, WEAK]), weights))
    assert blend >= score("accuracy", TARGETS, DIVERSE)  # never below its start, the best single model


def test_caruana_climbs_to_hand_computed_weights_and_keeps_the_best_step_not_the_last():
    # Three rows, all of class 1. A is right on rows 0-1 (0.6), wrong on row 2; B is wrong on rows 0-1
    # (0.35) and sure of row 2 (1.0). Accuracy: A 2/3, B 1/3, so the climb starts from A.
    a = np.array([[0.4, 0.6], [0.4, 0.6], [0.6, 0.4]])
    b = np.array([[0.65, 0.35], [0.65, 0.35], [0.0, 1.0]])
    # Step 1: 2A -> 2/3, A+B -> rows 0-1 (1.05, 0.95) wrong -> 1/3: adds A (no gain, best stays A alone).
    # Step 2: 3A -> 2/3, 2A+B -> rows 0-1 (1.45, 1.55), row 2 (1.2, 1.8) right -> 1: adds B, best (2, 1).
    # Step 3: 3A+B -> 1 (ties the best, not above), 2A+2B -> 1/3: adds A, ending at (3, 1).
    slabs = class_slabs(np.stack([a, b]))
    targets = np.ones(3, dtype=np.int64)
    np.testing.assert_allclose(hill_climb(slabs, targets, "accuracy", iters=1, init=1), [1.0, 0.0])
    np.testing.assert_allclose(hill_climb(slabs, targets, "accuracy", iters=3, init=1), [2 / 3, 1 / 3])


HARMFUL = np.roll(model(0.3, 5), 1, axis=1)  # a confident model that names the wrong class


@pytest.mark.parametrize("optimize_on", ["log_loss", "metric"])
@pytest.mark.parametrize("seed", range(4))
def test_optimised_weights_are_never_negative_and_sum_to_one(optimize_on, seed):
    # A confidently wrong member is the one an unconstrained fit would give a negative weight.
    pool = [GOOD, DIVERSE, WEAK, HARMFUL, 1.0 - GOOD / 2 - 0.25]
    rng = np.random.default_rng(seed)
    preds = np.stack([pool[i] / pool[i].sum(axis=1, keepdims=True) for i in rng.permutation(len(pool))])
    weights = fit_optimize(preds, TARGETS, ctx(optimize_on=optimize_on))
    assert (weights >= 0).all(), weights
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)


def test_optimised_log_loss_weights_beat_the_plain_mean_and_shun_the_harmful_model():
    preds = np.stack([GOOD, DIVERSE, HARMFUL])
    weights = fit_optimize(preds, TARGETS, ctx("log_loss"))
    assert weights[2] < 0.01
    assert score("log_loss", TARGETS, apply_weights(preds, weights)) < score("log_loss", TARGETS, preds.mean(axis=0)) - 0.05


@pytest.mark.slow  # over 2 s on a quiet 2-core machine
def test_nested_cv_is_lower_than_in_sample_on_a_deliberately_overfit_blend():
    # 40 models of pure noise over 200 rows: any weights fitted to them fit the noise.
    rng = np.random.default_rng(1)
    targets = rng.integers(0, C, 200)
    noise = rng.dirichlet(np.ones(C), size=(40, 200))
    for method in ["caruana", "optimize"]:
        result = evaluate_method(method, noise, targets, np.arange(200) % 5, ctx(optimize_on="metric"))
        assert result.in_sample > 0.40, method   # chance is 1/3: fitted to the noise
        assert result.nested < result.in_sample - 0.08, method
        assert len(result.fold_weights) == 5


def test_nested_cv_equals_in_sample_for_a_method_that_fits_nothing():
    result = evaluate_method("mean", np.stack([GOOD, DIVERSE, WEAK]), TARGETS, FOLDS, ctx())
    assert result.nested == pytest.approx(result.in_sample)
    assert result.in_sample == pytest.approx(score("accuracy", TARGETS, (GOOD + DIVERSE + WEAK) / 3))


# Nested CV without the held-out fold's rows, and pick_best by nested CV: test_blend_nested.py.


def test_rank_scale_scales_each_class_column_to_zero_one():
    preds = np.array([[[0.1, 0.9], [0.7, 0.3], [0.4, 0.6]]])
    np.testing.assert_allclose(rank_scale(preds, axis=1)[0], [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])


def test_rank_blend_is_invariant_to_a_monotone_rescaling_of_a_member():
    a, b = GOOD, DIVERSE
    weights = np.array([0.5, 0.5])
    np.testing.assert_allclose(apply_weights(np.stack([a, b]), weights, "rank"),
                               apply_weights(np.stack([a ** 3, b]), weights, "rank"))


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "f1_micro", "qwk", "log_loss", "roc_auc"])
def test_addition_scores_are_the_exact_metric_of_each_sum_including_settled_rows(metric):
    # Exactness of the row-settling shortcut: compare with the plain metric of every candidate sum,
    # from an empty sum (nothing settled) to a large one (most rows settled).
    preds = np.stack([GOOD, DIVERSE, WEAK, GOOD.copy(), model(0.5, 6)])
    slabs = class_slabs(preds)
    scorer = AdditionScorer(slabs, TARGETS, metric)
    sign = -1.0 if metric == "log_loss" else 1.0
    for counts in ([0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [3, 2, 0, 1, 4], [20, 15, 1, 0, 9]):
        total = np.tensordot(slabs, np.array(counts, dtype=np.float32), axes=([2], [0]))
        expected = [score(metric, TARGETS, (total + slabs[:, :, m]).T / (sum(counts) + 1)) for m in range(len(preds))]
        np.testing.assert_allclose(sign * scorer.scores(total), expected, rtol=1e-5, err_msg=str(counts))


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "qwk"])
@pytest.mark.parametrize("pair_bounds", [True, False])
def test_chunked_addition_scores_equal_the_plain_per_model_scores_on_ties(metric, pair_bounds, monkeypatch):
    # Small chunks (16 rows) so every target group spans many chunks, more than the 255 a uint8
    # counter holds; integer predictions so that ties, which go to the first class, are everywhere.
    monkeypatch.setattr(AdditionScorer, "chunk_values", 16)
    if not pair_bounds:
        monkeypatch.setattr(AdditionScorer, "pair_bounds_limit", 0)
    rng = np.random.default_rng(3)
    n_rows, n_classes, n_models = 15_000, 3, 8
    preds = rng.integers(0, 3, size=(n_models, n_rows, n_classes)).astype(np.float32)
    targets = rng.integers(0, n_classes, n_rows)
    slabs = class_slabs(preds)
    scorer = AdditionScorer(slabs, targets, metric)
    for counts, members in [([0] * 8, None), ([1, 0, 0, 2, 0, 0, 0, 0], None), ([3, 1, 4, 1, 5, 0, 2, 6], [6, 1, 4])]:
        total = np.tensordot(slabs, np.array(counts, dtype=np.float32), axes=([2], [0]))
        ids = list(range(n_models)) if members is None else members
        blends = np.stack([total + slabs[:, :, m] for m in ids])  # (members, C, N), unchunked
        got = scorer.scores(total, members)
        np.testing.assert_array_equal(got, score_many(metric, targets, blends), err_msg=str(counts))
        np.testing.assert_allclose(got, [score(metric, targets, b.T) for b in blends], rtol=1e-9, atol=1e-12)
        # The data make the test bite: candidates differ, and ties decide many rows (last-max rule differs).
        assert len(set(got.tolist())) > 1
        last = confusion_score(metric, confusions(targets, n_classes - 1 - blends[:, ::-1].argmax(axis=1), n_classes))
        assert not np.array_equal(got, last)


def test_compare_offers_the_rank_blend_only_to_a_metric_that_reads_ranks():
    from medal.blend.methods import methods_for
    from medal.core.metrics import METRICS

    assert methods_for("roc_auc") == list(METHODS)
    for metric in set(METRICS) - {"roc_auc"}:
        assert methods_for(metric) == ["mean", "greedy", "caruana", "optimize"], metric


def test_every_method_but_rank_blends_probabilities_into_probabilities():
    # Why compare may offer them to any metric: non-negative weights summing to 1 keep rows distributions.
    from medal.blend.methods import methods_for

    preds = np.stack([GOOD, DIVERSE, WEAK])
    for name in methods_for("accuracy"):
        result = evaluate_method(name, preds, TARGETS, FOLDS, ctx())
        np.testing.assert_allclose(apply_weights(preds, result.weights, METHODS[name].space).sum(axis=1), 1.0,
                                   err_msg=name)
    ranked = apply_weights(preds, np.full(3, 1 / 3), METHODS["rank"].space).sum(axis=1)
    # The reported bug: each rank column averages 1/2, so rank rows sum to C/2 on average, not 1.
    assert ranked.mean() == pytest.approx(C / 2) and np.abs(ranked - 1.0).min() > 0.1
