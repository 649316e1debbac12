"""clean's manifest ties its outputs to the train.csv and sample_submission.csv they came from; one clean runs
at a time per output folder, and a killed run's temporary files are swept by the next."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import noise, png
from test_clean import competition

from medal.clean.run import run_clean
from medal.core import layout, provenance
from medal.core.locks import LockedError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg(tmp_path):
    cfg = competition(tmp_path, [("t0.png", "a"), ("t1.png", "b")],
                      {"t0.png": png(noise(seed=1)), "t1.png": png(noise(seed=2))}, "clean.workers=1")
    (cfg.data.root / "test").mkdir()
    (cfg.data.root / "test" / "s0.png").write_bytes(png(noise(seed=3)))
    pd.DataFrame({"image_id": ["s0.png"], "label": ["a"]}).to_csv(cfg.data.root / "sample_submission.csv", index=False)
    return cfg


def verify(cfg) -> dict:
    return provenance.verify(layout.clean_manifest(cfg), "missing", cfg)


def test_after_clean_its_manifest_verifies(cfg):
    run_clean(cfg)
    record = verify(cfg)
    assert record["made"] == "clean.csv was made"
    assert record["command"] == f"medal clean -c {cfg.source[0]} clean.workers=1"
    # Not sample_submission.csv: a code competition swaps in the hidden test set, which must not stale the folds.
    assert sorted(record["inputs"]) == ["train.csv"]
    assert list(record["outputs"]) == ["clean.csv", "dropped.csv", "duplicates.csv", "findings.csv",
                                       "test_findings.csv"]


def test_the_manifest_records_the_recipe_without_the_worker_count(cfg):
    run_clean(cfg)
    settings = json.loads(layout.clean_manifest(cfg).read_text())["settings"]
    assert "workers" not in settings["clean"] and settings["clean"]["near_threshold"] == 6
    assert settings["data"] == {"train_csv": "train.csv", "train_dir": "train", "test_dir": "test",
                                "sample_submission": "sample_submission.csv", "id_col": "image_id", "label_col": "label",
                                "image_ext": "", "label_sep": None, "cache_max_side": 0, "cache_format": "jpg"}


def test_editing_train_csv_after_clean_makes_its_outputs_stale(cfg):
    run_clean(cfg)
    with open(cfg.data.root / "train.csv", "a") as handle:
        handle.write("t2.png,a\n")
    with pytest.raises(provenance.StaleError, match="train.csv changed since clean.csv was made: run `medal clean"):
        verify(cfg)


def test_a_new_sample_submission_does_not_make_clean_stale(cfg):
    run_clean(cfg)
    with open(cfg.data.root / "sample_submission.csv", "a") as handle:
        handle.write("t2.png,a\n")
    verify(cfg)


def test_a_clean_that_fails_while_writing_leaves_no_manifest(cfg, monkeypatch):
    run_clean(cfg)
    (cfg.data.root / "train.csv").write_text("image_id,label\nt0.png,a\n")
    from medal.clean import report

    def full_disk(path, frame):
        raise OSError(f"no space left on device writing {path}")
    monkeypatch.setattr(report, "write_csv", full_disk)
    with pytest.raises(OSError, match="no space left"):
        run_clean(cfg)
    # Not "train.csv changed": readers are told the outputs have no manifest, as after a kill.
    with pytest.raises(provenance.StaleError, match="^missing$"):
        verify(cfg)


@pytest.mark.slow
def test_clean_refuses_to_run_while_another_process_holds_its_lock(cfg):
    lock = layout.lock_file(cfg.data_dir, "clean")
    hold = ("import time\nfrom pathlib import Path\nfrom medal.core.locks import exclusive\n"
            f"with exclusive(Path(r'{lock}'), 'a test'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"clean of comp is in use by process {holder.pid} "):
            run_clean(cfg)
    finally:
        holder.kill()
        holder.wait(10)
    assert not layout.clean_csv(cfg).exists()
    run_clean(cfg)  # the holder is gone: the lock is free again
    verify(cfg)


def test_clean_removes_only_its_own_temporaries_left_by_a_killed_run(cfg):
    cfg.data_dir.mkdir(parents=True)
    ours = [cfg.data_dir / ".clean.csv.k1ll3d.tmp", cfg.data_dir / ".clean.manifest.json.x.tmp",
            cfg.data_dir / ".test_findings.csv.y.tmp"]
    theirs = cfg.data_dir / ".folds.csv.r7nn1ng.tmp"
    for path in [*ours, theirs]:
        path.write_text("half a file")
    run_clean(cfg)
    assert [p.exists() for p in ours] == [False, False, False]
    assert theirs.exists()


def test_an_edit_to_train_csv_while_clean_runs_leaves_its_outputs_stale(cfg, monkeypatch):
    # The manifest holds the train.csv clean read, not the one on disk when it finished.
    from medal.clean import run

    real = run.find_problems

    def edited_meanwhile(cfg, table):
        with open(cfg.data.root / "train.csv", "a") as handle:
            handle.write("t2.png,a\n")
        return real(cfg, table)
    monkeypatch.setattr(run, "find_problems", edited_meanwhile)
    run_clean(cfg)
    with pytest.raises(provenance.StaleError, match="train.csv changed since clean.csv was made"):
        verify(cfg)
