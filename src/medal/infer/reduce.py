"""How the chosen TTA views combine (mean, geometric mean, max; over probabilities or logits), and greedy
view selection on OOF."""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.special import softmax


def _normalised(probs: np.ndarray) -> np.ndarray:
    return probs / probs.sum(axis=-1, keepdims=True)


# Reductions over the view axis of a (V, N, C) stack in probability space; over logits, mean and
# max act on the logits and a softmax follows.
REDUCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda p: p.mean(axis=0),
    "gmean": lambda p: _normalised(np.exp(np.log(np.clip(p, 1e-12, None)).mean(axis=0))),
    "max": lambda p: _normalised(p.max(axis=0)),
}
SPACES = ("probs", "logits")


def reduce_views(logits: list[np.ndarray], how: str = "mean", space: str = "probs") -> np.ndarray:
    """Combine per-view logits (each N x C) into one N x C probability array."""
    stack = np.stack(logits).astype(np.float64)
    if space == "logits":
        if how == "gmean":
            raise ValueError("the geometric mean over logits is the mean over logits; use mean with logits, "
                             "or gmean with probs")
        return softmax(stack.mean(axis=0) if how == "mean" else stack.max(axis=0), axis=-1)
    return REDUCTIONS[how](softmax(stack, axis=-1))


def select_greedy(view_outputs: dict[str, np.ndarray], evaluate: Callable[[np.ndarray], float],
                  higher_is_better: bool,
                  combine: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> list[str]:
    """Forward selection on OOF: start from identity and add the best view only while the combined
    score improves. `combine` turns the chosen views' arrays into what `evaluate` scores (default: mean)."""
    combine = combine or (lambda arrays: np.mean(arrays, axis=0))
    sign = 1.0 if higher_is_better else -1.0
    chosen = ["identity"] if "identity" in view_outputs else [next(iter(view_outputs))]
    best = sign * evaluate(combine([view_outputs[chosen[0]]]))
    while len(chosen) < len(view_outputs):
        trials = {name: sign * evaluate(combine([view_outputs[v] for v in chosen + [name]]))
                  for name in view_outputs if name not in chosen}
        name = max(trials, key=trials.get)
        if trials[name] <= best:
            break
        chosen.append(name)
        best = trials[name]
    return chosen
