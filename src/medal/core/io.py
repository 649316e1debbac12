"""Atomic writes for every output file: a crash leaves the old file or the new one, never half."""
from __future__ import annotations

import glob
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp makes the file 0600; give it the mode a plain open() would, so teammates can read outputs.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def remove_stale_temporaries(folder: Path, names: list[str] | None = None) -> list[Path]:
    """Delete the temporary files (.NAME.*.tmp, see atomic_path) of writes a killed run never finished.
    The real files were never touched by those writes, so nothing is lost. `names`: only those outputs'
    temporaries (a folder that several stages write); call it while holding the stage's lock, so that a
    running writer's temporary file is never taken for a dead one."""
    if not folder.is_dir():
        return []
    patterns = [".*.tmp"] if names is None else [f".{glob.escape(name)}.*.tmp" for name in names]
    stale = sorted({p for pattern in patterns for p in folder.glob(pattern)})
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def read_csv(path: str | Path, what: str, required: list[str], str_cols: list[str] = ()) -> pd.DataFrame:
    """Read a CSV between stages; name the file and the missing columns when it is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    frame = pd.read_csv(path, dtype={c: str for c in str_cols}, keep_default_na=False, na_values=[""])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} {path} lacks column(s) {missing}; it has {list(frame.columns)}")
    return frame
