"""pseudo: confident test predictions of a blend, as an extra training table."""
from medal.pseudo.run import run_pseudo
from medal.pseudo.select import select_threshold, select_top_fraction

__all__ = ["run_pseudo", "select_threshold", "select_top_fraction"]
