"""clean decodes the test images (sample_submission's ids) too, with or without the cache, and reports the ones
inference could not read: in the log, the reports and test_findings.csv. No row is dropped for them."""
from __future__ import annotations

import json
import logging

import pandas as pd
from conftest import noise, png
from test_clean import competition

from medal.clean.run import run_clean
from medal.core.log import LOGGER_NAME

TEXT = {"dtype": str, "keep_default_na": False}


def with_test_images(tmp_path, *overrides):
    """Two good training images; test/ with a good image, a truncated one and (listed only) a missing one, and an
    id that leads outside the test folder."""
    cfg = competition(tmp_path, [("t0.png", "a"), ("t1.png", "b")],
                      {"t0.png": png(noise(seed=1)), "t1.png": png(noise(seed=2))}, *overrides)
    test = cfg.data.root / "test"
    test.mkdir()
    (test / "s0.png").write_bytes(png(noise(seed=3)))
    cut = png(noise(seed=4))
    (test / "s1.png").write_bytes(cut[: len(cut) // 2])
    (cfg.data.root / "secret.txt").write_text("not for clean")
    ids = ["s0.png", "s1.png", "s2.png", "../secret.txt"]
    pd.DataFrame({"image_id": ids, "label": "a"}).to_csv(cfg.data.root / "sample_submission.csv", index=False)
    return cfg


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def capture_log() -> Recorder:
    """The medal logger's records from now on (conftest removes the handler after the test)."""
    recorder = Recorder()
    logging.getLogger(LOGGER_NAME).addHandler(recorder)
    logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)
    return recorder


def test_broken_and_missing_test_images_are_listed_in_test_findings_csv(tmp_path):
    cfg = with_test_images(tmp_path)
    kept, dropped = run_clean(cfg)
    found = pd.read_csv(cfg.data_dir / "test_findings.csv", **TEXT)
    assert found.columns.tolist() == ["image_id", "reason", "detail"]
    assert found[["image_id", "reason"]].values.tolist() == [
        ["s1.png", "truncated"], ["s2.png", "missing_file"], ["../secret.txt", "outside_data_dir"]]
    assert found["detail"].iat[1] == f"{cfg.data.root / 'test' / 's2.png'} not found"
    assert found["detail"].iat[2] == f"../secret.txt resolves outside the test folder {cfg.data.root / 'test'}"
    assert kept["image_id"].tolist() == ["t0.png", "t1.png"] and len(dropped) == 0  # nothing dropped for them


def test_the_reports_count_the_test_findings(tmp_path):
    cfg = with_test_images(tmp_path)
    run_clean(cfg)
    report = json.loads((cfg.data_dir / "clean_report.json").read_text())["test_findings"]
    assert {k: report[k] for k in ("images", "with_findings", "by_reason", "examples")} == {
        "images": 4, "with_findings": 3,
        "by_reason": {"truncated": 1, "missing_file": 1, "outside_data_dir": 1},
        "examples": {"truncated": ["s1.png"], "missing_file": ["s2.png"], "outside_data_dir": ["../secret.txt"]}}
    markdown = (cfg.data_dir / "clean_report.md").read_text()
    section = markdown[markdown.index("## Test images"):]
    assert "4 test images checked (the sample submission's ids), 3 that inference cannot read" in section
    assert "| truncated | 1 |" in section and "| missing_file | 1 |" in section


def test_each_kind_of_test_finding_is_one_warning_naming_its_images(tmp_path):
    cfg = with_test_images(tmp_path)
    log = capture_log()
    run_clean(cfg)
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING and "test image" in r.getMessage()]
    assert len(warnings) == 3
    assert warnings[0] == ("clean: 1 test image [truncated] (the file is cut short): s1.png; inference cannot read it, "
                           f"see {cfg.data_dir / 'test_findings.csv'}")


def test_the_test_images_are_checked_with_the_cache_on_too(tmp_path):
    cfg = with_test_images(tmp_path, "data.cache_max_side=32")
    run_clean(cfg)
    found = pd.read_csv(cfg.data_dir / "test_findings.csv", **TEXT)
    assert found["reason"].tolist() == ["truncated", "missing_file", "outside_data_dir"]
    cache = cfg.data_dir / "cache" / "test_32px_jpg"
    assert sorted(p.name for p in cache.iterdir()) == ["s0.png.jpg"]


def test_without_a_sample_submission_test_findings_csv_is_empty(tmp_path):
    cfg = with_test_images(tmp_path)
    (cfg.data.root / "sample_submission.csv").unlink()
    run_clean(cfg)
    found = pd.read_csv(cfg.data_dir / "test_findings.csv", **TEXT)
    assert found.columns.tolist() == ["image_id", "reason", "detail"] and len(found) == 0
    assert "test_findings" not in json.loads((cfg.data_dir / "clean_report.json").read_text())
