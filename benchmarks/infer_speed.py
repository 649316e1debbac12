"""Inference speed by number of TTA views, on the test images of ../shared/data/flowers.

medal's inference path (medal.infer.run._predict: SourcesDataset decoding each image once, the
eval transform, the DataLoader workers, predict_views running every view on each batch) over the real
flowers test JPEGs, with an untrained model (weights do not change the cost), under 1, 2 and 8 views:
['identity'], ['identity', 'hflip'] and the eight 'd4' views. The sets alternate round by round, so
that load from other processes on a shared machine hits them alike; medians are printed.

Goal: the cost grows linearly with the views: the decode is paid once per image, every
view adds one model pass, so the model seconds per view stay flat and the time of a pass is a fixed
part plus a part per view (fitted below, for wall time and for CPU time: this process's threads and
its loader workers, which other load on the machine changes far less than wall time). Peak memory
(max RSS) of the process and of its largest worker is printed beside the speed.

    python3 benchmarks/infer_speed.py [--backbone resnet10t --size 64 --batch 64 --workers 2 --rounds 3]
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from medal.core.config import Config, load_config  # noqa: E402
from medal.core.tables import read_sample_submission  # noqa: E402
from medal.images.paths import image_path  # noqa: E402
from medal.infer.run import _predict  # noqa: E402
from medal.modeling.models import build_model  # noqa: E402
from medal.modeling.runtime import seed_everything  # noqa: E402
from medal.modeling.views import expand_views  # noqa: E402

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers"
SETS = "identity;identity,hflip;d4"


def max_rss_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child (DataLoader workers), MiB."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def config(out: Path, args: argparse.Namespace) -> Config:
    path = out / "infer_speed.yaml"
    path.write_text(yaml.safe_dump({"name": "infer_speed", "output_dir": str(out),
                                    "data": {"root": str(args.data), "image_ext": "", "name": "flowers"}}))
    return load_config(path, [f"model.backbone={args.backbone}", f"train.image_size={args.size}",
                              f"infer.batch_size={args.batch}", f"runtime.num_workers={args.workers}",
                              "runtime.device=cpu"])


def cpu_seconds() -> float:
    """User + system CPU time of this process (every thread) and of its finished children (the loader
    workers, which each pass starts and joins)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_once(cfg: Config, model: torch.nn.Module, paths: list[Path], views: list[str]) -> tuple[float, float, float]:
    """Wall seconds of one pass over `paths` under `views`, its CPU seconds, and the model seconds summed over
    the views (predict_views' timings)."""
    timings: dict[str, float] = {}
    started, cpu = time.perf_counter(), cpu_seconds()
    logits = _predict(cfg, model, paths, views, torch.device("cpu"), "infer speed", timings)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    assert all(v.shape == (len(paths), model.num_classes) for v in logits.values()) and list(logits) == views
    return seconds, cpu, sum(timings.values())


def linear_fit(counts: list[int], values: list[float]) -> str:
    slope, fixed = np.polyfit(np.array(counts, dtype=float), np.array(values), 1)
    misfit = max(abs(fixed + slope * k - v) / v for k, v in zip(counts, values))
    return f"{fixed:.2f} s once + {slope:.2f} s per view (worst misfit {misfit:.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=FLOWERS)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own setting)")
    parser.add_argument("--rounds", type=int, default=3, help="passes per view set, the sets alternating")
    parser.add_argument("--images", type=int, default=0, help="test images to use (0: all)")
    parser.add_argument("--sets", default=SETS, help="view sets, ';'-separated, each a comma list (sets such as d4 expand)")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} is missing: the benchmark needs the shared flowers data set")
    logging.getLogger("medal").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = [expand_views(s.split(",")) for s in args.sets.split(";")]
    with tempfile.TemporaryDirectory(prefix="medal_infer_speed_") as tmp:
        cfg = config(Path(tmp), args)
        ids = read_sample_submission(cfg)[cfg.data.id_col].astype(str).tolist()
        paths = [image_path(cfg, i, "test") for i in ids[:args.images or None]]
        seed_everything(0)
        model = build_model(cfg.model, 5).eval()
        run_once(cfg, model, paths[:2 * args.batch], sets[0])  # warm-up: page cache, first-call costs
        runs: dict[int, list[tuple[float, float, float]]] = {i: [] for i in range(len(sets))}
        for _ in range(args.rounds):
            for i, views in enumerate(sets):
                runs[i].append(run_once(cfg, model, paths, views))
    rss, worker_rss = max_rss_mib()
    n, counts = len(paths), [len(v) for v in sets]
    wall, cpu, model_s = ([statistics.median(r[j] for r in runs[i]) for i in range(len(sets))] for j in range(3))
    print(f"flowers test ({n} JPEGs), untrained {args.backbone} at {args.size}px, batch {args.batch}, "
          f"{args.workers} loader worker(s), {torch.get_num_threads()} torch thread(s), median of {args.rounds} "
          f"round(s), load average {os.getloadavg()[0]:.1f}")
    print("ratios are against the first set (1 view): 'x' for the whole pass, '/view' per view; a linear cost keeps "
          "/view at or below 100% (the decode is shared)")
    print(f"{'views':>5} {'seconds':>8} {'images/s':>8} {'x':>6} {'/view':>6} {'CPU s':>7} {'img/CPU-s':>9} "
          f"{'CPU x':>6} {'CPU/view':>8} {'model s/view':>12} {'model/view':>10}")
    for k, w, c, m in zip(counts, wall, cpu, model_s):
        print(f"{k:>5} {w:>8.2f} {n / w:>8.0f} {w / wall[0]:>5.2f}x {w / k / (wall[0] / counts[0]):>6.0%} "
              f"{c:>7.2f} {n / c:>9.0f} {c / cpu[0]:>5.2f}x {c / k / (cpu[0] / counts[0]):>8.0%} "
              f"{m / k:>12.3f} {m / k / (model_s[0] / counts[0]):>10.0%}")
    if len(sets) > 2:
        print(f"linear fit: wall {linear_fit(counts, wall)}; CPU {linear_fit(counts, cpu)} "
              "(CPU time is less sensitive than wall time to other load on the machine)")
    print(f"max RSS {rss:.0f} MiB (largest worker {worker_rss:.0f} MiB)")


if __name__ == "__main__":
    main()
