"""infer_tta: measure each TTA view on OOF, keep the ones that help, predict the test set with every fold model.

Before any work it checks its inputs (medal.infer.checks): folds.csv and every fold model still current and
trained under this config's recipe, the test ids inside the test folder, every test image decodable. Then two
passes. The OOF pass scores every fold model on its own validation fold under
every candidate view (logits kept per view), and the views are chosen on those
OOF scores. The test pass then runs only the chosen views over every fold model
and averages the folds into one preallocated array.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medal.core import layout, provenance
from medal.core.config import Config, config_snapshot
from medal.core.freshness import require_current_folds
from medal.core.io import remove_stale_temporaries, write_csv, write_json, write_text
from medal.core.locks import exclusive
from medal.core.log import get_logger, set_progress
from medal.core.metrics import higher_is_better, score
from medal.core.predictions import prediction_frame, rank_scale
from medal.core.tables import (
    class_names,
    fold_count,
    label_codes,
    read_folds,
    read_sample_submission,
)
from medal.images.paths import image_path
from medal.infer.checks import (
    check_fold_models,
    check_test_ids,
    check_test_images,
    comparable,
)
from medal.infer.reduce import reduce_views, select_greedy
from medal.infer.sources import SourcesDataset, source_transforms
from medal.modeling.checkpoint import load_best, recipe
from medal.modeling.models import build_model, normalisation
from medal.modeling.predict import predict_views
from medal.modeling.runtime import make_loader, pick_device, precision
from medal.modeling.views import expand_views, get_view


def load_fold_model(cfg: Config, fold: int, classes: list[str], device: torch.device) -> torch.nn.Module:
    """The fold's best checkpoint (medal.modeling.checkpoint) as an eval-mode model."""
    state = load_best(layout.best_checkpoint(cfg, fold), device, classes,
                      provenance.command(cfg, "train", "--fold", str(fold), "--force"))
    # The checkpoint holds every weight, so no pretrained weights are read here (none may be reachable: a kernel).
    model = build_model(cfg.model.model_copy(update={"pretrained_file": None, "pretrained": False}), len(classes))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


@dataclass
class Inputs:
    """What both passes read: the folds table, class order, targets, and the test ids and paths."""
    table: pd.DataFrame
    classes: list[str]
    targets: np.ndarray
    n_folds: int
    test_ids: list[str]
    test_paths: list[Path]
    checkpoints: dict[int, str]  # each fold's best.pt hash, as checked


def read_inputs(cfg: Config) -> Inputs:
    """Everything both passes read, each checked before any work."""
    require_current_folds(cfg)
    table = read_folds(cfg)
    classes = class_names(table[cfg.data.label_col])
    n_folds = fold_count(table)
    checkpoints = check_fold_models(cfg, n_folds, classes)
    test_ids = read_sample_submission(cfg)[cfg.data.id_col].tolist()
    check_test_ids(cfg, test_ids)
    test_paths = [image_path(cfg, i, "test") for i in test_ids]
    missing = [p for p in test_paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} test image(s) listed in {cfg.data.sample_submission} do not exist, e.g. {missing[0]}")
    check_test_images(cfg, test_paths)
    return Inputs(table, classes, label_codes(table[cfg.data.label_col], classes), n_folds, test_ids, test_paths,
                  checkpoints)


def run_infer(cfg: Config, test_only: bool = False) -> dict:
    """Write oof_tta.csv, test_pred.csv, tta.json and, last, their manifest; return the TTA report.
    test_only: predict the test set with the views chosen before (tta.json) and keep the OOF files (a kernel)."""
    set_progress(cfg.report.progress_steps, cfg.report.progress_seconds)
    with exclusive(layout.lock_file(cfg.exp_dir, "infer"), f"infer of {cfg.name!r}"):
        # Only infer's own temporaries: train writes into the same folder, and may be running.
        outputs = [layout.oof_tta_csv(cfg), layout.test_pred_csv(cfg), layout.tta_json(cfg)]
        remove_stale_temporaries(cfg.exp_dir, [p.name for p in outputs] + ["infer_config.yaml"])
        return _infer_test_only(cfg) if test_only else _infer(cfg)


def _infer(cfg: Config) -> dict:
    log = get_logger()
    data = read_inputs(cfg)
    manifest = layout.infer_manifest(cfg)
    provenance.invalidate(manifest)  # from here until the new one is written, blend refuses these outputs
    device = pick_device(cfg.runtime.device)
    candidates = expand_views(cfg.infer.tta)
    _log_start(cfg, data, device, f"TTA candidate views {'+'.join(candidates)} ({cfg.infer.tta_select}) measured on "
                                  f"{len(data.table)} OOF images")
    oof_views, seconds = oof_pass(cfg, data, candidates, device)
    report = choose_views(cfg, oof_views, data.targets, seconds)
    chosen = report["chosen"]
    oof = prediction_frame(cfg.data.id_col, data.table[cfg.data.id_col], data.classes, _reduce(cfg, [oof_views[v] for v in chosen]),
                           fold=data.table["fold"].to_numpy(), target=data.targets)
    test = prediction_frame(cfg.data.id_col, data.test_ids, data.classes, test_pass(cfg, data, chosen, device))
    write_csv(layout.oof_tta_csv(cfg), oof)
    write_csv(layout.test_pred_csv(cfg), test)
    write_json(layout.tta_json(cfg), report)
    write_text(cfg.exp_dir / "infer_config.yaml", config_snapshot(cfg))
    _write_manifest(cfg, data)
    log.info("%s: test predictions for %d images (%s of %d folds, TTA %s) -> %s", cfg.name, len(data.test_ids),
             cfg.infer.fold_average, data.n_folds, "+".join(chosen), layout.test_pred_csv(cfg))
    return report


def _infer_test_only(cfg: Config) -> dict:
    """The test pass alone, under the views and fold models a full infer chose and measured; the new
    manifest vouches for the kept OOF files beside the new test predictions."""
    report = _earlier_choice(cfg)
    data = read_inputs(cfg)
    _require_same_models(cfg, data)
    provenance.invalidate(layout.infer_manifest(cfg))
    chosen = report["chosen"]
    device = pick_device(cfg.runtime.device)
    _log_start(cfg, data, device, f"TTA views {'+'.join(chosen)} chosen earlier (tta.json); OOF files kept")
    test = prediction_frame(cfg.data.id_col, data.test_ids, data.classes, test_pass(cfg, data, chosen, device))
    write_csv(layout.test_pred_csv(cfg), test)
    write_text(cfg.exp_dir / "infer_config.yaml", config_snapshot(cfg))
    _write_manifest(cfg, data)
    get_logger().info("%s: test predictions for %d images (%s of %d folds, TTA %s chosen earlier) -> %s", cfg.name,
                      len(data.test_ids), cfg.infer.fold_average, data.n_folds, "+".join(chosen),
                      layout.test_pred_csv(cfg))
    return report


def _log_start(cfg: Config, data: Inputs, device: torch.device, views: str) -> None:
    """What infer will do, in one line."""
    get_logger().info("%s: infer on %s (%s): %d test images with %d fold models (folds 0-%d); %s -> %s", cfg.name,
                      device, precision(device, cfg.runtime.amp), len(data.test_ids), data.n_folds, data.n_folds - 1,
                      views, cfg.exp_dir)


def _earlier_choice(cfg: Config) -> dict:
    """tta.json of the full infer that --test-only builds on, once its manifest says it and oof_tta.csv are the
    files that run wrote, under this config's recipe and infer settings."""
    full = f"run the full `{provenance.command(cfg, 'infer')}` first"
    for path in (layout.tta_json(cfg), layout.oof_tta_csv(cfg)):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: --test-only reuses the views a full infer chose; {full}")
    record = provenance.read_manifest(layout.infer_manifest(cfg))
    if record is None:
        raise provenance.StaleError(f"{layout.infer_manifest(cfg)} does not exist (a killed infer): {full}")
    before, now = comparable(record["settings"]), comparable(_settings(cfg))
    if before != now:
        raise provenance.StaleError(f"the views in {layout.tta_json(cfg)} were chosen with "
                                    f"{provenance.settings_difference(before, now)} (then -> this config): {full}")
    for path in (layout.tta_json(cfg), layout.oof_tta_csv(cfg)):
        if record["outputs"].get(path.name, {}).get("sha256") != provenance.sha256(path):
            raise provenance.StaleError(f"{path} is not the file the last infer wrote: {full}")
    return json.loads(layout.tta_json(cfg).read_text())


def _require_same_models(cfg: Config, data: Inputs) -> None:
    """The fold models now are the ones the kept OOF files were measured on."""
    record = provenance.read_manifest(layout.infer_manifest(cfg))
    for fold, digest in data.checkpoints.items():
        name = f"fold{fold}/{layout.best_checkpoint(cfg, fold).name}"
        if record["inputs"].get(name, {}).get("sha256") != digest:
            raise provenance.StaleError(f"{layout.best_checkpoint(cfg, fold)} changed since the views were chosen on "
                                        f"OOF: run the full `{provenance.command(cfg, 'infer')}`")


def _settings(cfg: Config) -> dict:
    return {**recipe(cfg), "infer": cfg.infer.model_dump(mode="json", exclude={"batch_size"})}


def _write_manifest(cfg: Config, data: Inputs) -> None:
    d = cfg.data
    inputs = [provenance.Input(layout.folds_csv(cfg), layout.folds_manifest(cfg)),
              provenance.Input(d.root / d.sample_submission, key="sample_submission.csv")]
    inputs += [provenance.Input(layout.best_checkpoint(cfg, k), layout.fold_manifest(cfg, k), digest=digest)
               for k, digest in data.checkpoints.items()]
    provenance.write_manifest(
        layout.infer_manifest(cfg), cfg, "infer", made=f"infer ran for {cfg.name!r}",
        settings=_settings(cfg), inputs=inputs,
        outputs=[layout.oof_tta_csv(cfg), layout.test_pred_csv(cfg), layout.tta_json(cfg)])


def oof_pass(cfg: Config, data: Inputs, views: list[str], device: torch.device) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each view's OOF logits (N x C, folds.csv order): every fold model on its own validation rows."""
    oof = {name: np.zeros((len(data.table), len(data.classes)), dtype=np.float32) for name in views}
    seconds: dict[str, float] = {}
    for fold in range(data.n_folds):
        model = load_fold_model(cfg, fold, data.classes, device)
        is_valid = (data.table["fold"] == fold).to_numpy()
        paths = [image_path(cfg, i, "train") for i in data.table.loc[is_valid, cfg.data.id_col]]
        for name, logits in _predict(cfg, model, paths, views, device, f"{cfg.name} oof fold {fold}", seconds).items():
            oof[name][is_valid] = logits
    return oof, seconds


def test_pass(cfg: Config, data: Inputs, views: list[str], device: torch.device) -> np.ndarray:
    """The chosen views over every fold model, reduced per fold, then averaged over folds (mean of
    probabilities, or mean per-class rank scaled to [0, 1]) into one preallocated array."""
    total = np.zeros((len(data.test_ids), len(data.classes)), dtype=np.float64)
    for fold in range(data.n_folds):
        model = load_fold_model(cfg, fold, data.classes, device)
        logits = _predict(cfg, model, data.test_paths, views, device, f"{cfg.name} test fold {fold}")
        probs = _reduce(cfg, [logits[v] for v in views])
        if cfg.infer.fold_average == "rank":
            probs = rank_scale(probs, axis=0)
        total += probs / data.n_folds
    return total.astype(np.float32)


def _reduce(cfg: Config, logits: list[np.ndarray]) -> np.ndarray:
    return reduce_views(logits, cfg.infer.tta_reduce, cfg.infer.tta_space).astype(np.float32)


def _predict(cfg: Config, model: torch.nn.Module, paths: list[Path], views: list[str], device: torch.device,
             desc: str, timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Every view's logits for `paths`, streamed in batches; each image decoded once for all views."""
    sources = list(dict.fromkeys(get_view(v).source for v in views))
    preset = cfg.infer.tta_augment or cfg.train.augment
    transforms = source_transforms(sources, cfg.train.image_size, normalisation(model), preset)
    loader = make_loader(SourcesDataset(paths, transforms, cfg.seed), cfg.infer.batch_size, cfg.runtime.num_workers, device)
    return predict_views(model, loader, device, cfg.runtime.amp, {v: get_view(v) for v in views}, desc,
                         output="logits", timings=timings)[0]


def choose_views(cfg: Config, oof_views: dict[str, np.ndarray], targets: np.ndarray, seconds: dict[str, float]) -> dict:
    """Score each view alone on OOF, pick the set (greedy or fixed), and log each view's score and cost
    and the gain of the combination over identity."""
    log = get_logger()
    evaluate = lambda probs: score(cfg.metric, targets, probs)  # noqa: E731
    combine = lambda arrays: _reduce(cfg, arrays)  # noqa: E731
    per_view = {name: evaluate(combine([logits])) for name, logits in oof_views.items()}
    if cfg.infer.tta_select == "fixed":
        chosen = list(oof_views)
    else:
        chosen = select_greedy(oof_views, evaluate, higher_is_better(cfg.metric), combine)
    combined = evaluate(combine([oof_views[v] for v in chosen]))
    baseline = per_view.get("identity", per_view[chosen[0]])
    for name, value in per_view.items():
        log.info("%s TTA view %-13s OOF %s %.4f  (%.1f s of model time)", cfg.name, name, cfg.metric, value,
                 seconds.get(name, 0.0))
    if chosen == ["identity"] and len(oof_views) > 1:
        log.info("%s: no TTA view raised the OOF %s; using identity alone", cfg.name, cfg.metric)
    log.info("%s: TTA %s (%s over %s) -> OOF %s %.4f (gain %+.4f over identity)", cfg.name, "+".join(chosen),
             cfg.infer.tta_reduce, cfg.infer.tta_space, cfg.metric, combined, combined - baseline)
    return {"metric": cfg.metric, "per_view": per_view, "chosen": chosen, "selection": cfg.infer.tta_select,
            "reduce": cfg.infer.tta_reduce, "space": cfg.infer.tta_space, "fold_average": cfg.infer.fold_average,
            "oof_identity": baseline, "oof_tta": combined, "gain": combined - baseline, "seconds": seconds}
