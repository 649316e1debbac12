"""blend: compare experiments on OOF, fit a blend scored by nested CV, write and check the submission."""
from medal.blend.methods import METHODS
from medal.blend.run import run_blend

__all__ = ["METHODS", "run_blend"]
