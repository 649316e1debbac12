"""What the checks before work cost: infer's up-front decode of every test image and the ids check, and the
content hash (SHA-256) behind every manifest, with peak memory.

For each dataset in ../shared/data, the test images listed in sample_submission.csv are decoded once in
threads (medal.infer.checks.check_test_images, as infer does before its OOF pass), and their ids are
resolved against the test folder (check_test_ids). A 256 MiB file is hashed cold and then again (memoised
per process while size, mtime and inode stay the same).

    python3 benchmarks/provenance_cost.py [--workers 0] [--datasets flowers,imagenette,hymenoptera]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from medal.core import provenance  # noqa: E402
from medal.core.config import Config  # noqa: E402
from medal.core.tables import read_sample_submission  # noqa: E402
from medal.images.paths import source_path  # noqa: E402
from medal.infer.checks import check_test_ids, check_test_images  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_checks(name: str, workers: int) -> tuple[int, float, float]:
    cfg = Config.model_validate({"name": "bench", "data": {"root": str(DATA / name)},
                                 "runtime": {"num_workers": workers}})
    ids = read_sample_submission(cfg)[cfg.data.id_col].tolist()
    start = time.perf_counter()
    check_test_ids(cfg, ids)
    ids_seconds = time.perf_counter() - start
    paths = [source_path(cfg, i, "test") for i in ids]
    start = time.perf_counter()
    check_test_images(cfg, paths)
    return len(ids), ids_seconds, time.perf_counter() - start


def hash_rate(mib: int = 256) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.bin"
        path.write_bytes(os.urandom(mib << 20))
        start = time.perf_counter()
        provenance.sha256(path)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        provenance.sha256(path)
        return mib / cold, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=0, help="decode threads; 0: one per CPU core")
    parser.add_argument("--datasets", default="flowers,imagenette,hymenoptera")
    args = parser.parse_args()
    print(f"cores: {len(os.sched_getaffinity(0))}; decode threads: {args.workers or os.cpu_count()}")
    print(f"{'dataset':<12} {'test images':>11} {'ids check s':>11} {'decode check s':>14} {'img/s':>7} {'max RSS MiB':>11}")
    for name in args.datasets.split(","):
        n, ids_seconds, decode_seconds = test_checks(name, args.workers)
        print(f"{name:<12} {n:>11} {ids_seconds:>11.3f} {decode_seconds:>14.2f} {n / decode_seconds:>7.0f} "
              f"{max_rss_mib():>11.0f}")
    rate, again = hash_rate()
    print(f"sha256: {rate:.0f} MiB/s cold, {again * 1e3:.2f} ms memoised; max RSS {max_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
