"""tracking: Weights & Biases runs for train and blend (tracking.wandb; off by default).

One run per fold (group = experiment, job_type = stage), one for an experiment's CV
and one per blend. wandb is imported only when a run starts, so untracked runs never
load it.
"""
from medal.tracking.runs import track_blend, track_cv
from medal.tracking.tracker import Tracker, fold_tracker, resolve_mode

__all__ = ["Tracker", "fold_tracker", "resolve_mode", "track_blend", "track_cv"]
