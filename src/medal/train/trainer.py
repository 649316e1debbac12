"""FoldTrainer: the explicit loop of one fold, readable top to bottom.

Per batch: mix (timm Mixup), forward under autocast, per-sample loss (+ L1 on
the head), scaled backward; every `accumulate` batches: clip, step, EMA
update, schedule update. Per epoch: enter the progressive stage, draw the
seeded (possibly hard-example weighted) batches, validate the raw and the EMA
weights, keep the best, log, write last.pt. Resuming loads last.pt; seeds that
travel with the batches make the resumed epochs draw what an uninterrupted
run would.
"""
from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from timm.utils import ModelEmaV3

from medal.core import layout, provenance
from medal.core.config import Config, StageConfig
from medal.core.io import write_csv
from medal.core.log import get_logger, progress
from medal.core.metrics import is_better, score
from medal.images.augment import eval_transform, train_transform
from medal.images.dataset import ImageDataset
from medal.images.gallery import save_augment_grid
from medal.modeling import distributed
from medal.modeling.checkpoint import (
    load_best,
    load_last,
    recipe,
    restore_rng,
    rng_state,
    save_best,
    save_last,
    with_new_defaults,
)
from medal.modeling.models import normalisation, set_train_mode
from medal.modeling.predict import predict_probs
from medal.modeling.runtime import autocast, grad_scaler, make_loader, speed_up
from medal.tracking import Tracker
from medal.train.averaging import WeightAverages
from medal.train.fold import FoldData
from medal.train.losses import Criterion
from medal.train.optim import batch_lr_factor, build_optimizer, group_lrs, l1_penalty
from medal.train.sampler import (
    LossTracker,
    private_generator,
    seeded_train_loader,
    weight_summary,
)
from medal.train.schedule import LrSchedule
from medal.train.state import training_settings

BAR_EVERY = 10  # steps between progress-bar refreshes (each reads the loss back from the device)


def batches_per_epoch(n: int, batch_size: int) -> int:
    # The last partial batch is dropped (steady batch statistics, even batches for mixup) unless it is the only one.
    return n // batch_size if n > batch_size else 1


class FoldTrainer:
    """One fold's model, optimizer, schedule, EMA and loaders; `fit()` trains it and writes its checkpoints."""

    def __init__(self, cfg: Config, model: torch.nn.Module, device: torch.device, data: FoldData,
                 classes: list[str], fold: int, tracking: Tracker | None = None,
                 on_epoch: Callable[[dict], None] | None = None) -> None:
        t, r = self.t, self.r = cfg.train, cfg.runtime
        self.cfg, self.model, self.device, self.data, self.classes, self.fold = cfg, model, device, data, classes, fold
        self.out = cfg.fold_dir(fold)
        self.stats = normalisation(model)
        self.stages = t.stage_list()
        self.world = distributed.world()
        if self.world.distributed and r.sync_bn:
            model = self.model = distributed.sync_batchnorm(model, device)
        self.forward = speed_up(model, device, r.channels_last, r.compile)
        self.train_forward = self.forward
        if self.world.distributed:
            # Training steps go through DDP (gradients averaged over ranks), compiled around it when asked, as
            # torch recommends; evaluation calls the model itself.
            ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=t.freeze_body_epochs > 0)  # a frozen body's weights get no gradient
            self.train_forward = torch.compile(ddp) if r.compile and device.type == "cuda" else ddp
        # Each rank predicts every size-th validation image from its rank on; the shards are gathered (no padding).
        self.valid_rows = np.arange(len(data.valid_paths))[self.world.rank::self.world.size]
        self.valid_loader = make_loader(ImageDataset([data.valid_paths[i] for i in self.valid_rows], data.valid_targets[self.valid_rows],
                                                     eval_transform(t.image_size, self.stats)),
                                        self.stages[-1].batch_size, r.num_workers, device, generator=private_generator(cfg.seed),
                                        persistent_workers=r.persistent_workers)
        self.optimizer = build_optimizer(model, t)
        shard = len(data.train_paths) // self.world.size
        updates = sum(s.epochs * -(-batches_per_epoch(shard, s.batch_size) // t.accumulate) for s in self.stages)
        self.schedule = LrSchedule(self.optimizer, t, updates)
        self.criterion = Criterion(t, len(classes))
        self.ema = ModelEmaV3(model, decay=t.ema.decay, use_warmup=t.ema.warmup) if t.ema.enabled else None
        self.scaler = grad_scaler(device, r.amp, r.amp_dtype)
        self.tracker = LossTracker(len(data.train_paths))
        self.averages = WeightAverages(t.average, t.total_epochs, cfg.metric, self.out, main=self.world.main)
        # The other weights scored on the fold's validation after training, by name ('ema', 'swa', 'top_k'):
        # (score, validation probabilities); filled by _score_averages when an average is on.
        self.alternatives: dict[str, tuple[float, np.ndarray]] = {}
        self.history: list[dict] = []
        self.steps: list[dict] = []
        # Epochs are numbered from 1 in every file and line (best_epoch 0: none yet); loop indices count from 0.
        self.start_epoch, self.best_score, self.best_epoch, self.best_weights, self.updates = 0, None, 0, "raw", 0
        self.run_id = uuid.uuid4().hex  # the tracking run id; a resumed fold keeps the one in last.pt
        # The folds.csv this run trains on; last.pt records it, so a resume after folds changed is refused.
        self.folds_sha256 = provenance.sha256(layout.folds_csv(cfg))
        self.stage_index, self.loader, self.sampler, self.lr_factor = -1, None, None, 1.0
        self.tracking = tracking or Tracker.off()
        # Called with each epoch's metrics row after it is saved (medal.tune reports it to Optuna, which may prune).
        self.on_epoch = on_epoch

    def candidates(self) -> list[str]:
        """The weights that may become the fold's model (best.pt, early stopping, OOF): 'raw' and/or 'ema'."""
        if self.ema is None or self.t.ema.oof == "raw":
            return ["raw"]
        return ["ema"] if self.t.ema.oof == "ema" else ["raw", "ema"]

    def fit(self) -> tuple[float, int]:
        """Train every remaining epoch; returns (best validation score, its epoch, from 1)."""
        self._resume()
        self.tracking.start(self.run_id)  # after _resume: a resumed fold continues its run
        for epoch in range(self.start_epoch, self.t.total_epochs):
            if self.patience_exhausted(epoch):
                get_logger().info("%s fold %d: early stop, no better %s for %d epochs (best %.4f @%d)", self.cfg.name,
                                  self.fold, self.cfg.metric, self.t.patience, self.best_score, self.best_epoch)
                break
            started = time.perf_counter()
            stage = self._enter_stage(epoch)
            row = {"epoch": epoch + 1, "image_size": stage.image_size, "batch_size": stage.batch_size}
            row.update(self._train_epoch(epoch))
            row.update(self._validate(epoch))
            row["seconds"] = time.perf_counter() - started
            self.history.append(row)
            if self.world.main:
                write_csv(self.out / "metrics.csv", pd.DataFrame(self.history))
                write_csv(self.out / "steps.csv", pd.DataFrame(self.steps))
                self._save_last(epoch)
            self._log_epoch(row)
            self.tracking.log_epoch(row)
            if self.on_epoch is not None:
                self.on_epoch(row)
        self._score_averages()
        return float(self.best_score), self.best_epoch

    def patience_exhausted(self, last_epoch: int) -> bool:
        """Whether `last_epoch` (from 1; the epochs done) is `patience` epochs past the best one."""
        return self.t.patience is not None and last_epoch - self.best_epoch >= self.t.patience

    def _enter_stage(self, epoch: int) -> StageConfig:
        """Build the stage's loader when `epoch` starts a new progressive stage (or the run, or a resume)."""
        ends = np.cumsum([s.epochs for s in self.stages])
        index = int(np.searchsorted(ends, epoch, side="right"))
        stage = self.stages[index]
        if index == self.stage_index:
            return stage
        t = self.t
        dataset = ImageDataset(self.data.train_paths, self.data.train_targets,
                               train_transform(t.augment, stage.image_size, self.stats))
        self.loader, self.sampler = seeded_train_loader(dataset, stage.batch_size, self.cfg.seed, self.r, self.device,
                                                        rank=self.world.rank, ranks=self.world.size)
        # The LR follows the global batch: every rank's batch together makes one optimizer step.
        self.stage_index, self.lr_factor = index, batch_lr_factor(t, stage.batch_size * self.world.size)
        grid = self.out / f"augment_{stage.image_size}px.png"
        if self.cfg.report.sample_grid and not grid.is_file() and self.world.main:
            save_augment_grid(dataset, self.stats, self.cfg.report.sample_grid, self.cfg.seed, grid,
                              f"{self.cfg.name} fold {self.fold}: train.augment={t.augment} at {stage.image_size}px")
        if len(self.stages) > 1:
            get_logger().info("%s fold %d: stage %d/%d from epoch %d: %dpx, batch %d", self.cfg.name, self.fold,
                              index + 1, len(self.stages), epoch + 1, stage.image_size, stage.batch_size)
        return stage

    def _sampler_weights(self, epoch: int) -> tuple[np.ndarray | None, dict]:
        h = self.t.hard_mining
        if h.start_epoch is None or epoch < h.start_epoch:
            return None, {}
        weights = self.tracker.weights(h.strength, h.cap)
        summary = weight_summary(weights)
        get_logger().info("%s fold %d epoch %d: hard-example weights min %.2f median %.2f max %.2f (x mean); "
                          "top 10%% of samples get %.0f%% of the draws; effective sample size %.0f%%", self.cfg.name,
                          self.fold, epoch + 1, summary["w_min"], summary["w_median"], summary["w_max"],
                          100 * summary["top10_share"], 100 * summary["ess"])
        return weights, summary

    def _train_epoch(self, epoch: int) -> dict:
        """One pass over the stage's batches; returns the epoch's train loss, train CE and train metric."""
        t = self.t
        weights, summary = self._sampler_weights(epoch)
        self.sampler.set_epoch(self.cfg.seed * 10_000 + self.fold * 1_000 + epoch, weights)
        set_train_mode(self.model, frozen_body=epoch < t.freeze_body_epochs)
        n = len(self.loader)
        self.schedule.update(epoch, self.updates, self.lr_factor)
        log = EpochLog()
        self.optimizer.zero_grad(set_to_none=True)
        bar = progress(self.loader, desc=self._epoch_name(epoch), images=lambda batch: len(batch[0]))
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, (images, labels, indices) in enumerate(bar):
            lrs = group_lrs(self.optimizer)
            group = min(t.accumulate, n - i // t.accumulate * t.accumulate)  # micro-batches in this update
            loss, per_sample, logits, labels = self._forward_backward(images, labels, group, indices)
            if (i + 1) % t.accumulate == 0 or i + 1 == n:
                self._optimizer_step()
                self.schedule.update(epoch + (i + 1) / n, self.updates, self.lr_factor)
            log.add(loss, logits, labels)
            seen.append((indices, per_sample))
            self.steps.append({"epoch": epoch + 1, "step": i, "update": self.updates, "image_size": images.shape[-1],
                               "batch_size": len(images), **lrs})
            if i % BAR_EVERY == 0 or i + 1 == n or bar.due():
                bar.set_postfix(**log.live(), lr=f"{lrs['lr']:.2e}")
        self._record_losses(seen)
        step_losses = log.step_losses()
        for row, value in zip(self.steps[-n:], step_losses):
            row["loss"] = value
        self.tracking.log_steps(self.steps[-n:], first=len(self.steps) - n)  # losses are read back per epoch, not per step
        return {"lr": group_lrs(self.optimizer)["lr"], **log.summary(self.cfg.metric), **summary}

    def _record_losses(self, seen: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Each sample's latest loss into the hard-example tracker; under torchrun every rank's, in rank order,
        so that every rank holds the same losses and draws from the same weights."""
        if not seen:
            return
        indices = torch.cat([i.cpu() for i, _ in seen])
        losses = torch.cat([loss.float().cpu() for _, loss in seen])
        for rank_indices, rank_losses in distributed.gather((indices, losses)):
            self.tracker.record(rank_indices, rank_losses)

    def _forward_backward(self, images: torch.Tensor, labels: torch.Tensor, group: int,
                          indices: torch.Tensor | None = None):
        """Forward and scaled backward of one batch (`indices`: its training rows, which pick their soft targets
        when the fold has soft pseudo labels); returns (loss, per-sample losses, float logits, labels) detached."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.r.channels_last and self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        soft = self.data.train_soft
        soft = None if soft is None else torch.from_numpy(soft[indices.cpu().numpy()]).to(self.device, non_blocking=True)
        inputs, target = self.criterion.prepare(images, labels, soft)
        with autocast(self.device, self.r.amp, self.r.amp_dtype):
            logits = self.train_forward(inputs)
        per_sample = self.criterion.per_sample(logits, target)
        loss = per_sample.mean()
        l1 = l1_penalty(self.model, self.t.l1_head)
        if l1 is not None:
            loss = loss + l1
        self.scaler.scale(loss / group).backward()
        return loss.detach(), per_sample.detach(), logits.detach().float(), labels

    def _optimizer_step(self) -> None:
        if self.t.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.updates)

    def _validate(self, epoch: int) -> dict:
        """Validate the raw weights (and the EMA's); save best.pt when the chosen weights improve."""
        metric = self.cfg.metric
        desc = f"{self._epoch_name(epoch)} valid"
        distributed.share_buffers(self.model, *([self.ema.module] if self.ema is not None else []))
        probs, loss = self._predict(self.forward, desc)
        row = {"valid_loss": loss, metric: self._valid_score(probs)}
        if self.ema is not None:
            ema_probs, ema_loss = self._predict(self.ema.module, f"{desc} ema")
            row.update({"ema_valid_loss": ema_loss, f"ema_{metric}": self._valid_score(ema_probs)})
        scores = {"raw": row[metric], "ema": row.get(f"ema_{metric}")}
        chosen = self.candidates()[0]
        for name in self.candidates()[1:]:
            chosen = name if is_better(metric, scores[name], scores[chosen]) else chosen
        row["chosen"] = chosen
        self.averages.after_epoch(epoch + 1, self.model, self.ema.module if chosen == "ema" else self.model, scores[chosen])
        if is_better(metric, scores[chosen], self.best_score):
            self.best_score, self.best_epoch, self.best_weights = scores[chosen], epoch + 1, chosen
            if self.world.main:
                save_best(layout.best_checkpoint(self.cfg, self.fold), self.ema.module if chosen == "ema" else self.model,
                          classes=self.classes, epoch=epoch + 1, score=scores[chosen], backbone=self.cfg.model.backbone,
                          weights=chosen, image_size=self.t.image_size, run_id=self.run_id)
        return row

    def _score_averages(self) -> None:
        """With train.average on: score the best epoch's weights, the final EMA and each average (BatchNorm
        recomputed on the training images at the final size, without augmentation: what OOF and test images look
        like) on the fold's validation; with average.oof naming an average, it becomes best.pt and the fold's score."""
        if not self.averages.enabled:
            return
        t, metric = self.t, self.cfg.metric
        plain = ImageDataset(self.data.train_paths, self.data.train_targets, eval_transform(t.image_size, self.stats))
        loader = make_loader(plain, self.stages[-1].batch_size, self.r.num_workers, self.device)
        averaged = self.averages.averaged(self.model, loader, self.device)
        distributed.share_buffers(*averaged.values())
        best = copy.deepcopy(self.model)
        distributed.barrier()  # rank 0 wrote best.pt
        best.load_state_dict(load_best(layout.best_checkpoint(self.cfg, self.fold), self.device)["model"])
        weights = {"best": best, **({"ema": self.ema.module} if self.ema is not None else {}), **averaged}
        for name, module in weights.items():
            probs, _ = self._predict(module, f"{self.cfg.name} fold {self.fold} {name} weights")
            self.alternatives[name] = (self._valid_score(probs), probs)
        get_logger().info("%s fold %d: validation %s by weights: %s (best: epoch %d's %s)", self.cfg.name, self.fold,
                          metric, ", ".join(f"{name} {value:.4f}" for name, (value, _) in self.alternatives.items()),
                          self.best_epoch, self.best_weights)
        chosen = t.average.oof
        if chosen == "best":
            return
        if chosen not in averaged:
            get_logger().warning("%s fold %d: train.average.oof=%s, but there is no %s average; best.pt keeps the "
                                 "best epoch's weights", self.cfg.name, self.fold, chosen, chosen)
            return
        self.best_score, self.best_weights = self.alternatives[chosen][0], chosen
        if self.world.main:
            save_best(layout.best_checkpoint(self.cfg, self.fold), averaged[chosen], classes=self.classes,
                      epoch=len(self.history), score=self.best_score, backbone=self.cfg.model.backbone, weights=chosen,
                      image_size=t.image_size, run_id=self.run_id)

    def _predict(self, model: torch.nn.Module, desc: str) -> tuple[np.ndarray, float]:
        """Probabilities and mean cross-entropy of the whole validation set: this rank's shard, gathered from
        every rank under torchrun (each image once, in the fold's order)."""
        probs, loss = predict_probs(model, self.valid_loader, self.device, self.r.amp, desc=desc)
        if not self.world.distributed:
            return probs, loss
        parts = distributed.gather((self.valid_rows, probs, loss * len(self.valid_rows)))
        whole = np.empty((len(self.data.valid_paths), probs.shape[1]), dtype=probs.dtype)
        for rows, part, _ in parts:
            whole[rows] = part
        return whole, sum(total for _, _, total in parts) / len(whole)

    def _valid_score(self, probs: np.ndarray) -> float:
        return score(self.cfg.metric, self.data.valid_targets, probs)

    def predict_valid(self) -> np.ndarray:
        """Validation probabilities of the fold's best.pt weights (loaded into the fold's model)."""
        distributed.barrier()  # rank 0 wrote best.pt
        self.model.load_state_dict(load_best(layout.best_checkpoint(self.cfg, self.fold), self.device)["model"])
        if self.alternatives:  # _score_averages predicted best.pt's weights already: the best epoch's or an average
            return self.alternatives[self.best_weights if self.best_weights in self.averages.NAMES else "best"][1]
        probs, _ = self._predict(self.forward, f"{self.cfg.name} fold {self.fold} oof")
        return probs

    def _save_last(self, epoch: int) -> None:
        save_last(layout.last_checkpoint(self.cfg, self.fold), {
            "model": self.model.state_dict(), "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(), "epoch": epoch + 1, "step": self.updates,
            "sampler": self.tracker.state_dict(), "run_id": self.run_id, "best_score": self.best_score,
            "best_epoch": self.best_epoch, "best_weights": self.best_weights, "history": self.history,
            "recipe": recipe(self.cfg), "settings": training_settings(self.cfg), "folds_sha256": self.folds_sha256,
            "averages": self.averages.state_dict(),
        })

    def _resume(self) -> None:
        path = layout.last_checkpoint(self.cfg, self.fold)
        if not path.is_file():
            return
        state = load_last(path, self.device)
        written = with_new_defaults(state.get("recipe") or {})
        if written != recipe(self.cfg):
            raise ValueError(f"{path} was written by a different recipe ({provenance.settings_difference(written, recipe(self.cfg))}); "
                             f"resuming would mix two runs. Restore the config, or delete {self.out} to start the fold again")
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.tracker.load_state_dict(state["sampler"])
        self.averages.load_state_dict(state.get("averages"), self.model)
        # state["epoch"]: the last epoch done, from 1, so also the loop index of the next one.
        self.start_epoch, self.updates, self.run_id = state["epoch"], state["step"], state["run_id"]
        self.best_score, self.best_epoch, self.history = state["best_score"], state["best_epoch"], state["history"]
        self.best_weights = state["best_weights"]
        steps = self.out / "steps.csv"
        if steps.is_file():  # it may hold an epoch past last.pt's, written just before a kill
            frame = pd.read_csv(steps)
            self.steps = frame[frame["epoch"] <= state["epoch"]].to_dict("records")
        get_logger().info("%s fold %d: resuming after epoch %d from %s (run %s)", self.cfg.name, self.fold,
                          self.start_epoch, path, self.run_id)

    def _epoch_name(self, epoch: int) -> str:
        return f"{self.cfg.name} fold {self.fold} epoch {epoch + 1}/{self.t.total_epochs}"

    def _log_epoch(self, row: dict) -> None:
        metric = self.cfg.metric
        ema = f" ema_{metric} {row[f'ema_{metric}']:.4f}" if f"ema_{metric}" in row else ""
        get_logger().info(
            "%s fold %d epoch %d/%d (%dpx): train_loss %.4f train_ce %.4f valid_loss %.4f train_%s %.4f %s %.4f%s "
            "(best %.4f @%d) lr %.2e %.1fs", self.cfg.name, self.fold, row["epoch"], self.t.total_epochs,
            row["image_size"], row["train_loss"], row["train_ce"], row["valid_loss"], metric, row[f"train_{metric}"],
            metric, row[metric], ema, self.best_score, self.best_epoch, row["lr"], row["seconds"])


class EpochLog:
    """An epoch's training losses, logits and labels, kept on the device: read back once per epoch (and per
    progress-bar refresh) rather than synchronising on every step. Probabilities are kept for the train
    metric only while they stay small (MAX_PROBS values); beyond that only accuracy is measured."""

    MAX_PROBS = 20_000_000

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.ces: list[torch.Tensor] = []
        self.probs: list[torch.Tensor] | None = []
        self.correct: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.kept = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.losses.append(loss)
        # Plain cross-entropy on the hard labels: comparable with the validation loss, whatever the training loss.
        self.ces.append(torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
        self.correct.append(logits.argmax(1).eq(labels))
        self.labels.append(labels)
        self.kept += logits.numel()
        if self.probs is not None and self.kept <= self.MAX_PROBS:
            self.probs.append(logits.softmax(dim=1))
        else:
            self.probs = None

    def live(self) -> dict[str, str]:
        accuracy = torch.cat(self.correct).float().mean().item()
        return {"loss": f"{torch.stack(self.losses).mean().item():.4f}", "acc": f"{accuracy:.3f}"}

    def step_losses(self) -> list[float]:
        return torch.stack(self.losses).cpu().tolist()

    def summary(self, metric: str) -> dict[str, float]:
        if self.probs is not None:
            value = _safe_score(metric, torch.cat(self.labels).cpu().numpy(), torch.cat(self.probs).cpu().numpy())
        else:
            value = torch.cat(self.correct).float().mean().item() if metric == "accuracy" else float("nan")
        return {"train_loss": float(np.mean(self.step_losses())), "train_ce": torch.cat(self.ces).mean().item(),
                f"train_{metric}": value}


def _safe_score(metric: str, targets: np.ndarray, probs: np.ndarray) -> float:
    """The metric on training batches; NaN where it is undefined (e.g. roc_auc on an epoch missing a class)."""
    try:
        return float(score(metric, targets, probs))
    except ValueError:
        return float("nan")
