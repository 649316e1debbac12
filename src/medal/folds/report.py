"""The fold report: rows, groups and classes per fold, and a warning for every class a fold lacks."""
from __future__ import annotations

import numpy as np
import pandas as pd

from medal.core.config import Config
from medal.core.report import Document
from medal.core.tables import split_labels


def _class_counts(table: pd.DataFrame, cfg: Config, column: str) -> pd.DataFrame:
    """Classes x folds row counts; multi-label rows count once under each of their labels."""
    labels = table[cfg.data.label_col].astype(str)
    if cfg.data.label_sep is not None:
        exploded = pd.DataFrame({"label": labels.map(lambda v: split_labels(v, cfg.data.label_sep)),
                                 "fold": table[column]}).explode("label")
        return pd.crosstab(exploded["label"], exploded["fold"])
    return pd.crosstab(labels, table[column])


def _target_stats(table: pd.DataFrame, cfg: Config) -> dict:
    target = pd.to_numeric(table[cfg.data.label_col])
    stats = target.groupby(table["fold"]).agg(["count", "mean", "std", "min", "max"]).round(6)
    return {str(k): {name: float(v) for name, v in row.items()} for k, row in stats.iterrows()}


def fold_report(cfg: Config, table: pd.DataFrame, groups: np.ndarray, linked: int, seeds: dict[str, int]) -> dict:
    """folds.json: the recipe (strategy, k, seeds per column), rows and groups per fold, class counts
    per fold of `fold`, and warnings for folds that miss a class (in any fold column)."""
    f = cfg.folds
    sizes = pd.Series(groups).value_counts()
    report = {
        "strategy": f.strategy, "n_folds": f.n_folds, "seed": f.seed, "rows": len(table),
        "repeats": f.repeats, "columns": seeds, "group_col": f.group_col,
        "groups": {"count": int(len(sizes)), "multi_row": int((sizes > 1).sum()),
                   "largest": int(sizes.max()) if len(sizes) else 0, "rows_linked_by_duplicates": linked},
        "rows_per_fold": {str(k): int(n) for k, n in table["fold"].value_counts().sort_index().items()},
        "groups_per_fold": {str(k): int(n) for k, n in pd.Series(groups).groupby(table["fold"].to_numpy()).nunique().items()},
    }
    warnings = []
    if f.strategy == "kfold":
        report["target_per_fold"] = _target_stats(table, cfg)
    else:
        counts = _class_counts(table, cfg, "fold")
        report["class_counts_per_fold"] = {str(k): {str(c): int(n) for c, n in counts[k].items()} for k in counts.columns}
        for column in seeds:
            counts = _class_counts(table, cfg, column).reindex(columns=range(f.n_folds), fill_value=0)
            for k in counts.columns:
                missing = [str(c) for c, n in counts[k].items() if n == 0]
                if missing:
                    warnings.append(f"{column}: fold {k} has no row of class(es) {missing}; its validation score "
                                    "cannot see them")
    report["warnings"] = warnings
    return report


def report_markdown(report: dict) -> str:
    """folds_report.md: the recipe, the per-fold table and the warnings."""
    groups = report["groups"]
    doc = Document("folds report").text(
        f"{report['rows']} rows, strategy `{report['strategy']}`, {report['n_folds']} folds, seeds "
        + ", ".join(f"`{c}`={s}" for c, s in report["columns"].items()) + ".",
        f"{groups['count']} groups ({groups['multi_row']} with more than one row, the largest {groups['largest']}); "
        f"{groups['rows_linked_by_duplicates']} rows are linked by duplicates.csv. Every group is inside one fold.")
    per_class = report.get("class_counts_per_fold", {})
    classes = sorted({c for counts in per_class.values() for c in counts})
    doc.table(pd.DataFrame([[k, rows, report["groups_per_fold"][k]] + [per_class.get(k, {}).get(c, 0) for c in classes]
                            for k, rows in report["rows_per_fold"].items()],
                           columns=["fold", "rows", "groups", *classes]), index=False)
    doc.bullets(f"fold {k}: target mean {s['mean']:.4g}, std {s['std']:.4g}, range [{s['min']:.4g}, {s['max']:.4g}]"
                for k, s in report.get("target_per_fold", {}).items())
    if report["warnings"]:
        doc.heading("Warnings").bullets(report["warnings"])
    return doc.markdown()
