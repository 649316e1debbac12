"""Submission files: write one in the sample's format, check it, and score it against a solution."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medal.core.io import read_csv
from medal.core.metrics import reads_scores, score
from medal.core.tables import class_index


class SubmissionError(ValueError):
    """A submission that Kaggle would reject or mis-score; the message lists every problem."""


# A probability row may miss a sum of 1 by this much: float32 softmax and values rounded in the CSV.
SUM_TOLERANCE = 1e-3


def not_probabilities(values: np.ndarray) -> np.ndarray:
    """Indices of the rows of `values` (N x C) that are not distributions: a negative value, or a sum off 1
    by more than SUM_TOLERANCE."""
    return np.flatnonzero((values < 0).any(axis=1) | (np.abs(values.sum(axis=1) - 1.0) > SUM_TOLERANCE))


def submission_format(sample: pd.DataFrame, id_col: str, label_col: str, classes: list[str]) -> str:
    """'label' for one predicted class per row, 'probs' for one probability column per class."""
    columns = [c for c in sample.columns if c != id_col]
    if columns == [label_col]:
        return "label"
    if sorted(columns) == sorted(classes):
        return "probs"
    raise SubmissionError(f"sample submission columns {list(sample.columns)} are neither [{id_col}, {label_col}] "
                          f"nor {id_col} plus one column per class {classes}")


def make_submission(sample: pd.DataFrame, test_ids: list[str], probs: np.ndarray, id_col: str,
                    label_col: str, classes: list[str]) -> pd.DataFrame:
    """The submission frame in the sample's column order and id order."""
    order = pd.Series(np.arange(len(test_ids)), index=test_ids).reindex(sample[id_col])
    if order.isna().any():
        raise SubmissionError(f"no prediction for sample ids {order[order.isna()].index[:5].tolist()}")
    probs = probs[order.to_numpy(dtype=np.int64)]
    frame = pd.DataFrame({id_col: sample[id_col].to_numpy()})
    if submission_format(sample, id_col, label_col, classes) == "label":
        frame[label_col] = np.asarray(classes)[probs.argmax(axis=1)]
    else:
        for j, name in enumerate(classes):
            frame[name] = probs[:, j]
        frame = frame[list(sample.columns)]
    return frame


def check_submission(path: Path, sample_path: Path, id_col: str, label_col: str, classes: list[str],
                     metric: str | None = None) -> pd.DataFrame:
    """Raise SubmissionError naming every problem of `path` against the sample; return it when fine. With a
    `metric` that reads probabilities (all but roc_auc), a probability-format submission's rows must sum to 1."""
    sample = _read(sample_path, "sample submission", [id_col], [id_col])
    sub = _read(path, "submission", [], [id_col, label_col])
    problems = []
    if list(sub.columns) != list(sample.columns):
        problems.append(f"columns are {list(sub.columns)}, the sample has {list(sample.columns)}")
    elif sub[id_col].tolist() != sample[id_col].tolist():
        missing = sorted(set(sample[id_col]) - set(sub[id_col]))
        extra = sorted(set(sub[id_col]) - set(sample[id_col]))
        detail = f"missing ids {missing[:5]}, unknown ids {extra[:5]}" if missing or extra else "same ids, different order"
        problems.append(f"ids differ from the sample ({len(sub)} rows against {len(sample)}): {detail}")
    if sub.isna().any().any():
        bad = sub.columns[sub.isna().any()].tolist()
        problems.append(f"missing values in column(s) {bad}, first at row {int(sub.isna().any(axis=1).argmax()) + 2}")
    if not problems:
        problems += _check_values(sub, sample, id_col, label_col, classes, metric)
    if problems:
        raise SubmissionError(f"submission {path} is invalid:\n  " + "\n  ".join(problems))
    return sub


def _read(path: Path, what: str, required: list[str], str_cols: list[str]) -> pd.DataFrame:
    """read_csv, with an empty or unparsable file reported as a SubmissionError naming it."""
    try:
        return read_csv(path, what, required, str_cols)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{what} {path} is not a readable CSV: {str(err).strip()}") from None


def _check_values(sub: pd.DataFrame, sample: pd.DataFrame, id_col: str, label_col: str, classes: list[str],
                  metric: str | None) -> list[str]:
    if submission_format(sample, id_col, label_col, classes) == "label":
        unknown = sorted(set(sub[label_col]) - set(classes))
        return [f"labels {unknown[:5]} are not classes {classes}"] if unknown else []
    values = sub[classes].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        return ["probability columns hold non-numeric, NaN or infinite values"]
    if (values < 0).any() or (values > 1).any():
        return [f"probabilities outside [0, 1]: min {values.min():.4g}, max {values.max():.4g}"]
    bad = not_probabilities(values) if metric is not None and not reads_scores(metric) else []
    if len(bad):
        # Ranks or scores in probability columns: a metric that reads probabilities would mis-score them.
        first = bad[0]
        problem = (f"{len(bad)} of {len(values)} rows do not sum to 1, which metric {metric!r} needs (it reads "
                   f"probabilities); the first is row {first + 2} (id {sub[id_col].iloc[first]!r}), which sums to "
                   f"{values[first].sum():.6g}")
        return [problem]
    return []


def score_submission(path: Path, solution_path: Path, id_col: str, label_col: str, classes: list[str], metric: str) -> float:
    """Score a label- or probability-format submission against a solution file with `label_col`."""
    sub = _read(path, "submission", [id_col], [id_col, label_col])
    truth = _read(solution_path, "solution", [id_col, label_col], [id_col, label_col])
    if label_col not in sub.columns and set(classes) - set(sub.columns):
        raise SubmissionError(f"submission {path} has neither a {label_col!r} column nor the class columns "
                              f"{sorted(set(classes) - set(sub.columns))}")
    merged = truth.merge(sub, on=id_col, how="left", suffixes=("_true", ""), validate="one_to_one")
    index = class_index(classes)
    targets = merged[f"{label_col}_true" if label_col in sub.columns else label_col].map(index)
    if targets.isna().any():
        raise SubmissionError(f"solution {solution_path} has labels outside {classes}")
    if label_col in sub.columns:
        predicted = merged[label_col].map(index)
        if predicted.isna().any():
            raise SubmissionError(f"submission {path} lacks a known label for ids {merged.loc[predicted.isna(), id_col].head(5).tolist()}")
        probs = np.eye(len(classes))[predicted.to_numpy(dtype=np.int64)]
    else:
        probs = merged[classes].to_numpy(dtype=np.float64)
        if not np.isfinite(probs).all():
            raise SubmissionError(f"submission {path} lacks probabilities for some solution ids")
    return score(metric, targets.to_numpy(dtype=np.int64), probs)
