"""Paths inside a Kaggle kernel: the competition is found under <root>/input by its sample submission, outputs
go under <root>/working, scratch files under <root>/temp, and nothing is ever written under <root>/input.

A kernel is recognised by KAGGLE_KERNEL_RUN_TYPE, which Kaggle sets in every notebook and script run. The
root is /kaggle, or MEDAL_KAGGLE_ROOT (a test simulates a kernel in a temporary folder). Outside a kernel
nothing here changes a config. Torch-free: load_config uses it on the raw mapping, before validation.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROOT_VARIABLE = "MEDAL_KAGGLE_ROOT"
# How deep under input/ a sample submission is looked for: input/<slug>/ and input/competitions/<slug>/,
# with one folder to spare; deeper would walk every image folder of every attached dataset.
SEARCH_DEPTH = 3


class KaggleEnvError(ValueError):
    """A config that cannot run in this kernel; the message names the key and the path."""


def in_kernel() -> bool:
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))


def kaggle_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE, "/kaggle"))


def input_dir() -> Path:
    return kaggle_root() / "input"


def working_dir() -> Path:
    return kaggle_root() / "working"


def scratch_dir() -> Path:
    return kaggle_root() / "temp"


def kernel_paths(raw: dict[str, Any], default_sample: str, default_dirs: dict[str, str]) -> dict[str, Any]:
    """The raw config with data.root pointing at the competition under input/ and every output folder
    (`default_dirs`: dotted key -> default) under working/; data.name is pinned to the configured folder's
    name, so the output tree a kernel reads keeps its local name."""
    data = raw.setdefault("data", {})
    configured = Path(str(data.get("root", "")))
    sample = str(data.get("sample_submission") or default_sample)
    if not _holds(configured, sample) or not _under(configured, input_dir()):
        hints = [h for h in (data.get("name"), configured.name) if h]
        data["root"] = str(find_competition(sample, hints))
        if not data.get("name") and configured.name:
            data["name"] = configured.name
    for key, default in default_dirs.items():
        section, _, name = key.rpartition(".")
        node = raw.setdefault(section, {}) if section else raw
        node[name] = str(writable_output(key, Path(str(node.get(name) or default))))
    return raw


def find_competition(sample: str, hints: list[str]) -> Path:
    """The folder under input/ that holds `sample`; among several, the one named like a hint."""
    found = sorted(_find(input_dir(), sample, SEARCH_DEPTH))
    if not found:
        raise KaggleEnvError(f"data.root: no {sample} under {input_dir()} (searched {SEARCH_DEPTH} folders deep): "
                             "add the competition to the kernel's inputs")
    if len(found) == 1:
        return found[0]
    named = [f for f in found if f.name in hints]
    if len(named) == 1:
        return named[0]
    raise KaggleEnvError(f"data.root: {len(found)} folders under {input_dir()} hold {sample} ({[str(f) for f in found]}) "
                         f"and not one of them is named {hints}: set data.root to the competition's folder")


def writable_output(key: str, path: Path) -> Path:
    """Where output `key` goes in a kernel: relative paths under working/; an absolute path kept where it can
    be written (else working/<its name>); never under input/, which Kaggle mounts read-only."""
    if not path.is_absolute():
        path = working_dir() / path
    if _under(path, input_dir()):
        raise KaggleEnvError(f"{key}: {path} is under {input_dir()}, which a kernel cannot write to: point it "
                             f"under {working_dir()} (or give a relative path, which goes there)")
    if not os.access(_existing(path), os.W_OK):
        return working_dir() / path.name
    return path


def _find(folder: Path, name: str, depth: int) -> list[Path]:
    if (folder / name).is_file():
        return [folder]
    if depth == 0 or not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        if child.is_dir():
            found += _find(child, name, depth - 1)
    return found


def _holds(folder: Path, sample: str) -> bool:
    return (folder / sample).is_file()


def _under(path: Path, folder: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, base]) == base


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
