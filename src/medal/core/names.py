"""Every name a config may give a registry, written here without importing the registries.

The registries themselves (augmentation presets, TTA views, metrics, fold
strategies, blend methods) live beside the code that runs them and load torch,
albumentations or scikit-learn. The config checks names against these tuples
instead, so `medal clean` and `medal folds` validate a whole config without
loading torch. A test per registry asserts that its names equal the ones here.
"""
from __future__ import annotations

import re

AUGMENT_PRESETS = ("none", "light", "flips", "photo")  # medal.images.augment.PRESETS
METRICS = ("accuracy", "f1_macro", "f1_micro", "log_loss", "roc_auc", "qwk")  # medal.core.metrics.METRICS
FOLD_STRATEGIES = ("stratified", "group", "stratified_group", "multilabel", "kfold")  # medal.folds.run.STRATEGIES
BLEND_METHODS = ("mean", "rank", "greedy", "caruana", "optimize")  # medal.blend.methods.METHODS
TTA_REDUCTIONS = ("mean", "gmean", "max")  # medal.infer.reduce.REDUCTIONS

# TTA views (medal.modeling.views.VIEWS): the eight symmetries of the square, names that stand for several
# views, and two families by grammar: the model at another input size, and seeded train-time augmentations.
TTA_VIEWS = ("identity", "hflip", "vflip", "transpose", "rot90", "rot180", "rot270", "antitranspose")
TTA_VIEW_SETS: dict[str, tuple[str, ...]] = {"d4": TTA_VIEWS, "flips": ("identity", "hflip", "vflip")}
SCALE_VIEW = re.compile(r"^scale_(\d+(?:\.\d+)?)$")
RANDOM_VIEW = re.compile(r"^aug(\d{1,2})$")
SCALE_RANGE = (0.25, 4.0)
VIEW_HELP = (f"views {', '.join(TTA_VIEWS)}; sets {', '.join(TTA_VIEW_SETS)}; scale_<factor> (model at "
             f"image_size*factor, factor {SCALE_RANGE[0]}..{SCALE_RANGE[1]:g}, e.g. scale_0.875); aug<k> (seeded random "
             "train-time augmentation k, 0..99)")


def check_view(name: str) -> str:
    """`name` if it names one TTA view; raises ValueError naming it and what exists."""
    if name in TTA_VIEWS or RANDOM_VIEW.match(name):
        return name
    scale = SCALE_VIEW.match(name)
    if scale and SCALE_RANGE[0] <= float(scale.group(1)) <= SCALE_RANGE[1]:
        return name
    raise ValueError(f"{name!r} is not a TTA view; known: {VIEW_HELP}")


def expand_views(names: list[str]) -> list[str]:
    """Expand sets (d4) and drop repeats, keeping first-seen order; every name is checked."""
    out: list[str] = []
    for name in names:
        for item in TTA_VIEW_SETS.get(name, (name,)):
            check_view(item)
            if item not in out:
                out.append(item)
    return out
