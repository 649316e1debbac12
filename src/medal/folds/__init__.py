"""folds: split clean.csv into leak-free folds (duplicate and group_col groups whole). Writes folds.csv. Torch-free."""
from medal.folds.run import STRATEGIES, run_folds

__all__ = ["STRATEGIES", "run_folds"]
