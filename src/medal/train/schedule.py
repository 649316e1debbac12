"""The LR schedule, updated after every optimizer step.

Its clock is the training time in epochs (0.5 = half-way through the first
epoch), so warmup, cycle lengths and restarts are in epochs and stay where they
were configured when progressive stages change the batch size (and so the
number of steps per epoch). One schedule spans every stage: progressive
resizing continues the same cosine (or cycle) rather than restarting it.
"""
from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler
from torch.optim.lr_scheduler import OneCycleLR

from medal.core.config import TrainConfig

NO_LIMIT = 10**9
TICKS = 1000  # schedule time units per epoch: timm's cosine sees integral-looking cycle lengths


class LrSchedule:
    """cosine / restarts: timm's CosineLRScheduler; onecycle: torch's OneCycleLR (timm has none).
    Each group's LR is the schedule's value x its `lr_scale` x the current batch-scaling factor."""

    def __init__(self, optimizer: torch.optim.Optimizer, t: TrainConfig, total_updates: int) -> None:
        self.optimizer, self.kind = optimizer, t.schedule
        total, warmup = t.total_epochs, t.warmup_epochs
        if warmup >= total and t.schedule != "restarts":
            raise ValueError(f"train.warmup_epochs={warmup} leaves no epochs for the decay of a {total}-epoch run")
        if t.schedule == "onecycle":
            self.scheduler = OneCycleLR(
                optimizer, max_lr=[t.lr * g["lr_scale"] for g in optimizer.param_groups], total_steps=max(total_updates, 2),
                pct_start=warmup / total if warmup else 0.3, div_factor=25.0,
                final_div_factor=max(t.lr / 25.0 / max(t.min_lr, 1e-12), 1.0))
        else:
            restarts = t.schedule == "restarts"
            r = t.restarts
            self.scheduler = CosineLRScheduler(
                optimizer, t_initial=TICKS * (r.cycle_epochs if restarts else total - warmup), lr_min=t.min_lr,
                cycle_mul=r.cycle_mul if restarts else 1.0, cycle_decay=r.cycle_decay if restarts else 1.0,
                cycle_limit=(r.cycle_limit or NO_LIMIT) if restarts else 1, warmup_t=TICKS * warmup,
                warmup_lr_init=t.min_lr, warmup_prefix=True, t_in_epochs=False)

    def update(self, epoch_time: float, updates: int, factor: float = 1.0) -> None:
        """Set every group's LR for training time `epoch_time` (epochs) after `updates` optimizer steps."""
        if self.kind == "onecycle":
            while self.scheduler.last_epoch < min(updates, self.scheduler.total_steps - 1):
                self.scheduler.step()
            values = self.scheduler.get_last_lr()
        else:
            # Fractional ticks are fine: timm's cosine arithmetic is plain float math.
            self.scheduler.step_update(TICKS * epoch_time)
            values = [group["lr"] for group in self.optimizer.param_groups]
        for group, value in zip(self.optimizer.param_groups, values):
            group["lr"] = value * factor

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)
