"""train_fold: one timm model per fold, best checkpoint by the CV metric, OOF predictions by id.

The loop itself lives in medal.trainer (FoldTrainer); this module splits the
folds, skips finished ones, and turns a trained fold into its OOF file, its
hardest-example gallery, its learning curves and its diagnosis.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from medal.checkpoint import remove_stale_temporaries
from medal.config import Config, config_snapshot
from medal.data import class_names, image_path, read_folds
from medal.diagnosis import diagnose, plot_curves
from medal.gallery import save_hardest_oof
from medal.io import read_csv, write_csv, write_json, write_text
from medal.log import get_logger
from medal.metrics import score
from medal.models import build_model
from medal.predictions import prediction_frame
from medal.runtime import compute_threads, pick_device, seed_everything
from medal.trainer import FoldData, FoldTrainer

__all__ = ["FoldData", "FoldTrainer", "run_train", "split_fold", "train_fold", "write_full_oof"]


def split_fold(cfg: Config, table: pd.DataFrame, classes: list[str], fold: int) -> FoldData:
    index = {name: i for i, name in enumerate(classes)}
    targets = table[cfg.data.label_col].astype(str).map(index).to_numpy(dtype=np.int64)
    paths = [image_path(cfg, i, "train") for i in table[cfg.data.id_col]]
    is_valid = (table["fold"] == fold).to_numpy()
    if not is_valid.any():
        raise ValueError(f"fold {fold} has no rows in folds.csv (folds present: {sorted(table['fold'].unique())})")
    return FoldData(
        train_paths=[p for p, v in zip(paths, is_valid) if not v],
        train_targets=targets[~is_valid],
        valid_ids=table.loc[is_valid, cfg.data.id_col].tolist(),
        valid_paths=[p for p, v in zip(paths, is_valid) if v],
        valid_targets=targets[is_valid],
    )


def run_train(cfg: Config, fold: int | None = None) -> dict[int, float]:
    """Train the given fold, or every fold; returns each trained fold's best CV score."""
    log = get_logger()
    table = read_folds(cfg)
    classes = class_names(table[cfg.data.label_col])
    n_folds = int(table["fold"].max()) + 1
    if fold is not None and not 0 <= fold < n_folds:
        raise ValueError(f"--fold {fold} is out of range: folds.csv has folds 0..{n_folds - 1}")
    write_text(cfg.exp_dir / "config.yaml", config_snapshot(cfg))
    scores = {k: train_fold(cfg, table, classes, k) for k in ([fold] if fold is not None else range(n_folds))}
    if all((cfg.fold_dir(k) / "oof.csv").is_file() for k in range(n_folds)):
        write_full_oof(cfg, classes, n_folds)
    for k, value in scores.items():
        log.info("%s fold %d: best %s %.4f", cfg.name, k, cfg.metric, value)
    return scores


def write_full_oof(cfg: Config, classes: list[str], n_folds: int) -> float:
    """Concatenate the folds' OOF files into <exp>/oof.csv and log the overall CV."""
    parts = [read_csv(cfg.fold_dir(k) / "oof.csv", "fold OOF", [cfg.data.id_col], [cfg.data.id_col]) for k in range(n_folds)]
    oof = pd.concat(parts, ignore_index=True)
    write_csv(cfg.exp_dir / "oof.csv", oof)
    cv = score(cfg.metric, oof["target"].to_numpy(), oof[classes].to_numpy())
    write_json(cfg.exp_dir / "cv.json", {"metric": cfg.metric, "cv": cv, "n_folds": n_folds, "rows": len(oof)})
    get_logger().info("%s: OOF %s over %d folds = %.4f", cfg.name, cfg.metric, n_folds, cv)
    return cv


def train_fold(cfg: Config, table: pd.DataFrame, classes: list[str], fold: int) -> float:
    """Train one fold (resuming from last.pt when present); write best.pt, metrics.csv, oof.csv and done.json."""
    out = cfg.fold_dir(fold)
    done = out / "done.json"
    if done.is_file() and (out / "oof.csv").is_file():
        get_logger().info("%s fold %d is complete; skipping (delete %s to retrain)", cfg.name, fold, out)
        return float(pd.read_json(done, typ="series")["best_score"])
    stale = remove_stale_temporaries(out)
    if stale:
        get_logger().info("%s fold %d: removed %d unfinished temporary file(s) of an interrupted run", cfg.name, fold, len(stale))
    seed_everything(cfg.seed + fold)
    data = split_fold(cfg, table, classes, fold)
    device = pick_device(cfg.train.device)
    with compute_threads(device, cfg.train.cpu_threads):
        trainer = FoldTrainer(cfg, build_model(cfg.model, len(classes)).to(device), device, data, classes, fold)
        best_score, best_epoch = trainer.fit()
        valid_probs = trainer.predict_valid(out / "best.pt")
    oof = prediction_frame(cfg.data.id_col, data.valid_ids, classes, valid_probs,
                           fold=np.full(len(data.valid_ids), fold), target=data.valid_targets)
    write_csv(out / "oof.csv", oof)
    report = _report_fold(cfg, trainer, data, classes, valid_probs, fold)
    write_json(done, {"best_score": best_score, "best_epoch": best_epoch, "metric": cfg.metric, **report})
    return best_score


def _report_fold(cfg: Config, trainer: FoldTrainer, data: FoldData, classes: list[str],
                 valid_probs: np.ndarray, fold: int) -> dict:
    """The hardest-OOF gallery, the learning curves and the diagnosis of the last epoch; logs the diagnosis."""
    out, last = cfg.fold_dir(fold), trainer.history[-1]
    hardest: list[str] = []
    if cfg.train.gallery_size:
        hardest = save_hardest_oof(data.valid_paths, data.valid_ids, data.valid_targets, valid_probs, classes,
                                   cfg.train.gallery_size, out / "hardest_oof.png",
                                   f"{cfg.name} fold {fold}: hardest OOF images (highest loss first)")
    plot_curves(trainer.history, cfg.metric, out / "curves.png", f"{cfg.name} fold {fold}")
    diagnosis = diagnose(last["train_ce"], last["valid_loss"], cfg.train.overfit_ratio)
    if cfg.train.mixup.enabled:
        diagnosis["note"] = "the train loss is measured on mixed (mixup/cutmix) batches, which raises it"
    get_logger().info("%s fold %d diagnosis: %s (train CE %.4f vs validation CE %.4f at epoch %d): %s", cfg.name, fold,
                      diagnosis["verdict"], diagnosis["train_loss"], diagnosis["valid_loss"], last["epoch"] + 1,
                      diagnosis["advice"])
    return {"weights": trainer.best_weights, "epochs_trained": len(trainer.history),
            "stopped_early": len(trainer.history) < cfg.train.total_epochs, "diagnosis": diagnosis,
            "run_id": trainer.run_id, "hardest_oof": hardest}
