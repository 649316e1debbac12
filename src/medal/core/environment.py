"""What a result was made with: library versions and the device, recorded beside it (done.json) so that a
report shows the versions of the run, not of the machine that draws the report."""
from __future__ import annotations

import platform
from importlib import metadata

LIBRARIES = ("medal", "torch", "torchvision", "timm", "albumentations", "numpy", "scikit-learn", "opencv-python-headless")


def versions() -> dict[str, str]:
    """Python's and each installed library's version; a library that is not installed is left out."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def describe_device(device, precision: str) -> dict[str, str]:
    """The device a stage ran on (with the GPU's name), its precision (as the caller resolved it) and the host."""
    name = str(device)
    if getattr(device, "type", None) == "cuda":
        import torch

        name = f"{device} ({torch.cuda.get_device_name(device)})"
    return {"device": name, "precision": precision, "host": platform.node()}
