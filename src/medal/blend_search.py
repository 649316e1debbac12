"""Blend searches that add one model at a time: greedy forward selection and Caruana ensemble selection.

Each step scores "the running sum plus model m" for every candidate m at once.
`AdditionScorer` does that without a Python loop over rows. For metrics that
read only the argmax it also skips the rows whose answer no single addition can
change: row i keeps its top class a whatever model is added when a's lead over
the runner-up exceeds the most any one model favours another class over a on
that row. Rows where every model agrees settle at once, and as the sum grows
most of the rest settle too, so later steps touch only the few open rows. The
scores are exact, not approximated.

Predictions are held as (C, N, M) float32: class slabs of rows x models, so the
open rows of a step are gathered as contiguous runs of M values.
"""
from __future__ import annotations

import numpy as np

from medal.metrics import (
    ARGMAX_METRICS,
    argmax_classes,
    confusion_score,
    confusions,
    higher_is_better,
    score_many,
)


def class_slabs(preds: np.ndarray) -> np.ndarray:
    """(M, N, C) member predictions as contiguous (C, N, M) float32, the layout the searches scan."""
    return np.ascontiguousarray(preds.transpose(2, 1, 0), dtype=np.float32)


def _settle_bounds(slabs: np.ndarray) -> np.ndarray:
    """(C, N): for top class a of row i, the most one model can raise another class above a there
    (max over models of max_{c != a} P[c] - P[a]); a lead above it cannot be overturned by one addition."""
    n_classes = slabs.shape[0]
    bounds = np.empty(slabs.shape[:2], dtype=np.float32)
    for a in range(n_classes):
        others = np.max(slabs[[c for c in range(n_classes) if c != a]], axis=0)  # (N, M)
        bounds[a] = (others - slabs[a]).max(axis=1)
    return bounds


def _top_two(total: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For (C, N) sums: each row's top class (first on ties), its value, and its lead over the runner-up.
    A loop over the few classes on contiguous rows beats np.partition/argmax over axis 0."""
    best = total[0].copy()
    second = np.full_like(best, -np.inf)
    top = np.zeros(best.shape, dtype=np.int64)
    for c in range(1, len(total)):
        np.maximum(second, np.minimum(best, total[c]), out=second)
        np.copyto(top, c, where=total[c] > best)
        np.maximum(best, total[c], out=best)
    return top, best, best - second


class AdditionScorer:
    """Signed (larger is better) scores of `total + model m` for candidate models m."""

    def __init__(self, slabs: np.ndarray, targets: np.ndarray, metric: str) -> None:
        self.slabs, self.targets, self.metric = slabs, targets, metric
        self.sign = 1.0 if higher_is_better(metric) else -1.0
        self.n_classes, self.n_rows, self.n_models = slabs.shape
        self.rows = np.arange(self.n_rows)
        self._models: dict[int, np.ndarray] = {}
        if metric == "log_loss":
            self.picked = slabs[targets, self.rows]  # (N, M): each model's target-class value
            self.sums = slabs.sum(axis=0)             # (N, M): each model's row sums
            self.distributions = bool(np.abs(self.sums - 1.0).max() < 1e-5)  # probabilities, not ranks
        elif metric in ARGMAX_METRICS:
            self.bounds = _settle_bounds(slabs)

    def model(self, m: int) -> np.ndarray:
        """Model m's (C, N) predictions, copied once to contiguous memory (a strided read is slow)."""
        if m not in self._models:
            self._models[m] = np.ascontiguousarray(self.slabs[:, :, m])
        return self._models[m]

    def scores(self, total: np.ndarray, members: list[int] | None = None) -> np.ndarray:
        """Scores of total (C x N) + model m for each m in `members` (default every model) -> (len,)."""
        pick = slice(None) if members is None else np.asarray(members)
        if self.metric == "log_loss":
            return self.sign * self._log_losses(total, pick)
        if self.metric not in ARGMAX_METRICS:
            blends = (self.slabs[:, :, pick] + total[:, :, None]).transpose(2, 0, 1)
            return self.sign * score_many(self.metric, self.targets, blends)
        return self.sign * self._argmax_scores(total, pick)

    def _log_losses(self, total: np.ndarray, pick) -> np.ndarray:
        # In place on (N, members) buffers: this runs once per step over every row and model.
        q = np.add(self.picked[:, pick], total[self.targets, self.rows][:, None])
        if self.distributions:
            # Rows sum to 1, so total + model m sums to (models in total + 1) on every row: one scalar.
            count = float(total[:, 0].sum()) + 1.0
            np.maximum(q, 1e-15 * count, out=q)
            return np.log(count) - np.log(q, out=q).mean(axis=0)
        np.divide(q, np.add(self.sums[:, pick], total.sum(axis=0)[:, None]), out=q)
        np.maximum(q, 1e-15, out=q)
        return -np.log(q, out=q).mean(axis=0)

    def _argmax_scores(self, total: np.ndarray, pick) -> np.ndarray:
        top, top_value, lead = _top_two(total)
        # The margin keeps float32 rounding from settling a row that is really a near-tie.
        is_open = lead <= self.bounds[top, self.rows] + 1e-4 * (1.0 + np.abs(top_value))
        open_rows = np.flatnonzero(is_open)
        codes = self.targets * self.n_classes + top
        base = np.bincount(codes, weights=~is_open, minlength=self.n_classes ** 2).reshape(self.n_classes, self.n_classes)
        n_members = self.n_models if isinstance(pick, slice) else len(pick)
        if len(open_rows) == 0:
            return confusion_score(self.metric, np.broadcast_to(base, (n_members,) + base.shape))
        if len(open_rows) == self.n_rows and not total.any():
            blends = self.slabs if isinstance(pick, slice) else self.slabs[:, :, pick]  # the models alone
        else:
            blends = self.slabs[:, open_rows] if len(open_rows) < self.n_rows else self.slabs.copy()
            if not isinstance(pick, slice):
                blends = blends[:, :, pick]
            blends += total[:, open_rows, None]            # (C, open, members)
        predicted = argmax_classes(blends, axis=0).T       # (members, open)
        return confusion_score(self.metric, confusions(self.targets[open_rows], predicted, self.n_classes) + base[None])

    def score_total(self, total: np.ndarray) -> float:
        """Signed metric of `total` itself."""
        return float(self.sign * score_many(self.metric, self.targets, total[None])[0])


def greedy_select(preds: np.ndarray, targets: np.ndarray, metric: str, max_corr: float, corr: np.ndarray) -> list[int]:
    """Forward selection of an equal-weight subset: start from the best model, then add the model that
    raises the mean blend most, skipping any whose correlation with a chosen one is above `max_corr`;
    stop when no allowed model raises it."""
    scorer = AdditionScorer(class_slabs(preds), targets, metric)
    total = np.zeros((scorer.n_classes, scorer.n_rows), dtype=np.float32)
    singles = scorer.scores(total)
    chosen = [int(np.argmax(singles))]
    total += scorer.model(chosen[0])
    best = singles[chosen[0]]
    while True:
        allowed = [m for m in range(len(preds)) if m not in chosen and corr[m, chosen].max() <= max_corr]
        if not allowed:
            break
        trials = scorer.scores(total, allowed)
        if trials.max() <= best:
            break
        pick = allowed[int(np.argmax(trials))]
        chosen.append(pick)
        total += scorer.model(pick)
        best = trials.max()
    return chosen


def hill_climb(slabs: np.ndarray, targets: np.ndarray, metric: str, iters: int, init: int) -> np.ndarray:
    """Caruana et al. (2004) ensemble selection over `slabs` (C x N x M float32): start from the best
    `init` models, then `iters` times add (with replacement) the model that helps most, ties to the lower
    index. Returns M weights: the pick counts at the best-scoring step, summing to 1."""
    scorer = AdditionScorer(slabs, targets, metric)
    singles = scorer.scores(np.zeros(slabs.shape[:2], dtype=np.float32))
    counts = np.zeros(scorer.n_models, dtype=np.int64)
    counts[np.argsort(-singles, kind="stable")[:init]] = 1
    total = np.tensordot(slabs, counts.astype(np.float32), axes=([2], [0]))
    best_score, best_counts = scorer.score_total(total), counts.copy()
    for _ in range(iters):
        trials = scorer.scores(total)
        pick = int(np.argmax(trials))
        counts[pick] += 1
        total += scorer.model(pick)
        if trials[pick] > best_score:
            best_score, best_counts = trials[pick], counts.copy()
    return best_counts / best_counts.sum()
