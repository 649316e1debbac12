"""folds: one fold per clean row for every strategy, groups kept whole, reproducible from the seed."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_yaml

from medal.core import layout, provenance
from medal.core.config import Config, load_config
from medal.core.log import get_logger
from medal.folds.run import run_folds as _run_folds

# Uneven classes, so that stratification has something to do.
CLASS_SIZES = {"cat": 11, "dog": 7, "eel": 5, "fox": 3}


def run_folds(cfg: Config) -> pd.DataFrame:
    """run_folds on the clean.csv (and duplicates.csv) a test wrote by hand, vouched for as clean would."""
    vouch_for_clean(cfg)
    return _run_folds(cfg)


def vouch_for_clean(cfg: Config) -> None:
    outputs = [p for p in (layout.clean_csv(cfg), layout.duplicates_csv(cfg)) if p.is_file()]
    provenance.write_manifest(layout.clean_manifest(cfg), cfg, "clean", made="clean.csv was made",
                              settings={}, inputs=[], outputs=outputs)


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
    from medal.core.config import ConfigError

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


# Groups: group_col, duplicates from clean, and both merged.

def write_duplicates(cfg: Config, pairs: list[tuple[str, str]]) -> None:
    """duplicates.csv as clean writes it: id and group (other columns unused by folds)."""
    pd.DataFrame(pairs, columns=["image_id", "group"]).to_csv(cfg.data_dir / "duplicates.csv", index=False)


def grouped_table(n_groups: int = 12, per_group: int = 3) -> pd.DataFrame:
    rows = [(f"img{g:02d}_{i}", "ab"[g % 2], f"p{g:02d}") for g in range(n_groups) for i in range(per_group)]
    return pd.DataFrame(rows, columns=["image_id", "label", "patient"]).sample(frac=1.0, random_state=1).reset_index(drop=True)


def spans(table: pd.DataFrame, key: str, column: str = "fold") -> int:
    """The most folds any value of `key` appears in."""
    return int(table.groupby(key)[column].nunique().max())


def test_stratified_keeps_each_duplicate_group_in_one_fold(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.n_folds=3")
    ids = clean_table()["image_id"].tolist()
    pairs = [(image_id, f"g{n}") for n in range(6) for image_id in (ids[n], ids[n + 13])]  # six groups of two
    write_duplicates(cfg, pairs)
    folds = run_folds(cfg)
    assert spans(folds.merge(pd.DataFrame(pairs, columns=["image_id", "group"]), on="image_id"), "group") == 1
    counts = pd.crosstab(folds["label"], folds["fold"])
    assert (counts.max(axis=1) - counts.min(axis=1) <= 2).all(), counts  # still stratified


def test_group_strategy_keeps_each_group_in_one_fold_and_balances_fold_sizes(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.strategy=group", "folds.group_col=patient", "folds.n_folds=4",
                       table=grouped_table())
    folds = run_folds(cfg)
    assert spans(folds, "patient") == 1
    assert folds["fold"].value_counts().tolist() == [9, 9, 9, 9]


def test_group_strategies_need_the_group_column(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.strategy=stratified_group", table=grouped_table())
    with pytest.raises(ValueError, match="folds.strategy=stratified_group needs folds.group_col"):
        run_folds(cfg)


def test_group_column_missing_from_clean_csv_is_named(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.strategy=group", "folds.group_col=patient_id", table=grouped_table())
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['patient_id'\]"):
        run_folds(cfg)


def test_stratified_group_balances_classes_with_whole_groups(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.strategy=stratified_group", "folds.group_col=patient", "folds.n_folds=3",
                       table=grouped_table(n_groups=18))
    folds = run_folds(cfg)
    assert spans(folds, "patient") == 1
    assert pd.crosstab(folds["label"], folds["fold"]).to_numpy().tolist() == [[9, 9, 9], [9, 9, 9]]


def test_a_duplicate_pair_across_two_groups_joins_them(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.strategy=group", "folds.group_col=patient", "folds.n_folds=4",
                       table=grouped_table())
    write_duplicates(cfg, [("img00_0", "g0001"), ("img05_2", "g0001")])
    folds = run_folds(cfg)
    assert folds.loc[folds["patient"].isin(["p00", "p05"]), "fold"].nunique() == 1
    assert json.loads((cfg.data_dir / "folds.json").read_text())["groups"]["count"] == 11


def test_group_ids_keep_their_text(tmp_path):
    table = grouped_table()
    table["patient"] = table["patient"].str.replace("p", "0")  # "000", "001", ...
    cfg = folds_config(tmp_path, "o", "folds.strategy=group", "folds.group_col=patient", "folds.n_folds=3", table=table)
    run_folds(cfg)
    assert pd.read_csv(cfg.data_dir / "folds.csv", dtype=str)["patient"].tolist() == table["patient"].tolist()


# Multi-label and regression.

def multilabel_table(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    tags = ["cloud", "haze", "road", "water"]
    rows = [(f"m{i:03d}", " ".join(t for t in tags if rng.random() < 0.35) or "clear") for i in range(n)]
    return pd.DataFrame(rows, columns=["image_id", "label"])


def test_multilabel_spreads_every_label_over_the_folds(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.strategy=multilabel", "data.label_sep=' '", "folds.n_folds=3",
                       table=multilabel_table())
    folds = run_folds(cfg)
    tags = folds["label"].str.split(" ").explode()
    counts = pd.crosstab(tags.to_numpy(), folds.loc[tags.index, "fold"].to_numpy())
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all(), counts
    info = json.loads((cfg.data_dir / "folds.json").read_text())
    assert set(info["class_counts_per_fold"]["0"]) == set(tags)  # per label, not per label combination


def test_multilabel_keeps_duplicate_groups_whole(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.strategy=multilabel", "data.label_sep=' '", "folds.n_folds=3",
                       table=multilabel_table())
    pairs = [(f"m{i:03d}", f"g{i // 6}") for i in range(0, 60, 3)]  # ten groups of two
    write_duplicates(cfg, pairs)
    folds = run_folds(cfg).merge(pd.DataFrame(pairs, columns=["image_id", "group"]), on="image_id")
    assert spans(folds, "group") == 1


def test_multilabel_needs_a_label_separator(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.strategy=multilabel", table=multilabel_table())
    with pytest.raises(ValueError, match="needs data.label_sep"):
        run_folds(cfg)


def regression_table(n: int = 100) -> pd.DataFrame:
    target = np.random.default_rng(0).lognormal(size=n)  # skewed, as prices and counts are
    return pd.DataFrame({"image_id": [f"r{i:03d}" for i in range(n)], "label": [f"{t:.4f}" for t in target]})


def test_kfold_stratifies_a_numeric_target_on_quantile_bins(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.strategy=kfold", "folds.n_folds=5", "folds.n_bins=5", table=regression_table())
    folds = run_folds(cfg)
    target = folds["label"].astype(float)
    bins = pd.qcut(target, 5, labels=False)
    assert (pd.crosstab(bins, folds["fold"]) == 4).all().all()  # each quintile split evenly
    info = json.loads((cfg.data_dir / "folds.json").read_text())
    assert info["target_per_fold"]["0"]["count"] == 20.0 and "class_counts_per_fold" not in info


def test_kfold_names_a_row_whose_target_is_not_a_number(tmp_path):
    table = regression_table(20)
    table.loc[7, "label"] = "n/a"
    cfg = folds_config(tmp_path, "o", "folds.strategy=kfold", table=table)
    with pytest.raises(ValueError, match=r"clean.csv row 9 \(r007\) has 'n/a'"):
        run_folds(cfg)


# Repeats, the report and determinism.

def test_repeats_add_a_fold_column_per_seed_recorded_in_folds_json(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.n_folds=3", "folds.seed=7", "folds.repeats=3")
    folds = run_folds(cfg)
    assert list(folds.columns) == ["image_id", "label", "fold", "fold_s1", "fold_s2"]
    assert folds["fold"].tolist() != folds["fold_s1"].tolist() != folds["fold_s2"].tolist()
    info = json.loads((cfg.data_dir / "folds.json").read_text())
    assert info["columns"] == {"fold": 7, "fold_s1": 8, "fold_s2": 9}
    single = folds_config(tmp_path, "single", "folds.n_folds=3", "folds.seed=8")
    assert run_folds(single)["fold"].tolist() == folds["fold_s1"].tolist()  # repeat r is the split of seed + r


def test_report_warns_when_a_fold_misses_a_class(tmp_path):
    table = grouped_table(n_groups=9)
    table.loc[table["patient"] == "p00", "label"] = "rare"  # one group holds the whole class
    cfg = folds_config(tmp_path, "o", "folds.strategy=stratified_group", "folds.group_col=patient", "folds.n_folds=3",
                       table=table)
    logged = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())  # the CLI turns off propagation to root
    get_logger().addHandler(handler)
    try:
        folds = run_folds(cfg)
    finally:
        get_logger().removeHandler(handler)
    rare_fold = int(folds.loc[folds["label"] == "rare", "fold"].iat[0])
    missing = sorted({0, 1, 2} - {rare_fold})
    info = json.loads((cfg.data_dir / "folds.json").read_text())
    assert [w.split(" has no")[0] for w in info["warnings"]] == [f"fold: fold {k}" for k in missing]
    assert "['rare']" in info["warnings"][0]
    assert [m for m in logged if "has no row" in m] == [f"folds: {w}" for w in info["warnings"]]
    report = (cfg.data_dir / "folds_report.md").read_text()
    assert "## Warnings" in report and "| fold | rows | groups | a | b | rare |" in report


@pytest.mark.slow
def test_folds_csv_is_byte_identical_across_processes_and_hash_seeds(tmp_path):
    import os
    import subprocess
    import sys

    import medal

    outputs = []
    for run, hash_seed in enumerate(("1", "2")):
        cfg = folds_config(tmp_path, f"p{run}", "folds.strategy=stratified_group", "folds.group_col=patient",
                           "folds.repeats=2", table=grouped_table(n_groups=20))
        write_duplicates(cfg, [("img00_0", "g1"), ("img07_1", "g1"), ("img03_2", "g2"), ("img11_0", "g2")])
        vouch_for_clean(cfg)
        config = tmp_path / f"c{run}.yaml"
        (tmp_path / "c.yaml").rename(config)
        src = str(Path(medal.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-m", "medal", "folds", "-c", str(config)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append((cfg.data_dir / "folds.csv").read_bytes())
    assert outputs[0] == outputs[1]


def test_group_strategy_works_without_groupkfold_shuffle_as_in_old_scikit_learn(tmp_path, monkeypatch):
    from sklearn.model_selection import GroupKFold

    import medal.folds.run

    class OldGroupKFold(GroupKFold):  # scikit-learn < 1.6: no shuffle, no random_state
        def __init__(self, n_splits=5):
            super().__init__(n_splits=n_splits)

    monkeypatch.setattr(medal.folds.run, "GroupKFold", OldGroupKFold)
    first = run_folds(folds_config(tmp_path, "a", "folds.strategy=group", "folds.group_col=patient",
                                   "folds.n_folds=4", table=grouped_table()))
    again = run_folds(folds_config(tmp_path, "b", "folds.strategy=group", "folds.group_col=patient",
                                   "folds.n_folds=4", table=grouped_table()))
    other = run_folds(folds_config(tmp_path, "c", "folds.strategy=group", "folds.group_col=patient",
                                   "folds.n_folds=4", "folds.seed=1", table=grouped_table()))
    assert spans(first, "patient") == 1 and first["fold"].value_counts().tolist() == [9, 9, 9, 9]
    assert first["fold"].tolist() == again["fold"].tolist() != other["fold"].tolist()


def test_a_clean_csv_without_clean_manifest_is_refused(tmp_path):
    cfg = folds_config(tmp_path, "o")
    with pytest.raises(provenance.StaleError, match=r"clean.csv has no manifest .*: run `medal clean -c "):
        _run_folds(cfg)
    assert not layout.folds_csv(cfg).exists()


def test_a_clean_csv_edited_after_clean_is_refused(tmp_path):
    cfg = folds_config(tmp_path, "o")
    vouch_for_clean(cfg)
    with open(layout.clean_csv(cfg), "a") as handle:
        handle.write("zzz_00,cat\n")
    with pytest.raises(provenance.StaleError, match=r"clean.csv is not the file written when clean.csv was made"):
        _run_folds(cfg)


def test_folds_writes_a_manifest_tied_to_clean_csv(tmp_path):
    cfg = folds_config(tmp_path, "o", "folds.n_folds=3")
    run_folds(cfg)
    record = provenance.verify(layout.folds_manifest(cfg), "missing", cfg)
    assert record["inputs"]["clean.csv"]["sha256"] == provenance.sha256(layout.clean_csv(cfg))
    assert set(record["outputs"]) == {"folds.csv", "folds.json"} and record["settings"]["folds"]["n_folds"] == 3
