"""infer: choose TTA views on OOF, predict the test set with every fold model. Writes oof_tta.csv and test_pred.csv."""
from medal.infer.reduce import REDUCTIONS, reduce_views, select_greedy
from medal.infer.run import run_infer

__all__ = ["REDUCTIONS", "reduce_views", "run_infer", "select_greedy"]
