"""Batched prediction to class probabilities, shared by training (OOF) and inference (TTA)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from medal.log import progress
from medal.runtime import autocast

Augment = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict_views(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool,
                  views: dict[str, Augment], desc: str = "predict") -> tuple[dict[str, np.ndarray], float]:
    """Softmax probabilities (N x C, float32, loader order) under each view, decoding each image once,
    and the mean cross-entropy of the first view over labelled rows (target >= 0)."""
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in views}
    loss_sum, labelled = 0.0, 0
    for images, targets in progress(loader, desc=desc):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device)
        known = targets >= 0
        for i, (name, augment) in enumerate(views.items()):
            with autocast(device, amp):
                logits = model(augment(images)).float()
            if i == 0 and known.any():
                loss_sum += torch.nn.functional.cross_entropy(logits[known], targets[known], reduction="sum").item()
                labelled += int(known.sum())
            chunks[name].append(logits.softmax(dim=1).cpu().numpy())
    probs = {name: np.concatenate(parts).astype(np.float32) for name, parts in chunks.items()}
    return probs, loss_sum / max(labelled, 1)


def predict_probs(model: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool,
                  desc: str = "predict") -> tuple[np.ndarray, float]:
    """Plain (identity) probabilities and mean cross-entropy."""
    probs, loss = predict_views(model, loader, device, amp, {"identity": lambda x: x}, desc)
    return probs["identity"], loss
