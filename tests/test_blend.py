"""blend: members checked against folds.csv, compared on OOF, averaged into a checked submission."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import EXPERIMENTS, N_FOLDS

from medal.blend.members import Member, correlation_matrix
from medal.blend.methods import methods_for
from medal.blend.run import run_blend
from medal.core import layout, provenance
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


def write_upstream_manifests(cfg: Config, experiments: list[str]) -> None:
    """The manifests `medal folds` and `medal infer` write, over folds.csv and each experiment's prediction
    files as they are now, so that blend's provenance checks pass and a test reaches the check it is about.
    The folds manifest is written only where there is none. Call it again after editing a prediction file."""
    folds = layout.folds_csv(cfg)
    if not layout.folds_manifest(cfg).is_file():
        provenance.write_manifest(layout.folds_manifest(cfg), cfg, "folds", made="folds.csv was made",
                                  settings={}, inputs=[],
                                  outputs=[folds])
    for name in experiments:
        outputs = {"oof_tta.csv": layout.oof_tta_csv(cfg, name), "test_pred.csv": layout.test_pred_csv(cfg, name),
                   "tta.json": layout.tta_json(cfg, name)}
        provenance.write_manifest(layout.infer_manifest(cfg, name), cfg.model_copy(update={"name": name}), "infer",
                                  made=f"infer ran for {name!r}", settings={},
                                  inputs=[provenance.Input(folds, layout.folds_manifest(cfg))],
                                  outputs=[p for p in outputs.values() if p.is_file()])


def edit_csv(cfg: Config, path, edit) -> None:
    """Edit an experiment's prediction file, then vouch for it as infer would have written it, so the blend
    reads it and the test reaches its own check rather than the stale manifest."""
    frame = pd.read_csv(path, dtype={"image_id": str})
    edit(frame).to_csv(path, index=False)
    write_upstream_manifests(cfg, [path.parent.name])


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
            edit_csv(copied, copied.data_dir / name / file, lambda f: f.sample(frac=1.0, random_state=3))
    report = run_blend(copied, list(EXPERIMENTS), "shuffled")
    original = json.loads((pipeline.data_dir / "blend_e2e" / "blend.json").read_text())
    assert report["blend_cv"] == pytest.approx(original["blend_cv"])
    assert report["cv"] == pytest.approx(original["cv"])
    shuffled = pd.read_csv(copied.blend.submission_dir / "shuffled.csv", dtype=str)
    pd.testing.assert_frame_equal(shuffled, pd.read_csv(pipeline.submission, dtype=str))


def test_blend_refuses_an_oof_missing_an_id_naming_experiment_and_id(copied):
    path = copied.data_dir / "tiny_effnet" / "oof_tta.csv"
    dropped = pd.read_csv(path, dtype={"image_id": str})["image_id"].iloc[5]
    edit_csv(copied, path, lambda f: f.drop(index=5))
    with pytest.raises(ValueError, match=rf"OOF of 'tiny_effnet' does not cover folds.csv: missing ids \['{dropped}'\]"):
        run_blend(copied, list(EXPERIMENTS))
    assert not (copied.blend.submission_dir / "e2e.csv").exists()


def test_blend_refuses_an_oof_made_from_other_folds_naming_experiment_and_id(copied):
    path = copied.data_dir / "tiny_resnet" / "oof_tta.csv"
    moved = pd.read_csv(path, dtype={"image_id": str})["image_id"].iloc[3]

    def move_row_3(f):
        f.loc[3, "fold"] = (f.loc[3, "fold"] + 1) % N_FOLDS
        return f

    edit_csv(copied, path, move_row_3)
    with pytest.raises(ValueError, match=rf"OOF of 'tiny_resnet' has a different fold than folds.csv for ids \['{moved}'\]"):
        run_blend(copied, list(EXPERIMENTS))


def test_blend_refuses_an_oof_with_other_targets_naming_experiment_and_id(copied):
    path = copied.data_dir / "tiny_resnet" / "oof_tta.csv"
    changed = pd.read_csv(path, dtype={"image_id": str})["image_id"].iloc[0]

    def relabel_row_0(f):
        f.loc[0, "target"] = (f.loc[0, "target"] + 1) % 10
        return f

    edit_csv(copied, path, relabel_row_0)
    with pytest.raises(ValueError, match=rf"OOF of 'tiny_resnet' has a different target than folds.csv for ids \['{changed}'\]"):
        run_blend(copied, list(EXPERIMENTS))


def test_blend_refuses_an_oof_with_an_unknown_id(copied):
    path = copied.data_dir / "tiny_effnet" / "oof_tta.csv"

    def add_stranger(f):
        extra = f.iloc[[0]].copy()
        extra["image_id"] = "stranger"
        return pd.concat([f, extra])

    edit_csv(copied, path, add_stranger)
    with pytest.raises(ValueError, match=r"OOF of 'tiny_effnet' .*unknown ids \['stranger'\]"):
        run_blend(copied, list(EXPERIMENTS))


def test_blend_refuses_test_predictions_missing_a_sample_id(copied):
    path = copied.data_dir / "tiny_effnet" / "test_pred.csv"
    lost = pd.read_csv(path, dtype={"image_id": str})["image_id"].iloc[-1]
    edit_csv(copied, path, lambda f: f.iloc[:-1])
    with pytest.raises(ValueError, match=rf"test predictions of 'tiny_effnet' .* missing \['{lost}'\]"):
        run_blend(copied, list(EXPERIMENTS))


def test_blend_refuses_an_experiment_with_no_outputs_naming_it(copied):
    with pytest.raises(FileNotFoundError, match="experiment 'never_trained' does not exist"):
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


def test_compare_scores_every_probability_method_in_sample_and_nested(compared):
    _, report = compared
    assert list(report["methods"]) == methods_for("accuracy") == ["mean", "greedy", "caruana", "optimize"]
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
    assert "| model | weight | cv | fold_mean | fold_std | cv_no_tta | tta_gain | tta_views | fold 0 | fold 1 |" in text
    for name in ["mean", "greedy", "caruana", "optimize", *EXPERIMENTS]:
        assert f"| {name} |" in text
    assert "| rank |" not in text  # accuracy reads probabilities: compare does not offer the rank blend


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
    assert list(report["methods"]) == methods_for("accuracy")


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


# A competition made by hand: folds.csv, a sample submission and each member's predictions, with the
# manifests folds and infer write. Issue 10: submissions in the sample's format, probabilities as probabilities.

HAND_CLASSES = ["ant", "bee", "cow"]
HAND_TRAIN = [f"tr{i:03d}" for i in range(60)]
HAND_TEST = [f"te{i:03d}" for i in range(20)]
HAND_TARGETS = np.arange(60) % 3
HAND_FOLDS = (np.arange(60) // 3) % 3  # every fold holds every class


def softmax_model(seed: int, targets: np.ndarray) -> np.ndarray:
    """float32 softmax of the truth plus noise, as infer writes them: rows sum to 1 up to float32 rounding."""
    z = np.eye(3)[targets] * 1.5 + np.random.default_rng(seed).normal(size=(len(targets), 3))
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def handmade(tmp_path, members: dict[str, tuple[np.ndarray, np.ndarray]], metric: str = "accuracy",
             sample: str = "probs", *overrides: str) -> Config:
    """Write the competition and each member's (OOF, test) predictions; return its config (blend.method=compare)."""
    from conftest import write_yaml

    from medal.core.config import load_config
    from medal.core.predictions import prediction_frame

    root, out = tmp_path / "comp", tmp_path / "outputs"
    root.mkdir()
    columns = {c: 1 / 3 for c in HAND_CLASSES} if sample == "probs" else {"label": HAND_CLASSES[0]}
    pd.DataFrame({"image_id": HAND_TEST, **columns}).to_csv(root / "sample_submission.csv", index=False)
    config = write_yaml(tmp_path / "hand.yaml", {
        "name": "hand", "metric": metric, "output_dir": str(out), "data": {"root": str(root)},
        "blend": {"experiments": list(members), "method": "compare", "submission_dir": str(tmp_path / "subs"),
                  "submission_name": "hand"}})
    cfg = load_config(config, list(overrides))
    layout.folds_csv(cfg).parent.mkdir(parents=True)
    pd.DataFrame({"image_id": HAND_TRAIN, "label": np.asarray(HAND_CLASSES)[HAND_TARGETS],
                  "fold": HAND_FOLDS}).to_csv(layout.folds_csv(cfg), index=False)
    for name, (oof, test) in members.items():
        layout.oof_tta_csv(cfg, name).parent.mkdir(parents=True)
        prediction_frame("image_id", HAND_TRAIN, HAND_CLASSES, oof, fold=HAND_FOLDS,
                         target=HAND_TARGETS).to_csv(layout.oof_tta_csv(cfg, name), index=False)
        prediction_frame("image_id", HAND_TEST, HAND_CLASSES, test).to_csv(layout.test_pred_csv(cfg, name), index=False)
    write_upstream_manifests(cfg, list(members))
    return cfg


def member(seed: int) -> tuple[np.ndarray, np.ndarray]:
    return softmax_model(seed, HAND_TARGETS), softmax_model(seed + 100, np.arange(20) % 3)


def submission_values(cfg: Config, name: str = "hand") -> np.ndarray:
    sub = pd.read_csv(layout.submission_csv(cfg, name), dtype={"image_id": str})
    assert sub["image_id"].tolist() == HAND_TEST and list(sub.columns) == ["image_id", *HAND_CLASSES]
    return sub[HAND_CLASSES].to_numpy()


def test_handmade_members_pass_the_provenance_checks_blend_makes(tmp_path):
    from medal.blend.members import require_current_predictions

    cfg = handmade(tmp_path, {"solo": member(1)})
    require_current_predictions(cfg, "solo")  # the helper's manifests are what load_member expects


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_one_experiment_with_a_probability_sample_writes_its_own_probabilities(tmp_path, metric):
    # Issue 10: compare chose `rank` for one model and wrote per-class ranks whose rows summed to 3..6.
    oof, test = member(1)
    cfg = handmade(tmp_path, {"solo": (oof, test)}, metric)
    report = run_blend(cfg)
    written = submission_values(cfg)
    np.testing.assert_allclose(written.sum(axis=1), 1.0, atol=1e-6)
    saved = pd.read_csv(layout.test_pred_csv(cfg, "solo"))[HAND_CLASSES].to_numpy()
    np.testing.assert_allclose(written, saved, rtol=1e-6, atol=0)
    assert report["method"] == "single" and report["weights"] == {"solo": 1.0}
    assert list(report["methods"]) == ["single"]
    assert report["blend_cv"] == report["blend_in_sample"] == pytest.approx(score(metric, HAND_TARGETS, oof))


def test_one_experiment_skips_the_method_search_and_says_so(tmp_path, caplog, monkeypatch):
    import logging

    from medal.blend import run as blend_run
    from medal.core.log import get_logger

    def no_search(*args, **kwargs):
        raise AssertionError("a blend of one experiment has no method to search")

    monkeypatch.setattr(blend_run, "evaluate_method", no_search)
    monkeypatch.setattr(get_logger(), "propagate", True)
    cfg = handmade(tmp_path, {"solo": member(1)})
    with caplog.at_level(logging.INFO, logger="medal"):
        run_blend(cfg)
    assert "blend of one experiment (solo): no method to choose; its test predictions are written as they are" in caplog.text


def test_one_experiment_still_writes_the_report(tmp_path):
    cfg = handmade(tmp_path, {"solo": member(1)})
    run_blend(cfg)
    report = json.loads((layout.blend_dir(cfg, "hand") / "blend.json").read_text())
    assert report["method"] == "single" and report["members"] == ["solo"]
    assert "Method: **single**" in (layout.blend_dir(cfg, "hand") / "report.md").read_text()


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "qwk"])
def test_compare_of_several_experiments_writes_probabilities_for_a_metric_that_reads_them(tmp_path, metric):
    cfg = handmade(tmp_path, {"a": member(1), "b": member(2), "c": member(3)}, metric)
    report = run_blend(cfg)
    assert "rank" not in report["methods"] and report["method"] != "rank"
    written = submission_values(cfg)
    assert (written >= 0).all()
    np.testing.assert_allclose(written.sum(axis=1), 1.0, atol=1e-9)


def test_compare_says_it_leaves_the_rank_blend_out(tmp_path, caplog, monkeypatch):
    import logging

    from medal.core.log import get_logger

    monkeypatch.setattr(get_logger(), "propagate", True)
    cfg = handmade(tmp_path, {"a": member(1), "b": member(2)}, "log_loss")
    with caplog.at_level(logging.INFO, logger="medal"):
        run_blend(cfg)
    assert "compare leaves out rank: it blends per-class ranks, and metric log_loss reads probabilities" in caplog.text


@pytest.mark.slow
def test_compare_offers_the_rank_blend_to_roc_auc(tmp_path):
    cfg = handmade(tmp_path, {"a": member(1), "b": member(2)}, "roc_auc")
    report = run_blend(cfg)
    assert list(report["methods"]) == methods_for("roc_auc") and "rank" in report["methods"]


def test_scores_in_a_members_test_predictions_are_refused_not_written(tmp_path):
    # A member inferred with infer.fold_average=rank (before that was refused for accuracy) holds ranks.
    oof, test = member(1)
    ranks = (np.argsort(np.argsort(test, axis=0), axis=0) / (len(test) - 1)).astype(np.float64)
    cfg = handmade(tmp_path, {"a": (oof, ranks), "b": member(2)}, "accuracy", "probs", "blend.method=mean")
    with pytest.raises(ValueError, match=r"the mean blend of \['a', 'b'\] gives \d+ of 20 test rows that are not "
                                         r"probabilities \(the row of id 'te\d+' sums to [\d.]+\).*infer.fold_average=mean"):
        run_blend(cfg)
    assert not layout.submission_csv(cfg, "hand").exists()


def test_a_label_sample_still_gets_labels(tmp_path):
    oof, test = member(1)
    cfg = handmade(tmp_path, {"solo": (oof, test)}, "accuracy", "label")
    run_blend(cfg)
    sub = pd.read_csv(layout.submission_csv(cfg, "hand"), dtype=str)
    assert sub["label"].tolist() == [HAND_CLASSES[i] for i in test.argmax(axis=1)]


# Provenance: a lock while it runs, the manifest written last, invalidated before the outputs are rewritten.


def test_blend_writes_a_manifest_that_verifies_and_names_its_inputs_and_outputs(tmp_path):
    cfg = handmade(tmp_path, {"a": member(1), "b": member(2)})
    run_blend(cfg)
    path = layout.blend_manifest(cfg, "hand")
    record = provenance.verify(path, "no manifest", cfg)
    assert record["made"] == "submission 'hand' was blended"
    assert record["command"] == f"medal blend -c {tmp_path / 'hand.yaml'} a b --name hand"
    assert set(record["inputs"]) == {"folds.csv", "sample_submission.csv", "a/oof_tta.csv", "a/test_pred.csv",
                                     "b/oof_tta.csv", "b/test_pred.csv"}
    assert record["inputs"]["a/test_pred.csv"]["sha256"] == provenance.sha256(layout.test_pred_csv(cfg, "a"))
    submission = layout.submission_csv(cfg, "hand")
    assert set(record["outputs"]) == {"subs/hand.csv", "test_probs.csv", "blend.json"}  # paths from the blend folder
    assert record["outputs"]["subs/hand.csv"]["sha256"] == provenance.sha256(submission)
    assert record["settings"]["metric"] == "accuracy" and record["settings"]["blend"]["method"] == "compare"
    assert not {"experiments", "submission_dir"} & set(record["settings"]["blend"])


def test_the_blend_manifest_goes_stale_when_a_member_is_re_inferred(tmp_path):
    cfg = handmade(tmp_path, {"a": member(1), "b": member(2)})
    run_blend(cfg)
    prediction = layout.test_pred_csv(cfg, "b")
    pd.read_csv(prediction).assign(ant=0.5, bee=0.25, cow=0.25).to_csv(prediction, index=False)
    write_upstream_manifests(cfg, ["b"])
    with pytest.raises(provenance.StaleError, match=r"b/test_pred.csv changed since submission 'hand' was blended"):
        provenance.verify(layout.blend_manifest(cfg, "hand"), "no manifest", cfg)


def test_the_manifest_records_the_predictions_as_blended_even_if_re_inferred_meanwhile(tmp_path, monkeypatch):
    from medal.blend import run as blend_run

    cfg = handmade(tmp_path, {"a": member(1), "b": member(2)})
    write_report = blend_run.write_report

    def infer_rewrites_b_meanwhile(*args, **kwargs):
        prediction = layout.test_pred_csv(cfg, "b")
        pd.read_csv(prediction).assign(ant=0.5, bee=0.25, cow=0.25).to_csv(prediction, index=False)
        write_upstream_manifests(cfg, ["b"])
        write_report(*args, **kwargs)

    monkeypatch.setattr(blend_run, "write_report", infer_rewrites_b_meanwhile)
    run_blend(cfg)
    with pytest.raises(provenance.StaleError, match=r"b/test_pred.csv changed since submission 'hand' was blended"):
        provenance.verify(layout.blend_manifest(cfg, "hand"), "no manifest", cfg)


def test_a_blend_that_fails_after_rewriting_the_submission_leaves_no_manifest(tmp_path, monkeypatch):
    from medal.blend import run as blend_run

    cfg = handmade(tmp_path, {"a": member(1), "b": member(2)})
    run_blend(cfg)
    assert layout.blend_manifest(cfg, "hand").is_file()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(blend_run, "write_report", killed)
    with pytest.raises(KeyboardInterrupt):
        run_blend(cfg)
    assert not layout.blend_manifest(cfg, "hand").exists()  # nothing vouches for a half-written blend


def test_a_blend_of_a_name_in_progress_is_refused(tmp_path):
    from medal.core.locks import LockedError, exclusive

    cfg = handmade(tmp_path, {"a": member(1)})
    held = exclusive(layout.lock_file(layout.blend_dir(cfg, "hand"), "blend"), "blend 'hand'")
    with held, pytest.raises(LockedError, match=r"blend 'hand' is in use by process"):
        run_blend(cfg)
    run_blend(cfg)  # released: the next one runs
