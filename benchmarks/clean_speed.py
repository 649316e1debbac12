"""clean speed: images per second of `medal clean` on the shared real datasets, by worker count.

Target (issue 3): >= 3,000 images/s on flowers (3,453 JPEGs of 128x128) with 2 cores.
For each dataset and worker count it runs the whole clean stage (scan: read, CRC
or end-marker check, full decode with decode_rgb, content hash, perceptual hash,
blank measure; then size checks, duplicate grouping and the reports) --repeats
times into a temporary folder, and prints the median and best rate of the scan
and of the whole stage, and images per CPU-second (this process and its
workers), which other load on the machine changes far less than the rates. Reference rows give one core's plain decode rate (PIL
and OpenCV, bytes already in memory) for scale. Peak memory is max RSS of this
process and of the largest worker. The page cache is warm after the first run.

    python3 benchmarks/clean_speed.py [--data /work/shared/data] [--workers 1,0] [--repeats 3]
"""
from __future__ import annotations

import argparse
import io
import json
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

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from medal.clean.run import run_clean  # noqa: E402
from medal.clean.scan import default_workers  # noqa: E402
from medal.core.config import load_config  # noqa: E402


def max_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def decode_reference(folder: Path, limit: int = 1000) -> tuple[float, float]:
    """One core's decode rate (images/s) with PIL and with OpenCV, file bytes already in memory."""
    blobs = [p.read_bytes() for p in sorted(folder.iterdir())[:limit]]
    start = time.perf_counter()
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as image:
            image.convert("RGB")
    pil = len(blobs) / (time.perf_counter() - start)
    start = time.perf_counter()
    for blob in blobs:
        cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    return pil, len(blobs) / (time.perf_counter() - start)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the scan workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_clean(root: Path, workers: int, repeats: int) -> tuple[list[float], list[float], list[float], dict]:
    """Scan rates and whole-stage rates (images/s) over `repeats` runs, images per CPU-second of the
    whole stage, and the last report."""
    scan_rates, stage_rates, per_cpu = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.yaml"
        config.write_text(yaml.safe_dump({"name": "bench", "output_dir": str(Path(tmp) / "out"),
                                          "data": {"root": str(root)}, "clean": {"workers": workers}}))
        cfg = load_config(config)
        for _ in range(repeats):
            start, cpu = time.perf_counter(), cpu_seconds()
            kept, dropped = run_clean(cfg)
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            report = json.loads((cfg.data_dir / "clean_report.json").read_text())
            scan_rates.append(report["scan"]["images_per_s"])
            stage_rates.append((len(kept) + len(dropped)) / seconds)
            per_cpu.append((len(kept) + len(dropped)) / cpu)
    return scan_rates, stage_rates, per_cpu, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--datasets", default="flowers,hymenoptera")
    parser.add_argument("--workers", default="1,0", help="comma-separated; 0 = one per core")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("medal").setLevel(logging.WARNING)
    cores = default_workers()
    print(f"cores available: {cores} (os.sched_getaffinity); load average {os.getloadavg()[0]:.2f} "
          "(other processes on the machine compete for these cores)")
    print(f"{'dataset':<12} {'images':>6} {'workers':>7} {'scan img/s median':>17} {'best':>7} "
          f"{'stage img/s median':>18} {'best':>7} {'img/CPU-s':>9} {'RSS MiB':>8} {'worker RSS MiB':>14}")
    for name in args.datasets.split(","):
        root = args.data / name
        for workers in (int(w) for w in args.workers.split(",")):
            scans, stages, per_cpu, report = time_clean(root, workers, args.repeats)
            shown = workers or cores
            children = f"{max_rss_mib(resource.RUSAGE_CHILDREN):.0f}" if shown > 1 else "(in process)"
            print(f"{name:<12} {report['rows']:>6} {shown:>7} {statistics.median(scans):>17.0f} {max(scans):>7.0f} "
                  f"{statistics.median(stages):>18.0f} {max(stages):>7.0f} {statistics.median(per_cpu):>9.0f} "
                  f"{max_rss_mib():>8.0f} {children:>14}")
        pil, opencv = decode_reference(root / "train")
        print(f"{name:<12} reference, 1 core, decode only: PIL {pil:.0f} img/s, OpenCV {opencv:.0f} img/s")


if __name__ == "__main__":
    main()
