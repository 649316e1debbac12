"""The checks a stage runs on the shared files it reads, before any work: folds.csv, and through its
manifest clean.csv and train.csv, must still be the files each was made from (medal.core.provenance)."""
from __future__ import annotations

from medal.core import layout, provenance
from medal.core.config import Config


def require_current_folds(cfg: Config) -> dict:
    """folds.csv's manifest, after checking it and the chain above it; a StaleError names what changed and the
    commands to run, a missing folds.csv says to run folds."""
    path = layout.folds_csv(cfg)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `{provenance.command(cfg, 'folds')}` first")
    return provenance.verify(layout.folds_manifest(cfg), f"{path} has no manifest (made by an older medal, or folds "
                             f"was killed before it finished): run `{provenance.command(cfg, 'folds')}`",
                             cfg)
