"""Plots written as PNG files, headless (matplotlib's Agg backend)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from medal.core.io import atomic_path


def correlation_heatmap(corr: pd.DataFrame, path: Path, title: str) -> Path:
    """A labelled heatmap of a square correlation matrix, each cell annotated; written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    n = len(corr)
    fig, ax = plt.subplots(figsize=(2.0 + 0.9 * n, 1.5 + 0.8 * n))
    try:
        image = ax.imshow(corr.to_numpy(), cmap="viridis", vmin=min(0.0, float(corr.to_numpy().min())), vmax=1.0)
        ax.set_xticks(range(n), corr.columns, rotation=45, ha="right")
        ax.set_yticks(range(n), corr.index)
        for i in range(n):
            for j in range(n):
                value = corr.iat[i, j]
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="black" if value > 0.6 else "white")
        fig.colorbar(image, ax=ax, label="Pearson r")
        ax.set_title(title)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
