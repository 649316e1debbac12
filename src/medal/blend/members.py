"""The experiments a blend reads: each one's OOF and test predictions, aligned to folds.csv and the sample
submission. Refused unless infer's manifest says they are the files infer wrote together, from the current
checkpoints, folds.csv and sample submission (medal.core.provenance), and when their ids, targets or folds
do not match."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medal.blend.methods import pearson
from medal.core import layout, provenance
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
    """Read an experiment's OOF (after TTA) and test predictions, once its infer manifest vouches for them;
    refuse any id or target mismatch."""
    id_col = cfg.data.id_col
    require_current_predictions(cfg, name)
    oof_path = layout.oof_tta_csv(cfg, name)
    oof = read_predictions(oof_path, id_col, classes, f"OOF of {name!r}").set_index(id_col)
    _check_same_rows(name, oof, table.set_index(id_col)[[cfg.data.label_col, "fold"]], classes)
    test = read_predictions(layout.test_pred_csv(cfg, name), id_col, classes, f"test predictions of {name!r}").set_index(id_col)
    missing = sorted(set(test_ids) - set(test.index))
    if missing or len(test) != len(test_ids):
        raise ValueError(f"test predictions of {name!r} do not cover the sample submission's ids: missing {missing[:5]}")
    tta_path = layout.tta_json(cfg, name)
    tta = json.loads(tta_path.read_text()) if tta_path.is_file() else None
    return Member(name, oof.loc[table[id_col], classes].to_numpy(), test.loc[test_ids, classes].to_numpy(), tta)


def require_current_predictions(cfg: Config, name: str) -> dict:
    """The experiment's infer manifest, verified up the chain: its files are the ones infer wrote together,
    and its checkpoints, folds.csv and sample submission have not changed since."""
    folder = cfg.data_dir / name
    if not folder.is_dir():
        raise FileNotFoundError(f"experiment {name!r} does not exist ({folder}): train it and run infer for it")
    if layout.oof_tta_csv(cfg, name).is_file() or layout.test_pred_csv(cfg, name).is_file():
        missing = (f"the predictions of {name!r} have no manifest ({layout.infer_manifest(cfg, name)}): infer was killed "
                   f"before it finished, or they were made by an older medal: run `medal infer` for it again "
                   f"(its config is {folder / 'config.yaml'})")
    else:
        missing = (f"experiment {name!r} has no predictions in {folder}: run `medal infer` for it (its config is "
                   f"{folder / 'config.yaml'})")
    return provenance.verify(layout.infer_manifest(cfg, name), missing, cfg)


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
