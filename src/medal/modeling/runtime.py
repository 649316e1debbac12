"""Device, seeding, DataLoader settings, mixed precision and the speed switches every stage shares."""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medal.images.dataset import seed_worker


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device=cuda but no CUDA device is visible; use runtime.device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device,
                shuffle: bool = False, generator: torch.Generator | None = None, drop_last: bool = False,
                batch_sampler: Sampler | None = None, persistent_workers: bool = False) -> DataLoader:
    """A DataLoader with pinned memory on CUDA and seeded workers (seed_worker also sets
    cv2.setNumThreads(0): the workers are the parallelism). With `batch_sampler`, it picks the batches."""
    batching = {"batch_sampler": batch_sampler} if batch_sampler is not None else \
        {"batch_size": batch_size, "shuffle": shuffle, "drop_last": drop_last}
    return DataLoader(
        dataset,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=seed_worker if num_workers else None,
        generator=generator,
        persistent_workers=persistent_workers and num_workers > 0,
        **batching,
    )


def amp_dtype(device: torch.device, name: str | None = "auto") -> torch.dtype:
    """The autocast dtype: as named ('bf16', 'fp16'); 'auto' (or None): bf16 where the device has it, fp16
    elsewhere (older GPUs such as the T4 and P100 have no bf16)."""
    if name not in (None, "auto"):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def precision(device: torch.device, enabled: bool, dtype: str | None = None) -> str:
    """The precision `autocast` gives, in words: 'float32' on CPU or with amp off, else e.g. 'bf16 autocast'."""
    if not (enabled and device.type == "cuda"):
        return "float32"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype(device, dtype)] + " autocast"


def autocast(device: torch.device, enabled: bool, dtype: str | None = None):
    """Autocast on CUDA when asked (bf16 by default, see amp_dtype); a no-op context on CPU."""
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device, dtype), enabled=enabled and device.type == "cuda")


def needs_scaler(device: torch.device, enabled: bool, dtype: str | None) -> bool:
    """A gradient scaler is needed for fp16 autocast on CUDA only (bf16 has float32's range)."""
    return enabled and device.type == "cuda" and amp_dtype(device, dtype) == torch.float16


def grad_scaler(device: torch.device, enabled: bool, dtype: str | None) -> torch.amp.GradScaler:
    """A GradScaler, active only where `needs_scaler`."""
    return torch.amp.GradScaler(device.type, enabled=needs_scaler(device, enabled, dtype))


def speed_up(model: torch.nn.Module, device: torch.device, channels_last: bool, compile: bool) -> torch.nn.Module:
    """On CUDA: channels_last weights (in place) and, if asked, a torch.compile'd forward. Returns the module
    to call; the original `model` keeps the parameters and the state_dict keys."""
    if device.type != "cuda":
        return model
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


@contextmanager
def compute_threads(device: torch.device, threads: int | None) -> Iterator[int]:
    """On CPU, run torch with `threads` intra-op threads (None: torch's own setting), restoring the previous
    setting on exit; a no-op on CUDA. Leaving cores to the loader workers did not pay: on 2 cores with 2 workers,
    resnet10t at 64 px trained at 97 images/s on one thread against about 150 on two (benchmarks/train_speed.py)."""
    before = torch.get_num_threads()
    if device.type != "cpu" or threads is None:
        yield before
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
