"""LR schedules, stepped after every optimizer update on a clock in epochs: plain cosine, warm restarts
(cycle length, multiplier, decay, limit), warmup and one-cycle."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from train_toy import one_compute_thread  # noqa: F401 (autouse fixture)

from medal.core.config import ModelConfig, TrainConfig
from medal.modeling.models import build_model
from medal.train.optim import build_optimizer
from medal.train.schedule import LrSchedule

STEPS = 20  # updates per epoch in these simulations


def lr_curve(epochs: int = 4, **train) -> tuple[np.ndarray, torch.optim.Optimizer]:
    """The head LR in force at every update of an `epochs`-long run, as the trainer drives the schedule."""
    t = TrainConfig(**{"lr": 1e-2, "min_lr": 1e-5, "warmup_epochs": 0.0, "epochs": epochs, **train})
    optimizer = build_optimizer(build_model(ModelConfig(backbone="test_resnet"), 3), t)
    schedule = LrSchedule(optimizer, t, total_updates=epochs * STEPS)
    lrs, updates = [], 0
    for epoch in range(epochs):
        schedule.update(epoch, updates)
        for i in range(STEPS):
            lrs.append(optimizer.param_groups[-1]["lr"])
            updates += 1
            schedule.update(epoch + (i + 1) / STEPS, updates)
    return np.array(lrs), optimizer


def rises(lrs: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.diff(lrs) > 1e-12) + 1]


def test_plain_cosine_falls_from_lr_to_min_lr_without_restarts():
    lrs, optimizer = lr_curve()
    assert lrs[0] == pytest.approx(1e-2)
    assert rises(lrs) == []
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(1e-5)


def test_warm_restarts_jump_back_up_at_each_cycle_boundary():
    lrs, _ = lr_curve(schedule="restarts", restarts={"cycle_epochs": 1.0, "cycle_mul": 1.0})
    assert rises(lrs) == [STEPS, 2 * STEPS, 3 * STEPS]
    assert lrs[[0, STEPS, 2 * STEPS, 3 * STEPS]] == pytest.approx([1e-2] * 4)


def test_cycle_multiplier_lengthens_each_cycle():
    lrs, _ = lr_curve(epochs=7, schedule="restarts", restarts={"cycle_epochs": 1.0, "cycle_mul": 2.0})
    assert rises(lrs) == [STEPS, 3 * STEPS]  # cycles of 1, 2 and 4 epochs


def test_cycle_decay_lowers_each_restarts_peak():
    lrs, _ = lr_curve(epochs=3, schedule="restarts", restarts={"cycle_epochs": 1.0, "cycle_mul": 1.0, "cycle_decay": 0.5})
    assert lrs[[0, STEPS, 2 * STEPS]] == pytest.approx([1e-2, 5e-3, 2.5e-3])


def test_cycle_limit_holds_min_lr_after_the_last_cycle():
    lrs, _ = lr_curve(schedule="restarts", restarts={"cycle_epochs": 1.0, "cycle_mul": 1.0, "cycle_limit": 2})
    assert rises(lrs) == [STEPS]
    assert lrs[2 * STEPS:] == pytest.approx([1e-5] * (2 * STEPS))


def test_warmup_rises_linearly_to_the_peak_then_the_cosine_falls():
    lrs, _ = lr_curve(warmup_epochs=1.0)
    warm = lrs[:STEPS + 1]
    assert warm[0] == pytest.approx(1e-5)
    assert np.diff(warm) == pytest.approx([np.diff(warm)[0]] * STEPS)  # linear
    assert lrs[STEPS] == pytest.approx(1e-2) and lrs.argmax() == STEPS
    assert rises(lrs[STEPS:]) == []


# The simulations step the schedule without optimizer steps, which torch warns about.
no_step_warning = pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")


@no_step_warning
def test_one_cycle_rises_to_the_peak_then_anneals_below_the_start_and_cycles_momentum():
    lrs, optimizer = lr_curve(schedule="onecycle", warmup_epochs=1.0)
    assert lrs[0] == pytest.approx(1e-2 / 25)
    assert lrs.argmax() == STEPS - 1 and lrs.max() == pytest.approx(1e-2)  # torch peaks on the rise's last step
    assert lrs[-1] < lrs[0] and optimizer.param_groups[-1]["lr"] == pytest.approx(1e-5, rel=1e-3)
    assert optimizer.param_groups[-1]["betas"][0] == pytest.approx(0.95)  # momentum is back at its maximum


@no_step_warning
def test_one_cycle_scales_each_group_by_its_lr_scale():
    _, optimizer = lr_curve(epochs=1, schedule="onecycle", body_lr_scale=0.1)
    lrs = {g["name"][:4]: g["max_lr"] for g in optimizer.param_groups}
    assert lrs["head"] == pytest.approx(1e-2) and lrs["body"] == pytest.approx(1e-3)


def test_warmup_as_long_as_the_run_is_refused():
    t = TrainConfig(lr=1e-3, epochs=2, warmup_epochs=2.0)
    optimizer = build_optimizer(build_model(ModelConfig(backbone="test_resnet"), 3), t)
    with pytest.raises(ValueError, match="warmup_epochs=2.0 leaves no epochs"):
        LrSchedule(optimizer, t, total_updates=10)
