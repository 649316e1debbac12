"""tune: an Optuna search over config keys, each trial trained by the normal train stage."""
from medal.tune.space import Param, load_space
from medal.tune.study import TuneOptions, run_tune

__all__ = ["Param", "TuneOptions", "load_space", "run_tune"]
