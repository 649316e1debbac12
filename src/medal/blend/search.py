"""Blend searches that add one model at a time: greedy forward selection and Caruana ensemble selection.

Each step scores "the running sum plus model m" for every candidate m at once.
`AdditionScorer` does that without a Python loop over rows. For metrics that
read only the argmax it also skips what no single addition can change: class c
contends on row i only if some one model favours c over the sum's top class a
there by more than a's lead over c (a bound precomputed per class pair and row).
A row with no other contender settles on a (and for accuracy so does a row whose
target does not contend: every candidate gets it wrong). The rest are scored over
their contenders alone, in class order, so the argmax and its tie rule are those
over all classes. As the sum grows most rows settle and the others keep two or
three contenders, so later steps read a fraction of the predictions. The scores
are exact, not approximated.

Predictions are held as (C, N, M) float32: class slabs of rows x models, so the
(class, row) pairs a step needs are gathered as contiguous runs of M values. The
argmax metrics keep a copy with the rows grouped by target class, and scan the
rows of each (target, number of contenders) group in chunks of about a thousand
rows x M models, in buffers that stay in the L2 cache and are reused by every
chunk and step. Within one target a chunk needs only per-model counts of each
predicted class, kept in uint8 counters, not a (model, row) code per value.
"""
from __future__ import annotations

import numpy as np

from medal.core.metrics import (
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


def _settle_bounds(slabs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(C, N): for top class a of row i, the most one model can raise another class above a there
    (max over models of max_{c != a} P[c] - P[a]); a lead above it cannot be overturned by one addition.
    Computed over row chunks, so the temporaries stay small."""
    n_classes, n_rows, _ = slabs.shape
    bounds = np.empty((n_classes, n_rows), dtype=np.float32)
    for start in range(0, n_rows, chunk):
        part = slabs[:, start:start + chunk]
        for a in range(n_classes):
            others = np.max(part[[c for c in range(n_classes) if c != a]], axis=0)  # (rows, M)
            bounds[a, start:start + chunk] = (others - part[a]).max(axis=1)
    return bounds


def _pair_bounds(slabs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(C, C, N): [c, a, i] is the most one model favours class c over class a on row i, the max over
    models of P[c] - P[a] (0 for c == a). If total[a] - total[c] exceeds it, no single addition lifts
    c to a, so c cannot be the argmax of total + any model on that row. Computed over row chunks."""
    n_classes, n_rows, _ = slabs.shape
    bounds = np.zeros((n_classes, n_classes, n_rows), dtype=np.float32)
    for start in range(0, n_rows, chunk):
        part, end = slabs[:, start:start + chunk], start + chunk
        for a in range(n_classes):
            for c in range(a + 1, n_classes):
                diff = part[c] - part[a]  # (rows, M); -diff is exactly part[a] - part[c]
                bounds[c, a, start:end] = diff.max(axis=1)
                bounds[a, c, start:end] = -diff.min(axis=1)
    return bounds


def _top_class(total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (C, N) sums: each row's top class (first on ties, like np.argmax) and its value. A loop over
    the few classes on contiguous rows beats np.argmax over axis 0."""
    best = total[0].copy()
    top = np.zeros(best.shape, dtype=np.int64)
    higher = np.empty(best.shape, dtype=bool)
    for c in range(1, len(total)):
        np.greater(total[c], best, out=higher)
        np.maximum(best, total[c], out=best)
        np.maximum(top, higher * c, out=top)  # c only grows, so "c where higher" is a maximum
    return top, best


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
            # Rows grouped by target class (stable): a chunk inside one group shares its target.
            self.order = np.argsort(targets, kind="stable")
            self.grouped = np.take(slabs, self.order, axis=1)  # (C, N, M) copy, C-contiguous (slabs[:, order] is not)
            self.grouped_targets = targets[self.order]
            self.group_ends = np.searchsorted(self.grouped_targets, np.arange(self.n_classes + 1))
            if self.n_classes ** 2 * self.n_rows <= self.pair_bounds_limit:
                self.bounds = _pair_bounds(self.grouped)              # (C, C, N): per class pair
            else:  # many classes: one bound per top class, against every other class at once
                self.bounds = _settle_bounds(self.grouped)[None]  # (1, C, N)
            self._buffers: dict[int, tuple[np.ndarray, ...]] = {}

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

    # (row, model) values per chunk: its float32 buffers (256 KiB each) stay in the L2 cache.
    chunk_values = 1 << 16
    # Class-pair bounds take C x C x N floats; above this many, one bound per row and top class.
    pair_bounds_limit = 1 << 26

    def _argmax_scores(self, total: np.ndarray, pick) -> np.ndarray:
        n_classes, n_rows = self.n_classes, self.n_rows
        total = np.take(total, self.order, axis=1)  # rows grouped by target, like self.grouped
        top, top_value = _top_class(total)
        # Class c contends on row i when some single addition could lift it to the top class a there;
        # the others stay strictly below a for every model, so the argmax is over the contenders alone.
        # The margin keeps float32 rounding from ruling out a class that is really a near-tie.
        margin = 1e-4 * (1.0 + np.abs(top_value))
        at = top * n_rows + self.rows  # (top class, row) in a (C, N) bound slab
        lead, reach = np.empty_like(top_value), np.empty_like(top_value)
        contender = np.empty((n_classes, n_rows), dtype=bool)
        for c in range(n_classes):
            np.subtract(top_value, total[c], out=lead)
            np.take(self.bounds[min(c, len(self.bounds) - 1)].reshape(-1), at, out=reach, mode="clip")
            np.less_equal(lead, np.add(reach, margin, out=reach), out=contender[c])
        contender[top, self.rows] = True
        n_contenders = contender.sum(axis=0, dtype=np.int16)
        # Rows with one contender settle on their top class. For accuracy so do rows whose target cannot
        # win: every member gets them wrong, and the top class stands for "wrong" in the counts.
        diagonal = self.metric in ("accuracy", "f1_micro") and n_classes > 1
        active = n_contenders > 1
        if diagonal:
            active &= contender[self.grouped_targets, self.rows]
        codes = self.grouped_targets * n_classes + top
        base = np.bincount(codes, weights=~active, minlength=n_classes ** 2).reshape(n_classes, n_classes)
        n_members = self.n_models if isinstance(pick, slice) else len(pick)
        confusion = np.broadcast_to(base, (n_members, n_classes, n_classes)).copy()
        active = np.flatnonzero(active)
        if len(active) * n_members <= self.chunk_values:  # one chunk's worth: all at once, fewer calls
            blends = self.grouped[:, active] if isinstance(pick, slice) else self.grouped[:, active][:, :, pick]
            blends += total[:, active, None]                               # (C, active, members) copy
            predicted = argmax_classes(blends, axis=0).T                    # (members, active)
            confusion += confusions(self.grouped_targets[active], predicted, n_classes)
        else:
            self._count_active(total, contender, n_contenders, active, pick, diagonal, confusion)
        return confusion_score(self.metric, confusion)

    def _chunk_buffers(self, n_members: int) -> tuple[np.ndarray, ...]:
        """Per-chunk work buffers, allocated once per member count and reused by every chunk and step."""
        if n_members not in self._buffers:
            rows = max(16, self.chunk_values // max(n_members, 1))
            shape = (rows, n_members)
            index = np.int8 if self.n_classes <= 127 else np.int32
            self._buffers[n_members] = (
                np.empty(shape, np.float32), np.empty(shape, np.float32),  # best, value
                np.empty(shape, bool), np.empty(shape, index), np.empty(shape, index),  # higher, index, step
                np.zeros((self.n_classes,) + shape, np.uint8),  # per predicted class counters
            )
        return self._buffers[n_members]

    def _count_active(self, total: np.ndarray, contender: np.ndarray, n_contenders: np.ndarray,
                      active: np.ndarray, pick, diagonal: bool, confusion: np.ndarray) -> None:
        """Add each member's (target, predicted) counts over the `active` rows to `confusion` (members,
        C, C); with `diagonal`, only the correct ones exactly (the rest under another class)."""
        n_classes, n_rows = self.n_classes, self.n_rows
        n_members = confusion.shape[0]
        best_all, value_all, higher_all, index_all, step_all, counters = self._chunk_buffers(n_members)
        chunk_rows = len(best_all)
        flat_slabs = self.grouped.reshape(n_classes * n_rows, self.n_models)
        flat_total = total.reshape(-1)
        # The active rows by (target, number of contenders); rows are grouped by target already.
        keys = self.grouped_targets[active] * (n_classes + 1) + n_contenders[active]
        if n_classes * (n_classes + 1) < 1 << 16:
            keys = keys.astype(np.uint16)  # a radix sort
        active = active[np.argsort(keys, kind="stable")]
        sizes = np.bincount(keys, minlength=n_classes * (n_classes + 1)).reshape(n_classes, n_classes + 1)
        held = contender[:, active]                              # (C, active rows)
        # The contending classes of each row, ascending, and the position of class p among them (-1: none).
        classes = np.nonzero(np.ascontiguousarray(held.T))[1]  # nonzero of the strided .T is slow
        position = np.empty(held.shape, dtype=index_all.dtype)
        running = np.zeros(len(active), dtype=index_all.dtype)
        for c in range(n_classes):
            np.subtract(np.multiply(running + 1, held[c], out=position[c]), 1, out=position[c])
            running += held[c]
        row_at, class_at = 0, 0
        for t in range(n_classes):
            counted = (t,) if diagonal else range(1, n_classes)
            found = np.zeros((n_members, n_classes), dtype=np.int64)  # predicted-class counts
            n_found, n_chunks = 0, 0
            for k in range(2, n_classes + 1):
                n_group = int(sizes[t, k])
                if n_group == 0:
                    continue
                group = active[row_at:row_at + n_group]
                mine = classes[class_at:class_at + n_group * k].reshape(n_group, k)
                flat = np.ascontiguousarray(mine.T) * n_rows + group  # (k, rows): flat (class, row) index
                added = flat_total[flat]
                where = {p: position[p, row_at:row_at + n_group] for p in counted}
                row_at, class_at = row_at + n_group, class_at + n_group * k
                for start in range(0, n_group, chunk_rows):
                    end = min(start + chunk_rows, n_group)
                    n = end - start
                    best, value, higher = best_all[:n], value_all[:n], higher_all[:n]
                    index, step = index_all[:n], step_all[:n]
                    # Running argmax over the contenders, first maximum on ties like np.argmax. The index
                    # only grows with j, so "set it to j where higher" is a maximum with higher * j.
                    self._load(flat_slabs, flat[0, start:end], added[0, start:end], pick, best)
                    index.fill(0)
                    for j in range(1, k):
                        self._load(flat_slabs, flat[j, start:end], added[j, start:end], pick, value)
                        np.greater(value, best, out=higher)
                        if j < k - 1:
                            np.maximum(best, value, out=best)
                        np.multiply(higher, step.dtype.type(j), out=step)
                        np.maximum(index, step, out=index)
                    for p in counted:
                        np.equal(index, where[p][start:end, None], out=higher)
                        np.add(counters[p, :n], higher.view(np.uint8), out=counters[p, :n])
                    n_chunks += 1
                    n_found = max(n_found, n)
                    if n_chunks == 255:  # before a uint8 counter can wrap
                        self._flush(counters, counted, n_found, found)
                        n_found, n_chunks = 0, 0
            self._flush(counters, counted, n_found, found)
            n_active = int(sizes[t].sum())
            if diagonal:  # the rest, all wrong, go to one other class: the trace and the total are exact
                found[:, (t + 1) % n_classes] = n_active - found[:, t]
            else:
                found[:, 0] = n_active - found[:, 1:].sum(axis=1)
            confusion[:, t] += found

    @staticmethod
    def _flush(counters: np.ndarray, counted, n_rows: int, found: np.ndarray) -> None:
        """Move the uint8 per-row counters of the predicted classes `counted` into `found` and zero them."""
        if n_rows:
            for p in counted:
                found[:, p] += np.add.reduce(counters[p, :n_rows], axis=0, dtype=np.int64)
                counters[p, :n_rows] = 0

    @staticmethod
    def _load(flat_slabs: np.ndarray, flat_rows: np.ndarray, added: np.ndarray, pick, out: np.ndarray) -> None:
        """out = the (class, row) slab rows `flat_rows` of flat_slabs for members `pick`, plus `added`."""
        if isinstance(pick, slice):
            np.take(flat_slabs, flat_rows, axis=0, out=out, mode="clip")  # "raise" would buffer out
        else:
            out[...] = flat_slabs[flat_rows[:, None], pick]
        np.add(out, added[:, None], out=out)

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
