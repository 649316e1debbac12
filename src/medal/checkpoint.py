"""Checkpoint pieces: RNG states as tensors and plain types, safe loading, and the recipe guard for resuming.

Everything saved loads under `torch.load(weights_only=True)`: tensors, numbers,
strings, lists and dicts only.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from medal.config import Config

# Keys of `train` that may change between a run and its resume: where and how fast it runs, and what it
# only reports. Everything else shapes the weights and must match.
RUNTIME_KEYS = {"num_workers", "persistent_workers", "cpu_threads", "device", "amp", "amp_dtype", "channels_last", "compile",
                "sample_grid", "gallery_size", "lr_find", "patience", "overfit_ratio"}


def rng_state() -> dict:
    """torch (CPU and every CUDA device), numpy and python `random` states."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """torch.load(weights_only=True), naming the file and what to do when it cannot be read."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a truncated zip, a pickle of unsafe types, ...
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                         f"delete it to train that fold again") from None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (.NAME.*.tmp, see medal.io.atomic_path) of writes a killed run never finished.
    The real files were never touched by those writes, so nothing is lost."""
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def recipe(cfg: Config) -> dict:
    """The config values a resumed run must share with the run that wrote last.pt."""
    train = {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in RUNTIME_KEYS}
    return {"model": cfg.model.model_dump(mode="json"), "seed": cfg.seed, "metric": cfg.metric, "train": train}


def difference(old: dict | None, new: dict) -> str:
    """The keys whose values differ between two recipes, as `key: old -> new`."""
    before, after = _flatten(old or {}), _flatten(new)
    return ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}"
                     for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k))


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
