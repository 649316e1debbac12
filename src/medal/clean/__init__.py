"""clean: decode every training image, drop the rows that cannot be used (each with a reason), group duplicates.
Writes clean.csv and dropped.csv, which hold every input row exactly once. Torch-free."""
from medal.clean.checks import REASONS
from medal.clean.run import run_clean

__all__ = ["REASONS", "run_clean"]
