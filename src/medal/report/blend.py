"""A blend's report, from blend.json and correlation.csv alone: the one builder behind the blend stage's
report.md and `medal report --blend NAME`'s page (which adds the resolved config)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medal.core import layout, provenance
from medal.core.config import Config
from medal.core.io import write_text
from medal.core.log import get_logger
from medal.core.report import Document
from medal.report.freshness import stale


def write_blend_report(cfg: Config, name: str, out: Path | None = None) -> Path:
    """Write blend_<name>'s page (default blend_<name>/report.html) and return its path."""
    folder = layout.blend_dir(cfg, name)
    path = out or folder / "report.html"
    write_text(path, blend_page(cfg, name).html(folder))
    get_logger().info("blend %s: report written to %s", name, path)
    return path


def blend_page(cfg: Config, name: str) -> Document:
    folder = layout.blend_dir(cfg, name)
    report_file, corr_file = folder / "blend.json", folder / "correlation.csv"
    if not report_file.is_file() or not corr_file.is_file():
        raise FileNotFoundError(f"{folder} holds no finished blend {name!r} (blend.json, correlation.csv): run "
                                f"`{provenance.command(cfg, 'blend', '--name', name)}` first")
    report = json.loads(report_file.read_text())
    corr = pd.read_csv(corr_file).set_index("model").rename_axis(None)
    doc = blend_document(report, corr)
    manifest = layout.blend_manifest(cfg, name)
    reason = stale(manifest, cfg) if manifest.is_file() else f"{manifest.name} is missing"
    doc.heading("Freshness").text("The blend matches its inputs." if reason is None else f"**Stale**: {reason}.")
    config = folder / "config.yaml"
    doc.heading("Resolved config").code(config.read_text() if config.is_file() else "(config.yaml is missing)")
    return doc


def models_frame(report: dict) -> pd.DataFrame:
    """Per member: its weight, OOF CV (after TTA when infer ran), per-fold mean and std, CV without TTA, the
    TTA gain and views, and each fold's score."""
    per_fold = pd.DataFrame(report["per_fold"]).T.rename(columns=lambda k: f"fold {k}")
    frame = pd.DataFrame({
        "weight": report["weights"], "cv": report["cv"], "fold_mean": per_fold.mean(axis=1),
        "fold_std": per_fold.std(axis=1, ddof=0), "cv_no_tta": report.get("cv_no_tta", {}),
        "tta_gain": report.get("tta_gain", {}), "tta_views": report.get("tta_views", {}),
    }).reindex(report["members"])
    numbers = ["weight", "cv", "fold_mean", "fold_std", "cv_no_tta", "tta_gain"]
    frame[numbers] = frame[numbers].astype(float)
    return pd.concat([frame, per_fold], axis=1).rename_axis("model")


def methods_frame(report: dict) -> pd.DataFrame:
    """Per blend method tried: in-sample CV, nested CV, the optimism between them, and the weights it fits."""
    return pd.DataFrame({m: {"in-sample CV": e["in_sample"], "nested CV": e["nested_cv"],
                             "optimism": e["in_sample"] - e["nested_cv"],
                             "weights": ", ".join(f"{k} {w:.3f}" for k, w in e["weights"].items() if w > 0)}
                         for m, e in report["methods"].items()}).T.rename_axis("method")


def blend_document(report: dict, corr: pd.DataFrame) -> Document:
    metric = report["metric"]
    picked = (f"Metric: **{metric}**. Method used: **{report['method']}**, picked by nested CV."
              if len(report["methods"]) > 1 else f"Metric: **{metric}**. Method: **{report['method']}**.")
    chosen = [f"`{m}` {w:.3f}" for m, w in report["weights"].items() if w > 0]
    return (Document(f"blend {report['submission']}")
            .text(picked)
            .text(f"Blend OOF {metric}: nested CV **{report['blend_cv']:.4f}**, in-sample {report['blend_in_sample']:.4f}.",
                  "Chosen models and weights: " + ", ".join(chosen) + ".")
            .text("Nested CV fits the weights and selection on the other folds and scores each held-out fold, so it does "
                  "not reward a blend for fitting the rows it is scored on; the in-sample figure does.")
            .heading("Models (OOF)").table(models_frame(report))
            .heading("Blend methods: in-sample against nested CV").table(methods_frame(report))
            .heading("OOF correlation (Pearson)").table(corr).image("correlation.png", "correlation heatmap")
            .text(f"Submission: `{report['submission']}` (checked against the sample submission)."))
