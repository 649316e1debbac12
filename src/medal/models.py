"""Backbones by timm name; pretrained weights only from a local file (no hub access)."""
from __future__ import annotations

import timm
import torch

from medal.augment import Stats
from medal.config import ModelConfig


def build_model(cfg: ModelConfig, num_classes: int) -> torch.nn.Module:
    if cfg.pretrained_file is not None and not cfg.pretrained_file.is_file():
        raise FileNotFoundError(f"model.pretrained_file {cfg.pretrained_file} does not exist")
    try:
        return timm.create_model(
            cfg.backbone,
            pretrained=cfg.pretrained_file is not None,
            pretrained_cfg_overlay=dict(file=str(cfg.pretrained_file)) if cfg.pretrained_file else None,
            num_classes=num_classes,
            drop_rate=cfg.drop_rate,
            drop_path_rate=cfg.drop_path_rate or None,
        )
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"model.backbone={cfg.backbone!r} is not a timm model: {err}") from None
        raise


def normalisation(model: torch.nn.Module) -> Stats:
    """The mean and std the backbone expects (ImageNet's unless its config says otherwise)."""
    data_cfg = timm.data.resolve_data_config({}, model=model)
    return tuple(data_cfg["mean"]), tuple(data_cfg["std"])
