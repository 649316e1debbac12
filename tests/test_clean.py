"""clean: every training row ends in clean.csv or dropped.csv, each drop with the right reason."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import jpeg, noise, png, write_yaml

from medal.clean.run import REASONS, run_clean
from medal.core.config import Config, load_config
from medal.core.io import read_csv
from medal.demo import PLANTED


def competition(tmp_path: Path, rows: list[tuple[str, str]], files: dict[str, bytes], *overrides: str) -> Config:
    """A Kaggle-style folder with train.csv (image_id,label; ids carry the extension) and train/ files."""
    root = tmp_path / "comp"
    (root / "train").mkdir(parents=True)
    for name, data in files.items():
        (root / "train" / name).write_bytes(data)
    pd.DataFrame(rows, columns=["image_id", "label"]).to_csv(root / "train.csv", index=False)
    config = write_yaml(tmp_path / "c.yaml", {"name": "x", "output_dir": str(tmp_path / "out"), "data": {"root": str(root)}})
    return load_config(config, list(overrides))


def reason_of(tmp_path, rows, files, image_id, *overrides) -> str | None:
    """The reason clean gives for `image_id` (None when kept), with one good image beside it."""
    kept, dropped = run_clean(competition(tmp_path, [("good.png", "a"), *rows], {"good.png": png(), **files}, *overrides))
    assert "good.png" in set(kept["image_id"])
    hits = dropped.loc[dropped["image_id"] == image_id, "reason"].tolist()
    return hits[0] if hits else None


# The demo competition, as cleaned by the session pipeline.

@pytest.fixture(scope="module")
def demo_clean(pipeline):
    d = pipeline.data_dir
    train = pd.read_csv(pipeline.root / "train.csv", dtype=str, keep_default_na=False)
    clean = read_csv(d / "clean.csv", "clean", ["image_id", "label"], ["image_id", "label"])
    dropped = read_csv(d / "dropped.csv", "dropped", ["image_id", "label", "reason", "detail"], ["image_id", "label"])
    return train, clean, dropped


def test_clean_stage_exits_0(pipeline):
    assert pipeline.codes["clean"] == 0


def test_demo_clean_drops_exactly_the_planted_files_with_their_reasons(demo_clean):
    _, _, dropped = demo_clean
    assert dict(zip(dropped["image_id"], dropped["reason"])) == {i: reason for i, _, reason in PLANTED}


def test_demo_clean_and_dropped_together_hold_every_train_row_once(demo_clean):
    train, clean, dropped = demo_clean
    together = pd.concat([clean[["image_id", "label"]], dropped[["image_id", "label"]]])
    assert len(together) == len(train)
    assert sorted(map(tuple, together.to_numpy())) == sorted(map(tuple, train[["image_id", "label"]].to_numpy()))


def test_demo_clean_keeps_the_csv_row_order(demo_clean):
    train, clean, _ = demo_clean
    planted = {i for i, _, _ in PLANTED}
    assert clean["image_id"].tolist() == [i for i in train["image_id"] if i not in planted]


def test_demo_clean_report_counts_match_the_files(pipeline, demo_clean):
    train, clean, _ = demo_clean
    report = json.loads((pipeline.data_dir / "clean_report.json").read_text())
    counts = {key: report[key] for key in ("rows", "kept", "dropped", "by_reason")}
    assert counts == {"rows": len(train), "kept": len(clean), "dropped": 3,
                      "by_reason": {"truncated": 1, "empty_file": 1, "not_an_image": 1}}


def test_demo_dropped_rows_carry_a_detail_naming_the_file(demo_clean):
    _, _, dropped = demo_clean
    for image_id, detail in zip(dropped["image_id"], dropped["detail"]):
        assert f"{image_id}.png" in detail


# One case at a time, in a competition made by the test.

def test_missing_file_is_dropped_as_missing_file(tmp_path):
    assert reason_of(tmp_path, [("ghost.png", "a")], {}, "ghost.png") == "missing_file"


def test_duplicate_id_keeps_the_first_row_and_drops_the_repeat(tmp_path):
    cfg = competition(tmp_path, [("a.png", "cat"), ("b.png", "dog"), ("a.png", "bird")],
                      {"a.png": png(noise(seed=1)), "b.png": png(noise(seed=2))})
    kept, dropped = run_clean(cfg)
    assert list(zip(kept["image_id"], kept["label"])) == [("a.png", "cat"), ("b.png", "dog")]
    assert list(zip(dropped["image_id"], dropped["label"], dropped["reason"])) == [("a.png", "bird", "duplicate_id")]


def test_empty_label_is_dropped_as_missing_label(tmp_path):
    assert reason_of(tmp_path, [("nolabel.png", "")], {"nolabel.png": png()}, "nolabel.png") == "missing_label"


def test_empty_file_is_dropped_as_empty_file(tmp_path):
    assert reason_of(tmp_path, [("e.png", "a")], {"e.png": b""}, "e.png") == "empty_file"


def test_text_file_is_dropped_as_not_an_image(tmp_path):
    assert reason_of(tmp_path, [("t.jpg", "a")], {"t.jpg": b"<html>404</html>"}, "t.jpg") == "not_an_image"


def test_jpeg_cut_in_half_is_dropped_as_truncated(tmp_path):
    data = jpeg()
    assert reason_of(tmp_path, [("cut.jpg", "a")], {"cut.jpg": data[: len(data) // 2]}, "cut.jpg") == "truncated"


def test_png_signature_with_garbage_is_dropped_as_corrupt(tmp_path):
    data = b"\x89PNG\r\n\x1a\n" + b"garbage" * 20 + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    assert reason_of(tmp_path, [("bad.png", "a")], {"bad.png": data}, "bad.png") == "corrupt"


def test_one_pixel_image_is_degenerate_at_min_side_2(tmp_path):
    assert reason_of(tmp_path, [("dot.png", "a")], {"dot.png": png(noise(1, 1))}, "dot.png", "clean.min_side=2") == "degenerate"


def test_one_pixel_image_is_kept_at_min_side_1(tmp_path):
    assert reason_of(tmp_path, [("dot.png", "a")], {"dot.png": png(noise(1, 1))}, "dot.png", "clean.min_side=1") is None


def test_thin_image_is_degenerate_by_its_shorter_side(tmp_path):
    assert reason_of(tmp_path, [("line.png", "a")], {"line.png": png(noise(1, 50))}, "line.png", "clean.min_side=2") == "degenerate"


def test_greyscale_png_is_kept(tmp_path):
    assert reason_of(tmp_path, [("grey.png", "a")], {"grey.png": png(noise(8, 8, channels=1))}, "grey.png") is None


def test_rgba_png_is_kept(tmp_path):
    assert reason_of(tmp_path, [("rgba.png", "a")], {"rgba.png": png(noise(8, 8, channels=4))}, "rgba.png") is None


def test_complete_jpeg_is_kept(tmp_path):
    assert reason_of(tmp_path, [("ok.jpg", "a")], {"ok.jpg": jpeg()}, "ok.jpg") is None


def test_labels_that_look_like_missing_values_are_kept(tmp_path):
    cfg = competition(tmp_path, [("a.png", "NA"), ("b.png", "None"), ("c.png", "nan")],
                      {"a.png": png(noise(seed=1)), "b.png": png(noise(seed=2)), "c.png": png(noise(seed=3))})
    kept, dropped = run_clean(cfg)
    assert kept["label"].tolist() == ["NA", "None", "nan"] and dropped.empty


def test_image_ext_is_appended_to_ids(tmp_path):
    cfg = competition(tmp_path, [("a", "x"), ("b", "y")], {"a.png": png()}, "data.image_ext=.png")
    kept, dropped = run_clean(cfg)
    assert kept["image_id"].tolist() == ["a"]
    assert dropped[["image_id", "reason"]].to_numpy().tolist() == [["b", "missing_file"]]


def test_every_reason_in_dropped_csv_is_documented(tmp_path):
    cfg = competition(tmp_path, [("a.png", "x"), ("a.png", "x"), ("b.png", ""), ("c.png", "x"), ("d.png", "x")],
                      {"a.png": png(), "b.png": png(), "d.png": b""})
    run_clean(cfg)
    dropped = pd.read_csv(cfg.data_dir / "dropped.csv")
    assert sorted(dropped["reason"]) == ["duplicate_id", "empty_file", "missing_file", "missing_label"]
    assert set(dropped["reason"]) <= set(REASONS)
    report = (cfg.data_dir / "clean_report.md").read_text()
    for reason in dropped["reason"]:
        assert f"| {reason} | 1 | {REASONS[reason]} |" in report


def test_clean_writes_its_resolved_config(tmp_path):
    cfg = competition(tmp_path, [("a.png", "x")], {"a.png": png()}, "clean.min_side=3")
    run_clean(cfg)
    assert "min_side: 3" in (cfg.data_dir / "clean_config.yaml").read_text()


def test_training_csv_without_the_label_column_is_refused_naming_it(tmp_path):
    cfg = competition(tmp_path, [("a.png", "x")], {"a.png": png()}, "data.label_col=species")
    with pytest.raises(ValueError, match=r"train.csv lacks column\(s\) \['species'\]"):
        run_clean(cfg)


# Accounting: every input row, whatever happens to it, is in exactly one output.

def every_kind_of_row() -> tuple[list[tuple[str, str, str]], dict[str, bytes]]:
    """Rows (id, label, batch) covering every reason, with text that must survive unchanged."""
    good = {f"ok{i:02d}.png": png(noise(seed=i)) for i in range(30)}
    cut = png(noise(seed=40))
    twin = png(noise(seed=41))
    files = {**good, "cut.png": cut[: len(cut) // 2], "empty.png": b"", "text.png": b"hello", "twin1.png": twin,
             "twin2.png": twin, "tiny.png": png(noise(1, 1)), "label.png": png(noise(seed=42))}
    rows = [(name, "ab"[i % 2], f"00{i % 3}") for i, name in enumerate(good)]
    rows += [("cut.png", "a", "007"), ("empty.png", "b", "007"), ("text.png", "a", "08"), ("ghost.png", "b", "09"),
             ("twin1.png", "a", "1.50"), ("twin2.png", "b", "1.50"), ("tiny.png", "a", ""), ("label.png", "", "x"),
             ("ok00.png", "b", "dup"), ("ok01.png", "a", "dup")]
    return rows, files


def test_clean_and_dropped_together_equal_the_input_row_for_row(tmp_path):
    rows, files = every_kind_of_row()
    root = tmp_path / "comp"
    (root / "train").mkdir(parents=True)
    for name, data in files.items():
        (root / "train" / name).write_bytes(data)
    pd.DataFrame(rows, columns=["image_id", "label", "batch"]).to_csv(root / "train.csv", index=False)
    cfg = load_config(write_yaml(tmp_path / "c.yaml", {"name": "x", "output_dir": str(tmp_path / "out"),
                                                       "data": {"root": str(root)}}))
    run_clean(cfg)
    text = {"dtype": str, "keep_default_na": False}
    source = pd.read_csv(root / "train.csv", **text)
    clean = pd.read_csv(cfg.data_dir / "clean.csv", **text)
    dropped = pd.read_csv(cfg.data_dir / "dropped.csv", **text)
    assert list(clean.columns) == ["image_id", "label", "batch"]
    assert list(dropped.columns) == ["image_id", "label", "batch", "reason", "detail"]
    together = [tuple(r) for r in pd.concat([clean, dropped[clean.columns]]).to_numpy()]
    assert sorted(together) == sorted(tuple(r) for r in source.to_numpy())  # same rows, same text ("007", "1.50")
    # Each output keeps the input's order.
    for part in (clean, dropped):
        lines = [next(i for i, row in enumerate(source.itertuples(index=False)) if tuple(row) == tuple(r))
                 for r in part[clean.columns].itertuples(index=False)]
        assert lines == sorted(lines)
    assert sorted(dropped["reason"]) == sorted(["truncated", "empty_file", "not_an_image", "missing_file",
                                                "duplicate_conflict", "duplicate_conflict", "degenerate",
                                                "missing_label", "duplicate_id", "duplicate_id"])


def test_parallel_scan_writes_the_same_files_as_one_process(tmp_path):
    rows, files = every_kind_of_row()
    rows += [(f"more{i:02d}.png", "ab"[i % 2], "") for i in range(40)]  # enough rows for several chunks
    files.update({f"more{i:02d}.png": png(noise(seed=100 + i)) for i in range(40)})
    outputs = {}
    for workers in (1, 2):
        cfg = competition(tmp_path / f"w{workers}", [r[:2] for r in rows], files, f"clean.workers={workers}")
        run_clean(cfg)
        outputs[workers] = {name: (cfg.data_dir / name).read_bytes()
                            for name in ("clean.csv", "dropped.csv", "findings.csv", "duplicates.csv")}
    one = {k: v.replace(str(tmp_path / "w1").encode(), b"") for k, v in outputs[1].items()}
    two = {k: v.replace(str(tmp_path / "w2").encode(), b"") for k, v in outputs[2].items()}
    assert one == two


@pytest.mark.slow
def test_parallel_scan_finishes_right_after_the_parent_used_opencv_threads(tmp_path):
    """Regression: forked workers that called cv2.setNumThreads(1) hung for ever when the parent had just
    run an OpenCV operation on its thread pool (a pytest session, a notebook). Runs in a child process,
    several rounds, under a timeout, so a hang fails the test instead of stalling the suite."""
    import subprocess
    import sys

    import cv2

    import medal

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):  # big enough for OpenCV to parallelise the worker's resizes; 2 chunks of jobs
        big = cv2.resize(noise(8, 8, seed=i), (600, 600), interpolation=cv2.INTER_CUBIC)
        (folder / f"{i}.jpg").write_bytes(jpeg(big))
    script = (
        "import pathlib, cv2, numpy as np\n"
        "from medal.clean.scan import ScanJob, scan_files\n"
        f"jobs = [ScanJob(str(p)) for p in sorted(pathlib.Path({str(folder)!r}).iterdir())]\n"
        "big = np.zeros((3000, 3000, 3), np.uint8)\n"
        "for _ in range(6):\n"
        "    cv2.resize(big, (1000, 1000))  # OpenCV's pool is busy just before the workers fork\n"
        "    assert all(s.reason is None for s in scan_files(jobs, workers=2))\n"
        "print('done')\n")
    src = str(Path(medal.__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90,
                          env={**__import__("os").environ, "PYTHONPATH": src})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
