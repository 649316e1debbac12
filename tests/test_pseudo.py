"""Pseudo-labelling: `medal pseudo` selects a blend's confident test rows exactly, and training adds them to the
training side of every fold only, trains on them (soft labels as distributions), and is tied to their content."""
from __future__ import annotations

import contextlib
import io
import json
import logging

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import write_yaml
from train_toy import CLASSES, make_toy, make_trainer, one_compute_thread, toy_cfg  # noqa: F401 (autouse fixture)

from medal.blend import run_blend
from medal.core import layout, provenance
from medal.core.config import Config, TrainConfig, load_config
from medal.core.predictions import prediction_frame
from medal.core.tables import class_names, label_codes, read_folds
from medal.pseudo import run_pseudo, select_threshold, select_top_fraction
from medal.train import run_train, split_fold
from medal.train.losses import Criterion
from medal.train.state import COMPLETE, STALE, fold_status, training_settings

# Selection: hand-built probabilities with known answers.


def test_the_threshold_keeps_exactly_the_rows_at_or_above_it():
    probs = np.array([[0.9, 0.05, 0.05],    # at the threshold: kept
                      [0.05, 0.95, 0.0],    # above: kept
                      [0.89, 0.11, 0.0],    # just below: dropped
                      [0.3, 0.3, 0.4],      # unsure: dropped
                      [0.0, 0.0, 1.0]])     # certain: kept
    assert select_threshold(probs, 0.9).tolist() == [True, True, False, False, True]
    assert select_threshold(probs, 1.0).tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
def test_a_threshold_outside_zero_to_one_is_refused(threshold):
    with pytest.raises(ValueError, match=r"--threshold .* is outside \(0, 1\]"):
        select_threshold(np.full((2, 2), 0.5), threshold)


def test_top_fraction_keeps_the_most_confident_share_of_each_predicted_class_rounded_up():
    # class 0 is predicted for rows 0-4 (confidence .6 .9 .7 .8 .55), class 1 for rows 5-6 (.7 .95); class 2 never.
    probs = np.array([[0.6, 0.4, 0.0], [0.9, 0.1, 0.0], [0.7, 0.3, 0.0], [0.8, 0.2, 0.0], [0.55, 0.45, 0.0],
                      [0.3, 0.7, 0.0], [0.05, 0.95, 0.0]])
    # 0.4 x 5 = 2 rows of class 0 (.9 and .8); 0.4 x 2 = 0.8 -> 1 row of class 1 (.95).
    assert np.flatnonzero(select_top_fraction(probs, 0.4)).tolist() == [1, 3, 6]
    # 0.5 x 5 = 2.5 -> 3 rows of class 0; 0.5 x 2 = 1 row of class 1.
    assert np.flatnonzero(select_top_fraction(probs, 0.5)).tolist() == [1, 2, 3, 6]
    assert select_top_fraction(probs, 1.0).all()


def test_top_fraction_counts_survive_floating_point_and_ties_keep_the_earlier_row():
    # 0.28 x 25 is 7.000000000000001 in floating point: 7 rows, not 8. Six rows are sure (0.9); the seventh is the
    # first of the nineteen that tie at 0.6.
    conf = np.full(25, 0.6)
    conf[[3, 8, 11, 15, 20, 22]] = 0.9
    probs = np.stack([conf, 1 - conf], axis=1)
    assert np.flatnonzero(select_top_fraction(probs, 0.28)).tolist() == [0, 3, 8, 11, 15, 20, 22]


# The stage, on a blend of one hand-made member whose test probabilities are known exactly (dyadic fractions
# survive the CSV round trip and the blend's renormalisation bit for bit).

HAND = ["ant", "bee", "cow"]
TEST_IDS = [f"t{i}" for i in range(8)]
TEST_PROBS = np.array([
    [0.75, 0.125, 0.125],       # t0 ant .75  (exactly at threshold 0.75)
    [0.5, 0.25, 0.25],          # t1 ant .5
    [0.125, 0.875, 0.0],        # t2 bee .875
    [0.25, 0.25, 0.5],          # t3 cow .5
    [0.0625, 0.9375, 0.0],      # t4 bee .9375
    [0.25, 0.5, 0.25],          # t5 bee .5
    [0.125, 0.125, 0.75],       # t6 cow .75
    [0.375, 0.3125, 0.3125],    # t7 ant .375
])


def hand_blend(tmp_path) -> Config:
    """A competition whose submission takes labels (as flowers'), one member 'm' predicting TEST_PROBS, and blend 'b'
    of it (which writes blend_b/test_probs.csv), with the manifests folds and infer would have written."""
    root, out = tmp_path / "comp", tmp_path / "outputs"
    root.mkdir()
    pd.DataFrame({"image_id": TEST_IDS, "label": HAND[0]}).to_csv(root / "sample_submission.csv", index=False)
    config = write_yaml(tmp_path / "hand.yaml", {
        "name": "m", "output_dir": str(out), "data": {"root": str(root)},
        "blend": {"experiments": ["m"], "submission_dir": str(tmp_path / "subs"), "submission_name": "b"}})
    cfg = load_config(config)
    train_ids, targets, folds = [f"r{i}" for i in range(12)], np.arange(12) % 3, np.arange(12) // 3 % 2
    layout.folds_csv(cfg).parent.mkdir(parents=True)
    pd.DataFrame({"image_id": train_ids, "label": np.asarray(HAND)[targets], "fold": folds}).to_csv(
        layout.folds_csv(cfg), index=False)
    provenance.write_manifest(layout.folds_manifest(cfg), cfg, "folds", made="folds.csv was made", settings={},
                              inputs=[], outputs=[layout.folds_csv(cfg)])
    write_member(cfg, np.eye(3)[targets] * 0.5 + 0.5 / 3, TEST_PROBS)
    run_blend(cfg)
    return cfg


def write_member(cfg: Config, oof: np.ndarray, test: np.ndarray) -> None:
    """Member m's oof_tta.csv and test_pred.csv, and the infer manifest over them (as a re-run infer writes)."""
    table = read_folds(cfg)
    layout.oof_tta_csv(cfg, "m").parent.mkdir(parents=True, exist_ok=True)
    prediction_frame("image_id", table["image_id"], HAND, oof, fold=table["fold"].to_numpy(),
                     target=label_codes(table["label"], HAND)).to_csv(layout.oof_tta_csv(cfg, "m"), index=False)
    prediction_frame("image_id", TEST_IDS, HAND, test).to_csv(layout.test_pred_csv(cfg, "m"), index=False)
    provenance.write_manifest(layout.infer_manifest(cfg, "m"), cfg, "infer", made="predictions of 'm' were made",
                              settings={}, inputs=[provenance.Input(layout.folds_csv(cfg), layout.folds_manifest(cfg))],
                              outputs=[layout.oof_tta_csv(cfg, "m"), layout.test_pred_csv(cfg, "m")])


def test_blend_writes_its_blended_test_probabilities_even_when_the_submission_takes_labels(tmp_path):
    cfg = hand_blend(tmp_path)
    written = pd.read_csv(layout.blend_test_probs(cfg, "b"), dtype={"image_id": str})
    assert list(written.columns) == ["image_id", *HAND] and written["image_id"].tolist() == TEST_IDS
    assert np.array_equal(written[HAND].to_numpy(), TEST_PROBS)
    record = provenance.verify(layout.blend_manifest(cfg, "b"), "no manifest", cfg)
    assert record["outputs"]["test_probs.csv"]["sha256"] == provenance.sha256(layout.blend_test_probs(cfg, "b"))
    assert json.loads((layout.blend_dir(cfg, "b") / "blend.json").read_text())["test_probs"]["holds"] == "probabilities"


def test_pseudo_with_a_threshold_writes_exactly_the_rows_at_or_above_it_with_their_argmax_labels(tmp_path):
    cfg = hand_blend(tmp_path)
    summary = run_pseudo(cfg, "b", threshold=0.75)
    table = pd.read_csv(layout.pseudo_csv(cfg, "b"), dtype=str)
    assert list(table.columns) == ["image_id", "label"]
    assert table.values.tolist() == [["t0", "ant"], ["t2", "bee"], ["t4", "bee"], ["t6", "cow"]]
    assert summary["per_class"] == {"ant": 1, "bee": 2, "cow": 1} and summary["rows"] == 4
    assert summary["lowest_confidence_kept"] == {"ant": 0.75, "bee": 0.875, "cow": 0.75}
    assert json.loads(layout.pseudo_json(layout.pseudo_csv(cfg, "b")).read_text()) == summary
    report = (layout.pseudo_dir(cfg, "b") / "report.md").read_text()
    assert "| bee | 3 | 2 | 0.8750 |" in report  # predicted, added, lowest confidence added


def test_pseudo_top_fraction_soft_writes_each_classes_most_confident_half_with_its_probabilities(tmp_path):
    cfg = hand_blend(tmp_path)
    run_pseudo(cfg, "b", top_fraction=0.5, soft=True, name="half")
    table = pd.read_csv(layout.pseudo_csv(cfg, "half"), dtype={"image_id": str})
    # ant t0 .75, t1 .5, t7 .375 -> 2; bee t4 .9375, t2 .875, t5 .5 -> 2; cow t6 .75, t3 .5 -> 1.
    assert table["image_id"].tolist() == ["t0", "t1", "t2", "t4", "t6"]
    assert table["label"].tolist() == ["ant", "ant", "bee", "bee", "cow"]
    assert np.array_equal(table[HAND].to_numpy(), TEST_PROBS[[0, 1, 2, 4, 6]])


def test_pseudo_writes_a_manifest_tied_to_the_blend_that_goes_stale_with_it(tmp_path):
    cfg = hand_blend(tmp_path)
    run_pseudo(cfg, "b", threshold=0.75)
    manifest = layout.pseudo_manifest(layout.pseudo_csv(cfg, "b"))
    record = provenance.verify(manifest, "no manifest", cfg)
    assert record["command"] == f"medal pseudo -c {tmp_path / 'hand.yaml'} --from b --threshold 0.75 --name b"
    assert record["inputs"]["blend_b/test_probs.csv"]["manifest"] == "../blend_b/manifest.json"
    assert set(record["outputs"]) == {"pseudo.csv", "pseudo.json"}
    write_member(cfg, np.full((12, 3), 1 / 3), TEST_PROBS[::-1].copy())  # 'm' re-inferred since
    assert "changed since submission 'b' was blended" in provenance.stale_reason(manifest, cfg)


def test_pseudo_refuses_a_stale_blend_naming_the_commands_to_run(tmp_path):
    cfg = hand_blend(tmp_path)
    write_member(cfg, np.full((12, 3), 1 / 3), TEST_PROBS[::-1].copy())  # 'm' re-inferred after the blend
    with pytest.raises(provenance.StaleError, match=r"blend 'b' is not current: m/oof_tta.csv changed.*"
                                                    r"`medal blend -c \S+ m --name b`, then `medal pseudo"):
        run_pseudo(cfg, "b", threshold=0.75)
    assert not layout.pseudo_csv(cfg, "b").exists()


def test_pseudo_refuses_a_blend_that_was_never_made(tmp_path):
    cfg = hand_blend(tmp_path)
    with pytest.raises(provenance.StaleError, match=r"no blend 'other'.*`medal blend -c \S+ EXP ... --name other`"):
        run_pseudo(cfg, "other", threshold=0.75)


def test_a_threshold_no_row_reaches_is_refused_and_writes_nothing(tmp_path):
    cfg = hand_blend(tmp_path)
    with pytest.raises(ValueError, match=r"no test row .* at least 0.99 \(the highest is 0.9375\)"):
        run_pseudo(cfg, "b", threshold=0.99)
    assert not layout.pseudo_csv(cfg, "b").exists()


def test_pseudo_on_the_command_line_prints_the_table_and_refuses_two_rules(tmp_path, capsys):
    from medal.cli import main

    cfg = hand_blend(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["pseudo", "-c", str(tmp_path / "hand.yaml"), "--from", "b", "--top-fraction", "0.5"]) == 0
    assert out.getvalue().strip() == str(layout.pseudo_csv(cfg, "b"))
    with pytest.raises(SystemExit):
        main(["pseudo", "-c", str(tmp_path / "hand.yaml"), "--from", "b", "--threshold", "0.5", "--top-fraction", "0.5"])
    assert "not allowed with argument" in capsys.readouterr().err


# Training: pseudo rows train in every fold and validate in none.

PSEUDO_IDS = ["p0", "p1", "p2", "p3"]
PSEUDO_LABELS = ["vertical", "diagonal", "horizontal", "vertical"]
# Soft rows: distributions over CLASSES (diagonal, horizontal, vertical).
PSEUDO_SOFT = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.25, 0.5, 0.25], [0.0, 0.0, 1.0]])


@pytest.fixture
def toy(tmp_path):
    """The toy competition with three folds, four test images and a hard pseudo-label table over them."""
    config = make_toy(tmp_path, per_class=6, size=16, n_folds=3)
    (tmp_path / "toy" / "test").mkdir()
    for i, image_id in enumerate(PSEUDO_IDS):
        cv2.imwrite(str(tmp_path / "toy" / "test" / f"{image_id}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    table = tmp_path / "pseudo.csv"
    pd.DataFrame({"image_id": PSEUDO_IDS, "label": PSEUDO_LABELS}).to_csv(table, index=False)
    return config, table


def soft_table(path) -> None:
    pd.concat([pd.DataFrame({"image_id": PSEUDO_IDS, "label": PSEUDO_LABELS}),
               pd.DataFrame(PSEUDO_SOFT, columns=CLASSES)], axis=1).to_csv(path, index=False)


def test_pseudo_rows_train_in_every_fold_and_never_validate(toy):
    config, table = toy
    cfg = toy_cfg(config, f"train.pseudo_labels={table}")
    folds = read_folds(cfg)
    classes = class_names(folds["label"])
    test_paths = [cfg.data.root / "test" / f"{i}.png" for i in PSEUDO_IDS]
    for k in range(3):
        data = split_fold(cfg, folds, classes, k)
        held = folds[folds["fold"] == k]
        assert data.valid_ids == held["image_id"].tolist()  # exactly the fold's rows, nothing else
        assert data.valid_paths == [cfg.data.root / "train" / f"{i}.png" for i in held["image_id"]]
        real = folds[folds["fold"] != k]["image_id"]
        assert data.train_paths == [cfg.data.root / "train" / f"{i}.png" for i in real] + test_paths
        assert data.train_targets[-4:].tolist() == [classes.index(c) for c in PSEUDO_LABELS]
        assert data.pseudo_rows == 4 and data.train_soft is None


def test_without_the_key_a_fold_is_its_real_rows_only(toy):
    config, _ = toy
    cfg = toy_cfg(config)
    folds = read_folds(cfg)
    data = split_fold(cfg, folds, class_names(folds["label"]), 0)
    assert len(data.train_paths) == 12 and data.pseudo_rows == 0


def test_a_soft_table_reaches_the_loss_as_its_probability_vectors(toy):
    config, table = toy
    soft_table(table)
    cfg = toy_cfg(config, f"train.pseudo_labels={table}", "train.batch_size=8", "train.label_smoothing=0.1")
    trainer = make_trainer(cfg, fold=0)
    assert len(trainer.data.train_paths) == 16 and trainer.data.pseudo_rows == 4
    seen: dict[int, torch.Tensor] = {}
    forward_backward, per_sample = trainer._forward_backward, trainer.criterion.per_sample
    batch: list[torch.Tensor] = []

    def record_batch(images, labels, group, indices=None):
        batch[:] = [indices]
        return forward_backward(images, labels, group, indices)

    def record_targets(logits, target):
        seen.update({int(i): row for i, row in zip(batch[0], target)})
        return per_sample(logits, target)

    trainer._forward_backward, trainer.criterion.per_sample = record_batch, record_targets
    trainer._enter_stage(0)
    trainer._train_epoch(0)
    assert sorted(seen) == list(range(16))  # every real and every pseudo row went through the loss
    for row, probs in enumerate(PSEUDO_SOFT):
        assert torch.allclose(seen[12 + row], torch.tensor(0.9 * probs + 0.1 / 3, dtype=torch.float32))
    real = trainer.data.train_targets[0]
    assert torch.allclose(seen[0], 0.9 * F.one_hot(torch.tensor(real), 3).float() + 0.1 / 3)


def test_soft_targets_of_one_hot_rows_are_what_timms_mixup_makes_of_their_labels():
    images, labels = torch.rand(8, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    for mixup in ({"mixup_alpha": 1.0}, {"cutmix_alpha": 1.0}):
        criterion = Criterion(TrainConfig(label_smoothing=0.1, mixup=mixup), 4)
        np.random.seed(5)
        by_label = criterion.prepare(images.clone(), labels)
        np.random.seed(5)
        by_vector = criterion.prepare(images.clone(), labels, F.one_hot(labels, 4).float())
        assert torch.equal(by_label[0], by_vector[0]) and torch.allclose(by_label[1], by_vector[1])
        assert not torch.equal(by_label[0], images)  # mixed


def test_mixup_mixes_soft_targets_with_the_lambda_it_mixes_the_images_with():
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4]])
    np.random.seed(1)
    mixed, target = Criterion(TrainConfig(label_smoothing=0.0, mixup={"mixup_alpha": 1.0}), 3).prepare(
        images.clone(), labels, soft)
    lam = ((mixed - images.flip(0)) / (images - images.flip(0)))[0].mean().item()
    assert torch.allclose(target, lam * soft + (1 - lam) * soft.flip(0), atol=1e-5)


def test_a_soft_table_whose_rows_are_not_distributions_is_refused_naming_the_row(toy):
    config, table = toy
    soft_table(table)
    frame = pd.read_csv(table)
    frame.loc[2, "vertical"] = 0.9  # the row of p2 now sums to 1.65
    frame.to_csv(table, index=False)
    cfg = toy_cfg(config, f"train.pseudo_labels={table}")
    folds = read_folds(cfg)
    with pytest.raises(ValueError, match=r"not probability distributions.*'p2' \(row 4, sum 1.65\)"):
        split_fold(cfg, folds, class_names(folds["label"]), 0)


def test_a_pseudo_id_without_a_test_image_is_refused_naming_it(toy):
    config, table = toy
    pd.DataFrame({"image_id": ["p0", "nope"], "label": ["vertical", "diagonal"]}).to_csv(table, index=False)
    cfg = toy_cfg(config, f"train.pseudo_labels={table}")
    folds = read_folds(cfg)
    with pytest.raises(FileNotFoundError, match=r"id 'nope' \(row 3\)"):
        split_fold(cfg, folds, class_names(folds["label"]), 0)


def test_a_trained_fold_is_tied_to_the_tables_content_and_the_report_counts_its_rows(toy, caplog):
    from medal.infer.checks import comparable
    from medal.modeling.checkpoint import recipe
    from medal.report.experiment import experiment_document

    config, table = toy
    cfg = toy_cfg(config, f"train.pseudo_labels={table}")
    with caplog.at_level(logging.INFO, logger="medal"):
        run_train(cfg, fold=0)
    assert "+4 pseudo-labelled rows (train only)" in caplog.text
    assert fold_status(cfg, 0, training_settings(cfg)).kind == COMPLETE
    record = provenance.read_manifest(layout.fold_manifest(cfg, 0))
    assert record["settings"]["pseudo_sha256"] == provenance.sha256(table)
    assert comparable(record["settings"]) == comparable(recipe(cfg))  # infer predicts with it all the same
    page = experiment_document(cfg).markdown()
    assert "**4** pseudo-labelled test rows" in page and "| vertical | 2 |" in page and "| diagonal | 1 |" in page

    pd.DataFrame({"image_id": PSEUDO_IDS[:3], "label": PSEUDO_LABELS[:3]}).to_csv(table, index=False)
    status = fold_status(cfg, 0, training_settings(cfg))
    assert status.kind == STALE and "pseudo_sha256" in status.reason
    with pytest.raises(provenance.StaleError, match="fold 0: it was trained with pseudo_sha256"):
        run_train(cfg, fold=0)
