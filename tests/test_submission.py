"""Submission files: made in the sample's format, checked like Kaggle would, scored against a solution."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medal.core.submission import (
    SubmissionError,
    check_submission,
    make_submission,
    score_submission,
    submission_format,
)

CLASSES = ["cat", "dog", "eel"]
IDS = ["img_3", "img_1", "img_2", "img_0"]  # not sorted: order must come from the sample
TRUTH = ["dog", "cat", "eel", "dog"]


def write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def label_sample(tmp_path) -> Path:
    return write(tmp_path / "sample_submission.csv", pd.DataFrame({"image_id": IDS, "label": "cat"}))


@pytest.fixture
def probs_sample(tmp_path) -> Path:
    return write(tmp_path / "sample_probs.csv", pd.DataFrame({"image_id": IDS, **{c: 1 / 3 for c in CLASSES}}))


@pytest.fixture
def solution(tmp_path) -> Path:
    return write(tmp_path / "solution.csv", pd.DataFrame({"image_id": IDS, "label": TRUTH}))


def good_labels() -> pd.DataFrame:
    return pd.DataFrame({"image_id": IDS, "label": TRUTH})


def good_probs() -> pd.DataFrame:
    onehot = np.eye(3)[[CLASSES.index(t) for t in TRUTH]] * 0.8 + 0.2 / 3
    return pd.DataFrame({"image_id": IDS, **{c: onehot[:, j] for j, c in enumerate(CLASSES)}})


def check(tmp_path, frame, sample) -> pd.DataFrame:
    return check_submission(write(tmp_path / "sub.csv", frame), sample, "image_id", "label", CLASSES)


def test_a_correct_label_submission_passes(tmp_path, label_sample):
    assert check(tmp_path, good_labels(), label_sample)["label"].tolist() == TRUTH


def test_a_correct_probability_submission_passes(tmp_path, probs_sample):
    assert len(check(tmp_path, good_probs(), probs_sample)) == len(IDS)


def test_wrong_columns_are_rejected(tmp_path, label_sample):
    with pytest.raises(SubmissionError, match=r"columns are \['image_id', 'prediction'\], the sample has \['image_id', 'label'\]"):
        check(tmp_path, good_labels().rename(columns={"label": "prediction"}), label_sample)


def test_a_missing_id_is_rejected_naming_it(tmp_path, label_sample):
    with pytest.raises(SubmissionError, match=r"\(3 rows against 4\): missing ids \['img_2'\], unknown ids \[\]"):
        check(tmp_path, good_labels().drop(index=2), label_sample)


def test_an_extra_id_is_rejected_naming_it(tmp_path, label_sample):
    extra = pd.concat([good_labels(), pd.DataFrame({"image_id": ["img_9"], "label": ["cat"]})])
    with pytest.raises(SubmissionError, match=r"missing ids \[\], unknown ids \['img_9'\]"):
        check(tmp_path, extra, label_sample)


def test_a_duplicated_id_in_place_of_another_is_rejected(tmp_path, label_sample):
    frame = good_labels()
    frame.loc[3, "image_id"] = "img_3"
    with pytest.raises(SubmissionError, match=r"missing ids \['img_0'\]"):
        check(tmp_path, frame, label_sample)


def test_reordered_ids_are_rejected(tmp_path, label_sample):
    with pytest.raises(SubmissionError, match="same ids, different order"):
        check(tmp_path, good_labels().iloc[::-1], label_sample)


def test_an_empty_label_is_rejected_naming_column_and_row(tmp_path, label_sample):
    frame = good_labels()
    frame.loc[1, "label"] = None
    with pytest.raises(SubmissionError, match=r"missing values in column\(s\) \['label'\], first at row 3"):
        check(tmp_path, frame, label_sample)


def test_a_nan_probability_is_rejected(tmp_path, probs_sample):
    frame = good_probs()
    frame.loc[0, "dog"] = np.nan
    with pytest.raises(SubmissionError, match=r"missing values in column\(s\) \['dog'\]"):
        check(tmp_path, frame, probs_sample)


def test_an_unknown_label_is_rejected_naming_it(tmp_path, label_sample):
    frame = good_labels()
    frame.loc[0, "label"] = "wolf"
    with pytest.raises(SubmissionError, match=r"labels \['wolf'\] are not classes"):
        check(tmp_path, frame, label_sample)


def test_a_probability_above_one_is_rejected(tmp_path, probs_sample):
    frame = good_probs()
    frame.loc[2, "eel"] = 1.5
    with pytest.raises(SubmissionError, match=r"probabilities outside \[0, 1\].*max 1\.5"):
        check(tmp_path, frame, probs_sample)


def test_a_negative_probability_is_rejected(tmp_path, probs_sample):
    frame = good_probs()
    frame.loc[2, "eel"] = -0.1
    with pytest.raises(SubmissionError, match=r"probabilities outside \[0, 1\].*min -0\.1"):
        check(tmp_path, frame, probs_sample)


def test_a_non_numeric_probability_is_rejected(tmp_path, probs_sample):
    frame = good_probs().astype({"cat": object})
    frame.loc[1, "cat"] = "high"
    with pytest.raises(SubmissionError, match="non-numeric"):
        check(tmp_path, frame, probs_sample)


def test_every_problem_is_listed_in_one_error(tmp_path, label_sample):
    frame = good_labels().drop(index=2)
    frame.loc[1, "label"] = None
    with pytest.raises(SubmissionError) as err:
        check(tmp_path, frame, label_sample)
    assert "missing ids ['img_2']" in str(err.value) and "missing values" in str(err.value)


def test_sample_format_is_recognised(label_sample, probs_sample):
    assert submission_format(pd.read_csv(label_sample), "image_id", "label", CLASSES) == "label"
    assert submission_format(pd.read_csv(probs_sample), "image_id", "label", CLASSES) == "probs"


def test_a_sample_of_neither_format_is_refused():
    sample = pd.DataFrame({"image_id": IDS, "cat": 0.5, "dog": 0.5})  # eel missing
    with pytest.raises(SubmissionError, match="neither"):
        submission_format(sample, "image_id", "label", CLASSES)


def test_make_submission_puts_predictions_in_the_samples_id_order(label_sample):
    test_ids = sorted(IDS)  # predictions in another order than the sample
    probs = np.eye(3)[[CLASSES.index(dict(zip(IDS, TRUTH))[i]) for i in test_ids]]
    frame = make_submission(pd.read_csv(label_sample, dtype=str), test_ids, probs, "image_id", "label", CLASSES)
    assert frame["image_id"].tolist() == IDS
    assert frame["label"].tolist() == TRUTH


def test_make_submission_writes_probability_columns_in_the_samples_order(tmp_path):
    sample = pd.DataFrame({"image_id": IDS, "eel": 0.0, "cat": 0.0, "dog": 0.0})
    probs = np.tile([0.2, 0.3, 0.5], (4, 1))  # cat, dog, eel
    frame = make_submission(sample, IDS, probs, "image_id", "label", CLASSES)
    assert list(frame.columns) == ["image_id", "eel", "cat", "dog"]
    assert frame.iloc[0, 1:].tolist() == [0.5, 0.2, 0.3]


def test_make_submission_refuses_a_sample_id_without_prediction(label_sample):
    with pytest.raises(SubmissionError, match=r"no prediction for sample ids \['img_0'\]"):
        make_submission(pd.read_csv(label_sample, dtype=str), IDS[:3], np.eye(3)[:3], "image_id", "label", CLASSES)


def test_the_solution_itself_scores_one(tmp_path, solution):
    assert score_submission(solution, solution, "image_id", "label", CLASSES, "accuracy") == 1.0


def test_k_wrong_labels_score_the_known_fraction(tmp_path, solution):
    frame = good_labels()
    frame.loc[[0, 2], "label"] = ["eel", "dog"]  # 2 of 4 wrong
    path = write(tmp_path / "sub.csv", frame)
    assert score_submission(path, solution, "image_id", "label", CLASSES, "accuracy") == pytest.approx(0.5)


def test_scoring_matches_rows_by_id_not_by_position(tmp_path, solution):
    path = write(tmp_path / "sub.csv", good_labels().iloc[::-1])
    assert score_submission(path, solution, "image_id", "label", CLASSES, "accuracy") == 1.0


def test_probability_submissions_are_scored_by_their_argmax(tmp_path, solution):
    frame = good_probs()
    frame.loc[0, CLASSES] = [0.1, 0.2, 0.7]  # img_3 is a dog: now wrong
    path = write(tmp_path / "sub.csv", frame)
    assert score_submission(path, solution, "image_id", "label", CLASSES, "accuracy") == pytest.approx(0.75)


def test_log_loss_of_a_probability_submission(tmp_path, solution):
    path = write(tmp_path / "sub.csv", good_probs())
    expected = -np.log(0.8 + 0.2 / 3)
    assert score_submission(path, solution, "image_id", "label", CLASSES, "log_loss") == pytest.approx(expected)


def test_a_submission_lacking_a_solution_id_cannot_be_scored(tmp_path, solution):
    path = write(tmp_path / "sub.csv", good_labels().iloc[1:])
    with pytest.raises(SubmissionError, match=r"lacks a known label for ids \['img_3'\]"):
        score_submission(path, solution, "image_id", "label", CLASSES, "accuracy")


def test_a_submission_with_an_unknown_label_cannot_be_scored(tmp_path, solution):
    frame = good_labels()
    frame.loc[1, "label"] = "wolf"
    path = write(tmp_path / "sub.csv", frame)
    with pytest.raises(SubmissionError, match=r"lacks a known label for ids \['img_1'\]"):
        score_submission(path, solution, "image_id", "label", CLASSES, "accuracy")


def test_a_submission_with_neither_a_label_nor_the_class_columns_cannot_be_scored(tmp_path, solution):
    # A SubmissionError (a ValueError) is what the CLI turns into one readable line; anything else is a traceback.
    path = write(tmp_path / "sub.csv", good_labels().rename(columns={"label": "prediction"}))
    with pytest.raises(SubmissionError):
        score_submission(path, solution, "image_id", "label", CLASSES, "accuracy")


def test_an_empty_file_is_rejected_naming_it(tmp_path, label_sample):
    path = tmp_path / "sub.csv"
    path.write_text("")
    with pytest.raises(SubmissionError, match=rf"submission {path} is not a readable CSV"):
        check_submission(path, label_sample, "image_id", "label", CLASSES)


def test_a_header_only_file_is_rejected_as_missing_every_id(tmp_path, label_sample):
    with pytest.raises(SubmissionError, match=r"\(0 rows against 4\): missing ids \['img_0', 'img_1', 'img_2', 'img_3'\]"):
        check(tmp_path, good_labels().iloc[:0], label_sample)


def test_an_infinite_probability_is_rejected(tmp_path, probs_sample):
    frame = good_probs()
    frame.loc[3, "cat"] = np.inf
    with pytest.raises(SubmissionError, match="NaN or infinite"):
        check(tmp_path, frame, probs_sample)


def test_probability_columns_in_another_order_are_rejected(tmp_path, probs_sample):
    with pytest.raises(SubmissionError, match=r"columns are \['image_id', 'eel', 'dog', 'cat'\]"):
        check(tmp_path, good_probs()[["image_id", "eel", "dog", "cat"]], probs_sample)


def test_a_repeated_column_is_rejected(tmp_path, label_sample):
    path = tmp_path / "sub.csv"
    path.write_text("image_id,label,label\n" + "".join(f"{i},{t},{t}\n" for i, t in zip(IDS, TRUTH)))
    with pytest.raises(SubmissionError, match=r"columns are \['image_id', 'label', 'label.1'\]"):
        check_submission(path, label_sample, "image_id", "label", CLASSES)


# Probability columns hold probabilities for a metric that reads them (issue 10: ranks were written instead).


def ranked_probs() -> pd.DataFrame:
    """Per-class ranks in [0, 1] in the probability columns: what a rank blend gives. Rows sum to 1.5..2.5."""
    ranks = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0], [0.5, 0.5, 0.5], [1.0, 1.0, 0.5]])
    return pd.DataFrame({"image_id": IDS, **{c: ranks[:, j] for j, c in enumerate(CLASSES)}})


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "f1_macro", "qwk"])
def test_rows_that_do_not_sum_to_one_are_refused_for_a_metric_that_reads_probabilities(tmp_path, probs_sample, metric):
    path = write(tmp_path / "sub.csv", ranked_probs())
    with pytest.raises(SubmissionError, match=rf"submission {path} is invalid:\n  4 of 4 rows do not sum to 1, which "
                                              rf"metric '{metric}' needs \(it reads probabilities\); the first is row 2 "
                                              r"\(id 'img_3'\), which sums to 1\.5$"):
        check_submission(path, probs_sample, "image_id", "label", CLASSES, metric=metric)


def test_the_first_bad_row_is_named_when_the_others_are_fine(tmp_path, probs_sample):
    frame = good_probs()
    frame.loc[2, CLASSES] = [0.6, 0.3, 0.3]
    with pytest.raises(SubmissionError, match=r"1 of 4 rows do not sum to 1.*row 4 \(id 'img_2'\), which sums to 1\.2"):
        check_submission(write(tmp_path / "sub.csv", frame), probs_sample, "image_id", "label", CLASSES, metric="accuracy")


def test_ranks_are_accepted_for_roc_auc_which_reads_scores(tmp_path, probs_sample):
    path = write(tmp_path / "sub.csv", ranked_probs())
    assert len(check_submission(path, probs_sample, "image_id", "label", CLASSES, metric="roc_auc")) == len(IDS)


def test_without_a_metric_row_sums_are_not_checked(tmp_path, probs_sample):
    # The old call (medal check-submission before it passes the metric) keeps its behaviour.
    assert len(check(tmp_path, ranked_probs(), probs_sample)) == len(IDS)


def test_rows_off_one_by_csv_rounding_pass(tmp_path, probs_sample):
    frame = good_probs().round(4)  # 0.7333 + 0.0667 + 0.0667 = 0.8667 + ...: sums off 1 by 1e-4
    assert (frame[CLASSES].sum(axis=1) - 1).abs().max() > 0
    assert len(check_submission(write(tmp_path / "sub.csv", frame), probs_sample, "image_id", "label", CLASSES,
                                metric="log_loss")) == len(IDS)


def test_a_label_submission_needs_no_row_sums(tmp_path, label_sample):
    path = write(tmp_path / "sub.csv", good_labels())
    assert check_submission(path, label_sample, "image_id", "label", CLASSES, metric="accuracy")["label"].tolist() == TRUTH
