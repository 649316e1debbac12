"""The optimizer: timm's create_optimizer_v2 over body and head param groups, with layer decay, LR scaling and L1."""
from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay

from medal.core.config import TrainConfig
from medal.modeling.models import classifier, head_parameter_ids


def build_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, SGD (Nesterov momentum) or RMSprop over named groups ('head...', 'body...'), each with an
    `lr_scale` that the schedule multiplies into its LR: 1 for the head, body_lr_scale (times timm's
    layer-decay scale) for the body. Biases and norm weights get no weight decay."""
    if t.lr == "auto":  # only a TrainConfig built outside a Config: the choice needs model.pretrained
        raise ValueError("train.lr is 'auto', which a Config resolves (it depends on model.pretrained): build the "
                         "TrainConfig inside a Config, or give train.lr a number")
    for param in model.parameters():
        param.requires_grad_(True)  # timm's grouping skips frozen parameters; freezing happens per epoch
    # timm's 'sgd' is Nesterov, which needs momentum; its 'momentum' is classical SGD (plain at momentum 0).
    name = "momentum" if t.optimizer == "sgd" and t.momentum == 0 else t.optimizer
    return create_optimizer_v2(model, opt=name, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum,
                               param_group_fn=lambda m: param_groups(m, t))


def param_groups(model: torch.nn.Module, t: TrainConfig) -> list[dict]:
    """timm's weight-decay (or layer-decay) groups, each split into its head and body parameters."""
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if t.layer_decay is not None:
        groups = param_groups_layer_decay(model, weight_decay=t.weight_decay, layer_decay=t.layer_decay,
                                          no_weight_decay_list=no_decay)
    else:
        groups = param_groups_weight_decay(model, weight_decay=t.weight_decay, no_weight_decay_list=no_decay)
    head = head_parameter_ids(model)
    split = []
    for i, group in enumerate(groups):
        scale = group.get("lr_scale", 1.0)
        for part in ("head", "body"):
            params = [p for p in group["params"] if (id(p) in head) == (part == "head")]
            if params:
                split.append({**group, "params": params, "name": f"{part}{i}",
                              "lr_scale": scale * (1.0 if part == "head" else t.body_lr_scale)})
    return split


def batch_lr_factor(t: TrainConfig, batch_size: int) -> float:
    """The linear-scaling rule: LR x (images per optimizer step / reference batch); 1 when off."""
    if t.lr_reference_batch is None:
        return 1.0
    return batch_size * t.accumulate / t.lr_reference_batch


def l1_penalty(model: torch.nn.Module, weight: float) -> torch.Tensor | None:
    """weight x sum |w| over the head's weight matrices (not its biases); None when off."""
    if weight <= 0:
        return None
    return weight * sum(p.abs().sum() for p in classifier(model).parameters() if p.ndim > 1)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The current LR of the head (its largest) and of the body (its smallest)."""
    head = [g["lr"] for g in optimizer.param_groups if str(g.get("name", "")).startswith("head")]
    body = [g["lr"] for g in optimizer.param_groups if str(g.get("name", "")).startswith("body")]
    return {"lr": max(head or body), "lr_body": min(body or head)}
