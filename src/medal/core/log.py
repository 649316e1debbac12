"""One logger for the whole package; stages log, they do not print.

Every loop that takes a while goes through `progress`. In a terminal it is a tqdm bar that clears itself. Anywhere
else (a pipe, a file, nohup, CI) a bar would print nothing useful, so the loop logs a line instead, every
`report.progress_steps` steps or `report.progress_seconds` seconds, whichever comes first, and at its last step:
    toy fold 0 epoch 3/8: step 40/120 (33%) 512 img/s loss 0.4321 acc 0.812 lr 2.10e-03 ETA 00:12
The command line also appends each stage's log to medal.log beside its outputs (`log_to_file`), dated.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

LOGGER_NAME = "medal"
FORMAT = "%(asctime)s %(levelname)s %(message)s"

# How often a loop logs a progress line when stderr is not a terminal (set_progress; report.progress_* keys).
_every = {"steps": 50, "seconds": 30.0}


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_logging(level: int = logging.INFO) -> None:
    """The console handler (stderr), once: medal's own is looked for, since others may hang on the logger too
    (pytest 9.2 attaches its capture handlers to every logger that does not propagate)."""
    logger = get_logger()
    if not any(getattr(handler, "medal_console", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.medal_console = True
        handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class _FolderCreatingFileHandler(logging.FileHandler):
    """Appends to its file, creating the file and its folder at the first record: a stage that stops before
    logging anything leaves no empty folder behind."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


@contextmanager
def log_to_file(path: Path | None) -> Iterator[Path | None]:
    """Inside the block, every record of the medal logger is also appended to `path`, date and time first;
    the handler is removed and closed on exit. None: no file."""
    if path is None:
        yield None
        return
    handler = _FolderCreatingFileHandler(path, mode="a", encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
    logger = get_logger()
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()


def set_progress(steps: int, seconds: float) -> None:
    """Away from a terminal, log a loop's progress every `steps` steps or `seconds` seconds, whichever comes first."""
    _every.update(steps=steps, seconds=seconds)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             images: Callable[[Any], int] | int | None = None, short_is_silent: bool = False, **kwargs) -> Progress:
    """Iterate `iterable` (or call `update(n)` by hand, with `total`) showing progress: a tqdm bar in a
    terminal, log lines elsewhere. A step is one item, or one update() call. `images` counts the images of
    each item (a function of the item, or a number per step) so a line shows img/s; with unit='img' every unit
    is an image. `set_postfix(loss=..., lr=...)` adds fields to the bar and to the next line. `short_is_silent`:
    no line at the last step unless one was logged before (a validation pass that the epoch's line sums up)."""
    return Progress(iterable, total, desc, unit, images, terminal=_stderr_is_terminal(),
                    short_is_silent=short_is_silent, **kwargs)


class Progress:
    """A tqdm bar in a terminal, else log lines (see the module's docstring); tqdm's `update`, `set_postfix`
    and `close` either way."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str,
                 images: Callable[[Any], int] | int | None, terminal: bool, short_is_silent: bool = False,
                 **kwargs) -> None:
        from tqdm import tqdm

        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit, self.images = iterable, total, desc, unit, images
        self.short_is_silent = short_is_silent
        self.bar = tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, **kwargs) if terminal else None
        # Units done (items, or what update() counted), images done, and steps: items, or update() calls.
        self.n = self.counted = self.steps = self.logged_steps = 0
        self.fields: dict[str, Any] = {}
        self.started = self.logged_at = perf_counter()

    def __iter__(self) -> Iterator:
        if self.bar is not None:
            yield from self.bar
            return
        for item in self.iterable:
            yield item
            self.update(1, self._images_of(item))

    def _images_of(self, item: Any) -> int | None:
        if self.images is None:
            return None
        return self.images if isinstance(self.images, int) else self.images(item)

    def update(self, n: int = 1, images: int | None = None) -> None:
        """One more step, of `n` units holding `images` images (default: n when the unit is an image)."""
        if self.bar is not None:
            self.bar.update(n)
            return
        self.n += n
        self.steps += 1
        self.counted += images if images is not None else (n if self.unit == "img" else 0)
        now = perf_counter()
        if self._line_due(self.steps, self.n, now):
            get_logger().info(self._line(now))
            self.logged_steps, self.logged_at = self.steps, now

    def due(self) -> bool:
        """Whether the step under way ends with a log line: a loop whose fields cost something to read (a
        device sync) sets them only when they will be shown. Always False in a terminal."""
        return self.bar is None and self._line_due(self.steps + 1, self.n + 1, perf_counter())

    def _line_due(self, steps: int, n: int, now: float) -> bool:
        last = self.total is not None and n >= self.total and not (self.short_is_silent and self.logged_steps == 0)
        return steps - self.logged_steps >= _every["steps"] or now - self.logged_at >= _every["seconds"] or last

    def _line(self, now: float) -> str:
        from tqdm import tqdm

        elapsed = max(now - self.started, 1e-9)
        if self.unit in ("it", "step", "batch"):
            count = f"step {self.n}" + (f"/{self.total}" if self.total else "")
        else:
            count = f"{self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"
        parts = [f"{self.desc}: {count}" if self.desc else count]
        if self.total:
            parts.append(f"({100 * self.n / self.total:.0f}%)")
        if self.counted:
            parts.append(f"{_rate(self.counted / elapsed)} img/s")
        else:
            parts.append(f"{_rate(self.n / elapsed)} {'step' if self.unit == 'it' else self.unit}/s")
        parts += [f"{key} {_value(value)}" for key, value in self.fields.items()]
        if self.total and self.n:
            parts.append(f"ETA {tqdm.format_interval(max(self.total - self.n, 0) * elapsed / self.n)}")
        return " ".join(parts)

    def set_postfix(self, refresh: bool = True, **fields: Any) -> None:
        """Fields (loss, lr, ...) shown on the bar, or on the next log line, in place of the last ones."""
        if self.bar is not None:
            self.bar.set_postfix(refresh=refresh, **fields)
        self.fields = dict(fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _rate(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
