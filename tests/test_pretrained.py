"""Pretrained weights: timm's hub weights read from a Hugging Face cache built here (offline, no network), their
export for a kernel without internet, and the fine-tuning recipe a pretrained body gets by default."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file, save_file
from train_toy import one_compute_thread  # noqa: F401 (autouse fixture)

from medal.cli import main
from medal.core.config import ConfigError, ModelConfig, load_config
from medal.modeling.checkpoint import recipe
from medal.modeling.models import build_model

REPO = "timm/test_resnet.r160_in1k"  # where timm looks for test_resnet's pretrained weights
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FINETUNE = Path(__file__).parents[1] / "configs" / "hymenoptera" / "finetune.yaml"


def hub_weights() -> dict[str, torch.Tensor]:
    """test_resnet tensors no fresh model has: seeded, and shifted so that no init can match them."""
    torch.manual_seed(1)
    return {k: v + 0.5 if v.is_floating_point() else v
            for k, v in timm.create_model("test_resnet", pretrained=False).state_dict().items()}


def write_hf_cache(cache: Path, weights: dict[str, torch.Tensor]) -> Path:
    """The layout huggingface_hub reads offline: refs/main names a commit whose snapshot holds the file."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    save_file(weights, str(repo / "snapshots" / COMMIT / "model.safetensors"))
    return cache


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    """HF_HUB_CACHE pointing at a cache that holds test_resnet's weights, and HF_HUB_OFFLINE=1. huggingface_hub
    reads both once, on import, so its constants are set too."""
    weights = hub_weights()
    cache = write_hf_cache(tmp_path / "hf", weights)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return weights


def test_pretrained_loads_exactly_the_cached_tensors_into_the_body(offline_cache):
    model = build_model(ModelConfig(backbone="test_resnet", pretrained=True), 3)
    loaded = model.state_dict()
    body = [k for k in offline_cache if not k.startswith("fc.")]
    assert body and all(torch.equal(loaded[k], offline_cache[k]) for k in body)
    assert loaded["fc.weight"].shape == (3, 96)  # a new head for 3 classes, not the cache's 1000


def test_a_pretrained_head_with_the_same_class_count_is_kept(offline_cache):
    model = build_model(ModelConfig(backbone="test_resnet", pretrained=True, head_init="kaiming"), 1000)
    assert torch.equal(model.fc.weight, offline_cache["fc.weight"])


def test_weights_missing_offline_are_refused_naming_the_repo_and_the_remedies(offline_cache):
    with pytest.raises(FileNotFoundError) as err:
        build_model(ModelConfig(backbone="resnet10t", pretrained=True), 3)
    message = str(err.value)
    for part in ["'resnet10t'", "timm/resnet10t.c3_in1k", "HF_HUB_OFFLINE=1",
                 "`medal weights export resnet10t --out DIR`", "model.pretrained_file=DIR/model.safetensors",
                 "warm the Hugging Face cache"]:
        assert part in message


def test_export_from_the_cache_is_what_pretrained_file_and_timm_load_back(offline_cache, tmp_path):
    out = tmp_path / "dataset"
    assert main(["weights", "export", "test_resnet", "--out", str(out)]) == 0
    exported = load_file(str(out / "model.safetensors"))
    assert exported.keys() == offline_cache.keys()
    assert all(torch.equal(exported[k], offline_cache[k]) for k in exported)
    model = build_model(ModelConfig(backbone="test_resnet", pretrained_file=out / "model.safetensors"), 3)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in offline_cache.items() if not k.startswith("fc."))
    # config.json is timm's own format: timm rebuilds the model from the folder alone.
    rebuilt = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in offline_cache.items())


def test_export_of_weights_that_cannot_be_reached_fails_naming_them(offline_cache, tmp_path, capsys):
    assert main(["weights", "export", "resnet10t", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medal weights: error: cannot export 'resnet10t'") and "timm/resnet10t.c3_in1k" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_reads_the_cache_named_by_the_environment_alone(tmp_path):
    """The user's path: a new process with HF_HUB_CACHE and HF_HUB_OFFLINE=1 set, nothing patched."""
    weights = hub_weights()
    env = {**os.environ, "HF_HUB_CACHE": str(write_hf_cache(tmp_path / "hf", weights)), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "dataset"
    done = subprocess.run([sys.executable, "-m", "medal", "weights", "export", "test_resnet", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    exported = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(exported[k], weights[k]) for k in weights)


def _cfg(tmp_path, *overrides):
    return load_config(FINETUNE, [f"data.root={tmp_path}", *overrides])


def test_pretrained_and_pretrained_file_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match=r"model.pretrained_file: model.pretrained and model.pretrained_file are "
                                          r"exclusive"):
        _cfg(tmp_path, "model.pretrained_file=w.safetensors")


@pytest.mark.parametrize("overrides, scale", [
    ([], 0.1),                                                               # a pretrained body: a tenth
    (["model.pretrained=false", "model.pretrained_file=w.safetensors"], 0.1),  # a local file is pretrained too
    (["model.pretrained=false"], 1.0),                                       # from scratch
    (["train.layer_decay=0.75"], 1.0),                                       # layer decay lowers the body instead
])
def test_an_unset_body_lr_scale_follows_whether_the_body_is_pretrained(tmp_path, overrides, scale):
    raw = FINETUNE.read_text().replace("  body_lr_scale: 0.1", "")  # the example spells the default out
    path = tmp_path / "finetune.yaml"
    path.write_text(raw)
    cfg = load_config(path, [f"data.root={tmp_path}", *overrides])
    assert cfg.train.body_lr_scale == scale
    assert recipe(cfg)["train"]["body_lr_scale"] == scale  # the resolved value is what a resume must match


def test_an_explicit_body_lr_scale_is_kept_for_a_pretrained_body(tmp_path):
    assert _cfg(tmp_path, "train.body_lr_scale=0.5").train.body_lr_scale == 0.5


def test_the_finetuning_example_loads_as_a_pretrained_recipe(tmp_path):
    cfg = _cfg(tmp_path)
    assert cfg.model.pretrained and cfg.model.pretrained_file is None
    assert cfg.train.body_lr_scale == 0.1 and cfg.train.freeze_body_epochs == 1
    assert timm.models.get_pretrained_cfg(cfg.model.backbone).hf_hub_id  # a backbone with hub weights
