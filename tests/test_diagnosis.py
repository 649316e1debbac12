"""The end-of-fold diagnosis and the hardest-OOF pick, on hand-made losses and probabilities."""
from __future__ import annotations

import numpy as np

from medal.images.gallery import hardest
from medal.train.diagnosis import diagnose


def test_a_train_loss_exactly_an_order_of_magnitude_below_is_overfitting():
    # 0.2 x 10 = 2.0: "a tenth of the validation loss or below" includes the tenth itself.
    assert diagnose(0.2, 2.0)["verdict"] == "overfitting"
    assert diagnose(0.21, 2.0)["verdict"] == "healthy"  # 2.1 > 2.0: just short of it


def test_equal_train_and_validation_losses_are_healthy_and_a_train_loss_above_is_underfitting():
    assert diagnose(0.9, 0.9)["verdict"] == "healthy"
    assert diagnose(0.91, 0.9)["verdict"] == "underfitting"


def test_a_custom_overfit_ratio_moves_the_boundary():
    # 0.5 x 4 = 2.0 <= 2.0 -> overfitting at ratio 4; at the default 10, 5.0 > 2.0 -> healthy.
    assert diagnose(0.5, 2.0, overfit_ratio=4)["verdict"] == "overfitting"
    assert diagnose(0.5, 2.0, overfit_ratio=4.1)["verdict"] == "healthy"
    assert diagnose(0.5, 2.0)["verdict"] == "healthy"


def test_the_diagnosis_reports_both_losses_and_their_ratio():
    assert diagnose(0.5, 2.0) == {"verdict": "healthy", "train_loss": 0.5, "valid_loss": 2.0, "ratio": 4.0,
                                  "advice": "the gap between train and validation loss is normal"}
    assert diagnose(0.0, 1.0)["ratio"] == float("inf")


# Targets and probabilities; the true-class probability p and the loss -ln p of each row:
# row 0: target 0, p 0.90 (0.105)   row 1: target 1, p 0.05 (3.00), confidently wrong
# row 2: target 2, p 0.50 (0.693)   row 3: target 1, p 0.30 (1.20)   row 4: target 0, p 0.30 (1.20)
TARGETS = np.array([0, 1, 2, 1, 0])
PROBS = np.array([[0.90, 0.05, 0.05],
                  [0.90, 0.05, 0.05],
                  [0.30, 0.20, 0.50],
                  [0.40, 0.30, 0.30],
                  [0.30, 0.40, 0.30]])


def test_hardest_rows_are_those_with_the_lowest_true_class_probability_hardest_first():
    # By loss: row 1 (3.00), rows 3 and 4 (1.20, a tie kept in row order), row 2 (0.69), row 0 (0.11).
    # Ranking by the top probability instead would put rows 3 and 4 (top 0.4) first and row 1 (0.9) last.
    assert hardest(TARGETS, PROBS, 5).tolist() == [1, 3, 4, 2, 0]
    assert hardest(TARGETS, PROBS, 2).tolist() == [1, 3]


def test_a_zero_true_class_probability_is_the_hardest_row_not_an_error():
    probs = PROBS.copy()
    probs[2] = [0.5, 0.5, 0.0]  # -ln 0 is clipped to -ln 1e-12 = 27.6, above row 1's 3.00
    assert hardest(TARGETS, probs, 3).tolist() == [2, 1, 3]


def test_a_model_with_no_loss_at_all_is_healthy_not_overfitting():
    # 0 x 10 <= 0 held, so a perfect fit (both losses 0) read as overfitting; a zero train loss against a
    # positive validation loss still is.
    assert diagnose(0.0, 0.0)["verdict"] == "healthy"
    assert diagnose(0.0, 0.5)["verdict"] == "overfitting"
