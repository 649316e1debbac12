"""The experiments a blend reads: each one's OOF and test predictions, aligned to folds.csv and the sample
submission, and refused when their ids, targets or folds do not match."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medal.blend.methods import pearson
from medal.core import layout
from medal.core.config import Config
from medal.core.predictions import read_predictions


@dataclass
class Member:
    """One experiment's predictions, aligned to the folds.csv id order and the sample's test ids."""
    name: str
    oof: np.ndarray
    test: np.ndarray
    tta: dict | None = None  # the experiment's tta.json, when infer ran


def load_member(cfg: Config, name: str, table: pd.DataFrame, classes: list[str], test_ids: list[str]) -> Member:
    """Read an experiment's OOF (after TTA when present) and test predictions; refuse any id or target mismatch."""
    id_col = cfg.data.id_col
    oof_path = layout.oof_tta_csv(cfg, name)
    if not oof_path.is_file():
        oof_path = layout.oof_csv(cfg, name)
    if not oof_path.is_file():
        raise FileNotFoundError(f"experiment {name!r} has no OOF file in {oof_path.parent}: run `medal train` and "
                                "`medal infer` for it")
    oof = read_predictions(oof_path, id_col, classes, f"OOF of {name!r}").set_index(id_col)
    _check_same_rows(name, oof, table.set_index(id_col)[[cfg.data.label_col, "fold"]], classes)
    test = read_predictions(layout.test_pred_csv(cfg, name), id_col, classes, f"test predictions of {name!r}").set_index(id_col)
    missing = sorted(set(test_ids) - set(test.index))
    if missing or len(test) != len(test_ids):
        raise ValueError(f"test predictions of {name!r} do not cover the sample submission's ids: missing {missing[:5]}")
    tta_path = layout.tta_json(cfg, name)
    tta = json.loads(tta_path.read_text()) if tta_path.is_file() else None
    return Member(name, oof.loc[table[id_col], classes].to_numpy(), test.loc[test_ids, classes].to_numpy(), tta)


def _check_same_rows(name: str, oof: pd.DataFrame, folds: pd.DataFrame, classes: list[str]) -> None:
    missing, extra = folds.index.difference(oof.index), oof.index.difference(folds.index)
    if len(missing) or len(extra):
        raise ValueError(f"OOF of {name!r} does not cover folds.csv: missing ids {list(missing[:5])}, "
                         f"unknown ids {list(extra[:5])}")
    aligned = oof.loc[folds.index]
    codes = aligned["target"].to_numpy(dtype=np.int64)
    if ((codes < 0) | (codes >= len(classes))).any():
        bad = folds.index[(codes < 0) | (codes >= len(classes))]
        raise ValueError(f"OOF of {name!r} has target indices outside 0..{len(classes) - 1} for ids {list(bad[:5])}")
    target_names = np.asarray(classes)[codes]
    for column, expected, got in (("target", folds.iloc[:, 0].to_numpy(), target_names),  # column 0 is the label
                                  ("fold", folds["fold"].to_numpy(), aligned["fold"].to_numpy())):
        bad = folds.index[expected != got]
        if len(bad):
            raise ValueError(f"OOF of {name!r} has a different {column} than folds.csv for ids {list(bad[:5])}: "
                             f"it was made from other folds; retrain it or re-run `medal folds` consistently")


def correlation_matrix(members: list[Member]) -> pd.DataFrame:
    """Pearson correlation of the members' OOF probabilities, over every row and class."""
    names = [m.name for m in members]
    return pd.DataFrame(pearson(np.stack([m.oof for m in members])), index=names, columns=names)
