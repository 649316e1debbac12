"""infer: TTA measured on OOF, test predictions from every fold model, keyed by the sample's ids."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import EXPERIMENTS, N_FOLDS, TTA

from medal.core.config import Config, ConfigError
from medal.core.io import read_csv
from medal.core.metrics import score
from medal.core.provenance import StaleError
from medal.core.tables import read_folds, read_sample_submission
from medal.images.augment import eval_transform
from medal.images.dataset import ImageDataset
from medal.images.paths import image_path
from medal.infer.run import load_fold_model, run_infer
from medal.modeling.models import normalisation
from medal.modeling.predict import predict_probs
from medal.modeling.runtime import make_loader


def predictions(path, classes) -> pd.DataFrame:
    return read_csv(path, "predictions", ["image_id", *classes], ["image_id"])


# Re-inferred: tiny_resnet's infer run again under other settings, on one module-wide copy of the session outputs
# (`scratch`). Infer rewrites every file it writes, so each run's files are read into a `Reinferred` at once, and no
# test reads files another run left. A test that changes the outputs themselves makes its own copy.


@pytest.fixture(scope="module")
def scratch(pipeline, tmp_path_factory) -> Path:
    """output_dir of the module's one copy of the session outputs, for the re-inferred runs."""
    return pipeline.copy_outputs(tmp_path_factory.mktemp("scratch") / "outputs")


@dataclass
class Reinferred:
    """What one infer run on `scratch` returned and wrote."""
    cfg: Config
    returned: dict        # run_infer's report
    tta: dict             # tta.json
    oof: pd.DataFrame     # oof_tta.csv
    test: pd.DataFrame    # test_pred.csv


def reinfer_cfg(cfg: Config, classes) -> Reinferred:
    returned = run_infer(cfg)
    return Reinferred(cfg, returned, json.loads((cfg.exp_dir / "tta.json").read_text()),
                      predictions(cfg.exp_dir / "oof_tta.csv", classes), predictions(cfg.exp_dir / "test_pred.csv", classes))


def reinfer(pipeline, scratch: Path, classes, *overrides: str) -> Reinferred:
    """tiny_resnet re-inferred on `scratch` with `overrides`."""
    return reinfer_cfg(pipeline.cfg("tiny_resnet", f"output_dir={scratch}", *overrides), classes)


@pytest.fixture(scope="module")
def identity_only(pipeline, scratch, classes) -> Reinferred:
    """tiny_resnet re-inferred with the identity view alone."""
    return reinfer(pipeline, scratch, classes, "infer.tta=[identity]")


@pytest.fixture(scope="module")
def flipped_only(pipeline, scratch, classes) -> Reinferred:
    return reinfer(pipeline, scratch, classes, "infer.tta=[hflip]", "infer.tta_select=fixed")


@pytest.fixture(scope="module")
def identity_and_flip(pipeline, scratch, classes) -> Reinferred:
    """Both views kept as listed, combined by the geometric mean (not the default, so that infer must apply it)."""
    return reinfer(pipeline, scratch, classes, "infer.tta=[identity, hflip]", "infer.tta_select=fixed",
                   "infer.tta_reduce=gmean")


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_infer_stage_exits_0(pipeline, name):
    assert pipeline.codes[f"infer:{name}"] == 0


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_test_pred_has_exactly_the_sample_submission_ids_in_order(pipeline, classes, name):
    cfg = pipeline.cfg(name)
    test = predictions(cfg.exp_dir / "test_pred.csv", classes)
    assert list(test.columns) == ["image_id", *classes]
    assert test["image_id"].tolist() == read_sample_submission(cfg)["image_id"].tolist()


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_test_pred_rows_are_probability_distributions(pipeline, classes, name):
    probs = predictions(pipeline.cfg(name).exp_dir / "test_pred.csv", classes)[classes].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all() and (probs <= 1).all()


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_oof_tta_covers_folds_csv_with_its_folds_and_targets(pipeline, classes, name):
    cfg = pipeline.cfg(name)
    folds = read_folds(cfg)
    oof = predictions(cfg.exp_dir / "oof_tta.csv", classes)
    assert oof["image_id"].tolist() == folds["image_id"].tolist()
    assert oof["fold"].tolist() == folds["fold"].tolist()
    assert [classes[t] for t in oof["target"]] == folds["label"].tolist()
    np.testing.assert_allclose(oof[classes].to_numpy().sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_tta_json_measures_every_candidate_and_chooses_among_them(pipeline, name):
    report = json.loads((pipeline.cfg(name).exp_dir / "tta.json").read_text())
    assert set(report["per_view"]) == set(TTA)
    assert report["chosen"][0] == "identity"
    assert set(report["chosen"]) <= set(TTA) and len(set(report["chosen"])) == len(report["chosen"])
    assert report["selection"] == "greedy"


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_tta_json_scores_match_the_oof_tta_file(pipeline, classes, name):
    cfg = pipeline.cfg(name)
    report = json.loads((cfg.exp_dir / "tta.json").read_text())
    oof = predictions(cfg.exp_dir / "oof_tta.csv", classes)
    assert report["oof_tta"] == pytest.approx(score("accuracy", oof["target"].to_numpy(), oof[classes].to_numpy()))
    assert report["oof_identity"] == pytest.approx(report["per_view"]["identity"])
    assert report["gain"] == pytest.approx(report["oof_tta"] - report["oof_identity"])
    assert report["oof_tta"] >= report["oof_identity"]  # greedy never keeps a set worse than identity


def test_identity_view_reproduces_the_training_oof(identity_only, classes):
    assert identity_only.tta["chosen"] == ["identity"]
    oof = identity_only.oof.set_index("image_id")
    trained = predictions(identity_only.cfg.exp_dir / "oof.csv", classes).set_index("image_id")
    np.testing.assert_allclose(oof.loc[trained.index, classes].to_numpy(), trained[classes].to_numpy(), atol=1e-5)


def test_test_pred_is_the_mean_of_every_fold_models_probabilities(identity_only, classes):
    cfg = identity_only.cfg
    ids = read_sample_submission(cfg)["image_id"].tolist()
    paths = [image_path(cfg, i, "test") for i in ids]
    device = torch.device("cpu")
    per_fold = []
    for fold in range(N_FOLDS):
        model = load_fold_model(cfg, fold, classes, device)
        loader = make_loader(ImageDataset(paths, None, eval_transform(cfg.train.image_size, normalisation(model))), 16, 0, device)
        per_fold.append(predict_probs(model, loader, device, amp=False)[0])
    assert not np.allclose(per_fold[0], per_fold[1], atol=1e-3)  # the folds' models differ
    np.testing.assert_allclose(identity_only.test[classes].to_numpy(), np.mean(per_fold, axis=0), atol=1e-5)


def test_fixed_selection_uses_every_listed_view(identity_and_flip, classes):
    assert identity_and_flip.returned["chosen"] == ["identity", "hflip"]
    oof = identity_and_flip.oof.set_index("image_id")
    trained = predictions(identity_and_flip.cfg.exp_dir / "oof.csv", classes).set_index("image_id")
    # Combining with the flipped view moves the probabilities away from the plain OOF.
    assert not np.allclose(oof.loc[trained.index, classes].to_numpy(), trained[classes].to_numpy(), atol=1e-3)


def test_unknown_tta_view_is_refused_naming_it(pipeline):
    with pytest.raises(ConfigError) as err:
        pipeline.cfg("tiny_resnet", "infer.tta=[identity, rot45]")
    assert "infer.tta" in str(err.value) and "'rot45'" in str(err.value)


def test_infer_without_a_fold_checkpoint_names_the_command_that_retrains_it(pipeline, tmp_path):
    out = pipeline.copy_outputs(tmp_path / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}")
    (cfg.fold_dir(1) / "best.pt").unlink()
    with pytest.raises(StaleError, match=r"fold1/best.pt is missing, but manifest.json says fold 1 of 'tiny_resnet' "
                                         r"was trained with it .*: run `medal train -c .* --force`"):
        run_infer(cfg)


def test_infer_on_an_untrained_fold_says_to_train_it(pipeline, tmp_path):
    import shutil

    out = pipeline.copy_outputs(tmp_path / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}")
    shutil.rmtree(cfg.fold_dir(1))
    with pytest.raises(StaleError, match=r"fold 1 of 'tiny_resnet' is not trained: run `medal train -c \S+ "
                                         r"output_dir=\S+` first"):
        run_infer(cfg)


def test_a_damaged_checkpoint_names_what_retrains_the_fold_and_that_advice_works(pipeline, tmp_path):
    from medal.train import run_train

    out = pipeline.copy_outputs(tmp_path / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}")
    (cfg.fold_dir(1) / "best.pt").write_bytes(b"half a checkpoint")
    with pytest.raises(StaleError, match=r"fold1/best.pt is not the file written when fold 1 of 'tiny_resnet' was "
                                         r"trained .*: run `medal train -c \S+ output_dir=\S+ --force`"):
        run_infer(cfg)
    run_train(cfg, force=True)  # what that command runs; fold 0 still matches, so only fold 1 retrains
    assert run_infer(cfg)["chosen"]


def test_a_checkpoint_that_cannot_be_read_names_the_command_that_retrains_its_fold(tmp_path):
    from medal.modeling.checkpoint import load_best

    path = tmp_path / "fold3" / "best.pt"
    path.parent.mkdir()
    path.write_bytes(b"half a checkpoint")
    with pytest.raises(ValueError, match=r"fold3/best.pt cannot be read .*; retrain that fold: `medal train -c x.yaml "
                                         r"--fold 3 --force`"):
        load_best(path, "cpu", retrain="medal train -c x.yaml --fold 3 --force")


def test_infer_with_a_missing_test_image_is_refused_naming_it(pipeline, tmp_path):
    import shutil

    root = tmp_path / "demo"
    shutil.copytree(pipeline.root, root)
    first = read_csv(root / "sample_submission.csv", "sample", ["image_id"], ["image_id"])["image_id"].iloc[0]
    (root / "test" / f"{first}.png").unlink()
    out = pipeline.copy_outputs(tmp_path / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}", f"data.root={root}", f"data.name={pipeline.root.name}")
    with pytest.raises(FileNotFoundError, match=rf"1 test image\(s\) .* do not exist, e.g. .*{first}.png"):
        run_infer(cfg)


# Views beyond flips, reductions, fold averaging.


def oof_probs(run: Reinferred, classes) -> np.ndarray:
    return run.oof[classes].to_numpy()


@pytest.fixture(scope="module")
def every_view(pipeline, scratch, classes) -> dict:
    return reinfer(pipeline, scratch, classes, "infer.tta=[identity, rot90, rot180, rot270, scale_0.75, aug0]").tta


def test_every_candidate_view_is_scored_on_oof_and_its_model_time_recorded(every_view):
    names = ["identity", "rot90", "rot180", "rot270", "scale_0.75", "aug0"]
    assert list(every_view["per_view"]) == names
    assert all(0.0 <= every_view["per_view"][n] <= 1.0 for n in names)
    assert set(every_view["seconds"]) == set(names) and all(s > 0 for s in every_view["seconds"].values())
    assert every_view["chosen"][0] == "identity" and set(every_view["chosen"]) <= set(names)
    assert every_view["oof_tta"] >= every_view["oof_identity"]


def test_rotations_of_digits_score_below_identity_on_oof(every_view):
    # Digits have an orientation: a model trained upright is worse on rotated digits, which OOF shows.
    per_view = every_view["per_view"]
    assert max(per_view["rot90"], per_view["rot180"], per_view["rot270"]) < per_view["identity"]


def test_a_scale_view_is_the_model_on_images_resized_to_that_size(pipeline, scratch, classes):
    run = reinfer(pipeline, scratch, classes, "infer.tta=[scale_0.75]", "infer.tta_select=fixed")
    cfg = run.cfg
    table = read_folds(cfg)
    device = torch.device("cpu")
    model = load_fold_model(cfg, 0, classes, device)
    rows = (table["fold"] == 0).to_numpy()
    paths = [image_path(cfg, i, "train") for i in table.loc[rows, "image_id"]]
    loader = make_loader(ImageDataset(paths, None, eval_transform(12, normalisation(model))), 16, 0, device)  # 16 px * 0.75
    np.testing.assert_allclose(oof_probs(run, classes)[rows], predict_probs(model, loader, device, amp=False)[0], atol=1e-5)


def test_random_views_give_the_same_predictions_with_or_without_loader_workers(pipeline, scratch, classes):
    first = oof_probs(reinfer(pipeline, scratch, classes, "infer.tta=[aug0, aug1]", "infer.tta_select=fixed",
                              "infer.tta_augment=light"), classes)
    second = oof_probs(reinfer(pipeline, scratch, classes, "infer.tta=[aug0, aug1]", "infer.tta_select=fixed",
                               "infer.tta_augment=light", "runtime.num_workers=2"), classes)
    np.testing.assert_array_equal(first, second)


def test_the_configured_reduction_combines_the_views_probabilities(classes, identity_only, flipped_only,
                                                                   identity_and_flip):
    # Each reduction's arithmetic is tested in test_tta.py; this checks infer applies the configured one.
    plain, flipped = oof_probs(identity_only, classes), oof_probs(flipped_only, classes)
    expected = np.sqrt(plain * flipped)
    np.testing.assert_allclose(oof_probs(identity_and_flip, classes), expected / expected.sum(axis=1, keepdims=True), atol=1e-5)


def test_rank_fold_average_is_the_mean_of_each_fold_models_column_ranks(pipeline, scratch, classes):
    from scipy.stats import rankdata

    cfg = pipeline.cfg("tiny_resnet", f"output_dir={scratch}", "infer.tta=[identity]")
    # The config refuses rank for accuracy (only roc_auc reads ranks), and the models were trained for accuracy:
    # set it past validation, to test the arithmetic itself.
    cfg = cfg.model_copy(update={"infer": cfg.infer.model_copy(update={"fold_average": "rank"})})
    run = reinfer_cfg(cfg, classes)
    ids = read_sample_submission(cfg)["image_id"].tolist()
    device = torch.device("cpu")
    ranks = []
    for fold in range(N_FOLDS):
        model = load_fold_model(cfg, fold, classes, device)
        loader = make_loader(ImageDataset([image_path(cfg, i, "test") for i in ids], None,
                                          eval_transform(cfg.train.image_size, normalisation(model))), 16, 0, device)
        probs = predict_probs(model, loader, device, amp=False)[0]
        ranks.append((rankdata(probs, axis=0) - 1) / (len(ids) - 1))
    np.testing.assert_allclose(run.test[classes].to_numpy(), np.mean(ranks, axis=0), atol=1e-6)


def test_geometric_mean_over_logits_is_refused_naming_the_keys(pipeline):
    with pytest.raises(ConfigError, match=r"infer.tta_space: tta_reduce=gmean over logits"):
        pipeline.cfg("tiny_resnet", "infer.tta_reduce=gmean", "infer.tta_space=logits")


def test_infer_says_so_and_keeps_identity_when_no_view_helps(pipeline, classes, monkeypatch, caplog):
    import logging

    from medal.core.log import get_logger
    from medal.infer.run import choose_views

    monkeypatch.setattr(get_logger(), "propagate", True)
    targets = np.array([0, 1, 2, 3])
    right = np.eye(10)[targets] * 5.0
    views = {"identity": right, "hflip": np.roll(right, 1, axis=1), "vflip": np.roll(right, 2, axis=1)}
    with caplog.at_level(logging.INFO, logger="medal"):
        report = choose_views(pipeline.cfg(), views, targets, {})
    assert report["chosen"] == ["identity"] and report["gain"] == 0.0
    assert "no TTA view raised the OOF accuracy; using identity alone" in caplog.text
