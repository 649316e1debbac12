"""Backbones by timm name; pretrained weights from a local file only."""
from __future__ import annotations

import pytest
import timm
import torch

from medal.config import ModelConfig
from medal.models import build_model, normalisation


@pytest.fixture(scope="module")
def source_model():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False)  # a 1000-class head, like a hub checkpoint


def test_model_has_one_output_per_class():
    model = build_model(ModelConfig(backbone="test_resnet"), 7).eval()
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 7)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_file_supplies_every_body_weight(source_model, tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source_model.state_dict(), str(path))
    else:
        torch.save(source_model.state_dict(), path)
    model = build_model(ModelConfig(backbone="test_resnet", pretrained_file=path), 10)
    loaded, source = model.state_dict(), source_model.state_dict()
    body = [k for k in source if not k.startswith("fc.")]
    assert all(torch.equal(loaded[k], source[k]) for k in body)
    assert loaded["fc.weight"].shape == (10, source["fc.weight"].shape[1])


def test_missing_pretrained_file_is_refused_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model.pretrained_file .*absent.pth does not exist"):
        build_model(ModelConfig(backbone="test_resnet", pretrained_file=tmp_path / "absent.pth"), 10)


def test_unknown_backbone_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"model.backbone='no_such_net' is not a timm model"):
        build_model(ModelConfig(backbone="no_such_net"), 10)


def test_normalisation_follows_the_backbones_pretrained_config():
    assert normalisation(build_model(ModelConfig(backbone="test_resnet"), 3)) == ((0.5,) * 3, (0.5,) * 3)
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    mean, std = normalisation(build_model(ModelConfig(backbone="resnet10t"), 3))
    assert (mean, std) == (pytest.approx(imagenet[0]), pytest.approx(imagenet[1]))
