"""make_folds: assign every clean row to one validation fold, reproducibly."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from medal.config import Config, config_snapshot
from medal.io import read_csv, write_csv, write_json, write_text
from medal.log import get_logger


def stratified(table: pd.DataFrame, cfg: Config) -> np.ndarray:
    """Fold index per row, keeping each class's share equal across folds."""
    labels = table[cfg.data.label_col].to_numpy()
    smallest = table[cfg.data.label_col].value_counts().min()
    if smallest < cfg.folds.n_folds:
        rare = table[cfg.data.label_col].value_counts().idxmin()
        raise ValueError(f"class {rare!r} has {smallest} rows, fewer than folds.n_folds={cfg.folds.n_folds}")
    splitter = StratifiedKFold(n_splits=cfg.folds.n_folds, shuffle=True, random_state=cfg.folds.seed)
    fold = np.empty(len(table), dtype=np.int64)
    for k, (_, valid) in enumerate(splitter.split(np.zeros(len(table)), labels)):
        fold[valid] = k
    return fold


# Fold strategies by config name; each maps (table, cfg) to a fold index per row.
STRATEGIES: dict[str, Callable[[pd.DataFrame, Config], np.ndarray]] = {"stratified": stratified}


def run_folds(cfg: Config) -> pd.DataFrame:
    """Read clean.csv, write folds.csv (clean.csv plus `fold`) and folds.json."""
    d = cfg.data
    clean_path = cfg.data_dir / "clean.csv"
    if not clean_path.is_file():
        raise FileNotFoundError(f"{clean_path} does not exist: run `medal clean -c CONFIG` first")
    table = read_csv(clean_path, "clean file", [d.id_col, d.label_col], [d.id_col, d.label_col])
    table["fold"] = STRATEGIES[cfg.folds.strategy](table, cfg)
    write_csv(cfg.data_dir / "folds.csv", table)
    write_text(cfg.data_dir / "folds_config.yaml", config_snapshot(cfg))
    counts = pd.crosstab(table[d.label_col], table["fold"])
    write_json(cfg.data_dir / "folds.json", {
        "strategy": cfg.folds.strategy,
        "n_folds": cfg.folds.n_folds,
        "seed": cfg.folds.seed,
        "rows": len(table),
        "class_counts_per_fold": {str(k): {str(c): int(n) for c, n in counts[k].items()} for k in counts.columns},
    })
    get_logger().info("folds: %d rows in %d %s folds (seed %d) -> %s\n%s", len(table), cfg.folds.n_folds,
                      cfg.folds.strategy, cfg.folds.seed, cfg.data_dir / "folds.csv", counts.to_string())
    return table
