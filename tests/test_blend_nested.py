"""Nested CV of a blend method fits each fold's weights without that fold's rows, and compare picks the
method by nested CV. Planted OOF whose answers are worked out by hand in the comments."""
from __future__ import annotations

import numpy as np
import pytest

from medal.blend.methods import Evaluation, FitContext, evaluate_method, pick_best
from medal.core.config import BlendConfig

RIGHT, WRONG = [0.1, 0.9], [0.9, 0.1]  # every target below is class 1


def ctx(metric: str) -> FitContext:
    return FitContext(metric, BlendConfig(), seed=0)


def planted(b_rows_per_fold: list[int], a_rows_per_fold: list[int], right, wrong):
    """Two members over rows of target 1: model B right where A is wrong, and the other way round.
    Fold k holds b_rows_per_fold[k] rows where only B is right, then a_rows_per_fold[k] where only A is."""
    a, b, folds = [], [], []
    for k, (n_b, n_a) in enumerate(zip(b_rows_per_fold, a_rows_per_fold)):
        a += [wrong] * n_b + [right] * n_a
        b += [right] * n_b + [wrong] * n_a
        folds += [k] * (n_b + n_a)
    preds = np.array([a, b], dtype=np.float64)
    return preds, np.ones(len(folds), dtype=np.int64), np.array(folds)


# Greedy, accuracy. Fold 0: 5 rows where only B is right; folds 1 and 2: 3 rows each where only A is.
# The mean of a right and a wrong member is (0.5, 0.5), which argmax reads as class 0: wrong. So greedy
# never adds the second member and keeps whichever single member is right on more of its rows.
GREEDY = planted([5, 0, 0], [0, 3, 3], RIGHT, WRONG)


def test_greedy_nested_cv_fits_each_fold_on_the_other_folds_only():
    # Fold 0 held out: fit on folds 1+2, A right on 6/6 -> A; A on fold 0: 0/5.
    # Fold 1 held out: fit on folds 0+2, B right on 5, A on 3 -> B; B on fold 1: 0/3. Fold 2 likewise.
    # Nested accuracy 0/11. Fitting on every row (A 6/11 > B 5/11) would give A in every fold and 6/11.
    result = evaluate_method("greedy", *GREEDY, ctx("accuracy"))
    assert [w.tolist() for w in result.fold_weights] == [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    assert result.nested_per_fold == [0.0, 0.0, 0.0]
    assert result.nested == 0.0


def test_greedy_in_sample_fit_uses_every_row():
    # All 11 rows: A right on 6, B on 5 -> A alone, 6/11.
    result = evaluate_method("greedy", *GREEDY, ctx("accuracy"))
    assert result.weights.tolist() == [1.0, 0.0]
    assert result.in_sample == pytest.approx(6 / 11)


# Optimised weights, log loss. Rows where A gives the target probability 1 and B gives 0, or the reverse.
# With n_A and n_B such rows the loss -(n_A ln w + n_B ln(1 - w)) / n is least at w_A = n_A / (n_A + n_B).
# Fold 0: 1 B-row, 3 A-rows; folds 1 and 2: 1 B-row, 1 A-row each (8 rows: 5 A, 3 B).
OPTIMIZE = planted([1, 1, 1], [3, 1, 1], [0.0, 1.0], [1.0, 0.0])


def test_optimised_nested_weights_come_from_the_other_folds_rows():
    # Fold 0 held out: folds 1+2 hold 2 A-rows, 2 B-rows -> w_A = 1/2.
    # Fold 1 held out: folds 0+2 hold 4 A-rows, 2 B-rows -> w_A = 2/3; fold 2 likewise.
    # Every row's fitted weights on all 8 rows would be w_A = 5/8 in every fold.
    result = evaluate_method("optimize", *OPTIMIZE, ctx("log_loss"))
    np.testing.assert_allclose(np.array(result.fold_weights), [[1 / 2, 1 / 2], [2 / 3, 1 / 3], [2 / 3, 1 / 3]],
                               atol=1e-3)
    np.testing.assert_allclose(result.weights, [5 / 8, 3 / 8], atol=1e-3)


def test_optimised_nested_log_loss_scores_each_fold_with_weights_that_never_saw_it():
    # Fold 0's 4 rows each get 1/2 on the target: 4 ln 2. Folds 1 and 2: an A-row at 2/3 and a B-row at
    # 1/3: ln 1.5 + ln 3 each. Nested = (4 ln 2 + 2 (ln 1.5 + ln 3)) / 8 = 0.7226.
    # In-sample, w_A = 5/8: -(5 ln 0.625 + 3 ln 0.375) / 8 = 0.6616, which a leaky nested CV would equal.
    result = evaluate_method("optimize", *OPTIMIZE, ctx("log_loss"))
    assert result.nested == pytest.approx((4 * np.log(2) + 2 * (np.log(1.5) + np.log(3))) / 8, abs=1e-4)
    assert result.in_sample == pytest.approx(-(5 * np.log(0.625) + 3 * np.log(0.375)) / 8, abs=1e-4)
    assert result.nested_per_fold[0] == pytest.approx(np.log(2), abs=1e-4)


# pick_best on hand-made evaluations: the method order is that of METHODS, simplest first.

def evaluation(method: str, in_sample: float, nested: float) -> Evaluation:
    return Evaluation(method, np.array([0.5, 0.5]), in_sample, nested, [nested], [np.array([0.5, 0.5])])


def test_pick_best_takes_the_best_nested_cv_not_the_best_in_sample():
    # In-sample ranks caruana first (0.80); nested CV ranks greedy first (0.70).
    evals = [evaluation("mean", 0.66, 0.65), evaluation("greedy", 0.72, 0.70),
             evaluation("caruana", 0.80, 0.62), evaluation("optimize", 0.75, 0.68)]
    assert pick_best(evals, "accuracy").method == "greedy"


def test_pick_best_takes_the_lowest_nested_cv_for_a_loss():
    # Log loss: lowest in-sample is caruana (0.30), lowest nested is optimize (0.41).
    evals = [evaluation("mean", 0.50, 0.52), evaluation("greedy", 0.40, 0.45),
             evaluation("caruana", 0.30, 0.47), evaluation("optimize", 0.35, 0.41)]
    assert pick_best(evals, "log_loss").method == "optimize"


def test_pick_best_breaks_a_nested_cv_tie_toward_the_earlier_simpler_method():
    # mean and optimize tie at 0.68 nested; optimize is far ahead in-sample. The earlier, mean, wins.
    evals = [evaluation("mean", 0.69, 0.68), evaluation("greedy", 0.70, 0.60),
             evaluation("caruana", 0.90, 0.66), evaluation("optimize", 0.85, 0.68)]
    assert pick_best(evals, "accuracy").method == "mean"
    # For a loss too: greedy and caruana tie lowest at 0.40.
    evals = [evaluation("mean", 0.45, 0.45), evaluation("greedy", 0.41, 0.40),
             evaluation("caruana", 0.20, 0.40), evaluation("optimize", 0.30, 0.42)]
    assert pick_best(evals, "log_loss").method == "greedy"


def test_pick_best_on_planted_oof_prefers_the_plain_mean_over_an_overfit_greedy():
    # On GREEDY: the mean's weights (1/2, 1/2) tie every row, so it scores 0 in-sample and nested.
    # Greedy scores 6/11 in-sample but 0 nested (above). Nested CV ties at 0: the simpler mean wins,
    # where ranking by in-sample would take greedy.
    evals = [evaluate_method(m, *GREEDY, ctx("accuracy")) for m in ["mean", "greedy"]]
    assert [(e.in_sample, e.nested) for e in evals] == [(0.0, 0.0), (pytest.approx(6 / 11), 0.0)]
    assert pick_best(evals, "accuracy").method == "mean"
