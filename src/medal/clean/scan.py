"""The parallel image scan behind `clean`: read and fully decode every file, return a small summary.

Workers get chunks of paths and send back one `FileScan` per file (a few
numbers and strings, never pixels), so memory stays flat however large the
dataset. The decode is `medal.images.decode.decode_rgb`, the very function training
and inference use, so a file that passes here loads there.
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from medal.core.log import progress
from medal.images.cache import CacheSpec, write_cached
from medal.images.decode import (
    decode_rgb,
    exif_orientation,
    is_truncated,
    jpeg_header,
    png_problem,
    sniff_format,
)


class FileScan(NamedTuple):
    """What the scan learnt about one file. `reason` is set when the file is unusable."""
    reason: str | None = None
    detail: str = ""
    n_bytes: int = 0
    width: int = 0
    height: int = 0
    digest: str = ""     # blake2b-128 of the bytes: equal digests are byte-identical files
    phash: int = 0       # 64-bit perceptual hash, as an unsigned int
    blank: float = 0.0   # share of the pixels in the most common exact colour
    notes: str = ""      # normalisations decode_rgb applies, ';'-joined (greyscale, cmyk, alpha, ...)
    cached: bool = False


class TestScan(NamedTuple):
    """The scan of the test images (sample_submission's ids): nothing is dropped, the findings are reported."""
    images: int               # ids in the sample submission
    scans: list[FileScan]     # one per image read (ids outside the test folder are not)
    findings: pd.DataFrame    # id, reason, detail: one row per image inference could not read
    seconds: float


class ScanJob(NamedTuple):
    path: str
    cache_path: str | None = None  # where the resized copy goes; None: no cache


def scan_file(job: ScanJob, cache: CacheSpec | None = None) -> FileScan:
    """Read, check and fully decode one file; resize it into the cache when asked."""
    path = Path(job.path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return FileScan("missing_file", f"{path} not found")
    except OSError as err:  # a folder, no permission, an I/O error
        return FileScan("unreadable", f"{path}: {err.strerror or err}")
    if not data:
        return FileScan("empty_file", f"{path} is 0 bytes")
    fmt = sniff_format(data)
    problem = _structure_problem(fmt, data)
    if problem is not None:
        return FileScan(problem[0], f"{path} ({fmt}, {len(data)} bytes): {problem[1]}", len(data))
    image = decode_rgb(data)
    if image is None:
        if fmt is None:
            return FileScan("not_an_image", f"{path} starts with {data[:16]!r}", len(data))
        return FileScan("corrupt", f"{path} ({fmt}, {len(data)} bytes) cannot be decoded by OpenCV or PIL", len(data))
    cached = False
    if cache is not None and job.cache_path is not None:
        cached = write_cached(image, Path(job.cache_path), path, cache)
    height, width = image.shape[:2]
    return FileScan(None, "", len(data), width, height, hashlib.blake2b(data, digest_size=16).hexdigest(),
                    perceptual_hash(image), blank_fraction(image), _notes(data, fmt), cached)


def _structure_problem(fmt: str | None, data: bytes) -> tuple[str, str] | None:
    if fmt == "png":
        return png_problem(data)
    if is_truncated(fmt, data):
        return "truncated", "no end-of-image marker"
    return None


# scipy.fftpack's unnormalised DCT-II (what imagehash uses) is OpenCV's orthonormal one times sqrt(2N) per
# axis, and times 2*sqrt(N) at frequency 0; only the ratio sqrt(2) matters for a comparison with the median.
_DCT_SCALE = np.ones((8, 8))
_DCT_SCALE[0, :] *= np.sqrt(2)
_DCT_SCALE[:, 0] *= np.sqrt(2)


def perceptual_hash(image: np.ndarray) -> int:
    """The 64-bit perceptual hash of imagehash.phash (2-D DCT of a 32x32 grey image; the 8x8 lowest
    frequencies against their median), as an unsigned int.

    It is imagehash's algorithm, bit for bit on the same 32x32 input (a test checks), computed with
    OpenCV: imagehash.phash costs several times the decode of a 128 px JPEG, which would halve the scan.
    """
    small = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float64)
    low = cv2.dct(grey)[:8, :8] * _DCT_SCALE
    ordered = np.sort(low, axis=None)
    bits = low > (ordered[31] + ordered[32]) / 2  # the median of 64 values
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def blank_fraction(image: np.ndarray, samples: int = 64) -> float:
    """Share of pixels equal to the most common exact colour, on a grid of at most samples x samples pixels
    (nearest pixels, not averaged: averaging would blur a placeholder's text into its background)."""
    step_y = max(1, image.shape[0] // samples)
    step_x = max(1, image.shape[1] // samples)
    grid = image[::step_y, ::step_x]
    packed = np.sort((grid[..., 0].astype(np.uint32) << 16) | (grid[..., 1].astype(np.uint32) << 8) | grid[..., 2],
                     axis=None)
    ends = np.flatnonzero(packed[1:] != packed[:-1])  # last index of every run but the final one
    if ends.size == 0:
        return 1.0
    longest = max(int(ends[0]) + 1, int(np.diff(ends).max(initial=0)), packed.size - 1 - int(ends[-1]))
    return longest / packed.size


_MODE_NOTES = {"L": "greyscale", "LA": "greyscale;alpha", "P": "palette", "PA": "palette;alpha", "RGBA": "alpha",
               "CMYK": "cmyk", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "16-bit", "1": "bilevel"}


def _notes(data: bytes, fmt: str | None) -> str:
    """The odd-but-valid traits decode_rgb normalises, from the header alone (no second decode)."""
    if fmt == "jpeg":  # the common case, read from the marker segments: PIL's header parse costs as much as a decode
        components, has_exif = jpeg_header(data)
        notes = [{1: "greyscale", 4: "cmyk"}.get(components, "")]
        if has_exif and exif_orientation(data, force=True) != 1:
            notes.append("exif-rotated")
        return ";".join(n for n in notes if n)
    try:
        with Image.open(io.BytesIO(data)) as pil:
            notes = _MODE_NOTES.get(pil.mode, "").split(";")
            if "transparency" in pil.info and "alpha" not in notes:
                notes.append("alpha")
            if fmt == "png" and data[24] == 16 and "16-bit" not in notes:  # IHDR bit depth
                notes.append("16-bit")
            if pil.getexif().get(0x0112, 1) not in (1, None):
                notes.append("exif-rotated")
    except Exception:  # decode_rgb succeeded, so PIL's header opinion is only a note
        return ""
    return ";".join(n for n in notes if n)


def default_workers() -> int:
    """The CPU cores this process may run on (affinity-aware, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _init_worker(parent: int) -> None:
    _die_with_parent(parent)
    # The processes are the parallelism; OpenCV's own threads would only contend. 0 (run serially), not 1:
    # after a fork from a parent that has used OpenCV's thread pool, setNumThreads(1) hangs (OpenCV 5,
    # pthreads backend), while 0 is what DataLoader workers set too.
    cv2.setNumThreads(0)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when `parent` dies (Linux; elsewhere a no-op). A killed clean
    (SIGKILL, an out-of-memory kill) runs no cleanup, and its workers would otherwise scan on, or wait
    for work, forever."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died between the fork and prctl: the signal was then never armed.
    if os.getppid() != parent:
        os._exit(1)


def _scan_chunk(jobs: list[ScanJob], cache: CacheSpec | None) -> list[FileScan]:
    return [_scan_safely(job, cache) for job in jobs]


def _scan_safely(job: ScanJob, cache: CacheSpec | None) -> FileScan:
    """scan_file, with any unforeseen decoder error (an OpenCV size limit, a decompression bomb) turned
    into a finding that names the file, instead of a traceback that stops the whole scan."""
    try:
        return scan_file(job, cache)
    except Exception as err:  # noqa: BLE001 - reported per file, never silently
        return FileScan("corrupt", f"{job.path}: {type(err).__name__}: {err}")


def scan_files(jobs: list[ScanJob], workers: int = 0, cache: CacheSpec | None = None,
               desc: str = "scan") -> list[FileScan]:
    """One FileScan per job, in job order, over `workers` processes (0: every core) with a progress bar."""
    workers = workers or default_workers()
    chunk = max(16, min(256, len(jobs) // (workers * 8) + 1))
    chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
    bar = progress(None, total=len(jobs), desc=desc, unit="img")
    results: list[FileScan] = []
    try:
        if workers == 1 or len(chunks) <= 1:
            for part in chunks:
                results.extend(_scan_chunk(part, cache))
                bar.update(len(part))
            return results
        # fork: workers start in milliseconds and inherit the imports; spawn re-imports torch per worker.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context, initializer=_init_worker,
                                 initargs=(os.getpid(),)) as pool:
            for part in pool.map(partial(_scan_chunk, cache=cache), chunks):
                results.extend(part)
                bar.update(len(part))
        return results
    except BrokenProcessPool as err:
        raise OSError(f"a scan worker process died ({err}); out of memory? Rerun with clean.workers=1 "
                      "to scan in one process") from None
    finally:
        bar.close()
