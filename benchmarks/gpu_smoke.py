"""GPU smoke test: medal's training at fp32, AMP, AMP + channels_last and compiled, beside the bare model step.

For each setting it trains one fold of the embedded demo competition (medal demo, built in a temporary folder)
through medal's own `run_train`, and times the same model's bare step (forward, backward, optimizer step on
random tensors already on the GPU) at the same batch, size, precision and memory format. It prints, per setting,
medal's training img/s (the epochs after the first, whose time holds the compile and the warm-up; validation
included, so it is a lower bound), the bare step's img/s, their ratio, and the peak GPU memory of each, with the
card's name. Nothing here is a unit test: run it on a machine with a GPU.

    bash benchmarks/gpu_smoke.sh [--backbone resnet18 --size 128 --batch 128 --epochs 3]
    python3 benchmarks/gpu_smoke.py --device cpu --size 32 --batch 32 --epochs 2 --settings fp32   # a dry run

With two GPUs or more it adds a 2-process DDP run (torchrun, AMP + channels_last) of the same fold; its peak
memory is per process and not measured from here (n/a).
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pandas as pd
import torch
import yaml

from medal.core.config import load_config
from medal.core.log import setup_logging
from medal.demo import build_demo
from medal.modeling.models import build_model
from medal.modeling.runtime import autocast, grad_scaler, precision, speed_up
from medal.train.run import run_train

# name -> runtime overrides
SETTINGS = {
    "fp32": {"amp": False, "channels_last": False, "compile": False},
    "amp": {"amp": True, "channels_last": False, "compile": False},
    "amp+channels_last": {"amp": True, "channels_last": True, "compile": False},
    "amp+channels_last+compile": {"amp": True, "channels_last": True, "compile": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=200, help="demo images per class (10 classes)")
    parser.add_argument("--bare-steps", type=int, default=30)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from {list(SETTINGS)}")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_smoke: no CUDA device here; use --device cpu for a dry run")
    setup_logging(logging.WARNING)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    with tempfile.TemporaryDirectory(prefix="medal-gpu-smoke-") as tmp:
        base = write_demo(Path(tmp), args)
        for name in args.settings.split(","):
            rows.append({"setting": name, **measure(base, name, SETTINGS[name], device, args)})
        if device.type == "cuda" and torch.cuda.device_count() >= 2:
            rows.append({"setting": "ddp x2 (amp+channels_last)", **measure_ddp(base, args)})
    table = pd.DataFrame(rows).set_index("setting")
    print(f"\ngpu_smoke on {card}: {args.backbone} at {args.size}px, batch {args.batch}, {args.epochs} epochs, "
          f"torch {torch.__version__}; max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(table.to_string(float_format=lambda v: f"{v:.1f}"))


def write_demo(tmp: Path, args) -> Path:
    """The demo competition at the benchmark's size, its folds, and a base config; returns the config."""
    root = tmp / "demo"
    build_demo(root, size=args.size, per_class=args.per_class)
    config = tmp / "smoke.yaml"
    config.write_text(yaml.safe_dump({
        "name": "smoke", "seed": 0, "metric": "accuracy", "output_dir": str(tmp / "outputs"),
        "data": {"root": str(root), "image_ext": ".png"}, "folds": {"n_folds": 5},
        "model": {"backbone": args.backbone},
        "train": {"image_size": args.size, "epochs": args.epochs, "batch_size": args.batch, "augment": "light"},
        "runtime": {"device": args.device, "num_workers": min(8, os.cpu_count() or 1)},
        "report": {"sample_grid": 0, "gallery_size": 0},
    }, sort_keys=False))
    from medal.clean import run_clean
    from medal.folds import run_folds

    cfg = load_config(config)
    run_clean(cfg)
    run_folds(cfg)
    return config


def measure(config: Path, name: str, runtime: dict, device: torch.device, args) -> dict:
    overrides = [f"name=smoke_{name.replace('+', '_')}", *(f"runtime.{k}={str(v).lower()}" for k, v in runtime.items())]
    cfg = load_config(config, overrides)
    reset_peak(device)
    run_train(cfg, fold=0)
    medal_rate = train_rate(cfg, args.batch, ranks=1)
    medal_peak = peak(device)
    bare_rate, bare_peak = bare_step(cfg, runtime, device, args)
    return {"precision": precision(device, runtime["amp"], cfg.runtime.amp_dtype), "medal img/s": medal_rate,
            "bare img/s": bare_rate, "medal/bare": medal_rate / bare_rate, "medal peak MiB": medal_peak,
            "bare peak MiB": bare_peak}


def measure_ddp(config: Path, args) -> dict:
    """The same fold trained by 2 processes under torchrun; img/s over both GPUs, from rank 0's metrics.csv."""
    import subprocess

    overrides = ["name=smoke_ddp", "runtime.amp=true", "runtime.channels_last=true"]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "medal", "train", "-c",
                    str(config), "--fold", "0", *overrides], check=True)
    return {"precision": "ddp", "medal img/s": train_rate(load_config(config, overrides), args.batch, ranks=2)}


def train_rate(cfg, batch: int, ranks: int) -> float:
    """Fold 0's training images per second over the epochs after the first (whose time holds the compile and the
    warm-up), from metrics.csv: each rank trains whole batches of its n // ranks share."""
    metrics = pd.read_csv(cfg.fold_dir(0) / "metrics.csv")
    train_images = len(pd.read_csv(cfg.data_dir / "folds.csv").query("fold != 0"))
    later = metrics.iloc[1:] if len(metrics) > 1 else metrics
    per_epoch = train_images // ranks // batch * batch * ranks
    return len(later) * per_epoch / later["seconds"].sum()


def bare_step(cfg, runtime: dict, device: torch.device, args) -> tuple[float, float]:
    """img/s and peak memory of forward + backward + AdamW step on random tensors already on the device."""
    model = build_model(cfg.model, 10).to(device).train()
    forward = speed_up(model, device, runtime["channels_last"], runtime["compile"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = grad_scaler(device, runtime["amp"], cfg.runtime.amp_dtype)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    if runtime["channels_last"] and device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    reset_peak(device)

    def step() -> None:
        with autocast(device, runtime["amp"], cfg.runtime.amp_dtype):
            loss = torch.nn.functional.cross_entropy(forward(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):  # warm-up (and compile)
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.bare_steps):
        step()
    synchronize(device)
    return args.bare_steps * args.batch / (time.perf_counter() - started), peak(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
