"""Caruana ensemble selection speed: 100 hill-climbing steps over 50 models x 100,000 rows x 5 classes.

Target (issue 5): under 5 s on a 2-core CPU, vectorised numpy, no Python loop over rows.
Two kinds of OOF predictions:
  realistic  - models that share the truth and part of their errors (about 75% accurate each,
               correlated like models trained on the same folds), as a real blend sees;
  noise      - every probability independent uniform noise: no row ever settles, the worst case.
The climb is timed per metric; peak memory (max RSS) is printed beside it.

    python3 benchmarks/blend_speed.py [--models 50 --rows 100000 --classes 5 --iters 100]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medal.blend.search import class_slabs, hill_climb  # noqa: E402
from medal.core.metrics import score  # noqa: E402


def realistic(models: int, rows: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    targets = rng.integers(0, classes, rows)
    truth = np.eye(classes, dtype=np.float32)[targets] * 2.0
    shared = rng.normal(size=(rows, classes)).astype(np.float32)  # errors every model makes
    preds = np.empty((models, rows, classes), dtype=np.float32)
    for m in range(models):
        logits = truth + shared + rng.normal(scale=rng.uniform(0.8, 1.6), size=(rows, classes)).astype(np.float32)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        preds[m] = e / e.sum(axis=1, keepdims=True)
    return preds, targets


def noise(models: int, rows: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    preds = rng.dirichlet(np.ones(classes), size=(models, rows)).astype(np.float32)
    return preds, rng.integers(0, classes, rows)


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--metrics", default="accuracy,log_loss,f1_macro,qwk")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"Caruana, {args.iters} steps over {args.models} models x {args.rows:,} rows x {args.classes} classes; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'data':<10} {'metric':<9} {'seconds':>8} {'best model':>10} {'blend':>7} {'models used':>11} {'max RSS MiB':>11}")
    for kind, make in (("realistic", realistic), ("noise", noise)):
        preds, targets = make(args.models, args.rows, args.classes, rng)
        stacked = class_slabs(preds)
        for metric in args.metrics.split(","):
            started = time.perf_counter()
            weights = hill_climb(stacked, targets, metric, args.iters, init=1)
            seconds = time.perf_counter() - started
            best = max(score(metric, targets, p) for p in preds) if metric != "log_loss" else \
                min(score(metric, targets, p) for p in preds)
            blend = score(metric, targets, np.tensordot(weights, preds, axes=1))
            print(f"{kind:<10} {metric:<9} {seconds:>8.2f} {best:>10.4f} {blend:>7.4f} {int((weights > 0).sum()):>11} "
                  f"{max_rss_mib():>11.0f}")
        del preds, stacked


if __name__ == "__main__":
    main()
