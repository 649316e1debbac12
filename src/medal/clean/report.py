"""clean's outputs: the two CSVs that partition the input, the findings, the duplicate groups, the report."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from medal.clean.checks import REASONS, Finding
from medal.clean.scan import TestScan
from medal.core import layout
from medal.core.config import Config, config_snapshot
from medal.core.io import write_csv, write_json, write_text
from medal.core.log import get_logger
from medal.core.report import Document

_LOG_LINES = 20  # dropped rows logged one by one; the rest are in dropped.csv
_EXAMPLES = 5  # test images named per kind of finding in the log and the JSON; all are in test_findings.csv


def recorded_outputs(cfg: Config) -> list[Path]:
    """The outputs clean's manifest records: the files later stages and people act on."""
    out = cfg.data_dir
    return [layout.clean_csv(cfg), layout.dropped_csv(cfg), layout.duplicates_csv(cfg), out / "findings.csv",
            out / "test_findings.csv"]


def output_files(cfg: Config) -> list[Path]:
    """Every file clean writes into the competition's output folder (the manifest aside)."""
    out = cfg.data_dir
    return [*recorded_outputs(cfg), out / "clean_report.json", out / "clean_report.md", out / "clean_config.yaml"]


def findings_frame(cfg: Config, table: pd.DataFrame, findings: list[list[Finding]], drop_by: list[Finding | None],
                   unlisted: list[str]) -> pd.DataFrame:
    """Every finding: CSV line, id, label, reason, detail, and action: dropped (this finding dropped the row),
    kept (the policy keeps it), dropped_other (the row went for another finding) or reported (unlisted files)."""
    d = cfg.data
    records = []
    for r, found in enumerate(findings):
        for finding in found:
            action = "kept" if drop_by[r] is None else "dropped" if finding == drop_by[r] else "dropped_other"
            records.append((r + 2, table[d.id_col].iat[r], table[d.label_col].iat[r], *finding, action))
    records += [(None, name, None, "unlisted_file", f"{d.train_dir}/{name}", "reported") for name in unlisted]
    return pd.DataFrame(records, columns=["csv_line", d.id_col, d.label_col, "reason", "detail", "action"])


def duplicates_frame(cfg: Config, table: pd.DataFrame, groups: pd.DataFrame, is_dropped: np.ndarray) -> pd.DataFrame:
    """duplicates.csv: id, label, group (what folds keeps together), kind (exact / near), exact_group (the row's
    set of byte-identical files, or empty), conflict, dropped; grouped, in row order."""
    d = cfg.data
    rows = groups["row"].to_numpy(dtype=np.int64)
    frame = pd.DataFrame({d.id_col: table[d.id_col].to_numpy()[rows], d.label_col: table[d.label_col].to_numpy()[rows],
                          "group": groups["group"].to_numpy(), "kind": groups["kind"].to_numpy(),
                          "exact_group": groups["exact_group"].to_numpy(), "conflict": groups["conflict"].to_numpy(),
                          "dropped": is_dropped[rows]})
    return frame.sort_values(["group"], kind="stable").reset_index(drop=True)


def summary(cfg: Config, table: pd.DataFrame, kept: pd.DataFrame, dropped: pd.DataFrame, found: pd.DataFrame,
            dups: pd.DataFrame, stats: dict, test: TestScan | None) -> dict:
    """The JSON report: counts per reason (dropped and found), duplicates, normalised images, the scan."""
    good = stats["good"]
    by_group = dups.groupby("group", sort=True) if len(dups) else None
    report = {
        "rows": len(table), "kept": len(kept), "dropped": len(dropped),
        "by_reason": dict(Counter(dropped["reason"])),
        "findings": dict(Counter(found["reason"])),
        "policy": dict(cfg.clean.policy),
        "duplicates": {
            "groups": int(dups["group"].nunique()),
            "exact_groups": int(dups.loc[dups["exact_group"] != "", "exact_group"].nunique()),
            "near_groups": int(by_group["kind"].first().eq("near").sum()) if by_group is not None else 0,
            "conflicting_groups": int(by_group["conflict"].any().sum()) if by_group is not None else 0,
            "rows_in_groups": len(dups),
            "largest_group": int(by_group.size().max()) if by_group is not None else 0,
        },
        "normalised": dict(Counter(n for _, s in good for n in s.notes.split(";") if n)),
        "medians": {"bytes": float(np.median([s.n_bytes for _, s in good])) if good else 0.0,
                    "pixels": float(np.median([s.width * s.height for _, s in good])) if good else 0.0},
        "scan": {"images": stats["scanned"], "seconds": round(stats["seconds"], 3),
                 "images_per_s": round(stats["scanned"] / stats["seconds"], 1) if stats["seconds"] else None},
    }
    if test is not None:
        report["test_findings"] = test_summary(cfg, test)
    if test is not None and cfg.data.cache_max_side > 0:
        bad = [s for s in test.scans if s.reason is not None]
        report["test_cache"] = {"images": len(test.scans), "cached": sum(s.cached for s in test.scans),
                                "unreadable": [f"[{s.reason}] {s.detail}" for s in bad]}
    return report


def test_summary(cfg: Config, test: TestScan) -> dict:
    """The test images' scan for the JSON report: counts per reason and the first few ids of each."""
    found = test.findings
    ids = found.groupby("reason", sort=False)[cfg.data.id_col].agg(list) if len(found) else {}
    return {"images": test.images, "with_findings": len(found), "seconds": round(test.seconds, 3),
            "by_reason": {reason: len(members) for reason, members in ids.items()},
            "examples": {reason: members[:_EXAMPLES] for reason, members in ids.items()}}


def markdown(report: dict, dropped: pd.DataFrame, found: pd.DataFrame, dups: pd.DataFrame,
             test_found: pd.DataFrame) -> str:
    """clean_report.md: the counts, the policy, the duplicate groups that conflict, and every dropped row."""
    doc = Document("clean report").text(f"{report['rows']} rows read, {report['kept']} kept, {report['dropped']} dropped.")
    if report["findings"]:
        doc.table(pd.DataFrame([(reason, count, report["by_reason"].get(reason, 0), REASONS[reason])
                                for reason, count in Counter(found["reason"]).most_common()],
                               columns=["reason", "count", "dropped", "meaning"]), index=False)
    if report["by_reason"]:
        doc.text("Dropped rows, by reason:")
        doc.table(pd.DataFrame([(reason, count, REASONS[reason]) for reason, count in Counter(dropped["reason"]).most_common()],
                               columns=["reason", "count", "meaning"]), index=False)
    dup = report["duplicates"]
    doc.heading("Duplicates").text(
        f"{dup['exact_groups']} sets of byte-identical files; {dup['groups']} duplicate groups ({dup['near_groups']} "
        f"joined by perceptual hash), {dup['conflicting_groups']} with conflicting labels; {dup['rows_in_groups']} rows "
        "in groups (duplicates.csv). `medal folds` keeps each group in one fold.")
    conflicting = dups[dups.groupby("group")["conflict"].transform("any")] if len(dups) else dups
    id_col, label_col = dups.columns[:2]
    doc.bullets(f"{group} ({members['kind'].iat[0]}): " + ", ".join(
        f"`{i}` {label}{' (dropped)' if gone else ''}"
        for i, label, gone in zip(members[id_col], members[label_col], members["dropped"]))
        for group, members in conflicting.groupby("group"))
    if report["normalised"]:
        doc.heading("Normalised, not dropped").text(", ".join(f"{n}: {c}" for n, c in sorted(report["normalised"].items())))
    if len(dropped):
        doc.heading("Dropped rows").bullets(f"`{r}`: {d}" for r, d in zip(dropped["reason"], dropped["detail"]))
    kept = found[found["action"] == "kept"]
    if len(kept):
        doc.heading("Findings kept by the policy").bullets(f"`{r}`: {d}" for r, d in zip(kept["reason"], kept["detail"]))
    unlisted = found[found["reason"] == "unlisted_file"]
    if len(unlisted):
        doc.heading(f"{len(unlisted)} files no row lists").bullets(unlisted["detail"].head(50))
    if "test_findings" in report:
        _test_section(doc, report["test_findings"], test_found)
    return doc.markdown()


def _test_section(doc: Document, summary: dict, found: pd.DataFrame) -> None:
    doc.heading("Test images").text(
        f"{summary['images']} test images checked (the sample submission's ids), {summary['with_findings']} that "
        "inference cannot read" + (": each needs a prediction, so replace them (test_findings.csv)."
                                   if len(found) else "."))
    if len(found):
        doc.table(pd.DataFrame([(reason, count, REASONS[reason]) for reason, count in summary["by_reason"].items()],
                               columns=["reason", "count", "meaning"]), index=False)
        doc.bullets(f"`{r}`: {d}" for r, d in zip(found["reason"].head(50), found["detail"].head(50)))


def write_reports(cfg: Config, table: pd.DataFrame, kept: pd.DataFrame, dropped: pd.DataFrame,
                  findings: list[list[Finding]], drop_by: list[Finding | None], unlisted: list[str], stats: dict,
                  test: TestScan | None) -> dict:
    """Write every clean output atomically under the competition's output folder; return the JSON report."""
    out = cfg.data_dir
    is_dropped = np.array([f is not None for f in drop_by], dtype=bool)
    found = findings_frame(cfg, table, findings, drop_by, unlisted)
    dups = duplicates_frame(cfg, table, stats["duplicates"], is_dropped)
    report = summary(cfg, table, kept, dropped, found, dups, stats, test)
    # Written even without a sample submission, so that every run leaves the same files.
    test_found = test.findings if test is not None else pd.DataFrame(columns=[cfg.data.id_col, "reason", "detail"])
    write_csv(layout.clean_csv(cfg), kept)
    write_csv(layout.dropped_csv(cfg), dropped)
    write_csv(out / "findings.csv", found)
    write_csv(out / "test_findings.csv", test_found)
    write_csv(layout.duplicates_csv(cfg), dups)
    write_json(out / "clean_report.json", report)
    write_text(out / "clean_report.md", markdown(report, dropped, found, dups, test_found))
    write_text(out / "clean_config.yaml", config_snapshot(cfg))
    _log(cfg, report, dropped)
    return report


def _log(cfg: Config, report: dict, dropped: pd.DataFrame) -> None:
    log = get_logger()
    dup = report["duplicates"]
    log.info("clean: %d rows, %d kept, %d dropped -> %s (%.0f images/s)", report["rows"], report["kept"],
             report["dropped"], cfg.data_dir, report["scan"]["images_per_s"] or 0)
    log.info("clean: %d sets of byte-identical files, %d duplicate groups in all (%d near), %d with conflicting labels; "
             "%d unlisted files", dup["exact_groups"], dup["groups"], dup["near_groups"], dup["conflicting_groups"],
             report["findings"].get("unlisted_file", 0))
    if dup["largest_group"] > max(20, report["rows"] // 100):
        log.warning("clean: a duplicate group has %d rows; if they are not copies, lower clean.near_threshold",
                    dup["largest_group"])
    for reason, detail in list(zip(dropped["reason"], dropped["detail"]))[:_LOG_LINES]:
        log.info("  dropped [%s] %s", reason, detail)
    if len(dropped) > _LOG_LINES:
        log.info("  ... %d more in %s", len(dropped) - _LOG_LINES, layout.dropped_csv(cfg))
    test = report.get("test_findings")
    for reason, count in (test["by_reason"].items() if test else ()):
        examples = ", ".join(test["examples"][reason]) + (", ..." if count > _EXAMPLES else "")
        log.warning("clean: %d test image%s [%s] (%s): %s; inference cannot read %s, see %s", count,
                    "s" if count > 1 else "", reason, REASONS[reason], examples, "them" if count > 1 else "it",
                    cfg.data_dir / "test_findings.csv")
