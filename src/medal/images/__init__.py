"""images: from a file on disk to a tensor. Decoding (every odd format normalised to RGB), the resized-image cache,
where each image lives, the Dataset, augmentation presets and image grids. Imports only medal.core.

Lazy (see medal.core.exports): `decode`, `cache` and `paths` are torch-free and serve `clean`."""
from medal.core.exports import lazy_exports

_HOMES = {
    "decode_rgb": "decode", "CacheSpec": "cache", "cached_file": "cache", "resize_longest": "cache",
    "image_folder": "paths", "source_path": "paths", "image_path": "paths", "cache_spec": "paths",
    "ImageDataset": "dataset", "load_rgb": "dataset", "seed_worker": "dataset",
    "PRESETS": "augment", "Stats": "augment", "train_transform": "augment", "eval_transform": "augment",
    "save_augment_grid": "gallery", "save_hardest_oof": "gallery", "hardest": "gallery",
}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
