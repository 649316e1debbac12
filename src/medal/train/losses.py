"""Losses on soft target vectors: cross-entropy, BCE and MSE, with label smoothing and timm's Mixup/CutMix.

Every loss takes a (batch x classes) float target. Class indices become
smoothed one-hot vectors (timm's `mixup_target`), or mixed pairs of them under
Mixup/CutMix, so one soft-target path serves plain, smoothed and mixed
training; soft pseudo labels enter the same path as distributions. Seam for multi-label and regression data: a dataset that yields
dense float targets feeds them to the same losses (timm's Mixup then runs with
`multi_label=True`); the current data layer yields class indices only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.mixup import mixup_target

from medal.core.config import TrainConfig


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # torch's cross_entropy takes probability targets: SoftTargetCrossEntropy, per sample.
    return F.cross_entropy(logits, target, reduction="none")


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=1)


def _mse(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(logits, target, reduction="none").mean(dim=1)


LOSSES = {"ce": _ce, "bce": _bce, "mse": _mse}


class Criterion:
    """Builds each batch's (possibly mixed) inputs and soft targets, and the per-sample loss."""

    def __init__(self, t: TrainConfig, num_classes: int) -> None:
        self.loss = LOSSES[t.loss]
        self.num_classes, self.smoothing = num_classes, t.label_smoothing
        m = t.mixup
        # timm's Mixup draws from numpy's global RNG, which the checkpoint saves and restores.
        self.mixup = Mixup(mixup_alpha=m.mixup_alpha, cutmix_alpha=m.cutmix_alpha, prob=m.prob, switch_prob=m.switch_prob,
                           label_smoothing=t.label_smoothing, num_classes=num_classes) if m.enabled else None

    def prepare(self, images: torch.Tensor, labels: torch.Tensor,
                soft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, soft targets): mixed by timm's Mixup when on (a batch of odd size, possible only when
        the training set is smaller than one batch, is left unmixed), else smoothed one-hot. `soft` (batch x
        classes): each row's target distribution instead of its class index (soft pseudo labels): smoothed as
        (1 - s) p + s / C and mixed as timm mixes one-hot targets, which it gives exactly for one-hot rows."""
        if soft is None:
            if self.mixup is not None and len(images) % 2 == 0:
                return self.mixup(images, labels)
            return images, mixup_target(labels, self.num_classes, lam=1.0, smoothing=self.smoothing)
        target = soft.float() * (1.0 - self.smoothing) + self.smoothing / self.num_classes
        if self.mixup is not None and len(images) % 2 == 0:
            # timm's own draw and image mix (its batch mode, the one medal builds); its __call__ would turn the
            # targets into one-hot vectors of class indices, so the same lambda mixes the distributions here.
            lam = self.mixup._mix_batch(images)
            target = target * lam + target.flip(0) * (1.0 - lam)
        return images, target

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of each sample (float32), shape (batch,)."""
        return self.loss(logits.float(), target.float())
