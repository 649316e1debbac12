"""Speed switches: AMP dtype and gradient scaler, channels_last, torch.compile, DataLoader settings.

The CUDA runs (needs_cuda) are skipped on machines without a GPU.
"""
from __future__ import annotations

import pytest
import torch
from train_toy import make_toy, one_compute_thread, own_outputs, toy_cfg  # noqa: F401 (autouse fixture)

from medal.core.config import ModelConfig
from medal.modeling.models import build_model
from medal.modeling.runtime import (
    amp_dtype,
    autocast,
    compute_threads,
    grad_scaler,
    make_loader,
    speed_up,
)
from medal.train.run import run_train

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model():
    return build_model(ModelConfig(backbone="test_resnet"), 3)


def _conv(model) -> torch.Tensor:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight


def test_channels_last_reformats_the_weights_on_cuda_only():
    model = speed_up(_model(), CUDA, channels_last=True, compile=False)  # a CUDA device object; tensors stay put
    assert _conv(model).is_contiguous(memory_format=torch.channels_last)
    assert not _conv(speed_up(_model(), CUDA, False, False)).is_contiguous(memory_format=torch.channels_last)
    assert not _conv(speed_up(_model(), torch.device("cpu"), True, False)).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow  # over 2 s on a quiet 2-core machine
def test_compile_wraps_the_model_and_shares_its_parameters():
    model = _model()
    compiled = speed_up(model, CUDA, channels_last=False, compile=True)
    assert compiled is not model and hasattr(compiled, "_orig_mod") and compiled._orig_mod is model
    assert speed_up(model, CUDA, False, False) is model
    assert speed_up(model, torch.device("cpu"), False, True) is model


def test_amp_dtype_by_name_and_autocast_is_off_on_cpu():
    assert amp_dtype(CUDA, "bf16") == torch.bfloat16 and amp_dtype(CUDA, "fp16") == torch.float16
    assert amp_dtype(torch.device("cpu")) == torch.bfloat16
    with autocast(torch.device("cpu"), True, "bf16"):
        assert torch.ones(2, 2).mm(torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("has_bf16, dtype, precision_words, scaled", [(False, torch.float16, "fp16 autocast", True),
                                                                   (True, torch.bfloat16, "bf16 autocast", False)])
def test_auto_amp_dtype_is_fp16_with_a_scaler_where_the_gpu_has_no_bf16(monkeypatch, has_bf16, dtype, precision_words,
                                                                        scaled):
    """The T4 and P100 of Kaggle kernels have no bf16: only the capability query is mocked."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: has_bf16)
    from medal.core.config import RuntimeConfig
    from medal.modeling.runtime import needs_scaler, precision

    assert RuntimeConfig().amp_dtype == "auto"  # the default
    assert amp_dtype(CUDA, "auto") == dtype and precision(CUDA, True, "auto") == precision_words
    assert needs_scaler(CUDA, True, "auto") is scaled
    assert amp_dtype(CUDA, "bf16") == torch.bfloat16 and not needs_scaler(CUDA, True, "bf16")  # a name is obeyed
    assert not needs_scaler(torch.device("cpu"), True, "auto") and precision(torch.device("cpu"), True, "auto") == "float32"


def test_grad_scaler_is_off_on_cpu_and_for_bf16():
    assert not grad_scaler(torch.device("cpu"), True, "fp16").is_enabled()
    assert not grad_scaler(CUDA, True, "bf16").is_enabled()


def test_loader_pins_memory_on_cuda_and_keeps_workers_when_asked():
    data = list(range(8))
    loader = make_loader(data, 4, 2, CUDA, persistent_workers=True)
    assert loader.pin_memory and loader.persistent_workers and loader.num_workers == 2
    loader = make_loader(data, 4, 0, torch.device("cpu"), persistent_workers=True)
    assert not loader.pin_memory and not loader.persistent_workers  # nothing to keep alive without workers


@needs_cuda
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_cuda_training_with_amp_channels_last_and_compile(tmp_path_factory, dtype):
    base = tmp_path_factory.mktemp(f"cuda_{dtype}")
    config = make_toy(base)
    cfg = toy_cfg(config, own_outputs(config, base / "o"), "runtime.device=cuda", "runtime.amp=true",
                  f"runtime.amp_dtype={dtype}", "runtime.channels_last=true", "runtime.compile=true", "train.epochs=2")
    scores = run_train(cfg, fold=0)
    last = torch.load(cfg.fold_dir(0) / "last.pt", weights_only=True, map_location="cpu")
    assert scores[0] > 0 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert bool(last["scaler"]) == (dtype == "fp16")  # the fp16 run checkpoints its scaler
    assert not any(k.startswith("_orig_mod") for k in last["model"])  # plain keys, loadable without compile


def test_cpu_threads_are_set_for_the_run_and_restored():
    before = torch.get_num_threads()
    with compute_threads(torch.device("cpu"), None) as threads:
        assert threads == torch.get_num_threads() == before  # None: torch's own setting
    with compute_threads(torch.device("cpu"), before + 1) as threads:
        assert threads == torch.get_num_threads() == before + 1  # runtime.cpu_threads
    assert torch.get_num_threads() == before  # restored
    with compute_threads(CUDA, before + 1):
        assert torch.get_num_threads() == before  # CUDA: untouched
