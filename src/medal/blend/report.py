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
from medal.core.report import Document


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


def write_report(cfg: Config, name: str, report: dict, models: pd.DataFrame, corr: pd.DataFrame) -> None:
    """blend_<name>/: blend.json, correlation.csv, correlation.png, config.yaml and report.md."""
    folder = layout.blend_dir(cfg, name)
    write_json(folder / "blend.json", report)
    write_csv(folder / "correlation.csv", corr.reset_index(names="model"))
    correlation_heatmap(corr, folder / "correlation.png", f"OOF correlation ({len(corr)} models)")
    write_text(folder / "config.yaml", config_snapshot(cfg))
    write_text(folder / "report.md", markdown(report, models, corr))


def markdown(report: dict, models: pd.DataFrame, corr: pd.DataFrame) -> str:
    metric = report["metric"]
    per_fold = pd.DataFrame(report["per_fold"]).T.rename(columns=lambda k: f"fold {k}")
    methods = pd.DataFrame({m: {"in-sample CV": e["in_sample"], "nested CV": e["nested_cv"],
                                "optimism": e["in_sample"] - e["nested_cv"],
                                "weights": ", ".join(f"{k} {w:.3f}" for k, w in e["weights"].items() if w > 0)}
                            for m, e in report["methods"].items()}).T
    picked = (f"Metric: **{metric}**. Method used: **{report['method']}**, picked by nested CV."
              if len(report["methods"]) > 1 else f"Metric: **{metric}**. Method: **{report['method']}**.")
    return (Document(f"blend {report['submission']}")
            .text(picked)
            .text(f"Blend OOF {metric}: nested CV **{report['blend_cv']:.4f}**, in-sample {report['blend_in_sample']:.4f}.")
            .text("Nested CV fits the weights and selection on the other folds and scores each held-out fold, so it does "
                  "not reward a blend for fitting the rows it is scored on; the in-sample figure does.")
            .heading("Models (OOF)").table(pd.concat([models, per_fold], axis=1))
            .heading("Blend methods: in-sample against nested CV").table(methods)
            .heading("OOF correlation (Pearson)").table(corr).image("correlation.png", "correlation heatmap")
            .text(f"Submission: `{report['submission']}` (checked against the sample submission).")
            .markdown())
