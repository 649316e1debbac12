"""Test-time augmentation views: each a small augment function on an NCHW batch.

Class probabilities do not move when the image is flipped, so no view needs a
de-augment step here; segmentation-style outputs would add one beside each view.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(3),
    "vflip": lambda x: x.flip(2),
    "transpose": lambda x: x.transpose(2, 3),
}


def select_greedy(view_probs: dict[str, np.ndarray], evaluate: Callable[[np.ndarray], float],
                  higher_is_better: bool) -> list[str]:
    """Forward selection on OOF: start from identity and add the best view only while the mean improves."""
    sign = 1.0 if higher_is_better else -1.0
    chosen = ["identity"] if "identity" in view_probs else [next(iter(view_probs))]
    best = sign * evaluate(view_probs[chosen[0]])
    while len(chosen) < len(view_probs):
        trials = {name: sign * evaluate(np.mean([view_probs[v] for v in chosen + [name]], axis=0))
                  for name in view_probs if name not in chosen}
        name = max(trials, key=trials.get)
        if trials[name] <= best:
            break
        chosen.append(name)
        best = trials[name]
    return chosen
