"""clean: decode every training image and account for every row, kept or dropped with a reason."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from medal.config import Config, config_snapshot
from medal.data import image_path, read_train_table
from medal.decode import decode_rgb, is_truncated, sniff_format
from medal.io import write_csv, write_json, write_text
from medal.log import get_logger, progress

# Reason codes, each with the sentence the report uses for it.
REASONS = {
    "missing_label": "the label is empty",
    "duplicate_id": "the id appears more than once in the CSV (first row kept)",
    "missing_file": "the CSV lists a file that does not exist",
    "empty_file": "the file has zero bytes",
    "not_an_image": "the file's bytes are not any image format",
    "truncated": "the file is cut short",
    "corrupt": "the file has an image signature but cannot be decoded",
    "degenerate": "the image is smaller than clean.min_side on a side",
}


def check_image(path: Path, min_side: int) -> tuple[str, str] | None:
    """(reason, detail) when the image at `path` is unusable, else None."""
    if not path.is_file():
        return "missing_file", f"{path} not found"
    data = path.read_bytes()
    if not data:
        return "empty_file", f"{path} is 0 bytes"
    fmt = sniff_format(data)
    if is_truncated(fmt, data):
        return "truncated", f"{path} ({fmt}, {len(data)} bytes) has no end marker"
    image = decode_rgb(data)
    if image is None:
        if fmt is None:
            return "not_an_image", f"{path} starts with {data[:8]!r}"
        return "corrupt", f"{path} ({fmt}) cannot be decoded"
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        return "degenerate", f"{path} is {width}x{height} px"
    return None


def find_problems(cfg: Config, table: pd.DataFrame) -> list[tuple[str, str] | None]:
    """One (reason, detail) or None per row of the training table, in row order."""
    id_col, label_col = cfg.data.id_col, cfg.data.label_col
    duplicated = table[id_col].duplicated(keep="first")
    problems: list[tuple[str, str] | None] = []
    rows = zip(table[id_col], table[label_col], duplicated)
    for row, (image_id, label, is_dup) in enumerate(progress(rows, total=len(table), desc="clean")):
        if pd.isna(label):
            problems.append(("missing_label", f"row {row + 2} of {cfg.data.train_csv} ({image_id})"))
        elif is_dup:
            problems.append(("duplicate_id", f"row {row + 2} of {cfg.data.train_csv} repeats id {image_id}"))
        else:
            problems.append(check_image(image_path(cfg, image_id, "train"), cfg.clean.min_side))
    return problems


def run_clean(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write clean.csv, dropped.csv and the report under the competition's output folder."""
    log = get_logger()
    table = read_train_table(cfg)
    problems = find_problems(cfg, table)
    is_dropped = pd.Series([p is not None for p in problems], index=table.index)
    kept = table[~is_dropped].reset_index(drop=True)
    dropped = table[is_dropped].copy()
    dropped["reason"] = [p[0] for p in problems if p is not None]
    dropped["detail"] = [p[1] for p in problems if p is not None]
    dropped = dropped.reset_index(drop=True)
    # Nothing is lost silently: every input row is in exactly one output.
    assert len(kept) + len(dropped) == len(table), "clean lost rows"

    out = cfg.data_dir
    write_csv(out / "clean.csv", kept)
    write_csv(out / "dropped.csv", dropped)
    counts = Counter(dropped["reason"])
    write_json(out / "clean_report.json", {"rows": len(table), "kept": len(kept), "dropped": len(dropped), "by_reason": dict(counts)})
    write_text(out / "clean_report.md", _report_markdown(table, kept, dropped))
    write_text(out / "clean_config.yaml", config_snapshot(cfg))
    log.info("clean: %d rows, %d kept, %d dropped -> %s", len(table), len(kept), len(dropped), out)
    for reason, detail in zip(dropped["reason"], dropped["detail"]):
        log.info("  dropped [%s] %s", reason, detail)
    return kept, dropped


def _report_markdown(table: pd.DataFrame, kept: pd.DataFrame, dropped: pd.DataFrame) -> str:
    lines = ["# clean report", "", f"{len(table)} rows read, {len(kept)} kept, {len(dropped)} dropped.", ""]
    if len(dropped):
        lines += ["| reason | count | meaning |", "|---|---|---|"]
        for reason, count in Counter(dropped["reason"]).most_common():
            lines.append(f"| {reason} | {count} | {REASONS[reason]} |")
        lines += ["", "## Dropped rows", ""]
        lines += [f"- `{reason}`: {detail}" for reason, detail in zip(dropped["reason"], dropped["detail"])]
    return "\n".join(lines) + "\n"
