"""tracking: Weights & Biases runs for train and blend (being built, issue 11)."""
