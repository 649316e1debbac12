"""Atomic writes and the checked CSV reader every stage uses."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from medal.core.io import atomic_path, read_csv, write_csv, write_json, write_text


def test_write_text_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "c.txt"
    write_text(path, "hello")
    assert path.read_text() == "hello"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_successful_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_written_files_get_the_permissions_a_plain_write_would(tmp_path):
    # A plain open() gives 0o666 minus the umask (0o644 under the usual 022), so that teammates and
    # other containers can read outputs and submissions; the temporary file must not leave them private.
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "atomic.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(umask)
    assert oct((tmp_path / "atomic.txt").stat().st_mode & 0o777) == oct((tmp_path / "plain.txt").stat().st_mode & 0o777)


def test_read_csv_keeps_string_columns_as_text(tmp_path):
    write_csv(tmp_path / "t.csv", pd.DataFrame({"id": ["007", "010"], "label": ["NA", "None"], "x": [1, 2]}))
    frame = read_csv(tmp_path / "t.csv", "table", ["id"], ["id", "label"])
    assert frame["id"].tolist() == ["007", "010"]
    assert frame["label"].tolist() == ["NA", "None"]  # real values, not missing
    assert frame["x"].tolist() == [1, 2]


def test_read_csv_reads_only_empty_cells_as_missing(tmp_path):
    (tmp_path / "t.csv").write_text("id,label\na,\nb,x\n")
    frame = read_csv(tmp_path / "t.csv", "table", ["id"], ["id", "label"])
    assert frame["label"].isna().tolist() == [True, False]


def test_read_csv_names_missing_columns_and_the_ones_present(tmp_path):
    (tmp_path / "t.csv").write_text("id,lbl\na,x\n")
    with pytest.raises(ValueError, match=r"my table .*t.csv lacks column\(s\) \['label'\]; it has \['id', 'lbl'\]"):
        read_csv(tmp_path / "t.csv", "my table", ["id", "label"])


def test_read_csv_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"my table .*nope.csv does not exist"):
        read_csv(tmp_path / "nope.csv", "my table", [])
