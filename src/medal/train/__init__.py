"""train: one model per fold, the explicit loop and its toolbox, and the LR range test."""
from medal.train.fold import FoldData, split_fold
from medal.train.lr_find import run_lr_find
from medal.train.recipe_check import run_recipe_check
from medal.train.run import run_train, train_fold
from medal.train.trainer import FoldTrainer

__all__ = ["FoldData", "FoldTrainer", "run_lr_find", "run_recipe_check", "run_train", "split_fold", "train_fold"]
