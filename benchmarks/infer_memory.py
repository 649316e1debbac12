"""Streaming inference keeps memory flat: peak RSS against the number of test images.

Each size runs in a fresh process (max RSS is a per-process peak). The images are
made on the fly by the Dataset (no disk), in two sources like a multi-scale TTA
(base and scale_1.25), and predicted under three views by `predict_views` into
preallocated arrays. If predictions held the images, 16,000 images at 64 px
(x2 sources) would add about 1.9 GB as float32 tensors; streamed, only rows x classes floats grow.

    python3 benchmarks/infer_memory.py [--sizes 1000,4000,16000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def measure(n_images: int, image_size: int) -> dict:
    sys.path.insert(0, str(SRC))
    import timm
    import torch
    from torch.utils.data import DataLoader, Dataset

    from medal.modeling.predict import predict_views
    from medal.modeling.views import get_view

    class Synthetic(Dataset):
        def __len__(self) -> int:
            return n_images

        def __getitem__(self, i: int):
            g = torch.Generator().manual_seed(i)
            big = round(image_size * 1.25)
            return {"base": torch.rand(3, image_size, image_size, generator=g),
                    "scale_1.25": torch.rand(3, big, big, generator=g)}, -1

    model = timm.create_model("test_resnet", num_classes=5).eval()
    views = {name: get_view(name) for name in ["identity", "hflip", "scale_1.25"]}
    loader = DataLoader(Synthetic(), batch_size=128)
    started = time.perf_counter()
    out, _ = predict_views(model, loader, torch.device("cpu"), False, views, output="logits")
    seconds = time.perf_counter() - started
    assert all(v.shape == (n_images, 5) for v in out.values())
    return {"images": n_images, "seconds": seconds, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,4000,16000")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: measure one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.image_size)))
        return
    print(f"predict_views, test_resnet, 3 views over 2 sources ({args.image_size} px and 1.25x), batch 128")
    print(f"{'images':>8} {'seconds':>8} {'images/s':>9} {'max RSS MiB':>12} {'images held would add MiB':>26}")
    for n in (int(s) for s in args.sizes.split(",")):
        line = subprocess.run([sys.executable, __file__, "--one", str(n), "--image-size", str(args.image_size)],
                              capture_output=True, text=True, check=True, env={**os.environ}).stdout.strip().splitlines()[-1]
        r = json.loads(line)
        held = n * 3 * 4 * (args.image_size ** 2 + round(args.image_size * 1.25) ** 2) / 2 ** 20
        print(f"{r['images']:>8} {r['seconds']:>8.1f} {n / r['seconds']:>9.0f} {r['max_rss_mib']:>12.0f} {held:>26.0f}")


if __name__ == "__main__":
    main()
