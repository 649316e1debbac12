"""Backbones by timm name; pretrained weights from a local file (from the hub's cache: test_pretrained.py)."""
from __future__ import annotations

import pytest
import timm
import torch
from train_toy import one_compute_thread  # noqa: F401 (autouse fixture)

from medal.core.config import ModelConfig
from medal.modeling.models import build_model, normalisation


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


def _train_outputs(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(cfg, 5).train()
    for module in model.modules():  # timm zero-inits each block's last norm, which silences its branch at init
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    x = torch.rand(4, 3, 32, 32)
    return model(x), model(x)


def test_head_dropout_makes_training_forward_passes_random():
    first, second = _train_outputs(ModelConfig(backbone="resnet10t", drop_rate=0.5))
    assert not torch.allclose(first, second)
    first, second = _train_outputs(ModelConfig(backbone="resnet10t"))
    assert torch.allclose(first, second)


def test_drop_path_rate_drops_residual_branches_in_the_body():
    first, second = _train_outputs(ModelConfig(backbone="resnet10t", drop_path_rate=0.5))
    assert not torch.allclose(first, second)
    model = build_model(ModelConfig(backbone="resnet10t", drop_path_rate=0.3), 5)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.3)


@pytest.mark.parametrize("how, std", [("kaiming", (2 / 96) ** 0.5), ("xavier", (2 / (96 + 96)) ** 0.5)])
def test_head_init_draws_normal_weights_with_the_schemes_std_and_zero_bias(how, std):
    torch.manual_seed(0)
    fc = build_model(ModelConfig(backbone="test_resnet", head_init=how), 96).fc  # 96 features in, 96 classes out
    assert fc.weight.std().item() == pytest.approx(std, rel=0.05)
    assert fc.weight.mean().abs().item() < std / 10 and torch.count_nonzero(fc.bias) == 0


def test_head_init_timm_keeps_timms_own_head():
    torch.manual_seed(0)
    ours = build_model(ModelConfig(backbone="test_resnet", head_init="timm"), 96).fc
    torch.manual_seed(0)
    theirs = timm.create_model("test_resnet", num_classes=96).fc
    assert torch.equal(ours.weight, theirs.weight)


def test_a_head_loaded_from_the_pretrained_file_is_not_reinitialised(source_model, tmp_path):
    torch.save(source_model.state_dict(), tmp_path / "w.pth")
    model = build_model(ModelConfig(backbone="test_resnet", pretrained_file=tmp_path / "w.pth", head_init="kaiming"), 1000)
    assert torch.equal(model.fc.weight, source_model.fc.weight)
