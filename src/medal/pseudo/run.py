"""pseudo: a blend's confident test predictions as an extra training table (pseudo_<name>/pseudo.csv).

Reads blend_<blend>/test_probs.csv once the blend's manifest vouches for it (and for everything up its chain),
selects rows by a confidence threshold or the top share of each predicted class (medal.pseudo.select), and
writes the table (id, label: the predicted class; with --soft one probability column per class), pseudo.json,
report.md, the resolved config and, last, a manifest. Training takes the table through train.pseudo_labels and
adds its rows to the training side of every fold, never to validation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medal.core import layout, provenance
from medal.core.config import Config, config_snapshot
from medal.core.freshness import require_current_folds
from medal.core.io import remove_stale_temporaries, write_csv, write_json, write_text
from medal.core.locks import exclusive
from medal.core.log import get_logger
from medal.core.predictions import read_predictions
from medal.core.submission import not_probabilities
from medal.core.tables import class_names, read_folds, read_sample_submission
from medal.pseudo.report import pseudo_document
from medal.pseudo.select import confidence, select_threshold, select_top_fraction


def run_pseudo(cfg: Config, blend: str, *, threshold: float | None = None, top_fraction: float | None = None,
               soft: bool = False, name: str | None = None) -> dict:
    """Select the pseudo-labelled rows of blend `blend` by exactly one of `threshold` (top-class probability at
    least T) and `top_fraction` (per predicted class its most confident F); write pseudo_<name>/ (name defaults to
    the blend's) and return pseudo.json's content. Refuses a missing or stale blend, and a selection of no rows."""
    if (threshold is None) == (top_fraction is None):
        raise ValueError("give exactly one rule: --threshold T (keep rows whose top probability is at least T) or "
                         "--top-fraction F (keep each predicted class's most confident share F)")
    name = name or blend
    folder = layout.pseudo_dir(cfg, name)
    with exclusive(layout.lock_file(folder, "pseudo"), f"pseudo-label table {name!r}"):
        remove_stale_temporaries(folder)
        return _pseudo(cfg, blend, threshold, top_fraction, soft, name)


def _pseudo(cfg: Config, blend: str, threshold: float | None, top_fraction: float | None, soft: bool,
            name: str) -> dict:
    d, log = cfg.data, get_logger()
    args = ("--from", blend, *(("--threshold", str(threshold)) if threshold is not None else
                               ("--top-fraction", str(top_fraction))), *(("--soft",) if soft else ()), "--name", name)
    require_current_folds(cfg)
    source = _current_blend(cfg, blend, args)
    digest = provenance.sha256(source)  # before reading: the manifest records the content that was read
    classes = class_names(read_folds(cfg)[d.label_col])
    frame = read_predictions(source, d.id_col, classes, f"blend {blend!r} test predictions")
    probs = frame[classes].to_numpy(dtype=np.float64)
    _check_rows(cfg, blend, source, frame, probs)
    keep = select_threshold(probs, threshold) if threshold is not None else select_top_fraction(probs, top_fraction)
    if not keep.any():
        raise ValueError(f"no test row of blend {blend!r} has a top-class probability of at least {threshold} "
                         f"(the highest is {confidence(probs).max():.4f}): nothing was written; lower --threshold")
    picked = frame.loc[keep, [d.id_col]].reset_index(drop=True)
    picked[d.label_col] = np.asarray(classes)[probs[keep].argmax(axis=1)]
    if soft:
        picked = pd.concat([picked, pd.DataFrame(probs[keep], columns=classes)], axis=1)
    summary = _summary(cfg, blend, source, name, probs, keep, classes, threshold, top_fraction, soft)
    table = layout.pseudo_csv(cfg, name)
    provenance.invalidate(layout.pseudo_manifest(table))  # until the new one is written, nothing vouches for these
    write_csv(table, picked)
    write_json(layout.pseudo_json(table), summary)
    write_text(table.parent / "config.yaml", config_snapshot(cfg))
    write_text(table.parent / "report.md", pseudo_document(summary, probs, keep).markdown())
    provenance.write_manifest(
        layout.pseudo_manifest(table), cfg, "pseudo", args=args, made=f"pseudo-label table {name!r} was selected",
        settings={"threshold": threshold, "top_fraction": top_fraction, "soft": soft},
        inputs=[provenance.Input(source, layout.blend_manifest(cfg, blend), digest=digest),
                provenance.Input(layout.folds_csv(cfg), layout.folds_manifest(cfg)),
                provenance.Input(d.root / d.sample_submission, key="sample_submission.csv")],
        outputs=[table, layout.pseudo_json(table)])
    log.info("%s: %d of %d test rows pseudo-labelled (%s) from blend %r: %s -> %s; train on them with "
             "train.pseudo_labels=%s", d.competition, summary["rows"], summary["test_rows"], _rule(summary), blend,
             ", ".join(f"{c} {n}" for c, n in summary["per_class"].items() if n), table, table)
    return summary


def _current_blend(cfg: Config, blend: str, args: tuple[str, ...]) -> Path:
    """blend_<blend>/test_probs.csv, once the blend's manifest vouches for it and for every input up its chain."""
    manifest, source = layout.blend_manifest(cfg, blend), layout.blend_test_probs(cfg, blend)
    again = provenance.command(cfg, "pseudo", *args)
    try:
        record = provenance.verify(manifest, f"there is no blend {blend!r} ({manifest} is missing): run "
                                   f"`{provenance.command(cfg, 'blend', 'EXP', '...', '--name', blend)}` first",
                                   cfg)
    except provenance.StaleError as err:
        raise provenance.StaleError(f"blend {blend!r} is not current: {err}, then `{again}`") from None
    if source.name not in {Path(e["path"]).name for e in record["outputs"].values()}:
        raise provenance.StaleError(f"blend {blend!r} was made before blends wrote their test predictions "
                                    f"({source.name}): run `{provenance.command(cfg, 'blend', *record['args'])}`, "
                                    f"then `{again}`")
    return source


def _check_rows(cfg: Config, blend: str, source: Path, frame: pd.DataFrame, probs: np.ndarray) -> None:
    """Every id a test id of sample_submission.csv, and every row a probability distribution (not ranks)."""
    d = cfg.data
    known = set(read_sample_submission(cfg)[d.id_col])
    unknown = [i for i in frame[d.id_col] if i not in known]
    if unknown:
        raise ValueError(f"{source} has {len(unknown)} id(s) that are not in {d.root / d.sample_submission}, e.g. "
                         f"{unknown[:5]}: run `{provenance.command(cfg, 'blend', '--name', blend)}` again")
    bad = not_probabilities(probs)
    if len(bad):
        raise ValueError(f"{source} holds per-class ranks, not probabilities (the row of id "
                         f"{frame[d.id_col].iloc[bad[0]]!r} sums to {probs[bad[0]].sum():.4g}): a rank blend, or a "
                         "member inferred with infer.fold_average=rank, says nothing about confidence. Blend with "
                         "blend.method=mean, greedy, caruana or optimize over members inferred with fold_average=mean")


def _summary(cfg: Config, blend: str, source: Path, name: str, probs: np.ndarray, keep: np.ndarray,
             classes: list[str], threshold: float | None, top_fraction: float | None, soft: bool) -> dict:
    """pseudo.json: the rule, the rows kept per class and the lowest confidence kept in each."""
    predicted, conf = probs.argmax(axis=1), confidence(probs)
    return {
        "name": name, "blend": blend, "source": str(source), "table": str(layout.pseudo_csv(cfg, name)),
        "rule": "threshold" if threshold is not None else "top_fraction", "threshold": threshold,
        "top_fraction": top_fraction, "soft": soft, "test_rows": len(probs), "rows": int(keep.sum()),
        "per_class": {c: int((keep & (predicted == i)).sum()) for i, c in enumerate(classes)},
        "predicted_per_class": {c: int((predicted == i).sum()) for i, c in enumerate(classes)},
        "lowest_confidence_kept": {c: float(conf[keep & (predicted == i)].min()) if (keep & (predicted == i)).any()
                                   else None for i, c in enumerate(classes)},
        "confidence_kept": _quantiles(conf[keep]), "confidence_all": _quantiles(conf),
    }


def _quantiles(values: np.ndarray) -> dict:
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


def _rule(summary: dict) -> str:
    if summary["rule"] == "threshold":
        return f"top-class probability >= {summary['threshold']}"
    return f"the most confident {summary['top_fraction']:g} of each predicted class"
