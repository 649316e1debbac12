"""Backbones by timm name; pretrained weights from a local file or through timm's hub (the Hugging Face cache);
head init and freezing."""
from __future__ import annotations

import timm
import torch

from medal.core.config import ModelConfig
from medal.images.augment import Stats
from medal.modeling.weights import hub_access


def build_model(cfg: ModelConfig, num_classes: int) -> torch.nn.Module:
    """A timm model with `num_classes` outputs; a new head is initialised as `cfg.head_init` says."""
    if cfg.pretrained_file is not None and not cfg.pretrained_file.is_file():
        raise FileNotFoundError(f"model.pretrained_file {cfg.pretrained_file} does not exist")
    pretrained = cfg.pretrained or cfg.pretrained_file is not None
    try:
        with hub_access(cfg.backbone):
            model = timm.create_model(
                cfg.backbone,
                pretrained=pretrained,
                pretrained_cfg_overlay=dict(file=str(cfg.pretrained_file)) if cfg.pretrained_file else None,
                num_classes=num_classes,
                drop_rate=cfg.drop_rate,
                drop_path_rate=cfg.drop_path_rate or None,
            )
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"model.backbone={cfg.backbone!r} is not a timm model: {err}") from None
        if "No pretrained weights exist" in str(err):
            raise ValueError(f"model.pretrained: timm has no pretrained weights for {cfg.backbone!r}; pick a name "
                             f"from timm.list_pretrained() or train from scratch (model.pretrained=false)") from None
        raise
    # timm keeps a pretrained head only when the class count matches the weights'; that head is not new.
    head_is_pretrained = pretrained and num_classes == model.pretrained_cfg.get("num_classes")
    if not head_is_pretrained:
        init_head(model, cfg.head_init)
    return model


def init_head(model: torch.nn.Module, how: str) -> None:
    """Re-initialise every weight of the classifier: Kaiming- or Xavier-normal, zero biases; 'timm' keeps timm's."""
    if how == "timm":
        return
    for module in classifier(model).modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            if how == "kaiming":
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif how == "xavier":
                torch.nn.init.xavier_normal_(module.weight)
            else:
                raise ValueError(f"model.head_init={how!r} is not one of xavier, kaiming, timm")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)


def classifier(model: torch.nn.Module) -> torch.nn.Module:
    """The layer timm names as the classifier (`get_classifier()`): the part that is new for a competition."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, torch.nn.Module) or not any(True for _ in head.parameters()):
        raise ValueError(f"{type(model).__name__} has no classifier layer with weights (get_classifier())")
    return head


def head_parameter_ids(model: torch.nn.Module) -> set[int]:
    return {id(p) for p in classifier(model).parameters()}


def set_train_mode(model: torch.nn.Module, frozen_body: bool) -> None:
    """model.train(); with a frozen body, the body also stops learning: no gradients, fixed norm statistics
    and no body dropout, so its weights and buffers stay exactly as they were."""
    model.train()
    head = set(classifier(model).modules())
    head_ids = head_parameter_ids(model)
    for param in model.parameters():
        param.requires_grad_(not frozen_body or id(param) in head_ids)
    if frozen_body:
        for module in model.modules():
            if module is not model and module not in head:
                module.training = False  # not .eval(): that would recurse into a head inside a body container


def normalisation(model: torch.nn.Module) -> Stats:
    """The mean and std the backbone expects (ImageNet's unless its config says otherwise)."""
    data_cfg = timm.data.resolve_data_config({}, model=model)
    return tuple(data_cfg["mean"]), tuple(data_cfg["std"])
