"""Training loop speed against the model's bare step, on ../shared/data/flowers.

  bare step  forward, loss, backward and optimizer step on one batch of tensors already in memory,
             repeated: the most the hardware can do for this model, size and batch.
  loop       FoldTrainer._train_epoch with the default recipe: JPEG decode, augmentation and
             normalisation in DataLoader workers, the seeded batch sampler, EMA update, per-step
             schedule and logging. Timed per epoch after a warm-up epoch (workers already running).

Goal (issue 4): the loop reaches >= 90% of the bare step's images/s, i.e. data loading hides behind
compute. Peak memory (max RSS) of the process and of its largest worker is printed beside the speed.

    python3 benchmarks/train_speed.py [--backbone resnet10t --size 64 --batch 32 --workers 2 --rounds 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402  (after flowers_setup: it sets the import path)
from flowers_setup import flowers_config, max_rss_mib

from medal.core.tables import class_names, read_folds  # noqa: E402
from medal.modeling.models import build_model  # noqa: E402
from medal.modeling.runtime import compute_threads, seed_everything  # noqa: E402
from medal.train.fold import split_fold  # noqa: E402
from medal.train.optim import build_optimizer  # noqa: E402
from medal.train.trainer import FoldTrainer  # noqa: E402


class BareStep:
    """Forward/backward/step of the same model and optimizer on one in-memory batch, repeated."""

    def __init__(self, cfg) -> None:
        seed_everything(0)
        self.model = build_model(cfg.model, 5).train()
        self.optimizer = build_optimizer(self.model, cfg.train)
        size, self.batch = cfg.train.image_size, cfg.train.batch_size
        self.images, self.labels = torch.randn(self.batch, 3, size, size), torch.randint(0, 5, (self.batch,))
        self.run(3)  # warm-up

    def run(self, steps: int) -> float:
        """Images/s over `steps` steps."""
        started = time.perf_counter()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(self.model(self.images), self.labels).backward()
            self.optimizer.step()
        return steps * self.batch / (time.perf_counter() - started)


def trainer(cfg) -> FoldTrainer:
    table = read_folds(cfg)
    classes = class_names(table["label"])
    seed_everything(cfg.seed)
    loop = FoldTrainer(cfg, build_model(cfg.model, len(classes)), torch.device("cpu"),
                       split_fold(cfg, table, classes, 0), classes, 0)
    loop._enter_stage(0)
    loop._train_epoch(0)  # warm-up: starts the persistent workers
    return loop


def measure(cfg, rounds: int) -> tuple[list[tuple[float, float]], int, int]:
    """(loop, bare) images/s per round, the torch threads both used (train_fold's choice, see
    medal.modeling.runtime.compute_threads) and the fold's training images. The two alternate, an epoch
    against as many bare steps, so that load from other processes on a shared machine hits both alike."""
    with compute_threads(torch.device("cpu"), cfg.runtime.cpu_threads) as threads:
        loop, bare, results = trainer(cfg), BareStep(cfg), []
        images = len(loop.loader.dataset)
        for epoch in range(1, rounds + 1):
            started = time.perf_counter()
            loop._train_epoch(epoch)
            loop_speed = len(loop.loader) * cfg.train.batch_size / (time.perf_counter() - started)
            results.append((loop_speed, bare.run(len(loop.loader))))
        del loop  # shuts the persistent workers down, so that their peak memory is counted
    return results, threads, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs, each against as many bare steps")
    parser.add_argument("--threads", type=int, default=None, help="runtime.cpu_threads (default: torch's own setting)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder, kept (default: a new folder under /tmp, removed at the end)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medal_train_speed_") as tmp:
        cfg = flowers_config(args.out or Path(tmp), "speed", [
            f"model.backbone={args.backbone}", f"train.image_size={args.size}", f"train.batch_size={args.batch}",
            f"runtime.num_workers={args.workers}", f"train.epochs={args.rounds + 1}", "runtime.device=cpu",
            "report.sample_grid=0", f"runtime.cpu_threads={args.threads or 'null'}"])
        results, threads, images = measure(cfg, args.rounds)
    rss, worker_rss = max_rss_mib()
    print(f"flowers fold 0 ({images} training images), {args.backbone} at {args.size}px, batch {args.batch}, "
          f"{args.workers} workers, {threads} compute thread(s) for both, load average {os.getloadavg()[0]:.1f}")
    print(f"{'round':<6} {'loop img/s':>10} {'bare img/s':>10} {'loop/bare':>9}")
    for i, (loop_speed, bare_speed) in enumerate(results, 1):
        print(f"{i:<6} {loop_speed:>10.1f} {bare_speed:>10.1f} {loop_speed / bare_speed:>9.1%}")
    loops, bares = (sorted(v) for v in zip(*results))
    ratio = sorted(a / b for a, b in results)[len(results) // 2]
    print(f"median loop {loops[len(loops) // 2]:.1f} img/s, bare step {bares[len(bares) // 2]:.1f} img/s, "
          f"median ratio {ratio:.1%} (goal >= 90%)")
    print(f"max RSS {rss:.0f} MiB (largest worker {worker_rss:.0f} MiB; most of both is the imported libraries)")


if __name__ == "__main__":
    main()
