"""infer: TTA measured on OOF, test predictions from every fold model, keyed by the sample's ids."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import EXPERIMENTS, N_FOLDS, TTA

from medal.augment import eval_transform
from medal.config import Config, ConfigError
from medal.data import ImageDataset, image_path, read_folds, read_sample_submission
from medal.infer import load_fold_model, run_infer
from medal.io import read_csv
from medal.metrics import score
from medal.models import normalisation
from medal.predict import predict_probs
from medal.runtime import make_loader


def predictions(path, classes) -> pd.DataFrame:
    return read_csv(path, "predictions", ["image_id", *classes], ["image_id"])


@pytest.fixture(scope="module")
def identity_only(pipeline, tmp_path_factory) -> Config:
    """tiny_resnet re-inferred on a copy of the outputs with the identity view alone."""
    out = pipeline.copy_outputs(tmp_path_factory.mktemp("identity") / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}", "infer.tta=[identity]")
    run_infer(cfg)
    return cfg


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
    assert json.loads((identity_only.exp_dir / "tta.json").read_text())["chosen"] == ["identity"]
    oof = predictions(identity_only.exp_dir / "oof_tta.csv", classes).set_index("image_id")
    trained = predictions(identity_only.exp_dir / "oof.csv", classes).set_index("image_id")
    np.testing.assert_allclose(oof.loc[trained.index, classes].to_numpy(), trained[classes].to_numpy(), atol=1e-5)


def test_test_pred_is_the_mean_of_every_fold_models_probabilities(identity_only, classes):
    cfg = identity_only
    ids = read_sample_submission(cfg)["image_id"].tolist()
    paths = [image_path(cfg, i, "test") for i in ids]
    device = torch.device("cpu")
    per_fold = []
    for fold in range(N_FOLDS):
        model = load_fold_model(cfg, fold, classes, device)
        loader = make_loader(ImageDataset(paths, None, eval_transform(cfg.train.image_size, normalisation(model))), 16, 0, device)
        per_fold.append(predict_probs(model, loader, device, amp=False)[0])
    assert not np.allclose(per_fold[0], per_fold[1], atol=1e-3)  # the folds' models differ
    test = predictions(cfg.exp_dir / "test_pred.csv", classes)
    np.testing.assert_allclose(test[classes].to_numpy(), np.mean(per_fold, axis=0), atol=1e-5)


def test_fixed_selection_uses_every_listed_view(pipeline, tmp_path, classes):
    out = pipeline.copy_outputs(tmp_path / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}", "infer.tta=[identity, hflip]", "infer.tta_select=fixed")
    report = run_infer(cfg)
    assert report["chosen"] == ["identity", "hflip"]
    oof = predictions(cfg.exp_dir / "oof_tta.csv", classes).set_index("image_id")
    trained = predictions(cfg.exp_dir / "oof.csv", classes).set_index("image_id")
    # The mean with the flipped view moves the probabilities away from the plain OOF.
    assert not np.allclose(oof.loc[trained.index, classes].to_numpy(), trained[classes].to_numpy(), atol=1e-3)


def test_unknown_tta_view_is_refused_naming_it(pipeline):
    with pytest.raises(ConfigError) as err:
        pipeline.cfg("tiny_resnet", "infer.tta=[identity, rot90]")
    assert "infer.tta" in str(err.value) and "'rot90'" in str(err.value)


def test_infer_without_a_fold_checkpoint_names_the_fold_to_train(pipeline, tmp_path):
    out = pipeline.copy_outputs(tmp_path / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}")
    (cfg.fold_dir(1) / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"fold1/best.pt does not exist: run `medal train -c CONFIG --fold 1`"):
        run_infer(cfg)


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
