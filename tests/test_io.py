"""Atomic writes and the checked CSV reader every stage uses."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

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


# A full disk or a folder that cannot be written: an OSError naming the file, and no temporary left behind.
TORCH_DISK_FULL = ("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: "
                   "file write failed")


def failed_write(path, err: BaseException) -> BaseException:
    """What atomic_path raises when its body writes half the file and then raises `err`."""
    with pytest.raises(BaseException) as info, atomic_path(path) as tmp:
        tmp.write_text("half of it")
        raise err
    return info.value


def full_disk(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: SimpleNamespace(total=10**9, used=10**9, free=0))


def test_a_full_disk_is_reported_naming_the_file_and_the_free_space(tmp_path):
    path = tmp_path / "out" / "last.pt"
    err = failed_write(path, OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert re.fullmatch(rf"no space left on device writing {re.escape(str(path))} \(\d.* free on /.*\)", str(err))
    assert list(path.parent.iterdir()) == []


def test_torchs_failed_write_on_a_full_disk_is_reported_as_no_space_keeping_its_text(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    path = tmp_path / "last.pt"
    err = failed_write(path, RuntimeError(TORCH_DISK_FULL))
    assert type(err) is OSError and err.errno == errno.ENOSPC
    assert str(err).startswith(f"no space left on device writing {path} (0 B free on ")
    assert str(err).endswith(f"): {TORCH_DISK_FULL}")
    assert err.__cause__ is None and err.__suppress_context__  # one line for the CLI, not two tracebacks
    assert list(tmp_path.iterdir()) == []


def test_the_free_space_reported_is_what_is_left_once_the_partial_file_is_removed(tmp_path, monkeypatch):
    # The partial checkpoint filled the disk; without it there are 5 GB, less than the checkpoint needs.
    def usage(folder):
        partial = list(tmp_path.glob(".*.tmp"))
        return SimpleNamespace(total=10**10, used=0, free=0 if partial else 5 * 10**9)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    err = failed_write(tmp_path / "last.pt", RuntimeError(TORCH_DISK_FULL))
    assert str(err).startswith(f"no space left on device writing {tmp_path / 'last.pt'} (5.0 GB free on ")


def test_torchs_failed_write_with_space_left_names_the_file_and_the_free_space(tmp_path):
    path = tmp_path / "last.pt"
    err = failed_write(path, RuntimeError(TORCH_DISK_FULL))
    assert type(err) is OSError
    assert re.fullmatch(rf"writing {re.escape(str(path))} failed \(\d.* free on /.*\): {re.escape(TORCH_DISK_FULL)}", str(err))
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_folder_is_reported_naming_the_file(tmp_path):
    path = tmp_path / "out.csv"
    err = failed_write(path, PermissionError(errno.EROFS, "Read-only file system"))
    assert isinstance(err, PermissionError) and err.errno == errno.EROFS
    assert str(err) == f"cannot write {path}: Read-only file system (is the output folder read-only?)"
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_created_is_reported_naming_the_file(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    path = tmp_path / "new" / "out.csv"
    with pytest.raises(OSError) as info:
        write_text(path, "x")
    assert str(info.value) == f"cannot write {path}: Read-only file system (is the output folder read-only?)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_folder_without_write_permission_is_reported_naming_the_file(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=rf"cannot write {re.escape(str(folder / 'out.csv'))}: .*read-only\?"):
            write_text(folder / "out.csv", "x")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("err", [ValueError("bad value"), RuntimeError("CUDA out of memory"),
                                 FileNotFoundError(errno.ENOENT, "No such file", "input.csv"),
                                 PermissionError(errno.EACCES, "Permission denied", "some/input.csv")],
                         ids=["value", "runtime", "missing input", "unreadable input"])
def test_other_errors_in_the_body_pass_through_unchanged(tmp_path, err):
    assert failed_write(tmp_path / "out.csv", err) is err
    assert list(tmp_path.iterdir()) == []


# CSVs that are empty, not UTF-8 or malformed: a ValueError naming the file and what is wrong.


def test_read_csv_refuses_an_empty_file(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"^my table {re.escape(str(tmp_path / 't.csv'))} is empty \(0 bytes\)$"):
        read_csv(tmp_path / "t.csv", "my table", ["id"])


def test_read_csv_refuses_a_file_of_blank_lines(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"\n\n")
    with pytest.raises(ValueError, match=r"my table .*t.csv is empty \(2 bytes of blank lines, no header\)"):
        read_csv(tmp_path / "t.csv", "my table", ["id"])


def test_read_csv_refuses_a_header_without_rows_only_when_rows_are_needed(tmp_path):
    (tmp_path / "t.csv").write_text("id,label\n")
    assert read_csv(tmp_path / "t.csv", "my table", ["id"]).columns.tolist() == ["id", "label"]
    with pytest.raises(ValueError, match=r"my table .*t.csv has a header but no rows"):
        read_csv(tmp_path / "t.csv", "my table", ["id"], need_rows=True)


def test_read_csv_refuses_utf16_naming_the_byte_order_mark(tmp_path):
    (tmp_path / "t.csv").write_text("id,label\na,1\n", encoding="utf-16")
    with pytest.raises(ValueError, match=r"my table .*t.csv is not UTF-8 text \(byte 0xff at position 0: a UTF-16 "
                                         r"byte-order mark\); save it as UTF-8"):
        read_csv(tmp_path / "t.csv", "my table", ["id"])


def test_read_csv_refuses_utf16_without_a_byte_order_mark(tmp_path):
    # Its NUL bytes are valid UTF-8, so pandas alone would read column names like 'i\x00d\x00'.
    (tmp_path / "t.csv").write_bytes("id,label\na,1\n".encode("utf-16-le"))
    with pytest.raises(ValueError, match=r"t.csv is not UTF-8 text \(byte 0x00 at position 1: a NUL"):
        read_csv(tmp_path / "t.csv", "my table", ["id"])


def test_read_csv_names_the_first_latin1_byte_by_its_place_in_the_file(tmp_path):
    # Far past pandas' first chunk, whose own error gives a position within the chunk.
    rows = "".join(f"img_{i:06d},cat\n" for i in range(50_000))
    (tmp_path / "t.csv").write_bytes(f"id,label\n{rows}".encode() + "café,cat\n".encode("latin-1"))
    position = len(f"id,label\n{rows}caf")
    with pytest.raises(ValueError, match=rf"t.csv is not UTF-8 text \(byte 0xe9 at position {position}, line 50002\); "
                                         r"save it as UTF-8"):
        read_csv(tmp_path / "t.csv", "my table", ["id"])


def test_read_csv_accepts_a_utf8_byte_order_mark_outside_the_first_column_name(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"\xef\xbb\xbfid,label\n007,cat\n")
    frame = read_csv(tmp_path / "t.csv", "my table", ["id"], ["id"])
    assert frame.columns.tolist() == ["id", "label"]
    assert frame["id"].tolist() == ["007"]


def test_read_csv_names_the_line_with_too_many_fields(tmp_path):
    (tmp_path / "t.csv").write_text("id,label\na,1\nb,2,3\n")
    with pytest.raises(ValueError, match=r"my table .*t.csv is not a well-formed CSV \(Expected 2 fields in line 3, "
                                         r"saw 3\)"):
        read_csv(tmp_path / "t.csv", "my table", ["id"])


def test_read_csv_names_the_line_of_a_quote_never_closed(tmp_path):
    (tmp_path / "t.csv").write_text('id,label\na,1\n"b,2\nc,3\n')
    with pytest.raises(ValueError, match=r"t.csv is not a well-formed CSV \(a quote opened on line 3 is never closed\)"):
        read_csv(tmp_path / "t.csv", "my table", ["id"])


def test_read_csv_reads_every_column_as_text_when_asked(tmp_path):
    (tmp_path / "t.csv").write_text("id,target,group\n007,1.50,NA\n")
    frame = read_csv(tmp_path / "t.csv", "my table", ["id"], "all")
    assert frame.iloc[0].tolist() == ["007", "1.50", "NA"]
