"""Atomic writes for every output file: a crash leaves the old file or the new one, never half. A full disk or
a read-only folder is reported naming the file, and so is a CSV that is empty, not UTF-8 or malformed."""
from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

import pandas as pd

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
# torch.save reports a failed write as a RuntimeError from its C++ zip writer, e.g. "[enforce fail at
# inline_container.cc] . PytorchStreamWriter failed writing file data/0: file write failed" or "unexpected pos".
_WRITE_FAILED = re.compile(r"failed writing|write failed|failed to write|unexpected pos|no space|quota", re.IGNORECASE)
_NEARLY_FULL = 16 * 2**20  # bytes: below this a failed write is taken for a full disk


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path`. A full disk or a folder
    that cannot be written raises an OSError naming `path`; other errors pass through unchanged."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        named = _named_write_error(path, err, full=False)
        if named is None:
            raise
        raise named from None
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
    except (OSError, RuntimeError) as err:
        if isinstance(err, OSError) and err.filename is not None and str(err.filename) != tmp:
            raise  # about another file, say an input the body reads: not this write's failure
        # Measured before the partial temporary is removed: removing it frees the space it filled.
        full = _free_bytes(path.parent) < _NEARLY_FULL
        Path(tmp).unlink(missing_ok=True)
        named = _named_write_error(path, err, full)
        if named is None:
            raise
        raise named from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _named_write_error(path: Path, err: Exception, full: bool) -> OSError | None:
    """The OSError to raise instead of `err` (a full disk, a read-only folder), or None to let `err` through."""
    code = err.errno if isinstance(err, OSError) else None
    if code in _NOT_WRITABLE:
        named = type(err)(f"cannot write {path}: {err.strerror or os.strerror(code)} (is the output folder read-only?)")
    elif code in _NO_SPACE or (isinstance(err, RuntimeError) and full):
        what = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
        named = OSError(f"{what} writing {path} ({_space(path)})" + _original(err))
        code = code or errno.ENOSPC
    elif isinstance(err, RuntimeError) and _WRITE_FAILED.search(str(err)):
        named = OSError(f"writing {path} failed ({_space(path)})" + _original(err))
        code = errno.EIO
    else:
        return None
    named.errno = code  # str() stays the message above; callers can still test the errno
    return named


def _original(err: Exception) -> str:
    # torch's text says which part of the file failed; an OSError's own text repeats the errno.
    return f": {str(err).strip()}" if isinstance(err, RuntimeError) else ""


def _space(path: Path) -> str:
    folder = _existing(path.parent)
    mount = folder
    while not os.path.ismount(mount) and mount.parent != mount:
        mount = mount.parent
    return f"{_human(_free_bytes(folder))} free on {mount}"


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(_existing(folder)).free


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest ancestor that exists (a failed mkdir leaves only those)."""
    folder = folder.absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _human(size: float) -> str:
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} TB"


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


class CSVFileError(pd.errors.ParserError):
    """A CSV that cannot be read as a table: empty, not UTF-8 text, or malformed. A ValueError naming the file;
    a pandas ParserError too, so callers that catch pandas' parse errors still catch it."""


def read_csv(path: str | Path, what: str, required: list[str], str_cols: list[str] | Literal["all"] = (),
             need_rows: bool = False) -> pd.DataFrame:
    """Read a CSV between stages; name the file and what is wrong with it (missing, empty, not UTF-8, malformed,
    missing columns, and with `need_rows` a header and no rows). `str_cols`: columns kept as text, or "all"."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    frame = _parse_csv(path, what, str if str_cols == "all" else {c: str for c in str_cols})
    if need_rows and len(frame) == 0:
        raise ValueError(f"{what} {path} has a header but no rows")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} {path} lacks column(s) {missing}; it has {list(frame.columns)}")
    return frame


def _parse_csv(path: Path, what: str, dtype: Any) -> pd.DataFrame:
    size = path.stat().st_size
    if size == 0:
        raise CSVFileError(f"{what} {path} is empty (0 bytes)")
    _check_utf8_start(path, what)
    try:
        # utf-8-sig: a UTF-8 byte-order mark (Excel writes one) is skipped, not read into the first column's name.
        return pd.read_csv(path, encoding="utf-8-sig", dtype=dtype, keep_default_na=False, na_values=[""])
    except UnicodeDecodeError as err:
        raise _not_utf8(path, what, _first_bad_byte(path) or err.reason) from None
    except pd.errors.EmptyDataError:
        raise CSVFileError(f"{what} {path} is empty ({size} bytes of blank lines, no header)") from None
    except pd.errors.ParserError as err:
        # pandas numbers lines from 1 in "Expected 2 fields in line 3, saw 3" but rows from 0 in "EOF inside
        # string starting at row 2"; say "line" from 1 in both.
        detail = str(err).replace("Error tokenizing data. C error: ", "").strip()
        detail = re.sub(r"EOF inside string starting at row (\d+)",
                        lambda m: f"a quote opened on line {int(m[1]) + 1} is never closed", detail)
        raise CSVFileError(f"{what} {path} is not a well-formed CSV ({detail}); check that line's quotes "
                           f"and commas") from None


def _check_utf8_start(path: Path, what: str) -> None:
    """Refuse UTF-16 text early: without a byte-order mark its NUL bytes are valid UTF-8, so pandas would
    read it into column names full of NULs instead of failing."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _not_utf8(path, what, f"byte 0x{head[0]:02x} at position 0: a UTF-16 byte-order mark")
    nul = head.find(b"\0")
    if nul >= 0:
        raise _not_utf8(path, what, f"byte 0x00 at position {nul}: a NUL, as in UTF-16 text")


def _first_bad_byte(path: Path) -> str | None:
    """Where the first byte that is not UTF-8 is in the file; pandas gives a position within the chunk it
    was decoding."""
    data = path.read_bytes()
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        data[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        position = start + err.start
        line = data.count(b"\n", 0, position) + 1
        return f"byte 0x{data[position]:02x} at position {position}, line {line}"
    return None


def _not_utf8(path: Path, what: str, detail: str) -> CSVFileError:
    return CSVFileError(f"{what} {path} is not UTF-8 text ({detail}); save it as UTF-8")
