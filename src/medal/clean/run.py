"""clean: decode every training image and account for every row, kept or dropped with a reason.

Checks run in order: the row's text (label, repeated id), the id (inside the
training folder: a file outside it is never opened), the file (present,
readable, an image, complete, decodable), the image against its peers (size,
aspect, blank), and duplicates (exact and near, label conflicts). Each finding
has a reason code (`REASONS`); the config's policy drops or keeps it. The test
images (sample_submission's ids) are decoded too, and only reported. Source
files are only read. Outputs, under <output_dir>/<competition>/: clean.csv,
dropped.csv (reason, detail), findings.csv (every finding, kept ones too, and
unlisted files), duplicates.csv, test_findings.csv, clean_report.md and
clean_report.json, then clean.manifest.json (medal.core.provenance).
"""
from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from medal.clean.checks import (
    ALWAYS_DROP,
    REASONS,
    Finding,
    image_findings,
    label_findings,
)
from medal.clean.duplicates import find_duplicates
from medal.clean.report import output_files, recorded_outputs, write_reports
from medal.clean.scan import FileScan, ScanJob, TestScan, default_workers, scan_files
from medal.core import layout, provenance
from medal.core.config import Config
from medal.core.io import remove_stale_temporaries
from medal.core.locks import exclusive
from medal.core.log import get_logger, set_progress
from medal.core.tables import read_sample_submission, read_train_table, split_labels
from medal.images.cache import cache_dir, cached_name
from medal.images.paths import cache_spec, image_folder, outside_folder

__all__ = ["REASONS", "run_clean"]


def scan_jobs(cfg: Config, ids: list[str], split: str) -> list[ScanJob]:
    """One scan job per id: its source file and, when the cache is on, where its resized copy goes."""
    spec = cache_spec(cfg)
    ext = cfg.data.image_ext
    # The paths source_path and cached_file give, joined as text: pathlib costs more per file than hashing it.
    folder = str(image_folder(cfg, split))
    cache = None if spec is None else str(cache_dir(cfg.data_dir, split, spec))
    return [ScanJob(os.path.join(folder, f"{i}{ext}"),
                    None if cache is None else cached_name(cache, f"{i}{ext}", spec.fmt)) for i in ids]


def outside_findings(cfg: Config, ids: list[str], split: str) -> dict[str, Finding]:
    """The ids whose file resolves outside the split's image folder, each with its outside_data_dir finding.
    Their files are never opened, so nothing of them (say /etc/passwd) can reach an output."""
    folder = image_folder(cfg, split)
    what = "training" if split == "train" else "test"
    return {i: ("outside_data_dir", f"{i}{cfg.data.image_ext} resolves outside the {what} folder {folder}")
            for i in outside_folder(cfg, ids, split)}


def _label_key(label: object, sep: str | None) -> str:
    """A label as compared between duplicates: multi-label rows as their sorted set."""
    return str(label) if sep is None else " ".join(sorted(set(split_labels(str(label), sep))))


def find_problems(cfg: Config, table: pd.DataFrame) -> tuple[list[list[Finding]], dict]:
    """Every finding per row of the training table, in row order, and what the scan measured."""
    d, c = cfg.data, cfg.clean
    ids = table[d.id_col].astype(str).tolist()
    findings = [[f] if f else [] for f in label_findings(table, d.id_col, d.label_col, d.train_csv, c.classes, d.label_sep)]
    rows = [r for r, found in enumerate(findings) if not found or found[0][0] not in ALWAYS_DROP]
    outside = outside_findings(cfg, [ids[r] for r in rows], "train")
    for r in rows:
        if ids[r] in outside:
            findings[r].append(outside[ids[r]])
    rows = [r for r in rows if ids[r] not in outside]
    start = time.perf_counter()
    scans = scan_files(scan_jobs(cfg, [ids[r] for r in rows], "train"), c.workers, cache_spec(cfg), "clean: scan")
    seconds = time.perf_counter() - start
    for r, scan in zip(rows, scans):
        if scan.reason is not None:
            findings[r].append((scan.reason, scan.detail))
    if scans and all(s.reason == "missing_file" for s in scans):
        raise FileNotFoundError(f"none of the {len(scans)} files train.csv lists exists (the first is "
                                f"{scans[0].detail.removesuffix(' not found')}): check data.train_dir and data.image_ext")
    good = [(r, s) for r, s in zip(rows, scans) if s.reason is None]
    names = [f"{i}{d.image_ext}" for i in ids]
    _add_image_findings(cfg, good, names, findings)
    dup_frame = _add_duplicate_findings(cfg, table, good, names, findings)
    stats = {"scanned": len(rows), "seconds": seconds, "good": good, "duplicates": dup_frame}
    return findings, stats


def _add_image_findings(cfg: Config, good: list[tuple[int, FileScan]], names: list[str],
                        findings: list[list[Finding]]) -> None:
    c = cfg.clean
    column = lambda name: np.array([getattr(s, name) for _, s in good])  # noqa: E731
    per_image = image_findings(column("width"), column("height"), column("n_bytes"), column("blank"), c.min_side,
                               c.max_aspect, c.small_bytes_ratio, c.small_pixels_ratio, c.blank_fraction)
    for (r, _), found in zip(good, per_image):
        findings[r].extend((reason, f"{names[r]}: {detail}") for reason, detail in found)


def _add_duplicate_findings(cfg: Config, table: pd.DataFrame, good: list[tuple[int, FileScan]], names: list[str],
                            findings: list[list[Finding]]) -> pd.DataFrame:
    d, c = cfg.data, cfg.clean
    all_ids, all_labels = table[d.id_col].astype(str).tolist(), table[d.label_col].tolist()
    ids = [all_ids[r] for r, _ in good]
    labels = [_label_key(all_labels[r], d.label_sep) for r, _ in good]
    hashes = np.array([s.phash for _, s in good], dtype=np.uint64)
    frame, dup_findings = find_duplicates(ids, labels, [s.digest for _, s in good], hashes, c.near_duplicates,
                                          c.near_threshold, c.conflict_resolution)
    for (r, _), found in zip(good, dup_findings):
        findings[r].extend((reason, f"{names[r]}: {detail}") for reason, detail in found)
    frame.insert(0, "row", [good[p][0] for p in frame["position"]])
    return frame.drop(columns="position")


def decide(findings: list[list[Finding]], policy: dict[str, str]) -> list[Finding | None]:
    """Per row, the finding that drops it (the first whose action is drop), or None when it is kept."""
    def drops(reason: str) -> bool:
        return reason in ALWAYS_DROP or policy.get(reason) == "drop"
    return [next((f for f in found if drops(f[0])), None) for found in findings]


def unlisted_files(cfg: Config, ids: list[str], test_ids: list[str] | None) -> list[str]:
    """Files under the training folder that no CSV row names (test ids excluded when both share a folder)."""
    d = cfg.data
    folder = d.root / d.train_dir
    listed = {os.path.normpath(f"{i}{d.image_ext}") for i in ids}
    if os.path.normpath(d.train_dir) == os.path.normpath(d.test_dir) and test_ids is not None:
        listed |= {os.path.normpath(f"{i}{d.image_ext}") for i in test_ids}
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        prefix = os.path.relpath(parent, folder)
        for name in sorted(files):
            rel = name if prefix == "." else os.path.join(prefix, name)
            if not name.startswith(".") and rel not in listed:
                found.append(rel)
    return found


def read_test_ids(cfg: Config) -> list[str] | None:
    """sample_submission's ids, the test set; None when the competition has no sample submission."""
    d = cfg.data
    if not (d.root / d.sample_submission).is_file():
        get_logger().warning("clean: %s not found, so no test image is checked%s", d.root / d.sample_submission,
                             " or cached" if cache_spec(cfg) is not None else "")
        return None
    return read_sample_submission(cfg)[d.id_col].astype(str).tolist()


def scan_test_images(cfg: Config, ids: list[str]) -> TestScan:
    """Decode every test image, as the training images (writing its cached copy when the cache is on), so that a
    file inference cannot read is reported now. Nothing is dropped: each test image needs a prediction."""
    outside = outside_findings(cfg, ids, "test")
    inside = [i for i in ids if i not in outside]
    start = time.perf_counter()
    scans = scan_files(scan_jobs(cfg, inside, "test"), cfg.clean.workers, cache_spec(cfg), "clean: test images")
    seconds = time.perf_counter() - start
    by_id = {**{i: (s.reason, s.detail) for i, s in zip(inside, scans) if s.reason is not None}, **outside}
    found = pd.DataFrame([(i, *by_id[i]) for i in ids if i in by_id], columns=[cfg.data.id_col, "reason", "detail"])
    return TestScan(len(ids), scans, found, seconds)


def _clean(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    d = cfg.data
    inputs = _inputs(cfg)  # hashed before they are read, so the manifest holds what this run read
    table = read_train_table(cfg)
    test_ids = read_test_ids(cfg)
    spec = cache_spec(cfg)
    get_logger().info("%s: clean %d rows of %s (%d images) and %s test images, on %d worker processes%s -> %s",
                      d.competition, len(table), d.train_csv, table[d.id_col].nunique(),
                      len(test_ids) if test_ids is not None else "no", cfg.clean.workers or default_workers(),
                      f", caching copies at most {spec.max_side}px" if spec is not None else "", cfg.data_dir)
    findings, stats = find_problems(cfg, table)
    drop_by = decide(findings, cfg.clean.policy)
    is_dropped = np.array([f is not None for f in drop_by], dtype=bool)
    kept = table[~is_dropped]
    dropped = table[is_dropped].copy()
    dropped["reason"] = [f[0] for f in drop_by if f is not None]
    dropped["detail"] = [f[1] for f in drop_by if f is not None]
    # Nothing is lost silently: every input row is in exactly one output, in its original order.
    assert kept.index.intersection(dropped.index).empty and kept.index.union(dropped.index).equals(table.index), \
        "clean lost or repeated rows"
    ids = table[d.id_col].astype(str).tolist()
    unlisted = unlisted_files(cfg, ids, test_ids)
    test = scan_test_images(cfg, test_ids) if test_ids is not None else None
    provenance.invalidate(layout.clean_manifest(cfg))
    write_reports(cfg, table, kept.reset_index(drop=True), dropped.reset_index(drop=True), findings, drop_by,
                  unlisted, stats, test)
    _write_manifest(cfg, inputs)
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


# The data keys that shape clean's outputs (the rest name things clean does not read, or are runtime keys).
_DATA_SETTINGS = ("train_csv", "train_dir", "test_dir", "sample_submission", "id_col", "label_col", "image_ext",
                  "label_sep", "cache_max_side", "cache_format")


def _inputs(cfg: Config) -> list[provenance.Input]:
    """train.csv, under its key and with its hash now. Not sample_submission.csv: the test scan is a report, and
    a Kaggle code competition swaps in the hidden test set at scoring time, which must not make clean.csv, the
    folds and every model stale (infer records the sample it predicted)."""
    key = "train.csv"
    path = layout.competition_files(cfg)[key]
    return [provenance.Input(path, key=key, digest=provenance.sha256(path))] if path.is_file() else []


def _write_manifest(cfg: Config, inputs: list[provenance.Input]) -> None:
    d = cfg.data
    settings = {"data": {key: getattr(d, key) for key in _DATA_SETTINGS},
                "clean": cfg.clean.model_dump(mode="json", exclude={"workers"})}
    provenance.write_manifest(layout.clean_manifest(cfg), cfg, "clean", made=f"{layout.clean_csv(cfg).name} was made",
                              settings=settings, inputs=inputs,
                              outputs=recorded_outputs(cfg))


def run_clean(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write clean.csv, dropped.csv, findings.csv, duplicates.csv, test_findings.csv and the report, then the
    manifest that ties them to train.csv; return (kept, dropped). One clean per output folder at a time."""
    set_progress(cfg.report.progress_steps, cfg.report.progress_seconds)
    with exclusive(layout.lock_file(cfg.data_dir, "clean"), f"clean of {cfg.data.competition}"):
        # Only clean's own temporaries: folds writes into the same folder.
        names = [p.name for p in (*output_files(cfg), layout.clean_manifest(cfg))]
        remove_stale_temporaries(cfg.data_dir, names)
        return _clean(cfg)
