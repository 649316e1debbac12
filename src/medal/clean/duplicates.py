"""Duplicate images: exact (same bytes) and near (perceptual hashes a few bits apart), grouped.

Groups are connected components of the "is a duplicate of" graph (scipy), so
A~B and B~C put A, B and C in one group. `folds` keeps every group inside one
fold; rows whose group disagrees on the label are flagged.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from medal.clean.checks import Finding
from medal.core.graph import connected_groups

_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array (numpy >= 2 has it built in)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_BITS[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1)


def near_pairs(hashes: np.ndarray, threshold: int, max_cells: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j whose 64-bit hashes differ in at most `threshold` bits.

    Every pair is compared (exact, no index to tune), in row blocks of at most
    `max_cells` comparisons so memory stays bounded: 100k images take tens of seconds.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    block = max(1, max_cells // max(n, 1))
    left, right = [], []
    for start in range(0, n, block):
        rows = hashes[start:start + block, None] ^ hashes[None, start:]
        i, j = np.nonzero(popcount64(rows) <= threshold)
        keep = j > i  # columns start at `start`, so the block's own diagonal is i == j
        left.append(i[keep] + start)
        right.append(j[keep] + start)
    if not left:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(left).astype(np.int64), np.concatenate(right).astype(np.int64)


def group_rows(digests: list[str], hashes: np.ndarray, near: bool, threshold: int) -> np.ndarray:
    """A component number per row: rows with equal digests, or (when `near`) hashes within `threshold`
    bits, share one. Numbered in order of each component's first row, so the result is deterministic."""
    n = len(digests)
    first: dict[str, int] = {}
    left = []
    right = []
    for row, digest in enumerate(digests):
        left.append(first.setdefault(digest, row))
        right.append(row)
    if near and n:
        i, j = near_pairs(hashes, threshold)
        left.extend(i.tolist())
        right.extend(j.tolist())
    return connected_groups(n, left, right)


def _disagrees(labels: list[str], resolution: str) -> list[bool]:
    """Which members of one group to flag for a label conflict (none when the labels agree)."""
    counts = Counter(labels)
    if len(counts) <= 1:
        return [False] * len(labels)
    top, top_count = counts.most_common(1)[0]
    if resolution == "majority" and top_count * 2 > len(labels):
        return [label != top for label in labels]
    return [True] * len(labels)


def find_duplicates(ids: list[str], labels: list[str], digests: list[str], hashes: np.ndarray, near: bool,
                    threshold: int, resolution: str) -> tuple[pd.DataFrame, list[list[Finding]]]:
    """Duplicate groups of the scanned rows, and per row its duplicate findings.

    Returns a frame of the rows in groups of two or more (position; group, the
    merged component; kind, exact when all its files are byte-identical, else
    near; exact_group, the set of byte-identical files the row belongs to, or
    ""; conflict) and, per row, duplicate_conflict / near_duplicate_conflict /
    duplicate_copy findings. `labels` are compared as given (pass multi-label
    rows as a canonical string).
    """
    components = group_rows(digests, hashes, near, threshold)
    findings: list[list[Finding]] = [[] for _ in ids]
    members: dict[int, list[int]] = {}
    for row, component in enumerate(components):
        members.setdefault(int(component), []).append(row)
    copies = Counter(digests)
    exact_names: dict[str, str] = {}
    for digest in digests:  # byte-identical sets, numbered in row order
        if copies[digest] > 1 and digest not in exact_names:
            exact_names[digest] = f"e{len(exact_names) + 1:04d}"
    records = []
    groups = [rows for rows in members.values() if len(rows) > 1]
    for number, rows in enumerate(sorted(groups, key=lambda r: r[0])):
        name = f"g{number + 1:04d}"
        kind = "exact" if len({digests[r] for r in rows}) == 1 else "near"
        flagged = _flag_group(rows, ids, labels, digests, resolution, name, findings)
        records += [(r, name, kind, exact_names.get(digests[r], ""), r in flagged) for r in rows]
    frame = pd.DataFrame(records, columns=["position", "group", "kind", "exact_group", "conflict"])
    return frame, findings


def _flag_group(rows: list[int], ids: list[str], labels: list[str], digests: list[str], resolution: str,
                name: str, findings: list[list[Finding]]) -> set[int]:
    """Add the group's findings to `findings`; return the rows flagged for a label conflict."""
    members = ", ".join(f"{ids[r]} ({labels[r]})" for r in rows[:6]) + (" ..." if len(rows) > 6 else "")
    flagged = set()
    by_digest: dict[str, list[int]] = {}
    for r in rows:
        by_digest.setdefault(digests[r], []).append(r)
    for same in by_digest.values():  # byte-identical copies first: their conflict is certain
        for r, bad in zip(same, _disagrees([labels[r] for r in same], resolution)):
            if bad:
                flagged.add(r)
                findings[r].append(("duplicate_conflict", f"group {name}: {members}"))
        agreeing = [r for r in same if r not in flagged]
        for r in agreeing[1:]:
            findings[r].append(("duplicate_copy", f"group {name}: same bytes as {ids[agreeing[0]]}"))
    rest = [r for r in rows if r not in flagged]
    for r, bad in zip(rest, _disagrees([labels[r] for r in rest], resolution)):
        if bad:
            flagged.add(r)
            findings[r].append(("near_duplicate_conflict", f"group {name}: {members}"))
    return flagged
