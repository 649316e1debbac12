"""Prediction files between stages: always keyed by image id, one probability column per class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from medal.core.io import read_csv

RESERVED = ("fold", "target")


def prediction_frame(id_col: str, ids, classes: list[str], probs: np.ndarray, **extra) -> pd.DataFrame:
    """A frame of id, the `extra` columns (e.g. fold, target), then one column per class."""
    clash = [c for c in classes if c in (id_col, *RESERVED, *extra)]
    if clash:
        raise ValueError(f"class name(s) {clash} clash with the prediction file's own columns")
    frame = pd.DataFrame({id_col: list(ids), **extra})
    return pd.concat([frame, pd.DataFrame(probs, columns=classes)], axis=1)


def read_predictions(path: Path, id_col: str, classes: list[str], what: str) -> pd.DataFrame:
    """Read a prediction file, checking it has the ids, the class columns and finite probabilities."""
    frame = read_csv(path, what, [id_col, *classes], [id_col])
    values = frame[classes].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        bad = frame.loc[~np.isfinite(values).all(axis=1), id_col].head(5).tolist()
        raise ValueError(f"{what} {path} has missing or infinite probabilities, e.g. for ids {bad}")
    if frame[id_col].duplicated().any():
        dups = frame.loc[frame[id_col].duplicated(), id_col].head(5).tolist()
        raise ValueError(f"{what} {path} repeats ids {dups}")
    return frame


def rank_scale(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Ranks along `axis` scaled to [0, 1] (ties share their mean rank), for ranking metrics such as roc_auc."""
    return (rankdata(values, axis=axis) - 1.0) / max(values.shape[axis] - 1, 1)
