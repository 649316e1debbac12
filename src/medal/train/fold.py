"""One fold's rows: which images train and which validate, as paths and class indices."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medal.core.config import Config
from medal.core.tables import label_codes
from medal.images.paths import image_path


@dataclass
class FoldData:
    """The rows of one fold: train and validation ids, paths and class indices."""
    train_paths: list[Path]
    train_targets: np.ndarray
    valid_ids: list[str]
    valid_paths: list[Path]
    valid_targets: np.ndarray


def split_fold(cfg: Config, table: pd.DataFrame, classes: list[str], fold: int) -> FoldData:
    """Fold `fold`'s rows of the folds table as validation, the rest as training."""
    targets = label_codes(table[cfg.data.label_col], classes)
    paths = [image_path(cfg, i, "train") for i in table[cfg.data.id_col]]
    is_valid = (table["fold"] == fold).to_numpy()
    if not is_valid.any():
        raise ValueError(f"fold {fold} has no rows in folds.csv (folds present: {sorted(table['fold'].unique())})")
    return FoldData(
        train_paths=[p for p, v in zip(paths, is_valid) if not v],
        train_targets=targets[~is_valid],
        valid_ids=table.loc[is_valid, cfg.data.id_col].tolist(),
        valid_paths=[p for p, v in zip(paths, is_valid) if v],
        valid_targets=targets[is_valid],
    )
