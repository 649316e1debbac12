"""One fold's rows: which images train and which validate, as paths and class indices.

Pseudo-labelled test rows (`train.pseudo_labels`, a table `medal pseudo` writes) join the training side of every
fold and never its validation side, so every fold's validation rows, and the CV they make, stay real labels only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medal.core import layout, provenance
from medal.core.config import Config
from medal.core.io import read_csv
from medal.core.submission import not_probabilities
from medal.core.tables import class_index, label_codes
from medal.images.paths import image_path, outside_folder


@dataclass
class FoldData:
    """The rows of one fold: train and validation ids, paths and class indices. With pseudo labels the last
    `pseudo_rows` training rows are pseudo-labelled test images; `train_soft` (training rows x classes) holds
    every training row's target distribution when the table is soft (real and hard rows one-hot), else None."""
    train_paths: list[Path]
    train_targets: np.ndarray
    valid_ids: list[str]
    valid_paths: list[Path]
    valid_targets: np.ndarray
    train_soft: np.ndarray | None = None
    pseudo_rows: int = 0


@dataclass
class PseudoLabels:
    """A pseudo-label table, checked: test ids, their image paths, hard class indices and, for a soft table,
    one probability per class (rows x classes, float32)."""
    path: Path
    ids: list[str]
    paths: list[Path]
    targets: np.ndarray
    soft: np.ndarray | None


def split_fold(cfg: Config, table: pd.DataFrame, classes: list[str], fold: int) -> FoldData:
    """Fold `fold`'s rows of the folds table as validation, the rest as training, plus the pseudo-labelled test
    rows of train.pseudo_labels (when set) on the training side only."""
    targets = label_codes(table[cfg.data.label_col], classes)
    paths = [image_path(cfg, i, "train") for i in table[cfg.data.id_col]]
    is_valid = (table["fold"] == fold).to_numpy()
    if not is_valid.any():
        raise ValueError(f"fold {fold} has no rows in folds.csv (folds present: {sorted(table['fold'].unique())})")
    data = FoldData(
        train_paths=[p for p, v in zip(paths, is_valid) if not v],
        train_targets=targets[~is_valid],
        valid_ids=table.loc[is_valid, cfg.data.id_col].tolist(),
        valid_paths=[p for p, v in zip(paths, is_valid) if v],
        valid_targets=targets[is_valid],
    )
    pseudo = read_pseudo_labels(cfg, classes)
    return data if pseudo is None else _with_pseudo(data, pseudo, len(classes))


def _with_pseudo(data: FoldData, pseudo: PseudoLabels, num_classes: int) -> FoldData:
    """`data` with the pseudo rows appended to its training side; refused when one of their images is a
    validation image (a competition whose train and test folders are one folder)."""
    shared = set(map(str, pseudo.paths)) & set(map(str, data.valid_paths))
    if shared:
        raise ValueError(f"pseudo-label table {pseudo.path} names {len(shared)} image(s) that are also validation "
                         f"images of this fold, e.g. {sorted(shared)[:3]}: pseudo rows may only ever train")
    soft = None
    if pseudo.soft is not None:
        real = np.eye(num_classes, dtype=np.float32)[data.train_targets]
        soft = np.concatenate([real, pseudo.soft])
    return FoldData(train_paths=data.train_paths + pseudo.paths,
                    train_targets=np.concatenate([data.train_targets, pseudo.targets]),
                    valid_ids=data.valid_ids, valid_paths=data.valid_paths, valid_targets=data.valid_targets,
                    train_soft=soft, pseudo_rows=len(pseudo.ids))


def read_pseudo_labels(cfg: Config, classes: list[str]) -> PseudoLabels | None:
    """train.pseudo_labels, checked (None when unset): ids once each, inside the test folder, images present;
    labels among `classes`; probability columns, when present, exactly the classes and each row a distribution."""
    path = cfg.train.pseudo_labels
    if path is None:
        return None
    d = cfg.data
    what = "pseudo-label table (train.pseudo_labels)"
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist: make one with "
                                "`medal pseudo -c CONFIG --from BLEND --threshold T`, or set train.pseudo_labels=null")
    frame = read_csv(path, what, [d.id_col, d.label_col], [d.id_col, d.label_col], need_rows=True)
    ids = frame[d.id_col].tolist()
    repeated = frame.loc[frame[d.id_col].duplicated(), d.id_col].tolist()
    if repeated:
        raise ValueError(f"{what} {path} lists id(s) {repeated[:5]} more than once")
    unknown = sorted(set(frame[d.label_col]) - set(class_index(classes)))
    if unknown:
        raise ValueError(f"{what} {path} has label(s) {unknown[:5]} that are not among the classes of folds.csv {classes}")
    outside = outside_folder(cfg, ids, "test")
    if outside:
        raise ValueError(f"{what} {path} names id(s) {outside[:5]} whose file lies outside the test folder")
    paths = [image_path(cfg, i, "test") for i in ids]
    missing = [(row + 2, i) for row, (i, p) in enumerate(zip(ids, paths)) if not p.is_file()]
    if missing:
        row, image_id = missing[0]
        raise FileNotFoundError(f"{what} {path}: {len(missing)} image(s) are not in the test folder, e.g. id "
                                f"{image_id!r} (row {row}): {image_path(cfg, image_id, 'test')}")
    return PseudoLabels(path, ids, paths, label_codes(frame[d.label_col], classes), _soft_columns(frame, path, what, cfg, classes))


def _soft_columns(frame: pd.DataFrame, path: Path, what: str, cfg: Config, classes: list[str]) -> np.ndarray | None:
    """The table's probability columns (rows x classes, in class order), or None for a hard table."""
    extra = [c for c in frame.columns if c not in (cfg.data.id_col, cfg.data.label_col)]
    if not extra:
        return None
    if sorted(map(str, extra)) != sorted(classes):
        raise ValueError(f"{what} {path} has columns {extra} besides {cfg.data.id_col!r} and {cfg.data.label_col!r}: "
                         f"a soft table has one probability column per class {classes}, a hard one none")
    values = frame[classes].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    bad = bad if len(bad) else not_probabilities(values)
    if len(bad):
        first = bad[0]
        raise ValueError(f"{what} {path}: {len(bad)} row(s) are not probability distributions over the classes, e.g. "
                         f"id {frame[cfg.data.id_col].iloc[first]!r} (row {first + 2}, sum {values[first].sum():.6g})")
    return (values / values.sum(axis=1, keepdims=True)).astype(np.float32)


def pseudo_warning(cfg: Config) -> str | None:
    """A warning when train.pseudo_labels comes from `medal pseudo` and no longer matches what made it (its blend
    or an experiment under it changed since); None when current or hand-made. Not a refusal: the table's own
    content is what the folds are tied to, and retraining an experiment the blend used makes that blend stale."""
    manifest = layout.pseudo_manifest(cfg.train.pseudo_labels)
    try:
        record = provenance.read_manifest(manifest)
        if record is None or record.get("stage") != "pseudo":  # a table placed by hand, beside another stage's files
            return None
        reason = provenance.stale_reason(manifest, cfg)
    except provenance.StaleError as err:  # a damaged manifest
        reason = str(err)
    if reason is None:
        return None
    return (f"train.pseudo_labels {cfg.train.pseudo_labels} was selected from predictions that have changed since "
            f"({reason}); training on it as it is")
