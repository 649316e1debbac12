"""Provenance: every stage's outputs carry a manifest of what made them, and every reader checks it first.

A manifest (JSON, beside the outputs, written after them) records
    made      what the outputs are, as a sentence part ("fold 2 of 'base' was trained")
    stage     the stage that wrote them, with its extra arguments and, for train and infer, the experiment
    command   the command that makes them again, as it was run
    settings  the config values that shape them (a recipe; never runtime keys such as workers or device)
    inputs    each file read: its path and content hash, and the manifest that made it, if any
    outputs   each file written: its path and content hash

`verify` re-hashes the outputs (a run killed between its writes, an edit, a damaged file) and the inputs
(an upstream stage re-run since), and walks each input's own manifest up the chain, so a stale link
anywhere is found before any work, with the commands that bring it up to date: built from the reader's own
config for the shared stages and the reader's experiment (outputs may have moved since), else as recorded.

Paths inside the output tree are stored relative to the manifest's folder, so a whole output folder can
move (for example into a Kaggle dataset). Files outside it (train.csv, sample_submission.csv) are
stored under a key and compared with the file the reader's config names now (`external`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from medal.core import layout
from medal.core.config import Config
from medal.core.io import write_json

VERSION = 1


class StaleError(ValueError):
    """An output that no longer matches what made it, or an input that changed since; the message names
    what changed and the command that brings things up to date."""


@dataclass(frozen=True)
class Input:
    """A file a stage read. `manifest`: the manifest of the stage that made it (None for competition files).
    `key`: set for files outside the output tree, which a reader locates through its own config instead.
    `digest`: the hash of the content the stage actually read, taken when it read it (default: hashed now)."""
    path: Path
    manifest: Path | None = None
    key: str | None = None
    digest: str | None = None


_HASHES: dict[tuple, str] = {}


def sha256(path: Path) -> str:
    """The file's SHA-256, remembered for this process while its size, mtime and inode stay the same
    (an atomic replace makes a new inode, so a rewritten file is hashed again)."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def command(cfg: Config | None, stage: str, *extra: str) -> str:
    """The command line that runs `stage` with this config: its file and its key=value overrides."""
    path, overrides = cfg.source if cfg is not None else (None, ())
    return shlex.join(["medal", stage, "-c", path or "CONFIG", *overrides, *extra])


# Stages whose outputs belong to one experiment; the others' are shared by every experiment of a competition.
_PER_EXPERIMENT = ("train", "infer")


def write_manifest(path: Path, cfg: Config | None, stage: str, *, made: str, settings: dict, inputs: list[Input],
                   outputs: list[Path], args: tuple[str, ...] = ()) -> dict:
    """Hash the inputs and the (already written) outputs and write the manifest, atomically and last. Each file
    is named by its key, or its path from the manifest's folder without the leading '../' (a fold's manifest
    names ../../folds.csv folds.csv): the name a stale message shows."""
    folder = path.parent
    record = {
        "version": VERSION, "made": made, "stage": stage, "args": list(args),
        "experiment": cfg.name if cfg is not None and stage in _PER_EXPERIMENT else None,
        "command": command(cfg, stage, *args), "settings": settings,
        "inputs": _unique([(i.key or _name(i.path, folder), {
            "path": _stored(i.path, folder, i.key), "sha256": i.digest or sha256(i.path),
            "manifest": None if i.manifest is None else os.path.relpath(i.manifest, folder), "key": i.key})
            for i in inputs]),
        "outputs": _unique([(_name(p, folder), {"path": os.path.relpath(p, folder), "sha256": sha256(p)})
                            for p in outputs]),
    }
    write_json(path, record)
    return record


def _name(path: Path, folder: Path) -> str:
    parts = Path(os.path.relpath(path, folder)).parts
    return "/".join(p for p in parts if p != "..")


def _unique(entries: list[tuple[str, dict]]) -> dict[str, dict]:
    named = dict(entries)
    assert len(named) == len(entries), f"two files of one manifest share a name: {[n for n, _ in entries]}"
    return named


def invalidate(path: Path) -> None:
    """Remove a manifest before its outputs are rewritten: until the new one is written, nothing reads them."""
    path.unlink(missing_ok=True)


def read_manifest(path: Path) -> dict | None:
    """The manifest at `path`, or None when there is none; a damaged one is refused, naming it."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("version") != VERSION:
            raise ValueError(f"version {record.get('version')!r}, expected {VERSION}")
        return record
    except (ValueError, OSError) as err:
        raise StaleError(f"manifest {path} cannot be read ({err}): delete it and re-run the stage that wrote it") from None


def verify(path: Path, missing: str, cfg: Config) -> dict:
    """The manifest at `path`, after checking that its outputs are the files on disk and that every input,
    and every manifest up the chain, is still current; `cfg` is the reader's, which locates the competition's
    files and words the commands. `missing`: the error when there is no manifest.
    Raises StaleError naming the first stale link and the commands that re-make it and what follows."""
    record = read_manifest(path)
    if record is None:
        raise StaleError(missing)
    found = _first_problem(path, record, cfg, [])
    if found is not None:
        raise StaleError(f"{found[0]}: run {found[1]}")
    return record


def stale_reason(path: Path, cfg: Config) -> str | None:
    """What `verify` would refuse the (existing) manifest at `path` for, without the commands; None when current."""
    found = _first_problem(path, read_manifest(path), cfg, [])
    return None if found is None else found[0]


def settings_difference(old: dict, new: dict) -> str:
    """The settings whose values differ, as `key old -> new` (dotted keys)."""
    before, after = _flatten(old), _flatten(new)
    return ", ".join(f"{k} {before.get(k)!r} -> {after.get(k)!r}"
                     for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k))


def _first_problem(path: Path, record: dict, cfg: Config, after: list[str]) -> tuple[str, str] | None:
    """The first stale link, as (what is wrong, the commands that fix it); `after`: the commands of the
    manifests downstream of this one."""
    folder = path.parent
    remake = _command(record, cfg)
    remedy = _remedy([remake, *after])
    problem = _output_problem(path, record)
    if problem is not None:
        return problem, remedy
    # Upstream first, for every input: the deepest stale link names the first command of the remedy.
    for name, entry in record["inputs"].items():
        if entry.get("manifest"):
            upstream_path = folder / entry["manifest"]
            upstream = read_manifest(upstream_path)
            if upstream is None:
                return f"{name} has no manifest ({upstream_path} is missing) since {record['made']}", remedy
            problem = _first_problem(upstream_path, upstream, cfg, [remake, *after])
            if problem is not None:
                return problem
    for name, entry in record["inputs"].items():
        current = _current(entry, folder, layout.competition_files(cfg))
        if current is None:
            continue  # a file outside the output tree that this reader's config does not name
        if not current.is_file():
            return f"{name} ({current}) no longer exists, but {record['made']} from it", remedy
        if sha256(current) != entry["sha256"]:
            return f"{name} changed since {record['made']}", remedy
    return None


def _command(record: dict, cfg: Config) -> str:
    """The command that re-makes a manifest's outputs: the reader's own for a shared stage or its own experiment,
    else the one recorded (another experiment's config)."""
    if record["experiment"] is None or record["experiment"] == cfg.name:
        return command(cfg, record["stage"], *record["args"])
    return record["command"]


def _output_problem(path: Path, record: dict) -> str | None:
    for name, entry in record["outputs"].items():
        file = path.parent / entry["path"]
        if not file.is_file():
            return f"{file} is missing, but {path.name} says {record['made']} with it (a killed run or a deletion)"
        if sha256(file) != entry["sha256"]:
            return (f"{file} is not the file written when {record['made']} (a run killed between its writes, "
                    "a damaged file or an edit)")
    return None


def _current(entry: dict, folder: Path, external: dict[str, Path]) -> Path | None:
    if entry.get("key"):
        return external.get(entry["key"])
    return folder / entry["path"]


def _stored(path: Path, folder: Path, key: str | None) -> str:
    return str(path) if key else os.path.relpath(path, folder)


def _remedy(commands: list[str]) -> str:
    unique = list(dict.fromkeys(commands))
    return ", then ".join(f"`{c}`" for c in unique)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
