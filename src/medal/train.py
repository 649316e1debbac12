"""train_fold: one timm model per fold, best checkpoint by the CV metric, OOF predictions by id."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from medal.augment import eval_transform, train_transform
from medal.config import Config, config_snapshot
from medal.data import ImageDataset, class_names, image_path, read_folds
from medal.io import read_csv, save_torch, write_csv, write_json, write_text
from medal.log import get_logger, progress
from medal.metrics import is_better, score
from medal.models import build_model, normalisation
from medal.predict import predict_probs
from medal.predictions import prediction_frame
from medal.runtime import autocast, make_loader, pick_device, seed_everything


@dataclass
class FoldData:
    """The rows of one fold: train and validation ids, paths and class indices."""
    train_paths: list[Path]
    train_targets: np.ndarray
    valid_ids: list[str]
    valid_paths: list[Path]
    valid_targets: np.ndarray


def split_fold(cfg: Config, table: pd.DataFrame, classes: list[str], fold: int) -> FoldData:
    index = {name: i for i, name in enumerate(classes)}
    targets = table[cfg.data.label_col].map(index).to_numpy(dtype=np.int64)
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
    """Train one fold (resuming from last.pt when present); write best.pt, metrics.csv and oof.csv."""
    out = cfg.fold_dir(fold)
    done = out / "done.json"
    if done.is_file() and (out / "oof.csv").is_file():
        get_logger().info("%s fold %d is complete; skipping (delete %s to retrain)", cfg.name, fold, out)
        return float(pd.read_json(done, typ="series")["best_score"])
    seed_everything(cfg.seed + fold)
    device = pick_device(cfg.train.device)
    data = split_fold(cfg, table, classes, fold)
    model = build_model(cfg.model, len(classes)).to(device)
    stats = normalisation(model)
    trainer = FoldTrainer(cfg, model, device, data, train_transform(cfg.train.augment, cfg.train.image_size, stats),
                          eval_transform(cfg.train.image_size, stats), fold)
    best_score, best_epoch = trainer.fit(classes)
    valid_probs = trainer.predict_valid(out / "best.pt")
    oof = prediction_frame(cfg.data.id_col, data.valid_ids, classes, valid_probs,
                           fold=np.full(len(data.valid_ids), fold), target=data.valid_targets)
    write_csv(out / "oof.csv", oof)
    write_json(done, {"best_score": best_score, "best_epoch": best_epoch, "metric": cfg.metric})
    return best_score


class FoldTrainer:
    """The explicit loop for one fold: forward, loss, backward, step, schedule; validate; checkpoint."""

    def __init__(self, cfg: Config, model: torch.nn.Module, device: torch.device, data: FoldData,
                 train_tf, valid_tf, fold: int) -> None:
        t = cfg.train
        self.cfg, self.model, self.device, self.fold = cfg, model, device, fold
        self.out = cfg.fold_dir(fold)
        self.train_set = ImageDataset(data.train_paths, data.train_targets, train_tf)
        self.generator = torch.Generator()
        self.train_loader = make_loader(self.train_set, t.batch_size, t.num_workers, device, shuffle=True,
                                        generator=self.generator, drop_last=len(self.train_set) > t.batch_size)
        self.valid_loader = make_loader(ImageDataset(data.valid_paths, data.valid_targets, valid_tf),
                                        t.batch_size, t.num_workers, device)
        self.valid_targets = data.valid_targets
        self.optimizer = create_optimizer_v2(model, opt="adamw", lr=t.lr, weight_decay=t.weight_decay)
        steps, warmup = len(self.train_loader), int(t.warmup_epochs * len(self.train_loader))
        # Per-step schedule: warmup first, then one cosine over the remaining steps.
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=max(t.epochs * steps - warmup, 1), lr_min=t.min_lr,
                                           warmup_t=warmup, warmup_lr_init=t.min_lr,
                                           warmup_prefix=True, t_in_epochs=False)
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        self.history: list[dict] = []
        self.start_epoch, self.best_score, self.best_epoch = 0, None, -1

    def fit(self, classes: list[str]) -> tuple[float, int]:
        log = get_logger()
        self._resume()
        for epoch in range(self.start_epoch, self.cfg.train.epochs):
            started = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            probs, valid_loss = predict_probs(self.model, self.valid_loader, self.device, self.cfg.train.amp, desc="valid")
            value = score(self.cfg.metric, self.valid_targets, probs)
            if is_better(self.cfg.metric, value, self.best_score):
                self.best_score, self.best_epoch = value, epoch
                save_torch(self.out / "best.pt", {"model": self.model.state_dict(), "classes": classes, "epoch": epoch,
                                                  "score": value, "backbone": self.cfg.model.backbone})
            self.history.append({"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                                 "valid_loss": valid_loss, self.cfg.metric: value, "seconds": time.perf_counter() - started})
            write_csv(self.out / "metrics.csv", pd.DataFrame(self.history))
            self._save_last(epoch)
            log.info("%s fold %d epoch %d/%d: train_loss %.4f valid_loss %.4f %s %.4f (best %.4f @%d) %.1fs",
                     self.cfg.name, self.fold, epoch + 1, self.cfg.train.epochs, train_loss, valid_loss,
                     self.cfg.metric, value, self.best_score, self.best_epoch + 1, self.history[-1]["seconds"])
        return float(self.best_score), self.best_epoch

    def _train_epoch(self, epoch: int) -> float:
        # Re-seed per epoch so that a resumed run draws the same batches and augmentations.
        epoch_seed = self.cfg.seed * 10_000 + self.fold * 1_000 + epoch
        self.generator.manual_seed(epoch_seed)
        self.train_set.transform.set_random_seed(epoch_seed)
        self.model.train()
        steps = len(self.train_loader)
        total, count = 0.0, 0
        bar = progress(self.train_loader, desc=f"fold {self.fold} epoch {epoch + 1}")
        for step, (images, targets) in enumerate(bar):
            images, targets = images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            with autocast(self.device, self.cfg.train.amp):
                loss = self.loss_fn(self.model(images), targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step_update(epoch * steps + step + 1)
            total += loss.item() * len(targets)
            count += len(targets)
            bar.set_postfix(loss=f"{total / count:.4f}")
        return total / max(count, 1)

    def predict_valid(self, checkpoint: Path) -> np.ndarray:
        state = torch.load(checkpoint, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        probs, _ = predict_probs(self.model, self.valid_loader, self.device, self.cfg.train.amp, desc="oof")
        return probs

    def _save_last(self, epoch: int) -> None:
        save_torch(self.out / "last.pt", {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": epoch, "best_score": self.best_score,
            "best_epoch": self.best_epoch, "history": self.history, "torch_rng": torch.get_rng_state(),
            "recipe": self._recipe(),
        })

    def _recipe(self) -> dict:
        """The config values a resumed run must share with the run that wrote last.pt."""
        keep = {"epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "min_lr", "label_smoothing", "augment", "image_size"}
        return {"model": self.cfg.model.model_dump(mode="json"), "seed": self.cfg.seed,
                "train": {k: v for k, v in self.cfg.train.model_dump(mode="json").items() if k in keep}}

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            return
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("recipe") != self._recipe():
            raise ValueError(f"{path} was written by a different recipe ({_difference(state.get('recipe'), self._recipe())}); "
                             f"resuming would mix two runs. Restore the config, or delete {self.out} to start the fold again")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.start_epoch = state["epoch"] + 1
        self.best_score, self.best_epoch, self.history = state["best_score"], state["best_epoch"], state["history"]
        get_logger().info("%s fold %d: resuming after epoch %d from %s", self.cfg.name, self.fold, self.start_epoch, path)


def _difference(old: dict | None, new: dict) -> str:
    """The keys whose values differ between two recipes, as `key: old -> new`."""
    before, after = _flatten(old or {}), _flatten(new)
    return ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}"
                     for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k))


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
