"""medal: a Kaggle image-classification template."""
import importlib.machinery
import sys

__version__ = "0.1.0"


class _TimmWithoutWandb:
    """Imports timm with wandb hidden from it (unless wandb is already loaded). timm.utils.summary imports
    wandb whenever it is installed, about a second, for a logging option medal never uses; without this
    every untracked run would pay for it. medal.tracking imports wandb itself when a run is tracked."""

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        sys.meta_path.remove(self)  # once: timm is imported once per process
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def exec_module(module):
                hide = "wandb" not in sys.modules
                if hide:
                    sys.modules["wandb"] = None  # `import wandb` raises ImportError, which timm catches
                try:
                    load(module)
                finally:
                    if hide and "wandb" in sys.modules and sys.modules["wandb"] is None:
                        del sys.modules["wandb"]

            spec.loader.exec_module = exec_module
        return spec


if "timm" not in sys.modules:
    sys.meta_path.insert(0, _TimmWithoutWandb())
