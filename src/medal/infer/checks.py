"""What infer checks before any work, each naming the file and the command that fixes it: the test ids stay
inside the test folder, every test image decodes, and every fold model is the current one, trained under
the recipe of this config, with the backbone, image size and classes it names."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from medal.core import layout, provenance
from medal.core.config import Config
from medal.images.decode import decode_rgb
from medal.images.paths import outside_folder
from medal.modeling.checkpoint import load_best, recipe, with_new_defaults


def check_test_ids(cfg: Config, test_ids: list[str]) -> None:
    """Refuse ids that would read a file outside data.test_dir (absolute, '..', or through a symlink)."""
    outside = outside_folder(cfg, test_ids, "test")
    if outside:
        d = cfg.data
        raise ValueError(f"{d.root / d.sample_submission} lists {len(outside)} id(s) whose file resolves outside the "
                         f"test folder {d.root / d.test_dir}, e.g. {outside[:3]}: infer reads only inside it; fix "
                         "those ids")


def check_test_images(cfg: Config, paths: list[Path]) -> None:
    """Decode every test image once, in threads (OpenCV and PIL release the GIL), so that a broken file stops
    infer now rather than after the OOF pass; names every file that fails."""
    workers = cfg.runtime.num_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ok = list(pool.map(_decodes, paths, chunksize=64))
    broken = [str(p) for p, good in zip(paths, ok) if not good]
    if broken:
        raise ValueError(f"{len(broken)} of {len(paths)} test image(s) cannot be decoded, e.g. {broken[:3]}: every "
                         "test image needs a prediction, so replace them (`medal clean` lists them in test_findings.csv)")


def _decodes(path: Path) -> bool:
    try:
        return decode_rgb(path.read_bytes()) is not None
    except OSError:
        return False


def check_fold_models(cfg: Config, n_folds: int, classes: list[str]) -> dict[int, str]:
    """Every fold's manifest verified up the chain and naming this config's recipe, and its best.pt holding this
    config's backbone, image size and classes; returns each best.pt's hash, as checked."""
    digests = {}
    for fold in range(n_folds):
        record = _fold_manifest(cfg, fold)
        trained, wanted = comparable(record["settings"]), comparable(recipe(cfg))
        if trained != wanted:
            raise provenance.StaleError(
                f"fold {fold} of {cfg.name!r} was trained with {provenance.settings_difference(trained, wanted)} "
                f"(trained -> this config): infer with the config it was trained with ({cfg.exp_dir / 'config.yaml'}), "
                f"or retrain under this one: `{provenance.command(cfg, 'train', '--force')}`")
        path = layout.best_checkpoint(cfg, fold)
        retrain = provenance.command(cfg, "train", "--fold", str(fold), "--force")
        state = load_best(path, "cpu", classes, retrain)
        for key, expected in (("backbone", cfg.model.backbone), ("image_size", cfg.train.image_size)):
            if state.get(key) != expected:
                raise provenance.StaleError(f"{path} holds {key} {state.get(key)!r}, the config says {expected!r}: "
                                            f"retrain the fold with `{retrain}`")
        digests[fold] = provenance.sha256(path)
    return digests


def _fold_manifest(cfg: Config, fold: int) -> dict:
    path = layout.fold_manifest(cfg, fold)
    if layout.best_checkpoint(cfg, fold).is_file():
        missing = (f"fold {fold} of {cfg.name!r} has a best.pt but no manifest ({path}): it was trained by an older "
                   f"medal, or its run was killed before it finished: run `{provenance.command(cfg, 'train', '--force')}`")
    else:
        missing = f"fold {fold} of {cfg.name!r} is not trained: run `{provenance.command(cfg, 'train')}` first"
    return provenance.verify(path, missing, cfg)


def comparable(settings: dict) -> dict:
    """A recipe without what may differ between where a model trains and where it predicts: the pretrained
    weights it started from, and whether it started from any, and the content of a pseudo-label table it trained on
    (infer reads every weight from best.pt; the table's path stays part of the recipe). Keys added
    since `settings` was recorded count at their defaults (with_new_defaults), for every caller alike."""
    kept = {k: v for k, v in with_new_defaults(settings).items() if k not in ("pretrained_sha256", "pseudo_sha256")}
    kept["model"] = {k: v for k, v in kept.get("model", {}).items() if k not in ("pretrained_file", "pretrained")}
    return kept
