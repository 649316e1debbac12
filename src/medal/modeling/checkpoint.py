"""The one owner of the checkpoint files: best.pt (the fold's model, read by inference) and last.pt (everything a
resume needs), their fields, how they are written and read, and the error for a damaged file.

Everything saved loads under `torch.load(weights_only=True)`: tensors, numbers,
strings, lists and dicts only. Writes are atomic (medal.core.io.atomic_path).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from medal.core.config import Config, ModelConfig, TrainConfig
from medal.core.io import atomic_path


def save_best(path: Path, model: torch.nn.Module, *, classes: list[str], epoch: int, score: float, backbone: str,
              weights: str, image_size: int, run_id: str) -> None:
    """best.pt: the state_dict of the weights the fold chose ('raw' or 'ema', named by `weights`), the class order
    its outputs follow, and where it came from."""
    _save(path, {"model": model.state_dict(), "classes": classes, "epoch": epoch, "score": score, "backbone": backbone,
                 "weights": weights, "image_size": image_size, "run_id": run_id})


def load_best(path: Path, device: torch.device | str, classes: list[str] | None = None, retrain: str | None = None) -> dict:
    """best.pt's fields; with `classes`, refuses a checkpoint trained on another class order. `retrain`: the
    command that retrains the fold, for the messages (default: a generic one)."""
    retrain = retrain or f"medal train -c CONFIG --fold {_fold(path)} --force"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `{retrain}`")
    state = _load(path, device, retrain)
    if classes is not None and list(state["classes"]) != classes:
        raise ValueError(f"{path} was trained on classes {state['classes']}, but folds.csv has {classes}")
    return state


def save_last(path: Path, state: dict) -> None:
    """last.pt: the resume state (model, EMA, optimizer, schedule, scaler, RNG, sampler, history, recipe, ...)."""
    _save(path, state)


def load_last(path: Path, device: torch.device | str) -> dict:
    return _load(path, device, f"medal train -c CONFIG --fold {_fold(path)} --force")


def _save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load(path: Path, device: torch.device | str, retrain: str) -> dict:
    """torch.load(weights_only=True), naming the file and the command that retrains its fold when it cannot
    be read (--force: train deletes the fold's files and trains it again, since a damaged file makes it stale)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a truncated zip, a pickle of unsafe types, ...
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); retrain that fold: "
                         f"`{retrain}`") from None


def _fold(path: Path) -> str:
    return path.parent.name.removeprefix("fold")


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


def recipe(cfg: Config) -> dict:
    """The config values a resumed run must share with the run that wrote last.pt: every key that shapes the
    weights. The `runtime` section (device, workers, precision, speed switches) and the reporting sections may
    change between a run and its resume; nothing else may."""
    return {"model": cfg.model.model_dump(mode="json"), "seed": cfg.seed, "metric": cfg.metric,
            "train": cfg.train.model_dump(mode="json")}


def with_new_defaults(old: dict) -> dict:
    """A recipe recorded by an earlier medal, with the keys added since filled in at their defaults. A new key's
    default keeps the old behaviour, so a fold trained before the key existed was trained under that default:
    adding a key must not make every earlier run stale, while setting it to anything else still does."""
    sections = {"model": ModelConfig().model_dump(mode="json"), "train": TrainConfig().model_dump(mode="json")}
    filled = dict(old)
    for name, defaults in sections.items():
        if isinstance(old.get(name), dict):
            filled[name] = {**{k: v for k, v in defaults.items() if k not in old[name]}, **old[name]}
    return filled
