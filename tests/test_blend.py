"""blend: members checked against folds.csv, compared on OOF, averaged into a checked submission."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import EXPERIMENTS, N_FOLDS

from medal.blend.members import Member, correlation_matrix
from medal.blend.run import run_blend
from medal.core.config import Config
from medal.core.io import read_csv
from medal.core.metrics import score
from medal.core.submission import check_submission
from medal.core.tables import read_folds, read_sample_submission


def preds(path, classes) -> pd.DataFrame:
    return read_csv(path, "predictions", ["image_id", *classes], ["image_id"])


@pytest.fixture
def copied(pipeline, tmp_path) -> Config:
    """A config over a private copy of the session outputs, writing submissions into tmp."""
    out = pipeline.copy_outputs(tmp_path / "outputs")
    return pipeline.cfg("tiny_resnet", f"output_dir={out}", f"blend.submission_dir={tmp_path / 'subs'}")


def edit_csv(path, edit) -> None:
    frame = pd.read_csv(path, dtype={"image_id": str})
    edit(frame).to_csv(path, index=False)


def test_blend_stage_exits_0_and_prints_the_submission_path(pipeline):
    assert pipeline.codes["blend"] == 0
    assert pipeline.stdout["blend"].strip() == str(pipeline.submission)


def test_blended_submission_passes_the_check(pipeline, classes):
    check_submission(pipeline.submission, pipeline.root / "sample_submission.csv", "image_id", "label", classes)


def test_blended_submission_follows_the_sample_ids_and_columns(pipeline):
    sub = pd.read_csv(pipeline.submission, dtype=str)
    sample = pd.read_csv(pipeline.root / "sample_submission.csv", dtype=str)
    assert list(sub.columns) == list(sample.columns) == ["image_id", "label"]
    assert sub["image_id"].tolist() == sample["image_id"].tolist()


def test_blended_labels_are_classes(pipeline, classes):
    assert set(pd.read_csv(pipeline.submission, dtype=str)["label"]) <= set(classes)


def test_blended_labels_are_the_argmax_of_the_members_mean_test_probabilities(pipeline, classes):
    sample_ids = read_sample_submission(pipeline.cfg())["image_id"]
    mean = np.mean([preds(pipeline.cfg(n).exp_dir / "test_pred.csv", classes).set_index("image_id").loc[sample_ids, classes]
                    .to_numpy() for n in EXPERIMENTS], axis=0)
    sub = pd.read_csv(pipeline.submission, dtype=str)
    assert sub["label"].tolist() == [classes[i] for i in mean.argmax(axis=1)]


def test_blend_report_scores_each_member_and_the_blend_on_oof(pipeline, classes):
    report = json.loads((pipeline.data_dir / "blend_e2e" / "blend.json").read_text())
    folds = read_folds(pipeline.cfg())
    targets = folds["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    oofs = {n: preds(pipeline.cfg(n).exp_dir / "oof_tta.csv", classes).set_index("image_id").loc[folds["image_id"], classes]
            .to_numpy() for n in EXPERIMENTS}
    assert report["members"] == list(EXPERIMENTS)
    for name, probs in oofs.items():
        assert report["cv"][name] == pytest.approx(score("accuracy", targets, probs))
        assert len(report["per_fold"][name]) == N_FOLDS
    assert report["blend_cv"] == pytest.approx(score("accuracy", targets, np.mean(list(oofs.values()), axis=0)))


def test_blend_report_per_fold_scores_use_each_folds_rows(pipeline, classes):
    report = json.loads((pipeline.data_dir / "blend_e2e" / "blend.json").read_text())
    folds = read_folds(pipeline.cfg())
    oof = preds(pipeline.cfg("tiny_effnet").exp_dir / "oof_tta.csv", classes).set_index("image_id").loc[folds["image_id"]]
    targets = folds["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    for k in range(N_FOLDS):
        rows = (folds["fold"] == k).to_numpy()
        assert report["per_fold"]["tiny_effnet"][k] == pytest.approx(score("accuracy", targets[rows], oof[classes].to_numpy()[rows]))


def test_blend_report_correlation_is_symmetric_with_unit_diagonal(pipeline):
    corr = pd.read_csv(pipeline.data_dir / "blend_e2e" / "correlation.csv", index_col="model")
    assert list(corr.index) == list(corr.columns) == list(EXPERIMENTS)
    np.testing.assert_allclose(np.diag(corr.to_numpy()), 1.0)
    np.testing.assert_allclose(corr.to_numpy(), corr.to_numpy().T)
    assert -1.0 <= corr.iloc[0, 1] < 1.0


def test_correlation_of_identical_members_is_one():
    probs = np.random.default_rng(0).random((20, 3))
    corr = correlation_matrix([Member("a", probs, probs), Member("b", probs.copy(), probs)])
    np.testing.assert_allclose(corr.to_numpy(), np.ones((2, 2)))


def test_correlation_of_opposite_members_is_minus_one():
    probs = np.random.default_rng(0).random((20, 3))
    corr = correlation_matrix([Member("a", probs, probs), Member("b", 1 - probs, probs)])
    assert corr.loc["a", "b"] == pytest.approx(-1.0)


def test_correlation_of_a_single_member_is_one():
    probs = np.random.default_rng(0).random((5, 2))
    assert correlation_matrix([Member("a", probs, probs)]).to_numpy().tolist() == [[1.0]]


def test_single_member_submission_is_its_own_argmax_under_the_given_name(copied, classes):
    report = run_blend(copied, ["tiny_effnet"], "solo")
    assert report["submission"] == str(copied.blend.submission_dir / "solo.csv")
    test = preds(copied.data_dir / "tiny_effnet" / "test_pred.csv", classes)
    sub = pd.read_csv(copied.blend.submission_dir / "solo.csv", dtype=str)
    assert sub["label"].tolist() == [classes[i] for i in test[classes].to_numpy().argmax(axis=1)]


def test_blend_aligns_members_by_id_not_by_row_order(pipeline, copied):
    for name in EXPERIMENTS:
        for file in ["oof_tta.csv", "test_pred.csv"]:
            edit_csv(copied.data_dir / name / file, lambda f: f.sample(frac=1.0, random_state=3))
    report = run_blend(copied, list(EXPERIMENTS), "shuffled")
    original = json.loads((pipeline.data_dir / "blend_e2e" / "blend.json").read_text())
    assert report["blend_cv"] == pytest.approx(original["blend_cv"])
    assert report["cv"] == pytest.approx(original["cv"])
    shuffled = pd.read_csv(copied.blend.submission_dir / "shuffled.csv", dtype=str)
    pd.testing.assert_frame_equal(shuffled, pd.read_csv(pipeline.submission, dtype=str))


def test_blend_refuses_an_oof_missing_an_id_naming_experiment_and_id(copied):
    path = copied.data_dir / "tiny_effnet" / "oof_tta.csv"
    dropped = pd.read_csv(path, dtype={"image_id": str})["image_id"].iloc[5]
    edit_csv(path, lambda f: f.drop(index=5))
    with pytest.raises(ValueError, match=rf"OOF of 'tiny_effnet' does not cover folds.csv: missing ids \['{dropped}'\]"):
        run_blend(copied, list(EXPERIMENTS))
    assert not (copied.blend.submission_dir / "e2e.csv").exists()


def test_blend_refuses_an_oof_made_from_other_folds_naming_experiment_and_id(copied):
    path = copied.data_dir / "tiny_resnet" / "oof_tta.csv"
    moved = pd.read_csv(path, dtype={"image_id": str})["image_id"].iloc[3]

    def move_row_3(f):
        f.loc[3, "fold"] = (f.loc[3, "fold"] + 1) % N_FOLDS
        return f

    edit_csv(path, move_row_3)
    with pytest.raises(ValueError, match=rf"OOF of 'tiny_resnet' has a different fold than folds.csv for ids \['{moved}'\]"):
        run_blend(copied, list(EXPERIMENTS))


def test_blend_refuses_an_oof_with_other_targets_naming_experiment_and_id(copied):
    path = copied.data_dir / "tiny_resnet" / "oof_tta.csv"
    changed = pd.read_csv(path, dtype={"image_id": str})["image_id"].iloc[0]

    def relabel_row_0(f):
        f.loc[0, "target"] = (f.loc[0, "target"] + 1) % 10
        return f

    edit_csv(path, relabel_row_0)
    with pytest.raises(ValueError, match=rf"OOF of 'tiny_resnet' has a different target than folds.csv for ids \['{changed}'\]"):
        run_blend(copied, list(EXPERIMENTS))


def test_blend_refuses_an_oof_with_an_unknown_id(copied):
    path = copied.data_dir / "tiny_effnet" / "oof_tta.csv"

    def add_stranger(f):
        extra = f.iloc[[0]].copy()
        extra["image_id"] = "stranger"
        return pd.concat([f, extra])

    edit_csv(path, add_stranger)
    with pytest.raises(ValueError, match=r"OOF of 'tiny_effnet' .*unknown ids \['stranger'\]"):
        run_blend(copied, list(EXPERIMENTS))


def test_blend_refuses_test_predictions_missing_a_sample_id(copied):
    path = copied.data_dir / "tiny_effnet" / "test_pred.csv"
    lost = pd.read_csv(path, dtype={"image_id": str})["image_id"].iloc[-1]
    edit_csv(path, lambda f: f.iloc[:-1])
    with pytest.raises(ValueError, match=rf"test predictions of 'tiny_effnet' .* missing \['{lost}'\]"):
        run_blend(copied, list(EXPERIMENTS))


def test_blend_refuses_an_experiment_with_no_outputs_naming_it(copied):
    with pytest.raises(FileNotFoundError, match="experiment 'never_trained' has no OOF file"):
        run_blend(copied, ["tiny_resnet", "never_trained"])


def test_blend_without_experiments_is_refused(copied):
    cfg = copied.model_copy(update={"blend": copied.blend.model_copy(update={"experiments": []})})
    with pytest.raises(ValueError, match="no experiments to blend"):
        run_blend(cfg)


# Methods compared by nested CV, the report, the heatmap.


@pytest.fixture(scope="module")
def compared(pipeline, tmp_path_factory) -> tuple[Config, dict]:
    base = tmp_path_factory.mktemp("compare")
    out = pipeline.copy_outputs(base / "outputs")
    cfg = pipeline.cfg("tiny_resnet", f"output_dir={out}", f"blend.submission_dir={base / 'subs'}", "blend.method=compare")
    return cfg, run_blend(cfg, None, "cmp")


def test_compare_scores_every_method_in_sample_and_nested(compared):
    from medal.blend.methods import METHODS

    _, report = compared
    assert list(report["methods"]) == list(METHODS)
    for name, result in report["methods"].items():
        assert 0.0 <= result["nested_cv"] <= 1.0 and 0.0 <= result["in_sample"] <= 1.0
        assert len(result["nested_per_fold"]) == len(result["fold_weights"]) == N_FOLDS
        weights = np.array(list(result["weights"].values()))
        assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0), name


def test_compare_uses_the_method_with_the_best_nested_cv(compared):
    _, report = compared
    nested = {name: r["nested_cv"] for name, r in report["methods"].items()}
    assert report["method"] == next(name for name, value in nested.items() if value == max(nested.values()))
    assert report["blend_cv"] == nested[report["method"]]
    assert report["blend_in_sample"] == report["methods"][report["method"]]["in_sample"]
    assert report["weights"] == report["methods"][report["method"]]["weights"]


def test_compared_submission_is_the_argmax_of_the_chosen_weights_on_the_test_predictions(compared, classes):
    from medal.blend.methods import METHODS, apply_weights

    cfg, report = compared
    ids = read_sample_submission(cfg)["image_id"]
    tests = np.stack([preds(cfg.exp_dir.parent / n / "test_pred.csv", classes).set_index("image_id").loc[ids, classes]
                      .to_numpy() for n in report["members"]])
    blended = apply_weights(tests, np.array(list(report["weights"].values())), METHODS[report["method"]].space)
    sub = pd.read_csv(cfg.blend.submission_dir / "cmp.csv", dtype=str)
    assert sub["label"].tolist() == [classes[i] for i in blended.argmax(axis=1)]


def test_models_table_carries_each_models_tta_gain(compared):
    cfg, report = compared
    for name in EXPERIMENTS:
        tta = json.loads((cfg.exp_dir.parent / name / "tta.json").read_text())
        assert report["tta_gain"][name] == pytest.approx(tta["gain"])
        assert report["cv"][name] == pytest.approx(tta["oof_tta"])  # the blend reads the OOF after TTA


def test_blend_report_holds_models_weights_correlations_and_both_cvs(compared):
    cfg, report = compared
    text = (cfg.data_dir / "blend_cmp" / "report.md").read_text()
    for heading in ["## Models (OOF)", "## Blend methods: in-sample against nested CV", "## OOF correlation (Pearson)"]:
        assert heading in text
    assert f"nested CV **{report['blend_cv']:.4f}**, in-sample {report['blend_in_sample']:.4f}" in text
    assert "| | cv | fold_mean | fold_std | cv_no_tta | tta_gain | tta_views | weight | fold 0 | fold 1 |" in text
    for name in ["mean", "rank", "greedy", "caruana", "optimize", *EXPERIMENTS]:
        assert f"| {name} |" in text


def test_correlation_heatmap_is_a_png_image(compared):
    import cv2

    cfg, _ = compared
    data = (cfg.data_dir / "blend_cmp" / "correlation.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_blend_compare_flag_on_the_command_line(pipeline, tmp_path, capsys):
    from medal.cli import main

    out = pipeline.copy_outputs(tmp_path / "outputs")
    code = main(["blend", "-c", str(pipeline.configs["tiny_resnet"]), "--compare", "--name", "flag",
                 f"output_dir={out}", f"blend.submission_dir={tmp_path / 'subs'}"])
    assert code == 0 and capsys.readouterr().out.strip() == str(tmp_path / "subs" / "flag.csv")
    report = json.loads((out / pipeline.root.name / "blend_flag" / "blend.json").read_text())
    assert len(report["methods"]) == 5


def test_blend_refuses_an_experiment_named_twice(copied):
    with pytest.raises(ValueError, match=r"name one more than once"):
        run_blend(copied, ["tiny_resnet", "tiny_resnet"])


def test_unknown_blend_method_is_refused_naming_it(pipeline):
    from medal.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"blend.method: 'stacking' is not one of"):
        pipeline.cfg("tiny_resnet", "blend.method=stacking")


def test_check_submission_takes_overrides_after_the_config(pipeline, tmp_path):
    from medal.cli import main

    out = pipeline.copy_outputs(tmp_path / "outputs")
    # argparse alone refuses key=value after `-c CFG` when FILE came first; medal takes them.
    code = main(["check-submission", str(pipeline.submission), "-c", str(pipeline.configs["tiny_resnet"]),
                 f"output_dir={out}", "blend.method=compare"])
    assert code == 0


def test_a_stray_option_is_still_refused(pipeline):
    from medal.cli import main

    with pytest.raises(SystemExit):
        main(["check-submission", str(pipeline.submission), "-c", str(pipeline.configs["tiny_resnet"]), "--bogus"])
