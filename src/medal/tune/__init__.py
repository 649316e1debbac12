"""tune: an Optuna search over config keys, each trial trained by the normal train stage."""
