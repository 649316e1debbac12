"""Blend methods by name: each fits non-negative member weights summing to 1 on OOF rows.

A method is a `fit` (member predictions M x N x C, targets -> M weights) and the
space its weights act in: probabilities, or per-class ranks ('rank'). The
searches that try every member at every step (greedy, Caruana) live in
blend_search and score all candidates at once, vectorised over rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax

from medal.blend.search import class_slabs, greedy_select, hill_climb
from medal.core.config import BlendConfig
from medal.core.metrics import higher_is_better, reads_scores, score
from medal.core.predictions import rank_scale


@dataclass(frozen=True)
class FitContext:
    metric: str
    settings: BlendConfig
    seed: int = 42


@dataclass(frozen=True)
class Method:
    fit: Callable[[np.ndarray, np.ndarray, FitContext], np.ndarray]
    space: str = "probs"  # 'rank': weights act on each member's per-class ranks


def apply_weights(preds: np.ndarray, weights: np.ndarray, space: str = "probs") -> np.ndarray:
    """The blend (N x C) of member predictions (M x N x C) under `weights` (M)."""
    values = rank_scale(preds, axis=1) if space == "rank" else preds
    return np.tensordot(np.asarray(weights, dtype=np.float64), values, axes=1)


def fit_uniform(preds: np.ndarray, targets: np.ndarray, ctx: FitContext) -> np.ndarray:
    return np.full(len(preds), 1.0 / len(preds))


def pearson(preds: np.ndarray) -> np.ndarray:
    """M x M Pearson correlation of the members' predictions over every row and class."""
    if len(preds) == 1:
        return np.ones((1, 1))
    return np.corrcoef(preds.reshape(len(preds), -1))


def fit_greedy(preds: np.ndarray, targets: np.ndarray, ctx: FitContext) -> np.ndarray:
    """Equal weights over the greedy forward selection (blend_search.greedy_select)."""
    chosen = greedy_select(preds, targets, ctx.metric, ctx.settings.greedy_max_corr, pearson(preds))
    weights = np.zeros(len(preds))
    weights[chosen] = 1.0 / len(chosen)
    return weights


def fit_caruana(preds: np.ndarray, targets: np.ndarray, ctx: FitContext) -> np.ndarray:
    """Caruana ensemble selection (blend_search.hill_climb). With caruana_bags > 1, each bag climbs over
    a random caruana_bag_fraction of the models and the weights are the mean over bags."""
    s = ctx.settings
    stacked = class_slabs(preds)
    if s.caruana_bags == 1:
        return hill_climb(stacked, targets, ctx.metric, s.caruana_iters, s.caruana_init)
    rng = np.random.default_rng(ctx.seed)
    size = max(1, round(s.caruana_bag_fraction * len(preds)))
    weights = np.zeros(len(preds))
    for _ in range(s.caruana_bags):
        pool = np.sort(rng.choice(len(preds), size=size, replace=False))
        bag = np.ascontiguousarray(stacked[:, :, pool])
        weights[pool] += hill_climb(bag, targets, ctx.metric, s.caruana_iters, min(s.caruana_init, size))
    return weights / s.caruana_bags


def fit_optimize(preds: np.ndarray, targets: np.ndarray, ctx: FitContext) -> np.ndarray:
    """Non-negative weights summing to 1: SLSQP on OOF log loss (smooth and convex in the weights); with
    optimize_on=metric, Nelder-Mead on the metric itself over softmax-parametrised weights, started there."""
    n_models = len(preds)
    if n_models == 1:
        return np.ones(1)
    weights = _min_log_loss(preds, targets)
    if ctx.settings.optimize_on == "metric":
        sign = -1.0 if higher_is_better(ctx.metric) else 1.0
        loss = lambda z: sign * score(ctx.metric, targets, apply_weights(preds, softmax(z)))  # noqa: E731
        start = np.log(weights + 1e-3)
        # A simplex of unit steps: the metric is flat to tiny steps (argmax metrics move in jumps).
        result = minimize(loss, start, method="Nelder-Mead",
                          options={"initial_simplex": np.vstack([start, start + np.eye(n_models)]),
                                   "maxiter": 200 * n_models, "xatol": 1e-3, "fatol": 1e-9})
        weights = softmax(result.x) if result.fun <= loss(start) else weights
    # SLSQP may step a hair outside its bounds; the contract is exactly non-negative, summing to 1.
    weights = np.clip(weights, 0.0, None)
    return weights / weights.sum() if weights.sum() > 0 else np.full(n_models, 1.0 / n_models)


def _min_log_loss(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Weights on the simplex minimising the log loss of the weighted mean (SLSQP, analytic gradient)."""
    n_models = len(preds)
    picked = preds[:, np.arange(preds.shape[1]), targets].astype(np.float64)  # (M, N): target-class values

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        q = np.clip(w @ picked, 1e-15, None)
        return -np.mean(np.log(q)), -(picked / q).mean(axis=1)

    result = minimize(objective, np.full(n_models, 1.0 / n_models), jac=True, method="SLSQP",
                      bounds=[(0.0, 1.0)] * n_models,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}])
    return result.x


METHODS: dict[str, Method] = {
    "mean": Method(fit_uniform),
    "rank": Method(fit_uniform, "rank"),
    "greedy": Method(fit_greedy),
    "caruana": Method(fit_caruana),
    "optimize": Method(fit_optimize),
}


def methods_for(metric: str) -> list[str]:
    """The methods `compare` tries for `metric`. A rank blend gives per-class scores, not probabilities: it is
    offered only to a metric that reads scores (roc_auc); any other would score ranks as if they were
    probabilities, and a probability-format submission would hold them."""
    return [name for name, method in METHODS.items() if method.space != "rank" or reads_scores(metric)]


@dataclass
class Evaluation:
    """One method's weights on every row (in-sample) and its honest, nested CV."""
    method: str
    weights: np.ndarray
    in_sample: float
    nested: float
    nested_per_fold: list[float]
    fold_weights: list[np.ndarray]


def evaluate_method(name: str, preds: np.ndarray, targets: np.ndarray, folds: np.ndarray, ctx: FitContext) -> Evaluation:
    """Fit on every OOF row and score in-sample; then, per fold k, fit on the other folds' rows and
    predict fold k, and score the held-out predictions together (nested CV)."""
    method = METHODS[name]
    weights = method.fit(preds, targets, ctx)
    in_sample = score(ctx.metric, targets, apply_weights(preds, weights, method.space))
    held_out = np.zeros(preds.shape[1:])
    per_fold, fold_weights = [], []
    for k in np.unique(folds):
        test = folds == k
        w = method.fit(preds[:, ~test], targets[~test], ctx)
        held_out[test] = apply_weights(preds[:, test], w, method.space)
        per_fold.append(score(ctx.metric, targets[test], held_out[test]))
        fold_weights.append(w)
    nested = score(ctx.metric, targets, held_out)
    return Evaluation(name, weights, in_sample, nested, per_fold, fold_weights)


def pick_best(evaluations: list[Evaluation], metric: str) -> Evaluation:
    """The best nested CV; ties go to the earlier (simpler) method."""
    sign = 1.0 if higher_is_better(metric) else -1.0
    return max(evaluations, key=lambda e: (sign * e.nested, -evaluations.index(e)))
