"""`medal report -c CFG`: one page about an experiment, built only from the files its stages wrote (nothing is
re-run): the run (environment, time, freshness), the CV table with the TTA gain per view, per fold the curves,
LR, progressive stages and diagnosis, the OOF confusion matrix with per-class precision and recall, the hardest
OOF images, the augmented samples, the LR-finder plot, and the resolved config."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from medal.core import layout, provenance
from medal.core.config import Config
from medal.core.io import read_csv, write_text
from medal.core.log import get_logger
from medal.core.metrics import score
from medal.core.report import Document
from medal.core.tables import class_names, fold_count, read_folds
from medal.images.gallery import hardest_png
from medal.images.paths import source_path
from medal.report.figures import confusion_png, curves, curves_png
from medal.report.freshness import stale

CONFUSION_TABLE_MAX = 30  # classes up to which the confusion matrix is also shown as a table of counts


@dataclass
class Fold:
    """What one fold's training left on disk; None where a file is missing."""
    index: int
    done: dict | None
    metrics: pd.DataFrame | None
    steps: pd.DataFrame | None

    @property
    def seconds(self) -> float:
        return float(self.metrics["seconds"].sum()) if self.metrics is not None and "seconds" in self.metrics else float("nan")


def write_experiment_report(cfg: Config, out: Path | None = None) -> Path:
    """Write the experiment's page (default <experiment>/report.html) and return its path."""
    path = out or cfg.exp_dir / "report.html"
    write_text(path, experiment_document(cfg).html(cfg.exp_dir))
    get_logger().info("%s: report written to %s", cfg.name, path)
    return path


def experiment_document(cfg: Config) -> Document:
    """The page's content; refuses an experiment with no trained fold, naming the command to run."""
    folds_file = layout.folds_csv(cfg)
    if not folds_file.is_file():
        raise FileNotFoundError(f"{folds_file} does not exist: run `{provenance.command(cfg, 'folds')}` and train first")
    table = read_folds(cfg)
    classes = class_names(table[cfg.data.label_col])
    folds = [read_fold(cfg, k) for k in range(fold_count(table))]
    if not any(f.done for f in folds):
        raise FileNotFoundError(f"experiment {cfg.name!r} has no trained fold under {cfg.exp_dir}: run "
                                f"`{provenance.command(cfg, 'train')}` first")
    tta = _json(layout.tta_json(cfg))
    doc = Document(f"{cfg.name}: experiment report")
    _run_section(doc, cfg, folds, tta)
    _cv_section(doc, cfg, folds, tta)
    _pseudo_section(doc, cfg, classes)
    for fold in folds:
        _fold_section(doc, cfg, fold)
    oof, source = oof_source(cfg)
    if oof is not None:
        _confusion_section(doc, cfg, oof, classes, source)
        _gallery_section(doc, cfg, oof, classes, source)
    _pictures_section(doc, cfg, folds)
    config = cfg.exp_dir / "config.yaml"
    doc.heading("Resolved config").text(f"`{config.name}`, as the folds were trained with:")
    doc.code(config.read_text() if config.is_file() else "(config.yaml is missing)")
    return doc


def read_fold(cfg: Config, k: int) -> Fold:
    folder = cfg.fold_dir(k)
    metrics, steps = folder / "metrics.csv", folder / "steps.csv"
    return Fold(k, _json(layout.fold_done(cfg, k)), pd.read_csv(metrics) if metrics.is_file() else None,
                pd.read_csv(steps) if steps.is_file() else None)


def oof_source(cfg: Config) -> tuple[pd.DataFrame | None, str]:
    """The experiment's OOF predictions: after TTA (oof_tta.csv) when infer ran, else train's oof.csv."""
    for path, what in [(layout.oof_tta_csv(cfg), "oof_tta.csv (after TTA)"), (layout.oof_csv(cfg), "oof.csv (no TTA)")]:
        if path.is_file():
            return pd.read_csv(path, dtype={cfg.data.id_col: str}), what
    return None, "none"


def cv_table(cfg: Config, folds: list[Fold]) -> pd.DataFrame:
    """Per trained fold: best score and epoch, the weights kept, epochs trained, early stop, verdict, seconds."""
    rows = {}
    for f in folds:
        if f.done is None:
            continue
        d = f.done
        rows[f"fold {f.index}"] = {cfg.metric: d["best_score"], "best epoch": d["best_epoch"],
                                   "weights": d.get("weights", "raw"), "epochs": d.get("epochs_trained"),
                                   "stopped early": "yes" if d.get("stopped_early") else "no",
                                   "diagnosis": d.get("diagnosis", {}).get("verdict", "-"), "seconds": f.seconds}
    return pd.DataFrame(rows).T.rename_axis("fold")


def tta_table(tta: dict) -> pd.DataFrame:
    """Per candidate view: its OOF score alone, the gain over identity, and whether greedy selection kept it."""
    per_view = tta.get("per_view", {})
    base = per_view.get("identity", tta.get("oof_identity"))
    return pd.DataFrame({view: {"OOF alone": value, "gain over identity": value - base if base is not None else np.nan,
                                "chosen": "yes" if view in tta.get("chosen", []) else "no"}
                         for view, value in per_view.items()}).T.rename_axis("view")


def confusion(oof: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Counts of (true class, predicted class = argmax of the OOF probabilities), every class in both axes."""
    predicted = oof[classes].to_numpy().argmax(axis=1)
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(counts, (oof["target"].to_numpy(dtype=np.int64), predicted), 1)
    return pd.DataFrame(counts, index=pd.Index(classes, name="true \\ predicted"), columns=classes)


def per_class(oof: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support of each class, from the OOF argmax (scikit-learn's)."""
    predicted = oof[classes].to_numpy().argmax(axis=1)
    p, r, f, n = precision_recall_fscore_support(oof["target"].to_numpy(dtype=np.int64), predicted,
                                                 labels=list(range(len(classes))), zero_division=0)
    return pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": n},
                        index=pd.Index(classes, name="class"))


def _run_section(doc: Document, cfg: Config, folds: list[Fold], tta: dict | None) -> None:
    t, trained = cfg.train, [f for f in folds if f.done]
    doc.heading("Run").text(
        f"Competition `{cfg.data.competition}`, metric **{cfg.metric}**, backbone `{cfg.model.backbone}`"
        f"{' (pretrained)' if cfg.model.pretrained or cfg.model.pretrained_file else ' (from scratch)'}, "
        f"{t.total_epochs} epochs at {t.image_size}px, batch {t.batch_size}, augment `{t.augment}`.",
        f"{len(trained)} of {len(folds)} folds trained; training took {sum(f.seconds for f in trained):.0f} s in all"
        + (f"; measuring the TTA views on the OOF took {sum(tta['seconds'].values()):.0f} s" if tta and tta.get("seconds") else "")
        + ".")
    environment = next((f.done["environment"] for f in trained if f.done.get("environment")), None)
    if environment:
        doc.table(pd.DataFrame({"value": environment}).rename_axis("trained with"))
    else:
        doc.text("Device and library versions were not recorded (folds trained by an older medal).")
    doc.bullets(_freshness(cfg))


def _freshness(cfg: Config) -> list[str]:
    """Whether train's gathered OOF and infer's predictions still match their inputs, as the stages would judge."""
    lines = []
    for stage, manifest in [("train", layout.train_manifest(cfg)), ("infer", layout.infer_manifest(cfg))]:
        if not manifest.is_file():
            lines.append(f"{stage}: not run to the end for this experiment (no {manifest.name})")
            continue
        reason = stale(manifest, cfg)
        lines.append(f"{stage}: current" if reason is None else f"{stage}: **stale**, {reason}")
    return lines


def _cv_section(doc: Document, cfg: Config, folds: list[Fold], tta: dict | None) -> None:
    table = cv_table(cfg, folds)
    scores = table[cfg.metric].astype(float)
    doc.heading("Cross-validation").table(table)
    summary = [f"Per fold {cfg.metric}: mean **{scores.mean():.4f} ± {scores.std(ddof=0):.4f}** (std over {len(scores)} folds)."]
    cv = _json(layout.cv_json(cfg))
    if cv:
        summary.append(f"OOF {cfg.metric} over all rows: **{cv['cv']:.4f}** without TTA.")
    if tta:
        summary.append(f"After TTA ({' + '.join(tta['chosen'])}, {tta.get('reduce', 'mean')}): "
                       f"**{tta['oof_tta']:.4f}**, a gain of {tta['gain']:+.4f}.")
    doc.text(*summary)
    if cv and cv.get("weights_cv"):
        weights = pd.DataFrame({f"OOF {cfg.metric}": cv["weights_cv"]}).rename_axis("weights")
        doc.subheading("Weight averaging: each set of weights on the OOF").table(weights)
        doc.text(f"best: each fold's best epoch (chosen on its own validation rows, so slightly optimistic); "
                 f"ema: the final EMA; swa, top_k: the averages (train.average). oof.csv and best.pt hold "
                 f"**{cfg.train.average.oof}**.")
    if tta:
        doc.subheading("TTA: each view on the OOF").table(tta_table(tta))


def pseudo_counts(cfg: Config, classes: list[str]) -> pd.Series | None:
    """The pseudo-labelled test rows train.pseudo_labels adds to every fold's training side, per class (its label
    column: the class the rows train as); None when the experiment uses none."""
    path = cfg.train.pseudo_labels
    if path is None:
        return None
    d = cfg.data
    labels = read_csv(path, "pseudo-label table (train.pseudo_labels)", [d.id_col, d.label_col], [d.label_col])[d.label_col]
    return labels.value_counts().reindex(classes, fill_value=0).rename("rows added").rename_axis("class")


def _pseudo_section(doc: Document, cfg: Config, classes: list[str]) -> None:
    counts = pseudo_counts(cfg, classes)
    if counts is None:
        return
    path = cfg.train.pseudo_labels
    made = _json(layout.pseudo_json(path)) or {}
    rule = {"threshold": f", top-class probability at least {made.get('threshold')}",
            "top_fraction": f", the most confident {made.get('top_fraction')} of each predicted class"}.get(made.get("rule"), "")
    source = f" from blend `{made['blend']}`{rule}" if made.get("blend") else ""
    kind = "soft labels" if made.get("soft") else "labels"
    doc.heading("Pseudo-labels").text(
        f"**{int(counts.sum())}** pseudo-labelled test rows (`{path}`{source}, {kind}) were added to the training side "
        "of every fold, never to validation: the CV above is measured on real labels only.")
    doc.table(counts.to_frame())


def _fold_section(doc: Document, cfg: Config, fold: Fold) -> None:
    doc.subheading(f"fold {fold.index}")
    if fold.done is None or fold.metrics is None:
        doc.text(f"fold {fold.index} is not trained (no done.json): run "
                 f"`{provenance.command(cfg, 'train', '--fold', str(fold.index))}`.")
        return
    c = curves(fold.metrics, fold.steps, cfg.metric)
    doc.figure(curves_png(c, cfg.metric, f"{cfg.name} fold {fold.index}"),
               f"fold {fold.index}: loss, {cfg.metric} and learning rate against epoch")
    d, g = fold.done, fold.done.get("diagnosis", {})
    stopped = ", stopped early" if d.get("stopped_early") else ""
    lines = [(f"Best {cfg.metric} **{d['best_score']:.4f}** at epoch {d['best_epoch']} ({d.get('weights', 'raw')} "
              f"weights), {d.get('epochs_trained')} epochs trained{stopped}.")]
    if g:
        lines.append(f"Diagnosis: **{g['verdict']}**: train CE {g['train_loss']:.4f} against validation CE "
                     f"{g['valid_loss']:.4f} at the last epoch (ratio {g['ratio']:.2f}; overfitting from "
                     f"{cfg.report.overfit_ratio:g}). {g['advice']}." + (f" Note: {g['note']}." if g.get("note") else ""))
    stages = fold.metrics.groupby("image_size", sort=False)["epoch"].agg(["min", "max"])
    if len(stages) > 1:
        lines.append("Progressive resizing: " + "; ".join(f"epochs {lo}-{hi} at {size}px" for size, (lo, hi)
                                                           in stages.iterrows()) + ".")
    doc.text(*lines)


def _confusion_section(doc: Document, cfg: Config, oof: pd.DataFrame, classes: list[str], source: str) -> None:
    counts = confusion(oof, classes)
    doc.heading("OOF confusion matrix").text(
        f"From `{source}`, {len(oof)} rows; predicted = the class of highest probability. "
        f"OOF {cfg.metric} {score(cfg.metric, oof['target'].to_numpy(dtype=np.int64), oof[classes].to_numpy()):.4f}.")
    doc.figure(confusion_png(counts, f"{cfg.name}: OOF confusion ({source.split(' ')[0]})"), "OOF confusion matrix")
    if len(classes) <= CONFUSION_TABLE_MAX:
        doc.table(counts)
    doc.subheading("Per-class precision and recall").table(per_class(oof, classes))


def _gallery_section(doc: Document, cfg: Config, oof: pd.DataFrame, classes: list[str], source: str) -> None:
    count = cfg.report.gallery_size
    if not count:
        return
    ids = oof[cfg.data.id_col].astype(str).tolist()
    paths = [source_path(cfg, i, "train") for i in ids]
    targets, probs = oof["target"].to_numpy(dtype=np.int64), oof[classes].to_numpy()
    doc.heading("Hardest OOF images")
    try:
        png, picked = hardest_png(paths, ids, targets, probs, classes, count,
                                  f"{cfg.name}: hardest OOF images (highest loss first)")
    except (OSError, FileNotFoundError) as err:  # the training images moved since: say so, keep the page
        doc.text(f"The images could not be read ({err}).")
        return
    doc.text(f"The {len(picked)} OOF rows of `{source}` with the highest loss (-log p of the true class), "
             "each with its true and predicted class and their probabilities.")
    doc.figure(png, "hardest OOF images")


def _pictures_section(doc: Document, cfg: Config, folds: list[Fold]) -> None:
    trained = [f for f in folds if f.done]
    grids = sorted(cfg.fold_dir(trained[0].index).glob("augment_*px.png"), key=lambda p: int(p.stem[8:-2])) if trained else []
    if grids:
        doc.heading("Augmented training samples").text(
            f"As the model sees them (fold {trained[0].index}, `train.augment={cfg.train.augment}`), per image size.")
        for grid in grids:
            doc.image(grid.relative_to(cfg.exp_dir).as_posix(), grid.stem)
    for plot in sorted(cfg.exp_dir.glob("lr_find_fold*.png")):
        found = _json(plot.with_suffix(".json")) or {}
        doc.heading(f"LR finder ({plot.stem.removeprefix('lr_find_')})")
        if found:
            doc.text(f"Suggested LR {found['suggested_lr']:.3g} ({found['rule']} rule, {found['steps']} steps at "
                     f"batch {found['batch_size']}, {found['image_size']}px).")
        doc.image(plot.name, plot.stem)


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
