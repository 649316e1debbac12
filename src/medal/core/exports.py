"""Lazy re-exports for a package's __init__ (PEP 562): `from medal.images import load_rgb` works, yet importing
the package loads none of its modules until a name is used. This keeps `medal clean` and `medal folds` free of
torch, which some modules of `images` and `modeling` load, and keeps `medal --help` fast."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose public names live in the modules `homes` gives
    ({name: module}). A name not in `homes` falls through to the import system, so submodules still import."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(homes)

    return __getattr__, __dir__
