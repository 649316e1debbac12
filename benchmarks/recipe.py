"""Does the default training recipe beat plain training? One fold of ../shared/data/flowers, same model.

  default  medal's TrainConfig defaults: AdamW, 1 warmup epoch then a per-step cosine, label smoothing 0.1,
           the 'light' augmentation preset, EMA of the weights (the better of raw and EMA per epoch).
  plain    the same model, optimizer, LR, batch and epochs, with no augmentation, a constant LR (no warmup,
           no decay), no label smoothing and no EMA.

Both train from scratch (no pretrained weights offline) at a small size so that a CPU can run them; the
validation accuracy of fold 0 is printed for each, with time and peak memory. Goal (issue 4): the default
recipe wins.

    python3 benchmarks/recipe.py [--backbone resnet10t --size 64 --epochs 8 --batch 32 --workers 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd  # noqa: E402
from flowers_setup import flowers_config, max_rss_mib

from medal.core.log import setup_logging  # noqa: E402
from medal.train.run import run_train  # noqa: E402

PLAIN = ["train.augment=none", "train.warmup_epochs=0", "train.label_smoothing=0", "train.ema.enabled=false"]


def train(out: Path, name: str, common: list[str], extra: list[str]) -> dict:
    cfg = flowers_config(out, name, common + extra)
    if name == "plain":  # a constant LR: the cosine's floor is its peak
        cfg = flowers_config(out, name, common + extra + [f"train.min_lr={cfg.train.lr}"])
    started = time.perf_counter()
    run_train(cfg, fold=0)
    seconds = time.perf_counter() - started
    done = json.loads((cfg.fold_dir(0) / "done.json").read_text())
    metrics = pd.read_csv(cfg.fold_dir(0) / "metrics.csv")
    final = metrics.iloc[-1]
    return {"best": done["best_score"], "best_epoch": done["best_epoch"] + 1, "final": final["accuracy"],
            "final_ema": final.get("ema_accuracy", float("nan")), "weights": done["weights"],
            "verdict": done["diagnosis"]["verdict"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a new folder under /tmp)")
    args = parser.parse_args()
    setup_logging()
    out = args.out or Path(tempfile.mkdtemp(prefix="medal_recipe_"))
    common = [f"model.backbone={args.backbone}", f"train.image_size={args.size}", f"train.epochs={args.epochs}",
              f"train.batch_size={args.batch}", f"runtime.num_workers={args.workers}", "runtime.device=cpu"]
    results = {"default": train(out, "default", common, []), "plain": train(out, "plain", common, PLAIN)}
    rss, worker_rss = max_rss_mib()
    print(f"\nflowers fold 0 (691 validation images), {args.backbone} from scratch at {args.size}px, "
          f"{args.epochs} epochs, batch {args.batch}; outputs in {out}")
    print(f"{'recipe':<8} {'best acc':>8} {'@epoch':>6} {'weights':>7} {'final acc':>9} {'final EMA':>9} "
          f"{'diagnosis':>12} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:<8} {r['best']:>8.4f} {r['best_epoch']:>6} {r['weights']:>7} {r['final']:>9.4f} "
              f"{r['final_ema']:>9.4f} {r['verdict']:>12} {r['seconds']:>8.0f}")
    print(f"max RSS {rss:.0f} MiB (largest worker {worker_rss:.0f} MiB)")
    gain = results["default"]["best"] - results["plain"]["best"]
    print(f"default - plain = {gain:+.4f} accuracy: the default recipe {'wins' if gain > 0 else 'does NOT win'}")


if __name__ == "__main__":
    main()
