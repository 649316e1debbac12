"""Where a fold stands before training: complete, resumable, new, or stale.

A fold is complete only when its manifest (medal.core.provenance) names the current training settings and
every file it was made from and with is unchanged: its best.pt, oof.csv and done.json, and folds.csv with the
chain above it. Anything else that left files behind is stale, and train refuses to skip it or to build on it.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass

from medal.core import layout, provenance
from medal.core.config import Config
from medal.modeling.checkpoint import load_last, recipe, with_new_defaults

COMPLETE, RESUME, NEW, STALE = "complete", "resume", "new", "stale"


@dataclass(frozen=True)
class FoldStatus:
    kind: str
    reason: str = ""  # why a fold is stale


def training_settings(cfg: Config) -> dict:
    """What shapes a fold's weights: the recipe, the content of the pretrained weights file it starts from and,
    with train.pseudo_labels set, the content of that table (absent otherwise, so folds trained before the key
    existed stay current). A changed table makes the folds stale, a changed path too (it is in the recipe)."""
    pretrained = cfg.model.pretrained_file
    digest = provenance.sha256(pretrained) if pretrained is not None and pretrained.is_file() else None
    settings = {**recipe(cfg), "pretrained_sha256": digest}
    table = cfg.train.pseudo_labels
    if table is not None:
        settings["pseudo_sha256"] = provenance.sha256(table) if table.is_file() else None
    return settings


def fold_status(cfg: Config, fold: int, settings: dict) -> FoldStatus:
    record = provenance.read_manifest(layout.fold_manifest(cfg, fold))
    if record is not None:
        return _trained_status(cfg, fold, record, settings)
    last = layout.last_checkpoint(cfg, fold)
    if last.is_file():
        return _resume_status(cfg, last, settings)
    leftovers = [p.name for p in (layout.best_checkpoint(cfg, fold), layout.fold_oof(cfg, fold), layout.fold_done(cfg, fold))
                 if p.is_file()]
    if leftovers:
        return FoldStatus(STALE, f"it has {', '.join(leftovers)} but no manifest (written by an older medal, or by a "
                                 "run killed before it finished)")
    return FoldStatus(NEW)


def _trained_status(cfg: Config, fold: int, record: dict, settings: dict) -> FoldStatus:
    trained = with_new_defaults(record["settings"])
    if trained != settings:
        return FoldStatus(STALE, f"it was trained with "
                                 f"{provenance.settings_difference(trained, settings)} (trained -> this config)")
    reason = provenance.stale_reason(layout.fold_manifest(cfg, fold), cfg)
    return FoldStatus(COMPLETE) if reason is None else FoldStatus(STALE, reason)


def _resume_status(cfg: Config, last, settings: dict) -> FoldStatus:
    """last.pt of an unfinished run may be resumed only under the same settings and the same folds.csv."""
    try:
        state = load_last(last, "cpu")
    except ValueError as err:
        return FoldStatus(STALE, f"its unfinished run's {last.name} cannot be read ({err})")
    written = with_new_defaults(state.get("settings") or {})
    if written != settings:
        return FoldStatus(STALE, f"its unfinished run ({last.name}) was written with "
                                 f"{provenance.settings_difference(written, settings)} "
                                 "(trained -> this config)")
    if state.get("folds_sha256") != provenance.sha256(layout.folds_csv(cfg)):
        return FoldStatus(STALE, f"folds.csv changed since its unfinished run ({last.name}) started")
    return FoldStatus(RESUME)


def discard(cfg: Config, fold: int) -> None:
    """Delete everything a fold's earlier runs left, except the lock the caller holds."""
    keep = layout.lock_file(cfg.fold_dir(fold), "train")
    for entry in cfg.fold_dir(fold).iterdir():
        if entry == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
