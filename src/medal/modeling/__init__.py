"""modeling: the network and how it runs. timm models, the runtime (device, seeds, loaders, AMP), batched
prediction under TTA views, and the checkpoint files. Imports only medal.core and medal.images."""
from medal.core.exports import lazy_exports

_HOMES = {
    "build_model": "models", "normalisation": "models", "set_train_mode": "models",
    "pick_device": "runtime", "seed_everything": "runtime", "make_loader": "runtime", "autocast": "runtime",
    "compute_threads": "runtime",
    "predict_views": "predict", "predict_probs": "predict",
    "View": "views", "VIEWS": "views", "get_view": "views", "expand_views": "views",
    "save_best": "checkpoint", "load_best": "checkpoint", "save_last": "checkpoint", "load_last": "checkpoint",
    "recipe": "checkpoint",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
