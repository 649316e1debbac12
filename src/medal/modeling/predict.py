"""Batched prediction under one or more TTA views, shared by training (OOF) and inference (TTA).

Outputs go into arrays preallocated for the whole loader, so memory holds the
predictions (rows x classes per view) and one batch of images, never the image set.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from medal.core.log import progress
from medal.modeling.runtime import autocast
from medal.modeling.views import BASE, View

Augment = Callable[[torch.Tensor], torch.Tensor]


def _as_views(views: dict[str, View | Augment]) -> dict[str, View]:
    return {name: v if isinstance(v, View) else View(name, v) for name, v in views.items()}


@torch.no_grad()
def predict_views(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool,
                  views: dict[str, View | Augment], desc: str = "predict", output: str = "probs",
                  timings: dict[str, float] | None = None) -> tuple[dict[str, np.ndarray], float]:
    """Per view, an N x C float32 array in loader order: softmax probabilities (output='probs') or
    logits ('logits'); and the mean cross-entropy of the first view over labelled rows (target >= 0).

    A batch is a tensor (the 'base' source) or a dict of tensors by source (tta.SourcesDataset);
    each image is decoded once by the loader and every view reads its source from that batch.
    `timings`, when given, receives each view's model seconds (its cost).
    """
    model.eval()
    views = _as_views(views)
    out: dict[str, np.ndarray] = {}
    seconds = dict.fromkeys(views, 0.0)
    loss_sum, labelled, start = 0.0, 0, 0
    for batch, targets in progress(loader, desc=desc, images=lambda item: len(item[1]), short_is_silent=True):
        sources = batch if isinstance(batch, dict) else {BASE: batch}
        targets = targets.to(device)
        known = targets >= 0
        for i, (name, view) in enumerate(views.items()):
            started = time.perf_counter()
            images = sources[view.source].to(device, non_blocking=True)
            with autocast(device, amp):
                logits = view.deaugment(model(view.augment(images))).float()
            if i == 0 and known.any():
                loss_sum += torch.nn.functional.cross_entropy(logits[known], targets[known], reduction="sum").item()
                labelled += int(known.sum())
            values = (logits.softmax(dim=1) if output == "probs" else logits).cpu().numpy()
            if name not in out:
                out[name] = np.empty((len(loader.dataset), values.shape[1]), dtype=np.float32)
            out[name][start:start + len(values)] = values
            seconds[name] += time.perf_counter() - started
        start += len(targets)
    if timings is not None:
        for name, value in seconds.items():
            timings[name] = timings.get(name, 0.0) + value
    return out, loss_sum / max(labelled, 1)


def predict_probs(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool,
                  desc: str = "predict") -> tuple[np.ndarray, float]:
    """Plain (identity) probabilities and mean cross-entropy."""
    probs, loss = predict_views(model, loader, device, amp, {"identity": lambda x: x}, desc)
    return probs["identity"], loss
