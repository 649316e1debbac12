"""Training loop speed against the model's bare step, on ../shared/data/flowers.

  bare step  forward, loss, backward and optimizer step on one batch of tensors already in memory,
             repeated: the most the hardware can do for this model, size and batch.
  loop       FoldTrainer._train_epoch with the default recipe: JPEG decode, augmentation and
             normalisation in DataLoader workers, the seeded batch sampler, EMA update, per-step
             schedule and logging. Timed on the last epoch (workers already running).

Goal (issue 4): the loop reaches >= 90% of the bare step's images/s, i.e. data loading hides behind
compute. Peak memory (max RSS) of the process and of its largest worker is printed beside the speed.

    python3 benchmarks/train_speed.py [--backbone resnet10t --size 64 --batch 32 --workers 2 --epochs 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402  (after flowers_setup: it sets the import path)
from flowers_setup import flowers_config, max_rss_mib

from medal.data import class_names, read_folds  # noqa: E402
from medal.models import build_model  # noqa: E402
from medal.optim import build_optimizer  # noqa: E402
from medal.runtime import seed_everything  # noqa: E402
from medal.train import FoldTrainer, split_fold  # noqa: E402


def bare_step(cfg, steps: int) -> float:
    """Images/s of forward/backward/step on one in-memory batch."""
    seed_everything(0)
    model = build_model(cfg.model, 5).train()
    optimizer = build_optimizer(model, cfg.train)
    size, batch = cfg.train.image_size, cfg.train.batch_size
    images, labels = torch.randn(batch, 3, size, size), torch.randint(0, 5, (batch,))
    for i in range(steps + 3):  # 3 warm-up steps
        if i == 3:
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - started)


def loop(cfg, epochs: int) -> tuple[float, int]:
    """Images/s of the trainer's last training epoch on fold 0, and its number of batches."""
    table = read_folds(cfg)
    classes = class_names(table["label"])
    seed_everything(cfg.seed)
    trainer = FoldTrainer(cfg, build_model(cfg.model, len(classes)), torch.device("cpu"),
                          split_fold(cfg, table, classes, 0), classes, 0)
    trainer._enter_stage(0)
    for epoch in range(epochs):
        started = time.perf_counter()
        trainer._train_epoch(epoch)
        seconds = time.perf_counter() - started
    batches = len(trainer.loader)
    speed = batches * cfg.train.batch_size / seconds
    del trainer  # shuts the persistent workers down, so that their peak memory is counted
    return speed, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a new folder under /tmp)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="medal_train_speed_"))
    cfg = flowers_config(out, "speed", [f"model.backbone={args.backbone}", f"train.image_size={args.size}",
                                        f"train.batch_size={args.batch}", f"train.num_workers={args.workers}",
                                        f"train.epochs={args.epochs}", "train.device=cpu", "train.sample_grid=0"])
    loop_speed, batches = loop(cfg, args.epochs)
    bare_speed = bare_step(cfg, batches)
    rss, worker_rss = max_rss_mib()
    print(f"flowers fold 0, {args.backbone} at {args.size}px, batch {args.batch}, {args.workers} workers, "
          f"{torch.get_num_threads()} compute threads, {batches} batches per epoch")
    print(f"{'':<10} {'images/s':>9} {'max RSS MiB':>12}")
    print(f"{'bare step':<10} {bare_speed:>9.1f}")
    print(f"{'loop':<10} {loop_speed:>9.1f} {rss:>12.0f}  (largest worker {worker_rss:.0f})")
    print(f"loop / bare step = {loop_speed / bare_speed:.1%} (goal >= 90%)")


if __name__ == "__main__":
    main()
