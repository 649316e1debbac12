"""The end-of-fold diagnosis (over- or underfitting) and the per-fold learning-curve plot."""
from __future__ import annotations

from pathlib import Path

from medal.core.io import atomic_path

# "An order of magnitude": the train loss at a tenth of the validation loss or below (report.overfit_ratio).
OVERFIT_RATIO = 10.0


def diagnose(train_loss: float, valid_loss: float, overfit_ratio: float = OVERFIT_RATIO) -> dict:
    """Overfitting when the train loss is `overfit_ratio` times (default: an order of magnitude) below the
    validation loss, underfitting when it is above it, otherwise healthy. Both losses are plain
    cross-entropy of the same model on hard labels."""
    if train_loss * overfit_ratio <= valid_loss and valid_loss > 0:  # both 0: a perfect fit, not an overfit one
        verdict = "overfitting"
        advice = "more augmentation, regularisation (weight decay, dropout, mixup), early stopping or more data"
    elif train_loss > valid_loss:
        verdict = "underfitting"
        advice = "train longer, a higher LR, a bigger model, or less regularisation and augmentation"
    else:
        verdict = "healthy"
        advice = "the gap between train and validation loss is normal"
    return {"verdict": verdict, "train_loss": float(train_loss), "valid_loss": float(valid_loss),
            "ratio": float(valid_loss / train_loss) if train_loss > 0 else float("inf"), "advice": advice}


def plot_curves(history: list[dict], metric: str, path: Path, title: str) -> None:
    """Train and validation loss (left) and metric (right) per epoch, EMA's where present, as a PNG."""
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4), dpi=100)
    loss_ax, metric_ax = fig.subplots(1, 2)
    for ax, keys, label in [(loss_ax, ["train_ce", "valid_loss", "ema_valid_loss"], "cross-entropy"),
                            (metric_ax, [f"train_{metric}", metric, f"ema_{metric}"], metric)]:
        for key in keys:
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    loss_ax.set_yscale("log")  # an order of magnitude apart (overfitting) reads directly off a log axis
    fig.suptitle(title)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.88, wspace=0.25)  # tight_layout costs as much as the plot
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
