"""Every fold strategy keeps every group whole in every fold column, repeats included.

Groups are rows with one folds.group_col value and the duplicate groups clean wrote to duplicates.csv.
The check here is the test's own (each group's rows share one fold in each column), on synthetic data
that is always present, so it does not lean on make_folds' internal assert.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_yaml

from medal.core import layout, provenance
from medal.core.config import Config, load_config
from medal.folds.run import STRATEGIES, run_folds

N_ROWS, N_PATIENTS, N_FOLDS, REPEATS = 48, 16, 3, 2
LABELS = {
    "stratified": lambda rng: rng.choice(["cat", "dog", "eel"], N_ROWS, p=[0.5, 0.3, 0.2]),
    "group": lambda rng: rng.choice(["cat", "dog"], N_ROWS),
    "stratified_group": lambda rng: rng.choice(["cat", "dog"], N_ROWS),
    "multilabel": lambda rng: [" ".join(t for t in ["haze", "road", "water"] if rng.random() < 0.4) or "clear"
                               for _ in range(N_ROWS)],
    "kfold": lambda rng: [f"{t:.3f}" for t in rng.lognormal(size=N_ROWS)],
}
# (strategy, folds.group_col): every strategy, with and without a group column where it may go without.
CASES = [(s, None) for s in STRATEGIES if s not in ("group", "stratified_group")] + [(s, "patient") for s in STRATEGIES]


def test_the_cases_cover_every_fold_strategy():
    assert {strategy for strategy, _ in CASES} == set(STRATEGIES) == set(LABELS)


def duplicate_groups(ids: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """Six disjoint groups of two or three random rows: across patients, classes and row order."""
    rows = rng.permutation(len(ids))
    groups, start = {}, 0
    for number in range(6):
        size = 2 + number % 2
        groups[f"g{number + 1:04d}"] = [ids[r] for r in rows[start:start + size]]
        start += size
    return groups


def write_competition(tmp_path, strategy: str, group_col: str | None, seed: int) -> tuple[Config, dict]:
    """clean.csv, duplicates.csv (as clean writes it, with a dropped row folds must skip) and clean's manifest."""
    rng = np.random.default_rng(seed)
    ids = [f"img{i:03d}" for i in range(N_ROWS)]
    table = pd.DataFrame({"image_id": ids, "label": LABELS[strategy](rng),
                          "patient": [f"p{i % N_PATIENTS:02d}" for i in rng.permutation(N_ROWS)]})
    groups = duplicate_groups(ids, rng)
    root = tmp_path / "comp"
    root.mkdir()
    overrides = [f"folds.strategy={strategy}", f"folds.n_folds={N_FOLDS}", f"folds.repeats={REPEATS}",
                 f"folds.seed={seed}"]
    overrides += [f"folds.group_col={group_col}"] if group_col else []
    overrides += ["data.label_sep=' '"] if strategy == "multilabel" else []
    cfg = load_config(write_yaml(tmp_path / "c.yaml", {"name": "x", "output_dir": str(tmp_path / "o"),
                                                        "data": {"root": str(root)}}), overrides)
    cfg.data_dir.mkdir(parents=True)
    table.to_csv(layout.clean_csv(cfg), index=False)
    label = dict(zip(table["image_id"], table["label"]))
    records = [(i, label[i], g, "near", "", False, False) for g, members in groups.items() for i in members]
    records.append(("gone_000", "cat", "g0001", "near", "", False, True))  # dropped by clean: not in clean.csv
    pd.DataFrame(records, columns=["image_id", "label", "group", "kind", "exact_group", "conflict", "dropped"]) \
        .to_csv(layout.duplicates_csv(cfg), index=False)
    provenance.write_manifest(layout.clean_manifest(cfg), cfg, "clean", made="clean.csv was made", settings={},
                              inputs=[], outputs=[layout.clean_csv(cfg), layout.duplicates_csv(cfg)])
    return cfg, groups


def split_groups(folds: pd.DataFrame, column: str, groups: dict[str, list[str]], group_col: str | None) -> list[str]:
    """The duplicate groups and group_col values whose rows fall in more than one fold of `column`."""
    fold_of = dict(zip(folds["image_id"], folds[column]))
    split = [g for g, members in groups.items() if len({fold_of[i] for i in members}) > 1]
    if group_col:
        per_value = folds.groupby(group_col)[column].nunique()
        split += per_value.index[per_value > 1].tolist()
    return split


@pytest.mark.parametrize("seed", [3, 11])
@pytest.mark.parametrize("strategy, group_col", CASES)
def test_every_fold_column_keeps_duplicate_groups_and_group_col_groups_whole(tmp_path, strategy, group_col, seed):
    cfg, groups = write_competition(tmp_path, strategy, group_col, seed)
    run_folds(cfg)
    folds = pd.read_csv(layout.folds_csv(cfg), dtype=str)
    columns = ["fold"] + [f"fold_s{r}" for r in range(1, REPEATS)]
    assert [c for c in folds.columns if c.startswith("fold")] == columns
    for column in columns:
        assert set(folds[column]) == {str(k) for k in range(N_FOLDS)}, column
        assert split_groups(folds, column, groups, group_col) == [], column


@pytest.mark.parametrize(("strategy", "seed", "same"), [("stratified_group", 11, True), ("stratified", 3, False)])
def test_a_repeat_column_that_repeats_an_earlier_split_is_reported(tmp_path, strategy, seed, same):
    # stratified_group over 16 patients at seed 11 gives fold_s1 the very split of fold (scikit-learn's
    # StratifiedGroupKFold shuffles only ties); stratified at seed 3 does not. The check is the test's own.
    cfg, _ = write_competition(tmp_path, strategy, "patient", seed)
    table = run_folds(cfg)
    partition = {column: {frozenset(table.index[table[column] == k]) for k in table[column].unique()}
                 for column in ("fold", "fold_s1")}
    assert (partition["fold"] == partition["fold_s1"]) is same
    warnings = json.loads((cfg.data_dir / "folds.json").read_text())["warnings"]
    assert any("fold_s1 (seed" in w and "exactly as fold" in w for w in warnings) is same
