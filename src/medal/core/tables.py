"""The tables every stage reads: train.csv, sample_submission.csv and folds.csv, the class order, and the
labels as class indices. Torch-free, like the rest of core."""
from __future__ import annotations

import numpy as np
import pandas as pd

from medal.core import layout
from medal.core.config import Config
from medal.core.io import read_csv


def read_train_table(cfg: Config) -> pd.DataFrame:
    """train.csv with every column read as text, so clean.csv and folds.csv repeat its values exactly
    (ids like 007, group ids, numeric targets)."""
    d = cfg.data
    return read_csv(d.root / d.train_csv, "training CSV", [d.id_col, d.label_col], "all", need_rows=True)


def read_sample_submission(cfg: Config) -> pd.DataFrame:
    """sample_submission.csv, whose ids are the test set: refused when an id is empty or listed twice, since
    a prediction could then not be matched to one image."""
    d = cfg.data
    path = d.root / d.sample_submission
    sample = read_csv(path, "sample submission", [d.id_col], [d.id_col], need_rows=True)
    ids = sample[d.id_col]
    # Row numbers as in the file, whose header is row 1; read_csv numbers the rows from 0.
    empty = ids.isna() | (ids.str.strip() == "")
    if empty.any():
        raise ValueError(f"sample submission {path} has {int(empty.sum())} empty id(s) in column {d.id_col!r}, "
                         f"at row(s) {(sample.index[empty] + 2).tolist()[:5]}")
    repeated = ids[ids.duplicated(keep=False)]
    if len(repeated):
        rows = (repeated.index.to_series() + 2).groupby(repeated.to_numpy(), sort=False).agg(list)
        first = ", ".join(f"{i!r} (rows {', '.join(map(str, r))})" for i, r in rows.head(5).items())
        raise ValueError(f"sample submission {path} lists {len(rows)} id(s) more than once, e.g. {first}; "
                         f"each test image must appear once")
    return sample


def read_folds(cfg: Config) -> pd.DataFrame:
    d = cfg.data
    path = layout.folds_csv(cfg)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `medal folds -c CONFIG` first")
    return read_csv(path, "folds file", [d.id_col, d.label_col, "fold"], [d.id_col, d.label_col])


def fold_count(table: pd.DataFrame) -> int:
    """k, from a folds table's `fold` column (folds are numbered 0..k-1)."""
    return int(table["fold"].max()) + 1


def class_names(labels: pd.Series) -> list[str]:
    """The class order used by every probability column: sorted label strings."""
    return sorted(labels.astype(str).unique())


def class_index(classes: list[str]) -> dict[str, int]:
    """{class name: its probability column}."""
    return {name: i for i, name in enumerate(classes)}


def label_codes(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """Each label's index in `classes` (int64); a label outside them is refused, naming it."""
    codes = labels.astype(str).map(class_index(classes))
    if codes.isna().any():
        raise ValueError(f"label(s) {sorted(labels[codes.isna()].astype(str).unique())[:5]} are not among the "
                         f"classes {classes}")
    return codes.to_numpy(dtype=np.int64)


def split_labels(label: str, sep: str | None) -> list[str]:
    """The labels of one row: the whole string, or its non-empty parts when `sep` is set."""
    if sep is None:
        return [label]
    return [part for part in label.split(sep) if part.strip()]
