"""Training switches, each checked by what the real loop does with it, not by a log line or a config echo.

Every test drives a toy FoldTrainer (tests/train_toy.py: 30 training images of 3 classes, batches of 10, one torch
thread) through its own `_train_epoch` or `fit()`, spies on what reaches the loss, the model, the sampler or the
optimizer, and compares it with values worked out by hand: smoothed and mixed targets, the EMA's average, the
images drawn under hard-example mining, the update of accumulated half-batches, each stage's input size, and
each parameter's learning rate under layer decay, body_lr_scale and a frozen body.
"""
from __future__ import annotations

from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_toy import (  # noqa: F401 (autouse fixture)
    CLASSES,
    make_toy,
    make_trainer,
    one_compute_thread,
    own_outputs,
    state_copy,
    toy_cfg,
)

from medal.modeling.models import head_parameter_ids

C = len(CLASSES)
# Plain SGD (no momentum, no weight decay): an update is exactly -lr x gradient, so LRs and gradients can be
# read back from the weights.
PLAIN_SGD = ["train.optimizer=sgd", "train.momentum=0", "train.weight_decay=0", "train.ema.enabled=false"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("switches"))


def _spy_batches(trainer) -> list[dict]:
    """Record, per training batch, the labels and images the loader gave, the inputs the model saw in training
    mode and the targets the loss received. Images are cloned first: timm's Mixup mixes them in place."""
    batches: list[dict] = []
    forward_backward, per_sample = trainer._forward_backward, trainer.criterion.per_sample

    def record_batch(images, labels, *rest, **kwargs):
        batches.append({"images": images.clone(), "labels": labels.clone()})
        return forward_backward(images, labels, *rest, **kwargs)

    def record_target(logits, target):
        batches[-1]["target"] = target.detach().clone()
        return per_sample(logits, target)

    def record_input(module, args):
        if module.training:
            batches[-1]["inputs"] = args[0].detach().clone()

    trainer._forward_backward = record_batch
    trainer.criterion.per_sample = record_target
    trainer.model.register_forward_pre_hook(record_input)
    return batches


def _train_one_epoch(trainer) -> None:
    trainer._enter_stage(0)
    trainer._train_epoch(0)


def test_the_loss_receives_smoothed_one_hot_targets(toy):
    s = 0.3
    trainer = make_trainer(toy_cfg(toy, f"train.label_smoothing={s}"))
    batches = _spy_batches(trainer)
    _train_one_epoch(trainer)
    assert len(batches) == 3
    on, off = 1 - s + s / C, s / C  # 0.8 and 0.1 for 3 classes
    for batch in batches:
        expected = torch.full((len(batch["labels"]), C), off)
        expected[torch.arange(len(batch["labels"])), batch["labels"]] = on
        assert torch.allclose(batch["target"], expected, atol=1e-6)
        assert torch.equal(batch["inputs"], batch["images"])  # no mixup: the model sees the loader's images


def test_mixup_feeds_the_model_mixed_image_pairs_and_the_loss_their_mixed_targets(toy):
    trainer = make_trainer(toy_cfg(toy, "train.label_smoothing=0", "train.mixup.mixup_alpha=1.0"))
    batches = _spy_batches(trainer)
    _train_one_epoch(trainer)
    lams = []
    for batch in batches:
        images, labels, target = batch["images"], batch["labels"], batch["target"]
        one_hot = F.one_hot(labels, C).float()
        # timm's batch mode: one lambda per batch, image i mixed with image n-1-i; a row whose partner has another
        # class shows lambda as the weight of its own class.
        row = int(torch.nonzero(labels != labels.flip(0))[0])
        lam = float(target[row, labels[row]])
        lams.append(lam)
        assert torch.allclose(target, lam * one_hot + (1 - lam) * one_hot.flip(0), atol=1e-6)
        assert torch.allclose(batch["inputs"], lam * images + (1 - lam) * images.flip(0), atol=1e-5)
    # Targets that are no single class: some row spreads its mass over two classes.
    assert any(0.05 < lam < 0.95 for lam in lams)
    assert any((b["target"].max(1).values < 0.95).any() for b in batches)


def test_ema_after_each_update_is_the_hand_computed_average_of_the_raw_weights(toy):
    d = 0.9
    trainer = make_trainer(toy_cfg(toy, f"train.ema.decay={d}", "train.ema.warmup=false"))
    w0 = state_copy(trainer.model)
    raw, ema = [], []
    step = trainer._optimizer_step

    def record_update():
        step()
        raw.append(state_copy(trainer.model))
        ema.append(state_copy(trainer.ema.module))

    trainer._optimizer_step = record_update
    _train_one_epoch(trainer)
    assert len(raw) == 3
    w1, w2, w3 = raw
    for key, value in w0.items():
        if not value.is_floating_point():  # counters (BN's num_batches_tracked) are copied, not averaged
            assert all(torch.equal(e[key], r[key]) for e, r in zip(ema, raw))
            continue
        # timm's ModelEmaV3 (as timm's train.py calls it, step = updates so far) uses decay 0 at step 1: the
        # first update copies the raw weights, the initial w0 drops out. From the second update on, decay d.
        expected = [w1[key], d * w1[key] + (1 - d) * w2[key], d * (d * w1[key] + (1 - d) * w2[key]) + (1 - d) * w3[key]]
        for k in range(3):
            assert torch.allclose(ema[k][key], expected[k], rtol=1e-5, atol=1e-7), (key, k)
    assert not torch.equal(ema[2]["fc.weight"], raw[2]["fc.weight"])  # an average, not a copy of the latest


HARD = list(range(5))  # training rows planted with a high loss


def _plant_losses(trainer) -> None:
    losses = np.full(len(trainer.data.train_paths), 0.1)
    losses[HARD] = 10.0  # weights: 5 (the cap) for these, 1/5 for the rest: 25 of 30 expected draws
    trainer.tracker.losses = losses


def _drawn(trainer, epoch: int) -> Counter:
    """The training rows the loader yielded in `epoch`, counted."""
    drawn: list[int] = []
    record = trainer._record_losses

    def spy(seen):
        drawn.extend(int(i) for indices, _ in seen for i in indices)
        record(seen)

    trainer._record_losses = spy
    trainer._train_epoch(epoch)
    trainer._record_losses = record
    return Counter(drawn)


def test_hard_mining_draws_high_loss_samples_far_more_often_once_it_starts(toy):
    trainer = make_trainer(toy_cfg(toy, "train.epochs=2", "train.hard_mining.start_epoch=1", "train.ema.enabled=false"))
    trainer._enter_stage(0)
    _plant_losses(trainer)
    before = _drawn(trainer, 0)  # before start_epoch: a permutation, each row once
    assert sum(before[i] for i in HARD) == len(HARD) and set(before.values()) == {1}
    _plant_losses(trainer)  # epoch 0 recorded its real losses over the planted ones
    mined = _drawn(trainer, 1)
    assert sum(mined.values()) == 30
    assert sum(mined[i] for i in HARD) >= 3 * len(HARD)  # 25 expected, 5 without the weights


def test_without_hard_mining_planted_losses_leave_the_draw_uniform(toy):
    trainer = make_trainer(toy_cfg(toy, "train.epochs=2", "train.ema.enabled=false"))
    trainer._enter_stage(0)
    _plant_losses(trainer)
    drawn = _drawn(trainer, 1)
    assert sum(drawn[i] for i in HARD) == len(HARD) and set(drawn.values()) == {1}


def _updates(toy, *overrides: str) -> list[dict]:
    """The weight changes made by each optimizer update of one epoch."""
    trainer = make_trainer(toy_cfg(toy, *overrides))
    before = [state_copy(trainer.model)]
    step = trainer._optimizer_step

    def record_update():
        step()
        before.append(state_copy(trainer.model))

    trainer._optimizer_step = record_update
    _train_one_epoch(trainer)
    return [{k: after[k] - prev[k] for k in after if after[k].is_floating_point()} for prev, after in pairwise(before)]


def test_two_accumulated_half_batches_update_the_weights_as_one_full_batch(toy):
    # test_efficientnet_gn normalises with GroupNorm, which works per image. A BatchNorm model (test_resnet) in
    # training mode normalises each half-batch with its own statistics, so its gradients legitimately differ
    # from the full batch's; with GroupNorm the mean loss over 10 images equals the mean of two half-batch means.
    # Augmentation none: a batch's images do not depend on the batch seed; the sampler draws the same order for
    # either batch size, so batches 2k and 2k+1 of 5 are batch k of 10.
    same = [*PLAIN_SGD, "model.backbone=test_efficientnet_gn", "train.augment=none", "train.label_smoothing=0",
            "train.lr=0.5"]
    full = _updates(toy, *same, "train.batch_size=10", "train.accumulate=1")
    halves = _updates(toy, *same, "train.batch_size=5", "train.accumulate=2")
    assert len(full) == len(halves) == 3
    for a, b in zip(full[0].values(), halves[0].values()):
        assert torch.allclose(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item() + 1e-9)
    size = sum(v.abs().sum() for v in full[0].values())
    assert size > 1e-2  # the update is not trivially zero
    # The schedule reaches the same LR at every update (its clock is in epochs), so later updates match too.
    for a, b in zip(full[2].values(), halves[2].values()):
        assert torch.allclose(b, a, rtol=1e-3, atol=1e-3 * a.abs().max().item() + 1e-9)


def test_each_progressive_stage_feeds_the_model_images_of_its_own_size(toy, tmp_path):
    stages = "train.stages=[{image_size: 16, epochs: 1, batch_size: 6}, {image_size: 20, epochs: 1, batch_size: 10}]"
    trainer = make_trainer(toy_cfg(toy, own_outputs(toy, tmp_path), stages, "train.image_size=20",
                                   "train.ema.enabled=false"))
    shapes: dict[tuple[int, bool], set] = {}

    def record(module, args):
        epoch = len(trainer.history) + 1  # fit appends an epoch's row after it trains and validates it
        shapes.setdefault((epoch, module.training), set()).add(tuple(args[0].shape))

    trainer.model.register_forward_pre_hook(record)
    trainer.fit()
    assert shapes[(1, True)] == {(6, 3, 16, 16)}
    assert shapes[(2, True)] == {(10, 3, 20, 20)}
    # Validation always runs at train.image_size, the size of the OOF and inference.
    assert {s[1:] for s in shapes[(1, False)] | shapes[(2, False)]} == {(3, 20, 20)}


# test_resnet's layers for timm's layer decay (its group_matcher): stem 0, layer1..layer4 1..4, the head (fc) 5.
RESNET_LAYER = {"conv1": 0, "bn1": 0, "layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4, "fc": 5}


def _first_update(trainer) -> tuple[dict[str, float], dict[str, float]]:
    """Each parameter's LR in the first optimizer update of a real epoch: the LR of its group as the loop set it,
    and the step it took, read from its gradient and its change (plain SGD: change = -lr x gradient; only the
    parameters that have a gradient in that update)."""
    groups, steps = {}, {}
    optimizer_step = trainer.optimizer.step

    def spy(*args, **kwargs):
        if groups:
            return optimizer_step(*args, **kwargs)
        group_lr = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
        named = list(trainer.model.named_parameters())
        groups.update({n: group_lr[id(p)] for n, p in named})
        moving = [(n, p) for n, p in named if p.grad is not None and p.grad.abs().sum() > 0]
        before = {n: (p.detach().clone(), p.grad.detach().clone()) for n, p in moving}
        result = optimizer_step(*args, **kwargs)
        steps.update({n: (-(p.detach() - before[n][0]) * before[n][1]).sum().item() / (before[n][1] ** 2).sum().item()
                      for n, p in moving})
        return result

    trainer.optimizer.step = spy
    _train_one_epoch(trainer)
    return groups, steps


@pytest.mark.parametrize("layer_decay, body_lr_scale", [(0.5, 1.0), (None, 0.1), (0.5, 0.1)])
def test_layer_decay_and_body_lr_scale_set_each_parameters_step_size(toy, layer_decay, body_lr_scale):
    lr = 1.0
    overrides = [*PLAIN_SGD, f"train.lr={lr}", f"train.body_lr_scale={body_lr_scale}"]
    if layer_decay is not None:
        overrides.append(f"train.layer_decay={layer_decay}")
    trainer = make_trainer(toy_cfg(toy, *overrides))
    head = head_parameter_ids(trainer.model)
    groups, steps = _first_update(trainer)
    for name, p in trainer.model.named_parameters():
        depth = 5 - RESNET_LAYER[name.split(".")[0]]  # layers below the head
        expected = lr * (layer_decay ** depth if layer_decay else 1.0) * (1.0 if id(p) in head else body_lr_scale)
        assert groups[name] == pytest.approx(expected, rel=1e-6), name  # the schedule starts at the peak LR
    # The optimizer applies those LRs. timm's resnets start each residual branch's last BN at zero, so the
    # branch's earlier weights get no gradient in the first update; every layer still has parameters that move.
    assert {RESNET_LAYER[name.split(".")[0]] for name in steps} == set(range(6))
    for name, size in steps.items():
        assert size == pytest.approx(groups[name], rel=1e-3), name


def test_frozen_body_stays_fixed_for_its_epochs_while_the_head_learns_throughout(toy):
    trainer = make_trainer(toy_cfg(toy, "train.freeze_body_epochs=1", "train.epochs=2", "train.ema.enabled=false"))
    head = head_parameter_ids(trainer.model)

    def params() -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    start = params()
    trainer._enter_stage(0)
    trainer._train_epoch(0)
    frozen = params()
    trainer._enter_stage(1)
    trainer._train_epoch(1)
    thawed = params()
    for name, p in trainer.model.named_parameters():
        if id(p) in head:
            assert not torch.equal(start[name], frozen[name]) and not torch.equal(frozen[name], thawed[name]), name
        else:
            assert torch.equal(start[name], frozen[name]), name
    assert all(not torch.equal(frozen[n], thawed[n]) for n, p in trainer.model.named_parameters() if id(p) not in head)
