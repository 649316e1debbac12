"""The blend's analysis tables and its written report: blend.json, correlation.csv/png, report.md."""
from __future__ import annotations

import numpy as np
import pandas as pd

from medal.blend.members import Member
from medal.core import layout
from medal.core.config import Config, config_snapshot
from medal.core.io import write_csv, write_json, write_text
from medal.core.metrics import score
from medal.core.plots import correlation_heatmap
from medal.report.blend import blend_document


def models_table(metric: str, members: list[Member], targets: np.ndarray, folds: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """Per model: OOF CV (after TTA when infer ran), mean and std of the per-fold CV, and from tta.json
    (NaN without it) the CV without TTA and the gain. Also returns each model's per-fold scores."""
    per_fold = {m.name: [score(metric, targets[folds == k], m.oof[folds == k]) for k in np.unique(folds)]
                for m in members}
    rows = {}
    for m in members:
        tta = m.tta or {}
        rows[m.name] = {"cv": score(metric, targets, m.oof), "fold_mean": float(np.mean(per_fold[m.name])),
                        "fold_std": float(np.std(per_fold[m.name])),
                        "cv_no_tta": float(tta.get("oof_identity", np.nan)),
                        "tta_gain": float(tta.get("gain", np.nan)),
                        "tta_views": "+".join(tta.get("chosen", [])) or "-"}
    numbers = {"cv": float, "fold_mean": float, "fold_std": float, "cv_no_tta": float, "tta_gain": float}
    return pd.DataFrame(rows).T.astype(numbers), per_fold


def write_report(cfg: Config, name: str, report: dict, corr: pd.DataFrame) -> None:
    """blend_<name>/: blend.json, correlation.csv, correlation.png, config.yaml and report.md."""
    folder = layout.blend_dir(cfg, name)
    write_json(folder / "blend.json", report)
    write_csv(folder / "correlation.csv", corr.reset_index(names="model"))
    correlation_heatmap(corr, folder / "correlation.png", f"OOF correlation ({len(corr)} models)")
    write_text(folder / "config.yaml", config_snapshot(cfg))
    write_text(folder / "report.md", blend_document(report, corr).markdown())
