"""blend: compare experiments on OOF, combine them, write and check the submission."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from medal.config import Config, config_snapshot
from medal.data import class_names, read_folds, read_sample_submission
from medal.io import write_csv, write_json, write_text
from medal.log import get_logger
from medal.metrics import score
from medal.predictions import read_predictions
from medal.submission import check_submission, make_submission


@dataclass
class Member:
    """One experiment's predictions, aligned to the folds.csv id order and the sample's test ids."""
    name: str
    oof: np.ndarray
    test: np.ndarray


def load_member(cfg: Config, name: str, table: pd.DataFrame, classes: list[str], test_ids: list[str]) -> Member:
    """Read an experiment's OOF (after TTA when present) and test predictions; refuse any id or target mismatch."""
    id_col = cfg.data.id_col
    folder = cfg.data_dir / name
    oof_path = folder / "oof_tta.csv" if (folder / "oof_tta.csv").is_file() else folder / "oof.csv"
    if not oof_path.is_file():
        raise FileNotFoundError(f"experiment {name!r} has no OOF file in {folder}: run `medal train` and `medal infer` for it")
    oof = read_predictions(oof_path, id_col, classes, f"OOF of {name!r}").set_index(id_col)
    _check_same_rows(name, oof, table.set_index(id_col)[[cfg.data.label_col, "fold"]], classes)
    test = read_predictions(folder / "test_pred.csv", id_col, classes, f"test predictions of {name!r}").set_index(id_col)
    missing = sorted(set(test_ids) - set(test.index))
    if missing or len(test) != len(test_ids):
        raise ValueError(f"test predictions of {name!r} do not cover the sample submission's ids: missing {missing[:5]}")
    return Member(name, oof.loc[table[id_col], classes].to_numpy(), test.loc[test_ids, classes].to_numpy())


def _check_same_rows(name: str, oof: pd.DataFrame, folds: pd.DataFrame, classes: list[str]) -> None:
    missing, extra = folds.index.difference(oof.index), oof.index.difference(folds.index)
    if len(missing) or len(extra):
        raise ValueError(f"OOF of {name!r} does not cover folds.csv: missing ids {list(missing[:5])}, "
                         f"unknown ids {list(extra[:5])}")
    aligned = oof.loc[folds.index]
    target_names = np.asarray(classes)[aligned["target"].to_numpy(dtype=np.int64)]
    for column, expected, got in (("target", folds.iloc[:, 0].to_numpy(), target_names),  # column 0 is the label
                                  ("fold", folds["fold"].to_numpy(), aligned["fold"].to_numpy())):
        bad = folds.index[expected != got]
        if len(bad):
            raise ValueError(f"OOF of {name!r} has a different {column} than folds.csv for ids {list(bad[:5])}: "
                             f"it was made from other folds; retrain it or re-run `medal folds` consistently")


def mean_blend(probs: list[np.ndarray]) -> np.ndarray:
    return np.mean(probs, axis=0)


# Blend methods by config name: a list of members' probability arrays -> one array.
METHODS: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {"mean": mean_blend}


def correlation_matrix(members: list[Member]) -> pd.DataFrame:
    """Pearson correlation of the members' OOF probabilities, over every row and class."""
    flat = np.stack([m.oof.ravel() for m in members])
    names = [m.name for m in members]
    return pd.DataFrame(np.corrcoef(flat) if len(members) > 1 else np.ones((1, 1)), index=names, columns=names)


def run_blend(cfg: Config, experiments: list[str] | None = None, submission_name: str | None = None) -> dict:
    """Blend the experiments; write <submission_dir>/<name>.csv, checked, and a report beside the outputs."""
    log = get_logger()
    names = experiments or cfg.blend.experiments
    if not names:
        raise ValueError("no experiments to blend: pass their names (medal blend -c CFG EXP [EXP ...]) or set blend.experiments")
    submission_name = submission_name or cfg.blend.submission_name
    d = cfg.data
    table = read_folds(cfg)[[d.id_col, d.label_col, "fold"]]
    classes = class_names(table[d.label_col])
    targets = table[d.label_col].map({c: i for i, c in enumerate(classes)}).to_numpy()
    sample = read_sample_submission(cfg)
    test_ids = sample[d.id_col].tolist()
    members = [load_member(cfg, name, table, classes, test_ids) for name in names]

    cv = {m.name: score(cfg.metric, targets, m.oof) for m in members}
    per_fold = {m.name: [score(cfg.metric, targets[table["fold"] == k], m.oof[(table["fold"] == k).to_numpy()])
                         for k in sorted(table["fold"].unique())] for m in members}
    corr = correlation_matrix(members)
    combine = METHODS[cfg.blend.method]
    blend_cv = score(cfg.metric, targets, combine([m.oof for m in members]))
    cv_table = pd.DataFrame({"cv": cv, "fold_std": {k: float(np.std(v)) for k, v in per_fold.items()}})
    log.info("per-model OOF %s:\n%s", cfg.metric, cv_table.to_string(float_format="%.4f"))
    log.info("OOF correlation (Pearson):\n%s", corr.to_string(float_format="%.3f"))
    log.info("blend (%s of %d) OOF %s = %.4f", cfg.blend.method, len(members), cfg.metric, blend_cv)

    path = cfg.blend.submission_dir / f"{submission_name}.csv"
    write_csv(path, make_submission(sample, test_ids, combine([m.test for m in members]), d.id_col, d.label_col, classes))
    check_submission(path, d.root / d.sample_submission, d.id_col, d.label_col, classes)
    log.info("submission written and checked: %s", path)
    report = {"metric": cfg.metric, "method": cfg.blend.method, "members": names, "cv": cv, "per_fold": per_fold,
              "blend_cv": blend_cv, "correlation": corr.to_dict(), "submission": str(path)}
    _write_report(cfg, submission_name, report, cv_table, corr)
    return report


def _write_report(cfg: Config, name: str, report: dict, cv_table: pd.DataFrame, corr: pd.DataFrame) -> None:
    folder = cfg.data_dir / f"blend_{name}"
    write_json(folder / "blend.json", report)
    write_csv(folder / "correlation.csv", corr.reset_index(names="model"))
    write_text(folder / "config.yaml", config_snapshot(cfg))
    write_text(folder / "report.md", "\n".join([
        f"# blend {name}", "", f"Metric: {report['metric']}. Method: {report['method']}.", "",
        "## Models (OOF)", "", "```", cv_table.to_string(float_format="%.4f"), "```", "",
        "## OOF correlation (Pearson)", "", "```", corr.to_string(float_format="%.3f"), "```", "",
        f"Blend OOF {report['metric']}: **{report['blend_cv']:.4f}**", "", f"Submission: `{report['submission']}`", ""]))
