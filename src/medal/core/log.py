"""One logger for the whole package; stages log, they do not print."""
from __future__ import annotations

import logging

LOGGER_NAME = "medal"


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_logging(level: int = logging.INFO) -> None:
    logger = get_logger()
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def progress(iterable, **kwargs):
    """A tqdm bar that clears itself and stays silent when stderr is not a terminal (CI logs, nohup)."""
    from tqdm import tqdm

    return tqdm(iterable, leave=False, disable=None, **kwargs)
