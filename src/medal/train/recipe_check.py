"""recipe-check: is this recipe good on this competition? A few recipes on one split, side by side, in minutes.

Each candidate is the experiment's config with a few keys changed, trained on one fold as an experiment of its
own (<name>-check-<candidate>), so the normal stages, checks and skips apply: a second run trains only what
changed (a check experiment made under another recipe is retrained). The candidates:
  current  the config as it is (train.lr auto resolved to a number);
  plain    no augmentation, a constant LR (no warmup, no decay), no label smoothing, no EMA;
  lr/3, lr*3 (by default)  the current recipe at other peak LRs: is the LR near its best on this data?
  --try NAME:key=value,...  any other recipe to compare.
The table (fold score, best epoch, the weights that won, diagnosis, seconds) is printed and written to
<exp_dir>/recipe_check.csv and .md. One fold is a noisy estimate: a gap of a point or less can be noise.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pandas as pd

from medal.core import layout
from medal.core.config import Config, derive
from medal.core.io import write_csv, write_text
from medal.core.log import get_logger, set_progress
from medal.core.metrics import higher_is_better
from medal.core.report import markdown_table

PLAIN = ["train.augment=none", "train.warmup_epochs=0", "train.label_smoothing=0", "train.ema.enabled=false",
         "train.mixup.prob=0", "train.hard_mining.start_epoch=null", "train.schedule=cosine"]
LR_FACTORS = (1 / 3, 3.0)


@dataclass(frozen=True)
class Candidate:
    name: str
    overrides: tuple[str, ...]


def candidates(cfg: Config, lr_factors: tuple[float, ...] = LR_FACTORS, extra: list[str] = ()) -> list[Candidate]:
    """current, plain, the LR grid and every `NAME:key=value,key=value` of `extra`."""
    lr = float(cfg.train.lr)
    # plain keeps the LR constant: the cosine's floor is its peak.
    found = [Candidate("current", ()), Candidate("plain", (*PLAIN, f"train.min_lr={lr}"))]
    for factor in lr_factors:
        label = f"lr*{factor:g}" if factor >= 1 else f"lr/{1 / factor:g}"
        found.append(Candidate(label, (f"train.lr={lr * factor:.4g}",)))
    for text in extra:
        name, sep, rest = text.partition(":")
        if not sep or not name or not rest:
            raise ValueError(f"--try {text!r} must look like NAME:key=value[,key=value...], e.g. flips:train.augment=flips")
        found.append(Candidate(name, tuple(item for item in rest.split(",") if item)))
    names = [c.name for c in found]
    if len(set(names)) != len(names):
        raise ValueError(f"recipe-check candidates must have different names: {names}")
    return found


def candidate_config(cfg: Config, candidate: Candidate) -> Config:
    safe = candidate.name.replace("*", "x").replace("/", "_")
    return derive(cfg, [*candidate.overrides, f"name={cfg.name}-check-{safe}"])


def run_recipe_check(cfg: Config, fold: int = 0, lr_factors: tuple[float, ...] = LR_FACTORS,
                     extra: list[str] = ()) -> pd.DataFrame:
    """Train every candidate on `fold` (skipping those already trained under their recipe) and tabulate them."""
    from medal.train.run import (
        run_train,  # imported here: the table helpers above need no torch
    )

    log = get_logger()
    set_progress(cfg.report.progress_steps, cfg.report.progress_seconds)
    recipes = candidates(cfg, lr_factors, extra)
    log.info("%s: recipe-check on fold %d of %d recipes (%s), each trained as experiment %s-check-<recipe> for %d "
             "epochs; table -> %s", cfg.name, fold, len(recipes), ", ".join(c.name for c in recipes), cfg.name,
             cfg.train.total_epochs, cfg.exp_dir / "recipe_check.csv")
    rows = []
    for candidate in recipes:
        trial = candidate_config(cfg, candidate)
        log.info("recipe-check %s: %s (experiment %s)", candidate.name, " ".join(candidate.overrides) or "as configured",
                 trial.name)
        started = time.perf_counter()
        # force: these experiments are the check's own; one made under an earlier recipe is retrained, not refused.
        run_train(trial, fold=fold, force=True)
        done = json.loads(layout.fold_done(trial, fold).read_text())
        rows.append({"recipe": candidate.name, "score": done["best_score"], "best_epoch": done["best_epoch"],
                     "weights": done.get("weights", ""), "diagnosis": done.get("diagnosis", {}).get("verdict", ""),
                     "lr": f"{trial.train.lr:.3g}", "seconds": round(time.perf_counter() - started),
                     "overrides": " ".join(candidate.overrides), "experiment": trial.name})
    table = pd.DataFrame(rows)
    best = table["score"].idxmax() if higher_is_better(cfg.metric) else table["score"].idxmin()
    table["best"] = ["<-" if i == best else "" for i in table.index]
    write_csv(cfg.exp_dir / "recipe_check.csv", table)
    write_text(cfg.exp_dir / "recipe_check.md",
               f"# recipe-check of {cfg.name}: fold {fold}, {cfg.metric}\n\n{markdown_table(table, index=False)}\n\n"
               "One fold is a noisy estimate: a gap of a point or less can be noise. Seconds of a recipe trained "
               "in an earlier run count only the check that skipped it.\n")
    return table
