"""folds: one stratified fold per clean row, reproducible from the seed."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_yaml

from medal.config import Config, load_config
from medal.folds import run_folds

# Uneven classes, so that stratification has something to do.
CLASS_SIZES = {"cat": 11, "dog": 7, "eel": 5, "fox": 3}


def clean_table(sizes: dict[str, int] = CLASS_SIZES) -> pd.DataFrame:
    rows = [(f"{label}_{i:02d}", label) for label, n in sizes.items() for i in range(n)]
    # Interleave the classes so that row order carries no class information.
    return pd.DataFrame(rows, columns=["image_id", "label"]).sample(frac=1.0, random_state=0).reset_index(drop=True)


def folds_config(tmp_path: Path, out: str, *overrides: str, table: pd.DataFrame | None = None) -> Config:
    """A config whose output folder holds clean.csv (folds reads nothing else)."""
    root = tmp_path / "comp"
    root.mkdir(exist_ok=True)
    path = write_yaml(tmp_path / "c.yaml", {"name": "x", "output_dir": str(tmp_path / out), "data": {"root": str(root)}})
    cfg = load_config(path, list(overrides))
    cfg.data_dir.mkdir(parents=True)
    (clean_table() if table is None else table).to_csv(cfg.data_dir / "clean.csv", index=False)
    return cfg


def test_every_clean_row_gets_exactly_one_fold_in_range(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.n_folds=3")
    run_folds(cfg)
    folds = pd.read_csv(cfg.data_dir / "folds.csv", dtype={"image_id": str})
    assert folds["image_id"].tolist() == clean_table()["image_id"].tolist()
    assert set(folds["fold"]) == {0, 1, 2}
    assert folds["fold"].between(0, 2).all()


def test_folds_csv_is_clean_csv_plus_a_fold_column(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.n_folds=3")
    run_folds(cfg)
    folds = pd.read_csv(cfg.data_dir / "folds.csv", dtype=str)
    assert list(folds.columns) == ["image_id", "label", "fold"]
    pd.testing.assert_frame_equal(folds[["image_id", "label"]], clean_table())


def test_each_class_is_spread_evenly_over_the_folds(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.n_folds=3")
    table = run_folds(cfg)
    counts = pd.crosstab(table["label"], table["fold"])
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all(), counts
    assert counts.sum(axis=1).to_dict() == CLASS_SIZES


def test_same_seed_writes_byte_identical_folds_csv(tmp_path):
    a = folds_config(tmp_path, "a", "folds.seed=5", "folds.n_folds=3")
    b = folds_config(tmp_path, "b", "folds.seed=5", "folds.n_folds=3")
    run_folds(a)
    run_folds(b)
    assert (a.data_dir / "folds.csv").read_bytes() == (b.data_dir / "folds.csv").read_bytes()


def test_different_seed_gives_a_different_assignment(tmp_path):
    a = folds_config(tmp_path, "a", "folds.seed=5", "folds.n_folds=3")
    b = folds_config(tmp_path, "b", "folds.seed=6", "folds.n_folds=3")
    assert run_folds(a)["fold"].tolist() != run_folds(b)["fold"].tolist()


def test_class_with_fewer_rows_than_folds_is_refused_naming_it(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.n_folds=4")  # fox has 3 rows
    with pytest.raises(ValueError, match=r"class 'fox' has 3 rows, fewer than folds.n_folds=4"):
        run_folds(cfg)
    assert not (cfg.data_dir / "folds.csv").exists()


def test_folds_json_records_seed_k_and_class_counts_of_folds_csv(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.n_folds=3", "folds.seed=9")
    table = run_folds(cfg)
    info = json.loads((cfg.data_dir / "folds.json").read_text())
    assert (info["strategy"], info["n_folds"], info["seed"], info["rows"]) == ("stratified", 3, 9, len(table))
    for k in range(3):
        in_fold = table.loc[table["fold"] == k, "label"].value_counts().to_dict()
        assert {c: n for c, n in info["class_counts_per_fold"][str(k)].items() if n} == in_fold


def test_folds_without_clean_csv_says_to_run_clean(tmp_path):
    root = tmp_path / "comp"
    root.mkdir()
    cfg = load_config(write_yaml(tmp_path / "c.yaml", {"name": "x", "output_dir": str(tmp_path / "o"),
                                                        "data": {"root": str(root)}}))
    with pytest.raises(FileNotFoundError, match="medal clean"):
        run_folds(cfg)


def test_unknown_fold_strategy_is_refused_in_the_config(tmp_path):
    from medal.config import ConfigError

    root = tmp_path / "comp"
    root.mkdir()
    path = write_yaml(tmp_path / "c.yaml", {"name": "x", "data": {"root": str(root)}})
    with pytest.raises(ConfigError, match=r"folds\.strategy.*'grouped'"):
        load_config(path, ["folds.strategy=grouped"])


def test_numeric_looking_ids_and_labels_keep_their_text(tmp_path):
    table = pd.DataFrame({"image_id": ["007", "008", "009", "010"], "label": ["01", "01", "02", "02"]})
    cfg = folds_config(tmp_path, "o", "folds.n_folds=2", table=table)
    run_folds(cfg)
    folds = pd.read_csv(cfg.data_dir / "folds.csv", dtype=str)
    assert folds["image_id"].tolist() == ["007", "008", "009", "010"]
    assert folds["label"].tolist() == ["01", "01", "02", "02"]


def test_session_folds_cover_every_clean_row(pipeline):
    assert pipeline.codes["folds"] == 0
    clean = pd.read_csv(pipeline.data_dir / "clean.csv", dtype=str)
    folds = pd.read_csv(pipeline.data_dir / "folds.csv", dtype={"image_id": str, "label": str})
    assert folds["image_id"].tolist() == clean["image_id"].tolist()
    assert sorted(folds["fold"].unique()) == [0, 1]
