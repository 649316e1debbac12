"""blend: compare experiments on OOF, fit a blend with an honest (nested) CV, write and check the submission."""
from __future__ import annotations

import numpy as np
import pandas as pd

from medal.blend.members import correlation_matrix, load_member
from medal.blend.methods import (
    METHODS,
    Evaluation,
    FitContext,
    apply_weights,
    evaluate_method,
    pick_best,
)
from medal.blend.report import models_table, write_report
from medal.core import layout
from medal.core.config import Config
from medal.core.io import write_csv
from medal.core.log import get_logger
from medal.core.metrics import higher_is_better
from medal.core.submission import check_submission, make_submission
from medal.core.tables import class_names, label_codes, read_folds, read_sample_submission


def run_blend(cfg: Config, experiments: list[str] | None = None, submission_name: str | None = None) -> dict:
    """Blend the experiments; write <submission_dir>/<name>.csv, checked, and a report beside the outputs."""
    log = get_logger()
    names = experiments or cfg.blend.experiments
    if not names:
        raise ValueError("no experiments to blend: pass their names (medal blend -c CFG EXP [EXP ...]) or set blend.experiments")
    if len(set(names)) != len(names):
        raise ValueError(f"experiments {names} name one more than once")
    submission_name = submission_name or cfg.blend.submission_name
    d = cfg.data
    table = read_folds(cfg)[[d.id_col, d.label_col, "fold"]]
    classes = class_names(table[d.label_col])
    targets = label_codes(table[d.label_col], classes)
    folds = table["fold"].to_numpy()
    sample = read_sample_submission(cfg)
    test_ids = sample[d.id_col].tolist()
    members = [load_member(cfg, name, table, classes, test_ids) for name in names]

    models, per_fold = models_table(cfg.metric, members, targets, folds)
    corr = correlation_matrix(members)
    log.info("models (OOF %s):\n%s", cfg.metric, models.to_string(float_format="%.4f"))
    log.info("OOF correlation (Pearson):\n%s", corr.to_string(float_format="%.3f"))

    evaluations = _evaluate(cfg, np.stack([m.oof for m in members]), targets, folds)
    best = pick_best(evaluations, cfg.metric)
    models["weight"] = best.weights
    log.info("blend %s: weights %s; OOF %s in-sample %.4f, nested CV %.4f (best single model %.4f)", best.method,
             _weights_text(names, best.weights), cfg.metric, best.in_sample, best.nested, _best_single(cfg.metric, models))

    path = layout.submission_csv(cfg, submission_name)
    blended = apply_weights(np.stack([m.test for m in members]), best.weights, METHODS[best.method].space)
    write_csv(path, make_submission(sample, test_ids, blended, d.id_col, d.label_col, classes))
    check_submission(path, d.root / d.sample_submission, d.id_col, d.label_col, classes)
    log.info("submission written and checked: %s", path)
    report = {"metric": cfg.metric, "method": best.method, "members": names, "cv": models["cv"].to_dict(),
              "per_fold": per_fold, "cv_no_tta": _json_numbers(models["cv_no_tta"]),
              "tta_gain": _json_numbers(models["tta_gain"]),
              "weights": dict(zip(names, best.weights.tolist())),
              "blend_cv": best.nested, "blend_in_sample": best.in_sample,
              "methods": {e.method: _evaluation_json(e, names) for e in evaluations},
              "correlation": corr.to_dict(), "submission": str(path)}
    write_report(cfg, submission_name, report, models, corr)
    return report


def _evaluate(cfg: Config, oof: np.ndarray, targets: np.ndarray, folds: np.ndarray) -> list[Evaluation]:
    """Every method when blend.method is 'compare', else the configured one; each with in-sample and nested CV."""
    log = get_logger()
    ctx = FitContext(cfg.metric, cfg.blend, cfg.seed)
    names = list(METHODS) if cfg.blend.method == "compare" else [cfg.blend.method]
    evaluations = [evaluate_method(name, oof, targets, folds, ctx) for name in names]
    if len(evaluations) > 1:
        rows = {e.method: {"in_sample": e.in_sample, "nested_cv": e.nested, "nested_fold_std": float(np.std(e.nested_per_fold)),
                           "optimism": e.in_sample - e.nested} for e in evaluations}
        log.info("blend methods on OOF %s (nested: fitted on the other folds, scored on each held-out fold):\n%s",
                 cfg.metric, pd.DataFrame(rows).T.to_string(float_format="%.4f"))
    return evaluations


def _evaluation_json(e: Evaluation, names: list[str]) -> dict:
    return {"in_sample": e.in_sample, "nested_cv": e.nested, "nested_per_fold": e.nested_per_fold,
            "weights": dict(zip(names, e.weights.tolist())),
            "fold_weights": [dict(zip(names, w.tolist())) for w in e.fold_weights]}


def _json_numbers(column: pd.Series) -> dict:
    """A column as {model: value}, NaN (no tta.json) as null: JSON has no NaN."""
    return {k: None if np.isnan(v) else float(v) for k, v in column.items()}


def _weights_text(names: list[str], weights: np.ndarray) -> str:
    return ", ".join(f"{n} {w:.3f}" for n, w in zip(names, weights) if w > 0) or "none"


def _best_single(metric: str, models: pd.DataFrame) -> float:
    return float(models["cv"].max() if higher_is_better(metric) else models["cv"].min())

