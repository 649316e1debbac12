"""Which test rows become pseudo labels: by a confidence threshold, or the most confident share of each class.

Confidence is a row's highest probability and its pseudo label that class (the first class on a tie, as argmax).
Both rules return a boolean mask over the rows, in their order.
"""
from __future__ import annotations

import math

import numpy as np


def confidence(probs: np.ndarray) -> np.ndarray:
    """Each row's highest probability (N x C -> N)."""
    return probs.max(axis=1)


def select_threshold(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Rows whose highest probability is at least `threshold` (a row exactly at it is kept); 0 < threshold <= 1."""
    if not 0 < threshold <= 1:
        raise ValueError(f"--threshold {threshold} is outside (0, 1]: it is the lowest top-class probability kept")
    return confidence(probs) >= threshold


def select_top_fraction(probs: np.ndarray, fraction: float) -> np.ndarray:
    """Per predicted class, its ceil(fraction x n) most confident rows, n being the rows predicted as that class
    (so every predicted class keeps at least one). A tie in confidence at the cut keeps the earlier row."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--top-fraction {fraction} is outside (0, 1]: it is the share of each class's rows kept")
    predicted, conf = probs.argmax(axis=1), confidence(probs)
    keep = np.zeros(len(probs), dtype=bool)
    for c in np.unique(predicted):
        rows = np.flatnonzero(predicted == c)
        # Rounded first: 0.28 x 25 is 7.000000000000001 in floating point, which must keep 7 rows, not 8.
        count = math.ceil(round(fraction * len(rows), 9))
        keep[rows[np.argsort(-conf[rows], kind="stable")[:count]]] = True
    return keep
