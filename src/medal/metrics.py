"""Competition metrics by name, on class-probability arrays."""
from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

Metric = Callable[[np.ndarray, np.ndarray], float]


def _roc_auc(targets: np.ndarray, probs: np.ndarray) -> float:
    if probs.shape[1] == 2:
        return float(roc_auc_score(targets, probs[:, 1]))
    return float(roc_auc_score(targets, probs, multi_class="ovr", labels=np.arange(probs.shape[1])))


# name -> (function of (targets as class indices, probs NxC), higher is better)
METRICS: dict[str, tuple[Metric, bool]] = {
    "accuracy": (lambda t, p: float(accuracy_score(t, p.argmax(1))), True),
    "f1_macro": (lambda t, p: float(f1_score(t, p.argmax(1), average="macro")), True),
    "f1_micro": (lambda t, p: float(f1_score(t, p.argmax(1), average="micro")), True),
    "log_loss": (lambda t, p: float(log_loss(t, p, labels=np.arange(p.shape[1]))), False),
    "roc_auc": (_roc_auc, True),
}


def score(name: str, targets: np.ndarray, probs: np.ndarray) -> float:
    return METRICS[name][0](np.asarray(targets), np.asarray(probs))


def is_better(name: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new > old if METRICS[name][1] else new < old
