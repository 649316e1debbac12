"""The report's own plots, drawn from the files a run wrote and returned as PNG bytes (embedded in the page).

matplotlib's Figure is used without pyplot: no display, no global state between plots.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Curves:
    """One fold's learning curves, on one epoch axis: a metrics.csv row for epoch e is plotted at x = e (the
    end of epoch e, counting from 1 as the logs do); step s of n in epoch e at x = e - 1 + (s + 1) / n."""
    epochs: np.ndarray              # x of each metrics.csv row
    series: dict[str, np.ndarray]   # metrics.csv column -> its values (the columns present)
    lr_x: np.ndarray                # x of each optimizer step (steps.csv)
    lr: np.ndarray                  # the head's LR at that step
    boundaries: list[tuple[float, str]]  # progressive-resizing stage starts: (x, "32px -> 64px")


def curves(metrics: pd.DataFrame, steps: pd.DataFrame | None, metric: str) -> Curves:
    """The curves of one fold from its metrics.csv and steps.csv (which may be missing)."""
    epochs = metrics["epoch"].to_numpy(dtype=float)
    keys = ["train_ce", "valid_loss", "ema_valid_loss", f"train_{metric}", metric, f"ema_{metric}"]
    series = {k: metrics[k].to_numpy(dtype=float) for k in keys if k in metrics and metrics[k].notna().any()}
    lr_x, lr = np.array([]), np.array([])
    if steps is not None and len(steps):
        per_epoch = steps.groupby("epoch")["step"].transform("max") + 1
        lr_x = (steps["epoch"] - 1 + (steps["step"] + 1) / per_epoch).to_numpy(dtype=float)
        lr = steps["lr"].to_numpy(dtype=float)
    boundaries = []
    sizes = metrics["image_size"].to_numpy()
    for i in range(1, len(sizes)):
        if sizes[i] != sizes[i - 1]:
            boundaries.append((float(epochs[i] - 1), f"{sizes[i - 1]}px -> {sizes[i]}px"))
    return Curves(epochs, series, lr_x, lr, boundaries)


def curves_png(c: Curves, metric: str, title: str) -> bytes:
    """Loss, metric and LR against epoch, side by side, with each progressive stage's start marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6), dpi=90)
    loss_ax, metric_ax, lr_ax = fig.subplots(1, 3)
    for ax, keys, label in [(loss_ax, ["train_ce", "valid_loss", "ema_valid_loss"], "cross-entropy"),
                            (metric_ax, [f"train_{metric}", metric, f"ema_{metric}"], metric)]:
        for key in keys:
            if key in c.series:
                ax.plot(c.epochs, c.series[key], marker="o", markersize=3, label=key)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    if len(c.lr):
        lr_ax.plot(c.lr_x, c.lr, color="tab:purple")
    lr_ax.set_ylabel("learning rate (head)")
    if c.series.get("train_ce") is not None and np.all(c.series["train_ce"] > 0):
        loss_ax.set_yscale("log")  # overfitting (an order of magnitude apart) reads directly off a log axis
    for ax in (loss_ax, metric_ax, lr_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        for x, label in c.boundaries:
            ax.axvline(x, color="grey", linestyle="--", linewidth=1)
            ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                        va="top", ha="right", color="grey")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.88, wspace=0.25)
    return _png(fig)


def confusion_png(counts: pd.DataFrame, title: str) -> bytes:
    """The confusion matrix as a heatmap, rows normalised (each true class's share), counts written in."""
    from matplotlib.figure import Figure

    n = len(counts)
    values = counts.to_numpy(dtype=float)
    shares = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    side = min(12.0, 2.5 + 0.45 * n)
    fig = Figure(figsize=(side + 1.2, side), dpi=90)
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(c) for c in counts.columns], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(c) for c in counts.index])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(values[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
