"""train.csv and sample_submission.csv as the stages read them: refused, naming the file, when they are
empty, not UTF-8, or (the sample submission) list an id twice or not at all."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import write_yaml

from medal.core.config import Config, load_config
from medal.core.tables import read_sample_submission, read_train_table


def competition(tmp_path: Path, train: bytes = b"image_id,label\na,cat\n",
                sample: bytes = b"image_id,label\nt1,cat\n") -> Config:
    root = tmp_path / "comp"
    root.mkdir()
    (root / "train.csv").write_bytes(train)
    (root / "sample_submission.csv").write_bytes(sample)
    return load_config(write_yaml(tmp_path / "c.yaml", {"name": "x", "output_dir": str(tmp_path / "o"),
                                                        "data": {"root": str(root)}}))


def named(cfg: Config, file: str) -> str:
    return re.escape(str(cfg.data.root / file))


def test_train_table_reads_every_column_as_text(tmp_path):
    cfg = competition(tmp_path, train=b"image_id,label,target,group\n007,cat,1.50,NA\n")
    assert read_train_table(cfg).iloc[0].tolist() == ["007", "cat", "1.50", "NA"]


def test_an_empty_train_csv_is_refused_naming_it(tmp_path):
    cfg = competition(tmp_path, train=b"")
    with pytest.raises(ValueError, match=rf"^training CSV {named(cfg, 'train.csv')} is empty \(0 bytes\)$"):
        read_train_table(cfg)


def test_a_train_csv_with_a_header_and_no_rows_is_refused_naming_it(tmp_path):
    cfg = competition(tmp_path, train=b"image_id,label\n")
    with pytest.raises(ValueError, match=rf"^training CSV {named(cfg, 'train.csv')} has a header but no rows$"):
        read_train_table(cfg)


def test_a_latin1_train_csv_is_refused_naming_the_byte(tmp_path):
    cfg = competition(tmp_path, train="image_id,label\ncafé.png,cat\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^training CSV {named(cfg, 'train.csv')} is not UTF-8 text \(byte 0xe9 at "
                                         r"position 18, line 2\); save it as UTF-8$"):
        read_train_table(cfg)


def test_a_utf16_train_csv_is_refused_naming_it(tmp_path):
    cfg = competition(tmp_path, train="image_id,label\na,cat\n".encode("utf-16"))
    with pytest.raises(ValueError, match=rf"^training CSV {named(cfg, 'train.csv')} is not UTF-8 text \(byte 0xff"):
        read_train_table(cfg)


def test_a_train_csv_saved_with_a_utf8_byte_order_mark_is_read_with_clean_column_names(tmp_path):
    cfg = competition(tmp_path, train=b"\xef\xbb\xbfimage_id,label\n007,cat\n")
    table = read_train_table(cfg)
    assert table.columns.tolist() == ["image_id", "label"]
    assert table["image_id"].tolist() == ["007"]


def test_a_malformed_train_csv_is_refused_naming_the_line(tmp_path):
    cfg = competition(tmp_path, train=b"image_id,label\na,cat\nb,dog,extra\n")
    with pytest.raises(ValueError, match=rf"^training CSV {named(cfg, 'train.csv')} is not a well-formed CSV "
                                         r"\(Expected 2 fields in line 3, saw 3\)"):
        read_train_table(cfg)


def test_the_sample_submission_keeps_ids_as_text(tmp_path):
    cfg = competition(tmp_path, sample=b"image_id,label\n007,cat\n010,cat\n")
    assert read_sample_submission(cfg)["image_id"].tolist() == ["007", "010"]


def test_repeated_sample_submission_ids_are_refused_with_their_rows(tmp_path):
    cfg = competition(tmp_path, sample=b"image_id,label\nt1,cat\nt2,cat\nt1,cat\nt3,cat\nt2,cat\nt1,cat\n")
    with pytest.raises(ValueError) as info:
        read_sample_submission(cfg)
    # Rows as in the file, whose header is row 1.
    assert str(info.value) == (f"sample submission {cfg.data.root / 'sample_submission.csv'} lists 2 id(s) more "
                               f"than once, e.g. 't1' (rows 2, 4, 7), 't2' (rows 3, 6); each test image must appear once")


def test_only_the_first_five_repeated_ids_are_listed(tmp_path):
    rows = "".join(f"t{i},cat\nt{i},cat\n" for i in range(8))
    cfg = competition(tmp_path, sample=f"image_id,label\n{rows}".encode())
    with pytest.raises(ValueError, match=r"lists 8 id\(s\) more than once, e.g. 't0' .* 't4' \(rows 10, 11\); each"):
        read_sample_submission(cfg)


def test_empty_sample_submission_ids_are_refused_with_their_rows(tmp_path):
    cfg = competition(tmp_path, sample=b"image_id,label\nt1,cat\n,cat\n  ,cat\n")
    with pytest.raises(ValueError, match=rf"^sample submission {named(cfg, 'sample_submission.csv')} has 2 empty "
                                         r"id\(s\) in column 'image_id', at row\(s\) \[3, 4\]$"):
        read_sample_submission(cfg)


def test_a_sample_submission_without_rows_is_refused(tmp_path):
    cfg = competition(tmp_path, sample=b"image_id,label\n")
    with pytest.raises(ValueError, match=rf"^sample submission {named(cfg, 'sample_submission.csv')} has a header "
                                         r"but no rows$"):
        read_sample_submission(cfg)
