"""clean's findings: the reason codes, the per-row label checks and the checks relative to the dataset.

A finding is (reason, detail). A row may collect several; the first whose
policy is `drop` decides its fate, and every finding is reported.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from medal.core.tables import split_labels

# Reason codes, each with the sentence the report uses for it, in the order they are checked.
REASONS = {
    "missing_label": "the label is empty",
    "unknown_label": "the label is not one of the competition's classes",
    "duplicate_id": "the id appears more than once in the CSV (first row kept)",
    "outside_data_dir": "the id leads outside the image folder (an absolute path, '..' or a symlink): never opened",
    "missing_file": "the CSV lists a file that does not exist",
    "unreadable": "the file exists but cannot be read (a folder, or no permission)",
    "empty_file": "the file has zero bytes",
    "not_an_image": "the file's bytes are not any image format",
    "truncated": "the file is cut short",
    "corrupt": "the file is damaged (bad PNG CRC) or cannot be decoded",
    "degenerate": "the image is smaller than clean.min_side on a side",
    "extreme_aspect": "the image is more than clean.max_aspect times longer than it is wide (or the reverse)",
    "small_file": "the file is far smaller in bytes than the median file (clean.small_bytes_ratio)",
    "small_image": "the image has far fewer pixels than the median image (clean.small_pixels_ratio)",
    "blank": "one colour covers most of the image (clean.blank_fraction): empty or a placeholder",
    "duplicate_conflict": "byte-identical copies of the image carry different labels",
    "near_duplicate_conflict": "near-identical images (perceptual hash) carry different labels",
    "duplicate_copy": "a byte-identical copy of an earlier row with the same label",
    "unlisted_file": "an image in the training folder that no CSV row lists (reported, never dropped)",
}

# Findings that leave no usable row: dropped whatever the policy says.
ALWAYS_DROP = ("missing_label", "duplicate_id", "outside_data_dir", "missing_file", "unreadable", "empty_file",
               "not_an_image", "truncated", "corrupt")

Finding = tuple[str, str]

MIN_PEERS = 20  # the size checks relative to the median run only over at least this many decoded images
BLANK_MIN_PIXELS = 64  # a few pixels are trivially "one colour"; degenerate and small_image judge those


def label_findings(table: pd.DataFrame, id_col: str, label_col: str, csv_name: str, classes: list[str],
                   sep: str | None) -> list[Finding | None]:
    """missing_label, unknown_label or duplicate_id per row (None when the row's text is fine)."""
    labels = [None if pd.isna(v) else str(v) for v in table[label_col]]
    parts = [split_labels(v, sep) if v is not None else [] for v in labels]
    known = set(classes) if classes else None
    variants = _label_variants([p for row in parts for p in row]) if known is None else {}
    duplicated = table[id_col].duplicated(keep="first").to_numpy()
    first_label = dict(zip(table[id_col].iloc[::-1], labels[::-1]))
    out: list[Finding | None] = []
    for row, (image_id, row_parts, is_dup) in enumerate(zip(table[id_col], parts, duplicated)):
        where = f"row {row + 2} of {csv_name} ({image_id})"
        if pd.isna(image_id) or not str(image_id).strip():
            out.append(("missing_file", f"row {row + 2} of {csv_name} has an empty id"))
        elif not row_parts:
            out.append(("missing_label", where))
        elif is_dup:
            out.append(("duplicate_id", f"row {row + 2} of {csv_name} repeats id {image_id} "
                                        f"(first labelled {first_label[image_id]!r}, this one {labels[row]!r})"))
        elif known is not None and any(p not in known for p in row_parts):
            bad = [p for p in row_parts if p not in known]
            out.append(("unknown_label", f"{where}: {bad} not in clean.classes"))
        elif any(p in variants for p in row_parts):
            bad = next(p for p in row_parts if p in variants)
            out.append(("unknown_label", f"{where}: {bad!r} looks like a variant of {variants[bad]!r}"))
        else:
            out.append(None)
    return out


def _label_variants(labels: list[str]) -> dict[str, str]:
    """Labels that differ from a more common label only in case or surrounding spaces -> that label."""
    counts = pd.Series(labels, dtype=object).value_counts(sort=False)
    by_key: dict[str, list[tuple[int, str]]] = {}
    for label, count in counts.items():
        by_key.setdefault(" ".join(str(label).split()).casefold(), []).append((-int(count), str(label)))
    variants = {}
    for group in by_key.values():
        if len(group) > 1:
            canonical = min(group)[1]  # the most common spelling; ties broken by the text itself
            variants.update({label: canonical for _, label in group if label != canonical})
    return variants


def image_findings(width: np.ndarray, height: np.ndarray, n_bytes: np.ndarray, blank: np.ndarray,
                   min_side: int, max_aspect: float, bytes_ratio: float, pixels_ratio: float,
                   blank_fraction: float) -> list[list[Finding]]:
    """Per decoded image: degenerate, extreme_aspect, small_file, small_image, blank findings.

    Sizes are judged against the median over the same images, so the thresholds
    follow the dataset (128 px thumbnails or 12 MP photos alike).
    """
    pixels = width.astype(np.float64) * height
    # "Far smaller than its peers" needs peers: with a handful of images the median says nothing.
    has_peers = len(n_bytes) >= MIN_PEERS
    median_bytes = float(np.median(n_bytes)) if has_peers else 0.0
    median_pixels = float(np.median(pixels)) if has_peers else 0.0
    out = []
    for w, h, b, px, frac in zip(width, height, n_bytes, pixels, blank):
        found: list[Finding] = []
        if min(w, h) < min_side:
            found.append(("degenerate", f"{w}x{h} px"))
        elif max(w, h) > max_aspect * min(w, h):
            found.append(("extreme_aspect", f"{w}x{h} px, aspect {max(w, h) / min(w, h):.1f}"))
        if b < bytes_ratio * median_bytes:
            found.append(("small_file", f"{b} bytes, {b / median_bytes:.3f} of the median {median_bytes:.0f}"))
        if px < pixels_ratio * median_pixels:
            found.append(("small_image", f"{w}x{h} px, {px / median_pixels:.3f} of the median {median_pixels:.0f} px"))
        if frac >= blank_fraction and px >= BLANK_MIN_PIXELS:
            found.append(("blank", f"one colour covers {frac:.1%} of the pixels"))
        out.append(found)
    return out
