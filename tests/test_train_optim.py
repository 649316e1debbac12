"""Optimisation switches: optimizer choice, param groups and their LRs, layer decay, weight decay, linear LR
scaling, L1 on the head, gradient clipping, gradient accumulation and a frozen body."""
from __future__ import annotations

import pytest
import torch
from train_toy import make_toy, make_trainer, one_compute_thread, state_copy, toy_cfg  # noqa: F401 (autouse fixture)

from medal.core.config import TrainConfig
from medal.modeling.models import build_model, head_parameter_ids
from medal.train.optim import batch_lr_factor, build_optimizer, l1_penalty
from medal.train.schedule import LrSchedule


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("optim"))


def _model(backbone: str = "test_resnet"):
    from medal.core.config import ModelConfig

    torch.manual_seed(0)
    return build_model(ModelConfig(backbone=backbone), 3)


def _scheduled(model, **train) -> torch.optim.Optimizer:
    t = TrainConfig(**{"lr": 1e-2, "warmup_epochs": 0.0, "epochs": 2, **train})
    optimizer = build_optimizer(model, t)
    LrSchedule(optimizer, t, total_updates=10).update(0.0, 0)
    return optimizer


def test_head_and_body_groups_carry_the_configured_lrs():
    model = _model()
    optimizer = _scheduled(model, body_lr_scale=0.1)
    head = head_parameter_ids(model)
    for group in optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1  # a group is all head or all body
        expected = 1e-2 if in_head == {True} else 1e-3
        assert group["name"].startswith("head" if in_head == {True} else "body")
        assert group["lr"] == pytest.approx(expected)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_layer_decay_gives_each_deeper_layer_a_geometrically_lower_lr():
    model = _model("resnet10t")
    optimizer = _scheduled(model, layer_decay=0.5)
    lrs = sorted({round(g["lr"], 12) for g in optimizer.param_groups}, reverse=True)
    assert len(lrs) >= 4
    assert lrs == pytest.approx([1e-2 * 0.5 ** k for k in range(len(lrs))])
    stem = next(p for n, p in model.named_parameters() if n.startswith("conv1"))
    head_lr = max(g["lr"] for g in optimizer.param_groups)
    stem_lr = next(g["lr"] for g in optimizer.param_groups if any(p is stem for p in g["params"]))
    assert head_lr == pytest.approx(1e-2) and stem_lr == pytest.approx(min(lrs))


def test_weight_decay_applies_to_weights_but_not_to_biases_and_norms():
    optimizer = build_optimizer(_model(), TrainConfig(lr=1e-3, weight_decay=0.05))
    for group in optimizer.param_groups:
        for param in group["params"]:
            assert group["weight_decay"] == (0.05 if param.ndim > 1 else 0.0)


@pytest.mark.parametrize("name, cls, extra", [
    ("adamw", torch.optim.AdamW, {}),
    ("sgd", torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
    ("rmsprop", torch.optim.RMSprop, {"momentum": 0.8}),
])
def test_optimizer_by_name(name, cls, extra):
    optimizer = build_optimizer(_model(), TrainConfig(lr=1e-3, optimizer=name, momentum=0.8))
    assert type(optimizer) is cls
    for key, value in extra.items():
        assert optimizer.defaults[key] == value


def test_sgd_without_momentum_is_plain_sgd():
    optimizer = build_optimizer(_model(), TrainConfig(lr=1e-3, optimizer="sgd", momentum=0.0))
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["momentum"] == 0.0


def test_linear_scaling_rule_multiplies_the_lr_by_the_batch_ratio(toy):
    assert batch_lr_factor(TrainConfig(batch_size=64, lr_reference_batch=256), 64) == 0.25
    assert batch_lr_factor(TrainConfig(accumulate=2, lr_reference_batch=16), 32) == 4.0
    assert batch_lr_factor(TrainConfig(), 64) == 1.0
    stages = "train.stages=[{image_size: 16, epochs: 1, batch_size: 5}, {image_size: 20, epochs: 1, batch_size: 10}]"
    trainer = make_trainer(toy_cfg(toy, stages, "train.image_size=20", "train.lr_reference_batch=5", "train.lr=0.01"))
    for epoch, factor in [(0, 1.0), (1, 2.0)]:  # each progressive stage scales by its own batch size
        trainer._enter_stage(epoch)
        trainer.schedule.update(0.0, 0, trainer.lr_factor)
        assert max(g["lr"] for g in trainer.optimizer.param_groups) == pytest.approx(0.01 * factor)


def test_l1_penalty_is_the_weighted_sum_of_the_heads_absolute_weights():
    model = _model()
    assert l1_penalty(model, 0.0) is None
    assert l1_penalty(model, 0.5).item() == pytest.approx(0.5 * model.fc.weight.abs().sum().item(), rel=1e-5)


def test_l1_on_the_head_shrinks_the_head_weights(toy):
    sums = {}
    for l1 in [0.0, 1.0]:
        trainer = make_trainer(toy_cfg(toy, f"train.l1_head={l1}", "train.lr=0.03", "train.ema.enabled=false"))
        trainer._enter_stage(0)
        trainer._train_epoch(0)
        sums[l1] = trainer.model.fc.weight.abs().sum().item()
    assert sums[1.0] < 0.8 * sums[0.0]


def _one_update(trainer) -> float:
    """Norm of the parameter change made by one optimizer update on the first batch."""
    trainer._enter_stage(0)
    trainer.sampler.set_epoch(0)
    images, labels, _ = next(iter(trainer.loader))
    trainer.model.train()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer._forward_backward(images, labels, 1)
    trainer._optimizer_step()
    return torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(trainer.model.parameters(), before))).item()


def test_gradient_clipping_bounds_the_update(toy):
    sgd = ["train.optimizer=sgd", "train.momentum=0", "train.weight_decay=0", "train.lr=1.0", "train.ema.enabled=false"]
    free = _one_update(make_trainer(toy_cfg(toy, *sgd)))
    clipped = _one_update(make_trainer(toy_cfg(toy, *sgd, "train.clip_grad_norm=0.001")))
    assert clipped == pytest.approx(0.001, rel=1e-3)  # plain SGD at lr 1: the step is the clipped gradient
    assert free > 100 * clipped


def test_gradient_accumulation_steps_once_per_group_of_batches(toy):
    trainer = make_trainer(toy_cfg(toy, "train.accumulate=2", "train.ema.enabled=false"))
    trainer._enter_stage(0)
    trainer._train_epoch(0)
    # 3 batches: the optimizer steps after the 2nd (a full group of 2) and after the 3rd (the epoch's last).
    assert [row["update"] for row in trainer.steps] == [0, 1, 2]
    lrs = [row["lr"] for row in trainer.steps]
    assert lrs[0] == lrs[1] == trainer.t.lr > lrs[2]  # the schedule moves only after an update


def test_frozen_body_keeps_every_body_weight_and_statistic_for_the_frozen_epochs(toy):
    trainer = make_trainer(toy_cfg(toy, "train.freeze_body_epochs=1", "train.epochs=2", "train.ema.enabled=false"))
    body = lambda: {k: v for k, v in state_copy(trainer.model).items() if not k.startswith("fc.")}  # noqa: E731
    before, head_before = body(), trainer.model.fc.weight.detach().clone()
    trainer._enter_stage(0)
    trainer._train_epoch(0)
    after = body()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights, BN running stats, counters
    assert not torch.equal(head_before, trainer.model.fc.weight)
    trainer._train_epoch(1)
    assert not all(torch.equal(after[k], v) for k, v in body().items())
