"""blend: compare experiments on OOF, fit a blend with an honest (nested) CV, write and check the submission."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from medal.blend.members import Member, correlation_matrix, load_member
from medal.blend.methods import (
    METHODS,
    Evaluation,
    FitContext,
    apply_weights,
    evaluate_method,
    methods_for,
    pick_best,
)
from medal.blend.report import models_table, write_report
from medal.core import layout, provenance
from medal.core.config import Config
from medal.core.freshness import require_current_folds
from medal.core.io import remove_stale_temporaries, write_csv
from medal.core.locks import exclusive
from medal.core.log import get_logger, set_progress
from medal.core.metrics import higher_is_better, reads_scores
from medal.core.predictions import prediction_frame
from medal.core.submission import (
    check_submission,
    make_submission,
    not_probabilities,
    submission_format,
)
from medal.core.tables import (
    class_names,
    label_codes,
    read_folds,
    read_sample_submission,
)
from medal.tracking import track_blend


def run_blend(cfg: Config, experiments: list[str] | None = None, submission_name: str | None = None) -> dict:
    """Blend the experiments; write <submission_dir>/<name>.csv, checked, a report beside the outputs and,
    last, the blend's manifest. One blend of a name at a time (a lock in blend_<name>/)."""
    names = experiments or cfg.blend.experiments
    if not names:
        raise ValueError("no experiments to blend: pass their names (medal blend -c CFG EXP [EXP ...]) or set blend.experiments")
    if len(set(names)) != len(names):
        raise ValueError(f"experiments {names} name one more than once")
    name = submission_name or cfg.blend.submission_name
    set_progress(cfg.report.progress_steps, cfg.report.progress_seconds)
    with exclusive(layout.lock_file(layout.blend_dir(cfg, name), "blend"), f"blend {name!r}"):
        # What a killed blend of this name left half-written: its report folder is its own, and of the
        # submission folder only this submission.
        remove_stale_temporaries(layout.blend_dir(cfg, name))
        remove_stale_temporaries(layout.submission_csv(cfg, name).parent, [layout.submission_csv(cfg, name).name])
        return _blend(cfg, names, name)


def _blend(cfg: Config, names: list[str], name: str) -> dict:
    log = get_logger()
    d = cfg.data
    log.info("%s: blend %d experiment(s) %s on OOF %s, method %s -> %s (report in %s)", d.competition, len(names),
             names, cfg.metric, cfg.blend.method, layout.submission_csv(cfg, name), layout.blend_dir(cfg, name))
    require_current_folds(cfg)
    table = read_folds(cfg)[[d.id_col, d.label_col, "fold"]]
    classes = class_names(table[d.label_col])
    targets = label_codes(table[d.label_col], classes)
    folds = table["fold"].to_numpy()
    sample = read_sample_submission(cfg)
    test_ids = sample[d.id_col].tolist()
    members = [load_member(cfg, member, table, classes, test_ids) for member in names]
    inputs = _inputs(cfg, names)

    models, per_fold = models_table(cfg.metric, members, targets, folds)
    corr = correlation_matrix(members)
    log.info("models (OOF %s):\n%s", cfg.metric, models.to_string(float_format="%.4f"))
    log.info("OOF correlation (Pearson):\n%s", corr.to_string(float_format="%.3f"))

    if len(members) == 1:
        evaluations = [_single(members[0], models, per_fold)]
        log.info("blend of one experiment (%s): no method to choose; its test predictions are written as they are",
                 names[0])
    else:
        evaluations = _evaluate(cfg, np.stack([m.oof for m in members]), targets, folds)
    best = pick_best(evaluations, cfg.metric)
    models["weight"] = best.weights
    log.info("blend %s: weights %s; OOF %s in-sample %.4f, nested CV %.4f (best single model %.4f)", best.method,
             _weights_text(names, best.weights), cfg.metric, best.in_sample, best.nested, _best_single(cfg.metric, models))

    path = layout.submission_csv(cfg, name)
    blended = apply_weights(np.stack([m.test for m in members]), best.weights, _space(best.method))
    if submission_format(sample, d.id_col, d.label_col, classes) == "probs" and not reads_scores(cfg.metric):
        blended = _as_probabilities(blended, test_ids, cfg.metric, best.method, names)
    provenance.invalidate(layout.blend_manifest(cfg, name))  # until the new one is written, nothing vouches for these
    write_csv(path, make_submission(sample, test_ids, blended, d.id_col, d.label_col, classes))
    check_submission(path, d.root / d.sample_submission, d.id_col, d.label_col, classes, metric=cfg.metric)
    log.info("submission written and checked: %s", path)
    held = _write_test_probs(cfg, name, test_ids, classes, blended, _space(best.method))
    report = {"metric": cfg.metric, "method": best.method, "members": names, "cv": models["cv"].to_dict(),
              "per_fold": per_fold, "cv_no_tta": _json_numbers(models["cv_no_tta"]),
              "tta_gain": _json_numbers(models["tta_gain"]), "tta_views": models["tta_views"].to_dict(),
              "weights": dict(zip(names, best.weights.tolist())),
              "blend_cv": best.nested, "blend_in_sample": best.in_sample,
              "methods": {e.method: _evaluation_json(e, names) for e in evaluations},
              "correlation": corr.to_dict(), "submission": str(path),
              "test_probs": {"path": str(layout.blend_test_probs(cfg, name)), "holds": held}}
    write_report(cfg, name, report, corr)
    _write_manifest(cfg, names, name, inputs, path)
    track_blend(cfg, name, report, layout.blend_dir(cfg, name))
    return report


# The method of a blend of one experiment: nothing is fitted, its predictions are the submission.
SINGLE = "single"


def _single(member: Member, models: pd.DataFrame, per_fold: dict) -> Evaluation:
    """The one member at weight 1. Nothing is fitted, so its nested CV is its OOF CV."""
    cv = float(models.loc[member.name, "cv"])
    return Evaluation(SINGLE, np.ones(1), cv, cv, per_fold[member.name], [np.ones(1)] * len(per_fold[member.name]))


def _space(method: str) -> str:
    return "probs" if method == SINGLE else METHODS[method].space


def _as_probabilities(blended: np.ndarray, test_ids: list[str], metric: str, method: str, names: list[str]) -> np.ndarray:
    """The blended test rows renormalised over float drift, for probability columns that `metric` reads as
    probabilities; refused, rather than written, when they are ranks or scores."""
    bad = not_probabilities(blended)
    if len(bad):
        first = bad[0]
        raise ValueError(
            f"the {method} blend of {names} gives {len(bad)} of {len(blended)} test rows that are not probabilities "
            f"(the row of id {test_ids[first]!r} sums to {blended[first].sum():.6g}), but the sample submission takes "
            f"one probability per class and metric {metric!r} reads them as probabilities: nothing was written. "
            "A member inferred with infer.fold_average=rank holds ranks: run `medal infer` for it with "
            "infer.fold_average=mean")
    return blended / blended.sum(axis=1, keepdims=True)


def _write_test_probs(cfg: Config, name: str, test_ids: list[str], classes: list[str], blended: np.ndarray,
                      space: str) -> str:
    """The blended test rows as blend_<name>/test_probs.csv (id, one column per class), whatever format the
    submission takes, for `medal pseudo`. Returns what they hold: 'probabilities' (renormalised over float drift),
    or 'ranks' (per-class ranks in [0, 1], written as they are) for a rank blend or members inferred with
    infer.fold_average=rank."""
    probabilities = space != "rank" and not len(not_probabilities(blended))
    values = blended / blended.sum(axis=1, keepdims=True) if probabilities else blended
    write_csv(layout.blend_test_probs(cfg, name), prediction_frame(cfg.data.id_col, test_ids, classes, values))
    return "probabilities" if probabilities else "ranks"


def blend_settings(cfg: Config) -> dict:
    """The config values that shape a blend's submission (the members and the output folder are not settings:
    the members are its inputs)."""
    return {"metric": cfg.metric, "seed": cfg.seed,
            "blend": cfg.blend.model_dump(mode="json", exclude={"experiments", "submission_dir", "submission_name"})}


def _inputs(cfg: Config, names: list[str]) -> list[provenance.Input]:
    """The files a blend reads, hashed as they are now, just after reading them: the manifest then records
    what was blended even if an infer rewrites a member's files before the blend ends."""
    d = cfg.data
    inputs = [provenance.Input(layout.folds_csv(cfg), layout.folds_manifest(cfg)),
              provenance.Input(d.root / d.sample_submission, key="sample_submission.csv")]
    for member in names:
        files = [layout.oof_tta_csv(cfg, member), layout.test_pred_csv(cfg, member), layout.tta_json(cfg, member)]
        inputs += [provenance.Input(file, layout.infer_manifest(cfg, member))
                   for file in files if file.is_file()]  # tta.json only feeds the report, when infer wrote one
    return [replace(i, digest=provenance.sha256(i.path)) for i in inputs]


def _write_manifest(cfg: Config, names: list[str], name: str, inputs: list[provenance.Input], path: Path) -> None:
    provenance.write_manifest(
        layout.blend_manifest(cfg, name), cfg, "blend", args=(*names, "--name", name),
        made=f"submission {name!r} was blended", settings=blend_settings(cfg),
        inputs=inputs, outputs=[path, layout.blend_test_probs(cfg, name), layout.blend_dir(cfg, name) / "blend.json"])


def _evaluate(cfg: Config, oof: np.ndarray, targets: np.ndarray, folds: np.ndarray) -> list[Evaluation]:
    """Every method the metric can use (methods_for) when blend.method is 'compare', else the configured one;
    each with in-sample and nested CV."""
    log = get_logger()
    ctx = FitContext(cfg.metric, cfg.blend, cfg.seed)
    names = methods_for(cfg.metric) if cfg.blend.method == "compare" else [cfg.blend.method]
    skipped = [name for name in METHODS if name not in names] if cfg.blend.method == "compare" else []
    if skipped:
        log.info("compare leaves out %s: it blends per-class ranks, and metric %s reads probabilities",
                 ", ".join(skipped), cfg.metric)
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

