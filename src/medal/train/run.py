"""train_fold: one timm model per fold, best checkpoint by the CV metric, OOF predictions by id.

The loop itself lives in medal.train.trainer (FoldTrainer); this module checks where each
fold stands (medal.train.state) before any work, refuses to skip or build on a fold made
under another recipe or from other folds unless told to retrain it, holds one lock per
fold, and turns a trained fold into its OOF file, its hardest-example gallery, its
learning curves, its diagnosis and, last, its manifest.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from medal.core import layout, provenance
from medal.core.config import Config, config_snapshot
from medal.core.environment import describe_device, versions
from medal.core.freshness import require_current_folds
from medal.core.io import (
    read_csv,
    remove_stale_temporaries,
    write_csv,
    write_json,
    write_text,
)
from medal.core.locks import exclusive
from medal.core.log import get_logger, set_progress
from medal.core.metrics import score
from medal.core.predictions import prediction_frame
from medal.core.tables import class_names, fold_count, read_folds
from medal.images.gallery import save_hardest_oof
from medal.modeling import distributed
from medal.modeling.models import build_model
from medal.modeling.runtime import (
    compute_threads,
    pick_device,
    precision,
    seed_everything,
)
from medal.tracking import Tracker, fold_tracker, track_cv
from medal.train.diagnosis import diagnose, plot_curves
from medal.train.fold import FoldData, pseudo_warning, read_pseudo_labels, split_fold
from medal.train.state import (
    COMPLETE,
    RESUME,
    STALE,
    FoldStatus,
    discard,
    fold_status,
    training_settings,
)
from medal.train.trainer import FoldTrainer

__all__ = ["FoldData", "FoldTrainer", "run_train", "split_fold", "train_fold", "write_full_oof"]


def run_train(cfg: Config, fold: int | None = None, force: bool = False,
              on_epoch: Callable[[int, dict], None] | None = None) -> dict[int, float]:
    """Train the given fold, or every fold; returns each fold's best CV score. A fold already trained under
    this recipe and these folds is skipped; a stale one is refused, or with `force` deleted and retrained.
    `on_epoch(fold, row)` sees each epoch's metrics row as it is written (medal.tune's pruning)."""
    log = get_logger()
    set_progress(cfg.report.progress_steps, cfg.report.progress_seconds)
    device = distributed.device_for(pick_device(cfg.runtime.device))
    here = distributed.start(device)  # under torchrun: join the process group
    require_current_folds(cfg)
    table = read_folds(cfg)
    classes = class_names(table[cfg.data.label_col])
    pseudo = read_pseudo_labels(cfg, classes)  # checked before any work; each fold reads it again
    n_folds = fold_count(table)
    if fold is not None and not 0 <= fold < n_folds:
        raise ValueError(f"--fold {fold} is out of range: folds.csv has folds 0..{n_folds - 1}")
    selected = [fold] if fold is not None else list(range(n_folds))
    settings = training_settings(cfg)
    status = {k: fold_status(cfg, k, settings) for k in selected}
    stale = {k: s.reason for k, s in status.items() if s.kind == STALE}
    if stale and not force:
        raise provenance.StaleError(_refusal(cfg, stale, fold))
    if pseudo is not None and (note := pseudo_warning(cfg)):
        log.warning(note)
    log.info(_start_line(cfg, table, classes, status, device, 0 if pseudo is None else len(pseudo.ids)))
    if here.main:  # under torchrun rank 0 alone writes files (and holds the locks)
        with exclusive(layout.lock_file(cfg.exp_dir, "train"), f"the files of experiment {cfg.name!r}", wait=True):
            # Only now, with every fold it will keep matching it: config.yaml names the recipe the folds have.
            write_text(cfg.exp_dir / "config.yaml", config_snapshot(cfg))
    scores = {k: train_fold(cfg, table, classes, k, force, on_epoch) for k in selected}
    if here.main:
        _finish(cfg, classes, n_folds, selected, settings, scores)
    distributed.stop()  # under torchrun: every rank waits for rank 0's OOF, then leaves the group
    return scores


def _finish(cfg: Config, classes: list[str], n_folds: int, selected: list[int], settings: dict,
            scores: dict[int, float]) -> None:
    """After the folds: warn of other stale folds, gather the OOF once every fold is complete, log the scores."""
    log = get_logger()
    others = [k for k in range(n_folds) if k not in selected and fold_status(cfg, k, settings).kind == STALE]
    if others:
        log.warning("%s: fold(s) %s were trained under another recipe or other folds; retrain them with `%s` "
                    "before infer", cfg.name, others, provenance.command(cfg, "train", "--force"))
    if all(fold_status(cfg, k, settings).kind == COMPLETE for k in range(n_folds)):
        write_full_oof(cfg, classes, n_folds)
    for k, value in scores.items():
        log.info("%s fold %d: best %s %.4f", cfg.name, k, cfg.metric, value)


def _start_line(cfg: Config, table: pd.DataFrame, classes: list[str], status: dict[int, FoldStatus],
                device: torch.device, pseudo_rows: int = 0) -> str:
    """What train will do, in one line: where, at what precision, which model, on how many images (and
    pseudo-labelled test rows), which folds."""
    t, r = cfg.train, cfg.runtime
    sizes = table["fold"].value_counts()
    split = ", ".join(f"fold {k}: {len(table) - sizes.get(k, 0)}/{sizes.get(k, 0)}" for k in status)
    todo = [k for k, s in status.items() if s.kind != COMPLETE]
    resumed = [k for k, s in status.items() if s.kind == RESUME]
    stale = [k for k, s in status.items() if s.kind == STALE]  # only with --force: retrained from scratch
    complete = [k for k, s in status.items() if s.kind == COMPLETE]
    params = parameter_count(cfg, len(classes))
    stages = t.stage_list()  # progressive stages, or one
    budget = " + ".join(f"{s.image_size}px, {s.epochs} epoch{'s' * (s.epochs != 1)}, batch {s.batch_size}" for s in stages)
    amp = "on" if r.amp and device.type == "cuda" else "off"
    where = describe_device(device, precision(device, r.amp, r.amp_dtype))  # with the GPU's name on CUDA
    here = distributed.world()
    ranks = f"; on {here.size} processes (torchrun), global batch x{here.size}" if here.distributed else ""
    return (f"{cfg.name}: train on {where['device']} ({where['precision']}, amp {amp}): {cfg.model.backbone} "
            f"({f'{params:,}' if params is not None else 'unknown'} parameters, {len(classes)} classes); "
            f"{len(table)} images (train/valid {split})"
            f"{f' +{pseudo_rows} pseudo-labelled rows (train only)' if pseudo_rows else ''}; to train: folds {todo or 'none'}"
            f"{f' ({resumed} resuming from last.pt)' if resumed else ''}"
            f"{f' ({stale} stale, retrained)' if stale else ''}; complete, skipped: {complete or 'none'}; "
            f"{budget}{ranks} -> {cfg.exp_dir}")


def parameter_count(cfg: Config, num_classes: int) -> int | None:
    """The model's parameter count, from a copy built on the meta device (no memory, no weights read);
    None for a model that cannot be built there."""
    shape = cfg.model.model_copy(update={"pretrained": False, "pretrained_file": None})
    try:
        with torch.device("meta"):
            model = build_model(shape, num_classes)
    except Exception:  # noqa: BLE001 - an init that reads tensor values; the count is not worth a failed start
        return None
    return sum(p.numel() for p in model.parameters())


def _refusal(cfg: Config, stale: dict[int, str], fold: int | None) -> str:
    only = ("--fold", str(fold)) if fold is not None else ()
    lines = [f"experiment {cfg.name!r}: {len(stale)} fold(s) do not match this config and folds.csv, so they "
             "are neither skipped nor resumed:"]
    lines += [f"  fold {k}: {reason}" for k, reason in stale.items()]
    lines.append(f"retrain them with `{provenance.command(cfg, 'train', *only, '--force')}` (their checkpoints are "
                 f"deleted first), or train this recipe as a new experiment: "
                 f"`{provenance.command(cfg, 'train', *only, 'name=NEW_NAME')}`")
    return "\n".join(lines)


def write_full_oof(cfg: Config, classes: list[str], n_folds: int) -> float:
    """Concatenate the folds' OOF files into <exp>/oof.csv and log the overall CV."""
    with exclusive(layout.lock_file(cfg.exp_dir, "train"), f"the files of experiment {cfg.name!r}", wait=True):
        manifest = layout.train_manifest(cfg)
        remove_stale_temporaries(cfg.exp_dir, [p.name for p in (layout.oof_csv(cfg), layout.cv_json(cfg), manifest)]
                                 + ["config.yaml"])
        provenance.invalidate(manifest)
        oof = _gathered(cfg, [layout.fold_oof(cfg, k) for k in range(n_folds)], "fold OOF")
        write_csv(layout.oof_csv(cfg), oof)
        cv = score(cfg.metric, oof["target"].to_numpy(), oof[classes].to_numpy())
        summary = {"metric": cfg.metric, "cv": cv, "n_folds": n_folds, "rows": len(oof),
                   **_weights_cv(cfg, classes, n_folds)}
        write_json(layout.cv_json(cfg), summary)
        provenance.write_manifest(
            manifest, cfg, "train", made=f"the OOF of {cfg.name!r} was gathered",
            settings=training_settings(cfg), outputs=[layout.oof_csv(cfg), layout.cv_json(cfg)],
            inputs=[provenance.Input(layout.fold_oof(cfg, k), layout.fold_manifest(cfg, k)) for k in range(n_folds)])
    get_logger().info("%s: OOF %s over %d folds = %.4f", cfg.name, cfg.metric, n_folds, cv)
    track_cv(cfg, layout.oof_csv(cfg), summary)
    return cv


def _gathered(cfg: Config, paths: list, what: str) -> pd.DataFrame:
    """The folds' OOF files, one after another (each read and checked as `what`)."""
    return pd.concat([read_csv(path, what, [cfg.data.id_col], [cfg.data.id_col]) for path in paths], ignore_index=True)


def _weights_cv(cfg: Config, classes: list[str], n_folds: int) -> dict:
    """With train.average on: the OOF score of each set of weights every fold scored (the best epoch's, the final
    EMA, SWA, top-k; oof.csv holds the train.average.oof ones), as {"weights_cv": {"best": ..., "swa": ...}}."""
    names = [name for name in ("best", "ema", "swa", "top_k")
             if all(layout.fold_weights_oof(cfg, k, name).is_file() for k in range(n_folds))]
    if not names:
        return {}
    found = {}
    for name in names:
        oof = _gathered(cfg, [layout.fold_weights_oof(cfg, k, name) for k in range(n_folds)], f"fold OOF of the {name} weights")
        found[name] = score(cfg.metric, oof["target"].to_numpy(), oof[classes].to_numpy())
    get_logger().info("%s: OOF %s by weights: %s (oof.csv: %s)", cfg.name, cfg.metric,
                      ", ".join(f"{name} {value:.4f}" for name, value in found.items()), cfg.train.average.oof)
    return {"weights_cv": found}


def train_fold(cfg: Config, table: pd.DataFrame, classes: list[str], fold: int, force: bool = False,
               on_epoch: Callable[[int, dict], None] | None = None) -> float:
    """Train one fold, holding its lock (resuming from last.pt when present); write best.pt, metrics.csv,
    oof.csv, done.json and, last, the fold's manifest."""
    with distributed.only_main(exclusive(layout.lock_file(cfg.fold_dir(fold), "train"), f"fold {fold} of {cfg.name!r}")):
        return _train_fold(cfg, table, classes, fold, force, on_epoch)


def _train_fold(cfg: Config, table: pd.DataFrame, classes: list[str], fold: int, force: bool,
                on_epoch: Callable[[int, dict], None] | None) -> float:
    log = get_logger()
    main = distributed.world().main
    out = cfg.fold_dir(fold)
    done = layout.fold_done(cfg, fold)
    settings = training_settings(cfg)
    status = fold_status(cfg, fold, settings)  # again, under the lock: another run may have finished it
    if status.kind == COMPLETE:
        log.info("%s fold %d is complete under this recipe and folds.csv; skipping", cfg.name, fold)
        return float(pd.read_json(done, typ="series")["best_score"])
    if status.kind == STALE:
        if not force:
            raise provenance.StaleError(_refusal(cfg, {fold: status.reason}, fold))
        log.info("%s fold %d is stale (%s); deleting its files to retrain it (--force)", cfg.name, fold, status.reason)
        if main:
            discard(cfg, fold)
    if main:
        stale = remove_stale_temporaries(out)
        if stale:
            log.info("%s fold %d: removed %d unfinished temporary file(s) of an interrupted run", cfg.name, fold, len(stale))
        provenance.invalidate(layout.fold_manifest(cfg, fold))
    distributed.barrier()  # the other ranks start from what rank 0 left
    seed_everything(cfg.seed + fold)
    data = split_fold(cfg, table, classes, fold)
    device = distributed.device_for(pick_device(cfg.runtime.device))
    # The run ends with the fold, marked failed if the fold fails; rank 0 alone talks to W&B.
    with fold_tracker(cfg, fold) if main else Tracker.off() as tracking:
        with compute_threads(device, cfg.runtime.cpu_threads):
            trainer = FoldTrainer(cfg, build_model(cfg.model, len(classes)).to(device), device, data, classes, fold, tracking,
                                  on_epoch=None if on_epoch is None else lambda row: on_epoch(fold, row))
            best_score, best_epoch = trainer.fit()
            valid_probs = trainer.predict_valid()
        if not main:
            distributed.barrier()  # until rank 0 has written the fold's files
            return best_score
        def frame(probs: np.ndarray) -> pd.DataFrame:
            return prediction_frame(cfg.data.id_col, data.valid_ids, classes, probs,
                                    fold=np.full(len(data.valid_ids), fold), target=data.valid_targets)

        write_csv(layout.fold_oof(cfg, fold), frame(valid_probs))
        for weights, (_, probs) in trainer.alternatives.items():
            write_csv(layout.fold_weights_oof(cfg, fold, weights), frame(probs))
        report = {"best_score": best_score, "best_epoch": best_epoch, "metric": cfg.metric,
                  "environment": {**describe_device(device, precision(device, cfg.runtime.amp, cfg.runtime.amp_dtype)),
                                  **versions()},
                  **_report_fold(cfg, trainer, data, classes, valid_probs, fold)}
        write_json(done, report)
        _track_fold(tracking, cfg, fold, report)
    provenance.write_manifest(
        layout.fold_manifest(cfg, fold), cfg, "train", args=("--force",), made=f"fold {fold} of {cfg.name!r} was trained",
        settings=settings,
        inputs=[provenance.Input(layout.folds_csv(cfg), layout.folds_manifest(cfg), digest=trainer.folds_sha256)],
        outputs=[layout.best_checkpoint(cfg, fold), layout.fold_oof(cfg, fold), done])
    trainer.averages.discard_snapshots()  # the averages are scored, and in best.pt when chosen
    distributed.barrier()
    return best_score


def _track_fold(tracking: Tracker, cfg: Config, fold: int, report: dict) -> None:
    """The fold's end on its W&B run: done.json as the summary, its plots, and its OOF table as an artifact."""
    out = cfg.fold_dir(fold)
    tracking.summarise(report)
    tracking.log_images({"curves": out / "curves.png", "hardest_oof": out / "hardest_oof.png",
                         **{grid.stem: grid for grid in sorted(out.glob("augment_*px.png"))}})
    tracking.log_files(f"{cfg.name}-oof-fold{fold}", "oof", [layout.fold_oof(cfg, fold)])


def _report_fold(cfg: Config, trainer: FoldTrainer, data: FoldData, classes: list[str],
                 valid_probs: np.ndarray, fold: int) -> dict:
    """The hardest-OOF gallery, the learning curves and the diagnosis of the last epoch; logs the diagnosis."""
    out, last = cfg.fold_dir(fold), trainer.history[-1]
    hardest: list[str] = []
    if cfg.report.gallery_size:
        hardest = save_hardest_oof(data.valid_paths, data.valid_ids, data.valid_targets, valid_probs, classes,
                                   cfg.report.gallery_size, out / "hardest_oof.png",
                                   f"{cfg.name} fold {fold}: hardest OOF images (highest loss first)")
    plot_curves(trainer.history, cfg.metric, out / "curves.png", f"{cfg.name} fold {fold}")
    diagnosis = diagnose(last["train_ce"], last["valid_loss"], cfg.report.overfit_ratio)
    if cfg.train.mixup.enabled:
        diagnosis["note"] = "the train loss is measured on mixed (mixup/cutmix) batches, which raises it"
    get_logger().info("%s fold %d diagnosis: %s (train CE %.4f vs validation CE %.4f at epoch %d): %s", cfg.name, fold,
                      diagnosis["verdict"], diagnosis["train_loss"], diagnosis["valid_loss"], last["epoch"],
                      diagnosis["advice"])
    return {"weights": trainer.best_weights, "epochs_trained": len(trainer.history),
            **({"weights_scores": {name: value for name, (value, _) in trainer.alternatives.items()},
                "averaged_epochs": trainer.averages.describe()} if trainer.averages.enabled else {}),
            "stopped_early": len(trainer.history) < cfg.train.total_epochs, "diagnosis": diagnosis,
            "run_id": trainer.run_id, "hardest_oof": hardest}
