"""Where every file that one stage hands to another lives: the file contract between stages, in one place.

    <output_dir>/<competition>/            clean and folds, shared by every experiment (cfg.data_dir)
        clean.csv dropped.csv duplicates.csv    clean -> folds          clean.manifest.json
        folds.csv                               folds -> train, infer, blend   folds.manifest.json
        <experiment>/                           one model recipe (cfg.exp_dir)
            fold<k>/best.pt last.pt oof.csv done.json   train (best.pt -> infer)   fold<k>/manifest.json
            oof.csv cv.json                     train, every fold       train.manifest.json
            oof_tta.csv test_pred.csv tta.json  infer -> blend          infer.manifest.json
        blend_<name>/                           blend's report          blend_<name>/manifest.json
            test_probs.csv                      blend -> pseudo (the blended test rows, id + one column per class)
        pseudo_<name>/pseudo.csv pseudo.json    pseudo -> train (train.pseudo_labels)   pseudo_<name>/manifest.json
    <blend.submission_dir>/<name>.csv         blend -> Kaggle

Each stage writes a manifest after its outputs (medal.core.provenance), and a lock file (.<stage>.lock)
beside them while it runs (medal.core.locks). No stage spells another stage's file name: each asks
this module.
"""
from __future__ import annotations

from pathlib import Path

from medal.core.config import Config


# clean -> folds
def clean_csv(cfg: Config) -> Path:
    return cfg.data_dir / "clean.csv"


def dropped_csv(cfg: Config) -> Path:
    return cfg.data_dir / "dropped.csv"


def duplicates_csv(cfg: Config) -> Path:
    return cfg.data_dir / "duplicates.csv"


# folds -> train, infer, blend
def folds_csv(cfg: Config) -> Path:
    return cfg.data_dir / "folds.csv"


# train -> infer (best.pt) and train -> train (last.pt, resume)
def best_checkpoint(cfg: Config, fold: int) -> Path:
    return cfg.fold_dir(fold) / "best.pt"


def last_checkpoint(cfg: Config, fold: int) -> Path:
    return cfg.fold_dir(fold) / "last.pt"


def fold_oof(cfg: Config, fold: int) -> Path:
    return cfg.fold_dir(fold) / "oof.csv"


def fold_weights_oof(cfg: Config, fold: int, weights: str) -> Path:
    """The fold's validation predictions of other weights than best.pt's (train.average: 'ema', 'swa', 'top_k'):
    read by train itself (cv.json's comparison), by no other stage."""
    return cfg.fold_dir(fold) / f"oof_{weights}.csv"


def fold_done(cfg: Config, fold: int) -> Path:
    return cfg.fold_dir(fold) / "done.json"


def oof_csv(cfg: Config, experiment: str | None = None) -> Path:
    """Every fold's OOF predictions without TTA (train); `experiment` defaults to cfg.name."""
    return _experiment_dir(cfg, experiment) / "oof.csv"


def cv_json(cfg: Config) -> Path:
    return cfg.exp_dir / "cv.json"


# infer -> blend
def oof_tta_csv(cfg: Config, experiment: str | None = None) -> Path:
    return _experiment_dir(cfg, experiment) / "oof_tta.csv"


def test_pred_csv(cfg: Config, experiment: str | None = None) -> Path:
    return _experiment_dir(cfg, experiment) / "test_pred.csv"


def tta_json(cfg: Config, experiment: str | None = None) -> Path:
    return _experiment_dir(cfg, experiment) / "tta.json"


# blend -> the competition
def submission_csv(cfg: Config, name: str) -> Path:
    return cfg.blend.submission_dir / f"{name}.csv"


def blend_dir(cfg: Config, name: str) -> Path:
    return cfg.data_dir / f"blend_{name}"


# blend -> pseudo: the blended test predictions, whatever format the submission takes
def blend_test_probs(cfg: Config, name: str) -> Path:
    return blend_dir(cfg, name) / "test_probs.csv"


# pseudo -> train: the pseudo-labelled test rows a config names in train.pseudo_labels
def pseudo_dir(cfg: Config, name: str) -> Path:
    return cfg.data_dir / f"pseudo_{name}"


def pseudo_csv(cfg: Config, name: str) -> Path:
    return pseudo_dir(cfg, name) / "pseudo.csv"


def pseudo_json(table: Path) -> Path:
    """The settings and counts written beside a pseudo-label table (pseudo.csv), wherever that table lives."""
    return table.parent / "pseudo.json"


def pseudo_manifest(table: Path) -> Path:
    """The manifest beside a pseudo-label table (pseudo.csv), wherever that table lives."""
    return table.parent / "manifest.json"


def _experiment_dir(cfg: Config, experiment: str | None) -> Path:
    return cfg.exp_dir if experiment is None else cfg.data_dir / experiment


# provenance (medal.core.provenance): each stage's manifest, written after its outputs
def clean_manifest(cfg: Config) -> Path:
    return cfg.data_dir / "clean.manifest.json"


def folds_manifest(cfg: Config) -> Path:
    return cfg.data_dir / "folds.manifest.json"


def fold_manifest(cfg: Config, fold: int) -> Path:
    return cfg.fold_dir(fold) / "manifest.json"


def train_manifest(cfg: Config, experiment: str | None = None) -> Path:
    return _experiment_dir(cfg, experiment) / "train.manifest.json"


def infer_manifest(cfg: Config, experiment: str | None = None) -> Path:
    return _experiment_dir(cfg, experiment) / "infer.manifest.json"


def blend_manifest(cfg: Config, name: str) -> Path:
    return blend_dir(cfg, name) / "manifest.json"


def competition_files(cfg: Config) -> dict[str, Path]:
    """The competition's own files a manifest may record, by key: outside the output tree, so a reader finds
    them through its config rather than through the path stored when they were read."""
    d = cfg.data
    return {"train.csv": d.root / d.train_csv, "sample_submission.csv": d.root / d.sample_submission}


# locks (medal.core.locks): one writer per stage output and per fold
def lock_file(folder: Path, stage: str) -> Path:
    return folder / f".{stage}.lock"


# the log every stage appends to (medal.core.log.log_to_file): the experiment's, the competition's or the blend's
def log_file(folder: Path) -> Path:
    return folder / "medal.log"
