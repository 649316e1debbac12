"""Prediction files: id, extra columns, then one probability column per class; checked when read."""
from __future__ import annotations

import numpy as np
import pytest

from medal.core.io import write_csv
from medal.core.predictions import prediction_frame, read_predictions

CLASSES = ["a", "b"]


def test_prediction_frame_lays_out_id_extras_then_classes():
    frame = prediction_frame("image_id", ["x", "y"], CLASSES, np.array([[0.1, 0.9], [0.6, 0.4]]), fold=[0, 1])
    assert list(frame.columns) == ["image_id", "fold", "a", "b"]
    assert frame.to_dict("list") == {"image_id": ["x", "y"], "fold": [0, 1], "a": [0.1, 0.6], "b": [0.9, 0.4]}


def test_prediction_frame_accepts_ids_from_a_series_with_another_index():
    import pandas as pd

    ids = pd.Series(["x", "y"], index=[5, 9])
    frame = prediction_frame("image_id", ids, CLASSES, np.array([[0.1, 0.9], [0.6, 0.4]]))
    assert frame["image_id"].tolist() == ["x", "y"] and frame["a"].tolist() == [0.1, 0.6]


@pytest.mark.parametrize("classes", [["fold", "b"], ["target", "b"], ["image_id", "b"]])
def test_class_names_that_clash_with_file_columns_are_refused(classes):
    with pytest.raises(ValueError, match="clash"):
        prediction_frame("image_id", ["x"], classes, np.array([[0.5, 0.5]]))


def test_read_predictions_refuses_missing_probabilities_naming_the_ids(tmp_path):
    path = tmp_path / "p.csv"
    write_csv(path, prediction_frame("image_id", ["x", "y"], CLASSES, np.array([[0.5, 0.5], [np.nan, 1.0]])))
    with pytest.raises(ValueError, match=r"missing or infinite probabilities, e.g. for ids \['y'\]"):
        read_predictions(path, "image_id", CLASSES, "OOF")


def test_read_predictions_refuses_repeated_ids(tmp_path):
    path = tmp_path / "p.csv"
    write_csv(path, prediction_frame("image_id", ["x", "x"], CLASSES, np.array([[0.5, 0.5], [0.2, 0.8]])))
    with pytest.raises(ValueError, match=r"repeats ids \['x'\]"):
        read_predictions(path, "image_id", CLASSES, "OOF")


def test_read_predictions_refuses_a_missing_class_column(tmp_path):
    path = tmp_path / "p.csv"
    write_csv(path, prediction_frame("image_id", ["x"], ["a"], np.array([[1.0]])))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['b'\]"):
        read_predictions(path, "image_id", CLASSES, "OOF")
