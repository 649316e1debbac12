"""infer_tta: measure each TTA view on OOF, keep the ones that help, predict the test set with every fold model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medal.augment import eval_transform
from medal.config import Config, config_snapshot
from medal.data import (
    ImageDataset,
    class_names,
    image_path,
    read_folds,
    read_sample_submission,
)
from medal.io import write_csv, write_json, write_text
from medal.log import get_logger
from medal.metrics import METRICS, score
from medal.models import build_model, normalisation
from medal.predict import predict_views
from medal.predictions import prediction_frame
from medal.runtime import make_loader, pick_device
from medal.tta import VIEWS, select_greedy


def load_fold_model(cfg: Config, fold: int, classes: list[str], device: torch.device) -> torch.nn.Module:
    path = cfg.fold_dir(fold) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `medal train -c CONFIG --fold {fold}` first")
    state = torch.load(path, map_location=device, weights_only=True)
    if list(state["classes"]) != classes:
        raise ValueError(f"{path} was trained on classes {state['classes']}, but folds.csv has {classes}")
    # The checkpoint holds every weight, so no pretrained file is read here.
    model = build_model(cfg.model.model_copy(update={"pretrained_file": None}), len(classes))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def run_infer(cfg: Config) -> dict:
    """Write oof_tta.csv, test_pred.csv and tta.json for the experiment; return the TTA report."""
    log = get_logger()
    device = pick_device(cfg.train.device)
    table = read_folds(cfg)
    classes = class_names(table[cfg.data.label_col])
    n_folds = int(table["fold"].max()) + 1
    test_ids = read_sample_submission(cfg)[cfg.data.id_col].tolist()
    test_paths = [image_path(cfg, i, "test") for i in test_ids]
    missing = [p for p in test_paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} test image(s) listed in {cfg.data.sample_submission} do not exist, e.g. {missing[0]}")

    targets = table[cfg.data.label_col].map({c: i for i, c in enumerate(classes)}).to_numpy()
    oof_views = {name: np.zeros((len(table), len(classes)), dtype=np.float32) for name in cfg.infer.tta}
    test_views = {name: np.zeros((len(test_ids), len(classes)), dtype=np.float32) for name in cfg.infer.tta}
    for fold in range(n_folds):
        model = load_fold_model(cfg, fold, classes, device)
        transform = eval_transform(cfg.train.image_size, normalisation(model))
        is_valid = (table["fold"] == fold).to_numpy()
        valid_paths = [image_path(cfg, i, "train") for i in table.loc[is_valid, cfg.data.id_col]]
        for name, probs in _predict(cfg, model, valid_paths, transform, device, f"oof fold {fold}").items():
            oof_views[name][is_valid] = probs
        for name, probs in _predict(cfg, model, test_paths, transform, device, f"test fold {fold}").items():
            test_views[name] += probs / n_folds

    report = _choose_views(cfg, oof_views, targets)
    chosen = report["chosen"]
    oof = prediction_frame(cfg.data.id_col, table[cfg.data.id_col], classes, np.mean([oof_views[v] for v in chosen], axis=0),
                           fold=table["fold"].to_numpy(), target=targets)
    test = prediction_frame(cfg.data.id_col, test_ids, classes, np.mean([test_views[v] for v in chosen], axis=0))
    write_csv(cfg.exp_dir / "oof_tta.csv", oof)
    write_csv(cfg.exp_dir / "test_pred.csv", test)
    write_json(cfg.exp_dir / "tta.json", report)
    write_text(cfg.exp_dir / "infer_config.yaml", config_snapshot(cfg))
    log.info("%s: test predictions for %d images -> %s", cfg.name, len(test_ids), cfg.exp_dir / "test_pred.csv")
    return report


def _predict(cfg: Config, model: torch.nn.Module, paths: list[Path], transform, device: torch.device,
             desc: str) -> dict[str, np.ndarray]:
    """Every configured view's probabilities for `paths`, streamed in batches."""
    loader = make_loader(ImageDataset(paths, None, transform), cfg.infer.batch_size, cfg.train.num_workers, device)
    views = {name: VIEWS[name] for name in cfg.infer.tta}
    return predict_views(model, loader, device, cfg.train.amp, views, desc)[0]


def _choose_views(cfg: Config, oof_views: dict[str, np.ndarray], targets: np.ndarray) -> dict:
    """Score each view alone on OOF, pick the set (greedy or fixed), and log the gain over identity."""
    log = get_logger()
    evaluate = lambda probs: score(cfg.metric, targets, probs)  # noqa: E731
    per_view = {name: evaluate(probs) for name, probs in oof_views.items()}
    if cfg.infer.tta_select == "fixed":
        chosen = list(cfg.infer.tta)
    else:
        chosen = select_greedy(oof_views, evaluate, METRICS[cfg.metric][1])
    combined = evaluate(np.mean([oof_views[v] for v in chosen], axis=0))
    baseline = per_view.get("identity", per_view[chosen[0]])
    for name, value in per_view.items():
        log.info("%s TTA view %-10s OOF %s %.4f", cfg.name, name, cfg.metric, value)
    if chosen == ["identity"] and len(oof_views) > 1:
        log.info("%s: no TTA view raised the OOF %s; using identity alone", cfg.name, cfg.metric)
    log.info("%s: TTA %s -> OOF %s %.4f (gain %+.4f over identity)", cfg.name, "+".join(chosen), cfg.metric,
             combined, combined - baseline)
    return {"metric": cfg.metric, "per_view": per_view, "chosen": chosen, "selection": cfg.infer.tta_select,
            "oof_identity": baseline, "oof_tta": combined, "gain": combined - baseline}
