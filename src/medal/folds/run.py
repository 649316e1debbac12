"""make_folds: assign every clean row to one validation fold, reproducibly and without leakage.

Rows that must share a fold form one group: rows with the same `folds.group_col`
value and the duplicate groups `clean` wrote to duplicates.csv, merged (a
duplicate pair across two patients joins the two patients). Every strategy
keeps each group inside one fold, and the code asserts it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import MultiLabelBinarizer

from medal.core import layout, provenance
from medal.core.config import Config, config_snapshot
from medal.core.graph import connected_groups
from medal.core.io import (
    read_csv,
    remove_stale_temporaries,
    write_csv,
    write_json,
    write_text,
)
from medal.core.locks import exclusive
from medal.core.log import get_logger, set_progress
from medal.core.tables import split_labels
from medal.folds.report import fold_report, report_markdown


def _assign(splits, n: int) -> np.ndarray:
    fold = np.full(n, -1, dtype=np.int64)
    for k, (_, valid) in enumerate(splits):
        fold[valid] = k
    return fold


def _has_groups(groups: np.ndarray) -> bool:
    return len(np.unique(groups)) < len(groups)


def _check_class_sizes(labels: pd.Series, k: int) -> None:
    counts = labels.value_counts()
    if counts.min() < k:
        raise ValueError(f"class {counts.idxmin()!r} has {counts.min()} rows, fewer than folds.n_folds={k}")


def _stratify(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified on y; StratifiedGroupKFold as soon as any group has two rows."""
    x = np.zeros(len(y))
    if _has_groups(groups):
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return _assign(splitter.split(x, y, groups), len(y))
    return _assign(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y), len(y))


def stratified(table: pd.DataFrame, cfg: Config, groups: np.ndarray, seed: int) -> np.ndarray:
    """Each class's share equal across folds (duplicate groups and group_col groups kept whole)."""
    labels = table[cfg.data.label_col].astype(str)
    _check_class_sizes(labels, cfg.folds.n_folds)
    return _stratify(labels.to_numpy(), groups, cfg.folds.n_folds, seed)


def _need_group_col(cfg: Config) -> None:
    if cfg.folds.group_col is None:
        raise ValueError(f"folds.strategy={cfg.folds.strategy} needs folds.group_col (the column of rows that "
                         "must share a fold, e.g. patient_id)")


def group(table: pd.DataFrame, cfg: Config, groups: np.ndarray, seed: int) -> np.ndarray:
    """Whole groups per fold, fold sizes balanced (GroupKFold, shuffled by the seed)."""
    _need_group_col(cfg)
    n_groups = len(np.unique(groups))
    if n_groups < cfg.folds.n_folds:
        raise ValueError(f"{n_groups} groups in {cfg.folds.group_col!r}, fewer than folds.n_folds={cfg.folds.n_folds}")
    try:
        splitter = GroupKFold(n_splits=cfg.folds.n_folds, shuffle=True, random_state=seed)
    except TypeError:  # scikit-learn < 1.6 has no shuffle: renumber the groups in a seeded random order instead
        splitter = GroupKFold(n_splits=cfg.folds.n_folds)
        groups = np.random.default_rng(seed).permutation(int(groups.max()) + 1)[groups]
    return _assign(splitter.split(np.zeros(len(table)), groups=groups), len(table))


def stratified_group(table: pd.DataFrame, cfg: Config, groups: np.ndarray, seed: int) -> np.ndarray:
    """Whole groups per fold, class shares as even as the groups allow (StratifiedGroupKFold)."""
    _need_group_col(cfg)
    splitter = StratifiedGroupKFold(n_splits=cfg.folds.n_folds, shuffle=True, random_state=seed)
    labels = table[cfg.data.label_col].astype(str).to_numpy()
    return _assign(splitter.split(np.zeros(len(table)), labels, groups), len(table))


def multilabel(table: pd.DataFrame, cfg: Config, groups: np.ndarray, seed: int) -> np.ndarray:
    """Iterative stratification of every label's share (iterative-stratification's MultilabelStratifiedKFold).

    Groups are stratified as units carrying the union of their rows' labels, so a group never splits.
    """
    if cfg.data.label_sep is None:
        raise ValueError("folds.strategy=multilabel needs data.label_sep (the separator between a row's labels)")
    y = label_matrix(table, cfg)
    units, unit_of_row = np.unique(groups, return_inverse=True)
    unit_y = np.zeros((len(units), y.shape[1]), dtype=np.int64)
    np.maximum.at(unit_y, unit_of_row, y)
    splitter = MultilabelStratifiedKFold(n_splits=cfg.folds.n_folds, shuffle=True, random_state=seed)
    return _assign(splitter.split(np.zeros(len(units)), unit_y), len(units))[unit_of_row]


def label_matrix(table: pd.DataFrame, cfg: Config) -> np.ndarray:
    """Rows x labels 0/1 indicator matrix (label columns in sorted order)."""
    sets = [split_labels(str(v), cfg.data.label_sep) for v in table[cfg.data.label_col]]
    binarizer = MultiLabelBinarizer(classes=sorted({label for row in sets for label in row}))
    return binarizer.fit_transform(sets)


def regression_target(table: pd.DataFrame, cfg: Config) -> np.ndarray:
    """label_col as floats; names the first row that is not a number."""
    target = pd.to_numeric(table[cfg.data.label_col], errors="coerce")
    bad = np.flatnonzero(target.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise ValueError(f"folds.strategy=kfold needs a numeric {cfg.data.label_col!r}; clean.csv row {row + 2} "
                         f"({table[cfg.data.id_col].iat[row]}) has {table[cfg.data.label_col].iat[row]!r}")
    return target.to_numpy(dtype=np.float64)


def kfold(table: pd.DataFrame, cfg: Config, groups: np.ndarray, seed: int) -> np.ndarray:
    """Regression: k folds stratified on quantile bins of the numeric target (folds.n_bins)."""
    target = regression_target(table, cfg)
    bins = pd.qcut(target, q=cfg.folds.n_bins, labels=False, duplicates="drop")
    return _stratify(np.asarray(bins), groups, cfg.folds.n_folds, seed)


# Fold strategies by config name; each maps (table, cfg, groups, seed) to a fold index per row.
STRATEGIES: dict[str, Callable[[pd.DataFrame, Config, np.ndarray, int], np.ndarray]] = {
    "stratified": stratified, "group": group, "stratified_group": stratified_group,
    "multilabel": multilabel, "kfold": kfold}


def group_keys(cfg: Config, table: pd.DataFrame) -> tuple[np.ndarray, int]:
    """A group number per row (rows that must share a fold share one), and how many rows duplicates.csv linked."""
    n = len(table)
    left, right = list(range(n)), list(range(n))
    if cfg.folds.group_col is not None:
        values = table[cfg.folds.group_col]
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise ValueError(f"clean.csv row {row + 2} ({table[cfg.data.id_col].iat[row]}) has no "
                             f"{cfg.folds.group_col!r} (folds.group_col)")
        first = pd.Series(np.arange(n)).groupby(values.to_numpy(), sort=False).transform("first").to_numpy()
        left += first.tolist()
        right += list(range(n))
    linked = _link_duplicates(cfg, table, left, right)
    return connected_groups(n, left, right), linked


def _link_duplicates(cfg: Config, table: pd.DataFrame, left: list[int], right: list[int]) -> int:
    path = layout.duplicates_csv(cfg)
    if not path.is_file():
        get_logger().warning("folds: %s not found, so duplicates are not kept together: rerun `medal clean`", path)
        return 0
    d = cfg.data
    dups = read_csv(path, "duplicates file", [d.id_col, "group"], [d.id_col, "group"])
    position = pd.Series(np.arange(len(table)), index=table[d.id_col].to_numpy())
    dups = dups[dups[d.id_col].isin(position.index)]
    rows = position.loc[dups[d.id_col]].to_numpy()
    first = pd.Series(rows).groupby(dups["group"].to_numpy(), sort=False).transform("first").to_numpy()
    left += first.tolist()
    right += rows.tolist()
    return int(pd.Series(dups["group"]).duplicated(keep=False).sum())


def read_clean(cfg: Config) -> pd.DataFrame:
    """clean.csv with every column as text, so folds.csv repeats its values exactly; refused unless clean's
    manifest says it is the file clean wrote from the current train.csv."""
    d = cfg.data
    path = layout.clean_csv(cfg)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `{provenance.command(cfg, 'clean')}` first")
    provenance.verify(layout.clean_manifest(cfg), f"{path} has no manifest (made by an older medal, or clean was "
                      f"killed before it finished): run `{provenance.command(cfg, 'clean')}`",
                      cfg)
    required = [d.id_col, d.label_col] + ([cfg.folds.group_col] if cfg.folds.group_col else [])
    return read_csv(path, "clean file", required, "all")


def _outputs(cfg: Config) -> list[str]:
    """Everything folds writes; their temporaries are its own to remove (clean writes into the same folder)."""
    return [layout.folds_csv(cfg).name, "folds.json", "folds_report.md", "folds_config.yaml"]


def run_folds(cfg: Config) -> pd.DataFrame:
    """Read clean.csv, write folds.csv (clean.csv plus `fold`, and fold_s<r> per repeat), folds.json,
    folds_report.md and, last, the manifest that ties folds.csv to the clean.csv it split."""
    set_progress(cfg.report.progress_steps, cfg.report.progress_seconds)
    with exclusive(layout.lock_file(cfg.data_dir, "folds"), f"folds of {cfg.data.competition}"):
        remove_stale_temporaries(cfg.data_dir, _outputs(cfg))
        return _make_folds(cfg)


def _repeated_splits(table: pd.DataFrame, seeds: dict[str, int], strategy: str) -> list[str]:
    """A warning for each repeat column that splits the rows exactly as an earlier column does (its folds maybe
    numbered otherwise): scikit-learn's StratifiedGroupKFold shuffles only the order of groups that tie on their
    class spread, so with few, large groups another seed can give the same split, and that repeat adds nothing."""
    warnings, columns = [], list(seeds)
    for i, column in enumerate(columns[1:], start=1):
        for earlier in columns[:i]:
            pairs = table[[earlier, column]].drop_duplicates()
            if len(pairs) == table[earlier].nunique() == table[column].nunique():
                warnings.append(f"{column} (seed {seeds[column]}) splits the rows exactly as {earlier} (seed "
                                f"{seeds[earlier]}) does: with these groups, strategy {strategy} barely depends on "
                                "the seed, so this repeat measures nothing new; strategy group shuffles groups "
                                "freely, or use fewer repeats")
                break
    return warnings


def _make_folds(cfg: Config) -> pd.DataFrame:
    f = cfg.folds
    table = read_clean(cfg)
    get_logger().info("%s: folds: split %d rows of %s into %d folds, strategy %s (seed %d, %d repeat(s)), groups kept "
                      "whole: duplicates%s -> %s", cfg.data.competition, len(table), layout.clean_csv(cfg).name,
                      f.n_folds, f.strategy, f.seed, f.repeats, f" and {f.group_col}" if f.group_col else "",
                      layout.folds_csv(cfg))
    groups, linked = group_keys(cfg, table)
    seeds = {("fold" if r == 0 else f"fold_s{r}"): f.seed + r for r in range(f.repeats)}
    for column, seed in seeds.items():
        fold = STRATEGIES[f.strategy](table, cfg, groups, seed)
        # No leakage: a group (duplicates, group_col) never spans two folds.
        spans = pd.Series(fold).groupby(groups).nunique()
        assert (fold >= 0).all() and (spans == 1).all(), f"{f.strategy} split a group across folds"
        table[column] = fold
    report = fold_report(cfg, table, groups, linked, seeds)
    report["warnings"] += _repeated_splits(table, seeds, f.strategy)
    manifest = layout.folds_manifest(cfg)
    provenance.invalidate(manifest)
    write_csv(layout.folds_csv(cfg), table)
    write_json(cfg.data_dir / "folds.json", report)
    write_text(cfg.data_dir / "folds_report.md", report_markdown(report))
    write_text(cfg.data_dir / "folds_config.yaml", config_snapshot(cfg))
    inputs = [provenance.Input(p, layout.clean_manifest(cfg))
              for p in (layout.clean_csv(cfg), layout.duplicates_csv(cfg)) if p.is_file()]
    provenance.write_manifest(manifest, cfg, "folds", made=f"{layout.folds_csv(cfg).name} was made",
                              settings={"folds": f.model_dump(mode="json")}, inputs=inputs, outputs=[layout.folds_csv(cfg), cfg.data_dir / "folds.json"])
    log = get_logger()
    log.info("folds: %d rows in %d %s folds (seed %d, %d repeat(s)), %d groups -> %s", len(table), f.n_folds,
             f.strategy, f.seed, f.repeats, report["groups"]["count"], layout.folds_csv(cfg))
    for warning in report["warnings"]:
        log.warning("folds: %s", warning)
    return table
