"""Competition metrics by name, on class-probability arrays, with their direction.

`score` is the exact metric (scikit-learn). `score_many` scores many candidate
blends at once, vectorised over candidates and rows, for the blend searches
that try every model at every step (Caruana, greedy).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    log_loss,
    roc_auc_score,
)

Metric = Callable[[np.ndarray, np.ndarray], float]


def _roc_auc(targets: np.ndarray, probs: np.ndarray) -> float:
    """Binary: AUC of the second column. Multiclass: one-vs-rest macro AUC, the mean of each class
    column's binary AUC (scikit-learn's ovr, without its demand that rows sum to 1, so rank blends score)."""
    if probs.shape[1] == 2:
        return float(roc_auc_score(targets, probs[:, 1]))
    present = [c for c in range(probs.shape[1]) if 0 < (targets == c).sum() < len(targets)]
    if not present:
        raise ValueError("roc_auc needs at least two classes among the targets")
    return float(np.mean([roc_auc_score(targets == c, probs[:, c]) for c in present]))


def _log_loss(targets: np.ndarray, probs: np.ndarray) -> float:
    # Rows are renormalised to sum to 1 first, as Kaggle does: blends of ranks or maxima are not
    # exact distributions, and scikit-learn only warns about that.
    probs = np.clip(probs, 1e-15, None)
    return float(log_loss(targets, probs / probs.sum(axis=1, keepdims=True), labels=np.arange(probs.shape[1])))


def _qwk(targets: np.ndarray, probs: np.ndarray) -> float:
    # Quadratic weighted kappa for ordinal classes (class index order = sorted label order).
    value = cohen_kappa_score(targets, probs.argmax(1), labels=np.arange(probs.shape[1]), weights="quadratic")
    return float(np.nan_to_num(value, nan=0.0))  # nan when every prediction and target is one class


# name -> (function of (targets as class indices, probs NxC), higher is better)
METRICS: dict[str, tuple[Metric, bool]] = {
    "accuracy": (lambda t, p: float(accuracy_score(t, p.argmax(1))), True),
    "f1_macro": (lambda t, p: float(f1_score(t, p.argmax(1), average="macro", zero_division=0)), True),
    "f1_micro": (lambda t, p: float(f1_score(t, p.argmax(1), average="micro")), True),
    "log_loss": (_log_loss, False),
    "roc_auc": (_roc_auc, True),
    "qwk": (_qwk, True),
}


def score(name: str, targets: np.ndarray, probs: np.ndarray) -> float:
    return METRICS[name][0](np.asarray(targets), np.asarray(probs))


def higher_is_better(name: str) -> bool:
    return METRICS[name][1]


# Metrics that read only the order of the values within each class column, so per-class ranks or any
# scores serve as well as probabilities. Every other metric reads a row as a probability distribution.
SCORE_METRICS = ("roc_auc",)


def reads_scores(name: str) -> bool:
    """True when `name` reads per-class ranks or scores (roc_auc), False when it needs probabilities."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {list(METRICS)}")
    return name in SCORE_METRICS


def is_better(name: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new > old if METRICS[name][1] else new < old


# Metrics that read only the argmax class: scored in batches from confusion matrices.
ARGMAX_METRICS = ("accuracy", "f1_micro", "f1_macro", "qwk")


def score_many(name: str, targets: np.ndarray, blends: np.ndarray) -> np.ndarray:
    """Metric of each candidate in `blends` (B x C x N: candidate, class, row; any positive scale per
    candidate) -> (B,). Vectorised over rows for every metric but roc_auc, which loops over candidates."""
    if name == "log_loss":
        rows = np.arange(blends.shape[2])
        picked = np.clip(blends[:, targets, rows] / blends.sum(axis=1), 1e-15, None)
        return -np.mean(np.log(picked), axis=1)
    if name in ARGMAX_METRICS:
        return confusion_score(name, confusions(targets, argmax_classes(blends), blends.shape[1]))
    return np.array([score(name, targets, b.T) for b in blends])


def argmax_classes(blends: np.ndarray, axis: int = 1) -> np.ndarray:
    """argmax over the class `axis`, first maximum on ties like numpy. A loop over the few classes on
    contiguous slabs is several times faster than np.argmax over a non-last axis."""
    n_classes = blends.shape[axis]
    lead = (slice(None),) * axis  # index a class slab as a view, not a copy
    best = blends[lead + (0,)].copy()
    dtype = np.int8 if n_classes <= 127 else np.int32  # a small index halves the memory traffic
    index = np.zeros(best.shape, dtype=dtype)
    higher = np.empty(best.shape, dtype=bool)
    for c in range(1, n_classes):
        slab = blends[lead + (c,)]
        np.greater(slab, best, out=higher)
        np.maximum(best, slab, out=best)
        np.copyto(index, dtype(c), where=higher)
    return index


def confusions(targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(B, C, C) confusion matrices (true, predicted) of (B, N) predictions, in one bincount."""
    n_blends = predicted.shape[0]
    codes = (np.arange(n_blends, dtype=np.int64)[:, None] * n_classes + targets[None, :]) * n_classes + predicted
    return np.bincount(codes.ravel(), minlength=n_blends * n_classes * n_classes).reshape(n_blends, n_classes, n_classes)


def confusion_score(name: str, confusion: np.ndarray) -> np.ndarray:
    """An ARGMAX_METRICS metric of each (C x C) confusion matrix in a (B, C, C) stack."""
    if name in ("accuracy", "f1_micro"):
        return np.trace(confusion, axis1=1, axis2=2) / confusion.sum(axis=(1, 2))
    if name == "f1_macro":
        tp = np.diagonal(confusion, axis1=1, axis2=2)
        denom = confusion.sum(axis=1) + confusion.sum(axis=2)
        present = denom > 0  # scikit-learn averages over the classes seen in targets or predictions
        f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=present)
        return f1.sum(axis=1) / present.sum(axis=1)
    if name == "qwk":
        return _qwk_from_confusion(confusion)
    raise ValueError(f"metric {name!r} is not computed from a confusion matrix")


def _qwk_from_confusion(confusion: np.ndarray) -> np.ndarray:
    n_classes = confusion.shape[1]
    i, j = np.meshgrid(np.arange(n_classes), np.arange(n_classes), indexing="ij")
    weights = (i - j) ** 2
    total = confusion.sum(axis=(1, 2), keepdims=True)
    expected = confusion.sum(axis=2, keepdims=True) * confusion.sum(axis=1, keepdims=True) / total
    observed = (weights * confusion).sum(axis=(1, 2))
    chance = (weights * expected).sum(axis=(1, 2))
    return np.where(chance > 0, 1.0 - observed / np.where(chance > 0, chance, 1.0), 0.0)
