"""timm's pretrained weights through its Hugging Face hub mechanism, and their export for a machine without internet.

`model.pretrained: true` lets timm fetch the weights with huggingface_hub, which reads its cache first (HF_HUB_CACHE,
else HF_HOME/hub) and, with HF_HUB_OFFLINE=1, nothing else. `export_weights` writes the same weights as
DIR/model.safetensors and DIR/config.json (timm's save_for_hf layout): a Kaggle dataset that `model.pretrained_file`
reads, as does timm itself (`timm.create_model("local-dir:DIR", pretrained=True)`).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import timm
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
)
from safetensors.torch import save
from timm.models._hub import save_config_for_hf

from medal.core.io import atomic_path


def hub_repo(backbone: str) -> str | None:
    """The Hugging Face repo timm loads `backbone`'s pretrained weights from (its default tag's when the name has
    none); None when timm knows no hub weights for it."""
    if backbone.startswith("hf-hub:"):
        return backbone.removeprefix("hf-hub:")
    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
    except RuntimeError:  # an unknown tag: timm.create_model names it
        return None
    return cfg.hf_hub_id if cfg is not None else None


@contextmanager
def hub_access(backbone: str, exporting: bool = False) -> Iterator[None]:
    """Turn huggingface_hub's errors while timm fetches `backbone`'s weights into one FileNotFoundError that names
    the backbone, the repo and the ways to get the weights onto a machine without internet."""
    try:
        yield
    except (EntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError) as err:
        raise FileNotFoundError(unavailable_message(backbone, err, exporting)) from err


def unavailable_message(backbone: str, err: Exception, exporting: bool = False) -> str:
    repo = hub_repo(backbone)
    # LocalEntryNotFoundError (an EntryNotFoundError) is huggingface_hub's "not in the cache, hub not reachable".
    reachable = isinstance(err, HfHubHTTPError) and not isinstance(err, EntryNotFoundError)
    why = (f"the hub refused them ({str(err).splitlines()[0]})" if reachable else
           f"they are not in the Hugging Face cache ({hf_constants.HF_HUB_CACHE}) and the hub cannot be reached"
           + (" (HF_HUB_OFFLINE=1)" if hf_constants.HF_HUB_OFFLINE else "; HF_HUB_OFFLINE=1 skips its retries"))
    warm = f"python -c \"import timm; timm.create_model('{backbone}', pretrained=True)\""
    if exporting:
        return (f"cannot export {backbone!r}: timm's pretrained weights (Hugging Face repo {repo or 'unknown'}) cannot "
                f"be loaded: {why}. Run the export on a machine with internet, or with the weights in its Hugging "
                f"Face cache (warm it with {warm}).")
    return (f"model.pretrained: timm's pretrained weights for {backbone!r} (Hugging Face repo {repo or 'unknown'}) "
            f"cannot be loaded: {why}. Either run `medal weights export {backbone} --out DIR` on a machine with "
            f"internet, upload DIR (e.g. as a Kaggle dataset) and set model.pretrained_file=DIR/model.safetensors "
            f"instead of model.pretrained; or warm the Hugging Face cache there ({warm}) and copy it to this "
            f"machine's HF_HUB_CACHE.")


def export_weights(backbone: str, out: Path) -> tuple[Path, Path]:
    """Write timm's pretrained weights for `backbone` (from the Hugging Face cache, else the hub) as
    out/model.safetensors with its timm config out/config.json; returns both paths."""
    try:
        with hub_access(backbone, exporting=True):
            model = timm.create_model(backbone, pretrained=True)
    except RuntimeError as err:  # timm's words for an unknown name or a model without pretrained weights
        raise ValueError(f"cannot export {backbone!r}: {err}") from None
    # timm's save_for_hf writes the same two files in place; written here through atomic_path, a crash leaves no
    # half file for a dataset upload to pick up.
    weights, config = out / "model.safetensors", out / "config.json"
    with atomic_path(weights) as tmp:
        # The state dict as timm built it: its own keys and layout, which pretrained_file and timm both load.
        # Serialised to bytes, written into the temporary atomic_path made (which has the usual file mode).
        tmp.write_bytes(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    with atomic_path(config) as tmp:
        save_config_for_hf(model, str(tmp))
    return weights, config

