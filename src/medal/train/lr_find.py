"""`medal lr-find`: the LR range test (Smith; fastai's lr_find).

The LR rises exponentially from start_lr to end_lr over at most `steps`
optimizer steps on fold K's training images; the loss is smoothed
(debiased exponential average) and the sweep stops once it diverges. The
suggestion is the 'valley' (fastai: the middle of the longest stretch of
falling loss) or the 'steepest' descent (most negative slope against log LR).
The model and optimizer are restored afterwards, so a caller can go on to
train them.
"""
from __future__ import annotations

import copy
import itertools
import math
from typing import Callable

import numpy as np
import pandas as pd
import torch

from medal.core.config import Config, LrFindConfig
from medal.core.freshness import require_current_folds
from medal.core.io import atomic_path, write_csv, write_json
from medal.core.log import get_logger, progress, set_progress
from medal.core.tables import class_names, fold_count, read_folds
from medal.images.augment import train_transform
from medal.images.dataset import ImageDataset
from medal.modeling.models import build_model, normalisation, set_train_mode
from medal.modeling.runtime import (
    autocast,
    compute_threads,
    pick_device,
    precision,
    seed_everything,
)
from medal.train.fold import split_fold
from medal.train.losses import Criterion
from medal.train.optim import build_optimizer
from medal.train.sampler import seeded_train_loader

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lr_range_test(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches, loss_fn: LossFn,
                  s: LrFindConfig, batch_size: int | None = None) -> dict:
    """Sweep the LR over `batches` ((images, labels) pairs, cycled); returns lrs, raw and smoothed losses.
    Each group's LR is the sweep's times its `lr_scale`. Model and optimizer state are restored on return.
    `batch_size`, when given, lets the progress line show images per second."""
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    lrs, losses, smoothed, average, best = [], [], [], 0.0, math.inf
    try:
        model.train()
        stream = itertools.cycle(batches) if not hasattr(batches, "__next__") else batches
        bar = progress(range(s.steps), desc="lr-find", images=batch_size)
        for i in bar:
            lr = s.start_lr * (s.end_lr / s.start_lr) ** (i / (s.steps - 1))
            for group, scale in zip(optimizer.param_groups, scales):
                group["lr"] = lr * scale
            images, labels = next(stream)
            loss = loss_fn(images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            average = s.smoothing * average + (1 - s.smoothing) * value
            current = average / (1 - s.smoothing ** (i + 1))  # debiased: early averages are not pulled to 0
            lrs.append(lr)
            losses.append(value)
            smoothed.append(current)
            bar.set_postfix(loss=f"{current:.4f}", lr=f"{lr:.2e}")
            if not math.isfinite(current) or current > s.diverge * best:
                break
            best = min(best, current)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_opt)
        model.train(was_training)
    return {"lr": lrs, "loss": losses, "smoothed": smoothed}


def suggest(lrs: list[float], smoothed: list[float], rule: str) -> float:
    """The suggested LR under `rule`: 'valley' or 'steepest'."""
    loss = np.asarray(smoothed, dtype=float)
    if len(loss) < 3:
        raise ValueError(f"lr-find stopped after {len(loss)} steps, too few to suggest an LR; lower lr_find.start_lr")
    if rule == "steepest":
        end = max(int(np.argmin(loss)) + 1, 3)  # the descent, before the loss blows up
        slope = np.gradient(loss[:end], np.log(lrs[:end]))
        return float(lrs[int(np.argmin(slope))])
    return float(lrs[valley_index(loss)])


def valley_index(loss: np.ndarray) -> int:
    """fastai's valley: the longest strictly falling subsequence; the point 1/2 of the way past its first third."""
    n = len(loss)
    run = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if loss[i] < loss[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[end] < run[i]:
            end, start = i, i - run[i]
    third = (end - start) / 3
    return int(start + int(third) + int(third / 2))


def run_lr_find(cfg: Config, fold: int = 0) -> dict:
    """The range test on fold `fold`'s training images with the experiment's model, optimizer and loss
    (no mixup); writes <exp>/lr_find_fold<k>.{png,csv,json} and returns the report."""
    t, s = cfg.train, cfg.lr_find
    set_progress(cfg.report.progress_steps, cfg.report.progress_seconds)
    require_current_folds(cfg)
    table = read_folds(cfg)
    classes = class_names(table[cfg.data.label_col])
    n_folds = fold_count(table)
    if not 0 <= fold < n_folds:
        raise ValueError(f"--fold {fold} is out of range: folds.csv has folds 0..{n_folds - 1}")
    seed_everything(cfg.seed + fold)
    device = pick_device(cfg.runtime.device)
    data = split_fold(cfg, table, classes, fold)
    stage = t.stage_list()[0]
    get_logger().info("%s: lr-find on fold %d's %d training images, on %s (%s): %s at %dpx, batch %d; LR from %.0e to "
                      "%.0e over at most %d steps (%s rule) -> %s", cfg.name, fold, len(data.train_paths), device,
                      precision(device, cfg.runtime.amp, cfg.runtime.amp_dtype), cfg.model.backbone, stage.image_size,
                      stage.batch_size, s.start_lr, s.end_lr, s.steps, s.rule, cfg.exp_dir)
    model = build_model(cfg.model, len(classes)).to(device)
    set_train_mode(model, frozen_body=False)
    optimizer = build_optimizer(model, t)
    dataset = ImageDataset(data.train_paths, data.train_targets, train_transform(t.augment, stage.image_size, normalisation(model)))
    loader, sampler = seeded_train_loader(dataset, stage.batch_size, cfg.seed, cfg.runtime, device, persistent=False)
    sampler.set_epoch(cfg.seed)
    criterion = Criterion(t.model_copy(update={"mixup": t.mixup.model_copy(update={"prob": 0.0})}), len(classes))

    def loss_fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = images.to(device), labels.to(device)
        inputs, target = criterion.prepare(images, labels)
        with autocast(device, cfg.runtime.amp, cfg.runtime.amp_dtype):
            logits = model(inputs)
        return criterion.per_sample(logits, target).mean()

    with compute_threads(device, cfg.runtime.cpu_threads):
        curve = lr_range_test(model, optimizer, ((x, y) for _ in itertools.count() for x, y, _ in loader), loss_fn, s,
                              stage.batch_size)
    lr = suggest(curve["lr"], curve["smoothed"], s.rule)
    stem = cfg.exp_dir / f"lr_find_fold{fold}"
    write_csv(stem.with_suffix(".csv"), pd.DataFrame(curve))
    report = {"suggested_lr": lr, "rule": s.rule, "steps": len(curve["lr"]), "fold": fold,
              "batch_size": stage.batch_size, "image_size": stage.image_size, "plot": str(stem.with_suffix(".png"))}
    write_json(stem.with_suffix(".json"), report)
    plot_lr_find(curve, lr, s.rule, stem.with_suffix(".png"), f"{cfg.name} fold {fold}: LR range test")
    get_logger().info("%s: lr-find over %d steps suggests lr %.2e (%s rule); plot %s", cfg.name, len(curve["lr"]),
                      lr, s.rule, report["plot"])
    return report


def plot_lr_find(curve: dict, lr: float, rule: str, path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.subplots()
    ax.plot(curve["lr"], curve["loss"], alpha=0.3, label="loss")
    ax.plot(curve["lr"], curve["smoothed"], label="smoothed loss")
    ax.axvline(lr, color="red", linestyle="--", label=f"suggested {lr:.2e} ({rule})")
    ax.set_xscale("log")
    # Keep the interesting part in view: the final blow-up can be orders of magnitude above the start.
    ax.set_ylim(min(curve["loss"]) * 0.9, max(curve["smoothed"][0] * 2, max(curve["smoothed"]) * 1.1))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
