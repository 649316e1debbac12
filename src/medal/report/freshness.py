"""Whether a manifest's outputs still match their inputs, for a page to show rather than to refuse."""
from __future__ import annotations

from pathlib import Path

from medal.core import provenance
from medal.core.config import Config


def stale(manifest: Path, cfg: Config) -> str | None:
    """Why the (existing) manifest is stale, as the stage that reads it would refuse it; None when current. A
    damaged manifest is stale too, with the message naming it."""
    try:
        return provenance.stale_reason(manifest, cfg)
    except provenance.StaleError as err:
        return str(err)
